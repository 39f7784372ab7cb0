//! The DaemonSet loop: one daemon pod on every node the template fits (see
//! [`crate::daemonset`] for the decision), and the history of its templates as
//! ControllerRevisions (what `kubectl rollout history/undo daemonset` read). A change of a
//! DaemonSet, of one of its pods or revisions, or of any node (one added, relabelled, tainted,
//! cordoned or removed) looks at the DaemonSets again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod as ApiPod};
use kube::api::WatchParams;
use kube::{Api, Client};

use super::expectations::Expectations;
use super::{history, pods, split_key, work, Next};
use crate::cached::Pod;
use crate::daemonset::{self, HASH_LABEL};
use crate::revision::{self, Owner};
use crate::runtime::{
    enqueue_adopters, enqueue_controller, enqueue_self, key_of, Informer, WorkQueue,
};

pub async fn run(client: Client, workers: usize, shared: super::Shared) {
    let queue = WorkQueue::new();
    let sets = Arc::new(Informer::start(
        Api::<DaemonSet>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(60),
        |_| {},
    ));
    sets.add_handler(enqueue_self(queue.clone()));
    let revisions = shared.revisions.clone();
    revisions.add_handler(enqueue_controller(queue.clone(), "DaemonSet"));
    let pods = shared.pods.clone();
    pods.add_handler(enqueue_controller(queue.clone(), "DaemonSet"));
    pods.add_handler(enqueue_adopters(queue.clone(), sets.clone(), |ds| {
        ds.spec.as_ref().map(|s| &s.selector)
    }));
    let nodes = shared.nodes.clone();
    {
        let (queue, sets) = (queue.clone(), sets.clone());
        nodes.add_handler(move |_| {
            for ds in sets.list() {
                queue.add(&key_of(&*ds));
            }
        });
    }
    sets.synced().await;
    revisions.synced().await;
    pods.synced().await;
    nodes.synced().await;
    let expectations = Arc::new(Mutex::new(Expectations::default()));
    work(queue, workers, move |key| {
        let ctx = Ctx {
            client: client.clone(),
            sets: sets.clone(),
            revisions: revisions.clone(),
            pods: pods.clone(),
            nodes: nodes.clone(),
            expectations: expectations.clone(),
        };
        async move { reconcile(&key, &ctx).await }
    })
    .await;
}

struct Ctx {
    client: Client,
    sets: Arc<Informer<DaemonSet>>,
    revisions: Arc<Informer<ControllerRevision>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    expectations: Arc<Mutex<Expectations>>,
}

async fn reconcile(key: &str, ctx: &Ctx) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(ds) = ctx.sets.get(key) else {
        ctx.expectations.lock().expect("lock").forget(key);
        return Ok(Next::Done);
    };
    let namespace_pods: Vec<Pod> = ctx.pods.copies_in_namespace(ns);
    if !ctx
        .expectations
        .lock()
        .expect("lock")
        .satisfied(key, &namespace_pods)
    {
        return Ok(Next::After(Duration::from_millis(100)));
    }
    if keep_history(ctx, &ds, &namespace_pods).await?.is_none() {
        return Ok(Next::After(Duration::from_millis(100)));
    }
    let nodes: Vec<Node> = ctx.nodes.list().iter().map(|n| (**n).clone()).collect();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let plan = daemonset::plan(&ds, &nodes, &namespace_pods, now);
    let pod_api = Api::<ApiPod>::namespaced(ctx.client.clone(), ns);
    let done = pods::carry_out(
        &pod_api,
        &namespace_pods,
        pods::Actions {
            api_version: "apps/v1",
            kind: "DaemonSet",
            owner: &ds.metadata,
            adopt: &plan.adopt,
            release: &plan.release,
            create: &plan.create,
            delete: &plan.delete,
        },
    )
    .await;
    let mut failure = done.failure;
    ctx.expectations
        .lock()
        .expect("lock")
        .expect(key, done.created, done.deleted);
    if ds.status.as_ref() != Some(&plan.status) {
        let api = Api::<DaemonSet>::namespaced(ctx.client.clone(), ns);
        if let Err(e) = pods::write_status(&api, name, ds.status.as_ref(), &plan.status).await {
            failure = Some(e);
        }
    }
    match (failure, plan.recheck) {
        (Some(e), _) => Err(e.into()),
        (None, Some(after)) => Ok(Next::After(after)),
        (None, None) => Ok(Next::Done),
    }
}

/// The DaemonSet's revision history: the current template's revision made sure of (its
/// name, or None to look again after a name collision), and revisions beyond
/// revisionHistoryLimit that no pod runs deleted. A revision is named `NAME-HASH` with the
/// hash its pods carry in `controller-revision-hash`.
async fn keep_history(
    ctx: &Ctx,
    ds: &DaemonSet,
    namespace_pods: &[Pod],
) -> anyhow::Result<Option<String>> {
    let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let cached = ctx.revisions.list_namespace(ns);
    let owned = revision::owned(cached.iter().map(|r| &**r), &uid);
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let owner = Owner {
        api_version: "apps/v1",
        kind: "DaemonSet",
        meta: &ds.metadata,
    };
    let collisions = ds
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let update = revision::update_for(&owner, &template, collisions, &owned);
    let revision_api = Api::<ControllerRevision>::namespaced(ctx.client.clone(), ns);
    let ds_api = Api::<DaemonSet>::namespaced(ctx.client.clone(), ns);
    let recorded = history::record(
        &revision_api,
        &ds_api,
        &owner,
        &update,
        &template,
        collisions,
    )
    .await?;
    let Some(name) = recorded else {
        return Ok(None);
    };
    let ds_name = ds.metadata.name.clone().unwrap_or_default();
    let running: HashSet<String> = namespace_pods
        .iter()
        .filter(|p| crate::owner::controlled_by(&p.metadata, &uid))
        .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL))
        .map(|hash| format!("{ds_name}-{hash}"))
        .collect();
    let mut live: HashSet<&str> = running.iter().map(String::as_str).collect();
    live.insert(&name);
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    history::prune(&revision_api, &owned, &live, limit).await?;
    Ok(Some(name))
}
