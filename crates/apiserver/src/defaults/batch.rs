//! Job and CronJob defaulting, as kube-apiserver's `SetDefaults_Job` and `SetDefaults_CronJob`
//! and the Job strategy's selector generation do it. Each pod template gets the pod-spec
//! defaults every template gets.

use serde_json::{json, Value};

use super::pod::{fill, pod_spec};
use super::Write;
use crate::batch::CONTROLLER_UID;

fn spec_object(obj: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    obj["spec"].as_object_mut()
}

pub fn job(obj: &mut Value, write: Write) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(s) = spec_object(obj) else {
        return;
    };
    let unset = |s: &serde_json::Map<String, Value>, k: &str| s.get(k).is_none_or(Value::is_null);
    if unset(s, "completions") && unset(s, "parallelism") {
        s.insert("completions".into(), json!(1));
    }
    fill(s, "parallelism", json!(1));
    let per_index = !unset(s, "backoffLimitPerIndex");
    fill(
        s,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    fill(s, "completionMode", json!("NonIndexed"));
    fill(s, "suspend", json!(false));
    fill(s, "manualSelector", json!(false));
    let has_policy = !unset(s, "podFailurePolicy");
    fill(
        s,
        "podReplacementPolicy",
        json!(if has_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if let Some(rules) = s
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
    {
        for c in rules
            .iter_mut()
            .filter_map(|r| r.get_mut("onPodConditions"))
            .filter_map(Value::as_array_mut)
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            fill(c, "status", json!("True"));
        }
    }
    // The generated selector: on create, unless the client manages its own.
    let manual = s.get("manualSelector") == Some(&Value::Bool(true));
    if write == Write::Create && !manual && !uid.is_empty() {
        if !s.get("template").is_some_and(Value::is_object) {
            s.insert("template".into(), json!({}));
        }
        let t = &mut s["template"];
        if !t.get("metadata").is_some_and(Value::is_object) {
            t["metadata"] = json!({});
        }
        if !t["metadata"].get("labels").is_some_and(Value::is_object) {
            t["metadata"]["labels"] = json!({});
        }
        if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
            fill(labels, "controller-uid", json!(uid));
            fill(labels, CONTROLLER_UID, json!(uid));
            fill(labels, "job-name", json!(name));
            fill(labels, "batch.kubernetes.io/job-name", json!(name));
        }
        if !s.get("selector").is_some_and(Value::is_object) {
            s.insert("selector".into(), json!({}));
        }
        let sel = &mut s["selector"];
        if !sel.get("matchLabels").is_some_and(Value::is_object) {
            sel["matchLabels"] = json!({});
        }
        if let Some(m) = sel["matchLabels"].as_object_mut() {
            fill(m, CONTROLLER_UID, json!(uid));
        }
    }
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

pub fn cronjob(obj: &mut Value) {
    let Some(s) = spec_object(obj) else {
        return;
    };
    fill(s, "concurrencyPolicy", json!("Allow"));
    fill(s, "suspend", json!(false));
    fill(s, "successfulJobsHistoryLimit", json!(3));
    fill(s, "failedJobsHistoryLimit", json!(1));
    if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
        pod_spec(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_gets_kubes_defaults_and_a_generated_selector() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        job(&mut j, Write::Create);
        let s = &j["spec"];
        assert_eq!(
            (s["completions"].clone(), s["parallelism"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["manualSelector"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            s["selector"],
            json!({"matchLabels": {CONTROLLER_UID: "u-1"}})
        );
        let labels = &s["template"]["metadata"]["labels"];
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(labels[CONTROLLER_UID], "u-1");
        assert_eq!(s["template"]["spec"]["terminationGracePeriodSeconds"], 30);

        // A work queue (parallelism only) keeps completions unset; per-index limits lift
        // the Job-wide one.
        let mut q = json!({"metadata": {"name": "q"}, "spec": {"parallelism": 3,
            "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}});
        job(&mut q, Write::Update);
        assert!(q["spec"].get("completions").is_none());
        assert_eq!(q["spec"]["backoffLimit"], i32::MAX);
        assert_eq!(q["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            q["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
            "True"
        );
        assert!(q["spec"].get("selector").is_none());
    }

    #[test]
    fn a_cronjob_gets_its_policies_and_history_limits() {
        let mut c = json!({"spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {
            "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "b"}]}}}}}});
        cronjob(&mut c);
        let s = &c["spec"];
        assert_eq!(s["concurrencyPolicy"], "Allow");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["successfulJobsHistoryLimit"], 3);
        assert_eq!(s["failedJobsHistoryLimit"], 1);
        assert_eq!(
            s["jobTemplate"]["spec"]["template"]["spec"]["schedulerName"],
            "default-scheduler"
        );
    }
}
