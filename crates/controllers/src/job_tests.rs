//! The Job decision, pass by pass, with the clock and the pods given.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::cached::Pod;
use crate::job::*;

fn job(spec: Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "j1"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
    serde_json::from_value(
        json!({"metadata": {"name": "pi", "namespace": "ns", "uid": "j1"},
        "spec": spec}),
    )
    .unwrap()
}

fn pod(name: &str, phase: &str, finalizer: bool, index: Option<i32>) -> Pod {
    let mut annotations = json!({});
    if let Some(i) = index {
        annotations[INDEX] = json!(i.to_string());
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
            "annotations": annotations,
            "finalizers": if finalizer { json!([TRACKING_FINALIZER]) } else { json!([]) },
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi",
                "uid": "j1", "controller": true}]},
        "status": {"phase": phase}
    }))
    .unwrap()
}

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn run(job: &Job, pods: &[Pod]) -> JobPlan {
    let refs: Vec<&Pod> = pods.iter().collect();
    plan(job, &refs, &Backoff::default(), &HashSet::new(), now())
}

#[test]
fn starts_parallelism_pods_holding_the_tracking_finalizer() {
    let j = job(json!({"completions": 20, "parallelism": 4}));
    let p = run(&j, &[]);
    assert_eq!(p.create.len(), 4);
    let pod = &p.create[0];
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-"));
    assert_eq!(
        pod.metadata.finalizers.as_deref(),
        Some(&[TRACKING_FINALIZER.to_string()][..])
    );
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    assert!(p.status.start_time.is_some());
    // Fewer left to do than parallelism: only what is left.
    let mut j = j;
    j.status = Some(serde_json::from_value(json!({"succeeded": 18})).unwrap());
    assert_eq!(run(&j, &[]).create.len(), 2);
}

#[test]
fn a_finished_pod_is_recorded_then_released_then_counted_exactly_once() {
    let j = job(json!({"completions": 2, "parallelism": 2}));
    let pods = [
        pod("a", "Succeeded", true, None),
        pod("b", "Running", true, None),
    ];
    // Pass 1: listed as uncounted, finalizer to come off; not counted yet.
    let p1 = run(&j, &pods);
    let unc = p1.status.uncounted_terminated_pods.clone().unwrap();
    assert_eq!(unc.succeeded, Some(vec!["u-a".to_string()]));
    assert_eq!(p1.remove_finalizer, vec![("a".into(), "u-a".into())]);
    assert_eq!(p1.status.succeeded, Some(0));
    assert!(p1.create.is_empty(), "one left and one running");
    // The loop removed the finalizer and settles: counted, list emptied.
    let mut s = p1.status.clone();
    settle(&mut s, &["u-a".to_string()], p1.finished.clone(), now());
    assert_eq!(s.succeeded, Some(1));
    assert_eq!(s.uncounted_terminated_pods.clone().unwrap().succeeded, None);

    // A restart between the status write and the finalizer removal: the pod still holds
    // the finalizer and is listed; it is released and counted, not listed twice.
    let mut j2 = j.clone();
    j2.status = Some(p1.status.clone());
    let p2 = run(&j2, &pods);
    assert_eq!(
        p2.status
            .uncounted_terminated_pods
            .clone()
            .unwrap()
            .succeeded,
        Some(vec!["u-a".to_string()])
    );
    assert_eq!(p2.remove_finalizer.len(), 1);
    // A restart after the finalizer came off but before counting: counted from the list.
    let released = [
        pod("a", "Succeeded", false, None),
        pod("b", "Running", true, None),
    ];
    let p3 = run(&j2, &released);
    assert_eq!(p3.countable, vec!["u-a".to_string()]);
    assert!(p3.remove_finalizer.is_empty());
    // Once counted, a released pod is never counted again.
    let mut j3 = j.clone();
    j3.status = Some(s);
    let p4 = run(&j3, &released);
    assert!(p4.countable.is_empty() && p4.remove_finalizer.is_empty());
    assert_eq!(p4.status.succeeded, Some(1));
    // A stale cache that still shows a finalizer already removed changes nothing either.
    let removed: HashSet<String> = ["u-a".to_string()].into();
    let refs: Vec<&Pod> = pods.iter().collect();
    let p5 = plan(&j3, &refs, &Backoff::default(), &removed, now());
    assert!(p5.remove_finalizer.is_empty());
    assert_eq!(p5.status.uncounted_terminated_pods.unwrap().succeeded, None);
}

#[test]
fn completes_once_everything_is_counted_and_nothing_runs() {
    let mut j = job(json!({"completions": 1, "parallelism": 1}));
    let pods = [pod("a", "Succeeded", true, None)];
    let p = run(&j, &pods);
    let criteria = p.status.conditions.clone().unwrap();
    assert_eq!(criteria[0].type_, "SuccessCriteriaMet");
    let finished = p.finished.clone().unwrap();
    assert_eq!(finished.type_, "Complete");
    // Not complete while the pod is uncounted...
    let mut s = p.status.clone();
    settle(&mut s, &[], p.finished.clone(), now());
    assert!(!s.conditions.iter().flatten().any(|c| c.type_ == "Complete"));
    // ...and complete once it is.
    settle(&mut s, &["u-a".to_string()], p.finished.clone(), now());
    assert!(s.conditions.iter().flatten().any(|c| c.type_ == "Complete"));
    assert!(s.completion_time.is_some());
    assert_eq!(s.succeeded, Some(1));
    j.status = Some(s);
    assert!(run(&j, &[pod("a", "Succeeded", false, None)])
        .create
        .is_empty());
}

#[test]
fn fails_past_the_backoff_limit_and_backs_off_before_then() {
    let j = job(json!({"completions": 1, "parallelism": 1, "backoffLimit": 1}));
    let p = run(&j, &[pod("a", "Failed", true, None)]);
    assert_eq!(p.newly_failed, 1);
    assert!(p.finished.is_none());
    // The failure just seen delays its replacement already.
    assert!(p.create.is_empty());
    assert_eq!(p.requeue, Some(Duration::from_secs(10)));
    // A replacement waits out the back-off: 10 s after one failure, 20 s after two.
    let b = Backoff {
        failures: 1,
        last_failure: Some(now()),
    };
    let refs = [];
    let waited = plan(
        &j,
        &refs,
        &b,
        &HashSet::new(),
        now() + Duration::from_secs(4),
    );
    assert!(waited.create.is_empty());
    assert_eq!(waited.requeue, Some(Duration::from_secs(6)));
    let later = plan(
        &j,
        &refs,
        &b,
        &HashSet::new(),
        now() + Duration::from_secs(11),
    );
    assert_eq!(later.create.len(), 1);
    let b2 = Backoff {
        failures: 2,
        last_failure: Some(now()),
    };
    assert_eq!(b2.remaining(now()), Some(Duration::from_secs(20)));
    let b9 = Backoff {
        failures: 9,
        last_failure: Some(now()),
    };
    assert_eq!(b9.remaining(now()), Some(Duration::from_secs(360)));
    // A second failure exceeds backoffLimit 1.
    let p = run(
        &j,
        &[
            pod("a", "Failed", false, None),
            pod("b", "Failed", true, None),
        ],
    );
    let mut j2 = j.clone();
    j2.status = Some(serde_json::from_value(json!({"failed": 1})).unwrap());
    let p2 = run(
        &j2,
        &[
            pod("a", "Failed", false, None),
            pod("b", "Failed", true, None),
        ],
    );
    let _ = p;
    let f = p2.finished.unwrap();
    assert_eq!(
        (f.type_.as_str(), f.reason.as_deref()),
        ("Failed", Some("BackoffLimitExceeded"))
    );
    assert!(p2
        .status
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "FailureTarget"));
}

#[test]
fn indexed_jobs_run_each_index_once_with_its_identity() {
    let mut j = job(json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}));
    let p = run(&j, &[pod("pi-1-x", "Running", true, Some(1))]);
    let created: Vec<String> = p
        .create
        .iter()
        .map(|p| p.metadata.annotations.as_ref().unwrap()[INDEX].clone())
        .collect();
    assert_eq!(created, ["0", "2"]);
    let p0 = &p.create[0];
    assert_eq!(p0.metadata.generate_name.as_deref(), Some("pi-0-"));
    assert_eq!(p0.metadata.labels.as_ref().unwrap()[INDEX], "0");
    let spec = p0.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-0"));
    let env = &spec.containers[0].env.as_ref().unwrap()[0];
    assert_eq!(env.name, "JOB_COMPLETION_INDEX");
    // A completed index is recorded and not run again; a duplicate goes.
    let pods = [
        pod("pi-0-a", "Succeeded", true, Some(0)),
        pod("pi-1-a", "Running", true, Some(1)),
        pod("pi-1-b", "Running", true, Some(1)),
    ];
    let p = run(&j, &pods);
    assert_eq!(p.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(p.delete, vec!["pi-1-b".to_string()]);
    assert_eq!(p.create.len(), 1);
    j.status = Some(serde_json::from_value(json!({"completedIndexes": "0-2"})).unwrap());
    assert!(run(&j, &[]).finished.is_some());
    assert_eq!(
        format_indexes(&BTreeSet::from([0, 1, 2, 5, 7, 8])),
        "0-2,5,7-8"
    );
    assert_eq!(parse_indexes(Some("0-2,5")), BTreeSet::from([0, 1, 2, 5]));
}

#[test]
fn per_index_backoff_fails_the_index_not_the_job_until_all_are_done() {
    let j = job(
        json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed",
        "backoffLimitPerIndex": 1, "backoffLimit": 2147483647}),
    );
    // Its first failure counted already (and backed off): retried.
    let first = pod("pi-0-a", "Failed", false, Some(0));
    let p = run(&j, &[first, pod("pi-1-a", "Running", true, Some(1))]);
    // Retried, carrying its failure count.
    let retry = &p.create[0];
    assert_eq!(
        retry.metadata.annotations.as_ref().unwrap()[INDEX_FAILURE_COUNT],
        "1"
    );
    let mut second = pod("pi-0-b", "Failed", true, Some(0));
    second
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(INDEX_FAILURE_COUNT.into(), "1".into());
    let p = run(&j, &[second, pod("pi-1-a", "Succeeded", true, Some(1))]);
    assert_eq!(p.status.failed_indexes.as_deref(), Some("0"));
    assert_eq!(p.finished.unwrap().reason.as_deref(), Some("FailedIndexes"));
}

#[test]
fn pod_failure_policy_fails_ignores_or_counts() {
    let policy = json!({"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]});
    let j = job(
        json!({"completions": 1, "parallelism": 1, "backoffLimit": 6,
        "podFailurePolicy": policy}),
    );
    let mut exit42 = pod("a", "Failed", true, None);
    exit42.status = Some(
        serde_json::from_value(json!({"phase": "Failed", "containerStatuses": [
            {"name": "c", "restartCount": 0, "state": {"terminated": {"exitCode": 42}}}]}))
        .unwrap(),
    );
    let p = run(&j, &[exit42]);
    let f = p.finished.unwrap();
    assert_eq!(f.reason.as_deref(), Some("PodFailurePolicy"));
    assert!(f.message.unwrap().contains("exit code 42"));
    let mut disrupted = pod("b", "Failed", true, None);
    disrupted.status = Some(
        serde_json::from_value(json!({"phase": "Failed", "conditions": [
            {"type": "DisruptionTarget", "status": "True"}]}))
        .unwrap(),
    );
    let p = run(&j, &[disrupted]);
    assert_eq!(p.newly_failed, 0);
    assert_eq!(
        p.remove_finalizer.len(),
        1,
        "released without being counted"
    );
    assert_eq!(p.status.uncounted_terminated_pods.unwrap().failed, None);
    assert_eq!(p.create.len(), 1, "replaced");
}

#[test]
fn suspension_stops_pods_and_resumption_restarts_the_clock() {
    let mut j = job(json!({"completions": 2, "parallelism": 2, "suspend": true}));
    let p = run(&j, &[pod("a", "Running", true, None)]);
    assert_eq!(p.delete, vec!["a".to_string()]);
    assert!(p.create.is_empty());
    let c = &p.status.conditions.as_ref().unwrap()[0];
    assert_eq!((c.type_.as_str(), c.status.as_str()), ("Suspended", "True"));
    j.status = Some(p.status);
    j.spec.as_mut().unwrap().suspend = Some(false);
    let p = run(&j, &[]);
    assert_eq!(p.create.len(), 2);
    let c = &p.status.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
    assert_eq!(p.status.start_time.unwrap().0, now());
}

#[test]
fn the_active_deadline_fails_the_job() {
    let mut j = job(json!({"completions": 1, "parallelism": 1, "activeDeadlineSeconds": 5}));
    j.status = Some(serde_json::from_value(json!({"startTime": "2025-12-31T23:59:50Z"})).unwrap());
    let p = run(&j, &[pod("a", "Running", true, None)]);
    assert_eq!(p.delete, vec!["a".to_string()]);
    let t = p.status.conditions.unwrap();
    assert_eq!(t[0].reason.as_deref(), Some("DeadlineExceeded"));
    // Before the deadline, a look again at it.
    j.status = Some(serde_json::from_value(json!({"startTime": "2025-12-31T23:59:58Z"})).unwrap());
    let p = run(&j, &[pod("a", "Running", true, None)]);
    assert_eq!(p.requeue, Some(Duration::from_secs(3)));
}
