//! The CronJob controller's decision, as kube-controller-manager's CronJob controller makes
//! it: the Job to start for the most recent scheduled time not yet started (at most one, even
//! after a long downtime), what the concurrency policy says about Jobs still running, which
//! finished Jobs fall out of the history limits, and the status to report. The clock is an
//! argument, so the schedule decisions are tested without waiting.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use yun_cron::Schedule;

use crate::job::Event;
use crate::owner;

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this and the controller says so (kube's limit).
const MAX_MISSED: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct CronPlan {
    pub create: Option<Job>,
    /// Running Jobs to delete (concurrencyPolicy Replace).
    pub replace: Vec<String>,
    /// Finished Jobs beyond the history limits, oldest first.
    pub prune: Vec<String>,
    pub status: CronJobStatus,
    pub events: Vec<Event>,
    /// Look again after this long (the next scheduled time).
    pub requeue: Option<Duration>,
}

/// Complete or Failed, if the Job finished.
pub fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten() {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" => return Some("Complete"),
                "Failed" => return Some("Failed"),
                _ => {}
            }
        }
    }
    None
}

/// The name of the Job for `scheduled`: the CronJob's name and the time in minutes.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The most recent scheduled time in (`earliest`, `now`] and how many there were (counting
/// stops past [`MAX_MISSED`]).
pub fn most_recent(
    schedule: &Schedule,
    tz: &k8s_openapi::jiff::tz::TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut t = earliest;
    let mut last = None;
    let mut count = 0;
    while let Some(next) = schedule.next_after(t, tz).filter(|n| *n <= now) {
        last = Some(next);
        count += 1;
        t = next;
        if count > MAX_MISSED {
            // Too many to walk: find the latest one from a window just before `now`.
            let mut window = Duration::from_secs(3600);
            loop {
                let from = (now - window).max(t);
                if let Some(n) = schedule.next_after(from, tz).filter(|n| *n <= now) {
                    let mut latest = n;
                    while let Some(n) = schedule.next_after(latest, tz).filter(|n| *n <= now) {
                        latest = n;
                    }
                    return (Some(latest), count);
                }
                if from == t {
                    return (last, count);
                }
                window *= 2;
            }
        }
    }
    (last, count)
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn event(warning: bool, reason: &'static str, message: String) -> Event {
    Event {
        warning,
        reason,
        message,
        finish: false,
    }
}

/// Decide for `cj` given the Jobs it controls, at `now`.
pub fn plan(cj: &CronJob, jobs: &[&Job], now: Timestamp) -> CronPlan {
    let spec = cj.spec.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let mut out = CronPlan::default();
    let mut status = cj.status.clone().unwrap_or_default();

    // Active: the running Jobs it controls. Finished ones leave (and set lastSuccessfulTime).
    let mut active = Vec::new();
    for j in jobs {
        match finished(j) {
            None => active.push(job_ref(j)),
            Some(how) => {
                let listed = status
                    .active
                    .iter()
                    .flatten()
                    .any(|r| r.uid == j.metadata.uid);
                if listed {
                    out.events.push(event(
                        false,
                        "SawCompletedJob",
                        format!(
                            "Saw completed job: {}, status: {how}",
                            j.metadata.name.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                if how == "Complete" {
                    let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                    if done.as_ref().map(|t| t.0)
                        > status.last_successful_time.as_ref().map(|t| t.0)
                    {
                        status.last_successful_time = done;
                    }
                }
            }
        }
    }
    active.sort_by(|a, b| a.name.cmp(&b.name));

    // History: the oldest finished Jobs beyond each limit go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&&Job> = jobs
            .iter()
            .filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        done.sort_by_key(|j| {
            let s = j.status.as_ref();
            (
                s.and_then(|s| s.start_time.as_ref().map(|t| t.0)).or(j
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)),
                j.metadata.name.clone(),
            )
        });
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        out.prune.extend(
            done[..excess]
                .iter()
                .filter_map(|j| j.metadata.name.clone()),
        );
    }

    let finish = |mut out: CronPlan, mut status: CronJobStatus, active: Vec<ObjectReference>| {
        status.active = (!active.is_empty()).then_some(active);
        out.status = status;
        out
    };
    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return finish(out, status, active);
    }
    let tz = match spec.time_zone.as_deref() {
        None => k8s_openapi::jiff::tz::TimeZone::system(),
        Some(z) => match yun_cron::time_zone(z) {
            Ok(tz) => tz,
            Err(e) => {
                out.events.push(event(
                    true,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {z:?}: {e}"),
                ));
                return finish(out, status, active);
            }
        },
    };
    let schedule: Schedule = match spec.schedule.parse() {
        Ok(s) => s,
        Err(e) => {
            out.events.push(event(
                true,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return finish(out, status, active);
        }
    };
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
    if let Some(sds) = spec.starting_deadline_seconds {
        earliest = earliest.max(now - Duration::from_secs(sds.max(0) as u64));
    }
    let next = schedule.next_after(now, &tz);
    out.requeue = next.map(|n| {
        Duration::try_from(n.duration_since(now)).unwrap_or_default() + Duration::from_millis(100)
    });
    let (scheduled, missed) = most_recent(&schedule, &tz, earliest, now);
    if missed > MAX_MISSED {
        out.events.push(event(
            true,
            "TooManyMissedTimes",
            "too many missed start times (> 100). Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        ));
    }
    let Some(scheduled) = scheduled else {
        return finish(out, status, active);
    };
    if let Some(sds) = spec.starting_deadline_seconds {
        if scheduled + Duration::from_secs(sds.max(0) as u64) < now {
            out.events.push(event(
                true,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {scheduled}"),
            ));
            return finish(out, status, active);
        }
    }
    let jname = job_name(&name, scheduled);
    if jobs
        .iter()
        .any(|j| j.metadata.name.as_deref() == Some(&jname))
    {
        // Started already (the status write after it may have been lost).
        status.last_schedule_time = Some(Time(scheduled));
        return finish(out, status, active);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            out.events.push(event(
                false,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return finish(out, status, active);
        }
        Some("Replace") => {
            out.replace = active.iter().filter_map(|r| r.name.clone()).collect();
            active.clear();
        }
        _ => {}
    }
    let template = spec.job_template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    let job = Job {
        metadata: ObjectMeta {
            name: Some(jname.clone()),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner::controller_ref(
                "batch/v1",
                "CronJob",
                &cj.metadata,
            )]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    active.push(ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(jname),
        namespace: cj.metadata.namespace.clone(),
        ..Default::default()
    });
    out.create = Some(job);
    status.last_schedule_time = Some(Time(scheduled));
    finish(out, status, active)
}
