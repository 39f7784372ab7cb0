//! The Deployment loop: roll each Deployment's ReplicaSets toward its template.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{is_status, split_key, work, Next};
use crate::deployment::{self, REVISION};
use crate::owner;
use crate::runtime::{enqueue_adopters, enqueue_controller, enqueue_self, Informer, WorkQueue};

pub async fn run(client: Client, workers: usize, shared: super::Shared) {
    let queue = WorkQueue::new();
    let deployments = Arc::new(Informer::start(
        Api::<Deployment>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(30),
        enqueue_self(queue.clone()),
    ));
    let sets = shared.replicasets.clone();
    sets.add_handler(enqueue_controller(queue.clone(), "Deployment"));
    sets.add_handler(enqueue_adopters(queue.clone(), deployments.clone(), |d| {
        d.spec.as_ref().map(|s| &s.selector)
    }));
    deployments.synced().await;
    sets.synced().await;
    work(queue, workers, move |key| {
        let (client, deployments, sets) = (client.clone(), deployments.clone(), sets.clone());
        async move { reconcile(&key, client, &deployments, &sets).await }
    })
    .await;
}

/// Keep a condition's timestamps while nothing about it changed, so an unchanged status is
/// byte-for-byte the same and no write (and no watch event) follows.
fn keep_condition_times(old: Option<&DeploymentStatus>, new: &mut DeploymentStatus) {
    let old_conditions = old.and_then(|s| s.conditions.clone()).unwrap_or_default();
    for c in new.conditions.iter_mut().flatten() {
        if let Some(o) = old_conditions.iter().find(|o| o.type_ == c.type_) {
            if o.status == c.status && o.reason == c.reason && o.message == c.message {
                c.last_update_time = o.last_update_time.clone();
                c.last_transition_time = o.last_transition_time.clone();
            } else if o.status == c.status {
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
}

async fn reconcile(
    key: &str,
    client: Client,
    deployments: &Informer<Deployment>,
    sets: &Informer<ReplicaSet>,
) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(d) = deployments.get(key) else {
        return Ok(Next::Done);
    };
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Next::Done);
    }
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let rs_api = Api::<ReplicaSet>::namespaced(client.clone(), ns);
    let namespace_sets = sets.list_namespace(ns);
    // ControllerRef: adopt orphaned ReplicaSets the selector matches (e.g. left by an orphan
    // delete of a previous Deployment of this name), release the ones it no longer matches.
    let selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let claim = owner::claim(
        &d.metadata,
        &selector,
        namespace_sets.iter().map(|rs| &rs.metadata),
    );
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in &namespace_sets {
        let name = rs.metadata.name.clone().unwrap_or_default();
        if claim.adopt.contains(&name) {
            let reference = owner::controller_ref("apps/v1", "Deployment", &d.metadata);
            let refs = owner::adopted_refs(&rs.metadata, reference);
            if !super::set_owners(&rs_api, &rs.metadata, refs.clone()).await? {
                return Ok(Next::After(Duration::from_millis(100)));
            }
            let mut rs = (**rs).clone();
            rs.metadata.owner_references = Some(refs);
            owned.push(rs);
        } else if claim.release.contains(&name) {
            let refs = owner::released_refs(&rs.metadata, &uid);
            super::set_owners(&rs_api, &rs.metadata, refs).await?;
        } else if owner::controlled_by(&rs.metadata, &uid) {
            owned.push((**rs).clone());
        }
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut plan = deployment::plan(&d, &owned, &now);
    if let Some(rs) = &plan.create {
        match rs_api.create(&PostParams::default(), rs).await {
            Ok(_) => {}
            // Made already (the cache is behind): the next pass sees it.
            Err(e) if is_status(&e, 409) => return Ok(Next::After(Duration::from_millis(100))),
            Err(e) => return Err(e.into()),
        }
    }
    for (rs, replicas) in &plan.scale {
        // The size annotations tell the next pass a resized Deployment from a sized one.
        let patch = json!({
            "metadata": {"annotations": plan.size_annotations},
            "spec": {"replicas": replicas},
        });
        rs_api
            .patch(rs, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for (rs, revision) in &plan.set_revision {
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        rs_api
            .patch(rs, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for rs in &plan.delete {
        match rs_api.delete(rs, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let api = Api::<Deployment>::namespaced(client, ns);
    let current_revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .cloned();
    if current_revision.as_deref() != Some(plan.revision.as_str()) {
        let patch = json!({"metadata": {"annotations": {REVISION: plan.revision}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    keep_condition_times(d.status.as_ref(), &mut plan.status);
    if d.status.as_ref() != Some(&plan.status) {
        super::pods::write_status(&api, name, d.status.as_ref(), &plan.status).await?;
    }
    // Look again while a rollout is under way (progress deadlines need a clock, not events).
    let complete = plan.status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && matches!(
                c.reason.as_deref(),
                Some("NewReplicaSetAvailable") | Some("ProgressDeadlineExceeded")
            )
    });
    Ok(if complete {
        Next::Done
    } else {
        Next::After(Duration::from_secs(5))
    })
}
