//! The quota controller's decisions (kube's resource quota controller): which kinds a quota
//! is measured from, its usage from the objects of its namespace, and the status it should
//! have — `hard` a copy of `spec.hard`, `used` what exists now for every resource a kind
//! answers for (the rest keep what admission charged), written only when it changed.

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use yun_quota::{Evaluator, Quantity, ResourceList};

/// The kinds whose objects `hard`'s resources are measured from, one evaluator each.
pub fn evaluators(hard: &ResourceList) -> Vec<Evaluator> {
    let mut out = vec![Evaluator::Pods, Evaluator::Services, Evaluator::Claims];
    for name in hard.keys() {
        let (group, plural) = match name.strip_prefix("count/") {
            Some(rest) => match rest.split_once('.') {
                Some((plural, group)) => (group, plural),
                None => ("", rest),
            },
            None if matches!(
                name.as_str(),
                "configmaps" | "secrets" | "resourcequotas" | "replicationcontrollers"
            ) =>
            {
                ("", name.as_str())
            }
            None => continue,
        };
        let e = Evaluator::for_resource(group, plural);
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out.retain(|e| !e.matching(hard.keys()).is_empty());
    out
}

/// A quota's usage from one kind's `objects` (all of its namespace): zero for each resource
/// the kind answers for, plus what each object in the quota's scopes costs.
pub fn measure(
    eval: &Evaluator,
    hard: &ResourceList,
    spec: &Value,
    objects: &[Value],
    now: Timestamp,
) -> ResourceList {
    let names = eval.matching(hard.keys());
    let mut used: ResourceList = names.iter().map(|n| (n.clone(), Quantity::ZERO)).collect();
    let scopes = yun_quota::scope_requirements(spec);
    for o in objects {
        if scopes.iter().all(|r| eval.in_scope(r, o)) {
            used = yun_quota::add(&used, &eval.usage(o, now));
        }
    }
    yun_quota::mask(&used, &names)
}

/// When to measure again without an event: just after the first of `pods` (being deleted,
/// still charged) outlives its grace period and stops costing anything.
pub fn recheck(pods: &[Value], now: Timestamp) -> Option<std::time::Duration> {
    pods.iter()
        .filter(|p| yun_quota::charged(p, now))
        .filter_map(yun_quota::charge_ends)
        .min()
        .map(|end| std::time::Duration::from_secs((end - now.as_second()).max(0) as u64 + 1))
}

/// The status a quota should have after measuring `measured` (the resources that could be
/// measured; others keep their last `used`), or None when its status already says so.
pub fn status(quota: &Value, measured: &ResourceList) -> Option<Value> {
    let hard = yun_quota::parse_list(quota.pointer("/spec/hard")).unwrap_or_default();
    let old_hard = yun_quota::parse_list(quota.pointer("/status/hard")).unwrap_or_default();
    let old_used = yun_quota::parse_list(quota.pointer("/status/used")).unwrap_or_default();
    let mut used = old_used.clone();
    used.extend(measured.iter().map(|(k, q)| (k.clone(), *q)));
    let used = yun_quota::mask(&used, hard.keys());
    if yun_quota::equal(&hard, &old_hard) && yun_quota::equal(&used, &old_used) {
        return None;
    }
    // `hard` exactly as the spec writes it; `used` in canonical form.
    let spec_hard = quota
        .pointer("/spec/hard")
        .cloned()
        .unwrap_or_else(|| json!({}));
    Some(json!({"hard": spec_hard, "used": yun_quota::to_json(&used)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: Value) -> ResourceList {
        yun_quota::parse_list(Some(&v)).unwrap()
    }

    #[test]
    fn a_quota_is_measured_from_the_kinds_it_names() {
        let hard = list(
            json!({"pods": "2", "requests.cpu": "1", "count/configmaps": "3",
                               "count/deployments.apps": "1", "secrets": "4"}),
        );
        let kinds: Vec<(String, String)> = evaluators(&hard)
            .iter()
            .map(|e| {
                let (g, p) = e.resource();
                (g.to_string(), p.to_string())
            })
            .collect();
        let want = [
            ("", "pods"),
            ("", "configmaps"),
            ("apps", "deployments"),
            ("", "secrets"),
        ];
        assert_eq!(
            kinds,
            want.map(|(g, p)| (g.to_string(), p.to_string())).to_vec()
        );
    }

    #[test]
    fn usage_counts_what_exists_in_scope_and_status_changes_only_when_it_moves() {
        let now = Timestamp::now();
        let hard = list(json!({"pods": "2", "requests.cpu": "1", "limits.memory": "1Gi"}));
        let running = json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}}]}, "status": {"phase": "Running"}});
        let done = json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "500m"}}}]}, "status": {"phase": "Succeeded"}});
        let used = measure(&Evaluator::Pods, &hard, &json!({}), &[running, done], now);
        assert_eq!(
            yun_quota::to_json(&used),
            json!({"limits.memory": "64Mi", "pods": "1", "requests.cpu": "100m"})
        );
        let mut quota =
            json!({"spec": {"hard": {"pods": "2", "requests.cpu": "1", "limits.memory": "1Gi"}}});
        let new = status(&quota, &used).expect("a new quota gets its status");
        assert_eq!(new["hard"], quota["spec"]["hard"]);
        assert_eq!(new["used"]["pods"], "1");
        quota["status"] = new;
        let deleting = json!({"metadata": {"deletionTimestamp": now.to_string(),
            "deletionGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        let wait = recheck(&[deleting], now).unwrap();
        assert!((30..=32).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(status(&quota, &used), None, "nothing moved: no write");
        // A resource no kind measured keeps what admission charged.
        quota["spec"]["hard"]["requests.example.com/gpu"] = json!("4");
        quota["status"]["used"]["requests.example.com/gpu"] = json!("1");
        let next = status(&quota, &used).unwrap();
        assert_eq!(next["used"]["requests.example.com/gpu"], "1");
    }
}
