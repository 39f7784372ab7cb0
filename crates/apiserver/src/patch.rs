//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! for the common list fields of built-in kinds (lists of named things merge by key).

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// Apply `patch` to `target`. Strategic merge on custom resources degrades to merge patch, as
/// Kubernetes rejects it there; callers decide.
pub fn apply(kind: PatchType, target: &Value, body: &[u8]) -> ApiResult<Value> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?;
    let mut out = target.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut out, &patch),
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            // `out` is a copy, dropped on failure, so nothing needs undoing; json_patch::patch
            // would undo, and its undo panics on some failed moves (found by fuzzing).
            json_patch::patch_unsafe(&mut out, &ops).map_err(|e| {
                ApiError::new(422, "Invalid", format!("the JSON patch failed: {e}"))
            })?;
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic(&mut out, &patch, "");
        }
    }
    Ok(out)
}

/// The merge key of a list field, by field name (and, for `ports`, by what the items carry).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of strings that merge as sets.
fn primitive_merge(field: &str) -> bool {
    field == "finalizers"
}

fn strategic(target: &mut Value, patch: &Value, _path: &str) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pmap.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(tmap) = target.as_object_mut() else {
        return;
    };
    for (k, v) in pmap {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (tmap.get_mut(field), v.as_array()) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if v.is_null() {
            tmap.remove(k);
            continue;
        }
        match (tmap.get_mut(k), v) {
            (Some(Value::Array(cur)), Value::Array(items)) => {
                if let Some(key) = merge_key(k, items) {
                    merge_list(cur, items, key);
                } else if primitive_merge(k) {
                    for i in items {
                        if !cur.contains(i) {
                            cur.push(i.clone());
                        }
                    }
                } else {
                    *cur = items.clone();
                }
            }
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic(cur, v, k),
            _ => {
                // New field, or a type change: take the patch's value without directives.
                let mut fresh = Value::Null;
                if v.is_object() {
                    strategic(&mut fresh, v, k);
                } else if let Value::Array(items) = v {
                    fresh = Value::Array(
                        items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .cloned()
                            .collect(),
                    );
                } else {
                    fresh = v.clone();
                }
                tmap.insert(k.clone(), fresh);
            }
        }
    }
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                cur.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic(&mut cur[i], item, key),
            (None, _) => {
                let mut fresh = Value::Null;
                strategic(&mut fresh, item, key);
                cur.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_containers_by_name() {
        let target = json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y:1"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "x:2", "env": [{"name": "B", "value": "2"}]},
                           {"name": "b", "$patch": "delete"}]}});
        let out = apply(PatchType::Strategic, &target, patch.to_string().as_bytes()).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "x:2",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}})
        );
    }

    #[test]
    fn merge_and_json() {
        let t = json!({"a": 1, "b": {"c": 2}});
        let out = apply(PatchType::Merge, &t, br#"{"b":{"c":null,"d":3}}"#).unwrap();
        assert_eq!(out, json!({"a": 1, "b": {"d": 3}}));
        let out = apply(
            PatchType::Json,
            &t,
            br#"[{"op":"replace","path":"/a","value":5}]"#,
        )
        .unwrap();
        assert_eq!(out["a"], 5);
        assert!(apply(PatchType::Json, &t, b"{not json").is_err());
        assert!(PatchType::from_content_type("text/plain").is_err());
    }

    #[test]
    fn a_failed_json_patch_is_an_error_not_a_panic() {
        let target = json!({"metadata": {"labels": {"a": "b"}}});
        // The first move replaces `metadata` with a label's value; when a later operation
        // fails, undoing that move means moving `metadata` into its own child, which
        // json_patch's undo cannot do and panicked on ("unable to undo applied patches").
        let body = json!([
            {"op": "move", "from": "/metadata/labels/a", "path": "/metadata"},
            {"op": "test", "path": "/kind", "value": "Pod"},
        ]);
        let err = apply(PatchType::Json, &target, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.code, 422, "{}", err.message);
        assert!(err.message.contains("JSON patch failed"), "{}", err.message);
    }
}
