//! `v1` ResourceQuota: its validation, its `kubectl get` columns, and the ResourceQuota
//! admission of a write: a new object (or a Service or claim that grows) is measured against
//! every quota of its namespace that counts it (through `yun_quota`), refused with kube's
//! 403 when it would go over one, and otherwise charged to their `status.used` before it is
//! stored. The charge is a compare-and-swap on each quota, so two creates racing for the last
//! unit cannot both pass; the controllers' quota loop recomputes usage from what exists, which
//! gives back what deletions free.

use serde_json::{json, Value};
use yun_quota::{Evaluator, Quantity, ResourceList};
use yun_store::RangeRequest;

use crate::error::{ApiError, ApiResult, Cause};
use crate::resources::Resource;
use crate::Api;

/// Attempts at charging the quotas before the request fails with the last conflict (kube's
/// admission retries the same way).
const CHARGE_TRIES: usize = 10;

/// Kube's message for a value that is not a quantity (it refuses it while decoding).
const NOT_A_QUANTITY: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// `ValidateResourceQuota`: names and amounts of `spec.hard` (and of the status), the scopes
/// and the scope selector, and scopes that suit the resources they constrain.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    let hard = spec.get("hard").and_then(Value::as_object);
    for (field, list) in [
        ("spec.hard", hard),
        (
            "status.hard",
            obj.pointer("/status/hard").and_then(Value::as_object),
        ),
        (
            "status.used",
            obj.pointer("/status/used").and_then(Value::as_object),
        ),
    ] {
        for (k, v) in list.into_iter().flatten() {
            check_entry(&format!("{field}[{k}]"), k, v, causes);
        }
    }
    let names: Vec<&String> = hard.map(|h| h.keys().collect()).unwrap_or_default();
    let scopes = spec.get("scopes").cloned().unwrap_or(Value::Null);
    let listed: Vec<&str> = scopes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for scope in &listed {
        if !yun_quota::SCOPES.contains(scope) {
            causes.push(Cause::invalid(
                "spec.scopes",
                format!("Invalid value: {scopes}: unsupported scope"),
            ));
        }
        for k in &names {
            if yun_quota::is_standard(k) && !yun_quota::scope_valid_for(scope, k) {
                causes.push(Cause::invalid(
                    "spec.scopes",
                    format!("Invalid value: {scopes}: unsupported scope applied to resource"),
                ));
            }
        }
    }
    if conflicting(&listed) {
        causes.push(Cause::invalid(
            "spec.scopes",
            format!("Invalid value: {scopes}: conflicting scopes"),
        ));
    }
    if let Some(selector) = spec.get("scopeSelector").filter(|s| !s.is_null()) {
        check_selector(selector, &names, causes);
    }
}

/// BestEffort with NotBestEffort, or Terminating with NotTerminating: nothing is in both.
fn conflicting(scopes: &[&str]) -> bool {
    let has = |s: &str| scopes.contains(&s);
    (has("BestEffort") && has("NotBestEffort")) || (has("Terminating") && has("NotTerminating"))
}

/// One resource of a quota: a name quota knows (or a qualified one) and a non-negative
/// quantity, whole for the counted ones.
fn check_entry(field: &str, name: &str, v: &Value, causes: &mut Vec<Cause>) {
    if !name.contains('/') {
        if !yun_quota::is_standard(name) && name != "storage" {
            causes.push(Cause::invalid(
                field,
                format!(
                    "Invalid value: {name:?}: must be a standard resource type or fully qualified"
                ),
            ));
        }
        if !yun_quota::is_standard(name) {
            causes.push(Cause::invalid(
                field,
                format!("Invalid value: {name:?}: must be a standard resource for quota"),
            ));
        }
    } else if !qualified_name_ok(name) {
        causes.push(Cause::invalid(
            field,
            format!("Invalid value: {name:?}: a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
        ));
    }
    let Some(q) = Quantity::from_json(v) else {
        let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        causes.push(Cause::invalid(
            field,
            format!("Invalid value: {shown:?}: {NOT_A_QUANTITY}"),
        ));
        return;
    };
    if q.nanos < 0 {
        causes.push(Cause::invalid(
            field,
            format!("Invalid value: \"{q}\": must be greater than or equal to 0"),
        ));
    } else if yun_quota::is_integer_resource(name) && q.nanos % 1_000_000_000 != 0 {
        causes.push(Cause::invalid(
            field,
            format!("Invalid value: \"{q}\": must be an integer"),
        ));
    }
}

/// `prefix/name` with a DNS-subdomain prefix and a name of alphanumerics, `-`, `_`, `.`.
fn qualified_name_ok(s: &str) -> bool {
    let (prefix, name) = s.rsplit_once('/').unwrap_or(("", s));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    name_ok && crate::validation::dns_subdomain_ok(prefix)
}

/// `spec.scopeSelector.matchExpressions`: known scopes, the operators each allows, values
/// as the operator needs them.
fn check_selector(selector: &Value, names: &[&String], causes: &mut Vec<Cause>) {
    let base = "spec.scopeSelector.matchExpressions";
    let exprs = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = Vec::new();
    for e in &exprs {
        let scope = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if !yun_quota::SCOPES.contains(&scope) {
            causes.push(Cause::invalid(
                &format!("{base}.scopeName"),
                format!("Invalid value: {scope:?}: unsupported scope"),
            ));
        }
        if names
            .iter()
            .any(|k| yun_quota::is_standard(k) && !yun_quota::scope_valid_for(scope, k))
        {
            causes.push(Cause::invalid(
                base,
                format!("Invalid value: {selector}: unsupported scope applied to resource"),
            ));
        }
        if scope != "PriorityClass" && yun_quota::SCOPES.contains(&scope) && op != "Exists" {
            causes.push(Cause::invalid(
                &format!("{base}.operator"),
                format!("Invalid value: {op:?}: must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"),
            ));
        }
        match op {
            "In" | "NotIn" if values == 0 => causes.push(Cause {
                field: format!("{base}.values"),
                kind: "FieldValueRequired",
                message: "Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector".into(),
            }),
            "Exists" | "DoesNotExist" if values != 0 => causes.push(Cause::invalid(
                &format!("{base}.values"),
                format!(
                    "Invalid value: {}: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                    e.get("values").cloned().unwrap_or_default()
                ),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                &format!("{base}.operator"),
                format!("Invalid value: {other:?}: not a valid selector operator"),
            )),
        }
        seen.push(scope);
    }
    if conflicting(&seen) {
        causes.push(Cause::invalid(
            base,
            format!("Invalid value: {selector}: conflicting scopes"),
        ));
    }
}

/// `ValidateResourceQuotaUpdate`: the scopes of a quota do not change.
pub fn validate_update(cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let scopes = |o: &Value| -> Vec<String> {
        let mut s: Vec<String> = o
            .pointer("/spec/scopes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        s.sort();
        s.dedup();
        s
    };
    if scopes(cur) != scopes(new) {
        let shown = new.pointer("/spec/scopes").cloned().unwrap_or(Value::Null);
        causes.push(Cause::invalid(
            "spec.scopes",
            format!("Invalid value: {shown}: field is immutable"),
        ));
    }
}

/// REQUEST and LIMIT of `kubectl get quota`: `name: used/hard` for each resource of
/// `status.hard` in name order, the `limits.*` ones under LIMIT.
pub fn table_cell(kind: &str, col: &str, o: &Value) -> Option<Value> {
    if kind != "ResourceQuota" || !matches!(col, "Request" | "Limit") {
        return None;
    }
    let hard = yun_quota::parse_list(o.pointer("/status/hard")).unwrap_or_default();
    let used = yun_quota::parse_list(o.pointer("/status/used")).unwrap_or_default();
    let cells: Vec<String> = hard
        .iter()
        .filter(|(k, _)| (col == "Limit") == k.starts_with("limits."))
        .map(|(k, h)| {
            let u = used.get(k).copied().unwrap_or(Quantity::ZERO);
            format!("{k}: {u}/{h}")
        })
        .collect();
    Some(json!(cells.join(", ")))
}

/// A quota as stored, with what admission reads of it.
struct Quota {
    key: String,
    rev: i64,
    obj: Value,
    name: String,
    hard: ResourceList,
    used: ResourceList,
}

async fn quotas_of(api: &Api, ns: &str) -> ApiResult<Vec<Quota>> {
    let Some(res) = api.registry.find("", "v1", "resourcequotas") else {
        return Ok(Vec::new());
    };
    let page = api
        .store
        .range(RangeRequest {
            prefix: res.prefix(Some(ns)),
            ..Default::default()
        })
        .await?;
    Ok(page
        .kvs
        .iter()
        .filter_map(|kv| {
            let obj = crate::meta::decode(kv)?;
            Some(Quota {
                key: kv.key.clone(),
                rev: kv.mod_revision,
                name: crate::meta::str_at(&obj, "/metadata/name")?.to_string(),
                hard: yun_quota::parse_list(obj.pointer("/status/hard")).unwrap_or_default(),
                used: yun_quota::parse_list(obj.pointer("/status/used")).unwrap_or_default(),
                obj,
            })
        })
        .collect())
}

/// ResourceQuota admission of `obj` (named `name` in `ns`) being created (`old` None) or
/// updated from `old`: refuse it if a quota it counts toward would go over, else charge it to
/// them (not on a dry run).
pub async fn admit(
    api: &Api,
    res: &Resource,
    ns: &str,
    name: &str,
    obj: &Value,
    old: Option<&Value>,
    dry_run: bool,
) -> ApiResult<()> {
    let eval = Evaluator::for_resource(&res.group, &res.plural);
    if old.is_some() && !eval.charges_updates() {
        return Ok(());
    }
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut charged: Vec<String> = Vec::new();
    let mut last_conflict = None;
    for attempt in 0..CHARGE_TRIES {
        let quotas: Vec<Quota> = quotas_of(api, ns)
            .await?
            .into_iter()
            .filter(|q| !charged.contains(&q.name))
            .collect();
        if quotas.is_empty() {
            return Ok(());
        }
        if attempt == 0 && old.is_none() && api.store.get(&res.key(Some(ns), name)).await?.is_some()
        {
            // The create fails as AlreadyExists after this: charging it would leak until the
            // controller's next full recount.
            return Ok(());
        }
        let charges = decide(&res.qualified(), name, &eval, &quotas, obj, old, now)?;
        if dry_run {
            return Ok(());
        }
        let mut conflict = false;
        for (q, used) in charges {
            let mut updated = q.obj.clone();
            updated["status"]["used"] = yun_quota::to_json(&used);
            match crate::rest::put(api, &q.key, &updated, Some(q.rev)).await? {
                Some(_) => charged.push(q.name.clone()),
                None => {
                    conflict = true;
                    last_conflict = Some(q.name.clone());
                }
            }
        }
        if !conflict {
            return Ok(());
        }
    }
    Err(ApiError::conflict(
        "resourcequotas",
        last_conflict.as_deref().unwrap_or(""),
    ))
}

/// The ResourceQuota admission of an update or patch of the main resource of `t` (a status
/// write changes no usage); charged unless `dry`.
pub async fn admit_change(
    api: &Api,
    t: &crate::router::Target,
    cur: &Value,
    out: &Value,
    status: bool,
    dry: bool,
) -> ApiResult<()> {
    match (&t.ns, status) {
        (Some(ns), false) => admit(api, &t.res, ns, t.name(), out, Some(cur), dry).await,
        _ => Ok(()),
    }
}

/// The quotas `obj` is charged to and each one's usage after the charge; the 403 of the
/// first quota it breaks (`resource` and `name` as kube names the object in it).
fn decide<'q>(
    resource: &str,
    name: &str,
    eval: &Evaluator,
    quotas: &'q [Quota],
    obj: &Value,
    old: Option<&Value>,
    now: k8s_openapi::jiff::Timestamp,
) -> ApiResult<Vec<(&'q Quota, ResourceList)>> {
    let forbidden = |why: String| ApiError::forbidden(resource, name, &why);
    let mut counting = Vec::new();
    for q in quotas {
        let spec = q.obj.get("spec").cloned().unwrap_or(Value::Null);
        if !yun_quota::matches(eval, &q.hard, &spec, obj) {
            continue;
        }
        let restricted = eval.matching(q.hard.keys());
        eval.constraints(&restricted, obj)
            .map_err(|e| forbidden(format!("failed quota: {}: {e}", q.name)))?;
        // A quota the controller has not measured yet cannot be charged against.
        if restricted.iter().any(|r| !q.used.contains_key(r)) {
            return Err(forbidden(format!(
                "status unknown for quota: {}, resources: {}",
                q.name,
                restricted.join(",")
            )));
        }
        let counted_before = old.is_some_and(|o| yun_quota::matches(eval, &q.hard, &spec, o));
        counting.push((q, counted_before));
    }
    if counting.is_empty() {
        return Ok(Vec::new());
    }
    let usage = eval.usage(obj, now);
    let negative: Vec<&String> = usage
        .iter()
        .filter(|(_, q)| q.nanos < 0)
        .map(|(k, _)| k)
        .collect();
    if !negative.is_empty() {
        let list: Vec<&str> = negative.iter().map(|s| s.as_str()).collect();
        return Err(forbidden(format!(
            "quota usage is negative for resource(s): {}",
            list.join(",")
        )));
    }
    let mut out = Vec::new();
    for (q, counted_before) in counting {
        let delta = match old {
            Some(o) if counted_before => yun_quota::sub_non_negative(&usage, &eval.usage(o, now)),
            _ => usage.clone(),
        };
        let requested: ResourceList = yun_quota::mask(&delta, q.hard.keys())
            .into_iter()
            .filter(|(_, v)| !v.is_zero())
            .collect();
        if requested.is_empty() {
            continue;
        }
        let new_used = yun_quota::add(&q.used, &requested);
        let over = yun_quota::exceeded(&yun_quota::mask(&new_used, requested.keys()), &q.hard);
        if !over.is_empty() {
            return Err(forbidden(format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                q.name,
                yun_quota::pretty(&yun_quota::mask(&requested, &over)),
                yun_quota::pretty(&yun_quota::mask(&q.used, &over)),
                yun_quota::pretty(&yun_quota::mask(&q.hard, &over)),
            )));
        }
        out.push((q, new_used));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(name: &str, hard: Value, used: Value) -> Quota {
        let obj = json!({"metadata": {"name": name}, "spec": {"hard": hard.clone()},
                         "status": {"hard": hard, "used": used}});
        Quota {
            key: format!("/q/{name}"),
            rev: 1,
            name: name.into(),
            hard: yun_quota::parse_list(obj.pointer("/status/hard")).unwrap(),
            used: yun_quota::parse_list(obj.pointer("/status/used")).unwrap(),
            obj,
        }
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "resources": resources}]}, "status": {"phase": "Pending"}})
    }

    fn message(r: ApiResult<Vec<(&Quota, ResourceList)>>) -> String {
        r.err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn refusals_read_like_kubes() {
        let now = k8s_openapi::jiff::Timestamp::now();
        let compute = quota(
            "compute",
            json!({"limits.cpu": "2", "pods": "10"}),
            json!({"limits.cpu": "1", "pods": "1"}),
        );
        let quotas = [compute];
        let big = pod(json!({"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}));
        let e = Evaluator::Pods;
        assert_eq!(
            message(decide("pods", "p", &e, &quotas, &big, None, now)),
            r#"pods "p" is forbidden: exceeded quota: compute, requested: limits.cpu=2, used: limits.cpu=1, limited: limits.cpu=2"#
        );
        let bare = pod(json!({}));
        assert_eq!(
            message(decide("pods", "p", &e, &quotas, &bare, None, now)),
            r#"pods "p" is forbidden: failed quota: compute: must specify limits.cpu for: c"#
        );
        let small = pod(json!({"limits": {"cpu": "500m"}}));
        let charges = decide("pods", "p", &e, &quotas, &small, None, now).unwrap();
        assert_eq!(
            yun_quota::to_json(&charges[0].1),
            json!({"limits.cpu": "1500m", "pods": "2"})
        );
        let unmeasured = [quota("fresh", json!({"pods": "1"}), json!({}))];
        assert_eq!(
            message(decide("pods", "p", &e, &unmeasured, &small, None, now)),
            r#"pods "p" is forbidden: status unknown for quota: fresh, resources: pods"#
        );
    }

    #[test]
    fn a_service_update_is_charged_what_it_adds() {
        let now = k8s_openapi::jiff::Timestamp::now();
        let q = [quota(
            "svc",
            json!({"services.nodeports": "2", "services": "5"}),
            json!({"services.nodeports": "1", "services": "1"}),
        )];
        let before = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        let after = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
        let e = Evaluator::Services;
        assert_eq!(
            message(decide("services", "s", &e, &q, &after, Some(&before), now)),
            r#"services "s" is forbidden: exceeded quota: svc, requested: services.nodeports=2, used: services.nodeports=1, limited: services.nodeports=2"#
        );
    }

    #[test]
    fn invalid_quotas_name_their_fields() {
        let mut causes = Vec::new();
        validate(
            &json!({"spec": {"hard": {"pods": "1.5", "cpu": "-1", "memory": "lots", "foo": "1"},
                             "scopes": ["BestEffort", "Sometimes"]}}),
            &mut causes,
        );
        let shown: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert!(
            shown.contains(
                &r#"spec.hard[pods]: Invalid value: "1500m": must be an integer"#.to_string()
            ),
            "{shown:?}"
        );
        assert!(
            shown.contains(
                &r#"spec.hard[cpu]: Invalid value: "-1": must be greater than or equal to 0"#
                    .to_string()
            ),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|s| s
                .starts_with(r#"spec.hard[memory]: Invalid value: "lots": quantities must match"#)),
            "{shown:?}"
        );
        assert!(
            shown.contains(
                &r#"spec.hard[foo]: Invalid value: "foo": must be a standard resource for quota"#
                    .to_string()
            ),
            "{shown:?}"
        );
        assert!(
            shown.contains(
                &r#"spec.scopes: Invalid value: ["BestEffort","Sometimes"]: unsupported scope"#
                    .to_string()
            ),
            "{shown:?}"
        );
        assert!(shown.contains(&r#"spec.scopes: Invalid value: ["BestEffort","Sometimes"]: unsupported scope applied to resource"#.to_string()), "{shown:?}");
        let mut ok = Vec::new();
        validate(
            &json!({"spec": {"hard": {"pods": "2", "requests.cpu": "1", "count/deployments.apps": "3"},
                             "scopeSelector": {"matchExpressions": [
                                {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}}),
            &mut ok,
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn columns_split_requests_from_limits() {
        let q = json!({"status": {"hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "1Gi"},
                                  "used": {"pods": "1", "requests.cpu": "100m"}}});
        assert_eq!(
            table_cell("ResourceQuota", "Request", &q),
            Some(json!("pods: 1/10, requests.cpu: 100m/1"))
        );
        assert_eq!(
            table_cell("ResourceQuota", "Limit", &q),
            Some(json!("limits.memory: 0/1Gi"))
        );
    }
}
