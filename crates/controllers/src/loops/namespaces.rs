//! The namespace loop, as Kubernetes' namespace controller: for each namespace being deleted
//! (marked by the API server, phase Terminating) that still has the `kubernetes` finalizer,
//! find every namespaced kind the server serves (discovery, so custom resources too), delete
//! each object in the namespace with its ordinary deletion (a pod keeps its grace period and
//! ends through its node agent; an object with finalizers waits for them), report progress
//! in the namespace's conditions, and once nothing is left remove the finalizer through the
//! `finalize` subresource; the API server then removes the namespace.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchParams,
};
use kube::discovery::{verbs, Discovery, Scope};
use kube::{Api, Client};
use serde_json::json;

use super::{is_status, work, Next};
use crate::namespace::{self, Report, FINALIZER};
use crate::runtime::{enqueue_self, Informer, WorkQueue};

/// How soon to look again while content is going away (pods in their grace period).
const POLL: Duration = Duration::from_secs(1);
/// How soon to look again when all that is left waits on finalizers someone else removes.
const POLL_FINALIZERS: Duration = Duration::from_secs(5);

pub async fn run(client: Client, workers: usize) {
    let queue = WorkQueue::new();
    let namespaces = Arc::new(Informer::start(
        Api::<Namespace>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(60),
        enqueue_self(queue.clone()),
    ));
    namespaces.synced().await;
    work(queue, workers, move |key| {
        let (client, namespaces) = (client.clone(), namespaces.clone());
        async move { reconcile(&key, client, &namespaces).await }
    })
    .await;
}

async fn reconcile(
    name: &str,
    client: Client,
    namespaces: &Informer<Namespace>,
) -> anyhow::Result<Next> {
    let cached = namespaces.get(name);
    if cached.is_none_or(|ns| ns.metadata.deletion_timestamp.is_none()) {
        return Ok(Next::Done);
    }
    // Decide on a live read, never on the cache alone: a stale cache may still hold a
    // terminating namespace whose name a new namespace has taken since.
    let api = Api::<Namespace>::all(client.clone());
    let ns = match api.get(name).await {
        Ok(n) => n,
        Err(e) if is_status(&e, 404) => return Ok(Next::Done),
        Err(e) => return Err(e.into()),
    };
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Next::Done);
    }
    let report = match Discovery::new(client.clone()).run().await {
        Ok(d) => delete_content(&client, name, &d).await,
        Err(e) => Report {
            discovery_failure: Some(e.to_string()),
            ..Report::default()
        },
    };
    let old = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions = namespace::conditions(&report, &old, &now);
    if !namespace::same_conditions(&old, &conditions) {
        let patch = json!({"status": {"conditions": conditions}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(Next::Done),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = &report.discovery_failure {
        anyhow::bail!("namespace {name}: discovery: {e}");
    }
    if !report.failures.is_empty() {
        anyhow::bail!("namespace {name}: {}", report.failures.join("; "));
    }
    if !report.remaining.is_empty() {
        let held = report.finalizers.values().sum::<usize>();
        let left = report.remaining.values().sum::<usize>();
        return Ok(Next::After(if held >= left {
            POLL_FINALIZERS
        } else {
            POLL
        }));
    }
    // Nothing left: give up our finalizer (read again, so a finalizer another party added
    // meanwhile stays; the resourceVersion makes a concurrent change a conflict, and the uid
    // check a namespace of the same name created meanwhile safe).
    let live = match api.get(name).await {
        Ok(n) if n.metadata.uid == ns.metadata.uid => n,
        Ok(_) => return Ok(Next::Done),
        Err(e) if is_status(&e, 404) => return Ok(Next::Done),
        Err(e) => return Err(e.into()),
    };
    let rest: Vec<String> = live
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    let body = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": live.metadata.resource_version},
        "spec": {"finalizers": rest},
    });
    match api
        .replace_subresource::<serde_json::Value>("finalize", name, &PostParams::default(), &body)
        .await
    {
        Ok(_) => Ok(Next::Done),
        Err(e) if is_status(&e, 404) => Ok(Next::Done),
        Err(e) => Err(e.into()),
    }
}

/// Delete every object of every namespaced, listable, deletable kind in namespace `ns`, then
/// count what is still there (waiting for its grace period or its finalizers).
async fn delete_content(client: &Client, ns: &str, d: &Discovery) -> Report {
    let mut report = Report::default();
    for group in d.groups() {
        for (ar, caps) in group.recommended_resources() {
            let usable = caps.scope == Scope::Namespaced
                && [verbs::LIST, verbs::DELETE]
                    .iter()
                    .all(|v| caps.supports_operation(v));
            if !usable {
                continue;
            }
            if let Err(e) = delete_kind(client, ns, &ar, &mut report).await {
                report
                    .failures
                    .push(format!("{}: {e}", group_resource(&ar)));
            }
        }
    }
    report
}

/// "pods", or "widgets.example.com": how Kubernetes names a resource in its messages.
fn group_resource(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

async fn delete_kind(
    client: &Client,
    ns: &str,
    ar: &ApiResource,
    report: &mut Report,
) -> kube::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let listed = api.list_metadata(&ListParams::default()).await?;
    if listed.items.is_empty() {
        return Ok(());
    }
    for obj in &listed.items {
        if obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e),
        }
    }
    let left = api.list_metadata(&ListParams::default()).await?;
    if !left.items.is_empty() {
        report
            .remaining
            .insert(group_resource(ar), left.items.len());
        for obj in &left.items {
            for f in obj.metadata.finalizers.iter().flatten() {
                *report.finalizers.entry(f.clone()).or_default() += 1;
            }
        }
    }
    Ok(())
}
