//! The ReplicaSet loop: keep each ReplicaSet's pod count at spec.replicas.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod as ApiPod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::expectations::Expectations;
use super::{is_status, split_key, work, Next};
use crate::cached::Pod;
use crate::owner;
use crate::replicaset;
use crate::runtime::{enqueue_adopters, enqueue_controller, enqueue_self, Informer, WorkQueue};

pub async fn run(client: Client, workers: usize, shared: super::Shared) {
    let queue = WorkQueue::new();
    let sets = shared.replicasets.clone();
    sets.add_handler(enqueue_self(queue.clone()));
    let pods = shared.pods.clone();
    pods.add_handler(enqueue_controller(queue.clone(), "ReplicaSet"));
    pods.add_handler(enqueue_adopters(queue.clone(), sets.clone(), |rs| {
        rs.spec.as_ref().map(|s| &s.selector)
    }));
    sets.synced().await;
    pods.synced().await;
    let expectations = Arc::new(Mutex::new(Expectations::default()));
    work(queue, workers, move |key| {
        let (client, sets, pods, expectations) = (
            client.clone(),
            sets.clone(),
            pods.clone(),
            expectations.clone(),
        );
        async move { reconcile(&key, client, &sets, &pods, &expectations).await }
    })
    .await;
}

async fn reconcile(
    key: &str,
    client: Client,
    sets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
    expectations: &Mutex<Expectations>,
) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(rs) = sets.get(key) else {
        expectations.lock().expect("lock").forget(key);
        return Ok(Next::Done);
    };
    let namespace_pods: Vec<Pod> = pods
        .list_namespace(ns)
        .iter()
        .map(|p| (**p).clone())
        .collect();
    if !expectations
        .lock()
        .expect("lock")
        .satisfied(key, &namespace_pods)
    {
        return Ok(Next::After(Duration::from_millis(100)));
    }
    let plan = replicaset::plan(&rs, &namespace_pods);
    let pod_api = Api::<ApiPod>::namespaced(client.clone(), ns);
    let mut created = HashSet::new();
    let mut deleted = HashSet::new();
    let mut failure = None;
    for pod in namespace_pods.iter() {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let refs = if plan.adopt.contains(&name) {
            let reference = owner::controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
            owner::adopted_refs(&pod.metadata, reference)
        } else if plan.release.contains(&name) {
            owner::released_refs(
                &pod.metadata,
                rs.metadata.uid.as_deref().unwrap_or_default(),
            )
        } else {
            continue;
        };
        if let Err(e) = super::set_owners(&pod_api, &pod.metadata, refs).await {
            failure = Some(e);
        }
    }
    for pod in &plan.create {
        match pod_api.create(&PostParams::default(), pod).await {
            Ok(p) => {
                created.insert(p.metadata.name.unwrap_or_default());
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    for name in &plan.delete {
        match pod_api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                deleted.insert(name.clone());
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => failure = Some(e),
        }
    }
    expectations
        .lock()
        .expect("lock")
        .expect(key, created, deleted);
    if rs.status.as_ref() != Some(&plan.status) {
        let api = Api::<ReplicaSet>::namespaced(client, ns);
        let patch = json!({"status": plan.status});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => failure = Some(e),
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(Next::Done),
    }
}
