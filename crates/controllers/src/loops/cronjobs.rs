//! The CronJob loop: start each CronJob's Jobs on its schedule (see [`crate::cronjob`] for the
//! decision), keep its history within the limits and its status current.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, WatchParams};
use kube::{Api, Client};
use yun_agent::events::{reference, EventType, Recorder};

use super::{is_status, split_key, work, Next};
use crate::cronjob;
use crate::owner;
use crate::runtime::{enqueue_controller, enqueue_self, Informer, WorkQueue};

pub async fn run(client: Client, workers: usize, shared: super::Shared) {
    let queue = WorkQueue::new();
    let cronjobs = Arc::new(Informer::start(
        Api::<CronJob>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(60),
        enqueue_self(queue.clone()),
    ));
    let jobs = shared.jobs.clone();
    jobs.add_handler(enqueue_controller(queue.clone(), "CronJob"));
    cronjobs.synced().await;
    jobs.synced().await;
    let events = Recorder::new(client.clone(), "cronjob-controller", None);
    work(queue, workers, move |key| {
        let (client, cronjobs, jobs, events) = (
            client.clone(),
            cronjobs.clone(),
            jobs.clone(),
            events.clone(),
        );
        async move { reconcile(&key, client, &cronjobs, &jobs, &events).await }
    })
    .await;
}

async fn reconcile(
    key: &str,
    client: Client,
    cronjobs: &Informer<CronJob>,
    jobs: &Informer<Job>,
    events: &Recorder,
) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(cj) = cronjobs.get(key) else {
        return Ok(Next::Done);
    };
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<Arc<Job>> = jobs
        .list_namespace(ns)
        .into_iter()
        .filter(|j| owner::controlled_by(&j.metadata, &uid))
        .collect();
    let refs: Vec<&Job> = owned.iter().map(|j| &**j).collect();
    let mut plan = cronjob::plan(&cj, &refs, Timestamp::now());
    let object = reference("batch/v1", "CronJob", &cj.metadata);
    let job_api = Api::<Job>::namespaced(client.clone(), ns);
    let say = |kind: EventType, reason: &str, message: &str| {
        events.record(&object, kind, reason, "", message);
    };
    for j in plan.replace.iter().chain(plan.prune.iter()) {
        match job_api.delete(j, &DeleteParams::background()).await {
            Ok(_) => say(
                EventType::Normal,
                "SuccessfulDelete",
                &format!("Deleted job {j}"),
            ),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(job) = &plan.create {
        let jname = job.metadata.name.clone().unwrap_or_default();
        let made = match job_api.create(&PostParams::default(), job).await {
            Ok(j) => {
                say(
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created job {jname}"),
                );
                Some(j)
            }
            // Made already (the cache is behind): the next pass sees it.
            Err(e) if is_status(&e, 409) => job_api.get_opt(&jname).await?,
            Err(e) => {
                say(
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating job: {e}"),
                );
                return Err(e.into());
            }
        };
        if let (Some(j), Some(active)) = (made, plan.status.active.as_mut()) {
            for r in active
                .iter_mut()
                .filter(|r| r.name.as_deref() == Some(&jname))
            {
                *r = ObjectReference {
                    api_version: Some("batch/v1".into()),
                    kind: Some("Job".into()),
                    name: j.metadata.name.clone(),
                    namespace: j.metadata.namespace.clone(),
                    uid: j.metadata.uid.clone(),
                    resource_version: j.metadata.resource_version.clone(),
                    ..Default::default()
                };
            }
        }
    }
    for e in &plan.events {
        let kind = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        say(kind, e.reason, &e.message);
    }
    if cj.status.as_ref() != Some(&plan.status) {
        let mut c = (*cj).clone();
        c.status = Some(plan.status.clone());
        match Api::<CronJob>::namespaced(client, ns)
            .replace_status(name, &PostParams::default(), &c)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(Next::Done),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(match plan.requeue {
        Some(d) => Next::After(d),
        None => Next::Done,
    })
}
