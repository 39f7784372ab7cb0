//! What a pod costs a quota, its scopes, and what a compute quota requires it to declare.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde_json::Value;

use crate::{is_extended, Quantity, ResourceList, ScopeRequirement};

/// A container's `resources.<which>` (requests or limits); entries that do not parse are
/// left out (validation refuses them before they get here).
fn amounts(c: &Value, which: &str) -> ResourceList {
    crate::parse_list(c.pointer(&format!("/resources/{which}")))
        .unwrap_or_else(|_| ResourceList::new())
}

fn max_into(into: &mut ResourceList, other: &ResourceList) {
    for (k, q) in other {
        match into.get(k) {
            Some(have) if have >= q => {}
            _ => {
                into.insert(k.clone(), *q);
            }
        }
    }
}

fn containers<'a>(spec: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The pod's requests or limits as the scheduler sees them: the containers' sum (sidecars,
/// init containers that restart Always, included), or the largest init container (with the
/// sidecars started before it) when that is more; pod-level resources where set; overhead
/// added (to limits only where a limit is set).
fn pod_amounts(spec: &Value, which: &str) -> ResourceList {
    let mut total = ResourceList::new();
    for c in containers(spec, "containers") {
        total = crate::add(&total, &amounts(c, which));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in containers(spec, "initContainers") {
        let own = amounts(c, which);
        if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            total = crate::add(&total, &own);
            sidecars = crate::add(&sidecars, &own);
            max_into(&mut init_peak, &sidecars);
        } else {
            max_into(&mut init_peak, &crate::add(&own, &sidecars));
        }
    }
    max_into(&mut total, &init_peak);
    let pod_level =
        crate::parse_list(spec.pointer(&format!("/resources/{which}"))).unwrap_or_default();
    for r in ["cpu", "memory"] {
        if let Some(q) = pod_level.get(r) {
            total.insert(r.into(), *q);
        }
    }
    let overhead = crate::parse_list(spec.get("overhead")).unwrap_or_default();
    for (k, q) in overhead {
        if which == "requests" || total.contains_key(&k) {
            let sum = total.get(&k).copied().unwrap_or(Quantity::ZERO) + q;
            total.insert(k, sum);
        }
    }
    total
}

/// Requests and limits as quota names them (kube's podComputeUsageHelper): `cpu` and
/// `requests.cpu` from the request, `limits.cpu` from the limit, likewise memory and
/// ephemeral storage; hugepages and extended resources by their requests; and `pods` 1.
fn compute(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), Quantity::count(1));
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (k, q) in requests {
        if k.starts_with("hugepages-") {
            out.insert(k.clone(), *q);
            out.insert(format!("requests.{k}"), *q);
        }
        if is_extended(k) {
            out.insert(format!("requests.{k}"), *q);
        }
    }
    out
}

/// Whether the pod is charged for compute (kube's QuotaV1Pod): not once it has succeeded or
/// failed, nor once its deletion's grace period is over (a pod stuck terminating on a lost
/// node must not block its replacement).
pub fn charged(pod: &Value, now: Timestamp) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    charge_ends(pod).is_none_or(|end| now.as_second() <= end)
}

/// For a pod being deleted, the second (Unix time) after which it is no longer charged: its
/// deletion time plus its grace period.
pub fn charge_ends(pod: &Value) -> Option<i64> {
    let at = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())?;
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)?;
    Some(at.as_second().saturating_add(grace))
}

/// Add a pod's usage to `out` (which holds its `count/pods`: every stored pod has that).
pub fn usage(pod: &Value, now: Timestamp, out: &mut ResourceList) {
    if !charged(pod, now) {
        return;
    }
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let cost = compute(&pod_amounts(spec, "requests"), &pod_amounts(spec, "limits"));
    *out = crate::add(out, &cost);
}

/// BestEffort: no container requests or limits a non-zero cpu or memory.
fn best_effort(spec: &Value) -> bool {
    let all = containers(spec, "containers").chain(containers(spec, "initContainers"));
    let mut holders: Vec<&Value> = all.collect();
    holders.push(spec);
    !holders.iter().any(|c| {
        ["requests", "limits"].iter().any(|which| {
            let list = amounts(c, which);
            ["cpu", "memory"]
                .iter()
                .any(|r| list.get(*r).is_some_and(|q| q.nanos > 0))
        })
    })
}

/// A pod (anti-)affinity term that reaches other namespaces.
fn cross_namespace(spec: &Value) -> bool {
    let mut terms = Vec::new();
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(a) = spec.pointer(&format!("/affinity/{kind}")) else {
            continue;
        };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array);
        terms.extend(required.into_iter().flatten());
        let preferred = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array);
        terms.extend(
            preferred
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("podAffinityTerm")),
        );
    }
    terms.iter().any(|t| {
        t.get("namespaceSelector").is_some_and(|s| !s.is_null())
            || t.get("namespaces")
                .and_then(Value::as_array)
                .is_some_and(|n| !n.is_empty())
    })
}

pub fn in_scope(req: &ScopeRequirement, pod: &Value) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let terminating = spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s >= 0);
    match req.scope.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(spec),
        "NotBestEffort" => !best_effort(spec),
        "PriorityClass" => {
            let class = spec
                .get("priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            // The class is a label that is always there (empty when unset), as kube reads it.
            match req.operator.as_str() {
                "Exists" => !class.is_empty(),
                "In" => req.values.iter().any(|v| v == class),
                "NotIn" => !req.values.iter().any(|v| v == class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => cross_namespace(spec),
        _ => false,
    }
}

/// Every container must declare the cpu and memory a quota constrains (kube keeps this rule
/// for those two only): `must specify limits.cpu for: a,b; requests.memory for: a`.
pub fn constraints(required: &[String], pod: &Value) -> Result<(), String> {
    const CHECKED: [&str; 6] = [
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
        "cpu",
        "memory",
    ];
    let required: BTreeSet<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| CHECKED.contains(r))
        .collect();
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    for c in containers(spec, "containers").chain(containers(spec, "initContainers")) {
        let declared = compute(&amounts(c, "requests"), &amounts(c, "limits"));
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        for r in &required {
            if !declared.contains_key(*r) {
                missing.entry(r).or_default().insert(name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}
