//! Node lifecycle: a node whose Lease is not renewed within the grace period becomes
//! Ready=Unknown; once it has been unreachable for the eviction timeout, its pods are deleted so
//! their controllers replace them elsewhere. When its Lease is fresh again, Unknown turns back
//! into Ready (the agent also re-posts Ready itself). The taints follow the Ready condition, as
//! kube-controller-manager's TaintNodesByCondition does: `node.kubernetes.io/unreachable` while
//! it is Unknown, `node.kubernetes.io/not-ready` while it is False, neither while it is True.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::runtime::{Change, Informer};

/// Timing of the node lifecycle (Kubernetes: 40 s grace, 5 min eviction).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub grace: Duration,
    pub eviction: Duration,
    pub period: Duration,
}

impl Timing {
    /// A node is declared unreachable after `grace` without a lease renewal, and its pods are
    /// evicted `eviction` later; nodes are checked often enough to notice within a grace.
    pub fn new(grace: Duration, eviction: Duration) -> Timing {
        Timing {
            grace,
            eviction,
            period: (grace / 2).clamp(Duration::from_millis(500), Duration::from_secs(5)),
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            grace: Duration::from_secs(40),
            eviction: Duration::from_secs(300),
            period: Duration::from_secs(5),
        }
    }
}

const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

pub async fn run(client: Client, timing: Timing, shared: super::Shared) {
    let nodes = shared.nodes.clone();
    let leases = Arc::new(Informer::start(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        WatchParams::default(),
        Duration::from_secs(300),
        |_| {},
    ));
    // A renewal from a node that is not Ready (or still tainted) is looked at at once, not at
    // the next period: a node that is back is schedulable again within one renewal.
    let renewed = Arc::new(tokio::sync::Notify::new());
    {
        let (nodes, renewed) = (nodes.clone(), renewed.clone());
        leases.add_handler(move |change| {
            let Change::Applied(lease) = change else {
                return;
            };
            let name = lease.metadata.name.as_deref().unwrap_or("");
            let back = nodes.get(name).is_some_and(|n| {
                ready_status(&n).as_deref() != Some("True") || condition_taints(&n)
            });
            if back {
                renewed.notify_one();
            }
        });
    }
    nodes.synced().await;
    leases.synced().await;
    loop {
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        for node in nodes.list() {
            let name = node.metadata.name.clone().unwrap_or_default();
            let lease = leases.get(&format!("kube-node-lease/{name}"));
            let Some(heard) = last_heard_from(&node, lease.as_deref()) else {
                continue;
            };
            let silent = now - heard;
            if let Err(e) = reconcile(&client, &timing, (*node).clone(), silent).await {
                tracing::warn!("node {name}: {e:#}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.period) => {}
            _ = renewed.notified() => {}
        }
    }
}

/// When the node's agent was last heard from, in Unix milliseconds: its Lease's renewal or
/// the heartbeat of the Ready condition it posted, whichever is later. An agent stopped
/// between registering (Ready) and creating its Lease leaves no Lease at all; without the
/// heartbeat (or, failing that, the node's creation) such a node would stay Ready forever.
/// The heartbeat this loop writes itself is none (see `set_ready`), so an Unknown it set does
/// not count as a sign of life.
fn last_heard_from(node: &Node, lease: Option<&Lease>) -> Option<i64> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
        .map(|t| t.0.as_millisecond());
    let heartbeat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.as_millisecond());
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond());
    renewed.max(heartbeat).or(created)
}

/// Whether the node carries a taint this loop manages.
fn condition_taints(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == UNREACHABLE_TAINT || t.key == NOT_READY_TAINT)
        })
}

/// One node, whose Lease was last renewed `silent_ms` ago.
async fn reconcile(
    client: &Client,
    timing: &Timing,
    mut node: Node,
    silent_ms: i64,
) -> anyhow::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let stale = silent_ms > timing.grace.as_millis() as i64;
    let ready = ready_status(&node);
    let set = match (stale, ready.as_deref()) {
        (true, Some("Unknown")) => None,
        (true, _) => Some((
            "Unknown",
            "NodeStatusUnknown",
            "the node agent stopped renewing its lease",
        )),
        // The Lease is fresh again: the agent is back (it re-posts Ready too; this covers an
        // agent that does not).
        (false, Some("Unknown")) => Some((
            "True",
            "KubeletReady",
            "the node agent is renewing its lease again",
        )),
        _ => None,
    };
    if let Some((status, reason, message)) = set {
        node = set_ready(client, &node, status, reason, message).await?;
    }
    sync_taints(client, &node).await?;
    if stale && silent_ms > (timing.grace + timing.eviction).as_millis() as i64 {
        evict(client, &name)
            .await
            .map_err(|e| e.context("evicting its pods"))?;
    }
    Ok(())
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
}

/// Write the node's Ready condition (a compare-and-swap on its resourceVersion: a condition
/// changed meanwhile is looked at again next period). Returns the node as stored.
async fn set_ready(
    client: &Client,
    node: &Node,
    status: &str,
    reason: &str,
    message: &str,
) -> anyhow::Result<Node> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(k8s_openapi::api::core::v1::NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: None,
        last_transition_time: Some(now),
    });
    tracing::info!("node {name}: Ready={status} ({message})");
    let node = Api::<Node>::all(client.clone())
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "status": {"conditions": conditions},
            })),
        )
        .await?;
    Ok(node)
}

/// The taints a node's Ready condition calls for.
fn condition_taint(ready: Option<&str>) -> Option<&'static str> {
    match ready {
        Some("Unknown") => Some(UNREACHABLE_TAINT),
        Some("False") => Some(NOT_READY_TAINT),
        _ => None,
    }
}

/// Make the unreachable/not-ready taints match the Ready condition; other taints are kept.
async fn sync_taints(client: &Client, node: &Node) -> anyhow::Result<()> {
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = ready_status(node);
    let want = condition_taint(ready.as_deref());
    let mut next: Vec<_> = taints
        .iter()
        .filter(|t| {
            (t.key != UNREACHABLE_TAINT && t.key != NOT_READY_TAINT) || Some(t.key.as_str()) == want
        })
        .cloned()
        .collect();
    if let Some(key) = want {
        if !next.iter().any(|t| t.key == key) {
            next.push(k8s_openapi::api::core::v1::Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
    }
    if next == taints {
        return Ok(());
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    Api::<Node>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": next},
            })),
        )
        .await?;
    Ok(())
}

async fn evict(client: &Client, node: &str) -> anyhow::Result<()> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    for p in pods.items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        // Nobody is there to stop the containers: delete the object outright.
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let _ = Api::<Pod>::namespaced(client.clone(), &ns)
            .delete(&name, &dp)
            .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(created_ms: i64, heartbeat_ms: Option<i64>) -> Node {
        let time = |ms: i64| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap(),
            )
        };
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": time(created_ms)},
            "status": {"conditions": [{
                "type": "Ready",
                "status": if heartbeat_ms.is_some() { "True" } else { "Unknown" },
                "lastHeartbeatTime": heartbeat_ms.map(time),
            }]},
        }))
        .unwrap()
    }

    fn lease(renewed_ms: i64) -> Lease {
        let t = k8s_openapi::jiff::Timestamp::from_millisecond(renewed_ms).unwrap();
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(t)},
        }))
        .unwrap()
    }

    #[test]
    fn an_agent_is_heard_from_by_its_lease_or_its_ready_heartbeat() {
        // The later of the two counts.
        assert_eq!(
            last_heard_from(&node(1_000, Some(5_000)), Some(&lease(9_000))),
            Some(9_000)
        );
        assert_eq!(
            last_heard_from(&node(1_000, Some(9_000)), Some(&lease(5_000))),
            Some(9_000)
        );
        // Stopped before its first Lease: the Ready it posted at registration still ages.
        assert_eq!(
            last_heard_from(&node(1_000, Some(2_000)), None),
            Some(2_000)
        );
        // Marked Unknown by this loop (no heartbeat) and no Lease: its creation.
        assert_eq!(last_heard_from(&node(1_000, None), None), Some(1_000));
    }
}
