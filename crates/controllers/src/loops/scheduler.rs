//! The scheduler loop: bind every pending pod to a node, or say why it cannot be placed.
//!
//! A pod that fits nowhere goes to the unschedulable queue (`scheduler::unschedulable`): it is
//! tried again after its back-off, or soon after a change that may make it fit. Its
//! `PodScheduled=False` condition is written only when it changes, and its FailedScheduling
//! event goes through the shared recorder (`yun_agent::events`), which makes the repeats one
//! Event with a count.
//!
//! A pod that fits nowhere may preempt pods of lower priority (`scheduler::preemption`): the
//! victims are deleted, the pod is nominated to their node (`status.nominatedNodeName`) and
//! waits there; while it waits, pods of no higher priority count it as already on that node,
//! so they do not take the room it made.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use yun_agent::events::{reference, EventType, Recorder};

use super::volume_binding::{self, VolumeCaches};
use super::{is_status, split_key, work, Next};
use crate::cached::Pod;
use crate::replicaset::is_active;
use crate::runtime::{key_of, Change, Informer, WorkQueue};
use crate::scheduler::cache::Cache;
use crate::scheduler::preemption::{self, priority, Preemption};
use crate::scheduler::unschedulable::Unschedulable;
use crate::scheduler::volumes::{self, Needs};
use crate::scheduler::{pick_node_with, NodeInfo, Placed, Unschedulable as NoFit};

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

/// What of a pod its placement depends on (spec and labels, not its status): an update that
/// leaves this alone, such as the scheduler's own status write, is no reason to try again.
fn pod_fingerprint(p: &Pod) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(&(&p.spec, &p.metadata.labels))
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// What of a node placement depends on: labels, unschedulable, taints, allocatable and the
/// Ready condition's status (not heartbeat times).
fn node_fingerprint(n: &Node) -> u64 {
    let spec = n.spec.as_ref();
    let status = n.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let mut h = DefaultHasher::new();
    serde_json::to_string(&(
        &n.metadata.labels,
        spec.and_then(|s| s.unschedulable),
        spec.and_then(|s| s.taints.as_ref()),
        status.and_then(|s| s.allocatable.as_ref()),
        ready,
    ))
    .unwrap_or_default()
    .hash(&mut h);
    h.finish()
}

/// How many bindings may be in flight at once: decisions are made one at a time against the
/// cache, and bindings (an API write each) go out concurrently, as kube-scheduler's binding
/// cycle does, so the store's group commit can batch them.
const BINDS_IN_FLIGHT: usize = 64;

/// A pod that preempted others, waiting for the room on `node` its victims leave.
struct Nomination {
    node: String,
    pod: Arc<Pod>,
    /// Keys and uids of the victims: while one still exists, the pod waits (a new pod of the
    /// same name, as a StatefulSet makes, is not the victim).
    victims: Vec<(String, String)>,
}

type Nominations = Arc<Mutex<HashMap<String, Nomination>>>;

struct Scheduler {
    client: Client,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    nominated: Nominations,
    queue: WorkQueue,
    pods: Arc<Informer<Pod>>,
    cache: Arc<Mutex<Cache>>,
    binds: Arc<Semaphore>,
    waiting: Arc<Mutex<Unschedulable>>,
    /// Wakes the task that moves due pods from `waiting` to `queue`.
    wake: Arc<Notify>,
    volumes: Arc<VolumeCaches>,
    events: Recorder,
}

pub async fn run(client: Client, shared: super::Shared) {
    let queue = WorkQueue::new();
    let cache: Arc<Mutex<Cache>> = Arc::default();
    let waiting: Arc<Mutex<Unschedulable>> = Arc::default();
    let wake = Arc::new(Notify::new());
    let nominated: Nominations = Arc::default();
    let (q, c, w, k) = (queue.clone(), cache.clone(), waiting.clone(), wake.clone());
    let nom = nominated.clone();
    let pods = shared.pods.clone();
    pods.add_handler(move |change| {
        let key = key_of(change.object());
        let now = Instant::now();
        let mut cache = c.lock().expect("lock");
        let was_placed = cache.is_placed(&key);
        let mut waiting = w.lock().expect("lock");
        match change {
            Change::Applied(p) => {
                cache.apply_pod(&key, p);
                if !wants_us(p) {
                    waiting.forget(&key);
                    nom.lock().expect("lock").remove(&key);
                } else if !waiting.contains(&key) {
                    q.add(&key);
                } else if waiting.pod_updated(&key, pod_fingerprint(p), now) {
                    // Its spec or labels changed: worth a try now.
                    q.add(&key);
                }
            }
            Change::Deleted(_) => {
                cache.forget(&key);
                waiting.forget(&key);
                nom.lock().expect("lock").remove(&key);
            }
        }
        // A pod left its node (deleted, finished): what waits may fit now.
        if was_placed && !cache.is_placed(&key) && !waiting.is_empty() {
            waiting.move_all(now);
            k.notify_one();
        }
    });
    let (c, w, k) = (cache.clone(), waiting.clone(), wake.clone());
    let seen: Mutex<HashMap<String, u64>> = Mutex::default();
    let nodes = shared.nodes.clone();
    nodes.add_handler(move |change| {
        let name = change.object().metadata.name.clone().unwrap_or_default();
        let moved = match change {
            Change::Applied(n) => {
                c.lock().expect("lock").apply_node(n);
                let fp = node_fingerprint(n);
                seen.lock().expect("lock").insert(name, fp) != Some(fp)
            }
            Change::Deleted(_) => {
                c.lock().expect("lock").delete_node(&name);
                seen.lock().expect("lock").remove(&name);
                true
            }
        };
        // A node came, went or changed in what placement reads: pods that did not fit may
        // fit now. (A heartbeat changes nothing here.)
        if moved {
            w.lock().expect("lock").move_all(Instant::now());
            k.notify_one();
        }
    });
    let volume_caches = {
        // A claim, volume or class that changed may let a waiting pod fit.
        let (w, k) = (waiting.clone(), wake.clone());
        Arc::new(VolumeCaches::start(&client, move || {
            w.lock().expect("lock").move_all(Instant::now());
            k.notify_one();
        }))
    };
    let budgets = Arc::new(Informer::start(
        Api::<PodDisruptionBudget>::all(client.clone()),
        WatchParams::default(),
        std::time::Duration::from_secs(300),
        |_| {},
    ));
    pods.synced().await;
    nodes.synced().await;
    budgets.synced().await;
    volume_caches.synced().await;
    let scheduler = Arc::new(Scheduler {
        budgets,
        nominated,
        events: Recorder::new(client.clone(), SCHEDULER_NAME, None),
        client,
        queue: queue.clone(),
        pods,
        cache,
        binds: Arc::new(Semaphore::new(BINDS_IN_FLIGHT)),
        waiting: waiting.clone(),
        wake: wake.clone(),
        volumes: volume_caches,
    });
    let _mover = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(move_due(
        waiting,
        wake,
        queue.clone(),
    )));
    work(queue, 1, move |key| {
        let scheduler = scheduler.clone();
        async move { scheduler.schedule(&key).await }
    })
    .await;
}

/// Hand the unschedulable pods whose time has come to the work queue, sleeping until the
/// next is due or something moves them.
async fn move_due(waiting: Arc<Mutex<Unschedulable>>, wake: Arc<Notify>, queue: WorkQueue) {
    loop {
        let (due, next) = waiting.lock().expect("lock").due(Instant::now());
        for key in due {
            queue.add(&key);
        }
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = wake.notified() => {}
        }
    }
}

impl Scheduler {
    /// Decide where one pod goes, count it there, and send its binding on its way.
    async fn schedule(&self, key: &str) -> anyhow::Result<Next> {
        let pod = self.pods.get(key).filter(|p| wants_us(p));
        let Some(pod) = pod else {
            self.waiting.lock().expect("lock").forget(key);
            return Ok(Next::Done);
        };
        if self.victims_present(key) {
            // As kube-scheduler's nominated pod: it waits until its victims are gone (their
            // grace period), not only marked for deletion.
            return Ok(Next::After(std::time::Duration::from_millis(250)));
        }
        // What the pod's claims need of a node (or why no node will do for now).
        let needs = volumes::needs(&pod, &*self.volumes);
        // Wait for a binding slot before deciding, so the decision sees every earlier one.
        let permit = self.binds.clone().acquire_owned().await?;
        let (decision, preemption) = {
            let mut cache = self.cache.lock().expect("lock");
            if cache.is_placed(key) {
                return Ok(Next::Done); // its binding is in flight
            }
            let view = self.with_nominated(&pod, key, &cache);
            let caches = &*self.volumes;
            let extra = |info: &NodeInfo| match &needs {
                Ok(n) if !n.is_empty() => volumes::node_fits(n, info, caches),
                _ => Ok(()),
            };
            let decision = match (&needs, &view) {
                (Err(why), _) => Err(NoFit {
                    message: format!("0/{} nodes are available: {why}.", cache.nodes().count()),
                }),
                (Ok(_), Some(v)) => pick_node_with(&pod, v.values(), &extra),
                (Ok(_), None) => pick_node_with(&pod, cache.nodes(), &extra),
            };
            if let Ok(node) = &decision {
                cache.assume(key, node, &pod);
            }
            let preemption = match &decision {
                Err(_) if needs.is_ok() => {
                    let budgets = self.budgets.list();
                    match &view {
                        Some(v) => preemption::select(&pod, v.values(), &budgets),
                        None => preemption::select(&pod, cache.nodes(), &budgets),
                    }
                }
                _ => None,
            };
            (decision, preemption)
        };
        match decision {
            Ok(node) => {
                self.waiting.lock().expect("lock").forget(key);
                self.nominated.lock().expect("lock").remove(key);
                let (client, cache, queue, events, caches) = (
                    self.client.clone(),
                    self.cache.clone(),
                    self.queue.clone(),
                    self.events.clone(),
                    self.volumes.clone(),
                );
                let key = key.to_string();
                let to_bind: Vec<String> = needs
                    .map(|n: Needs| n.to_bind.into_iter().map(|(k, _)| k).collect())
                    .unwrap_or_default();
                tokio::spawn(async move {
                    let ready = if to_bind.is_empty() {
                        Ok(true)
                    } else {
                        volume_binding::prebind(&client, &caches, &to_bind, &node).await
                    };
                    let bound = match ready {
                        Ok(true) => bind(client, &key, &node).await,
                        Ok(false) => Err(anyhow::anyhow!("its claims were not bound in time")),
                        Err(e) => Err(e),
                    };
                    match bound {
                        Ok(true) => events.record(
                            &reference("v1", "Pod", &pod.metadata),
                            EventType::Normal,
                            "Scheduled",
                            "Binding",
                            &format!("Successfully assigned {key} to {node}"),
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::debug!("binding {key} to {node}: {e:#}");
                            cache.lock().expect("lock").forget(&key);
                            queue.add_rate_limited(&key);
                        }
                    }
                    drop(permit);
                });
                Ok(Next::Done)
            }
            Err(unschedulable) => {
                drop(permit);
                self.waiting.lock().expect("lock").failed(
                    key,
                    pod_fingerprint(&pod),
                    Instant::now(),
                );
                self.wake.notify_one();
                if let Some(p) = preemption {
                    self.preempt(key, &pod, p).await;
                }
                self.report_unschedulable(&pod, &unschedulable.message)
                    .await;
                Ok(Next::Done)
            }
        }
    }

    /// The nodes as `pod` must see them when pods of at least its priority are nominated
    /// somewhere: with those pods counted on their nodes (None when there are none).
    fn with_nominated(
        &self,
        pod: &Pod,
        key: &str,
        cache: &Cache,
    ) -> Option<BTreeMap<String, NodeInfo>> {
        let mine = priority(pod);
        let nominated = self.nominated.lock().expect("lock");
        let ahead: Vec<(&String, &Nomination)> = nominated
            .iter()
            .filter(|(k, n)| k.as_str() != key && priority(&n.pod) >= mine && !cache.is_placed(k))
            .collect();
        if ahead.is_empty() {
            return None;
        }
        let mut view: BTreeMap<String, NodeInfo> = cache
            .nodes()
            .map(|n| (n.name().to_string(), n.clone()))
            .collect();
        for (k, n) in ahead {
            if let Some(info) = view.get_mut(&n.node) {
                info.add_pod(k, Placed::of(&n.pod));
            }
        }
        Some(view)
    }

    /// Whether a victim of the pod's last preemption still exists (terminating): the pod
    /// waits for them rather than binding early or preempting more.
    fn victims_present(&self, key: &str) -> bool {
        let victims: Vec<(String, String)> = match self.nominated.lock().expect("lock").get(key) {
            Some(n) => n.victims.clone(),
            None => return false,
        };
        victims.iter().any(|(key, uid)| {
            self.pods
                .get(key)
                .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid))
        })
    }

    /// Carry out a preemption: nominate the pod to the node, and delete the victims (each
    /// with a Preempted event, as kube-scheduler records it).
    async fn preempt(&self, key: &str, pod: &Arc<Pod>, p: Preemption) {
        self.nominated.lock().expect("lock").insert(
            key.to_string(),
            Nomination {
                node: p.node.clone(),
                pod: pod.clone(),
                victims: p
                    .victims
                    .iter()
                    .map(|(k, v)| (k.clone(), v.metadata.uid.clone().unwrap_or_default()))
                    .collect(),
            },
        );
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        // As kube-scheduler: each victim says why it goes (a Job's podFailurePolicy reads
        // it) before it is deleted.
        let target = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
        }]}});
        for (victim_key, victim) in &p.victims {
            let (ns, name) = split_key(victim_key);
            let api = Api::<Pod>::namespaced(self.client.clone(), ns);
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&target))
                .await
            {
                tracing::debug!("marking {victim_key} a disruption target: {e}");
            }
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => self.events.record(
                    &reference("v1", "Pod", &victim.metadata),
                    EventType::Normal,
                    "Preempted",
                    "Preempting",
                    &format!("Preempted by pod {uid} on node {}", p.node),
                ),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => tracing::debug!("preempting {victim_key}: {e}"),
            }
        }
        let (ns, name) = split_key(key);
        let patch = json!({"status": {"nominatedNodeName": p.node}});
        if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!("nominating {key}: {e}");
        }
    }

    /// Say why the pod waits: its PodScheduled=False condition (written only when it
    /// changes) and a FailedScheduling event (aggregated and rate limited by the recorder).
    async fn report_unschedulable(&self, pod: &Pod, message: &str) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let status = pod.status.as_ref();
        let current = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let unchanged = status.and_then(|s| s.phase.as_deref()) == Some("Pending")
            && current.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(message)
            });
        if !unchanged {
            // The transition time is when the condition became False, not this try.
            let since = current
                .filter(|c| c.status == "False")
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(k8s_openapi::jiff::Timestamp::now()));
            let patch = json!({"status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastTransitionTime": since,
            }]}});
            if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), ns)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!("status of {ns}/{name}: {e}");
            }
        }
        self.events.record(
            &reference("v1", "Pod", &pod.metadata),
            EventType::Warning,
            "FailedScheduling",
            "Scheduling",
            message,
        );
    }
}

/// POST the pod's binding subresource: whether this binding took. A pod already bound (by an
/// earlier binding) or gone is not an error: the watch brings the truth either way.
async fn bind(client: Client, key: &str, node: &str) -> anyhow::Result<bool> {
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
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
