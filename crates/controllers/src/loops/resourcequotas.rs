//! The resource quota loop: keep each ResourceQuota's `status` (`hard`, `used`) current with
//! what exists in its namespace, as kube's controller does. Admission charges creates as they
//! happen; this loop measures a quota when it is new or its spec changes, when something it
//! counts goes away (a pod deleted, finished or being deleted; any other counted object
//! deleted), and every five minutes in full. It does not measure on a status change: that
//! is admission's charge for an object not stored yet, and counting before the object lands
//! would give the charge back.
//!
//! Usage is measured from a live list of the namespace's objects (a consistent read, newer
//! than any cache), and written with the quota's resourceVersion: a charge that lands first
//! makes the write a conflict, and the quota is measured again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, PartialObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::Value;
use tokio_util::task::AbortOnDropHandle;
use yun_quota::Evaluator;

use super::{is_status, split_key, work, Next};
use crate::resourcequota;
use crate::runtime::{key_of, Change, Informer, WorkQueue};

/// Every quota is measured in full this often (kube's default resync).
const FULL_RESYNC: Duration = Duration::from_secs(300);

/// What the loop shares between its handlers and workers.
struct Loop {
    client: Client,
    queue: WorkQueue,
    quotas: Arc<Informer<ResourceQuota>>,
    /// (group, plural) → the watch that reports its deletions, started when a quota first
    /// counts that kind.
    watches: Mutex<HashMap<(String, String), AbortOnDropHandle<()>>>,
    /// (group, plural) → its served version, once discovery found it.
    resolved: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Loop {
    /// Queue every quota of `ns`.
    fn namespace_changed(&self, ns: &str) {
        for q in self.quotas.list_namespace(ns) {
            self.queue.add(&key_of(&*q));
        }
    }
}

pub async fn run(client: Client, shared: super::Shared) {
    let queue = WorkQueue::new();
    let quotas = Arc::new(Informer::start(
        Api::<ResourceQuota>::all(client.clone()),
        kube::api::WatchParams::default(),
        FULL_RESYNC,
        spec_changes(queue.clone()),
    ));
    let lp = Arc::new(Loop {
        client,
        queue: queue.clone(),
        quotas: quotas.clone(),
        watches: Mutex::default(),
        resolved: Mutex::default(),
    });
    // Pods free quota when they finish, start deleting or go.
    let released: Mutex<HashSet<String>> = Mutex::default();
    {
        let lp = lp.clone();
        shared.pods.add_handler(move |c| {
            let pod = c.object();
            let key = key_of(pod);
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let mut released = released.lock().expect("released lock");
            match c {
                Change::Deleted(_) => {
                    released.remove(&key);
                    lp.namespace_changed(ns);
                }
                Change::Applied(_) => {
                    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    let ending = matches!(phase, Some("Succeeded" | "Failed"))
                        || pod.metadata.deletion_timestamp.is_some();
                    if ending && released.insert(key) {
                        lp.namespace_changed(ns);
                    }
                }
            }
        });
    }
    {
        // The full resync: every quota, every FULL_RESYNC.
        let (queue, quotas) = (queue.clone(), quotas.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FULL_RESYNC);
            tick.tick().await;
            loop {
                tick.tick().await;
                for q in quotas.list() {
                    queue.add(&key_of(&*q));
                }
            }
        });
    }
    quotas.synced().await;
    shared.pods.synced().await;
    work(queue, 2, move |key| {
        let lp = lp.clone();
        async move { reconcile(&lp, &key).await }
    })
    .await;
}

/// The quota handler: a quota is queued when first seen and when its spec changes (or its
/// status does not yet reflect its spec), not for status writes.
fn spec_changes(queue: WorkQueue) -> impl Fn(Change<'_, ResourceQuota>) + Send + Sync {
    let seen: Mutex<HashMap<String, Value>> = Mutex::default();
    move |c| {
        let q = c.object();
        let key = key_of(q);
        let mut seen = seen.lock().expect("seen lock");
        if let Change::Deleted(_) = c {
            seen.remove(&key);
            return;
        }
        let spec = serde_json::to_value(&q.spec).unwrap_or(Value::Null);
        let unmeasured = q.status.as_ref().and_then(|s| s.hard.as_ref())
            != q.spec.as_ref().and_then(|s| s.hard.as_ref());
        if seen.get(&key) != Some(&spec) || unmeasured {
            seen.insert(key.clone(), spec);
            queue.add(&key);
        }
    }
}

async fn reconcile(lp: &Loop, key: &str) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(quota) = lp.quotas.get(key) else {
        return Ok(Next::Done);
    };
    let quota_json = serde_json::to_value(&*quota)?;
    let hard = yun_quota::parse_list(quota_json.pointer("/spec/hard")).unwrap_or_default();
    let spec = quota_json.get("spec").cloned().unwrap_or(Value::Null);
    let now = Timestamp::now();
    let mut measured = yun_quota::ResourceList::new();
    let mut next = Next::Done;
    for eval in resourcequota::evaluators(&hard) {
        let Some(ar) = lp.resolve(&eval).await? else {
            // Not served (a CRD not installed yet): nothing to measure.
            continue;
        };
        lp.watch(&eval, &ar);
        let objects = list(&lp.client, ns, &ar).await?;
        if eval == Evaluator::Pods {
            // A pod stuck terminating (its node lost) sends no event when its grace ends.
            if let Some(d) = resourcequota::recheck(&objects, now) {
                next = Next::After(d);
            }
        }
        measured.extend(resourcequota::measure(&eval, &hard, &spec, &objects, now));
    }
    let Some(status) = resourcequota::status(&quota_json, &measured) else {
        return Ok(next);
    };
    let mut updated = (*quota).clone();
    updated.status = Some(serde_json::from_value(status)?);
    // The resourceVersion read: a charge admission made meanwhile makes this a conflict.
    let api = Api::<ResourceQuota>::namespaced(lp.client.clone(), ns);
    match api
        .replace_status(name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(next),
        Err(e) if is_status(&e, 404) => Ok(Next::Done),
        Err(e) => Err(e.into()),
    }
}

/// Every object of one kind in `ns`, as JSON.
async fn list(client: &Client, ns: &str, ar: &ApiResource) -> anyhow::Result<Vec<Value>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await?;
        for o in page.items {
            out.push(serde_json::to_value(&o)?);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

impl Loop {
    /// The served version of an evaluator's resource; None when it is not served.
    async fn resolve(&self, eval: &Evaluator) -> anyhow::Result<Option<ApiResource>> {
        let (group, plural) = eval.resource();
        let id = (group.to_string(), plural.to_string());
        if let Some(ar) = self.resolved.lock().expect("resolved lock").get(&id) {
            return Ok(Some(ar.clone()));
        }
        let found = match kube::discovery::group(&self.client, group).await {
            Ok(g) => g,
            Err(kube::Error::Discovery(_)) => return Ok(None),
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let ar = found
            .recommended_resources()
            .into_iter()
            .map(|(ar, _)| ar)
            .find(|ar| ar.plural == plural);
        if let Some(ar) = &ar {
            self.resolved
                .lock()
                .expect("resolved lock")
                .insert(id, ar.clone());
        }
        Ok(ar)
    }

    /// Make sure deletions of `ar`'s objects queue their namespace's quotas (pods come from
    /// the shared informer; a Service's change of type or ports counts too).
    fn watch(self: &Loop, eval: &Evaluator, ar: &ApiResource) {
        if *eval == Evaluator::Pods {
            return;
        }
        let (group, plural) = eval.resource();
        let id = (group.to_string(), plural.to_string());
        let mut watches = self.watches.lock().expect("watches lock");
        if watches.contains_key(&id) {
            return;
        }
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), ar);
        let every_change = *eval == Evaluator::Services;
        let (queue, quotas) = (self.queue.clone(), self.quotas.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut listed = false;
            while let Some(event) = stream.next().await {
                let ns = match event {
                    Ok(Event::InitDone) => {
                        listed = true;
                        continue;
                    }
                    Ok(Event::Delete(o)) => o.metadata.namespace,
                    Ok(Event::Apply(o)) if every_change && listed => o.metadata.namespace,
                    _ => continue,
                };
                for q in quotas.list_namespace(ns.as_deref().unwrap_or_default()) {
                    queue.add(&key_of(&*q));
                }
            }
        });
        watches.insert(id, AbortOnDropHandle::new(task));
    }
}
