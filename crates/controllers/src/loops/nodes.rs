//! Node lifecycle: a node whose Lease is not renewed within the grace period becomes
//! Ready=Unknown (and gets the unreachable taint); once it has been unreachable for the
//! eviction timeout, its pods are deleted so their controllers replace them elsewhere.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::runtime::Informer;

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

pub async fn run(client: Client, timing: Timing, shared: super::Shared) {
    let nodes = shared.nodes.clone();
    let leases = Arc::new(Informer::start(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        WatchParams::default(),
        Duration::from_secs(300),
        |_| {},
    ));
    nodes.synced().await;
    leases.synced().await;
    loop {
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        for node in nodes.list() {
            let name = node.metadata.name.clone().unwrap_or_default();
            let renewed = leases
                .get(&format!("kube-node-lease/{name}"))
                .and_then(|l| {
                    l.spec
                        .as_ref()?
                        .renew_time
                        .as_ref()
                        .map(|t| t.0.as_millisecond())
                });
            let Some(renewed) = renewed else { continue };
            let silent = now - renewed;
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .cloned();
            if silent > timing.grace.as_millis() as i64 {
                if ready.as_ref().is_none_or(|c| c.status != "Unknown") {
                    if let Err(e) = mark_unknown(&client, &node).await {
                        tracing::warn!("node {name}: {e:#}");
                    }
                }
                if silent > (timing.grace + timing.eviction).as_millis() as i64 {
                    if let Err(e) = evict(&client, &name).await {
                        tracing::warn!("evicting pods of node {name}: {e:#}");
                    }
                }
            } else if has_unreachable_taint(&node) {
                // The agent is back: pods may be scheduled to the node again.
                if let Err(e) = untaint(&client, &node).await {
                    tracing::warn!("node {name}: {e:#}");
                }
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

async fn mark_unknown(client: &Client, node: &Node) -> anyhow::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api = Api::<Node>::all(client.clone());
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
        status: "Unknown".into(),
        reason: Some("NodeStatusUnknown".into()),
        message: Some("the node agent stopped renewing its lease".into()),
        last_heartbeat_time: None,
        last_transition_time: Some(now),
    });
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"conditions": conditions}})),
    )
    .await?;
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if !taints.iter().any(|t| t.key == UNREACHABLE_TAINT) {
        taints.push(k8s_openapi::api::core::v1::Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": taints}})),
        )
        .await?;
    }
    Ok(())
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNREACHABLE_TAINT))
}

async fn untaint(client: &Client, node: &Node) -> anyhow::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints.retain(|t| t.key != UNREACHABLE_TAINT);
    Api::<Node>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": taints}})),
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
