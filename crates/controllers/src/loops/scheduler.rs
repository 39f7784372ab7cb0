//! The scheduler loop: bind every pending pod to a node, or say why it cannot be placed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::{is_status, split_key, work, Next};
use crate::cached::Pod;
use crate::replicaset::is_active;
use crate::runtime::{key_of, Change, Informer, WorkQueue};
use crate::scheduler::cache::Cache;
use crate::scheduler::pick_node;
use tokio::sync::Semaphore;

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

/// How many bindings may be in flight at once: decisions are made one at a time against the
/// cache, and bindings (an API write each) go out concurrently, as kube-scheduler's binding
/// cycle does, so the store's group commit can batch them.
const BINDS_IN_FLIGHT: usize = 64;

struct Scheduler {
    client: Client,
    queue: WorkQueue,
    pods: Arc<Informer<Pod>>,
    cache: Arc<Mutex<Cache>>,
    binds: Arc<Semaphore>,
}

pub async fn run(client: Client, shared: super::Shared) {
    let queue = WorkQueue::new();
    let cache: Arc<Mutex<Cache>> = Arc::default();
    // Pods that fit nowhere: a node change requeues them (and only them).
    let unschedulable: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (q, c, u) = (queue.clone(), cache.clone(), unschedulable.clone());
    let pods = shared.pods.clone();
    pods.add_handler(move |change| {
        let key = key_of(change.object());
        match change {
            Change::Applied(p) => {
                c.lock().expect("lock").apply_pod(&key, p);
                if wants_us(p) {
                    q.add(&key);
                } else {
                    u.lock().expect("lock").remove(&key);
                }
            }
            Change::Deleted(_) => {
                c.lock().expect("lock").forget(&key);
                u.lock().expect("lock").remove(&key);
            }
        }
    });
    let (q, c, u) = (queue.clone(), cache.clone(), unschedulable.clone());
    let nodes = shared.nodes.clone();
    nodes.add_handler(move |change| {
        match change {
            Change::Applied(n) => c.lock().expect("lock").apply_node(n),
            Change::Deleted(n) => c
                .lock()
                .expect("lock")
                .delete_node(n.metadata.name.as_deref().unwrap_or("")),
        }
        // A node came, went or changed: pods that did not fit may fit now.
        for key in u.lock().expect("lock").iter() {
            q.add(key);
        }
    });
    pods.synced().await;
    nodes.synced().await;
    let scheduler = Arc::new(Scheduler {
        client,
        queue: queue.clone(),
        pods,
        cache,
        binds: Arc::new(Semaphore::new(BINDS_IN_FLIGHT)),
    });
    work(queue, 1, move |key| {
        let (scheduler, unschedulable) = (scheduler.clone(), unschedulable.clone());
        async move {
            let next = scheduler.schedule(&key).await;
            let mut u = unschedulable.lock().expect("lock");
            match next {
                Ok(Next::After(_)) => u.insert(key),
                _ => u.remove(&key),
            };
            next
        }
    })
    .await;
}

impl Scheduler {
    /// Decide where one pod goes, count it there, and send its binding on its way.
    async fn schedule(&self, key: &str) -> anyhow::Result<Next> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(Next::Done);
        };
        if !wants_us(&pod) {
            return Ok(Next::Done);
        }
        // Wait for a binding slot before deciding, so the decision sees every earlier one.
        let permit = self.binds.clone().acquire_owned().await?;
        let decision = {
            let mut cache = self.cache.lock().expect("lock");
            if cache.is_placed(key) {
                return Ok(Next::Done); // its binding is in flight
            }
            let decision = pick_node(&pod, cache.nodes());
            if let Ok(node) = &decision {
                cache.assume(key, node, &pod);
            }
            decision
        };
        match decision {
            Ok(node) => {
                let (client, cache, queue) =
                    (self.client.clone(), self.cache.clone(), self.queue.clone());
                let key = key.to_string();
                tokio::spawn(async move {
                    if let Err(e) = bind(client, &key, &node).await {
                        tracing::debug!("binding {key} to {node}: {e:#}");
                        cache.lock().expect("lock").forget(&key);
                        queue.add_rate_limited(&key);
                    }
                    drop(permit);
                });
                Ok(Next::Done)
            }
            Err(unschedulable) => {
                drop(permit);
                self.report_unschedulable(&pod, &unschedulable.message)
                    .await;
                // Node changes requeue the pod at once; otherwise look again in a while.
                Ok(Next::After(Duration::from_secs(10)))
            }
        }
    }

    async fn report_unschedulable(&self, pod: &Pod, message: &str) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let patch = json!({"status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
        }]}});
        let _ = Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        record_event(self.client.clone(), pod, "FailedScheduling", message).await;
    }
}

/// POST the pod's binding subresource. A pod already bound (by an earlier binding) or gone is
/// not an error: the watch brings the truth either way.
async fn bind(client: Client, key: &str, node: &str) -> anyhow::Result<()> {
    let (ns, name) = split_key(key);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    match Api::<Pod>::namespaced(client, ns)
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
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
