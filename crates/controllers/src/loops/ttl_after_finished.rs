//! The TTL-after-finished loop: a finished Job with `spec.ttlSecondsAfterFinished` is deleted
//! (in the background: the garbage collector takes its pods) that long after it finished.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client};

use super::{is_status, split_key, work, Next};
use crate::runtime::{enqueue_self, WorkQueue};

/// When `job` finished (its Complete or Failed condition's transition), if it did.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::now(), |t| t.0)
        })
}

/// How long until `job` expires at `now`: None if it never does (no TTL, not finished).
pub fn expires_in(job: &Job, now: Timestamp) -> Option<Duration> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let end = finished_at(job)? + Duration::from_secs(ttl.max(0) as u64);
    Some(Duration::try_from(end.duration_since(now)).unwrap_or_default())
}

pub async fn run(client: Client, shared: super::Shared) {
    let queue = WorkQueue::new();
    let jobs = shared.jobs.clone();
    jobs.add_handler(enqueue_self(queue.clone()));
    jobs.synced().await;
    work(queue, 1, move |key| {
        let (client, jobs) = (client.clone(), jobs.clone());
        async move {
            let Some(job) = jobs.get(&key) else {
                return Ok(Next::Done);
            };
            if job.metadata.deletion_timestamp.is_some() {
                return Ok(Next::Done);
            }
            match expires_in(&job, Timestamp::now()) {
                None => Ok(Next::Done),
                Some(d) if !d.is_zero() => Ok(Next::After(d)),
                Some(_) => {
                    let (ns, name) = split_key(&key);
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: job.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::background()
                    };
                    match Api::<Job>::namespaced(client, ns).delete(name, &dp).await {
                        Ok(_) => Ok(Next::Done),
                        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(Next::Done),
                        Err(e) => Err(e.into()),
                    }
                }
            }
        }
    })
    .await;
}
