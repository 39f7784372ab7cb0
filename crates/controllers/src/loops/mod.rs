//! The control loops: each feeds a pure decision (see the crate's other modules) from
//! informers and carries out its actions through the API.

pub mod autoscalers;
pub mod cronjobs;
pub mod daemonsets;
pub mod deployments;
pub mod disruption;
pub mod endpoints;
mod expectations;
pub mod gc;
mod history;
pub mod jobs;
pub mod namespaces;
pub mod nodes;
mod pods;
pub mod replicasets;
pub mod resourcequotas;
pub mod scheduler;
pub mod serviceaccounts;
pub mod snapshots;
pub mod statefulsets;
pub mod ttl_after_finished;
mod volume_binding;
pub mod volumes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use kube::api::WatchParams;
use kube::{Api, Client};
use tokio_util::task::AbortOnDropHandle;

use crate::cached::Pod;
use crate::runtime::{Informer, WorkQueue};

/// The caches several loops read: one watch and one copy of each kind for them all.
#[derive(Clone)]
pub struct Shared {
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub statefulsets: Arc<Informer<StatefulSet>>,
    /// The history of StatefulSets and DaemonSets.
    pub revisions: Arc<Informer<ControllerRevision>>,
    pub jobs: Arc<Informer<Job>>,
}

impl Shared {
    pub fn start(client: &Client) -> Shared {
        fn cache<K>(api: Api<K>, resync: u64) -> Arc<Informer<K>>
        where
            K: kube::Resource
                + Clone
                + serde::de::DeserializeOwned
                + std::fmt::Debug
                + Send
                + Sync
                + 'static,
        {
            Arc::new(Informer::start(
                api,
                WatchParams::default(),
                Duration::from_secs(resync),
                |_| {},
            ))
        }
        Shared {
            pods: cache(Api::all(client.clone()), 600),
            nodes: cache(Api::all(client.clone()), 300),
            replicasets: cache(Api::all(client.clone()), 60),
            statefulsets: cache(Api::all(client.clone()), 60),
            revisions: cache(Api::all(client.clone()), 300),
            jobs: cache(Api::all(client.clone()), 60),
        }
    }
}

/// What a reconcile asks for next.
pub enum Next {
    Done,
    /// Look again after this long (e.g. waiting for the cache to catch up).
    After(Duration),
}

/// Run `workers` tasks taking keys from `queue` and reconciling them; failures come back with
/// back-off, successes are forgotten.
pub async fn work<F, Fut>(queue: WorkQueue, workers: usize, reconcile: F)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Next>> + Send,
{
    let reconcile = Arc::new(reconcile);
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tasks.push(AbortOnDropHandle::new(tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                match reconcile(key.clone()).await {
                    Ok(Next::Done) => queue.forget(&key),
                    Ok(Next::After(d)) => {
                        queue.forget(&key);
                        queue.add_after(&key, d);
                    }
                    Err(e) => {
                        tracing::debug!("reconcile {key}: {e:#}");
                        queue.add_rate_limited(&key);
                    }
                }
                queue.done(&key);
            }
        })));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// (namespace, name) of a "namespace/name" key.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Whether a kube error is a 404 or 409 (the object is gone, or already there).
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Set an object's owner references, only if it is still the version `meta` was read at
/// (a concurrent change, e.g. another controller adopting it, wins: the next pass decides
/// again). Returns whether the write took.
pub async fn set_owners<K>(
    api: &Api<K>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Add (`present`) or remove finalizer `f`, only at the version `meta` was read at (a
/// concurrent change wins; the next pass decides again). A no-op when it already is so; an
/// object that is gone is not an error.
pub async fn set_finalizer<K>(
    api: &Api<K>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    f: &str,
    present: bool,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let current = meta.finalizers.clone().unwrap_or_default();
    if current.iter().any(|x| x == f) == present {
        return Ok(());
    }
    let mut list: Vec<String> = current.into_iter().filter(|x| x != f).collect();
    if present {
        list.push(f.to_string());
    }
    let patch = serde_json::json!({"metadata": {
        "finalizers": list,
        "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
