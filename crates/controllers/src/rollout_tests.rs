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
        rs.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .extend(plan.size_annotations.clone());
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

fn spec_of(sets: &[ReplicaSet], name: &str) -> i32 {
    sets.iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .and_then(|r| r.spec.as_ref()?.replicas)
        .unwrap()
}

fn name_of(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap()
}

#[test]
fn scaling_every_replicaset_to_zero_restores_only_the_newest() {
    let mut sets = Vec::new();
    let mut d = deployment(3, "app:1", json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().revision_history_limit = Some(10);
    roll(&d, &mut sets, 0, 4);
    for image in ["app:2", "app:3"] {
        let mut next = deployment(3, image, json!({"type": "RollingUpdate"}));
        next.spec.as_mut().unwrap().revision_history_limit = Some(10);
        d = next;
        roll(&d, &mut sets, 2, 4);
    }
    assert_eq!(sets.len(), 3);
    let newest = name_of(sets.last().unwrap());
    // `kubectl scale rs --all --replicas=0`, pods gone.
    for rs in sets.iter_mut() {
        rs.spec.as_mut().unwrap().replicas = Some(0);
        rs.status = Some(ReplicaSetStatus::default());
    }
    let plan = deployment::plan(&d, &sets, &at(200));
    assert_eq!(plan.scale, [(newest.clone(), 3)]);
    roll(&d, &mut sets, 0, 4);
    for rs in &sets {
        let want = if name_of(rs) == newest { 3 } else { 0 };
        assert_eq!(spec_of(&sets, &name_of(rs)), want, "{}", name_of(rs));
    }
}

/// Kubernetes' documented example: 10 replicas, maxSurge 3, maxUnavailable 2, a new image that
/// never becomes available (old 8, new 5), then `kubectl scale deploy --replicas=15`: 3 more
/// for the old ReplicaSet and 2 for the new one, not all 5 for the broken version.
#[test]
fn scaling_during_a_rollout_is_proportional() {
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    let mut sets = Vec::new();
    let v1 = deployment(10, "app:1", strategy.clone());
    roll(&v1, &mut sets, 0, 13);
    let old = name_of(&sets[0]);
    let mut v2 = deployment(10, "app:2", strategy.clone());
    for step in 0..10 {
        let plan = deployment::plan(&v2, &sets, &at(step));
        apply(&mut sets, &plan);
        for rs in sets.iter_mut().filter(|r| name_of(r) != old) {
            rs.status.as_mut().unwrap().available_replicas = Some(0);
        }
    }
    let new = name_of(sets.iter().find(|r| name_of(r) != old).unwrap());
    assert_eq!((spec_of(&sets, &old), spec_of(&sets, &new)), (8, 5));
    v2.status = Some(deployment::plan(&v2, &sets, &at(20)).status);

    let sized = |d: &Deployment, sets: &mut Vec<ReplicaSet>| {
        let plan = deployment::plan(d, sets, &at(30));
        apply(sets, &plan);
        for rs in sets.iter_mut().filter(|r| name_of(r) != old) {
            rs.status.as_mut().unwrap().available_replicas = Some(0);
        }
        (spec_of(sets, &old), spec_of(sets, &new))
    };
    let mut up = v2.clone();
    up.spec.as_mut().unwrap().replicas = Some(15);
    assert_eq!(sized(&up, &mut sets), (11, 7));
    for rs in &sets {
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(a[deployment::DESIRED_REPLICAS], "15");
        assert_eq!(a[deployment::MAX_REPLICAS], "18");
    }
    // Sized: the rollout goes on from there (stuck on the broken image, within its bounds).
    let next = deployment::plan(&up, &sets, &at(31));
    assert!(next.scale.is_empty(), "{:?}", next.scale);

    // Down to 5: 8 pods at most (5 + maxSurge), the bigger ReplicaSet giving more.
    let mut down = up.clone();
    down.status = Some(next.status);
    down.spec.as_mut().unwrap().replicas = Some(5);
    assert_eq!(sized(&down, &mut sets), (5, 3));
    // And to 0: nothing left anywhere.
    let mut zero = down.clone();
    zero.spec.as_mut().unwrap().replicas = Some(0);
    assert_eq!(sized(&zero, &mut sets), (0, 0));
}

#[test]
fn scaling_a_settled_deployment_resizes_its_one_replicaset() {
    let mut sets = Vec::new();
    let mut d = deployment(3, "app:1", json!({"type": "RollingUpdate"}));
    roll(&d, &mut sets, 0, 4);
    d.spec.as_mut().unwrap().replicas = Some(6);
    let plan = deployment::plan(&d, &sets, &at(100));
    assert_eq!(plan.scale, [(name_of(&sets[0]), 6)]);
    roll(&d, &mut sets, 0, 6);
    assert_eq!(counts(&sets, &name_of(&sets[0])), (6, 6));
}

/// `kubectl rollout undo` (1.20) writes the old ReplicaSet's template back with Go's empty
/// values (`creationTimestamp: null`, `resources: {}`): the same template, so that
/// ReplicaSet is restored rather than a new one made for it.
#[test]
fn undo_restores_the_old_replicaset_despite_empty_values() {
    let mut sets = Vec::new();
    let v1 = deployment(2, "app:1", json!({"type": "RollingUpdate"}));
    roll(&v1, &mut sets, 0, 3);
    let first = name_of(&sets[0]);
    let mut v2 = deployment(2, "app:2", json!({"type": "RollingUpdate"}));
    v2.spec.as_mut().unwrap().revision_history_limit = Some(10);
    roll(&v2, &mut sets, 1, 3);
    let mut undo: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 3},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"type": "RollingUpdate"}, "revisionHistoryLimit": 10,
                 "template": {"metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "app:1", "resources": {}}]}}}
    }))
    .unwrap();
    let plan = deployment::plan(&undo, &sets, &at(300));
    assert!(
        plan.create.is_none(),
        "a new ReplicaSet for an old template"
    );
    assert_eq!(plan.revision, "3");
    assert_eq!(plan.set_revision, [(first.clone(), "3".to_string())]);
    undo.status = Some(plan.status.clone());
    roll(&undo, &mut sets, 1, 3);
    assert_eq!(sets.len(), 2);
    assert_eq!(counts(&sets, &first), (2, 2));
}

/// A rollout stuck on new pods that never get ready (maxSurge 1, maxUnavailable 0): resized
/// up and down, each ReplicaSet gets kube's share, and the old ReplicaSet's last available
/// pod is kept even while its status still counts the pods a resize removed.
#[test]
fn a_stuck_rollout_resized_keeps_its_available_pods() {
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut sets = Vec::new();
    roll(&deployment(2, "app:1", strategy.clone()), &mut sets, 0, 3);
    let old = name_of(&sets[0]);
    let broken = deployment(2, "app:2", strategy);
    // One step: `apply` plus the new pods never becoming available.
    let step = |d: &Deployment, sets: &mut Vec<ReplicaSet>, at_s: i64| {
        let plan = deployment::plan(d, sets, &at(at_s));
        apply(sets, &plan);
        for rs in sets.iter_mut().filter(|r| name_of(r) != old) {
            rs.status.as_mut().unwrap().available_replicas = Some(0);
        }
    };
    for s in 0..6 {
        step(&broken, &mut sets, s);
    }
    let new = name_of(sets.iter().find(|r| name_of(r) != old).unwrap());
    let sizes = |sets: &[ReplicaSet]| (spec_of(sets, &old), spec_of(sets, &new));
    assert_eq!(sizes(&sets), (2, 1));
    let mut up = broken.clone();
    up.spec.as_mut().unwrap().replicas = Some(4);
    for s in 10..16 {
        step(&up, &mut sets, s);
    }
    assert_eq!(sizes(&sets), (3, 2), "round(2·5/3), round(1·5/3)");

    let mut down = up.clone();
    down.spec.as_mut().unwrap().replicas = Some(1);
    let stale = sets.clone();
    let plan = deployment::plan(&down, &sets, &at(20));
    apply(&mut sets, &plan);
    assert_eq!(sizes(&sets), (1, 1));
    // The statuses as they were before that resize (3 old pods available, 2 new not).
    for (rs, before) in sets.iter_mut().zip(&stale) {
        rs.status = before.status.clone();
    }
    let plan = deployment::plan(&down, &sets, &at(21));
    assert!(plan.scale.is_empty(), "{:?}", plan.scale);
}
