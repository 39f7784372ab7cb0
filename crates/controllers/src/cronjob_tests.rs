//! The CronJob decision with an injected clock.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::cronjob::*;

fn cronjob(spec: Value, status: Value) -> CronJob {
    let mut spec = spec;
    spec["jobTemplate"] = json!({"metadata": {"labels": {"team": "a"}}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    serde_json::from_value(json!({
        "metadata": {"name": "tick", "namespace": "ns", "uid": "cj1",
            "creationTimestamp": "2026-01-01T00:00:30Z"},
        "spec": spec, "status": status}))
    .unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn job(name: &str, state: Option<&str>, start: &str) -> Job {
    let conditions = match state {
        Some(s) => json!([{"type": s, "status": "True"}]),
        None => json!([]),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "tick",
                "uid": "cj1", "controller": true}]},
        "status": {"conditions": conditions, "startTime": start,
            "completionTime": if state == Some("Complete") { json!(start) } else { Value::Null }}
    }))
    .unwrap()
}

#[test]
fn starts_a_job_named_for_the_scheduled_minute() {
    let cj = cronjob(
        json!({"schedule": "*/1 * * * *", "timeZone": "UTC"}),
        json!({}),
    );
    // Nothing due before the first minute after creation.
    let p = plan(&cj, &[], at("2026-01-01T00:00:50Z"));
    assert!(p.create.is_none());
    assert_eq!(p.requeue.unwrap().as_millis(), 10_100);
    let p = plan(&cj, &[], at("2026-01-01T00:01:02Z"));
    let j = p.create.unwrap();
    let minutes = at("2026-01-01T00:01:00Z").as_second() / 60;
    assert_eq!(j.metadata.name.unwrap(), format!("tick-{minutes}"));
    assert_eq!(
        j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
        "2026-01-01T00:01:00+00:00"
    );
    assert_eq!(j.metadata.labels.unwrap()["team"], "a");
    assert_eq!(j.metadata.owner_references.unwrap()[0].kind, "CronJob");
    assert_eq!(
        p.status.last_schedule_time.unwrap().0,
        at("2026-01-01T00:01:00Z")
    );
    assert_eq!(p.status.active.unwrap().len(), 1);
}

#[test]
fn after_downtime_only_the_most_recent_missed_time_runs() {
    let cj = cronjob(
        json!({"schedule": "0 * * * *", "timeZone": "UTC"}),
        json!({"lastScheduleTime": "2026-01-01T01:00:00Z"}),
    );
    let p = plan(&cj, &[], at("2026-01-01T05:30:00Z"));
    let minutes = at("2026-01-01T05:00:00Z").as_second() / 60;
    assert_eq!(
        p.create.unwrap().metadata.name.unwrap(),
        format!("tick-{minutes}")
    );
    assert!(p.events.is_empty());
    // More than 100 missed: said, and still one run for the latest.
    let cj = cronjob(
        json!({"schedule": "* * * * *", "timeZone": "UTC"}),
        json!({"lastScheduleTime": "2026-01-01T00:00:00Z"}),
    );
    let p = plan(&cj, &[], at("2026-01-03T00:00:30Z"));
    assert_eq!(p.events[0].reason, "TooManyMissedTimes");
    let minutes = at("2026-01-03T00:00:00Z").as_second() / 60;
    assert_eq!(
        p.create.unwrap().metadata.name.unwrap(),
        format!("tick-{minutes}")
    );
    // A starting deadline passed: missed, not run.
    let cj = cronjob(
        json!({"schedule": "0 * * * *", "timeZone": "UTC", "startingDeadlineSeconds": 60}),
        json!({"lastScheduleTime": "2026-01-01T01:00:00Z"}),
    );
    let p = plan(&cj, &[], at("2026-01-01T05:30:00Z"));
    assert!(p.create.is_none());
}

#[test]
fn forbid_skips_while_one_runs_and_replace_replaces_it() {
    let running = job("tick-1", None, "2026-01-01T00:01:00Z");
    let cj = cronjob(
        json!({"schedule": "*/1 * * * *", "timeZone": "UTC", "concurrencyPolicy": "Forbid"}),
        json!({"lastScheduleTime": "2026-01-01T00:01:00Z"}),
    );
    let p = plan(&cj, &[&running], at("2026-01-01T00:02:05Z"));
    assert!(p.create.is_none());
    assert_eq!(p.events[0].reason, "JobAlreadyActive");
    let mut cj = cj;
    cj.spec.as_mut().unwrap().concurrency_policy = Some("Replace".into());
    let p = plan(&cj, &[&running], at("2026-01-01T00:02:05Z"));
    assert_eq!(p.replace, vec!["tick-1".to_string()]);
    assert!(p.create.is_some());
    assert_eq!(p.status.active.unwrap().len(), 1);
    // Allow: both run.
    cj.spec.as_mut().unwrap().concurrency_policy = Some("Allow".into());
    let p = plan(&cj, &[&running], at("2026-01-01T00:02:05Z"));
    assert!(p.replace.is_empty() && p.create.is_some());
    assert_eq!(p.status.active.unwrap().len(), 2);
}

#[test]
fn history_limits_prune_the_oldest_finished_jobs() {
    let cj = cronjob(
        json!({"schedule": "@hourly", "successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
        json!({}),
    );
    let jobs = [
        job("tick-1", Some("Complete"), "2026-01-01T01:00:00Z"),
        job("tick-2", Some("Complete"), "2026-01-01T02:00:00Z"),
        job("tick-3", Some("Failed"), "2026-01-01T03:00:00Z"),
        job("tick-4", Some("Complete"), "2026-01-01T04:00:00Z"),
        job("tick-5", Some("Failed"), "2026-01-01T05:00:00Z"),
    ];
    let refs: Vec<&Job> = jobs.iter().collect();
    let p = plan(&cj, &refs, at("2026-01-01T05:10:00Z"));
    assert_eq!(p.prune, vec!["tick-1".to_string(), "tick-3".to_string()]);
    assert_eq!(
        p.status.last_successful_time.unwrap().0,
        at("2026-01-01T04:00:00Z")
    );
}

#[test]
fn suspended_or_already_started_runs_nothing() {
    let cj = cronjob(
        json!({"schedule": "*/1 * * * *", "timeZone": "UTC", "suspend": true}),
        json!({}),
    );
    assert!(plan(&cj, &[], at("2026-01-01T00:05:00Z")).create.is_none());
    let cj = cronjob(
        json!({"schedule": "*/1 * * * *", "timeZone": "UTC"}),
        json!({}),
    );
    let minutes = at("2026-01-01T00:05:00Z").as_second() / 60;
    let done = job(&format!("tick-{minutes}"), None, "2026-01-01T00:05:00Z");
    let p = plan(&cj, &[&done], at("2026-01-01T00:05:10Z"));
    assert!(p.create.is_none());
    assert_eq!(
        p.status.last_schedule_time.unwrap().0,
        at("2026-01-01T00:05:00Z")
    );
}
