//! POST pods/NAME/eviction: delete a pod only if its PodDisruptionBudget allows it.
//!
//! The budget's `status.disruptionsAllowed` is the allowance the disruption controller last
//! computed. An eviction spends one unit of it with a compare-and-swap write of the budget
//! (naming the pod in `status.disruptedPods`, so the controller does not count it healthy
//! before it is gone), and only then deletes the pod: of two evictions racing for the last
//! unit, one write loses, reads the budget again, finds nothing left and gets the 429.

use std::sync::Arc;

use axum::response::Response;
use serde_json::{json, Value};

use super::{decode, get_kv, parse_body, put};
use crate::error::{ApiError, ApiResult};
use crate::meta::{now_rfc3339, str_at};
use crate::resources::Resource;
use crate::router::{Req, Target};
use crate::Api;

/// The Eviction versions accepted (kubectl before 1.22 sends v1beta1).
const EVICTION_VERSIONS: [&str; 2] = ["policy/v1", "policy/v1beta1"];
/// Reads of the pod and its budget before giving up on a contended eviction.
const ATTEMPTS: usize = 8;
/// Pods named in a budget's disruptedPods that the controller has not seen go yet; beyond
/// this many, evictions stop (as kube's) until it catches up.
const MAX_DISRUPTED: usize = 2000;
/// What kube answers when a budget would be broken; kubectl drain retries on it.
pub const BUDGET_MESSAGE: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

pub async fn evict(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let body = parse_body(req)?;
    let opts = delete_options(t, req, &body)?;
    let ns = t.ns.clone().unwrap_or_default();
    let pdb_res = api
        .registry
        .find(crate::policy::GROUP, "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("PodDisruptionBudgets are not served"))?;
    for _ in 0..ATTEMPTS {
        let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
        let pod = decode(&kv)?;
        let mut opts = opts.clone();
        let verdict = decide(api, &pdb_res, &ns, &pod, is_dry_run(&opts)).await?;
        let pinned = matches!(verdict, Verdict::DeleteIfUnchanged) && body_rv(&body).is_none();
        if pinned {
            // Let through because the pod is not ready: only while it still is not (the
            // same version), or a pod that turned ready would go without the budget's say.
            if !opts.get("preconditions").is_some_and(Value::is_object) {
                opts["preconditions"] = json!({});
            }
            opts["preconditions"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        }
        let deleted = async {
            if !is_dry_run(&opts) {
                mark_target(api, t, &mut opts).await?;
            }
            super::write::delete_object(api, &t.res, Some(&ns), t.name(), &opts).await
        };
        match deleted.await {
            Ok(_) => {
                return Ok(crate::proto::respond(
                    req.output,
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 201}),
                ))
            }
            // The pod changed under an unhealthy-pod verdict: decide again on what it is now
            // (a verdict that spent the budget is never retried, or it would spend twice).
            Err(e) if e.code == 409 && pinned => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict("pods", t.name()))
}

/// Mark the pod `DisruptionTarget` before it is deleted, as kube-apiserver does, so its
/// controller and whoever reads its last status see why it went. The deleteOptions'
/// preconditions are checked against the pod as it is now; a resourceVersion precondition
/// moves to the version this write makes (the write is ours, not a change by someone else).
async fn mark_target(api: &Api, t: &Target, opts: &mut Value) -> ApiResult<()> {
    let key = t.key();
    for _ in 0..ATTEMPTS {
        let kv = get_kv(api, &t.res, &key, t.name()).await?;
        let mut pod = decode(&kv)?;
        let uid = str_at(opts, "/preconditions/uid").filter(|u| !u.is_empty());
        let rv = str_at(opts, "/preconditions/resourceVersion").filter(|r| !r.is_empty());
        if uid.is_some_and(|u| Some(u) != str_at(&pod, "/metadata/uid"))
            || rv.is_some_and(|r| r != kv.mod_revision.to_string())
        {
            return Err(ApiError::conflict("pods", t.name()));
        }
        set_disruption_target(&mut pod);
        if let Some(stored) = put(api, &key, &pod, Some(kv.mod_revision)).await? {
            if rv.is_some() {
                let new_rv = str_at(&stored, "/metadata/resourceVersion").unwrap_or("");
                opts["preconditions"]["resourceVersion"] = json!(new_rv);
            }
            return Ok(());
        }
    }
    Err(ApiError::conflict("pods", t.name()))
}

/// Set (or refresh) the pod's `DisruptionTarget` condition: True, by the Eviction API.
fn set_disruption_target(pod: &mut Value) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let status = &mut pod["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    let old = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionTarget"));
    let since = old
        .map(|i| &conditions[i])
        .filter(|c| c.get("status").and_then(Value::as_str) == Some("True"))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now_rfc3339()));
    let cond = json!({"type": "DisruptionTarget", "status": "True",
                      "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting",
                      "lastProbeTime": null, "lastTransitionTime": since});
    match old {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
}

/// The Eviction's own checks (400 for a body that names another pod or namespace), and the
/// DeleteOptions the pod is deleted with.
fn delete_options(t: &Target, req: &Req, body: &Value) -> ApiResult<Value> {
    let av = str_at(body, "/apiVersion").unwrap_or("");
    let kind = str_at(body, "/kind").unwrap_or("");
    if !EVICTION_VERSIONS.contains(&av) || kind != "Eviction" {
        return Err(ApiError::bad_request(format!(
            "the body must be a policy/v1 Eviction, not {av} {kind}"
        )));
    }
    let name = str_at(body, "/metadata/name").unwrap_or("");
    if !name.is_empty() && name != t.name() {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let ns = str_at(body, "/metadata/namespace").unwrap_or("");
    let want = t.ns.as_deref().unwrap_or("");
    if !ns.is_empty() && ns != want {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({want})"
        )));
    }
    let mut opts = body
        .get("deleteOptions")
        .filter(|o| o.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    if super::options::dry_run(req)? {
        opts["dryRun"] = json!(["All"]);
    }
    Ok(opts)
}

fn body_rv(body: &Value) -> Option<&str> {
    str_at(body, "/deleteOptions/preconditions/resourceVersion")
}

fn is_dry_run(opts: &Value) -> bool {
    opts.get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

enum Verdict {
    /// Delete as asked.
    Delete,
    /// Delete only if the pod is still the version decided on.
    DeleteIfUnchanged,
}

/// Whether `pod` may go, spending a unit of its budget if that is what lets it go.
async fn decide(
    api: &Api,
    pdb_res: &Resource,
    ns: &str,
    pod: &Value,
    dry_run: bool,
) -> ApiResult<Verdict> {
    // A pod that is finished, not started or already going disrupts nothing more.
    let phase = str_at(pod, "/status/phase").unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
    {
        return Ok(Verdict::Delete);
    }
    let labels = pod
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let list = api
        .store
        .range(yun_store::RangeRequest {
            prefix: pdb_res.prefix(Some(ns)),
            ..Default::default()
        })
        .await?;
    let mut budgets: Vec<(String, i64)> = Vec::new();
    for kv in &list.kvs {
        let pdb = decode(kv)?;
        if crate::policy::selects(&pdb, &labels) {
            let name = str_at(&pdb, "/metadata/name").unwrap_or("").to_string();
            budgets.push((name, kv.mod_revision));
        }
    }
    let name = match budgets.as_slice() {
        [] => return Ok(Verdict::Delete),
        [(name, _)] => name.clone(),
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    let pod_name = str_at(pod, "/metadata/name").unwrap_or("").to_string();
    let key = pdb_res.key(Some(ns), &name);
    for _ in 0..ATTEMPTS {
        let Some(kv) = api.store.get(&key).await? else {
            // The budget went meanwhile: nothing guards the pod any more.
            return Ok(Verdict::Delete);
        };
        let mut pdb = decode(&kv)?;
        let unhealthy = !is_ready(pod);
        let status = pdb.get("status").cloned().unwrap_or_else(|| json!({}));
        let count = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
        if unhealthy {
            let policy = str_at(&pdb, "/spec/unhealthyPodEvictionPolicy");
            let always = policy == Some("AlwaysAllow");
            // IfHealthyBudget: a not-ready pod may go while the budget is met without it.
            let budget_met =
                count("currentHealthy") >= count("desiredHealthy") && count("desiredHealthy") > 0;
            if always || budget_met {
                return Ok(Verdict::DeleteIfUnchanged);
            }
        }
        spend(&mut pdb, &name, &pod_name)?;
        if dry_run {
            return Ok(Verdict::Delete);
        }
        if put(api, &key, &pdb, Some(kv.mod_revision)).await?.is_some() {
            return Ok(Verdict::Delete);
        }
    }
    Err(ApiError::conflict("poddisruptionbudgets.policy", &name))
}

/// Take one disruption from the budget and record the pod as disrupted, or the 429 (or 403)
/// kube answers when none is left.
fn spend(pdb: &mut Value, name: &str, pod: &str) -> ApiResult<()> {
    let generation = pdb
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let status = pdb.get("status").cloned().unwrap_or_else(|| json!({}));
    let count = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
    if count("observedGeneration") < generation {
        // The controller has not looked at this version of the budget yet.
        return Err(too_many(
            format!("The disruption budget {name} is still being processed by the server."),
            10,
        ));
    }
    let allowed = count("disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden(
            "poddisruptionbudgets.policy",
            name,
            "pdb disruptions allowed is negative",
        ));
    }
    let disrupted = status
        .get("disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED {
        return Err(ApiError::forbidden(
            "poddisruptionbudgets.policy",
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many(
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                count("desiredHealthy"),
                count("currentHealthy")
            ),
            0,
        ));
    }
    let status = &mut pdb["status"];
    status["disruptionsAllowed"] = json!(allowed - 1);
    if !status.get("disruptedPods").is_some_and(Value::is_object) {
        status["disruptedPods"] = json!({});
    }
    status["disruptedPods"][pod] = json!(now_rfc3339());
    if allowed == 1 {
        set_allowed_condition(status, generation, false);
    }
    Ok(())
}

/// The `DisruptionAllowed` condition: True/SufficientPods or False/InsufficientPods, its
/// transition time kept while the status stays.
pub fn set_allowed_condition(status: &mut Value, generation: i64, allowed: bool) {
    let (value, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let old = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionAllowed"));
    let since = old
        .map(|i| &conditions[i])
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(value))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now_rfc3339()));
    let cond = json!({"type": "DisruptionAllowed", "status": value, "reason": reason,
                      "message": "", "observedGeneration": generation,
                      "lastTransitionTime": since});
    match old {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
    status["conditions"] = Value::Array(conditions);
}

fn too_many(cause: String, retry_after: i64) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", BUDGET_MESSAGE);
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after > 0 {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    e.details = Some(details);
    e
}

/// The pod's Ready condition is True.
fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "b", "generation": 2},
               "status": {"observedGeneration": observed, "disruptionsAllowed": allowed,
                          "currentHealthy": 2, "desiredHealthy": 1}})
    }

    #[test]
    fn spending_the_last_disruption_records_the_pod_and_flips_the_condition() {
        let mut b = pdb(1, 2);
        spend(&mut b, "b", "web-1").unwrap();
        assert_eq!(b["status"]["disruptionsAllowed"], 0);
        assert!(b["status"]["disruptedPods"]["web-1"].is_string());
        assert_eq!(b["status"]["conditions"][0]["reason"], "InsufficientPods");
        let e = spend(&mut b, "b", "web-2").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (429, BUDGET_MESSAGE));
        let cause = &e.details.unwrap()["causes"][0];
        assert_eq!(cause["reason"], "DisruptionBudget");
        assert_eq!(
            cause["message"],
            "The disruption budget b needs 1 healthy pods and has 2 currently"
        );
    }

    #[test]
    fn a_budget_the_controller_has_not_seen_is_429_with_retry() {
        let e = spend(&mut pdb(5, 1), "b", "p").unwrap_err();
        assert_eq!(e.code, 429);
        assert_eq!(e.details.unwrap()["retryAfterSeconds"], 10);
        assert_eq!(spend(&mut pdb(-1, 2), "b", "p").unwrap_err().code, 403);
    }

    #[test]
    fn an_eviction_must_name_the_pod_and_namespace_of_its_url() {
        let pods = crate::resources::Registry::new()
            .find("", "v1", "pods")
            .unwrap();
        let t = Target {
            res: pods,
            ns: Some("default".into()),
            name: Some("web".into()),
            sub: Some("eviction".into()),
        };
        let req = Req::for_test(&[], &[]);
        let eviction = |av: &str, name: &str, ns: &str| {
            json!({"apiVersion": av, "kind": "Eviction",
                   "metadata": {"name": name, "namespace": ns},
                   "deleteOptions": {"gracePeriodSeconds": 0}})
        };
        let opts = delete_options(&t, &req, &eviction("policy/v1", "web", "default")).unwrap();
        assert_eq!(opts, json!({"gracePeriodSeconds": 0}));
        assert!(delete_options(&t, &req, &eviction("policy/v1beta1", "", "")).is_ok());
        for (av, name, ns, why) in [
            ("policy/v1", "other", "default", "name in URL"),
            (
                "policy/v1",
                "web",
                "kube-system",
                "namespace of the provided object",
            ),
            ("v1", "web", "default", "policy/v1 Eviction"),
        ] {
            let e = delete_options(&t, &req, &eviction(av, name, ns)).unwrap_err();
            assert!(e.code == 400 && e.message.contains(why), "{e:?}");
        }
    }

    #[test]
    fn an_evicted_pod_is_marked_as_a_disruption_target() {
        let mut pod = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        set_disruption_target(&mut pod);
        set_disruption_target(&mut pod);
        let conditions = pod["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1]["reason"], "EvictionByEvictionAPI");
        assert_eq!(conditions[1]["status"], "True");
        let mut bare = json!({});
        set_disruption_target(&mut bare);
        assert_eq!(bare["status"]["conditions"][0]["type"], "DisruptionTarget");
    }

    #[test]
    fn the_condition_keeps_its_transition_time_while_unchanged() {
        let mut status = json!({"conditions": [{"type": "DisruptionAllowed", "status": "True",
            "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
        set_allowed_condition(&mut status, 3, true);
        let c = &status["conditions"][0];
        assert_eq!(c["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(c["observedGeneration"], 3);
        set_allowed_condition(&mut status, 3, false);
        assert_ne!(
            status["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }
}
