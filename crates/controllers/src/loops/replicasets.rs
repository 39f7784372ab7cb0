//! The ReplicaSet loop: keep each ReplicaSet's pod count at spec.replicas.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod as ApiPod;
use kube::{Api, Client};

use super::expectations::Expectations;
use super::{pods, split_key, work, Next};
use crate::cached::Pod;
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
    let namespace_pods: Vec<Pod> = pods.copies_in_namespace(ns);
    if !expectations
        .lock()
        .expect("lock")
        .satisfied(key, &namespace_pods)
    {
        return Ok(Next::After(Duration::from_millis(100)));
    }
    let plan = replicaset::plan(&rs, &namespace_pods);
    let pod_api = Api::<ApiPod>::namespaced(client.clone(), ns);
    let done = pods::carry_out(
        &pod_api,
        &namespace_pods,
        pods::Actions {
            api_version: "apps/v1",
            kind: "ReplicaSet",
            owner: &rs.metadata,
            adopt: &plan.adopt,
            release: &plan.release,
            create: &plan.create,
            delete: &plan.delete,
        },
    )
    .await;
    let mut failure = done.failure;
    expectations
        .lock()
        .expect("lock")
        .expect(key, done.created, done.deleted);
    if rs.status.as_ref() != Some(&plan.status) {
        let api = Api::<ReplicaSet>::namespaced(client, ns);
        if let Err(e) = pods::write_status(&api, name, rs.status.as_ref(), &plan.status).await {
            failure = Some(e);
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(Next::Done),
    }
}
