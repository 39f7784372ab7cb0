//! The disruption loop: keep each PodDisruptionBudget's status (what the eviction
//! subresource spends) current with its pods and their controllers' scale.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{PostParams, WatchParams};
use kube::{Api, Client};

use super::{is_status, split_key, work, Next};
use crate::cached::Pod;
use crate::disruption;
use crate::runtime::{enqueue_self, key_of, Informer, WorkQueue};

/// Budgets are looked at again this often even without a change seen: a pod whose labels
/// moved out of a selector is reported by the informer only under its new labels.
const RESYNC: Duration = Duration::from_secs(30);

pub async fn run(client: Client, shared: super::Shared) {
    let queue = WorkQueue::new();
    let budgets = Arc::new(Informer::start(
        Api::<PodDisruptionBudget>::all(client.clone()),
        WatchParams::default(),
        RESYNC,
        enqueue_self(queue.clone()),
    ));
    // A change of scale changes what a budget expects: its namespace's budgets look again.
    let deployments = Arc::new(Informer::start(
        Api::<Deployment>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(300),
        enqueue_namespace(queue.clone(), budgets.clone()),
    ));
    let sets = shared.replicasets.clone();
    sets.add_handler(enqueue_namespace(queue.clone(), budgets.clone()));
    let stateful = shared.statefulsets.clone();
    stateful.add_handler(enqueue_namespace(queue.clone(), budgets.clone()));
    let pods = shared.pods.clone();
    {
        let (queue, budgets) = (queue.clone(), budgets.clone());
        pods.add_handler(move |c| {
            let pod = c.object();
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            for b in budgets.list_namespace(ns) {
                if disruption::selects(&b, pod) {
                    queue.add(&key_of(&*b));
                }
            }
        });
    }
    budgets.synced().await;
    deployments.synced().await;
    sets.synced().await;
    stateful.synced().await;
    pods.synced().await;
    let owners = Arc::new(Owners {
        sets,
        deployments,
        stateful,
    });
    work(queue, 2, move |key| {
        let (client, budgets, pods, owners) = (
            client.clone(),
            budgets.clone(),
            pods.clone(),
            owners.clone(),
        );
        async move { reconcile(&key, client, &budgets, &pods, &owners).await }
    })
    .await;
}

/// A handler queueing every budget in the changed object's namespace.
fn enqueue_namespace<K: kube::Resource>(
    queue: WorkQueue,
    budgets: Arc<Informer<PodDisruptionBudget>>,
) -> impl Fn(crate::runtime::Change<'_, K>) + Send + Sync {
    move |c| {
        let ns = c.object().meta().namespace.clone().unwrap_or_default();
        for b in budgets.list_namespace(&ns) {
            queue.add(&key_of(&*b));
        }
    }
}

/// The caches of the controllers whose scale a budget reads.
struct Owners {
    sets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    stateful: Arc<Informer<StatefulSet>>,
}

async fn reconcile(
    key: &str,
    client: Client,
    budgets: &Informer<PodDisruptionBudget>,
    pods: &Informer<Pod>,
    owners: &Owners,
) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(pdb) = budgets.get(key) else {
        return Ok(Next::Done);
    };
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Next::Done);
    }
    let namespace_pods = pods.list_namespace(ns);
    let selected: Vec<&Pod> = namespace_pods
        .iter()
        .map(|p| &**p)
        .filter(|p| disruption::selects(&pdb, p))
        .collect();
    let scale = |owner: &OwnerReference| scale_of(ns, owner, owners);
    let decision = disruption::decide(&pdb, &selected, scale, Timestamp::now());
    let next = match decision.recheck {
        Some(d) => Next::After(d.min(RESYNC)),
        None => Next::Done,
    };
    if pdb.status.as_ref() == Some(&decision.status) {
        return Ok(next);
    }
    let mut updated = (*pdb).clone();
    updated.status = Some(decision.status);
    // A replace carries the resourceVersion read: an eviction that spent a disruption
    // meanwhile makes this a conflict, and the budget is decided again from what it wrote.
    let api = Api::<PodDisruptionBudget>::namespaced(client, ns);
    match api
        .replace_status(name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(next),
        Err(e) if is_status(&e, 404) => Ok(Next::Done),
        Err(e) => Err(e.into()),
    }
}

/// The object whose scale a pod's controller stands for, and its replicas: a ReplicaSet's
/// Deployment when one controls it (a rollout's old and new sets then count once, as the
/// Deployment), else the ReplicaSet; a StatefulSet; None for controllers without a scale
/// here (the pod then expects only itself).
fn scale_of(ns: &str, owner: &OwnerReference, owners: &Owners) -> Option<(String, i32)> {
    let (sets, deployments) = (&owners.sets, &owners.deployments);
    let group = owner.api_version.split('/').next().unwrap_or("");
    let deployment = |name: &str| {
        let dep = deployments.get(&format!("{ns}/{name}"))?;
        let replicas = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Some((dep.metadata.uid.clone()?, replicas))
    };
    match (group, owner.kind.as_str()) {
        ("apps", "ReplicaSet") => {
            let rs = sets.get(&format!("{ns}/{}", owner.name))?;
            if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                return None;
            }
            match crate::owner::controller_of(&rs.metadata) {
                Some(d) if d.kind == "Deployment" => deployment(&d.name),
                _ => {
                    let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    Some((owner.uid.clone(), replicas))
                }
            }
        }
        ("apps", "Deployment") => deployment(&owner.name),
        ("apps", "StatefulSet") => {
            let set = owners.stateful.get(&format!("{ns}/{}", owner.name))?;
            if set.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                return None;
            }
            let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            Some((owner.uid.clone(), replicas))
        }
        _ => None,
    }
}
