//! Unit tests of the DaemonSet decision.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use crate::cached::Pod;
use crate::daemonset::{fit, plan, HASH_LABEL};

const NOW: i64 = 1_800_000_000;

fn node(name: &str, extra: Value) -> Node {
    let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

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

fn ds(extra: Value) -> DaemonSet {
    let mut v = json!({"metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid",
            "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
            "updateStrategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn hash(d: &DaemonSet) -> String {
    crate::deployment::template_hash(&d.spec.as_ref().unwrap().template)
}

/// A running, ready daemon pod of `d` on `node` with template hash `hash`.
fn daemon_pod(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": name,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "agent", HASH_LABEL: hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                "uid": "ds-uid", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready",
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap()
}

fn created_for(p: &crate::daemonset::DaemonSetPlan) -> Vec<String> {
    let mut nodes: Vec<String> = p
        .create
        .iter()
        .map(|pod| {
            let terms = &pod
                .spec
                .as_ref()
                .unwrap()
                .affinity
                .as_ref()
                .unwrap()
                .node_affinity
                .as_ref()
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()
                .node_selector_terms;
            terms[0].match_fields.as_ref().unwrap()[0]
                .values
                .as_ref()
                .unwrap()[0]
                .clone()
        })
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn one_pod_per_fitting_node_bound_by_affinity_with_daemon_tolerations() {
    let d = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}));
    let nodes = [
        node("a", json!({"metadata": {"labels": {"role": "edge"}}})),
        node(
            "b",
            json!({"metadata": {"labels": {"role": "edge"}},
            "spec": {"unschedulable": true}}),
        ),
        node("c", json!({})),
    ];
    let p = plan(&d, &nodes, &[], NOW);
    assert_eq!(
        created_for(&p),
        ["a", "b"],
        "cordoned b still gets its daemon"
    );
    let pod = &p.create[0];
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
    assert_eq!(pod.metadata.labels.as_ref().unwrap()[HASH_LABEL], hash(&d));
    let tolerations = pod.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
    assert!(tolerations.iter().any(
        |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
            && t.effect.as_deref() == Some("NoExecute")
    ));
    assert_eq!(p.status.desired_number_scheduled, 2);
    assert_eq!(p.status.current_number_scheduled, 0);
    assert_eq!(p.status.number_unavailable, Some(2));
    assert_eq!(
        p.status.number_available,
        Some(0),
        "zeros are written, not omitted"
    );
    assert_eq!(p.status.observed_generation, Some(2));
}

#[test]
fn taints_stop_new_pods_and_no_execute_evicts() {
    let spec = ds(json!({})).spec.unwrap().template.spec.unwrap();
    let no_schedule = node(
        "n",
        json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}}),
    );
    let f = fit(&spec, &no_schedule);
    assert!(!f.run && f.keep);
    let no_execute = node(
        "n",
        json!({"spec": {"taints": [{"key": "gpu", "effect": "NoExecute"}]}}),
    );
    let f = fit(&spec, &no_execute);
    assert!(!f.run && !f.keep);
    let unreachable = node(
        "n",
        json!({"spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
    );
    assert!(
        fit(&spec, &unreachable).run,
        "daemons tolerate an unreachable node"
    );

    // A daemon pod on a node that gains a NoExecute taint goes; NoSchedule keeps it.
    let d = ds(json!({}));
    let h = hash(&d);
    let pods = [daemon_pod("p1", "n", &h, true)];
    let p = plan(&d, &[no_execute], &pods, NOW);
    assert_eq!(p.delete, ["p1"]);
    assert_eq!(p.status.number_misscheduled, 1);
    let p = plan(&d, &[no_schedule], &pods, NOW);
    assert!(p.delete.is_empty() && p.create.is_empty());
}

#[test]
fn extra_failed_and_orphaned_pods_are_deleted() {
    let d = ds(json!({}));
    let h = hash(&d);
    let mut failed = daemon_pod("failed", "a", &h, false);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let pods = [
        daemon_pod("first", "a", &h, true),
        daemon_pod("second", "a", &h, true),
        failed,
        daemon_pod("gone-node", "zz", &h, true),
        daemon_pod("b1", "b", &h, true),
    ];
    let p = plan(
        &d,
        &[node("a", json!({})), node("b", json!({}))],
        &pods,
        NOW,
    );
    assert_eq!(p.delete, ["failed", "gone-node", "second"]);
    assert!(p.create.is_empty());
    assert_eq!(p.status.number_ready, 2);
    assert_eq!(p.status.number_available, Some(2));
    assert_eq!(p.status.updated_number_scheduled, Some(2));
}

#[test]
fn rolling_update_replaces_within_max_unavailable() {
    let d = ds(json!({}));
    let h = hash(&d);
    let nodes = [
        node("a", json!({})),
        node("b", json!({})),
        node("c", json!({})),
    ];
    let pods = [
        daemon_pod("a-old", "a", "old", true),
        daemon_pod("b-old", "b", "old", true),
        daemon_pod("c-old", "c", "old", true),
    ];
    let p = plan(&d, &nodes, &pods, NOW);
    assert_eq!(p.delete.len(), 1, "maxUnavailable 1: {:?}", p.delete);
    assert_eq!(p.status.updated_number_scheduled, Some(0));
    // One node is being replaced (no pod yet): nothing more goes until it is available.
    let pods = [
        daemon_pod("b-old", "b", "old", true),
        daemon_pod("c-old", "c", "old", true),
    ];
    let p = plan(&d, &nodes, &pods, NOW);
    assert_eq!(created_for(&p), ["a"]);
    assert!(p.delete.is_empty());
    // The new pod is available: the next old one goes.
    let pods = [
        daemon_pod("a-new", "a", &h, true),
        daemon_pod("b-old", "b", "old", true),
        daemon_pod("c-old", "c", "old", true),
    ];
    let p = plan(&d, &nodes, &pods, NOW);
    assert_eq!(p.delete.len(), 1);
    assert_eq!(p.status.updated_number_scheduled, Some(1));
    // An old pod that is not available is replaced at once, beside the budget.
    let pods = [
        daemon_pod("a-new", "a", &h, true),
        daemon_pod("b-old", "b", "old", false),
        daemon_pod("c-old", "c", "old", true),
    ];
    let p = plan(&d, &nodes, &pods, NOW);
    assert_eq!(p.delete, ["b-old"]);
    // OnDelete: old pods stay.
    let on_delete = ds(json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
    let pods = [daemon_pod("a-old", "a", "old", true)];
    let p = plan(&on_delete, &nodes[..1], &pods, NOW);
    assert!(p.delete.is_empty() && p.create.is_empty());
}

#[test]
fn surge_starts_the_new_pod_before_the_old_one_goes() {
    let d = ds(json!({"spec": {"updateStrategy": {"rollingUpdate":
        {"maxUnavailable": 0, "maxSurge": 1}}}}));
    let h = hash(&d);
    let nodes = [node("a", json!({})), node("b", json!({}))];
    let pods = [
        daemon_pod("a-old", "a", "old", true),
        daemon_pod("b-old", "b", "old", true),
    ];
    let p = plan(&d, &nodes, &pods, NOW);
    assert_eq!(created_for(&p), ["a"], "one surge pod at a time");
    assert!(p.delete.is_empty());
    let pods = [
        daemon_pod("a-old", "a", "old", true),
        daemon_pod("a-new", "a", &h, false),
        daemon_pod("b-old", "b", "old", true),
    ];
    let p = plan(&d, &nodes, &pods, NOW);
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    let pods = [
        daemon_pod("a-old", "a", "old", true),
        daemon_pod("a-new", "a", &h, true),
        daemon_pod("b-old", "b", "old", true),
    ];
    let p = plan(&d, &nodes, &pods, NOW);
    assert_eq!(p.delete, ["a-old"]);
    assert_eq!(created_for(&p), ["b"]);
}

#[test]
fn min_ready_seconds_delays_availability_and_asks_to_look_again() {
    let d = ds(json!({"spec": {"minReadySeconds": 30}}));
    let h = hash(&d);
    let ready_at: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    let pods = [daemon_pod("a1", "a", &h, true)];
    let p = plan(&d, &[node("a", json!({}))], &pods, ready_at + 10);
    assert_eq!(p.status.number_ready, 1);
    assert_eq!(p.status.number_available, Some(0));
    assert_eq!(p.recheck, Some(std::time::Duration::from_secs(20)));
    let p = plan(&d, &[node("a", json!({}))], &pods, ready_at + 31);
    assert_eq!(p.status.number_available, Some(1));
}
