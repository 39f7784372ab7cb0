//! The Job loop: run each Job's pods to its completions (see [`crate::job`] for the decision)
//! and carry out the finalizer-based counting in the order that makes it restart-safe:
//! record finished pods in the Job's status, then remove their finalizers, then count them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::Pod as ApiPod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use yun_agent::events::{reference, EventType, Recorder};

use super::{is_status, split_key, work, Next};
use crate::cached::Pod;
use crate::job::{self, Backoff, TRACKING_FINALIZER};
use crate::owner;
use crate::runtime::{enqueue_adopters, enqueue_controller, enqueue_self, Informer, WorkQueue};

/// Give up waiting for the cache to show our writes after this long.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What this controller did that the pod cache may not show yet, per Job (kube's
/// expectations): pods created or deleted, and finalizers removed. Deciding on a cache that
/// misses them would create twice, or count a pod twice.
#[derive(Default)]
struct Memory {
    pending: HashMap<String, (HashSet<String>, HashSet<String>, Instant)>,
    finalizers_removed: HashMap<String, (HashSet<String>, Instant)>,
    backoff: HashMap<String, Backoff>,
}

struct Ctx {
    client: Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    memory: Mutex<Memory>,
    events: Recorder,
}

pub async fn run(client: Client, workers: usize, shared: super::Shared) {
    let queue = WorkQueue::new();
    let jobs = shared.jobs.clone();
    jobs.add_handler(enqueue_self(queue.clone()));
    let pods = shared.pods.clone();
    pods.add_handler(enqueue_controller(queue.clone(), "Job"));
    pods.add_handler(enqueue_adopters(queue.clone(), jobs.clone(), |j| {
        j.spec.as_ref().and_then(|s| s.selector.as_ref())
    }));
    jobs.synced().await;
    pods.synced().await;
    let ctx = Arc::new(Ctx {
        events: Recorder::new(client.clone(), "job-controller", None),
        client,
        jobs,
        pods,
        memory: Mutex::default(),
    });
    work(queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { reconcile(&key, &ctx).await }
    })
    .await;
}

fn pod_names(pods: &[Pod]) -> HashSet<&str> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.as_deref())
        .collect()
}

/// Remove the tracking finalizer from `pod`, only at the version read (a concurrent change
/// wins; the next pass decides again). True once the pod no longer holds it.
async fn remove_finalizer(api: &Api<ApiPod>, pod: &Pod) -> kube::Result<bool> {
    let rest: Vec<&String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": pod.metadata.resource_version,
    }});
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 404) => Ok(true),
        Err(e) if is_status(&e, 409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replace the Job's status at the version read (a stale cache must not write counts back).
async fn write_status(api: &Api<Job>, job: &Job, status: &JobStatus) -> anyhow::Result<Job> {
    let mut j = job.clone();
    j.status = Some(status.clone());
    let name = job.metadata.name.clone().unwrap_or_default();
    Ok(api
        .replace_status(&name, &PostParams::default(), &j)
        .await?)
}

/// Pods left holding the finalizer by a Job that is gone (or another Job of that name).
async fn release_orphans(ctx: &Ctx, ns: &str, name: &str, uid: Option<&str>) -> anyhow::Result<()> {
    let api = Api::<ApiPod>::namespaced(ctx.client.clone(), ns);
    for p in ctx.pods.list_namespace(ns) {
        let orphan = owner::controller_of(&p.metadata)
            .is_some_and(|o| o.kind == "Job" && o.name == name && Some(o.uid.as_str()) != uid);
        let holds = p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == TRACKING_FINALIZER);
        if orphan && holds {
            remove_finalizer(&api, &p).await?;
        }
    }
    Ok(())
}

async fn reconcile(key: &str, ctx: &Ctx) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(job) = ctx.jobs.get(key) else {
        {
            let mut m = ctx.memory.lock().expect("lock");
            m.pending.remove(key);
            m.finalizers_removed.remove(key);
            m.backoff.remove(key);
        }
        release_orphans(ctx, ns, name, None).await?;
        return Ok(Next::Done);
    };
    let uid = job.metadata.uid.clone().unwrap_or_default();
    release_orphans(ctx, ns, name, Some(&uid)).await?;
    let namespace_pods: Vec<Pod> = ctx.pods.copies_in_namespace(ns);
    let pod_api = Api::<ApiPod>::namespaced(ctx.client.clone(), ns);
    if job.metadata.deletion_timestamp.is_some() {
        // Going away: its pods go with it, and must not be held by the finalizer.
        for p in namespace_pods
            .iter()
            .filter(|p| owner::controlled_by(&p.metadata, &uid))
        {
            if p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == TRACKING_FINALIZER)
            {
                remove_finalizer(&pod_api, p).await?;
            }
        }
        return Ok(Next::Done);
    }
    let removed: HashSet<String> = {
        let mut m = ctx.memory.lock().expect("lock");
        if let Some((adds, dels, since)) = m.pending.get(key) {
            let seen = pod_names(&namespace_pods);
            let caught_up = adds.iter().all(|n| seen.contains(n.as_str()))
                && dels.iter().all(|n| !seen.contains(n.as_str()));
            if caught_up || since.elapsed() > EXPECTATION_TIMEOUT {
                m.pending.remove(key);
            } else {
                return Ok(Next::After(Duration::from_millis(100)));
            }
        }
        // Finalizers we removed: forget each once the cache shows it gone.
        let still: HashSet<&str> = namespace_pods
            .iter()
            .filter(|p| {
                p.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == TRACKING_FINALIZER)
            })
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        match m.finalizers_removed.get_mut(key) {
            Some((set, since)) if since.elapsed() < EXPECTATION_TIMEOUT => {
                set.retain(|u| still.contains(u.as_str()));
                set.clone()
            }
            _ => {
                m.finalizers_removed.remove(key);
                HashSet::new()
            }
        }
    };

    // ControllerRef: adopt matching orphans (a manual selector), release what no longer matches.
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let claim = owner::claim(
        &job.metadata,
        &selector,
        namespace_pods.iter().map(|p| &p.metadata),
    );
    for p in &namespace_pods {
        let pname = p.metadata.name.clone().unwrap_or_default();
        if claim.adopt.contains(&pname) {
            let reference = owner::controller_ref("batch/v1", "Job", &job.metadata);
            super::set_owners(
                &pod_api,
                &p.metadata,
                owner::adopted_refs(&p.metadata, reference),
            )
            .await?;
        } else if claim.release.contains(&pname) {
            super::set_owners(
                &pod_api,
                &p.metadata,
                owner::released_refs(&p.metadata, &uid),
            )
            .await?;
        }
    }
    let owned: Vec<&Pod> = namespace_pods
        .iter()
        .filter(|p| {
            let n = p.metadata.name.clone().unwrap_or_default();
            !claim.release.contains(&n)
                && (owner::controlled_by(&p.metadata, &uid) || claim.adopt.contains(&n))
        })
        .collect();

    let now = Timestamp::now();
    let backoff = ctx
        .memory
        .lock()
        .expect("lock")
        .backoff
        .get(key)
        .cloned()
        .unwrap_or_default();
    let plan = job::plan(&job, &owned, &backoff, &removed, now);
    let object = reference("batch/v1", "Job", &job.metadata);
    let mut failure: Option<anyhow::Error> = None;

    // Pods first: creations and deletions.
    let mut created = HashSet::new();
    for pod in &plan.create {
        match pod_api.create(&PostParams::default(), pod).await {
            Ok(p) => {
                let n = p.metadata.name.unwrap_or_default();
                ctx.events.record(
                    &object,
                    EventType::Normal,
                    "SuccessfulCreate",
                    "",
                    &format!("Created pod: {n}"),
                );
                created.insert(n);
            }
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
    }
    let mut deleted = HashSet::new();
    for pname in &plan.delete {
        let Some(p) = owned
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pname))
        else {
            continue;
        };
        // A pod this controller stops is not a failure: it stops being tracked first.
        if p.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == TRACKING_FINALIZER)
            && !remove_finalizer(&pod_api, p).await?
        {
            continue;
        }
        match pod_api.delete(pname, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.events.record(
                    &object,
                    EventType::Normal,
                    "SuccessfulDelete",
                    "",
                    &format!("Deleted pod: {pname}"),
                );
                deleted.insert(pname.clone());
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => failure = Some(e.into()),
        }
    }
    if !created.is_empty() || !deleted.is_empty() {
        ctx.memory
            .lock()
            .expect("lock")
            .pending
            .insert(key.to_string(), (created, deleted, Instant::now()));
    }

    // Record finished pods, then release them, then count them.
    let api = Api::<Job>::namespaced(ctx.client.clone(), ns);
    let mut current = (*job).clone();
    let mut status = plan.status.clone();
    let mut counted = plan.countable.clone();
    if !plan.remove_finalizer.is_empty() {
        if current.status.as_ref() != Some(&status) {
            // Recorded before any finalizer comes off: a crash after this loses nothing.
            current = write_status(&api, &current, &status).await?;
        }
        let mut m_backoff = backoff.clone();
        if plan.newly_succeeded > 0 {
            m_backoff.failures = 0;
        }
        if plan.newly_failed > 0 {
            m_backoff.failures += plan.newly_failed;
            m_backoff.last_failure = Some(now);
        }
        ctx.memory
            .lock()
            .expect("lock")
            .backoff
            .insert(key.to_string(), m_backoff);
        let mut just_removed = Vec::new();
        for (pname, puid) in &plan.remove_finalizer {
            let Some(p) = owned
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(pname))
            else {
                continue;
            };
            match remove_finalizer(&pod_api, p).await {
                Ok(true) => just_removed.push(puid.clone()),
                Ok(false) => {}
                Err(e) => failure = Some(e.into()),
            }
        }
        {
            let mut m = ctx.memory.lock().expect("lock");
            let entry = m
                .finalizers_removed
                .entry(key.to_string())
                .or_insert_with(|| (HashSet::new(), Instant::now()));
            entry.0.extend(just_removed.iter().cloned());
            entry.1 = Instant::now();
        }
        counted.extend(just_removed);
    }
    job::settle(&mut status, &counted, plan.finished.clone(), now);
    if current.status.as_ref() != Some(&status) {
        write_status(&api, &current, &status).await?;
    }
    let finished = plan.finished.as_ref().is_some_and(|f| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == f.type_)
    });
    for e in plan.events.iter().filter(|e| !e.finish || finished) {
        let kind = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.events.record(&object, kind, e.reason, "", &e.message);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(match plan.requeue {
        Some(d) => Next::After(d),
        None => Next::Done,
    })
}
