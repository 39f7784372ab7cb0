//! `autoscaling/v2` HorizontalPodAutoscalers at write time: the defaults kube-apiserver fills
//! (minReplicas 1, CPU at 80% when no metric is given, the rest of a `behavior` that is given),
//! the spec rules it enforces (with its field paths and messages), and the `kubectl get hpa`
//! cells. The decision itself lives in the controllers' autoscaler.

use serde_json::{json, Map, Value};

use crate::error::Cause;
use crate::meta::str_at;

pub const GROUP: &str = "autoscaling";
pub const VERSION: &str = "v2";

/// kube's bounds on a behavior's windows and policy periods (seconds).
const MAX_WINDOW: i64 = 3600;
const MAX_PERIOD: i64 = 1800;
const SELECT_POLICIES: [&str; 3] = ["Disabled", "Max", "Min"];
const POLICY_TYPES: [&str; 2] = ["Percent", "Pods"];
const METRIC_TYPES: [&str; 5] = [
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];
/// Each metric type and the member of a MetricSpec it populates.
const METRIC_SOURCES: [(&str, &str); 5] = [
    ("Resource", "resource"),
    ("ContainerResource", "containerResource"),
    ("Pods", "pods"),
    ("Object", "object"),
    ("External", "external"),
];

fn fill(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.into(), value);
    }
}

/// The scale-up rules kube uses when none are given: no window, and per 15 s the larger of
/// doubling or adding 4 pods.
pub fn default_scale_up() -> Value {
    json!({
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    })
}

/// The scale-down rules kube uses when none are given: the highest recommendation of the
/// last 5 minutes, then any decrease at once.
pub fn default_scale_down() -> Value {
    json!({
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    })
}

/// kube's `SetDefaults_HorizontalPodAutoscaler`: a behavior is completed only when given (an
/// HPA without one keeps none; the controller then applies the same defaults).
pub fn defaults(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let Some(spec) = obj["spec"].as_object_mut() else {
        return;
    };
    fill(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else {
        return;
    };
    for (key, default) in [
        ("scaleUp", default_scale_up()),
        ("scaleDown", default_scale_down()),
    ] {
        match behavior.get_mut(key).and_then(Value::as_object_mut) {
            Some(rules) => {
                for field in ["stabilizationWindowSeconds", "selectPolicy", "policies"] {
                    fill(rules, field, default[field].clone());
                }
            }
            None => {
                behavior.insert(key.into(), default);
            }
        }
    }
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// The spec rules of a HorizontalPodAutoscaler (kube's `ValidateHorizontalPodAutoscalerSpec`;
/// scale to zero is an alpha feature there, off by default, so minReplicas starts at 1).
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let min = int(&spec, "minReplicas");
    let max = int(&spec, "maxReplicas").unwrap_or(0);
    if let Some(m) = min.filter(|m| *m < 1) {
        causes.push(Cause::invalid(
            "spec.minReplicas",
            format!("Invalid value: {m}: must be greater than or equal to 1"),
        ));
    }
    if max < 1 {
        causes.push(Cause::invalid(
            "spec.maxReplicas",
            format!("Invalid value: {max}: must be greater than 0"),
        ));
    }
    if min.is_some_and(|m| m > max) {
        causes.push(Cause::invalid(
            "spec.maxReplicas",
            format!("Invalid value: {max}: must be greater than or equal to `minReplicas`"),
        ));
    }
    let target = spec.get("scaleTargetRef").cloned().unwrap_or(Value::Null);
    for f in ["kind", "name"] {
        let path = format!("spec.scaleTargetRef.{f}");
        match str_at(&target, &format!("/{f}")).unwrap_or("") {
            "" => causes.push(Cause::required(&path)),
            s if s == "." || s == ".." || s.contains(['/', '%']) => causes.push(Cause::invalid(
                &path,
                format!("Invalid value: {s:?}: may not contain '/' or '%' or be '.' or '..'"),
            )),
            _ => {}
        }
    }
    let metrics = spec.get("metrics").and_then(Value::as_array);
    for (i, m) in metrics.into_iter().flatten().enumerate() {
        metric(m, &format!("spec.metrics[{i}]"), causes);
    }
    if let Some(b) = spec.get("behavior").filter(|b| b.is_object()) {
        for dir in ["scaleUp", "scaleDown"] {
            if let Some(rules) = b.get(dir).filter(|r| r.is_object()) {
                scaling_rules(rules, &format!("spec.behavior.{dir}"), causes);
            }
        }
    }
}

fn forbidden(field: &str, message: &str) -> Cause {
    Cause {
        field: field.into(),
        kind: "FieldValueForbidden",
        message: format!("Forbidden: {message}"),
    }
}

fn required(field: &str, message: &str) -> Cause {
    Cause {
        field: field.into(),
        kind: "FieldValueRequired",
        message: format!("Required value: {message}"),
    }
}

fn metric(m: &Value, path: &str, causes: &mut Vec<Cause>) {
    let ty = str_at(m, "/type").unwrap_or("");
    if ty.is_empty() {
        causes.push(required(
            &format!("{path}.type"),
            "must specify a metric source type",
        ));
    } else if !METRIC_TYPES.contains(&ty) {
        causes.push(Cause::invalid(
            &format!("{path}.type"),
            format!("Invalid value: {ty:?}: must be either External, Object, Pods, Resource or ContainerResource"),
        ));
    }
    let populated = METRIC_SOURCES
        .iter()
        .filter(|(_, f)| m.get(f).is_some_and(|v| !v.is_null()))
        .count();
    if let Some((_, field)) = METRIC_SOURCES.iter().find(|(t, _)| *t == ty) {
        if m.get(field).is_none_or(Value::is_null) {
            causes.push(required(
                &format!("{path}.{field}"),
                "must populate information for the given metric source",
            ));
        } else if populated > 1 {
            causes.push(forbidden(
                path,
                "must populate the given metric source only",
            ));
        }
    }
    for (t, field) in ["Resource", "ContainerResource"]
        .into_iter()
        .zip(["resource", "containerResource"])
    {
        let Some(src) = m.get(field).filter(|v| v.is_object()) else {
            continue;
        };
        if ty != t {
            continue;
        }
        let path = format!("{path}.{field}");
        if str_at(src, "/name").unwrap_or("").is_empty() {
            causes.push(required(
                &format!("{path}.name"),
                "must specify a resource name",
            ));
        }
        if t == "ContainerResource" && str_at(src, "/container").unwrap_or("").is_empty() {
            causes.push(required(
                &format!("{path}.container"),
                "must specify a container",
            ));
        }
        let target = src.get("target").cloned().unwrap_or(Value::Null);
        let tpath = format!("{path}.target");
        metric_target(&target, &tpath, causes);
        let has = |k: &str| target.get(k).is_some_and(|v| !v.is_null());
        match (has("averageUtilization"), has("averageValue")) {
            (false, false) => causes.push(required(
                &format!("{tpath}.averageUtilization"),
                "must set either a target raw value or a target utilization",
            )),
            (true, true) => causes.push(forbidden(
                &format!("{tpath}.averageValue"),
                "may not set both a target raw value and a target utilization",
            )),
            _ => {}
        }
    }
}

/// A quantity's sign: Some(true) when above zero.
fn positive(q: &Value) -> Option<bool> {
    let n = match q {
        Value::String(s) => crate::defaults::quantity_nanos(s)?,
        Value::Number(n) => crate::defaults::quantity_nanos(&n.to_string())?,
        _ => return None,
    };
    Some(n > 0)
}

fn metric_target(t: &Value, path: &str, causes: &mut Vec<Cause>) {
    match str_at(t, "/type").unwrap_or("") {
        "" => causes.push(required(
            &format!("{path}.type"),
            "must specify a metric target type",
        )),
        "Utilization" | "Value" | "AverageValue" => {}
        other => causes.push(Cause::invalid(
            &format!("{path}.type"),
            format!("Invalid value: {other:?}: must be either Utilization, Value, or AverageValue"),
        )),
    }
    for f in ["value", "averageValue"] {
        if let Some(q) = t.get(f).filter(|v| !v.is_null()) {
            if positive(q) != Some(true) {
                causes.push(Cause::invalid(
                    &format!("{path}.{f}"),
                    format!("Invalid value: {q}: must be positive"),
                ));
            }
        }
    }
    if let Some(u) = int(t, "averageUtilization").filter(|u| *u < 1) {
        causes.push(Cause::invalid(
            &format!("{path}.averageUtilization"),
            format!("Invalid value: {u}: must be greater than 0"),
        ));
    }
}

fn scaling_rules(rules: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(w) = int(rules, "stabilizationWindowSeconds") {
        let field = format!("{path}.stabilizationWindowSeconds");
        if w < 0 {
            causes.push(Cause::invalid(
                &field,
                format!("Invalid value: {w}: must be greater than or equal to zero"),
            ));
        } else if w > MAX_WINDOW {
            causes.push(Cause::invalid(
                &field,
                format!("Invalid value: {w}: must be less than or equal to {MAX_WINDOW}"),
            ));
        }
    }
    if let Some(p) = rules.get("selectPolicy").filter(|v| !v.is_null()) {
        if !p.as_str().is_some_and(|s| SELECT_POLICIES.contains(&s)) {
            causes.push(Cause::unsupported(
                &format!("{path}.selectPolicy"),
                p,
                &SELECT_POLICIES,
            ));
        }
    }
    let policies = rules.get("policies").and_then(Value::as_array);
    if policies.is_none_or(Vec::is_empty) {
        causes.push(required(
            &format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, p) in policies.into_iter().flatten().enumerate() {
        let base = format!("{path}.policies[{i}]");
        let ty = p.get("type").cloned().unwrap_or(Value::Null);
        if !ty.as_str().is_some_and(|s| POLICY_TYPES.contains(&s)) {
            causes.push(Cause::unsupported(
                &format!("{base}.type"),
                &ty,
                &POLICY_TYPES,
            ));
        }
        let value = int(p, "value").unwrap_or(0);
        if value <= 0 {
            causes.push(Cause::invalid(
                &format!("{base}.value"),
                format!("Invalid value: {value}: must be greater than zero"),
            ));
        }
        let period = int(p, "periodSeconds").unwrap_or(0);
        if period <= 0 {
            causes.push(Cause::invalid(
                &format!("{base}.periodSeconds"),
                format!("Invalid value: {period}: must be greater than zero"),
            ));
        } else if period > MAX_PERIOD {
            causes.push(Cause::invalid(
                &format!("{base}.periodSeconds"),
                format!("Invalid value: {period}: must be less than or equal to {MAX_PERIOD}"),
            ));
        }
    }
}

/// A quantity as JSON holds it (a string, or a bare number).
fn quantity(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// kubectl's TARGETS column: each metric as `name: current/target`, at most two, then
/// `+ N more...`.
fn targets(o: &Value) -> String {
    let specs = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut list = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let ty = str_at(spec, "/type").unwrap_or("");
        let field = METRIC_SOURCES
            .iter()
            .find(|(t, _)| *t == ty)
            .map_or("resource", |(_, f)| *f);
        let src = spec.get(field).cloned().unwrap_or(Value::Null);
        let current = statuses
            .get(i)
            .and_then(|s| s.get(field))
            .map(|s| &s["current"]);
        let name = match ty {
            "Resource" | "ContainerResource" => str_at(&src, "/name").unwrap_or("").to_string(),
            _ => str_at(&src, "/metric/name").unwrap_or("").to_string(),
        };
        let target = &src["target"];
        let unknown = || "<unknown>".to_string();
        let (cur, want) = if let Some(u) = target.get("averageUtilization").and_then(Value::as_i64)
        {
            let cur = current
                .and_then(|c| c.get("averageUtilization"))
                .and_then(Value::as_i64)
                .map_or_else(unknown, |c| format!("{c}%"));
            (cur, format!("{u}%"))
        } else {
            let key = if target.get("averageValue").is_some_and(|v| !v.is_null()) {
                "averageValue"
            } else {
                "value"
            };
            let cur = quantity(current.and_then(|c| c.get(key))).unwrap_or_else(unknown);
            (
                cur,
                quantity(target.get(key)).unwrap_or_else(|| "<auto>".into()),
            )
        };
        let prefix = if name.is_empty() {
            String::new()
        } else {
            format!("{name}: ")
        };
        list.push(format!("{prefix}{cur}/{want}"));
    }
    if list.len() > 2 {
        let more = list.len() - 2;
        list.truncate(2);
        return format!("{} + {more} more...", list.join(", "));
    }
    list.join(", ")
}

/// An HPA's cell of column `col`, None for the columns every kind shares.
pub fn cell(kind: &str, col: &str, o: &Value) -> Option<Value> {
    if kind != "HorizontalPodAutoscaler" {
        return None;
    }
    Some(match col {
        "Reference" => json!(format!(
            "{}/{}",
            str_at(o, "/spec/scaleTargetRef/kind").unwrap_or(""),
            str_at(o, "/spec/scaleTargetRef/name").unwrap_or("")
        )),
        "Targets" => json!(targets(o)),
        "MinPods" => match o.pointer("/spec/minReplicas").and_then(Value::as_i64) {
            Some(n) => json!(n),
            None => json!("<unset>"),
        },
        "MaxPods" => json!(int(&o["spec"], "maxReplicas").unwrap_or(0)),
        "Replicas" => json!(int(&o["status"], "currentReplicas").unwrap_or(0)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(&json!({"spec": spec}), &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    fn good() -> Value {
        json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 3})
    }

    #[test]
    fn defaults_fill_like_kube() {
        let mut hpa = json!({"spec": good()});
        defaults(&mut hpa);
        assert_eq!(
            hpa.pointer("/spec/metrics/0/resource/target/averageUtilization"),
            Some(&json!(80))
        );
        assert!(hpa.pointer("/spec/behavior").is_none());
        let mut hpa = json!({"spec": {"maxReplicas": 3, "behavior": {
            "scaleDown": {"stabilizationWindowSeconds": 0}}}});
        defaults(&mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["behavior"]["scaleUp"], default_scale_up());
        let down = &hpa["spec"]["behavior"]["scaleDown"];
        assert_eq!(down["stabilizationWindowSeconds"], 0);
        assert_eq!(down["policies"], default_scale_down()["policies"]);
        assert_eq!(
            fields(hpa["spec"].clone()),
            ["spec.scaleTargetRef.kind", "spec.scaleTargetRef.name"]
        );
    }

    #[test]
    fn good_specs_pass() {
        let mut spec = good();
        spec["metrics"] = json!([
            {"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
        ]);
        spec["behavior"] =
            json!({"scaleUp": default_scale_up(), "scaleDown": default_scale_down()});
        assert!(fields(spec).is_empty());
    }

    #[test]
    fn bad_specs_name_their_fields() {
        let mut spec = good();
        spec["minReplicas"] = json!(0);
        assert_eq!(fields(spec), ["spec.minReplicas"]);
        let mut spec = good();
        spec["minReplicas"] = json!(5);
        assert_eq!(fields(spec), ["spec.maxReplicas"]);
        let spec = json!({"maxReplicas": 0, "scaleTargetRef": {}});
        assert_eq!(
            fields(spec),
            [
                "spec.maxReplicas",
                "spec.scaleTargetRef.kind",
                "spec.scaleTargetRef.name"
            ]
        );
        let mut spec = good();
        spec["metrics"] = json!([
            {"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 0}}},
            {"type": "Bogus"},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Average"}}},
            {"type": "Resource"},
        ]);
        assert_eq!(
            fields(spec),
            [
                "spec.metrics[0].resource.target.averageUtilization",
                "spec.metrics[1].type",
                "spec.metrics[2].resource.target.type",
                "spec.metrics[2].resource.target.averageUtilization",
                "spec.metrics[3].resource",
            ]
        );
        let mut spec = good();
        spec["behavior"] = json!({
            "scaleUp": {"stabilizationWindowSeconds": 3601, "selectPolicy": "Most",
                "policies": [{"type": "Pods", "value": 0, "periodSeconds": 1801}]},
            "scaleDown": {"stabilizationWindowSeconds": -1, "policies": []},
        });
        assert_eq!(
            fields(spec),
            [
                "spec.behavior.scaleUp.stabilizationWindowSeconds",
                "spec.behavior.scaleUp.selectPolicy",
                "spec.behavior.scaleUp.policies[0].value",
                "spec.behavior.scaleUp.policies[0].periodSeconds",
                "spec.behavior.scaleDown.stabilizationWindowSeconds",
                "spec.behavior.scaleDown.policies",
            ]
        );
    }

    #[test]
    fn table_cells_print_like_kubectl() {
        let mut hpa = json!({"spec": good()});
        defaults(&mut hpa);
        let c = |col| cell("HorizontalPodAutoscaler", col, &hpa).unwrap();
        assert_eq!(c("Reference"), json!("Deployment/web"));
        assert_eq!(c("Targets"), json!("cpu: <unknown>/80%"));
        assert_eq!(c("MinPods"), json!(1));
        assert_eq!(c("MaxPods"), json!(3));
        assert_eq!(c("Replicas"), json!(0));
        hpa["spec"]["metrics"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "100Mi"}}}));
        hpa["status"] = json!({"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 12, "averageValue": "12m"}}},
            {"type": "Resource", "resource": {"name": "memory",
                "current": {"averageValue": "10Mi"}}}]});
        let c = |col| cell("HorizontalPodAutoscaler", col, &hpa).unwrap();
        assert_eq!(c("Targets"), json!("cpu: 12%/80%, memory: 10Mi/100Mi"));
        assert_eq!(c("Replicas"), json!(2));
    }
}
