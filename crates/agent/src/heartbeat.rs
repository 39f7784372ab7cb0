//! The node's heartbeat: renew its Lease every quarter of the lease duration (as the kubelet
//! does), and, while the agent runs, keep its Ready condition True. The node lifecycle
//! controller marks a node whose Lease went stale `Ready=Unknown`; a node that missed one
//! renewal (a paused process, a slow store) must turn Ready again by itself once its
//! heartbeat is back, not wait for an agent restart.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::events::{reference, EventType, Recorder};
use crate::node::{ready_condition, AgentConfig};

/// The component name the agent's events carry (the kubelet's).
pub const COMPONENT: &str = "kubelet";

/// Renew the Lease and re-post Ready, every quarter of the lease duration, until aborted.
pub async fn run(client: Client, cfg: AgentConfig) {
    let events = Recorder::new(client.clone(), COMPONENT, Some(&cfg.node_name));
    let period = cfg.lease_duration / 4;
    loop {
        match renew_lease(&client, &cfg).await {
            Ok(()) => {
                // Only once the Lease is fresh: a Ready the lifecycle controller would take
                // back at once helps nobody.
                if let Err(e) = ensure_ready(&client, &cfg, &events).await {
                    tracing::warn!("re-posting the node's Ready condition: {e:#}");
                }
            }
            Err(e) => tracing::warn!("renewing the node lease: {e:#}"),
        }
        tokio::time::sleep(period.max(Duration::from_millis(100))).await;
    }
}

/// Renew the node's Lease in kube-node-lease (creating it the first time).
async fn renew_lease(client: &Client, cfg: &AgentConfig) -> anyhow::Result<()> {
    let api = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(cfg.node_name.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs().max(1) as i32),
        renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    };
    let patch = json!({"spec": spec});
    match api
        .patch(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.node_name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// If the node's Ready condition is not True (the lifecycle controller set it Unknown while
/// the Lease was stale), post Ready again. Writes nothing when it already is.
async fn ensure_ready(client: &Client, cfg: &AgentConfig, events: &Recorder) -> anyhow::Result<()> {
    let api = Api::<Node>::all(client.clone());
    // A node deleted meanwhile stays deleted: the agent registers on start only.
    let Some(node) = api.get_opt(&cfg.node_name).await? else {
        return Ok(());
    };
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
    {
        return Ok(());
    }
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(ready_condition());
    // The resourceVersion makes the patch a compare-and-swap: a condition changed meanwhile
    // is looked at again next beat rather than overwritten.
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "status": {"conditions": conditions},
    });
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!("node {}: Ready again", cfg.node_name);
    events.record(
        &reference("v1", "Node", &node.metadata),
        EventType::Normal,
        "NodeReady",
        "StatusChange",
        &format!("Node {} status is now: NodeReady", cfg.node_name),
    );
    Ok(())
}
