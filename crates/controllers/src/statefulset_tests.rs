//! Unit tests of the StatefulSet decision.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{json, Value};

use crate::cached::Pod;
use crate::statefulset::{plan, Revision, StatefulSetPlan, POD_INDEX_LABEL, REVISION_LABEL};

const NOW: i64 = 1_800_000_000;

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn sts(extra: Value) -> StatefulSet {
    let mut v = json!({"metadata": {"name": "web", "namespace": "default", "uid": "sts-uid",
            "generation": 3},
        "spec": {"replicas": 3, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// A member pod `web-ORD` at `revision`, running and ready or not.
fn member(ord: i32, revision: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("web-{ord}"), "namespace": "default",
            "labels": {"app": "web", REVISION_LABEL: revision},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                "uid": "sts-uid", "controller": true}]},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready",
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap()
}

fn template() -> PodTemplateSpec {
    sts(json!({})).spec.unwrap().template
}

fn decide(set: &StatefulSet, pods: &[Pod]) -> StatefulSetPlan {
    let t = template();
    let old = Revision {
        name: "web-old",
        template: &t,
    };
    let new = Revision {
        name: "web-new",
        template: &t,
    };
    plan(set, &old, &new, pods, NOW)
}

fn created(p: &StatefulSetPlan) -> Vec<String> {
    p.create
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

#[test]
fn ordered_ready_starts_one_pod_at_a_time_in_order() {
    let set = sts(json!({}));
    let p = decide(&set, &[]);
    assert_eq!(created(&p), vec!["web-0"]);
    let pod = &p.create[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[REVISION_LABEL], "web-new");
    assert_eq!(labels[POD_INDEX_LABEL], "0");
    assert_eq!(p.status.replicas, 1);
    // web-0 not ready yet: nothing more.
    let p = decide(&set, &[member(0, "web-new", false)]);
    assert!(p.create.is_empty() && p.delete.is_empty());
    let p = decide(&set, &[member(0, "web-new", true)]);
    assert_eq!(created(&p), vec!["web-1"]);
}

#[test]
fn parallel_starts_every_pod_at_once() {
    let set = sts(json!({"spec": {"podManagementPolicy": "Parallel"}}));
    assert_eq!(created(&decide(&set, &[])), vec!["web-0", "web-1", "web-2"]);
}

#[test]
fn a_missing_pod_returns_under_its_name_and_a_failed_one_is_replaced() {
    let set = sts(json!({}));
    let pods = [member(0, "web-new", true), member(2, "web-new", true)];
    assert_eq!(created(&decide(&set, &pods)), vec!["web-1"]);
    let mut failed = member(1, "web-new", false);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let p = decide(&set, &[member(0, "web-new", true), failed]);
    assert_eq!(p.delete, vec!["web-1"]);
    assert!(p.create.is_empty());
}

#[test]
fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let set = sts(json!({"spec": {"replicas": 1}}));
    let pods: Vec<Pod> = (0..3).map(|i| member(i, "web-new", true)).collect();
    let p = decide(&set, &pods);
    assert_eq!(p.delete, vec!["web-2"]);
    let mut dying = member(2, "web-new", true);
    dying.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    let p = decide(&set, &[pods[0].clone(), pods[1].clone(), dying]);
    assert!(p.delete.is_empty(), "waits for web-2 to go: {:?}", p.delete);
}

#[test]
fn rolling_update_goes_down_from_the_top_and_stops_at_the_partition() {
    let set = sts(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 1}}}}));
    let pods: Vec<Pod> = (0..3).map(|i| member(i, "web-old", true)).collect();
    let p = decide(&set, &pods);
    assert_eq!(p.delete, vec!["web-2"]);
    // web-2 recreated at the new revision and ready: web-1 next; web-0 stays (partition).
    let pods = [
        member(0, "web-old", true),
        member(1, "web-old", true),
        member(2, "web-new", true),
    ];
    assert_eq!(decide(&set, &pods).delete, vec!["web-1"]);
    let pods = [
        member(0, "web-old", true),
        member(1, "web-new", true),
        member(2, "web-new", true),
    ];
    let p = decide(&set, &pods);
    assert!(p.delete.is_empty());
    assert_eq!(p.status.updated_replicas, Some(2));
    assert_eq!(p.status.current_replicas, Some(1));
    assert_eq!(p.status.current_revision.as_deref(), Some("web-old"));
    // Below the partition a missing pod comes back at the current revision.
    let p = decide(&set, &pods[1..]);
    assert_eq!(
        p.create[0].metadata.labels.as_ref().unwrap()[REVISION_LABEL],
        "web-old"
    );
}

#[test]
fn max_unavailable_bounds_the_update_and_completion_moves_the_current_revision() {
    let set = sts(json!({"spec": {"podManagementPolicy": "Parallel",
        "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}}));
    let pods: Vec<Pod> = (0..3).map(|i| member(i, "web-old", true)).collect();
    assert_eq!(decide(&set, &pods).delete, vec!["web-2", "web-1"]);
    let pods: Vec<Pod> = (0..3).map(|i| member(i, "web-new", true)).collect();
    let p = decide(&set, &pods);
    assert_eq!(p.status.current_revision.as_deref(), Some("web-new"));
    assert_eq!(p.status.current_replicas, Some(3));
    assert_eq!(p.status.ready_replicas, Some(3));
    assert_eq!(p.status.observed_generation, Some(3));
}

#[test]
fn on_delete_leaves_old_pods_alone() {
    let set = sts(json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}));
    let pods: Vec<Pod> = (0..3).map(|i| member(i, "web-old", true)).collect();
    let p = decide(&set, &pods);
    assert!(p.delete.is_empty() && p.create.is_empty());
    // A deleted one comes back new.
    let p = decide(&set, &pods[..2]);
    assert_eq!(
        p.create[0].metadata.labels.as_ref().unwrap()[REVISION_LABEL],
        "web-new"
    );
}

#[test]
fn claim_templates_become_volumes_named_per_pod() {
    let set = sts(
        json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}}),
    );
    let p = decide(&set, &[]);
    let volumes = p.create[0].spec.as_ref().unwrap().volumes.clone().unwrap();
    let claim = volumes[0].persistent_volume_claim.as_ref().unwrap();
    assert_eq!(claim.claim_name, "data-web-0");
}

#[test]
fn foreign_and_oddly_named_pods_are_not_members() {
    let set = sts(json!({}));
    let mut other = member(0, "web-new", true);
    other.metadata.owner_references.as_mut().unwrap()[0].uid = "someone".into();
    let mut odd = member(0, "web-new", true);
    odd.metadata.name = Some("web-01".into());
    let p = decide(&set, &[other, odd]);
    assert_eq!(created(&p), vec!["web-0"]);
}
