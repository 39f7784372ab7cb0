//! `policy/v1` PodDisruptionBudgets at write time: the spec rules kube-apiserver enforces
//! (with its field paths), the empty status a new budget starts with, and which budgets select
//! a pod (shared with the eviction subresource).

use serde_json::{json, Value};

use crate::error::Cause;

pub const GROUP: &str = "policy";

/// The values `spec.unhealthyPodEvictionPolicy` may take.
const EVICTION_POLICIES: [&str; 2] = ["AlwaysAllow", "IfHealthyBudget"];

/// A new budget's status: all counts zero until the disruption controller has looked (kube
/// stores these counters even when zero, and the eviction subresource reads them).
pub fn initial_status(obj: &mut Value) {
    obj["status"] = json!({
        "observedGeneration": 0,
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    });
}

/// The spec and status rules of a PodDisruptionBudget.
pub fn validate_pdb(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        causes.push(Cause::invalid(
            "spec",
            format!("Invalid value: {spec}: minAvailable and maxUnavailable cannot be both set"),
        ));
    }
    if let Some(v) = min {
        int_or_percent(v, "spec.minAvailable", causes);
    }
    if let Some(v) = max {
        int_or_percent(v, "spec.maxUnavailable", causes);
    }
    if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
        label_selector(sel, "spec.selector", causes);
    }
    if let Some(p) = spec
        .get("unhealthyPodEvictionPolicy")
        .filter(|v| !v.is_null())
    {
        if !p.as_str().is_some_and(|s| EVICTION_POLICIES.contains(&s)) {
            causes.push(Cause::unsupported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &EVICTION_POLICIES,
            ));
        }
    }
    // The counters are written by the controller and the eviction subresource; a negative
    // one would let an eviction through (or never), so it is refused like kube does.
    for f in [
        "disruptionsAllowed",
        "currentHealthy",
        "desiredHealthy",
        "expectedPods",
    ] {
        crate::batch::non_negative(obj, "status", f, causes);
    }
}

/// `N` (not negative) or `N%` (0 to 100).
fn int_or_percent(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    match v {
        Value::Number(n) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                causes.push(Cause::invalid(
                    field,
                    format!("Invalid value: {n}: must be greater than or equal to 0"),
                ));
            }
        }
        Value::String(s) => match parse_percent(s) {
            Some(p) if p > 100 => causes.push(Cause::invalid(
                field,
                format!("Invalid value: {s:?}: must not be greater than 100%"),
            )),
            Some(_) => {}
            None => causes.push(Cause::invalid(
                field,
                format!("Invalid value: {s:?}: must be an integer or percentage (e.g '5%')"),
            )),
        },
        other => causes.push(Cause::invalid(
            field,
            format!("Invalid value: {other}: must be an integer or percentage (e.g '5%')"),
        )),
    }
}

/// The number in `"NN%"`: digits only, then one `%`.
pub fn parse_percent(s: &str) -> Option<u64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than a u64 holds is still "over 100%".
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// A metav1.LabelSelector's keys, values and operators.
fn label_selector(sel: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            let field = format!("{path}.matchLabels");
            if let Some(why) = label_key_problem(k) {
                causes.push(Cause::invalid(
                    &field,
                    format!("Invalid value: {k:?}: {why}"),
                ));
            }
            let v = v.as_str().unwrap_or("");
            if let Some(why) = label_value_problem(v) {
                causes.push(Cause::invalid(
                    &field,
                    format!("Invalid value: {v:?}: {why}"),
                ));
            }
        }
    }
    let exprs = sel.get("matchExpressions").and_then(Value::as_array);
    for (i, e) in exprs.into_iter().flatten().enumerate() {
        let base = format!("{path}.matchExpressions[{i}]");
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        if let Some(why) = label_key_problem(key) {
            causes.push(Cause::invalid(
                &format!("{base}.key"),
                format!("Invalid value: {key:?}: {why}"),
            ));
        }
        let values = e.get("values").and_then(Value::as_array);
        let has_values = values.is_some_and(|v| !v.is_empty());
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" | "NotIn" if !has_values => causes.push(Cause {
                field: format!("{base}.values"),
                kind: "FieldValueRequired",
                message: "Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    .into(),
            }),
            "Exists" | "DoesNotExist" if has_values => causes.push(Cause {
                field: format!("{base}.values"),
                kind: "FieldValueForbidden",
                message:
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                        .into(),
            }),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => causes.push(Cause::invalid(
                &format!("{base}.operator"),
                format!("Invalid value: {op:?}: not a valid selector operator"),
            )),
        }
        for (j, v) in values.into_iter().flatten().enumerate() {
            let v = v.as_str().unwrap_or("");
            if let Some(why) = label_value_problem(v) {
                causes.push(Cause::invalid(
                    &format!("{base}.values[{j}]"),
                    format!("Invalid value: {v:?}: {why}"),
                ));
            }
        }
    }
}

/// A label name part: 1 to 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn label_key_problem(k: &str) -> Option<&'static str> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| !p.is_empty() && crate::validation::dns_subdomain_ok(p));
    if !prefix_ok || !name_part_ok(name) {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (an optional prefix is a DNS subdomain)");
    }
    None
}

fn label_value_problem(v: &str) -> Option<&'static str> {
    if v.is_empty() || name_part_ok(v) {
        None
    } else {
        Some("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
    }
}

/// Whether a budget's selector selects a pod with `labels`, with policy/v1's meaning: no
/// selector selects nothing, an empty one selects every pod of the namespace.
pub fn selects(pdb: &Value, labels: &Value) -> bool {
    pdb.pointer("/spec/selector")
        .filter(|s| s.is_object())
        .is_some_and(|sel| crate::selectors::label_selector_matches(sel, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pdb: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_pdb(&pdb, &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn good_budgets_pass() {
        for spec in [
            json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
            json!({"minAvailable": "100%", "selector": {}}),
            json!({"maxUnavailable": "0%", "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
            json!({"maxUnavailable": 0, "selector": {"matchExpressions": [
                {"key": "example.com/tier", "operator": "In", "values": ["a", "b"]},
                {"key": "x", "operator": "Exists"}]}}),
        ] {
            assert!(fields(json!({"spec": spec.clone()})).is_empty(), "{spec}");
        }
    }

    #[test]
    fn bad_budgets_name_their_fields() {
        let both = json!({"spec": {"minAvailable": 1, "maxUnavailable": 1}});
        assert_eq!(fields(both), ["spec"]);
        let negative = json!({"spec": {"minAvailable": -1}});
        assert_eq!(fields(negative), ["spec.minAvailable"]);
        for bad in ["50", "x%", "%", "101%", "5.5%"] {
            let pdb = json!({"spec": {"maxUnavailable": bad}});
            assert_eq!(fields(pdb), ["spec.maxUnavailable"], "{bad}");
        }
        let selector = json!({"spec": {"minAvailable": 1, "selector": {
            "matchLabels": {"bad key!": "v"},
            "matchExpressions": [{"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Near", "values": ["x"]}]}}});
        assert_eq!(
            fields(selector),
            [
                "spec.selector.matchLabels",
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator",
            ]
        );
        let policy = json!({"spec": {"unhealthyPodEvictionPolicy": "Sometimes"}});
        assert_eq!(fields(policy), ["spec.unhealthyPodEvictionPolicy"]);
        let status = json!({"spec": {}, "status": {"disruptionsAllowed": -1}});
        assert_eq!(fields(status), ["status.disruptionsAllowed"]);
    }

    #[test]
    fn selectors_have_policy_v1_meaning() {
        let labels = json!({"app": "web", "tier": "a"});
        assert!(!selects(&json!({"spec": {}}), &labels));
        assert!(selects(&json!({"spec": {"selector": {}}}), &labels));
        let web = json!({"spec": {"selector": {"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["b"]}]}}});
        assert!(selects(&web, &labels));
        assert!(!selects(&web, &json!({"app": "db"})));
    }
}
