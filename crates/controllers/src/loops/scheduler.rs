//! The scheduler loop: bind every pending pod to a node, or say why it cannot be placed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Event, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{is_status, split_key, work, Next};
use crate::replicaset::is_active;
use crate::runtime::{key_of, Change, Informer, WorkQueue};
use crate::scheduler::{pick_node, NodeInfo};

/// The scheduler this loop answers for (pods may name another and are left alone).
pub const SCHEDULER_NAME: &str = "default-scheduler";

fn wants_us(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER_NAME)
        && p.metadata.deletion_timestamp.is_none()
        && is_active(p)
}

pub async fn run(client: Client) {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let pods = Arc::new(Informer::start(
        Api::<Pod>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(300),
        move |c| {
            if let Change::Applied(p) = c {
                if wants_us(p) {
                    q.add(&key_of(p));
                }
            }
        },
    ));
    let pending = pods.clone();
    let q = queue.clone();
    let nodes = Arc::new(Informer::start(
        Api::<Node>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(300),
        move |_| {
            // A node came, went or changed: pods that did not fit may fit now.
            for p in pending.list() {
                if wants_us(&p) {
                    q.add(&key_of(&*p));
                }
            }
        },
    ));
    pods.synced().await;
    nodes.synced().await;
    // Pods bound here but not yet seen bound in the cache: count them on their node.
    let assumed: Arc<Mutex<HashMap<String, (String, Pod)>>> = Arc::default();
    work(queue, 1, move |key| {
        let (client, pods, nodes, assumed) =
            (client.clone(), pods.clone(), nodes.clone(), assumed.clone());
        async move { schedule(&key, client, &pods, &nodes, &assumed).await }
    })
    .await;
}

async fn schedule(
    key: &str,
    client: Client,
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
    assumed: &Mutex<HashMap<String, (String, Pod)>>,
) -> anyhow::Result<Next> {
    let Some(pod) = pods.get(key) else {
        return Ok(Next::Done);
    };
    if !wants_us(&pod) {
        return Ok(Next::Done);
    }
    let all_pods = pods.list();
    let infos: Vec<NodeInfo> = {
        let mut assumed = assumed.lock().expect("lock");
        // Forget assumptions the cache has caught up with.
        assumed.retain(|k, _| pods.get(k).is_some_and(|p| wants_us(&p)));
        nodes
            .list()
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                let mut on_node: Vec<Pod> = all_pods
                    .iter()
                    .filter(|p| is_active(p))
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name))
                    .map(|p| (**p).clone())
                    .collect();
                on_node.extend(
                    assumed
                        .values()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, p)| p.clone()),
                );
                NodeInfo {
                    node: (**n).clone(),
                    pods: on_node,
                }
            })
            .collect()
    };
    let (ns, name) = split_key(key);
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    match pick_node(&pod, &infos) {
        Ok(node) => {
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(ns.to_string()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            match api
                .create_subresource::<Binding, serde_json::Value>(
                    "binding",
                    name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => {
                    assumed
                        .lock()
                        .expect("lock")
                        .insert(key.to_string(), (node, (*pod).clone()));
                    Ok(Next::Done)
                }
                // Already bound (by us, earlier) or gone.
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(Next::Done),
                Err(e) => Err(e.into()),
            }
        }
        Err(unschedulable) => {
            let message = unschedulable.message;
            let patch = json!({"status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
            }]}});
            let _ = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            record_event(client, &pod, "FailedScheduling", &message).await;
            // Node changes requeue the pod at once; otherwise look again in a while.
            Ok(Next::After(Duration::from_secs(10)))
        }
    }
}

/// A Warning event about `pod` from the scheduler (best effort: events are informational).
async fn record_event(client: Client, pod: &Pod, reason: &str, message: &str) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}.",
                pod.metadata.name.as_deref().unwrap_or("pod")
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some(SCHEDULER_NAME.into()),
        reporting_instance: Some(SCHEDULER_NAME.into()),
        action: Some("Scheduling".into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        ..Default::default()
    };
    let _ = Api::<Event>::namespaced(client, &ns)
        .create(&PostParams::default(), &event)
        .await;
}
