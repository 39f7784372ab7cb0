//! The ownership rules end to end on a Deployment: update, apply, conflicts, force, pruning,
//! the `[{}]` reset, the status scope and the cap on Update entries.

use serde_json::{json, Value};

use super::*;
use crate::resources::Registry;

fn deployments() -> Resource {
    Registry::new().find("apps", "v1", "deployments").unwrap()
}

fn deploy(replicas: i64, labels: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}}})
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn owner_of_replicas(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fieldsV1"].pointer("/f:spec/f:replicas").is_some())
        .map(|e| e["manager"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn update_records_the_writer_and_apply_conflicts_with_it() {
    let res = deployments();
    let mut live = deploy(2, json!({"app": "web"}));
    track_update(&res, None, &mut live, "kubectl-client-side-apply", "").unwrap();
    assert_eq!(
        managers(&live),
        [("kubectl-client-side-apply".into(), "Update".into())]
    );
    let e = &live["metadata"]["managedFields"][0];
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        e["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"],
        json!({".": {}, "f:image": {}, "f:name": {}})
    );
    assert!(e["fieldsV1"].get("f:apiVersion").is_none());
    assert!(e["fieldsV1"]["f:metadata"].get("f:name").is_none());

    // The same value applied by another manager is shared, not a conflict.
    let cfg = deploy(2, json!({"app": "web"}));
    let shared = apply(&res, Some(&live), &cfg, "kubectl", false, "").unwrap();
    assert_eq!(
        owner_of_replicas(&shared),
        ["kubectl", "kubectl-client-side-apply"]
    );
    // Applying it again changes nothing.
    let again = apply(&res, Some(&shared), &cfg, "kubectl", false, "").unwrap();
    assert_eq!(again["spec"], shared["spec"]);
    assert_eq!(managers(&again), managers(&shared));

    // A different value conflicts with every other owner, naming field and manager.
    let err = apply(&res, Some(&live), &deploy(3, json!({})), "other", false, "").unwrap_err();
    assert_eq!((err.code, err.reason), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        err.details.unwrap()["causes"],
        json!([{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                "message": "conflict with \"kubectl-client-side-apply\" using apps/v1"}])
    );
    // Forced, the applier takes the field over.
    let forced = apply(&res, Some(&live), &deploy(3, json!({})), "other", true, "").unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(owner_of_replicas(&forced), ["other"]);

    // An Update steals silently: the applier loses the field and then conflicts with it.
    let mut scaled = forced.clone();
    scaled["spec"]["replicas"] = json!(5);
    track_update(&res, Some(&forced), &mut scaled, "kubectl-scale", "scale").unwrap();
    assert_eq!(owner_of_replicas(&scaled), ["kubectl-scale"]);
    let err = apply(
        &res,
        Some(&scaled),
        &deploy(3, json!({})),
        "other",
        false,
        "",
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("conflict with \"kubectl-scale\" with subresource \"scale\" using apps/v1"),
        "{}",
        err.message
    );
}

#[test]
fn fields_dropped_from_the_applied_config_are_removed_unless_owned_elsewhere() {
    let res = deployments();
    let cfg = deploy(2, json!({"app": "web", "tier": "fe"}));
    let created = apply(&res, None, &cfg, "mgr", false, "").unwrap();
    assert_eq!(managers(&created), [("mgr".into(), "Apply".into())]);
    let cfg2 = deploy(2, json!({"app": "web"}));
    let out = apply(&res, Some(&created), &cfg2, "mgr", false, "").unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    // Owned by another manager too, it stays.
    let both = apply(&res, Some(&created), &cfg, "second", false, "").unwrap();
    let out = apply(&res, Some(&both), &cfg2, "mgr", false, "").unwrap();
    assert_eq!(out["metadata"]["labels"]["tier"], "fe");
    // A container dropped from the config goes whole.
    let mut two = deploy(2, json!({}));
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "busybox"}));
    let live = apply(&res, None, &two, "mgr", false, "").unwrap();
    let out = apply(&res, Some(&live), &deploy(2, json!({})), "mgr", false, "").unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "nginx", "image": "nginx:1"}])
    );
}

#[test]
fn clients_may_replace_or_clear_managed_fields() {
    let res = deployments();
    let mut live = deploy(2, json!({}));
    track_update(&res, None, &mut live, "a", "").unwrap();
    let mut cleared = live.clone();
    cleared["metadata"]["managedFields"] = json!([{}]);
    track_update(&res, Some(&live), &mut cleared, "b", "").unwrap();
    assert!(cleared["metadata"].get("managedFields").is_none());
    // Sent entries replace the stored ones (kubectl's client-side to server-side migration).
    let mut moved = live.clone();
    moved["metadata"]["managedFields"][0]["manager"] = json!("kubectl");
    moved["metadata"]["managedFields"][0]["operation"] = json!("Apply");
    track_update(&res, Some(&live), &mut moved, "kubectl", "").unwrap();
    assert_eq!(managers(&moved), [("kubectl".into(), "Apply".into())]);
    let mut bad = live.clone();
    bad["metadata"]["managedFields"] = json!([{"operation": "Destroy"}]);
    let e = track_update(&res, Some(&live), &mut bad, "b", "").unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("metadata.managedFields"),
        "{}",
        e.message
    );
}

#[test]
fn status_writes_own_only_status_and_update_entries_are_capped() {
    let res = deployments();
    let mut live = deploy(1, json!({}));
    track_update(&res, None, &mut live, "creator", "").unwrap();
    let mut st = live.clone();
    st["status"] = json!({"replicas": 1});
    st["spec"]["replicas"] = json!(9);
    track_update(&res, Some(&live), &mut st, "controller", "status").unwrap();
    let e = st["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "controller")
        .unwrap()
        .clone();
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));

    let mut obj = deploy(1, json!({}));
    track_update(&res, None, &mut obj, "m0", "").unwrap();
    for i in 1..15 {
        let mut next = obj.clone();
        next["metadata"]["labels"][format!("l{i}")] = json!("x");
        track_update(&res, Some(&obj), &mut next, &format!("m{i}"), "").unwrap();
        obj = next;
    }
    let entries = obj["metadata"]["managedFields"].as_array().unwrap();
    assert!(entries.len() <= managed::MAX_UPDATE_ENTRIES, "{entries:?}");
    assert!(entries.iter().any(|e| e["manager"] == managed::ANCIENT));
    assert!(entries.iter().any(|e| e["manager"] == "m14"));
}

#[test]
fn custom_resources_follow_their_structural_schema() {
    let mut res = Registry::new().crd_resource();
    res.group = "example.com".into();
    res.version = "v1".into();
    res.kind = "Widget".into();
    res.status = false;
    res.schema = crate::resources::Schema::Custom(Some(std::sync::Arc::new(json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["port", "protocol"],
                      "items": {"type": "object", "properties": {
                          "port": {"type": "integer"}, "protocol": {"type": "string"},
                          "name": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set",
                     "items": {"type": "string"}},
            "args": {"type": "array", "items": {"type": "string"}},
            "sel": {"type": "object", "x-kubernetes-map-type": "atomic",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}
    }))));
    let cr = |spec: Value| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
                                   "metadata": {"name": "w"}, "spec": spec})
    };
    let first = cr(
        json!({"ports": [{"port": 80, "protocol": "TCP", "name": "http"}],
        "tags": ["a"], "args": ["x"], "sel": {"a": "1"}, "free": {"k": {"n": 1}}}),
    );
    let live = apply(&res, None, &first, "one", false, "").unwrap();
    let f = &live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
    assert_eq!(
        f["f:ports"],
        json!({"k:{\"port\":80,\"protocol\":\"TCP\"}": {
            ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}})
    );
    assert_eq!(f["f:tags"], json!({"v:\"a\"": {}}));
    assert_eq!(f["f:args"], json!({}));
    assert_eq!(f["f:sel"], json!({}));
    assert_eq!(f["f:free"], json!({"f:k": {".": {}, "f:n": {}}}));

    // A second manager adds its own items; lists merge by key or value, atomic ones are
    // replaced (and conflict when they differ).
    let second = cr(
        json!({"ports": [{"port": 81, "protocol": "TCP"}], "tags": ["b"],
        "sel": {"b": "2"}, "free": {"k": {"m": 2}}}),
    );
    let err = apply(&res, Some(&live), &second, "two", false, "").unwrap_err();
    assert!(err.message.contains(".spec.sel"), "{}", err.message);
    let merged = apply(&res, Some(&live), &second, "two", true, "").unwrap();
    assert_eq!(
        merged["spec"],
        json!({"ports": [{"port": 80, "protocol": "TCP", "name": "http"},
                         {"port": 81, "protocol": "TCP"}],
               "tags": ["a", "b"], "args": ["x"], "sel": {"b": "2"},
               "free": {"k": {"n": 1, "m": 2}}})
    );
}

#[test]
fn the_manager_is_the_field_manager_or_the_user_agent_product() {
    let ua = (
        "user-agent",
        "kubectl.1.33/v1.33.1 (linux/amd64) kubernetes/8adc0f0",
    );
    assert_eq!(manager(&Req::for_test(&[], &[ua])).unwrap(), "kubectl.1.33");
    let named = Req::for_test(&[("fieldManager", "kubectl-edit")], &[ua]);
    assert_eq!(manager(&named).unwrap(), "kubectl-edit");
    let long = "m".repeat(129);
    let e = manager(&Req::for_test(&[("fieldManager", &long)], &[])).unwrap_err();
    assert!(e.code == 400 && e.message.contains("fieldManager"), "{e:?}");
}
