//! `apps/v1` StatefulSets and ControllerRevisions at write time: kube-apiserver's defaults
//! (`SetDefaults_StatefulSet`) and the rules of `ValidateStatefulSet`,
//! `ValidateControllerRevision` and their update checks, with Kubernetes' field paths.

use serde_json::{json, Map, Value};

use crate::daemonset::int_or_percent;
use crate::error::Cause;

/// The spec fields an update may change; a change anywhere else is refused.
const UPDATABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    if !map.get(key).is_some_and(Value::is_object) {
        map.insert(key.into(), json!({}));
    }
    map[key].as_object_mut().expect("made an object above")
}

fn fill(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

/// One replica, pods started in order, a RollingUpdate from partition 0, claims retained, ten
/// revisions kept; the template's pod spec defaulted as a pod's and each claim template as a
/// new claim (Filesystem, Pending).
pub fn defaults(obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    let spec = object_at(obj.as_object_mut().expect("checked"), "spec");
    fill(spec, "replicas", json!(1));
    fill(spec, "podManagementPolicy", json!("OrderedReady"));
    fill(spec, "revisionHistoryLimit", json!(10));
    let strategy = object_at(spec, "updateStrategy");
    fill(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        fill(object_at(strategy, "rollingUpdate"), "partition", json!(0));
    }
    let retention = object_at(spec, "persistentVolumeClaimRetentionPolicy");
    fill(retention, "whenDeleted", json!("Retain"));
    fill(retention, "whenScaled", json!("Retain"));
    if let Some(claims) = spec
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    {
        for claim in claims.iter_mut().filter_map(Value::as_object_mut) {
            fill(object_at(claim, "spec"), "volumeMode", json!("Filesystem"));
            fill(object_at(claim, "status"), "phase", json!("Pending"));
        }
    }
    if let Some(pod) = obj.pointer_mut("/spec/template/spec") {
        crate::defaults::pod_spec(pod);
    }
}

/// `ValidateStatefulSetSpec` beyond what every workload checks (selector matching the
/// template's labels, containers).
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    crate::daemonset::controller_of_long_runners(obj, "statefulset", causes);
    for field in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        crate::batch::non_negative(obj, "spec", field, causes);
    }
    crate::batch::non_negative(obj, "spec.ordinals", "start", causes);
    let policy = obj
        .pointer("/spec/podManagementPolicy")
        .and_then(Value::as_str)
        .unwrap_or("OrderedReady");
    if !matches!(policy, "OrderedReady" | "Parallel") {
        causes.push(Cause::invalid(
            "spec.podManagementPolicy",
            format!("Invalid value: {policy:?}: must be 'OrderedReady' or 'Parallel'"),
        ));
    }
    update_strategy(obj, causes);
    for when in ["whenDeleted", "whenScaled"] {
        let v = obj.pointer(&format!(
            "/spec/persistentVolumeClaimRetentionPolicy/{when}"
        ));
        if let Some(v) = v.filter(|v| !matches!(v.as_str(), Some("Retain" | "Delete"))) {
            causes.push(Cause::unsupported(
                &format!("spec.persistentVolumeClaimRetentionPolicy.{when}"),
                v,
                &["Retain", "Delete"],
            ));
        }
    }
    if obj
        .pointer("/spec/template/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        causes.push(Cause {
            field: "spec.template.spec.activeDeadlineSeconds".into(),
            kind: "FieldValueForbidden",
            message: "Forbidden: activeDeadlineSeconds in StatefulSet is not Supported".into(),
        });
    }
    claim_templates(obj, causes);
}

fn update_strategy(obj: &Value, causes: &mut Vec<Cause>) {
    let kind = obj
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let rolling = obj
        .pointer("/spec/updateStrategy/rollingUpdate")
        .filter(|v| !v.is_null());
    match (kind, rolling) {
        ("OnDelete", None) => {}
        ("OnDelete", Some(r)) => causes.push(Cause::invalid(
            "spec.updateStrategy.rollingUpdate",
            format!("Invalid value: {r}: only allowed for updateStrategy 'RollingUpdate'"),
        )),
        ("RollingUpdate", Some(r)) => {
            let base = "spec.updateStrategy.rollingUpdate";
            if let Some(p) = r
                .get("partition")
                .and_then(Value::as_i64)
                .filter(|p| *p < 0)
            {
                causes.push(Cause::invalid(
                    &format!("{base}.partition"),
                    format!("Invalid value: {p}: must be greater than or equal to 0"),
                ));
            }
            if let Some(v) = r.get("maxUnavailable").filter(|v| !v.is_null()) {
                let path = format!("{base}.maxUnavailable");
                match int_or_percent(v) {
                    Ok((n, _)) if n <= 0 => causes.push(Cause::invalid(
                        &path,
                        format!("Invalid value: {v}: must be greater than 0"),
                    )),
                    Ok((n, true)) if n > 100 => causes.push(Cause::invalid(
                        &path,
                        format!("Invalid value: {v}: must not be greater than 100%"),
                    )),
                    Ok(_) => {}
                    Err(m) => causes.push(Cause::invalid(&path, m)),
                }
            }
        }
        ("RollingUpdate", None) => {}
        (other, _) => causes.push(Cause::invalid(
            "spec.updateStrategy",
            format!("Invalid value: {other:?}: must be 'RollingUpdate' or 'OnDelete'"),
        )),
    }
}

/// Each claim template needs a name unique in the list and a storage request.
fn claim_templates(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(claims) = obj
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
    else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for (i, claim) in claims.iter().enumerate() {
        let base = format!("spec.volumeClaimTemplates[{i}]");
        let name = claim
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{base}.metadata.name")));
        } else if !seen.insert(name) {
            causes.push(Cause {
                field: format!("{base}.metadata.name"),
                kind: "FieldValueDuplicate",
                message: format!("Duplicate value: {name:?}"),
            });
        }
        if claim
            .pointer("/spec/resources/requests/storage")
            .is_none_or(Value::is_null)
        {
            causes.push(Cause::required(&format!("{base}.spec.resources[storage]")));
        }
    }
}

/// What an update may not change (`ValidateStatefulSetUpdate`): any spec field but those in
/// [`UPDATABLE`].
pub fn update(cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let fixed = |obj: &Value| -> Map<String, Value> {
        let mut spec = obj
            .get("spec")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for field in UPDATABLE {
            spec.remove(field);
        }
        spec
    };
    if fixed(cur) != fixed(new) {
        causes.push(Cause {
            field: "spec".into(),
            kind: "FieldValueForbidden",
            message: "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(),
        });
    }
}

/// `ValidateControllerRevision`: data is required and the revision not negative.
pub fn validate_revision(obj: &Value, causes: &mut Vec<Cause>) {
    if obj.get("data").is_none_or(Value::is_null) {
        causes.push(Cause::required("data"));
    }
    if let Some(r) = obj
        .get("revision")
        .and_then(Value::as_i64)
        .filter(|r| *r < 0)
    {
        causes.push(Cause::invalid(
            "revision",
            format!("Invalid value: {r}: must be greater than or equal to 0"),
        ));
    }
}

/// A revision's data is what it records: it never changes.
pub fn revision_update(cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if cur.get("data") != new.get("data") {
        causes.push(Cause::invalid(
            "data",
            format!(
                "Invalid value: {}: field is immutable",
                new.get("data").cloned().unwrap_or(Value::Null)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "serviceName": "web",
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    fn causes_of(obj: &Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(obj, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_are_kubes() {
        let mut obj = set();
        obj["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]);
        defaults(&mut obj);
        let spec = &obj["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(spec["updateStrategy"]["rollingUpdate"]["partition"], 0);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["status"]["phase"],
            "Pending"
        );
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert!(causes_of(&obj).is_empty(), "{:?}", causes_of(&obj));
    }

    #[test]
    fn bad_specs_name_their_fields() {
        let mut obj = set();
        obj["spec"]["podManagementPolicy"] = json!("Random");
        obj["spec"]["replicas"] = json!(-1);
        obj["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": -2, "maxUnavailable": 0}});
        obj["spec"]["persistentVolumeClaimRetentionPolicy"] = json!({"whenScaled": "Keep"});
        obj["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let causes = causes_of(&obj).join("\n");
        for want in [
            "spec.podManagementPolicy: Invalid value: \"Random\"",
            "spec.replicas: Invalid value: -1",
            "spec.updateStrategy.rollingUpdate.partition: Invalid value: -2",
            "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: must be greater than 0",
            "spec.persistentVolumeClaimRetentionPolicy.whenScaled: Unsupported value: \"Keep\"",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\"",
        ] {
            assert!(causes.contains(want), "{want} missing from\n{causes}");
        }
        let mut obj = set();
        obj["spec"]["updateStrategy"] =
            json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}});
        assert!(causes_of(&obj)[0].starts_with("spec.updateStrategy.rollingUpdate: Invalid value"));
    }

    #[test]
    fn only_the_updatable_fields_may_change() {
        let cur = set();
        let mut new = set();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        new["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        let mut causes = Vec::new();
        update(&cur, &new, &mut causes);
        assert!(causes.is_empty());
        new["spec"]["serviceName"] = json!("other");
        update(&cur, &new, &mut causes);
        assert_eq!(causes[0].field, "spec");
        assert!(causes[0].message.contains("are forbidden"));
    }

    #[test]
    fn a_revision_needs_data_and_keeps_it() {
        let mut causes = Vec::new();
        validate_revision(&json!({"revision": -1}), &mut causes);
        assert_eq!(causes.len(), 2);
        let a = json!({"data": {"spec": {}}, "revision": 1});
        let mut b = a.clone();
        b["revision"] = json!(3);
        let mut causes = Vec::new();
        revision_update(&a, &b, &mut causes);
        assert!(causes.is_empty());
        b["data"] = json!({"spec": {"x": 1}});
        revision_update(&a, &b, &mut causes);
        assert_eq!(causes[0].field, "data");
    }
}
