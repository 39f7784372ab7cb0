use serde_json::json;

use super::*;

fn list(v: Value) -> ResourceList {
    parse_list(Some(&v)).unwrap()
}

fn now() -> Timestamp {
    "2026-01-01T00:00:10Z".parse().unwrap()
}

fn pod(containers: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": containers},
           "status": {"phase": "Running"}})
}

#[test]
fn a_pod_costs_its_summed_requests_and_limits() {
    let p = pod(json!([
        {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                    "limits": {"cpu": "1", "memory": "64Mi"}}},
        {"name": "b", "resources": {"requests": {"cpu": "400m", "memory": "64Mi"}}},
    ]));
    let used = Evaluator::Pods.usage(&p, now());
    let shown: Vec<String> = used.iter().map(|(k, q)| format!("{k}={q}")).collect();
    assert_eq!(
        shown,
        [
            "count/pods=1",
            "cpu=500m",
            "limits.cpu=1",
            "limits.memory=64Mi",
            "memory=128Mi",
            "pods=1",
            "requests.cpu=500m",
            "requests.memory=128Mi"
        ]
    );
}

#[test]
fn init_containers_count_at_their_peak_and_sidecars_throughout() {
    let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "200m"}}}]));
    p["spec"]["initContainers"] = json!([
        {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
        {"name": "big", "resources": {"requests": {"cpu": "1"}}},
    ]);
    let used = Evaluator::Pods.usage(&p, now());
    // The big init container runs beside the sidecar: 1.1 > 200m + 100m.
    assert_eq!(used["requests.cpu"].to_string(), "1100m");
}

#[test]
fn finished_and_long_deleted_pods_cost_only_their_count() {
    let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
    p["status"]["phase"] = json!("Succeeded");
    assert_eq!(
        Evaluator::Pods.usage(&p, now()).keys().collect::<Vec<_>>(),
        ["count/pods"]
    );
    p["status"]["phase"] = json!("Running");
    p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    assert!(Evaluator::Pods.usage(&p, now()).contains_key("pods"));
    p["metadata"]["deletionGracePeriodSeconds"] = json!(1);
    assert!(!Evaluator::Pods.usage(&p, now()).contains_key("pods"));
}

#[test]
fn scopes_select_pods_by_deadline_qos_and_priority_class() {
    let best = pod(json!([{"name": "a"}]));
    let mut sized = pod(json!([{"name": "a", "resources": {"limits": {"memory": "1Mi"}}}]));
    sized["spec"]["activeDeadlineSeconds"] = json!(30);
    sized["spec"]["priorityClassName"] = json!("high");
    let spec = |scopes: Value| json!({"scopes": scopes});
    let hard = list(json!({"pods": "5"}));
    let e = Evaluator::Pods;
    assert!(matches(&e, &hard, &spec(json!(["BestEffort"])), &best));
    assert!(!matches(&e, &hard, &spec(json!(["BestEffort"])), &sized));
    assert!(matches(
        &e,
        &hard,
        &spec(json!(["Terminating", "NotBestEffort"])),
        &sized
    ));
    assert!(matches(&e, &hard, &spec(json!(["NotTerminating"])), &best));
    let selector = |op: &str, values: Value| {
        json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": op, "values": values}]}})
    };
    assert!(matches(&e, &hard, &selector("In", json!(["high"])), &sized));
    assert!(!matches(&e, &hard, &selector("In", json!(["high"])), &best));
    assert!(matches(
        &e,
        &hard,
        &selector("NotIn", json!(["high"])),
        &best
    ));
    assert!(matches(&e, &hard, &selector("Exists", json!([])), &sized));
    // A scoped quota never counts another kind; a quota on nothing pods use skips them.
    let cm = json!({"metadata": {"name": "c"}});
    let objects = Evaluator::for_resource("", "configmaps");
    let cm_hard = list(json!({"configmaps": "5"}));
    assert!(matches(&objects, &cm_hard, &json!({}), &cm));
    assert!(!matches(
        &objects,
        &cm_hard,
        &spec(json!(["BestEffort"])),
        &cm
    ));
    assert!(!matches(&e, &cm_hard, &json!({}), &best));
}

#[test]
fn a_compute_quota_names_the_containers_missing_a_declaration() {
    let p = pod(json!([
        {"name": "c", "resources": {"requests": {"cpu": "100m"}}},
        {"name": "d", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}}},
    ]));
    let required: Vec<String> = ["limits.cpu", "requests.memory", "pods", "requests.cpu"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        Evaluator::Pods.constraints(&required, &p),
        Err("must specify limits.cpu for: c; requests.cpu for: d; requests.memory for: c".into())
    );
    assert!(Evaluator::Pods
        .constraints(&["pods".to_string()], &p)
        .is_ok());
}

#[test]
fn object_counts_and_service_ports() {
    let e = Evaluator::for_resource("apps", "deployments");
    let names: Vec<String> = ["count/deployments.apps", "pods"]
        .map(String::from)
        .to_vec();
    assert_eq!(e.matching(&names), ["count/deployments.apps"]);
    let secrets = Evaluator::for_resource("", "secrets");
    assert_eq!(
        secrets.usage(&json!({}), now()).keys().collect::<Vec<_>>(),
        ["count/secrets", "secrets"]
    );
    let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
    let used = Evaluator::Services.usage(&svc, now());
    assert_eq!(used["services.nodeports"], Quantity::count(2));
    assert_eq!(used["services.loadbalancers"], Quantity::count(1));
}

#[test]
fn lists_add_compare_and_print_like_kube() {
    let used = list(json!({"limits.cpu": "1", "pods": "1"}));
    let req = list(json!({"limits.cpu": "2", "pods": "1"}));
    let hard = list(json!({"limits.cpu": "2", "pods": "10"}));
    let total = add(&used, &req);
    assert_eq!(exceeded(&total, &hard), ["limits.cpu"]);
    assert_eq!(
        pretty(&mask(&req, &["limits.cpu".to_string()])),
        "limits.cpu=2"
    );
    assert!(equal(
        &list(json!({"cpu": "1000m"})),
        &list(json!({"cpu": "1"}))
    ));
    assert_eq!(
        sub_non_negative(
            &list(json!({"a": "1", "b": "3"})),
            &list(json!({"a": "2", "b": "1"}))
        ),
        list(json!({"a": "0", "b": "2"}))
    );
    assert_eq!(to_json(&total), json!({"limits.cpu": "3", "pods": "2"}));
}
