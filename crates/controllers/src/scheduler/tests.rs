//! Unit tests of the scheduler's decisions.

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use crate::cached::Pod;
use crate::scheduler::{pick_node, NodeInfo};

fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn pod(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn info(n: Node, pods: Vec<Pod>) -> NodeInfo {
    NodeInfo::with_pods(n, &pods)
}

#[test]
fn picks_the_least_allocated_node_that_fits() {
    let busy = info(
        node("a", "2", "4Gi", json!({})),
        vec![pod("p1", "1500m", "1Gi", json!({}))],
    );
    let idle = info(node("b", "2", "4Gi", json!({})), vec![]);
    let p = pod("new", "500m", "256Mi", json!({}));
    assert_eq!(pick_node(&p, &[busy.clone(), idle.clone()]).unwrap(), "b");
    // Too big for either: the message counts the reasons.
    let huge = pod("huge", "3", "1Gi", json!({}));
    let err = pick_node(&huge, &[busy, idle]).unwrap_err();
    assert_eq!(err.message, "0/2 nodes are available: 2 Insufficient cpu.");
}

#[test]
fn selectors_affinity_taints_and_readiness() {
    let gpu = info(
        node(
            "gpu",
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"accel": "gpu"}}}),
        ),
        vec![],
    );
    let plain = info(node("plain", "4", "8Gi", json!({})), vec![]);
    let p = pod(
        "p",
        "100m",
        "64Mi",
        json!({"spec": {"nodeSelector": {"accel": "gpu"}}}),
    );
    assert_eq!(pick_node(&p, &[plain.clone(), gpu.clone()]).unwrap(), "gpu");

    let affinity = pod(
        "p",
        "100m",
        "64Mi",
        json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "accel", "operator": "DoesNotExist"}]}]}}}}}),
    );
    assert_eq!(
        pick_node(&affinity, &[plain.clone(), gpu.clone()]).unwrap(),
        "plain"
    );

    let tainted = info(
        node(
            "tainted",
            "4",
            "8Gi",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        ),
        vec![],
    );
    let plain_pod = pod("p", "100m", "64Mi", json!({}));
    let err = pick_node(&plain_pod, std::slice::from_ref(&tainted)).unwrap_err();
    assert_eq!(
        err.message,
        "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}."
    );
    let tolerant = pod(
        "p",
        "100m",
        "64Mi",
        json!({"spec": {"tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(pick_node(&tolerant, &[tainted]).unwrap(), "tainted");

    let not_ready = info(
        node(
            "down",
            "4",
            "8Gi",
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        ),
        vec![],
    );
    let err = pick_node(&plain_pod, &[not_ready]).unwrap_err();
    assert!(err.message.contains("1 node(s) were not ready"), "{err}");
    assert_eq!(
        pick_node(&plain_pod, &[]).unwrap_err().message,
        "0/0 nodes are available: no nodes registered."
    );
}

#[test]
fn anti_affinity_spreads_matching_pods() {
    let with_web = info(
        node("a", "4", "8Gi", json!({})),
        vec![pod("web-1", "100m", "64Mi", json!({}))],
    );
    let empty = info(node("b", "4", "8Gi", json!({})), vec![]);
    let p = pod(
        "web-2",
        "100m",
        "64Mi",
        json!({"spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
    );
    assert_eq!(
        pick_node(&p, &[with_web.clone(), empty.clone()]).unwrap(),
        "b"
    );
    let full = info(
        node("b", "4", "8Gi", json!({})),
        vec![pod("web-3", "100m", "64Mi", json!({}))],
    );
    let err = pick_node(&p, &[with_web, full]).unwrap_err();
    assert!(
        err.message
            .contains("2 node(s) didn't match pod anti-affinity rules"),
        "{err}"
    );
}

#[test]
fn init_containers_count_at_their_peak_and_limits_imply_requests() {
    let p = pod(
        "p",
        "100m",
        "64Mi",
        json!({"spec": {"initContainers": [
        {"name": "i", "image": "busybox", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}]}}),
    );
    let r = crate::scheduler::pod_requests(&p);
    assert_eq!((r.cpu_millis, r.memory_bytes, r.pods), (2000, 1 << 30, 1));
}

#[test]
fn pods_without_requests_spread_across_equal_nodes() {
    let p = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    };
    let mut a = info(node("a", "2", "4Gi", json!({})), vec![]);
    let b = info(node("b", "2", "4Gi", json!({})), vec![]);
    assert_eq!(pick_node(&p("first"), [&a, &b]).unwrap(), "a");
    a.add_pod(
        "default/first",
        crate::scheduler::Placed::of(&std::sync::Arc::new(p("first"))),
    );
    // The first pod counts 0.1 CPU and 200 MiB on "a" for scoring: the next goes to "b".
    assert_eq!(pick_node(&p("second"), [&a, &b]).unwrap(), "b");
}

#[test]
fn a_cordoned_node_takes_only_pods_that_tolerate_the_cordon() {
    let cordoned = info(
        node("c", "2", "4Gi", json!({"spec": {"unschedulable": true}})),
        vec![],
    );
    let plain = pod("plain", "100m", "64Mi", json!({}));
    let err = pick_node(&plain, std::slice::from_ref(&cordoned)).unwrap_err();
    assert_eq!(
        err.message,
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
    let daemon = pod(
        "daemon",
        "100m",
        "64Mi",
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable",
            "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(pick_node(&daemon, &[cordoned]).unwrap(), "c");
}

fn with_priority(name: &str, cpu: &str, priority: i32) -> Pod {
    pod(name, cpu, "64Mi", json!({"spec": {"priority": priority}}))
}

#[test]
fn preemption_evicts_the_fewest_lowest_priority_pods_that_make_room() {
    use crate::scheduler::preemption::select;
    let a = info(
        node("a", "2", "4Gi", json!({})),
        vec![
            with_priority("low-1", "800m", 10),
            with_priority("low-2", "800m", 10),
            with_priority("mid", "200m", 500),
        ],
    );
    let urgent = with_priority("urgent", "1", 1000);
    assert!(pick_node(&urgent, [&a]).is_err());
    let p = select(&urgent, [&a], &[]).expect("a preemption");
    assert_eq!(p.node, "a");
    // One 800m pod is enough (the 200m one is spared: it has the higher priority).
    assert_eq!(p.victims.len(), 1, "{:?}", p.victims);
    assert!(p.victims[0].0.starts_with("default/low-"));
    // Nothing of lower priority to take: no preemption; nor for a pod that may not preempt.
    let peer = with_priority("peer", "1", 10);
    assert!(select(&peer, [&a], &[]).is_none());
    let polite = pod(
        "polite",
        "1",
        "64Mi",
        json!({"spec": {"priority": 1000, "preemptionPolicy": "Never"}}),
    );
    assert!(select(&polite, [&a], &[]).is_none());
    // A node whose taint it does not tolerate is no candidate, whatever runs there.
    let tainted = info(
        node(
            "t",
            "2",
            "4Gi",
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ),
        vec![with_priority("low-3", "2", 1)],
    );
    assert!(select(&urgent, [&tainted], &[]).is_none());
}

#[test]
fn preemption_prefers_victims_no_budget_protects() {
    use crate::scheduler::preemption::select;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let guarded = pod(
        "guarded",
        "1",
        "64Mi",
        json!({"metadata": {"labels": {"app": "db"}}, "spec": {"priority": 10}}),
    );
    let free = with_priority("free", "1", 10);
    let a = info(node("a", "2", "4Gi", json!({})), vec![guarded]);
    let b = info(node("b", "2", "4Gi", json!({})), vec![free]);
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 1},
        "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
            "expectedPods": 1}}))
    .unwrap();
    let urgent = with_priority("urgent", "2", 1000);
    let p = select(&urgent, [&a, &b], &[std::sync::Arc::new(budget)]).unwrap();
    assert_eq!((p.node.as_str(), p.violations), ("b", 0));
    assert_eq!(p.victims[0].0, "default/free");
}
