//! `apps/v1` DaemonSets at write time: kube-apiserver's defaults (`SetDefaults_DaemonSet`) and
//! the rules of `ValidateDaemonSet` and its update check, with Kubernetes' field paths.

use serde_json::{json, Value};

use crate::error::Cause;

/// RollingUpdate with one pod at a time and no surge, ten revisions kept, the template's pod
/// spec defaulted as a pod's.
pub fn defaults(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = obj["spec"].as_object_mut().expect("made an object above");
    if !spec.get("updateStrategy").is_some_and(Value::is_object) {
        spec.insert("updateStrategy".into(), json!({}));
    }
    let strategy = spec["updateStrategy"].as_object_mut().expect("an object");
    if !strategy.get("type").is_some_and(Value::is_string) {
        strategy.insert("type".into(), json!("RollingUpdate"));
    }
    if strategy["type"] == "RollingUpdate" {
        if !strategy.get("rollingUpdate").is_some_and(Value::is_object) {
            strategy.insert("rollingUpdate".into(), json!({}));
        }
        let rolling = strategy["rollingUpdate"]
            .as_object_mut()
            .expect("an object");
        for (field, default) in [("maxUnavailable", 1), ("maxSurge", 0)] {
            if rolling.get(field).is_none_or(Value::is_null) {
                rolling.insert(field.into(), json!(default));
            }
        }
    }
    if spec.get("revisionHistoryLimit").is_none_or(Value::is_null) {
        spec.insert("revisionHistoryLimit".into(), json!(10));
    }
    if let Some(pod) = obj.pointer_mut("/spec/template/spec") {
        crate::defaults::pod_spec(pod);
    }
}

/// An int-or-percent of a rolling update: Ok(None) for an int, Ok(Some(p)) for `p%`.
pub(crate) fn int_or_percent(v: &Value) -> Result<(i64, bool), String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(|n| (n, false))
            .ok_or_else(|| format!("Invalid value: {n}: must be an integer")),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map(|p| (p, true))
            .ok_or_else(|| {
                format!("Invalid value: {s:?}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
            }),
        other => Err(format!("Invalid value: {other}: must be an integer or percentage")),
    }
}

/// What DaemonSets and StatefulSets share: a selector that says something (`kind` names the
/// kind in kube's message), and pods that always restart.
pub(crate) fn controller_of_long_runners(obj: &Value, kind: &str, causes: &mut Vec<Cause>) {
    let selector = obj.pointer("/spec/selector");
    let empty = |k: &str| {
        selector.and_then(|s| s.get(k)).is_none_or(|v| {
            v.as_object().is_some_and(|m| m.is_empty())
                || v.as_array().is_some_and(|a| a.is_empty())
                || v.is_null()
        })
    };
    if selector.is_some_and(Value::is_object) && empty("matchLabels") && empty("matchExpressions") {
        causes.push(Cause::invalid(
            "spec.selector",
            format!("Invalid value: {{}}: empty selector is invalid for {kind}"),
        ));
    }
    let restart = obj
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if restart != "Always" {
        causes.push(Cause::unsupported(
            "spec.template.spec.restartPolicy",
            &json!(restart),
            &["Always"],
        ));
    }
}

/// `ValidateDaemonSetSpec` beyond what every workload checks (selector, template labels,
/// containers).
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    controller_of_long_runners(obj, "daemonset", causes);
    for field in ["minReadySeconds", "revisionHistoryLimit"] {
        crate::batch::non_negative(obj, "spec", field, causes);
    }
    let kind = obj
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    match kind {
        "OnDelete" => {}
        "RollingUpdate" => rolling_update(obj, causes),
        other => causes.push(Cause::unsupported(
            "spec.updateStrategy.type",
            &json!(other),
            &["OnDelete", "RollingUpdate"],
        )),
    }
}

fn rolling_update(obj: &Value, causes: &mut Vec<Cause>) {
    let base = "spec.updateStrategy.rollingUpdate";
    let mut values = Vec::new();
    for field in ["maxUnavailable", "maxSurge"] {
        let path = format!("{base}.{field}");
        let v = obj
            .pointer(&format!("/spec/updateStrategy/rollingUpdate/{field}"))
            .cloned()
            .unwrap_or(json!(0));
        match int_or_percent(&v) {
            Ok((n, _)) if n < 0 => causes.push(Cause::invalid(
                &path,
                format!("Invalid value: {v}: must be greater than or equal to 0"),
            )),
            Ok((n, true)) if n > 100 => causes.push(Cause::invalid(
                &path,
                format!("Invalid value: {v}: must not be greater than 100%"),
            )),
            Ok((n, _)) => values.push((field, n, v)),
            Err(m) => causes.push(Cause::invalid(&path, m)),
        }
    }
    if let [(_, 0, unavailable), (_, 0, _)] = values.as_slice() {
        causes.push(Cause::invalid(
            &format!("{base}.maxUnavailable"),
            format!("Invalid value: {unavailable}: may not be 0 when `maxSurge` is 0"),
        ));
    }
}

/// What an update may not change (`ValidateDaemonSetUpdate`): the selector.
pub fn update(cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let (a, b) = (cur.pointer("/spec/selector"), new.pointer("/spec/selector"));
    if a != b {
        causes.push(Cause::invalid(
            "spec.selector",
            format!(
                "Invalid value: {}: field is immutable",
                b.cloned().unwrap_or(Value::Null)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(spec: Value) -> Value {
        json!({"metadata": {"name": "d"}, "spec": spec})
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn defaults_are_kubes() {
        let mut o =
            ds(json!({"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}));
        defaults(&mut o);
        assert_eq!(
            o["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(o["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(o["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let once = o.clone();
        defaults(&mut o);
        assert_eq!(o, once, "defaulting is idempotent");
        let mut on_delete = ds(json!({"updateStrategy": {"type": "OnDelete"}}));
        defaults(&mut on_delete);
        assert!(on_delete["spec"]["updateStrategy"]
            .get("rollingUpdate")
            .is_none());
    }

    #[test]
    fn invalid_specs_name_their_fields() {
        let mut causes = Vec::new();
        validate(
            &ds(json!({"selector": {}, "minReadySeconds": -1,
                "template": {"spec": {"restartPolicy": "Never"}},
                "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "150%", "maxSurge": -1}}})),
            &mut causes,
        );
        assert_eq!(
            fields(&causes),
            [
                "spec.selector",
                "spec.template.spec.restartPolicy",
                "spec.minReadySeconds",
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                "spec.updateStrategy.rollingUpdate.maxSurge"
            ]
        );
        let mut causes = Vec::new();
        validate(
            &ds(json!({"selector": {"matchLabels": {"a": "b"}},
                "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "0%", "maxSurge": 0}}})),
            &mut causes,
        );
        assert_eq!(
            fields(&causes),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable"]
        );
        assert!(causes[0]
            .message
            .contains("may not be 0 when `maxSurge` is 0"));
        let mut causes = Vec::new();
        validate(
            &ds(json!({"selector": {"matchLabels": {"a": "b"}},
                "updateStrategy": {"type": "Sometimes"}})),
            &mut causes,
        );
        assert_eq!(fields(&causes), ["spec.updateStrategy.type"]);
        let mut causes = Vec::new();
        validate(
            &ds(json!({"selector": {"matchLabels": {"a": "b"}},
                "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "x%", "maxSurge": "10%"}}})),
            &mut causes,
        );
        assert_eq!(
            fields(&causes),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable"]
        );
    }

    #[test]
    fn the_selector_is_immutable() {
        let cur = ds(json!({"selector": {"matchLabels": {"a": "b"}}}));
        let mut causes = Vec::new();
        update(&cur, &cur.clone(), &mut causes);
        assert!(causes.is_empty());
        update(
            &cur,
            &ds(json!({"selector": {"matchLabels": {"a": "c"}}})),
            &mut causes,
        );
        assert_eq!(fields(&causes), ["spec.selector"]);
        assert!(causes[0].message.contains("field is immutable"));
    }
}
