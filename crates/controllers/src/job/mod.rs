//! The Job controller's decision: which pods to create or delete, which finished pods to
//! record, and the status and conditions to report, as kube-controller-manager's Job
//! controller decides them.
//!
//! Counting is finalizer-based, so a restart neither loses nor doubles a completion: every pod
//! is created with the `batch.kubernetes.io/job-tracking` finalizer; a finished pod still
//! holding it is first written into `status.uncountedTerminatedPods`, then its finalizer is
//! removed, then (in the next status write) it moves from the uncounted lists into
//! `succeeded`/`failed`. A pod without the finalizer and not in the lists was counted already.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod as ApiPod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

mod pods;
mod policy;

pub use pods::{
    format_indexes, index_of, parse_indexes, pod_for, INDEX, INDEX_FAILURE_COUNT,
    TRACKING_FINALIZER,
};

use crate::cached::Pod;
use crate::replicaset::is_ready;
use pods::{end_of, has_finalizer, index_failures, is_active, name, phase, uid, End};
use policy::{failure_verdict, Verdict};

/// Pod re-creation back-off after failures: 10 s doubling, at most 6 minutes (kube's).
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);
/// Create at most this many pods per pass.
const MAX_BURST: usize = 500;

/// Failures since the last success, and when the latest was seen (kept by the loop).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    pub failures: u32,
    pub last_failure: Option<Timestamp>,
}

impl Backoff {
    /// How long new pods must still wait at `now`.
    pub fn remaining(&self, now: Timestamp) -> Option<Duration> {
        let last = self.last_failure?;
        if self.failures == 0 {
            return None;
        }
        let delay = BACKOFF_BASE
            .saturating_mul(1 << (self.failures - 1).min(10))
            .min(BACKOFF_MAX);
        let elapsed = Duration::try_from(now.duration_since(last)).unwrap_or_default();
        delay.checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    /// Said when the Job ends: only once the end is written.
    pub finish: bool,
}

/// What to do for one Job.
#[derive(Debug, Clone, Default)]
pub struct JobPlan {
    pub create: Vec<ApiPod>,
    /// Active pods to delete (excess, suspension, a finished or failing Job).
    pub delete: Vec<String>,
    /// Finished pods now in `status.uncountedTerminatedPods` (or ignored by the failure
    /// policy): write the status first, then remove their finalizer.
    pub remove_finalizer: Vec<(String, String)>,
    /// Uids in the uncounted lists whose pods no longer hold the finalizer: count them now.
    pub countable: Vec<String>,
    /// The status to write before removing finalizers.
    pub status: JobStatus,
    /// Complete or Failed, to add once nothing is left uncounted and no pod runs.
    pub finished: Option<JobCondition>,
    pub events: Vec<Event>,
    pub newly_failed: u32,
    pub newly_succeeded: u32,
    /// Look again after this long (back-off, deadline).
    pub requeue: Option<Duration>,
}

fn has_condition(status: &JobStatus, kind: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == kind && c.status == "True")
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: kind.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Set `c` in `status`, keeping the old timestamps if nothing about it changed.
pub fn set_condition(status: &mut JobStatus, c: JobCondition) {
    let list = status.conditions.get_or_insert_with(Vec::new);
    match list.iter_mut().find(|o| o.type_ == c.type_) {
        Some(o) if o.status == c.status && o.reason == c.reason => {}
        Some(o) => *o = c,
        None => list.push(c),
    }
}

/// Decide for `job` given the pods it controls. `finalizer_removed` holds uids whose
/// finalizer this controller already removed though the cache may still show it.
pub fn plan(
    job: &Job,
    pods: &[&Pod],
    backoff: &Backoff,
    finalizer_removed: &HashSet<String>,
    now: Timestamp,
) -> JobPlan {
    let spec = job.spec.clone().unwrap_or_default();
    let mut status = job.status.clone().unwrap_or_default();
    let mut out = JobPlan::default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let finished_before = has_condition(&status, "Complete") || has_condition(&status, "Failed");

    // 1. Record what finished.
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_s: Vec<String> = uncounted.succeeded.take().unwrap_or_default();
    let mut unc_f: Vec<String> = uncounted.failed.take().unwrap_or_default();
    let mut completed = parse_indexes(status.completed_indexes.as_deref());
    let mut failed_indexes = parse_indexes(status.failed_indexes.as_deref());
    let mut fail_job: Option<(String, String)> = None;
    let holding = |p: &Pod| has_finalizer(p) && !finalizer_removed.contains(&uid(p));
    for p in pods {
        let u = uid(p);
        let Some(end) = end_of(p) else { continue };
        if !holding(p) {
            continue;
        }
        let known = unc_s.contains(&u) || unc_f.contains(&u);
        if !known {
            match end {
                End::Succeeded => {
                    unc_s.push(u.clone());
                    out.newly_succeeded += 1;
                    if let Some(i) = index_of(p).filter(|i| completions.is_some_and(|c| *i < c)) {
                        completed.insert(i);
                    }
                }
                End::Failed => match failure_verdict(job, p) {
                    Verdict::Ignore => {}
                    v => {
                        unc_f.push(u.clone());
                        out.newly_failed += 1;
                        let per_index = spec.backoff_limit_per_index;
                        if let (Some(limit), Some(i)) = (per_index, index_of(p)) {
                            if v == Verdict::FailIndex || index_failures(p) >= limit {
                                failed_indexes.insert(i);
                            }
                        }
                        if let Verdict::FailJob(m) = v {
                            fail_job.get_or_insert(("PodFailurePolicy".into(), m));
                        }
                    }
                },
            }
        }
        out.remove_finalizer.push((name(p), u));
    }
    // Uids listed whose pods lost the finalizer (or are gone) are counted now.
    let holders: HashSet<String> = pods.iter().filter(|p| holding(p)).map(|p| uid(p)).collect();
    out.countable = unc_s
        .iter()
        .chain(unc_f.iter())
        .filter(|u| !holders.contains(*u))
        .cloned()
        .collect();
    let succeeded = status.succeeded.unwrap_or(0) + unc_s.len() as i32;
    let failed = status.failed.unwrap_or(0) + unc_f.len() as i32;
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!unc_s.is_empty()).then_some(unc_s),
        failed: (!unc_f.is_empty()).then_some(unc_f),
    });
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed));
        if spec.backoff_limit_per_index.is_some() {
            status.failed_indexes = Some(format_indexes(&failed_indexes));
        }
    }

    let active: Vec<&Pod> = pods.iter().copied().filter(|p| is_active(p)).collect();
    let terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && end_of(p) != Some(End::Succeeded))
        .filter(|p| phase(p) != "Failed")
        .count() as i32;

    // 2. Success, failure, suspension.
    let restarts: i32 = active
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    let start = status.start_time.as_ref().map(|t| t.0);
    let deadline = spec
        .active_deadline_seconds
        .and_then(|s| start.map(|t| t + Duration::from_secs(s.max(0) as u64)));
    let suspended = spec.suspend == Some(true);
    let complete = match (indexed, completions) {
        (true, Some(c)) => completed.len() as i32 >= c,
        (false, Some(c)) => succeeded >= c,
        (_, None) => succeeded > 0 && active.is_empty(),
    };
    if fail_job.is_none() && !complete {
        if spec.backoff_limit_per_index.is_none() && failed + restarts > backoff_limit {
            fail_job = Some((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        } else if let Some(max) = spec
            .max_failed_indexes
            .filter(|m| failed_indexes.len() as i32 > *m)
        {
            let _ = max;
            fail_job = Some((
                "MaxFailedIndexesExceeded".into(),
                "Job has exceeded the specified maximal number of failed indexes".into(),
            ));
        } else if deadline.is_some_and(|d| now >= d) && !suspended {
            fail_job = Some((
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into(),
            ));
        } else if indexed
            && !failed_indexes.is_empty()
            && completions.is_some_and(|c| (completed.len() + failed_indexes.len()) as i32 >= c)
        {
            fail_job = Some(("FailedIndexes".into(), "Job has failed indexes".into()));
        }
    }
    let failing = has_condition(&status, "FailureTarget") || fail_job.is_some();
    let succeeding = has_condition(&status, "SuccessCriteriaMet") || (complete && !failing);

    if !finished_before && !failing && !succeeding {
        // Suspension, resumption and the pods to run.
        let was_suspended = has_condition(&status, "Suspended");
        if suspended {
            if !was_suspended {
                set_condition(
                    &mut status,
                    condition("Suspended", true, "JobSuspended", "Job suspended", now),
                );
                out.events.push(Event {
                    warning: false,
                    reason: "Suspended",
                    message: "Job suspended".into(),
                    finish: false,
                });
            }
            out.delete = active.iter().map(|p| name(p)).collect();
        } else {
            if was_suspended {
                set_condition(
                    &mut status,
                    condition("Suspended", false, "JobResumed", "Job resumed", now),
                );
                out.events.push(Event {
                    warning: false,
                    reason: "Resumed",
                    message: "Job resumed".into(),
                    finish: false,
                });
                // The deadline counts from the resumption.
                status.start_time = Some(Time(now));
            }
            if status.start_time.is_none() {
                status.start_time = Some(Time(now));
            }
            let progress = Progress {
                succeeded,
                completed: &completed,
                failed_indexes: &failed_indexes,
            };
            // Failures seen in this very pass delay the replacements too.
            let mut backoff = backoff.clone();
            if out.newly_succeeded > 0 {
                backoff.failures = 0;
            }
            if out.newly_failed > 0 {
                backoff.failures += out.newly_failed;
                backoff.last_failure = Some(now);
            }
            manage_pods(job, pods, &active, &progress, &backoff, now, &mut out);
            if let Some(d) = spec.active_deadline_seconds {
                let start = status.start_time.as_ref().map_or(now, |t| t.0);
                let end = start + Duration::from_secs(d.max(0) as u64);
                let left = Duration::try_from(end.duration_since(now)).unwrap_or_default();
                out.requeue = Some(
                    out.requeue
                        .map_or(left, |r| r.min(left))
                        .max(Duration::from_millis(100)),
                );
            }
        }
    } else if !finished_before {
        // Finishing: stop what runs, then declare the end once nothing does.
        out.delete = active.iter().map(|p| name(p)).collect();
        if let Some((reason, message)) = fail_job.clone() {
            set_condition(
                &mut status,
                condition("FailureTarget", true, &reason, &message, now),
            );
        } else if succeeding && !has_condition(&status, "FailureTarget") {
            set_condition(
                &mut status,
                condition(
                    "SuccessCriteriaMet",
                    true,
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
            );
        }
        let target = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget" || c.type_ == "SuccessCriteriaMet")
            .cloned();
        if active.is_empty() && terminating == 0 {
            if let Some(t) = target {
                let (kind, warning, event) = if t.type_ == "FailureTarget" {
                    ("Failed", true, t.reason.clone().unwrap_or_default())
                } else {
                    ("Complete", false, "Completed".to_string())
                };
                let mut c = t.clone();
                c.type_ = kind.into();
                c.last_transition_time = Some(Time(now));
                c.last_probe_time = Some(Time(now));
                out.finished = Some(c);
                let message = if kind == "Complete" {
                    "Job completed".to_string()
                } else {
                    t.message.clone().unwrap_or_default()
                };
                let reason: &'static str = match event.as_str() {
                    "Completed" => "Completed",
                    "BackoffLimitExceeded" => "BackoffLimitExceeded",
                    "DeadlineExceeded" => "DeadlineExceeded",
                    "PodFailurePolicy" => "PodFailurePolicy",
                    "MaxFailedIndexesExceeded" => "MaxFailedIndexesExceeded",
                    _ => "FailedIndexes",
                };
                out.events.push(Event {
                    warning,
                    reason,
                    message,
                    finish: true,
                });
            }
        }
    }
    status.active = Some(
        active.len() as i32
            - out
                .delete
                .iter()
                .filter(|d| active.iter().any(|p| name(p) == **d))
                .count() as i32,
    );
    status.ready = Some(
        active
            .iter()
            .filter(|p| is_ready(p) && !out.delete.contains(&name(p)))
            .count() as i32,
    );
    status.terminating = Some(terminating + out.delete.len() as i32);
    status.succeeded = Some(status.succeeded.unwrap_or(0));
    status.failed = Some(status.failed.unwrap_or(0));
    out.status = status;
    out
}

/// How far a Job got: what manage_pods decides from.
struct Progress<'a> {
    succeeded: i32,
    completed: &'a BTreeSet<i32>,
    failed_indexes: &'a BTreeSet<i32>,
}

fn manage_pods(
    job: &Job,
    pods: &[&Pod],
    active: &[&Pod],
    progress: &Progress<'_>,
    backoff: &Backoff,
    now: Timestamp,
    out: &mut JobPlan,
) {
    let spec = job.spec.clone().unwrap_or_default();
    let (succeeded, completed, failed_indexes) = (
        progress.succeeded,
        progress.completed,
        progress.failed_indexes,
    );
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let wait = backoff.remaining(now);
    if spec.completion_mode.as_deref() == Some("Indexed") {
        let completions = spec.completions.unwrap_or(0).max(0);
        // One active pod per index: extra copies and pods of finished indexes go.
        let mut seen = HashSet::new();
        let mut keep = Vec::new();
        for p in active {
            match index_of(p) {
                Some(i)
                    if (0..completions).contains(&i)
                        && !completed.contains(&i)
                        && !failed_indexes.contains(&i)
                        && seen.insert(i) =>
                {
                    keep.push(*p)
                }
                _ => out.delete.push(name(p)),
            }
        }
        let excess = keep.len().saturating_sub(parallelism);
        for p in keep.iter().rev().take(excess) {
            out.delete.push(name(p));
        }
        let room = parallelism.saturating_sub(keep.len()).min(MAX_BURST);
        if room == 0 {
            return;
        }
        if let Some(w) = wait {
            out.requeue = Some(w);
            return;
        }
        for i in (0..completions)
            .filter(|i| !seen.contains(i) && !completed.contains(i) && !failed_indexes.contains(i))
            .take(room)
        {
            // A retry of an index carries how often it failed (for backoffLimitPerIndex).
            let failures = pods
                .iter()
                .filter(|p| index_of(p) == Some(i) && end_of(p) == Some(End::Failed))
                .map(|p| index_failures(p) + 1)
                .max()
                .unwrap_or(0);
            out.create.push(pod_for(job, Some(i), failures));
        }
        return;
    }
    let want = match spec.completions {
        Some(c) => ((c - succeeded).max(0) as usize).min(parallelism),
        // A work queue: once one pod succeeded, no new ones.
        None if succeeded > 0 => 0,
        None => parallelism,
    };
    if active.len() > want {
        let mut ranked: Vec<&Pod> = active.to_vec();
        // Pending and unready ones first, newest first.
        ranked.sort_by_key(|p| {
            (
                phase(p) != "Pending",
                is_ready(p),
                std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            )
        });
        out.delete = ranked[..active.len() - want]
            .iter()
            .map(|p| name(p))
            .collect();
    } else if active.len() < want {
        if let Some(w) = wait {
            out.requeue = Some(w);
            return;
        }
        for _ in 0..(want - active.len()).min(MAX_BURST) {
            out.create.push(pod_for(job, None, 0));
        }
    }
}

/// After finalizers of `removed` (uids) came off: move those and `countable` from the
/// uncounted lists into the counters, and declare `finished` once nothing is left uncounted.
pub fn settle(
    status: &mut JobStatus,
    removed: &[String],
    finished: Option<JobCondition>,
    now: Timestamp,
) {
    let mut u = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut s = u.succeeded.take().unwrap_or_default();
    let mut f = u.failed.take().unwrap_or_default();
    let before = (s.len(), f.len());
    s.retain(|x| !removed.contains(x));
    f.retain(|x| !removed.contains(x));
    status.succeeded = Some(status.succeeded.unwrap_or(0) + (before.0 - s.len()) as i32);
    status.failed = Some(status.failed.unwrap_or(0) + (before.1 - f.len()) as i32);
    let empty = s.is_empty() && f.is_empty();
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!s.is_empty()).then_some(s),
        failed: (!f.is_empty()).then_some(f),
    });
    if let (true, Some(c)) = (empty, finished) {
        if c.type_ == "Complete" {
            status.completion_time = Some(Time(now));
        }
        set_condition(status, c);
    }
}
