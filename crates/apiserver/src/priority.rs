//! `scheduling.k8s.io/v1` PriorityClasses and kube's Priority admission: the classes' rules
//! (`ValidatePriorityClass` and its update check, one global default), the two system
//! classes every cluster has, and the resolution of a new pod's `priorityClassName` into
//! its `priority` and `preemptionPolicy`.

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::Api;

pub const GROUP: &str = "scheduling.k8s.io";

/// The highest value a user's class may have; above it is the system's.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// The classes kube-apiserver creates: (name, value, description).
const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// A class preempts lower priorities unless it says otherwise.
pub fn defaults(obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        if map.get("preemptionPolicy").is_none_or(Value::is_null) {
            map.insert("preemptionPolicy".into(), json!("PreemptLowerPriority"));
        }
    }
}

fn forbidden(field: &str, why: &str) -> Cause {
    Cause {
        field: field.into(),
        kind: "FieldValueForbidden",
        message: format!("Forbidden: {why}"),
    }
}

/// `ValidatePriorityClass`: the `system-` prefix and values above a billion are the system's.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = obj.get("value").and_then(Value::as_i64).unwrap_or(0);
    let system = SYSTEM_CLASSES
        .iter()
        .any(|(n, v, _)| *n == name && *v == value);
    if system {
        // A known system class, as the server makes it.
    } else if name.starts_with("system-") {
        causes.push(forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved for system use only",
        ));
    } else if value > HIGHEST_USER_PRIORITY {
        causes.push(forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    if let Some(p) = obj.get("preemptionPolicy").filter(|p| !p.is_null()) {
        if !matches!(p.as_str(), Some("PreemptLowerPriority" | "Never")) {
            causes.push(Cause::unsupported(
                "preemptionPolicy",
                p,
                &["Never", "PreemptLowerPriority"],
            ));
        }
    }
}

/// What an update may not change: the value and the preemption policy.
pub fn update(cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if cur.get("value") != new.get("value") {
        causes.push(forbidden("value", "may not be changed in an update."));
    }
    if cur.get("preemptionPolicy") != new.get("preemptionPolicy") {
        causes.push(Cause::invalid(
            "preemptionPolicy",
            format!(
                "Invalid value: {}: field is immutable",
                new.get("preemptionPolicy").cloned().unwrap_or(Value::Null)
            ),
        ));
    }
}

/// Every class in the store.
async fn classes(api: &Api) -> ApiResult<Vec<Value>> {
    crate::rest::list_cluster(api, GROUP, "priorityclasses").await
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Only one class may be the global default: a second is refused (403, kube's words).
pub async fn admit_class(api: &Api, obj: &Value) -> ApiResult<()> {
    if obj.get("globalDefault").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let name = name_of(obj);
    let other = classes(api).await?.into_iter().find(|c| {
        c.get("globalDefault").and_then(Value::as_bool) == Some(true) && name_of(c) != name
    });
    match other {
        Some(c) => Err(ApiError::forbidden(
            &format!("priorityclasses.{GROUP}"),
            name,
            &format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                name_of(&c)
            ),
        )),
        None => Ok(()),
    }
}

/// Priority admission of a pod being created as `name` (before defaulting, so what the user
/// wrote can be told from a default): its class (named, else the global default) gives its
/// priority and preemption policy; a class that does not exist, or a priority or policy
/// written in the pod that differs from its class's, is refused (403).
pub async fn admit_pod(api: &Api, name: &str, pod: &mut Value) -> ApiResult<()> {
    let spec = pod.pointer("/spec");
    let class_name = spec
        .and_then(|s| s.get("priorityClassName"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let all = classes(api).await?;
    let refuse = |why: String| Err(ApiError::forbidden("pods", name, &why));
    let (class_name, priority, policy) = if class_name.is_empty() {
        match all
            .iter()
            .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        {
            Some(c) => (name_of(c).to_string(), int(c), policy_of(c)),
            None => (String::new(), 0, json!("PreemptLowerPriority")),
        }
    } else {
        match all.iter().find(|c| name_of(c) == class_name) {
            Some(c) => (class_name, int(c), policy_of(c)),
            None => return refuse(format!("no PriorityClass with name {class_name} was found")),
        }
    };
    let spec = pod.pointer("/spec");
    if let Some(given) = spec
        .and_then(|s| s.get("priority"))
        .and_then(Value::as_i64)
        .filter(|p| *p != priority)
    {
        return refuse(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        ));
    }
    if let Some(given) = spec
        .and_then(|s| s.get("preemptionPolicy"))
        .filter(|p| !p.is_null() && **p != policy)
    {
        return refuse(format!(
            "the string value of PreemptionPolicy ({}) must not be provided in pod spec; priority admission controller computed {} from the given PriorityClass name",
            given.as_str().unwrap_or_default(),
            policy.as_str().unwrap_or_default()
        ));
    }
    if let Some(s) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        if !class_name.is_empty() {
            s.insert("priorityClassName".into(), json!(class_name));
        }
        s.insert("priority".into(), json!(priority));
        s.insert("preemptionPolicy".into(), policy);
    }
    Ok(())
}

fn int(class: &Value) -> i64 {
    class.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn policy_of(class: &Value) -> Value {
    class
        .get("preemptionPolicy")
        .filter(|p| p.is_string())
        .cloned()
        .unwrap_or_else(|| json!("PreemptLowerPriority"))
}

/// Create the system classes that are missing (kube-apiserver's bootstrap).
pub async fn ensure(api: &Api) -> anyhow::Result<()> {
    let res = api
        .registry
        .find(GROUP, "v1", "priorityclasses")
        .ok_or_else(|| anyhow::anyhow!("priorityclasses not registered"))?;
    for (name, value, description) in SYSTEM_CLASSES {
        if api.store.get(&res.key(None, name)).await?.is_some() {
            continue;
        }
        let class = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description});
        if let Err(e) = crate::rest::create_object(api, &res, None, class, false).await {
            tracing::warn!("priority class {name}: {}", e.message);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(obj: Value) -> Vec<String> {
        let mut out = Vec::new();
        validate(&obj, &mut out);
        out.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn the_system_prefix_and_high_values_are_reserved() {
        assert!(causes(json!({"metadata": {"name": "high"}, "value": 1000})).is_empty());
        assert!(causes(
            json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000})
        )
        .is_empty());
        assert_eq!(
            causes(json!({"metadata": {"name": "system-mine"}, "value": 5})),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only"]
        );
        assert_eq!(
            causes(json!({"metadata": {"name": "huge"}, "value": 1_000_000_001})),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        assert!(causes(
            json!({"metadata": {"name": "p"}, "value": 1, "preemptionPolicy": "Sometimes"})
        )[0]
        .starts_with("preemptionPolicy: Unsupported value: \"Sometimes\""));
    }

    #[test]
    fn value_and_policy_are_fixed() {
        let cur = json!({"value": 1, "preemptionPolicy": "Never", "description": "a"});
        let mut new = cur.clone();
        new["description"] = json!("b");
        let mut out = Vec::new();
        update(&cur, &new, &mut out);
        assert!(out.is_empty());
        new["value"] = json!(2);
        new["preemptionPolicy"] = json!("PreemptLowerPriority");
        update(&cur, &new, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].message,
            "Forbidden: may not be changed in an update."
        );
    }
}
