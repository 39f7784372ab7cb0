//! `v1` LimitRange: its defaults (`SetDefaults_LimitRangeItem`), its validation, and the
//! LimitRanger admission of a Pod on create: the namespace's Container limits fill the
//! requests and limits a container leaves out, then every Container and Pod bound (min, max,
//! maxLimitRequestRatio) is checked, a breach refused with kube's 403 and its messages.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use yun_store::RangeRequest;

use crate::defaults::quantity_nanos;
use crate::error::{ApiError, ApiResult, Cause};
use crate::Api;

/// Per resource, a container's (or a pod's summed) request and limit.
type Amounts = BTreeMap<String, (Option<Value>, Option<Value>)>;

/// The annotation saying what the admission filled in (kube's wording).
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn nanos(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => quantity_nanos(s),
        Value::Number(n) => quantity_nanos(&n.to_string()),
        _ => None,
    }
}

/// A quantity as it was written (`"500m"`, `2`).
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fill an item's defaults as kube does for type Container: a missing default limit is the
/// max, a missing default request is the default limit, else the min.
pub fn defaults(obj: &mut Value) {
    let items = obj
        .pointer_mut("/spec/limits")
        .and_then(Value::as_array_mut);
    for item in items.into_iter().flatten() {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let Some(m) = item.as_object_mut() else {
            continue;
        };
        let copy_missing = |m: &mut Map<String, Value>, from: &str, to: &str| {
            let source = m.get(from).and_then(Value::as_object).cloned();
            let Some(source) = source else { return };
            let target = m.entry(to).or_insert_with(|| json!({}));
            if let Some(t) = target.as_object_mut() {
                for (k, v) in source {
                    t.entry(k).or_insert(v);
                }
            }
        };
        copy_missing(m, "max", "default");
        copy_missing(m, "default", "defaultRequest");
        copy_missing(m, "min", "defaultRequest");
    }
}

/// `ValidateLimitRange`: known types, Pod items without defaults, and for each resource
/// min ≤ defaultRequest ≤ default ≤ max, a ratio of at least 1.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let items = obj
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let base = format!("spec.limits[{i}]");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "Container" | "Pod" | "PersistentVolumeClaim" => {}
            "" => causes.push(Cause::required(&format!("{base}.type"))),
            other => causes.push(Cause::unsupported(
                &format!("{base}.type"),
                &json!(other),
                &["Container", "PersistentVolumeClaim", "Pod"],
            )),
        }
        let map = |k: &str| -> BTreeMap<String, Value> {
            item.get(k)
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
                .unwrap_or_default()
        };
        let (min, max, default, request, ratio) = (
            map("min"),
            map("max"),
            map("default"),
            map("defaultRequest"),
            map("maxLimitRequestRatio"),
        );
        if kind == "Pod" {
            for (field, m) in [("default", &default), ("defaultRequest", &request)] {
                for k in m.keys() {
                    causes.push(Cause::invalid(
                        &format!("{base}.{field}[{k}]"),
                        format!("Invalid value: {k:?}: may not be specified when `type` is 'Pod'"),
                    ));
                }
            }
        }
        for (field, m) in [
            ("min", &min),
            ("max", &max),
            ("default", &default),
            ("defaultRequest", &request),
            ("maxLimitRequestRatio", &ratio),
        ] {
            for (k, v) in m {
                if nanos(v).is_none_or(|n| n < 0) {
                    causes.push(Cause::invalid(
                        &format!("{base}.{field}[{k}]"),
                        format!(
                            "Invalid value: {:?}: must be a non-negative quantity",
                            shown(v)
                        ),
                    ));
                }
            }
        }
        // Each pair that must be ordered, named as kube names the breach.
        let pairs = [
            (
                "min",
                &min,
                "max",
                &max,
                "min value {a} is greater than max value {b}",
            ),
            (
                "defaultRequest",
                &request,
                "default",
                &default,
                "default request value {a} is greater than default limit value {b}",
            ),
            (
                "default",
                &default,
                "max",
                &max,
                "default value {a} is greater than max value {b}",
            ),
            (
                "min",
                &min,
                "defaultRequest",
                &request,
                "min value {a} is greater than default request value {b}",
            ),
        ];
        for (low_name, low, high_name, high, message) in pairs {
            for (k, a) in low {
                let Some(b) = high.get(k) else { continue };
                if let (Some(x), Some(y)) = (nanos(a), nanos(b)) {
                    if x > y {
                        let field = if low_name == "min" && high_name == "max" {
                            format!("{base}.min[{k}]")
                        } else {
                            format!("{base}.{low_name}[{k}]")
                        };
                        causes.push(Cause::invalid(
                            &field,
                            format!(
                                "Invalid value: {:?}: {}",
                                shown(a),
                                message.replace("{a}", &shown(a)).replace("{b}", &shown(b))
                            ),
                        ));
                    }
                }
            }
        }
        for (k, v) in &ratio {
            if nanos(v).is_some_and(|n| n < 1_000_000_000) {
                causes.push(Cause::invalid(
                    &format!("{base}.maxLimitRequestRatio[{k}]"),
                    format!(
                        "Invalid value: {:?}: ratio {} is less than 1",
                        shown(v),
                        shown(v)
                    ),
                ));
            }
        }
    }
}

/// The namespace's LimitRanges.
async fn ranges_of(api: &Api, ns: &str) -> ApiResult<Vec<Value>> {
    let Some(res) = api.registry.find("", "v1", "limitranges") else {
        return Ok(Vec::new());
    };
    // A namespace holds a handful of ranges: one read of them all.
    let page = api
        .store
        .range(RangeRequest {
            prefix: res.prefix(Some(ns)),
            ..Default::default()
        })
        .await?;
    Ok(page.kvs.iter().filter_map(crate::meta::decode).collect())
}

/// LimitRanger on a pod being created as `name` in `ns` (defaulted, before validation).
pub async fn admit(api: &Api, ns: &str, name: &str, pod: &mut Value) -> ApiResult<()> {
    let ranges = ranges_of(api, ns).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .collect();
    apply_defaults(pod, &items);
    let problems = check(pod, &items);
    if problems.is_empty() {
        // The QoS class follows the requests and limits the defaults added.
        if let Some(spec) = pod.get("spec").cloned() {
            pod["status"]["qosClass"] = json!(crate::defaults::qos_class(&spec));
        }
        return Ok(());
    }
    Err(ApiError::forbidden(
        "pods",
        name,
        &format!("[{}]", problems.join(", ")),
    ))
}

/// Fill each container's missing requests and limits from the Container items' defaults, and
/// note what was filled in the pod's annotation.
fn apply_defaults(pod: &mut Value, items: &[&Value]) {
    let mut notes = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers {
            let cname = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for (source, target, word) in [
                ("defaultRequest", "requests", "request"),
                ("default", "limits", "limit"),
            ] {
                let mut set = Vec::new();
                for item in items.iter().filter(|i| i["type"] == "Container") {
                    let Some(defaults) = item.get(source).and_then(Value::as_object) else {
                        continue;
                    };
                    for (k, v) in defaults {
                        let resources = &mut c["resources"];
                        if !resources.is_object() {
                            *resources = json!({});
                        }
                        let have = &mut resources[target];
                        if !have.is_object() {
                            *have = json!({});
                        }
                        if have.get(k).is_none() {
                            have[k] = v.clone();
                            set.push(k.clone());
                        }
                    }
                }
                if !set.is_empty() {
                    notes.push(format!(
                        "{} {word} for {} {cname}",
                        set.join(", "),
                        if list == "initContainers" {
                            "init container"
                        } else {
                            "container"
                        }
                    ));
                }
            }
        }
    }
    if !notes.is_empty() {
        let meta = crate::meta::meta_mut(pod);
        if !meta.get("annotations").is_some_and(Value::is_object) {
            meta.insert("annotations".into(), json!({}));
        }
        meta["annotations"][ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// Every breach of a Container or Pod bound, in kube's words.
fn check(pod: &Value, items: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    let containers: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let amount =
        |c: &Value, which: &str, k: &str| c.pointer(&format!("/resources/{which}/{k}")).cloned();
    for item in items {
        let kind = item["type"].as_str().unwrap_or("");
        let bounds = |field: &str| {
            item.get(field)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let (min, max, ratio) = (bounds("min"), bounds("max"), bounds("maxLimitRequestRatio"));
        // (request, limit) per resource, for each container or summed over the pod.
        let subjects: Vec<Amounts> = match kind {
            "Container" => containers
                .iter()
                .map(|c| {
                    let keys = min.keys().chain(max.keys()).chain(ratio.keys());
                    keys.map(|k| {
                        (
                            k.clone(),
                            (amount(c, "requests", k), amount(c, "limits", k)),
                        )
                    })
                    .collect()
                })
                .collect(),
            "Pod" => {
                let keys: Vec<&String> = min.keys().chain(max.keys()).chain(ratio.keys()).collect();
                let mut sum = BTreeMap::new();
                for k in keys {
                    let total = |which: &str| -> Option<Value> {
                        let each: Vec<Option<i128>> = containers
                            .iter()
                            .map(|c| amount(c, which, k).as_ref().and_then(nanos))
                            .collect();
                        if each.iter().any(Option::is_none) {
                            return None;
                        }
                        Some(json!(format_nanos(each.into_iter().flatten().sum())))
                    };
                    sum.insert(k.clone(), (total("requests"), total("limits")));
                }
                vec![sum]
            }
            _ => continue,
        };
        for subject in subjects {
            for (k, bound) in &min {
                let (req, lim) = &subject[k];
                match req {
                    None => out.push(format!(
                        "minimum {k} usage per {kind} is {}.  No request is specified",
                        shown(bound)
                    )),
                    Some(r) if nanos(r) < nanos(bound) => out.push(format!(
                        "minimum {k} usage per {kind} is {}, but request is {}",
                        shown(bound),
                        shown(r)
                    )),
                    _ => {}
                }
                if let Some(l) = lim.as_ref().filter(|l| nanos(l) < nanos(bound)) {
                    out.push(format!(
                        "minimum {k} usage per {kind} is {}, but limit is {}",
                        shown(bound),
                        shown(l)
                    ));
                }
            }
            for (k, bound) in &max {
                let (req, lim) = &subject[k];
                match lim {
                    None => out.push(format!(
                        "maximum {k} usage per {kind} is {}.  No limit is specified",
                        shown(bound)
                    )),
                    Some(l) if nanos(l) > nanos(bound) => out.push(format!(
                        "maximum {k} usage per {kind} is {}, but limit is {}",
                        shown(bound),
                        shown(l)
                    )),
                    _ => {}
                }
                if let Some(r) = req.as_ref().filter(|r| nanos(r) > nanos(bound)) {
                    out.push(format!(
                        "maximum {k} usage per {kind} is {}, but request is {}",
                        shown(bound),
                        shown(r)
                    ));
                }
            }
            for (k, bound) in &ratio {
                let (req, lim) = &subject[k];
                let (Some(r), Some(l)) =
                    (req.as_ref().and_then(nanos), lim.as_ref().and_then(nanos))
                else {
                    continue;
                };
                if r > 0 && nanos(bound).is_some_and(|b| l * 1_000_000_000 > b * r) {
                    let actual = l as f64 / r as f64;
                    out.push(format!("{k} max limit to request ratio per {kind} is {}, but provided ratio is {actual:.6}", shown(bound)));
                }
            }
        }
    }
    out
}

/// Billionths back to a plain quantity (a sum of a pod's containers).
fn format_nanos(n: i128) -> String {
    if n % 1_000_000_000 == 0 {
        (n / 1_000_000_000).to_string()
    } else if n % 1_000_000 == 0 {
        format!("{}m", n / 1_000_000)
    } else {
        format!("{n}n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "resources": resources}]}})
    }

    fn range(item: Value) -> Value {
        let mut r = json!({"spec": {"limits": [item]}});
        defaults(&mut r);
        r["spec"]["limits"][0].clone()
    }

    #[test]
    fn item_defaults_follow_kube() {
        let item =
            range(json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}));
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
        let pod_item = range(json!({"type": "Pod", "max": {"cpu": "2"}}));
        assert!(pod_item.get("default").is_none());
    }

    #[test]
    fn defaults_fill_what_a_container_leaves_out_and_say_so() {
        let item = range(
            json!({"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"}}),
        );
        let mut p = pod(json!({"limits": {"memory": "256Mi"}}));
        apply_defaults(&mut p, &[&item]);
        let res = &p["spec"]["containers"][0]["resources"];
        // The item's default request for memory is its default limit (kube's item defaults).
        assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        assert_eq!(res["limits"], json!({"memory": "256Mi", "cpu": "500m"}));
        let note = p["metadata"]["annotations"][ANNOTATION].as_str().unwrap();
        assert_eq!(
            note,
            "LimitRanger plugin set: cpu, memory request for container c; cpu limit for container c"
        );
    }

    #[test]
    fn bounds_are_checked_per_container_and_per_pod() {
        let item = range(
            json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1"},
            "maxLimitRequestRatio": {"cpu": "4"}}),
        );
        let p = pod(json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "2"}}));
        assert_eq!(
            check(&p, &[&item]),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum cpu usage per Container is 1, but limit is 2",
                "cpu max limit to request ratio per Container is 4, but provided ratio is 40.000000"
            ]
        );
        let ok = pod(json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}));
        assert!(check(&ok, &[&item]).is_empty());
        let pod_item = range(json!({"type": "Pod", "max": {"memory": "1Gi"}}));
        let mut two = pod(json!({"limits": {"memory": "768Mi"}}));
        let c = two["spec"]["containers"][0].clone();
        two["spec"]["containers"].as_array_mut().unwrap().push(c);
        assert_eq!(
            check(&two, &[&pod_item]),
            ["maximum memory usage per Pod is 1Gi, but limit is 1610612736"]
        );
        let none = pod(json!({}));
        assert_eq!(
            check(&none, &[&pod_item]),
            ["maximum memory usage per Pod is 1Gi.  No limit is specified"]
        );
    }

    #[test]
    fn invalid_ranges_name_their_fields() {
        let mut causes = Vec::new();
        validate(
            &json!({"spec": {"limits": [
                {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}},
                {"type": "Pod", "default": {"cpu": "1"}},
                {"type": "Node"},
                {"type": "Container", "maxLimitRequestRatio": {"cpu": "0.5"}}]}}),
            &mut causes,
        );
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.limits[0].min[cpu]",
                "spec.limits[1].default[cpu]",
                "spec.limits[2].type",
                "spec.limits[3].maxLimitRequestRatio[cpu]"
            ]
        );
        assert!(causes[0]
            .message
            .contains("min value 2 is greater than max value 1"));
    }
}
