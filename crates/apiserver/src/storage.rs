//! Persistent storage kinds: `v1` PersistentVolume and PersistentVolumeClaim, and
//! `storage.k8s.io/v1` StorageClass — their defaults, kube's validation and update rules,
//! the admission plugins that act on them (DefaultStorageClass, StorageObjectInUseProtection,
//! PersistentVolumeClaimResize); their `kubectl get` columns are in `storage_table`. What
//! binds and provisions them lives in `yun-volumes`, the controllers and the agent.

use serde_json::{json, Value};
use yun_quota::Quantity;

use crate::error::{ApiError, ApiResult, Cause};
use crate::meta::str_at;
use crate::Api;

pub const GROUP: &str = "storage.k8s.io";
/// The annotation that marks the default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: [&str; 2] = ["Block", "Filesystem"];

fn fill(map: &mut serde_json::Map<String, Value>, key: &str, v: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), v);
    }
}

/// PVC: Filesystem mode, phase Pending. PV: Filesystem, Retain, phase Pending (the controller
/// makes it Available). StorageClass: Delete, Immediate.
pub fn defaults(kind: &str, obj: &mut Value) {
    match kind {
        "PersistentVolumeClaim" | "PersistentVolume" => {
            if !obj.get("spec").is_some_and(Value::is_object) {
                obj["spec"] = json!({});
            }
            if let Some(spec) = obj["spec"].as_object_mut() {
                fill(spec, "volumeMode", json!("Filesystem"));
                if kind == "PersistentVolume" {
                    fill(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                }
            }
            if !obj.get("status").is_some_and(Value::is_object) {
                obj["status"] = json!({});
            }
            if let Some(status) = obj["status"].as_object_mut() {
                fill(status, "phase", json!("Pending"));
            }
        }
        "StorageClass" => {
            if let Some(map) = obj.as_object_mut() {
                fill(map, "reclaimPolicy", json!("Delete"));
                fill(map, "volumeBindingMode", json!("Immediate"));
            }
        }
        _ => {}
    }
}

fn quantity_at(obj: &Value, pointer: &str) -> Option<Quantity> {
    obj.pointer(pointer).and_then(Quantity::from_json)
}

fn check_access_modes(obj: &Value, causes: &mut Vec<Cause>) {
    let modes = obj.pointer("/spec/accessModes").and_then(Value::as_array);
    match modes {
        Some(m) if !m.is_empty() => {
            for v in m {
                if !v.as_str().is_some_and(|s| ACCESS_MODES.contains(&s)) {
                    causes.push(Cause::unsupported("spec.accessModes", v, &ACCESS_MODES));
                }
            }
            let once_pod = m.iter().any(|v| v == "ReadWriteOncePod");
            if once_pod && m.len() > 1 {
                causes.push(Cause::invalid(
                    "spec.accessModes",
                    "Forbidden: may not use ReadWriteOncePod with other access modes",
                ));
            }
        }
        _ => causes.push(Cause::required("spec.accessModes")),
    }
}

fn check_volume_mode(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(m) = obj.pointer("/spec/volumeMode").filter(|m| !m.is_null()) {
        if !m.as_str().is_some_and(|s| VOLUME_MODES.contains(&s)) {
            causes.push(Cause::unsupported("spec.volumeMode", m, &VOLUME_MODES));
        }
    }
}

/// `ValidatePersistentVolumeClaim`: access modes, a positive storage request, a volume mode.
pub fn validate_claim(obj: &Value, causes: &mut Vec<Cause>) {
    check_access_modes(obj, causes);
    check_volume_mode(obj, causes);
    match obj.pointer("/spec/resources/requests/storage") {
        None | Some(Value::Null) => causes.push(Cause::required("spec.resources[storage]")),
        Some(v) => match Quantity::from_json(v) {
            Some(q) if q.nanos > 0 => {}
            _ => causes.push(Cause::invalid(
                "spec.resources.requests[storage]",
                format!("Invalid value: {v}: must be greater than zero"),
            )),
        },
    }
}

/// The volume sources a PV may name (kube has more; these are the ones a node here can use,
/// plus those whose data lives elsewhere and is kept for its record).
const PV_SOURCES: [&str; 6] = ["hostPath", "local", "csi", "nfs", "iscsi", "fc"];

/// `ValidatePersistentVolume`: capacity, access modes, exactly one source, a reclaim policy;
/// a local volume needs node affinity.
pub fn validate_volume(obj: &Value, causes: &mut Vec<Cause>) {
    check_access_modes(obj, causes);
    check_volume_mode(obj, causes);
    match quantity_at(obj, "/spec/capacity/storage") {
        Some(q) if q.nanos > 0 => {}
        Some(_) => causes.push(Cause::invalid(
            "spec.capacity[storage]",
            "Invalid value: must be greater than zero",
        )),
        None => causes.push(Cause::required("spec.capacity")),
    }
    let spec = obj.get("spec");
    let sources: Vec<&str> = PV_SOURCES
        .iter()
        .copied()
        .filter(|s| spec.and_then(|sp| sp.get(*s)).is_some_and(|v| !v.is_null()))
        .collect();
    match sources.as_slice() {
        [] => causes.push(required("spec", "must specify a volume type")),
        [_] => {}
        [_, second, ..] => causes.push(Cause {
            field: format!("spec.{second}"),
            kind: "FieldValueForbidden",
            message: "Forbidden: may not specify more than 1 volume type".into(),
        }),
    }
    for (src, field) in [("hostPath", "path"), ("local", "path")] {
        if let Some(s) = spec.and_then(|sp| sp.get(src)).filter(|v| !v.is_null()) {
            let path = s.get(field).and_then(Value::as_str).unwrap_or("");
            if path.is_empty() {
                causes.push(Cause::required(&format!("spec.{src}.{field}")));
            } else if path.split('/').any(|c| c == "..") {
                causes.push(Cause::invalid(
                    &format!("spec.{src}.{field}"),
                    format!("Invalid value: {path:?}: must not contain '..'"),
                ));
            }
        }
    }
    let local = spec
        .and_then(|s| s.get("local"))
        .is_some_and(|v| !v.is_null());
    if local && obj.pointer("/spec/nodeAffinity").is_none_or(Value::is_null) {
        causes.push(required(
            "spec.nodeAffinity",
            "Local volume requires node affinity",
        ));
    }
    if let Some(p) = obj
        .pointer("/spec/persistentVolumeReclaimPolicy")
        .filter(|p| !p.is_null())
    {
        let ok = ["Delete", "Recycle", "Retain"];
        if !p.as_str().is_some_and(|s| ok.contains(&s)) {
            causes.push(Cause::unsupported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                &ok,
            ));
        }
    }
}

/// `ValidateStorageClass`: a provisioner, a reclaim policy, a binding mode.
pub fn validate_class(obj: &Value, causes: &mut Vec<Cause>) {
    if str_at(obj, "/provisioner").is_none_or(str::is_empty) {
        causes.push(Cause::required("provisioner"));
    }
    if let Some(p) = obj.get("reclaimPolicy").filter(|p| !p.is_null()) {
        if !matches!(p.as_str(), Some("Delete" | "Retain")) {
            causes.push(Cause::unsupported(
                "reclaimPolicy",
                p,
                &["Delete", "Retain"],
            ));
        }
    }
    if let Some(m) = obj.get("volumeBindingMode").filter(|p| !p.is_null()) {
        if !matches!(m.as_str(), Some("Immediate" | "WaitForFirstConsumer")) {
            causes.push(Cause::unsupported(
                "volumeBindingMode",
                m,
                &["Immediate", "WaitForFirstConsumer"],
            ));
        }
    }
}

fn required(field: &str, why: &str) -> Cause {
    Cause {
        message: format!("Required value: {why}"),
        ..Cause::required(field)
    }
}

fn forbidden(field: &str, message: &str) -> Cause {
    Cause {
        field: field.into(),
        kind: "FieldValueForbidden",
        message: format!("Forbidden: {message}"),
    }
}

/// What an update may change, kind by kind, as kube's update validation says.
pub fn validate_update(kind: &str, cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    match kind {
        "PersistentVolumeClaim" => claim_update(cur, new, causes),
        "PersistentVolume" => {
            let source = |o: &Value| -> Value {
                PV_SOURCES
                    .iter()
                    .filter_map(|s| o.pointer(&format!("/spec/{s}")).map(|v| (s, v.clone())))
                    .map(|(s, v)| json!({ *s: v }))
                    .collect()
            };
            if source(cur) != source(new) {
                causes.push(forbidden(
                    "spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation",
                ));
            }
            if cur.pointer("/spec/volumeMode") != new.pointer("/spec/volumeMode") {
                causes.push(Cause::invalid(
                    "spec.volumeMode",
                    "Invalid value: field is immutable",
                ));
            }
            let affinity = cur.pointer("/spec/nodeAffinity").filter(|a| !a.is_null());
            if affinity.is_some() && affinity != new.pointer("/spec/nodeAffinity") {
                causes.push(Cause::invalid(
                    "nodeAffinity",
                    "Invalid value: field is immutable",
                ));
            }
        }
        "StorageClass" => {
            for (field, what) in [
                ("parameters", "updates to parameters are forbidden."),
                ("provisioner", "updates to provisioner are forbidden."),
                ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
                ("volumeBindingMode", "field is immutable"),
            ] {
                if cur.get(field) != new.get(field) {
                    causes.push(forbidden(field, what));
                }
            }
        }
        _ => {}
    }
}

/// A claim's spec is fixed once created, except a larger storage request (once bound), and
/// a volumeName or storageClassName that was empty and is being set (the binder's and the
/// retroactive default class's writes).
fn claim_update(cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let mut old = cur.get("spec").cloned().unwrap_or(Value::Null);
    let mut next = new.get("spec").cloned().unwrap_or(Value::Null);
    for spec in [&mut old, &mut next] {
        if let Some(s) = spec.as_object_mut() {
            if let Some(r) = s.get_mut("resources").and_then(Value::as_object_mut) {
                r.remove("requests");
            }
            s.remove("volumeAttributesClassName");
        }
    }
    for field in ["volumeName", "storageClassName"] {
        let was_empty = cur
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if was_empty {
            if let Some(s) = old.as_object_mut() {
                match next.get(field) {
                    Some(v) => s.insert(field.into(), v.clone()),
                    None => s.remove(field),
                };
            }
        }
    }
    if old != next {
        causes.push(forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
        return;
    }
    let (before, after) = (
        quantity_at(cur, "/spec/resources/requests/storage"),
        quantity_at(new, "/spec/resources/requests/storage"),
    );
    if let (Some(b), Some(a)) = (before, after) {
        if a.nanos < b.nanos {
            causes.push(forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            ));
        } else if a.nanos > b.nanos && str_at(cur, "/status/phase") != Some("Bound") {
            causes.push(forbidden(
                "spec.resources.requests.storage",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
    }
}

/// Every StorageClass in the store.
async fn classes(api: &Api) -> ApiResult<Vec<Value>> {
    crate::rest::list_cluster(api, GROUP, "storageclasses").await
}

pub(crate) fn is_default(class: &Value) -> bool {
    class
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(l) = list.as_array_mut() {
        if !l.iter().any(|f| f == finalizer) {
            l.push(json!(finalizer));
        }
    }
}

/// Admission of a new claim or volume: DefaultStorageClass gives a claim that names no class
/// (the field absent, not "") the default one — the newest if several are marked — and
/// StorageObjectInUseProtection adds the protection finalizer.
pub async fn admit_create(api: &Api, kind: &str, obj: &mut Value) -> ApiResult<()> {
    match kind {
        "PersistentVolumeClaim" => {
            let unset = obj
                .pointer("/spec/storageClassName")
                .is_none_or(Value::is_null);
            if unset {
                let mut defaults: Vec<Value> =
                    classes(api).await?.into_iter().filter(is_default).collect();
                defaults.sort_by(|a, b| {
                    let created = |v: &Value| {
                        str_at(v, "/metadata/creationTimestamp")
                            .unwrap_or("")
                            .to_string()
                    };
                    created(b).cmp(&created(a))
                });
                if let Some(class) = defaults.first() {
                    let name = str_at(class, "/metadata/name").unwrap_or("").to_string();
                    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("storageClassName".into(), json!(name));
                    }
                }
            }
            add_finalizer(obj, PVC_PROTECTION);
        }
        "PersistentVolume" => add_finalizer(obj, PV_PROTECTION),
        _ => {}
    }
    Ok(())
}

/// PersistentVolumeClaimResize admission: a claim may grow only when its class allows
/// volume expansion (403 otherwise, kube's words).
pub async fn admit_resize(api: &Api, cur: &Value, new: &Value) -> ApiResult<()> {
    let before = quantity_at(cur, "/spec/resources/requests/storage");
    let after = quantity_at(new, "/spec/resources/requests/storage");
    let grows = matches!((before, after), (Some(b), Some(a)) if a.nanos > b.nanos);
    if !grows {
        return Ok(());
    }
    let name = str_at(new, "/metadata/name").unwrap_or("");
    let class_name = str_at(new, "/spec/storageClassName").unwrap_or("");
    let allows = classes(api).await?.iter().any(|c| {
        str_at(c, "/metadata/name") == Some(class_name)
            && c.get("allowVolumeExpansion").and_then(Value::as_bool) == Some(true)
    });
    if allows {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "persistentvolumeclaims",
            name,
            "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(causes: Vec<Cause>) -> Vec<String> {
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_claim_needs_modes_and_a_positive_request() {
        let mut c = Vec::new();
        validate_claim(&json!({"spec": {}}), &mut c);
        assert_eq!(
            messages(c),
            [
                "spec.accessModes: Required value",
                "spec.resources[storage]: Required value"
            ]
        );
        let mut c = Vec::new();
        validate_claim(
            &json!({"spec": {"accessModes": ["ReadWriteMany", "Sometimes"],
                "resources": {"requests": {"storage": "0"}}, "volumeMode": "Disk"}}),
            &mut c,
        );
        let m = messages(c);
        assert!(m[0].contains("Unsupported value: \"Sometimes\""), "{m:?}");
        assert!(m[1].starts_with("spec.volumeMode: Unsupported"), "{m:?}");
        assert!(m[2].contains("must be greater than zero"), "{m:?}");
    }

    #[test]
    fn a_volume_needs_one_source_and_local_needs_affinity() {
        let base =
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
        let mut c = Vec::new();
        validate_volume(&base, &mut c);
        assert_eq!(
            messages(c),
            ["spec: Required value: must specify a volume type"]
        );
        let mut two = base.clone();
        two["spec"]["hostPath"] = json!({"path": "/a"});
        two["spec"]["local"] = json!({"path": "/b/../c"});
        let mut c = Vec::new();
        validate_volume(&two, &mut c);
        let m = messages(c);
        assert!(
            m.contains(
                &"spec.local: Forbidden: may not specify more than 1 volume type".to_string()
            ),
            "{m:?}"
        );
        assert!(
            m.iter().any(|s| s.contains("must not contain '..'")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|s| s.contains("Local volume requires node affinity")),
            "{m:?}"
        );
    }

    #[test]
    fn a_claim_spec_is_fixed_except_growth_once_bound_and_first_binding() {
        let cur = json!({"spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "local-path"},
            "status": {"phase": "Pending"}});
        let mut bound = cur.clone();
        bound["spec"]["volumeName"] = json!("pvc-1");
        let mut c = Vec::new();
        validate_update("PersistentVolumeClaim", &cur, &bound, &mut c);
        assert!(c.is_empty(), "{:?}", messages(c));
        let mut modes = cur.clone();
        modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        let mut c = Vec::new();
        validate_update("PersistentVolumeClaim", &cur, &modes, &mut c);
        assert!(messages(c)[0].starts_with("spec: Forbidden: spec is immutable"));
        let mut grown = cur.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut c = Vec::new();
        validate_update("PersistentVolumeClaim", &cur, &grown, &mut c);
        assert_eq!(c.len(), 1, "a pending claim cannot grow");
        let mut cur_bound = bound.clone();
        cur_bound["status"]["phase"] = json!("Bound");
        let mut grown_bound = cur_bound.clone();
        grown_bound["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut c = Vec::new();
        validate_update("PersistentVolumeClaim", &cur_bound, &grown_bound, &mut c);
        assert!(c.is_empty(), "{:?}", messages(c));
        let mut c = Vec::new();
        validate_update("PersistentVolumeClaim", &grown_bound, &cur_bound, &mut c);
        assert!(messages(c)[0].contains("can not be less than"));
    }
}
