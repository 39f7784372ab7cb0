//! A Job's pod failure policy: what a rule says of a failed pod.

use k8s_openapi::api::batch::v1::Job;

use super::pods::name;
use crate::cached::Pod;

/// What the pod failure policy says of a failed pod.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    FailJob(String),
    FailIndex,
    Ignore,
    Count,
}

pub(super) fn failure_verdict(job: &Job, p: &Pod) -> Verdict {
    let Some(policy) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return Verdict::Count;
    };
    let statuses = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            for c in statuses.into_iter().flatten() {
                let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                    continue;
                };
                let code = code.exit_code;
                if code == 0 || req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                    continue;
                }
                let listed = req.values.contains(&code);
                if (req.operator == "In") == listed {
                    matched = Some(format!(
                        "Container {} for pod {}/{} failed with exit code {code} matching {} rule at index {i}",
                        c.name,
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        name(p),
                        rule.action
                    ));
                    break;
                }
            }
        }
        for req in rule.on_pod_conditions.iter().flatten() {
            let want = if req.status.is_empty() {
                "True"
            } else {
                req.status.as_str()
            };
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            if conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == req.type_ && c.status == want)
            {
                matched = Some(format!(
                    "Pod {}/{} has condition {} matching {} rule at index {i}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    name(p),
                    req.type_,
                    rule.action
                ));
            }
        }
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(message),
                "FailIndex" => Verdict::FailIndex,
                "Ignore" => Verdict::Ignore,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}
