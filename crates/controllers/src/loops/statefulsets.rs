//! The StatefulSet loop: keeps each set's revision history (ControllerRevisions), claims
//! for its pods, and the pods themselves (see [`crate::statefulset`] for the decision). A
//! change of a set, of one of its pods or of one of its revisions looks at the set again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod as ApiPod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use yun_agent::events::{reference, EventType, Recorder};

use super::expectations::Expectations;
use super::{history, is_status, pods, split_key, work, Next};
use crate::cached::Pod;
use crate::revision::{self, Owner};
use crate::runtime::{enqueue_adopters, enqueue_controller, enqueue_self, Informer, WorkQueue};
use crate::statefulset::{self, claim_name, Revision, REVISION_LABEL};

pub async fn run(client: Client, workers: usize, shared: super::Shared) {
    let queue = WorkQueue::new();
    let sets = shared.statefulsets.clone();
    sets.add_handler(enqueue_self(queue.clone()));
    let revisions = shared.revisions.clone();
    revisions.add_handler(enqueue_controller(queue.clone(), "StatefulSet"));
    let pods = shared.pods.clone();
    pods.add_handler(enqueue_controller(queue.clone(), "StatefulSet"));
    pods.add_handler(enqueue_adopters(queue.clone(), sets.clone(), |s| {
        s.spec.as_ref().map(|s| &s.selector)
    }));
    sets.synced().await;
    revisions.synced().await;
    pods.synced().await;
    let ctx = Arc::new(Ctx {
        events: Recorder::new(client.clone(), "statefulset-controller", None),
        client,
        sets,
        revisions,
        pods,
        expectations: Mutex::new(Expectations::default()),
    });
    work(queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { reconcile(&key, &ctx).await }
    })
    .await;
}

struct Ctx {
    client: Client,
    sets: Arc<Informer<StatefulSet>>,
    revisions: Arc<Informer<ControllerRevision>>,
    pods: Arc<Informer<Pod>>,
    expectations: Mutex<Expectations>,
    events: Recorder,
}

async fn reconcile(key: &str, ctx: &Ctx) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(set) = ctx.sets.get(key) else {
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
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let cached: Vec<Arc<ControllerRevision>> = ctx.revisions.list_namespace(ns);
    let owned = revision::owned(cached.iter().map(|r| &**r), &uid);
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let revision_api = Api::<ControllerRevision>::namespaced(ctx.client.clone(), ns);
    let set_api = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns);
    let owner = Owner {
        api_version: "apps/v1",
        kind: "StatefulSet",
        meta: &set.metadata,
    };
    let collisions = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let update = revision::update_for(&owner, &template, collisions, &owned);
    let recorded = history::record(
        &revision_api,
        &set_api,
        &owner,
        &update,
        &template,
        collisions,
    )
    .await?;
    let Some(update_name) = recorded else {
        return Ok(Next::After(Duration::from_millis(100)));
    };
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|n| owned.iter().any(|r| r.metadata.name.as_ref() == Some(n)))
        .unwrap_or_else(|| update_name.clone());
    let current_template = owned
        .iter()
        .find(|r| r.metadata.name.as_ref() == Some(&current_name))
        .and_then(|r| revision::template_of(r))
        .unwrap_or_else(|| template.clone());
    let current = Revision {
        name: &current_name,
        template: &current_template,
    };
    let update = Revision {
        name: &update_name,
        template: &template,
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let mut plan = statefulset::plan(&set, &current, &update, &namespace_pods, now);
    let object = reference("apps/v1", "StatefulSet", &set.metadata);
    let mut failure = None;
    // A pod is created only once its claims exist.
    let mut ready_to_create = Vec::new();
    for pod in std::mem::take(&mut plan.create) {
        match claims_for(ctx, &set, &pod).await {
            Ok(()) => ready_to_create.push(pod),
            Err(e) => {
                ctx.events.record(
                    &object,
                    EventType::Warning,
                    "FailedCreate",
                    "",
                    &format!(
                        "create Pod {} in StatefulSet {name} failed error: {e}",
                        pod_name(&pod)
                    ),
                );
                failure = Some(e);
                break;
            }
        }
    }
    // `whenScaled: Delete`: a pod going because the set shrank takes its claims with it
    // (they get the pod as owner before it is deleted; the garbage collector follows).
    if let Err(e) = claims_follow_scaled_down_pods(ctx, &set, &namespace_pods, &plan.delete).await {
        failure = Some(e);
    }
    let pod_api = Api::<ApiPod>::namespaced(ctx.client.clone(), ns);
    let done = pods::carry_out(
        &pod_api,
        &namespace_pods,
        pods::Actions {
            api_version: "apps/v1",
            kind: "StatefulSet",
            owner: &set.metadata,
            adopt: &plan.adopt,
            release: &plan.release,
            create: &ready_to_create,
            delete: &plan.delete,
        },
    )
    .await;
    for (names, verb) in [(&done.created, "create"), (&done.deleted, "delete")] {
        let reason = if verb == "create" {
            "SuccessfulCreate"
        } else {
            "SuccessfulDelete"
        };
        for pod in names {
            ctx.events.record(
                &object,
                EventType::Normal,
                reason,
                "",
                &format!("{verb} Pod {pod} in StatefulSet {name} successful"),
            );
        }
    }
    if let Some(e) = done.failure {
        failure = Some(anyhow::Error::from(e));
    }
    ctx.expectations
        .lock()
        .expect("lock")
        .expect(key, done.created, done.deleted);
    // History beyond revisionHistoryLimit goes, except what a pod or the status still names.
    let mut live: HashSet<&str> = [current_name.as_str(), update_name.as_str()].into();
    for p in &namespace_pods {
        if let Some(r) = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL))
        {
            live.insert(r);
        }
    }
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    if let Err(e) = history::prune(&revision_api, &owned, &live, limit).await {
        failure = Some(e.into());
    }
    if set.status.as_ref() != Some(&plan.status) {
        if let Err(e) = pods::write_status(&set_api, name, set.status.as_ref(), &plan.status).await
        {
            failure = Some(e.into());
        }
    }
    match (failure, plan.recheck) {
        (Some(e), _) => Err(e),
        (None, Some(after)) => Ok(Next::After(after)),
        (None, None) => Ok(Next::Done),
    }
}

/// Give the claims of the pods about to be deleted for a scale-down (ordinal ≥ replicas) the
/// pod as owner, when the set's retention policy says `whenScaled: Delete`, as kube's
/// StatefulSet controller does.
async fn claims_follow_scaled_down_pods(
    ctx: &Ctx,
    set: &StatefulSet,
    pods: &[Pod],
    deleting: &[String],
) -> anyhow::Result<()> {
    let Some(spec) = set.spec.as_ref() else {
        return Ok(());
    };
    let when_scaled = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled.as_deref());
    let templates = spec.volume_claim_templates.as_deref().unwrap_or_default();
    if when_scaled != Some("Delete") || templates.is_empty() {
        return Ok(());
    }
    let replicas = spec.replicas.unwrap_or(1);
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let ns = set.metadata.namespace.as_deref().unwrap_or("default");
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
    for pod_name in deleting {
        let ordinal = pod_name
            .strip_prefix(set_name)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|o| o.parse::<i32>().ok());
        if ordinal.is_none_or(|o| o < replicas) {
            continue;
        }
        let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod_name))
        else {
            continue;
        };
        let mut owner = crate::owner::controller_ref("v1", "Pod", &pod.metadata);
        owner.controller = None;
        for t in templates {
            let claim = claim_name(t.metadata.name.as_deref().unwrap_or_default(), pod_name);
            let Some(current) = api.get_opt(&claim).await? else {
                continue;
            };
            let mut owners = current
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            if owners.iter().any(|o| o.uid == owner.uid) {
                continue;
            }
            owners.push(owner.clone());
            let patch = serde_json::json!({"metadata": {"ownerReferences": owners,
                "resourceVersion": current.metadata.resource_version}});
            match api
                .patch(
                    &claim,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn pod_name(pod: &ApiPod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// Create the claims `pod` mounts from the set's claim templates (one already there is
/// kept: a pod that comes back finds its own data). A set whose claims are deleted with it
/// (`whenDeleted: Delete`) owns them.
async fn claims_for(ctx: &Ctx, set: &StatefulSet, pod: &ApiPod) -> anyhow::Result<()> {
    let Some(spec) = set.spec.as_ref() else {
        return Ok(());
    };
    let templates = spec.volume_claim_templates.as_deref().unwrap_or_default();
    if templates.is_empty() {
        return Ok(());
    }
    let ns = set.metadata.namespace.as_deref().unwrap_or("default");
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
    let owned_by_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    for t in templates {
        let template_name = t.metadata.name.clone().unwrap_or_default();
        let mut labels = t.metadata.labels.clone().unwrap_or_default();
        labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim_name(&template_name, pod_name(pod))),
                namespace: Some(ns.into()),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                owner_references: owned_by_set.then(|| {
                    let mut r =
                        crate::owner::controller_ref("apps/v1", "StatefulSet", &set.metadata);
                    r.controller = None;
                    vec![r]
                }),
                ..Default::default()
            },
            spec: t.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) if is_status(&e, 404) => anyhow::bail!(
                "the cluster does not serve PersistentVolumeClaims, which volumeClaimTemplates need"
            ),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
