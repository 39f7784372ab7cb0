//! The field labels each kind can be selected by (`fieldSelector`), as kube-apiserver
//! registers them, and how each label reads its value from an object. A label a kind does not
//! have is refused with kube's 400 and message, rather than matched against an arbitrary path:
//! a client that misspells one learns it at once instead of getting an empty list.

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::Resource;

const META: &[&str] = &["metadata.name", "metadata.namespace"];

/// The field labels of a kind with its own list (kube's `AddFieldLabelConversionFunc`); None
/// for kinds that have only the default two.
fn own_labels(res: &Resource) -> Option<&'static [&'static str]> {
    Some(match (res.group.as_str(), res.kind.as_str()) {
        ("", "Pod") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            // Old v1 clients' name for spec.nodeName.
            "spec.host",
        ],
        ("", "Node") => &["metadata.name", "spec.unschedulable"],
        ("", "Namespace") => &["metadata.name", "status.phase"],
        ("", "Secret") => &["metadata.name", "metadata.namespace", "type"],
        ("", "Service") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("", "Event") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("batch", "Job") => &["metadata.name", "metadata.namespace", "status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            &["metadata.name", "spec.signerName"]
        }
        _ => return None,
    })
}

/// Refuse a field label `res` cannot be selected by, with kube-apiserver's 400.
pub fn check(res: &Resource, label: &str) -> Result<(), ApiError> {
    if matches!(res.schema, crate::resources::Schema::Custom(_)) {
        return if META.contains(&label) || res.selectable.iter().any(|s| s == label) {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "field label not supported: {label}"
            )))
        };
    }
    match own_labels(res) {
        Some(labels) if labels.contains(&label) => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "field label not supported: {label}"
        ))),
        None if META.contains(&label) => Ok(()),
        None => Err(ApiError::bad_request(format!(
            "{label:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        ))),
    }
}

/// The value of field label `label` of `obj` as kube's selectable fields give it: the field
/// as text ("" when absent), with the labels that are not plain paths or have defaults.
pub fn value(kind: &str, obj: &Value, label: &str) -> String {
    match (kind, label) {
        ("Pod", "spec.host") => path(obj, "spec.nodeName"),
        ("Pod", "status.podIPs") => obj
            .pointer("/status/podIPs")
            .and_then(Value::as_array)
            .map(|ips| {
                ips.iter()
                    .filter_map(|ip| ip.get("ip").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        ("Pod", "spec.hostNetwork") | ("Node", "spec.unschedulable") => {
            or(path(obj, label), "false")
        }
        ("Job", "status.successful") => or(path(obj, "status.succeeded"), "0"),
        ("ReplicaSet" | "ReplicationController", "status.replicas") => or(path(obj, label), "0"),
        ("Event", "source") => path(obj, "source.component"),
        _ => path(obj, label),
    }
}

fn or(v: String, default: &str) -> String {
    if v.is_empty() {
        default.to_string()
    } else {
        v
    }
}

/// A dotted path's value as text ("" when absent or null).
fn path(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(group: &str, kind: &str) -> Resource {
        crate::resources::Registry::new()
            .all()
            .into_iter()
            .find(|r| r.group == group && r.kind == kind)
            .unwrap()
    }

    #[test]
    fn labels_per_kind_as_kube_registers_them() {
        let pods = res("", "Pod");
        assert!(check(&pods, "spec.nodeName").is_ok());
        assert!(check(&pods, "status.phase").is_ok());
        let e = check(&pods, "spec.nodename").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "field label not supported: spec.nodename")
        );
        let cms = res("", "ConfigMap");
        assert!(check(&cms, "metadata.name").is_ok());
        let e = check(&cms, "data.a").unwrap_err();
        assert_eq!(
            e.message,
            r#""data.a" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert!(check(&res("", "Node"), "metadata.namespace").is_err());
        assert!(check(&res("", "Event"), "involvedObject.name").is_ok());
        assert!(check(&res("batch", "Job"), "status.successful").is_ok());
    }

    #[test]
    fn custom_resources_are_selected_by_their_selectable_fields() {
        let reg = crate::resources::Registry::new();
        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true,
                          "selectableFields": [{"jsonPath": ".spec.color"}]}]}});
        reg.register_crd(&crd).unwrap();
        let widgets = reg.find("example.com", "v1", "widgets").unwrap();
        assert!(check(&widgets, "spec.color").is_ok());
        assert!(check(&widgets, "metadata.namespace").is_ok());
        let e = check(&widgets, "spec.size").unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.size");
    }

    #[test]
    fn values_with_kube_defaults_and_renames() {
        let pod = json!({"spec": {"nodeName": "n1"},
                         "status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}});
        assert_eq!(value("Pod", &pod, "spec.host"), "n1");
        assert_eq!(value("Pod", &pod, "spec.hostNetwork"), "false");
        assert_eq!(value("Pod", &pod, "status.podIPs"), "10.0.0.1,fd00::1");
        assert_eq!(
            value("Node", &json!({"spec": {}}), "spec.unschedulable"),
            "false"
        );
        assert_eq!(
            value(
                "Node",
                &json!({"spec": {"unschedulable": true}}),
                "spec.unschedulable"
            ),
            "true"
        );
        assert_eq!(
            value(
                "Job",
                &json!({"status": {"succeeded": 3}}),
                "status.successful"
            ),
            "3"
        );
        assert_eq!(
            value(
                "Event",
                &json!({"source": {"component": "kubelet"}}),
                "source"
            ),
            "kubelet"
        );
    }
}
