//! Unit tests of the ReplicaSet and Deployment decisions, with a small simulation of the
//! ReplicaSets and their pods (pods become available one step after they are created).

use crate::cached::Pod;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use crate::deployment::{self, DeploymentPlan, REVISION};
use crate::replicaset;

fn at(second: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + second).unwrap())
}

fn rs(replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 3},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap()
}

fn pod(name: &str, owner: Option<&str>, node: Option<&str>, ready: bool) -> Pod {
    let owners = owner
        .map(|uid| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": uid, "controller": true}]))
        .unwrap_or(json!(null));
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}, "ownerReferences": owners},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": node},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" },
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap()
}

#[test]
fn replicaset_creates_deletes_and_adopts() {
    let plan = replicaset::plan(&rs(3), &[pod("a", Some("rs-uid"), Some("n"), true)]);
    assert_eq!(plan.create.len(), 2);
    let new = &plan.create[0];
    assert_eq!(new.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(
        new.metadata.owner_references.as_ref().unwrap()[0].uid,
        "rs-uid"
    );
    assert_eq!(plan.status.replicas, 1);
    assert_eq!(plan.status.ready_replicas, Some(1));
    assert_eq!(plan.status.observed_generation, Some(3));

    let pods = [
        pod("ready", Some("rs-uid"), Some("n"), true),
        pod("unscheduled", Some("rs-uid"), None, false),
        pod("notready", Some("rs-uid"), Some("n"), false),
        pod("orphan", None, Some("n"), true),
        pod("someone-elses", Some("other"), Some("n"), true),
    ];
    let plan = replicaset::plan(&rs(2), &pods);
    assert_eq!(plan.adopt, ["orphan"]);
    assert_eq!(
        plan.delete,
        ["unscheduled", "notready"],
        "least valuable first"
    );
    assert!(plan.create.is_empty());
}

fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": strategy, "revisionHistoryLimit": 1,
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))
    .unwrap()
}

/// ReplicaSets as the cluster would have them after carrying out `plan` and one step of pods
/// starting (pods created in the previous step are available now).
fn apply(sets: &mut Vec<ReplicaSet>, plan: &DeploymentPlan) {
    if let Some(new) = &plan.create {
        sets.push(new.clone());
    }
    for (name, n) in &plan.scale {
        let rs = sets
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .unwrap();
        rs.spec.as_mut().unwrap().replicas = Some(*n);
    }
    for (name, rev) in &plan.set_revision {
        let rs = sets
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .unwrap();
        rs.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(REVISION.into(), rev.clone());
    }
    sets.retain(|r| !plan.delete.contains(r.metadata.name.as_ref().unwrap()));
    for rs in sets.iter_mut() {
        let want = rs.spec.as_ref().unwrap().replicas.unwrap();
        let before = rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
        let available = want.min(before);
        rs.status = Some(ReplicaSetStatus {
            replicas: want,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        });
    }
}

fn counts(sets: &[ReplicaSet], name: &str) -> (i32, i32) {
    let rs = sets
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .unwrap();
    let s = rs.status.clone().unwrap();
    (s.replicas, s.available_replicas.unwrap())
}

/// Run the controller until nothing changes; checks the rollout bounds on every step.
fn roll(
    d: &Deployment,
    sets: &mut Vec<ReplicaSet>,
    min_available: i32,
    max_pods: i32,
) -> DeploymentPlan {
    for step in 0..50 {
        let plan = deployment::plan(d, sets, &at(step));
        let idle = plan.create.is_none()
            && plan.scale.is_empty()
            && plan.set_revision.is_empty()
            && plan.delete.is_empty();
        let settled = sets.iter().all(|r| {
            let s = r.status.clone().unwrap_or_default();
            s.available_replicas == Some(s.replicas)
        });
        if idle && settled {
            return plan;
        }
        apply(sets, &plan);
        let pods: i32 = sets
            .iter()
            .map(|r| r.status.as_ref().unwrap().replicas)
            .sum();
        let available: i32 = sets
            .iter()
            .map(|r| r.status.as_ref().unwrap().available_replicas.unwrap())
            .sum();
        assert!(pods <= max_pods, "step {step}: {pods} pods > {max_pods}");
        if step > 1 {
            assert!(
                available >= min_available,
                "step {step}: only {available} available"
            );
        }
    }
    panic!("the rollout did not settle");
}

#[test]
fn rolling_update_respects_surge_and_unavailability_and_rolls_back() {
    let mut sets = Vec::new();
    let v1 = deployment(4, "app:1", json!({"type": "RollingUpdate"}));
    let plan = roll(&v1, &mut sets, 0, 5);
    let first = sets[0].metadata.name.clone().unwrap();
    assert_eq!(counts(&sets, &first), (4, 4));
    assert_eq!(plan.revision, "1");
    let progressing = plan
        .status
        .conditions
        .clone()
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // v2: maxSurge 25% of 4 = 1, maxUnavailable 25% = 1 → never more than 5 pods or fewer than 3 available.
    let v2 = deployment(4, "app:2", json!({"type": "RollingUpdate"}));
    let plan = roll(&v2, &mut sets, 3, 5);
    let second = sets
        .iter()
        .find(|r| r.metadata.name.as_ref() != Some(&first))
        .unwrap()
        .metadata
        .name
        .clone()
        .unwrap();
    assert_eq!(counts(&sets, &second), (4, 4));
    assert_eq!(counts(&sets, &first), (0, 0));
    assert_eq!(plan.revision, "2");
    assert_eq!(plan.status.updated_replicas, Some(4));

    // Undo: the template goes back to v1; its ReplicaSet is reused as revision 3.
    let plan = roll(&v1, &mut sets, 3, 5);
    assert_eq!(plan.revision, "3");
    assert_eq!(counts(&sets, &first), (4, 4));
    let rev = |name: &str| {
        sets.iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .map(|r| r.metadata.annotations.clone().unwrap()[REVISION].clone())
    };
    assert_eq!(rev(&first).as_deref(), Some("3"));

    // v3 with revisionHistoryLimit 1: once v3 is out, only one empty old ReplicaSet is kept.
    let v3 = deployment(
        4,
        "app:3",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 2}}),
    );
    roll(&v3, &mut sets, 2, 4);
    assert_eq!(
        sets.len(),
        2,
        "{:?}",
        sets.iter()
            .map(|s| s.metadata.name.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn recreate_stops_old_pods_before_starting_new_ones() {
    let mut sets = Vec::new();
    let v1 = deployment(3, "app:1", json!({"type": "Recreate"}));
    roll(&v1, &mut sets, 0, 3);
    let v2 = deployment(3, "app:2", json!({"type": "Recreate"}));
    let first = deployment::plan(&v2, &sets, &at(100));
    let new = first.create.clone().unwrap();
    assert_eq!(
        new.spec.as_ref().unwrap().replicas,
        Some(0),
        "new pods wait for the old ones to go"
    );
    assert_eq!(first.scale.len(), 1);
    assert_eq!(first.scale[0].1, 0);
    roll(&v2, &mut sets, 0, 3);
    let new_name = new.metadata.name.unwrap();
    assert_eq!(counts(&sets, &new_name), (3, 3));
}

#[test]
fn no_progress_past_the_deadline_is_reported() {
    let mut d = deployment(2, "app:1", json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
    let mut sets = Vec::new();
    let plan = deployment::plan(&d, &sets, &at(0));
    apply(&mut sets, &plan);
    // Pods never become available: freeze the statuses.
    for rs in sets.iter_mut() {
        rs.status.as_mut().unwrap().available_replicas = Some(0);
    }
    d.status = Some(deployment::plan(&d, &sets, &at(1)).status);
    let later = deployment::plan(&d, &sets, &at(100)).status;
    let progressing = later
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
}

#[test]
fn template_hash_ignores_its_own_label_and_changes_with_the_template() {
    let a = deployment(1, "app:1", json!({})).spec.unwrap().template;
    let mut labeled = a.clone();
    labeled
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert("pod-template-hash".into(), "x".into());
    let b = deployment(1, "app:2", json!({})).spec.unwrap().template;
    assert_eq!(
        deployment::template_hash(&a),
        deployment::template_hash(&labeled)
    );
    assert_ne!(deployment::template_hash(&a), deployment::template_hash(&b));
    assert!(deployment::template_hash(&a)
        .chars()
        .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
}
