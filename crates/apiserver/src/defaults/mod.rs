//! Defaulting: the fields kube-apiserver fills in an object it stores, on create and on every
//! update, so `kubectl get -o yaml` and `kubectl describe` read as they do on Kubernetes and
//! every reader (controllers, the node agent) sees the same explicit values. Only what
//! kube-apiserver itself fills is filled (its `SetDefaults_*` functions, the declarative
//! `+default` markers, and the ServiceAccount and Priority admission plugins); defaulting is
//! idempotent, so re-defaulting a stored object on update changes nothing. Server-set status
//! (a new pod's phase and QoS class, a namespace's phase, a CRD's conditions) is set on create.

mod batch;
mod pod;
pub mod serviceaccount;

use serde_json::{json, Value};

pub use pod::{pod_spec, qos_class, quantity_nanos};

use crate::meta::now_rfc3339;
use crate::resources::Resource;
use pod::fill;

/// Which write an object is defaulted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Update,
}

/// Fill `obj`'s defaults for a write of kind `res`.
pub fn apply(res: &Resource, obj: &mut Value, write: Write) {
    let builtin = matches!(res.schema, crate::resources::Schema::Builtin);
    if !builtin {
        return;
    }
    match (res.group.as_str(), res.kind.as_str()) {
        ("", "Pod") => {
            pod::pod(obj);
            if write == Write::Create {
                let qos = qos_class(&obj["spec"]);
                obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            }
        }
        ("", "Service") => crate::services::defaults(obj),
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                fill(m, "type", json!("Opaque"));
            }
        }
        ("", "Endpoints") => {
            let subsets = obj.get_mut("subsets").and_then(Value::as_array_mut);
            for s in subsets.into_iter().flatten() {
                let ports = s.get_mut("ports").and_then(Value::as_array_mut);
                for p in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
                    fill(p, "protocol", json!("TCP"));
                }
            }
        }
        ("", "Namespace") => namespace(obj, write),
        ("", "LimitRange") => crate::limitrange::defaults(obj),
        ("apps", "Deployment") => {
            workload(obj);
            let spec = &mut obj["spec"];
            let Some(s) = spec.as_object_mut() else {
                return;
            };
            fill(s, "strategy", json!({}));
            if let Some(st) = s.get_mut("strategy").and_then(Value::as_object_mut) {
                fill(st, "type", json!("RollingUpdate"));
                if st.get("type") == Some(&json!("RollingUpdate")) {
                    fill(st, "rollingUpdate", json!({}));
                    if let Some(r) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                        fill(r, "maxUnavailable", json!("25%"));
                        fill(r, "maxSurge", json!("25%"));
                    }
                }
            }
            fill(s, "revisionHistoryLimit", json!(10));
            fill(s, "progressDeadlineSeconds", json!(600));
        }
        ("apps", "ReplicaSet") => workload(obj),
        ("apps", "DaemonSet") => crate::daemonset::defaults(obj),
        ("apps", "StatefulSet") => crate::statefulset::defaults(obj),
        ("scheduling.k8s.io", "PriorityClass") => crate::priority::defaults(obj),
        ("", "PersistentVolume" | "PersistentVolumeClaim") | ("storage.k8s.io", "StorageClass") => {
            crate::storage::defaults(&res.kind, obj)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => crate::hpa::defaults(obj),
        ("batch", "Job") => batch::job(obj, write),
        ("batch", "CronJob") => batch::cronjob(obj),
        ("policy", "PodDisruptionBudget") if write == Write::Create => {
            crate::policy::initial_status(obj)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") if write == Write::Create => {
            crd_status(obj)
        }
        _ => {}
    }
}

/// A workload's replica count and its pod template's spec.
fn workload(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    if let Some(s) = obj["spec"].as_object_mut() {
        fill(s, "replicas", json!(1));
    }
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

/// A namespace carries its name as the label `kubernetes.io/metadata.name`; a new one is
/// Active and has the `kubernetes` finalizer, which the namespace controller removes once
/// the namespace's content is gone.
fn namespace(obj: &mut Value, write: Write) {
    if let Some(name) = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        let meta = crate::meta::meta_mut(obj);
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta.insert("labels".into(), json!({}));
        }
        meta["labels"]["kubernetes.io/metadata.name"] = json!(name);
    }
    if write == Write::Create {
        obj["status"] = json!({"phase": "Active"});
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        let finalizers = &mut obj["spec"]["finalizers"];
        if !finalizers.is_array() {
            *finalizers = json!([]);
        }
        if let Some(f) = finalizers.as_array_mut() {
            if !f.iter().any(|x| x == "kubernetes") {
                f.push(json!("kubernetes"));
            }
        }
    }
}

/// A new CRD's names are accepted and it is established at once.
fn crd_status(obj: &mut Value) {
    let names = obj.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let now = now_rfc3339();
    let cond = |ty: &str, reason: &str| {
        json!({"type": ty, "status": "True", "lastTransitionTime": now,
               "reason": reason, "message": ""})
    };
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage") == Some(&Value::Bool(true)))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    obj["status"] = json!({
        "acceptedNames": names,
        "conditions": [cond("NamesAccepted", "NoConflicts"), cond("Established", "InitialNamesAccepted")],
        "storedVersions": stored,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, kind: &str) -> Resource {
        let plural = format!("{}s", kind.to_lowercase());
        let api = crate::resources::Registry::new();
        api.find(group, "v1", &plural).expect("built-in kind")
    }

    #[test]
    fn a_deployment_gets_strategy_history_deadline_and_template_defaults() {
        let mut d = json!({"spec": {"selector": {}, "template": {"spec": {
            "containers": [{"name": "c", "image": "nginx"}]}}}});
        apply(&res("apps", "Deployment"), &mut d, Write::Create);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            s["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        assert!(s["template"]["spec"].get("serviceAccountName").is_none());
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}, "template": {}}});
        apply(&res("apps", "Deployment"), &mut recreate, Write::Update);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn a_pod_is_created_pending_with_its_qos_class() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply(&res("", "Pod"), &mut p, Write::Create);
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
    }

    #[test]
    fn a_namespace_is_active_with_the_kubernetes_finalizer_and_its_name_label() {
        let mut ns = json!({"metadata": {"name": "team"}});
        apply(&res("", "Namespace"), &mut ns, Write::Create);
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );
    }
}
