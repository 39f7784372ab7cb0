//! `batch/v1` Jobs and CronJobs at write time: the rules of kube-apiserver's `ValidateJob`,
//! `ValidateCronJob` and their update checks, with Kubernetes' field paths and messages, and
//! the generated selector a Job keeps across updates.

use serde_json::{json, Value};

use crate::error::Cause;
use crate::selectors::{label_selector_matches, label_selector_string};
use crate::validation::check_containers;

/// The label carrying a Job's uid on its pods; the generated selector selects it.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// A CronJob's name plus the 11-character suffix of its Jobs must stay a 63-character label.
const CRONJOB_NAME_MAX: usize = 52;

fn int(obj: &Value, pointer: &str) -> Option<i64> {
    obj.pointer(pointer).and_then(Value::as_i64)
}

/// `base.field` (e.g. `spec.parallelism`), when set, must not be negative (kube's message).
pub(crate) fn non_negative(obj: &Value, base: &str, field: &str, causes: &mut Vec<Cause>) {
    let pointer = format!("/{}/{field}", base.replace('.', "/"));
    if let Some(n) = int(obj, &pointer).filter(|n| *n < 0) {
        causes.push(Cause::invalid(
            &format!("{base}.{field}"),
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
}

fn forbidden(field: &str, why: &str) -> Cause {
    Cause {
        field: field.into(),
        kind: "FieldValueForbidden",
        message: format!("Forbidden: {why}"),
    }
}

/// A Job spec at `base` (`spec`, or `spec.jobTemplate.spec` in a CronJob). `generated` is
/// the uid a non-manual selector must select (None in a CronJob's template, which has none yet).
fn job_spec(obj: &Value, base: &str, generated: Option<&str>, causes: &mut Vec<Cause>) {
    let spec = obj
        .pointer(&format!("/{}", base.replace('.', "/")))
        .cloned()
        .unwrap_or(Value::Null);
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        non_negative(obj, base, f, causes);
    }
    let manual = spec.get("manualSelector") == Some(&Value::Bool(true));
    let labels = spec
        .pointer("/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    match spec.get("selector").filter(|s| s.is_object()) {
        None if generated.is_some() => causes.push(Cause::required(&format!("{base}.selector"))),
        None => {}
        Some(sel) => {
            if !label_selector_matches(sel, &labels) {
                causes.push(Cause::invalid(
                    &format!("{base}.template.metadata.labels"),
                    format!("Invalid value: {labels}: `selector` does not match template `labels`"),
                ));
            }
            if let (Some(uid), false) = (generated, manual) {
                let own = sel.pointer(&format!(
                    "/matchLabels/{}",
                    CONTROLLER_UID.replace('/', "~1")
                ));
                if own.and_then(Value::as_str) != Some(uid) {
                    causes.push(Cause::invalid(
                        &format!("{base}.selector"),
                        format!(
                            "Invalid value: {:?}: `selector` not auto-generated",
                            label_selector_string(sel)
                        ),
                    ));
                }
            }
        }
    }
    let restart = spec.pointer("/template/spec/restartPolicy");
    let restart_field = format!("{base}.template.spec.restartPolicy");
    match restart.and_then(Value::as_str) {
        Some("OnFailure") | Some("Never") => {}
        None | Some("") => causes.push(Cause {
            field: restart_field.clone(),
            kind: "FieldValueRequired",
            message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
        }),
        Some(_) => causes.push(Cause::unsupported(
            &restart_field,
            restart.unwrap_or(&Value::Null),
            &["OnFailure", "Never"],
        )),
    }
    check_containers(obj, &format!("{base}.template.spec.containers"), causes);
    let mode = spec.get("completionMode");
    let indexed = mode.and_then(Value::as_str) == Some("Indexed");
    if let Some(m) = mode.filter(|m| !m.is_null()) {
        if !matches!(m.as_str(), Some("NonIndexed") | Some("Indexed")) {
            causes.push(Cause::unsupported(
                &format!("{base}.completionMode"),
                m,
                &["NonIndexed", "Indexed"],
            ));
        }
    }
    let completions = spec.get("completions").and_then(Value::as_i64);
    if indexed && completions.is_none() {
        causes.push(Cause {
            field: format!("{base}.completions"),
            kind: "FieldValueRequired",
            message: "Required value: when completion mode is Indexed".into(),
        });
    }
    let per_index = spec.get("backoffLimitPerIndex").filter(|v| !v.is_null());
    if per_index.is_some() && !indexed {
        causes.push(forbidden(
            &format!("{base}.backoffLimitPerIndex"),
            "requires indexed completion mode",
        ));
    }
    if let Some(max) = spec.get("maxFailedIndexes").and_then(Value::as_i64) {
        if per_index.is_none() {
            causes.push(Cause {
                field: format!("{base}.backoffLimitPerIndex"),
                kind: "FieldValueRequired",
                message: "Required value: when maxFailedIndexes is specified".into(),
            });
        }
        if let Some(c) = completions.filter(|c| max > *c) {
            causes.push(Cause::invalid(
                &format!("{base}.maxFailedIndexes"),
                format!("Invalid value: {max}: must be less than or equal to completions ({c})"),
            ));
        }
    }
    if let Some(policy) = spec.get("podFailurePolicy").filter(|v| !v.is_null()) {
        failure_policy(policy, &format!("{base}.podFailurePolicy"), causes);
        if restart.and_then(Value::as_str) != Some("Never") {
            causes.push(Cause::invalid(
                &restart_field,
                "Invalid value: only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
    }
}

fn failure_policy(policy: &Value, path: &str, causes: &mut Vec<Cause>) {
    let rules = policy.get("rules").and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = format!("{path}.rules[{i}]");
        let action = rule.get("action").cloned().unwrap_or(Value::Null);
        if !matches!(
            action.as_str(),
            Some("FailJob") | Some("Ignore") | Some("Count") | Some("FailIndex")
        ) {
            causes.push(Cause::unsupported(
                &format!("{at}.action"),
                &action,
                &["Count", "FailIndex", "FailJob", "Ignore"],
            ));
        }
        let codes = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conditions = rule.get("onPodConditions").filter(|v| !v.is_null());
        match (codes, conditions) {
            (Some(_), Some(_)) => causes.push(Cause::invalid(
                &at,
                "Invalid value: specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (None, None) => causes.push(Cause::invalid(
                &at,
                "Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
        if let Some(codes) = codes {
            let op = codes.get("operator").cloned().unwrap_or(Value::Null);
            if !matches!(op.as_str(), Some("In") | Some("NotIn")) {
                causes.push(Cause::unsupported(
                    &format!("{at}.onExitCodes.operator"),
                    &op,
                    &["In", "NotIn"],
                ));
            }
            let values = codes.get("values").and_then(Value::as_array);
            if values.is_none_or(|v| v.is_empty()) {
                causes.push(Cause::invalid(
                    &format!("{at}.onExitCodes.values"),
                    "Invalid value: []: at least one value is required",
                ));
            }
            if op == "In" && values.into_iter().flatten().any(|v| v == 0) {
                causes.push(Cause::invalid(
                    &format!("{at}.onExitCodes.values"),
                    "Invalid value: 0: must not be 0 for the In operator",
                ));
            }
        }
    }
}

/// A Job about to be written.
pub fn validate_job(obj: &Value, causes: &mut Vec<Cause>) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    job_spec(obj, "spec", Some(uid), causes);
}

/// A CronJob about to be written.
pub fn validate_cronjob(obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.len() > CRONJOB_NAME_MAX {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: must be no more than {CRONJOB_NAME_MAX} characters"),
        ));
    }
    match obj.pointer("/spec/schedule").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.schedule")),
        Some(s) => {
            if let Err(e) = s.parse::<yun_cron::Schedule>() {
                causes.push(Cause::invalid(
                    "spec.schedule",
                    format!("Invalid value: {s:?}: {e}"),
                ));
            }
        }
    }
    if let Some(tz) = obj.pointer("/spec/timeZone").and_then(Value::as_str) {
        if let Err(e) = yun_cron::time_zone(tz) {
            causes.push(Cause::invalid(
                "spec.timeZone",
                format!("Invalid value: {tz:?}: {e}"),
            ));
        }
    }
    if let Some(p) = obj
        .pointer("/spec/concurrencyPolicy")
        .filter(|v| !v.is_null())
    {
        if !matches!(p.as_str(), Some("Allow") | Some("Forbid") | Some("Replace")) {
            causes.push(Cause::unsupported(
                "spec.concurrencyPolicy",
                p,
                &["Allow", "Forbid", "Replace"],
            ));
        }
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(obj, "spec", f, causes);
    }
    job_spec(obj, "spec.jobTemplate.spec", None, causes);
}

/// On update, before defaulting: a client that leaves out the generated selector and labels
/// (`kubectl replace` of the original manifest) keeps them, as they are immutable.
pub fn keep_generated(cur: &Value, new: &mut Value) {
    if new.pointer("/spec/selector").is_none_or(Value::is_null) {
        if let (Some(sel), Some(spec)) = (
            cur.pointer("/spec/selector").cloned(),
            new.get_mut("spec").and_then(Value::as_object_mut),
        ) {
            spec.insert("selector".into(), sel);
        }
    }
    if new
        .pointer("/spec/manualSelector")
        .is_none_or(Value::is_null)
    {
        if let (Some(m), Some(spec)) = (
            cur.pointer("/spec/manualSelector").cloned(),
            new.get_mut("spec").and_then(Value::as_object_mut),
        ) {
            spec.insert("manualSelector".into(), m);
        }
    }
    let cur_labels = cur.pointer("/spec/template/metadata/labels").cloned();
    if let (Some(Value::Object(cur_labels)), Some(tmpl)) =
        (cur_labels, new.pointer_mut("/spec/template"))
    {
        if !tmpl.get("metadata").is_some_and(Value::is_object) {
            tmpl["metadata"] = json!({});
        }
        if !tmpl["metadata"].get("labels").is_some_and(Value::is_object) {
            tmpl["metadata"]["labels"] = json!({});
        }
        for key in [
            CONTROLLER_UID,
            "controller-uid",
            "batch.kubernetes.io/job-name",
            "job-name",
        ] {
            if let Some(v) = cur_labels.get(key) {
                if tmpl["metadata"]["labels"].get(key).is_none() {
                    tmpl["metadata"]["labels"][key] = v.clone();
                }
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// What a Job update may not change (`ValidateJobUpdate`), both sides defaulted. An Indexed
/// Job may change completions together with parallelism to the same value (elastic Indexed
/// Jobs); the template may change only while the Job is suspended and has never started.
pub fn job_update(cur: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let immutable = |field: &str, causes: &mut Vec<Cause>| {
        let pointer = format!("/{}", field.replace('.', "/"));
        let (a, b) = (cur.pointer(&pointer), new.pointer(&pointer));
        if a != b {
            causes.push(Cause::invalid(
                field,
                format!(
                    "Invalid value: {}: field is immutable",
                    short(b.unwrap_or(&Value::Null))
                ),
            ));
        }
    };
    for f in [
        "spec.selector",
        "spec.completionMode",
        "spec.podFailurePolicy",
        "spec.backoffLimitPerIndex",
        "spec.manualSelector",
    ] {
        immutable(f, causes);
    }
    let indexed = new.pointer("/spec/completionMode").and_then(Value::as_str) == Some("Indexed");
    let elastic = indexed
        && new.pointer("/spec/completions") == new.pointer("/spec/parallelism")
        && cur.pointer("/spec/parallelism") != new.pointer("/spec/parallelism");
    if !elastic {
        immutable("spec.completions", causes);
    }
    let suspended_unstarted = new.pointer("/spec/suspend") == Some(&Value::Bool(true))
        && cur.pointer("/status/startTime").is_none();
    if !suspended_unstarted {
        immutable("spec.template", causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        json!({"metadata": {"name": "j", "uid": "u1"}, "spec": spec})
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    fn template(restart: &str) -> Value {
        json!({"metadata": {"labels": {CONTROLLER_UID: "u1"}},
               "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn a_job_needs_non_negative_counts_a_matching_selector_and_a_batch_restart_policy() {
        let mut causes = Vec::new();
        validate_job(
            &job(json!({"completions": -1, "parallelism": -2,
                "selector": {"matchLabels": {CONTROLLER_UID: "u1"}}, "template": template("Never")})),
            &mut causes,
        );
        assert_eq!(fields(&causes), ["spec.parallelism", "spec.completions"]);
        assert!(causes[0]
            .message
            .contains("-2: must be greater than or equal to 0"));

        let mut causes = Vec::new();
        validate_job(
            &job(json!({"selector": {"matchLabels": {CONTROLLER_UID: "u1"}},
                "template": template("Always")})),
            &mut causes,
        );
        assert_eq!(fields(&causes), ["spec.template.spec.restartPolicy"]);
        assert!(causes[0]
            .message
            .contains("supported values: \"OnFailure\", \"Never\""));

        // A manual selector must select the template's labels.
        let mut causes = Vec::new();
        validate_job(
            &job(
                json!({"manualSelector": true, "selector": {"matchLabels": {"app": "x"}},
                "template": template("Never")}),
            ),
            &mut causes,
        );
        assert_eq!(fields(&causes), ["spec.template.metadata.labels"]);
        // Without manualSelector, a selector must be the generated one.
        let mut causes = Vec::new();
        validate_job(
            &job(
                json!({"selector": {"matchLabels": {CONTROLLER_UID: "other"}},
                "template": {"metadata": {"labels": {CONTROLLER_UID: "other"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}]}}}),
            ),
            &mut causes,
        );
        assert_eq!(fields(&causes), ["spec.selector"]);
    }

    #[test]
    fn indexed_rules() {
        let mut causes = Vec::new();
        validate_job(
            &job(json!({"completionMode": "Indexed", "maxFailedIndexes": 1,
                "selector": {"matchLabels": {CONTROLLER_UID: "u1"}}, "template": template("Never")})),
            &mut causes,
        );
        assert_eq!(
            fields(&causes),
            ["spec.completions", "spec.backoffLimitPerIndex"]
        );
        let mut causes = Vec::new();
        validate_job(
            &job(json!({"backoffLimitPerIndex": 1,
                "selector": {"matchLabels": {CONTROLLER_UID: "u1"}}, "template": template("Never")})),
            &mut causes,
        );
        assert_eq!(fields(&causes), ["spec.backoffLimitPerIndex"]);
    }

    #[test]
    fn a_cronjob_needs_a_valid_schedule_and_zone() {
        let mut causes = Vec::new();
        validate_cronjob(
            &json!({"metadata": {"name": "c"}, "spec": {"schedule": "61 * * * *",
                "timeZone": "Nowhere/Atlantis", "concurrencyPolicy": "Sometimes",
                "jobTemplate": {"spec": {"template": template("OnFailure")}}}}),
            &mut causes,
        );
        assert_eq!(
            fields(&causes),
            ["spec.schedule", "spec.timeZone", "spec.concurrencyPolicy"]
        );
        assert!(
            causes[0].message.contains("out of range"),
            "{}",
            causes[0].message
        );
        let mut causes = Vec::new();
        validate_cronjob(
            &json!({"metadata": {"name": "c"}, "spec": {"schedule": "@hourly",
                "jobTemplate": {"spec": {"template": template("Always")}}}}),
            &mut causes,
        );
        assert_eq!(
            fields(&causes),
            ["spec.jobTemplate.spec.template.spec.restartPolicy"]
        );
    }

    #[test]
    fn updates_keep_the_immutable_fields() {
        let cur = job(
            json!({"completions": 3, "parallelism": 1, "template": template("Never"),
            "selector": {"matchLabels": {CONTROLLER_UID: "u1"}}}),
        );
        let mut new = cur.clone();
        new["spec"]["completions"] = json!(5);
        new["spec"]["parallelism"] = json!(2);
        let mut causes = Vec::new();
        job_update(&cur, &new, &mut causes);
        assert_eq!(fields(&causes), ["spec.completions"]);
        assert!(causes[0].message.contains("field is immutable"));
        // Indexed: completions may follow parallelism.
        let mut cur_i = cur.clone();
        cur_i["spec"]["completionMode"] = json!("Indexed");
        let mut new_i = cur_i.clone();
        new_i["spec"]["completions"] = json!(5);
        new_i["spec"]["parallelism"] = json!(5);
        let mut causes = Vec::new();
        job_update(&cur_i, &new_i, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        // The template is fixed once the Job runs.
        let mut new_t = cur.clone();
        new_t["spec"]["template"]["spec"]["containers"][0]["image"] = json!("alpine");
        let mut causes = Vec::new();
        job_update(&cur, &new_t, &mut causes);
        assert_eq!(fields(&causes), ["spec.template"]);
    }

    #[test]
    fn replace_without_the_generated_selector_keeps_it() {
        let cur = job(json!({"selector": {"matchLabels": {CONTROLLER_UID: "u1"}},
            "manualSelector": false, "template": template("Never")}));
        let mut new = job(json!({"template": {"spec": {"restartPolicy": "Never"}}}));
        keep_generated(&cur, &mut new);
        assert_eq!(new["spec"]["selector"], cur["spec"]["selector"]);
        assert_eq!(
            new["spec"]["template"]["metadata"]["labels"][CONTROLLER_UID],
            "u1"
        );
    }
}
