//! The endpoints loop: for every Service with a selector, an Endpoints object listing the
//! addresses of its ready pods (and, apart, the not-ready ones) with the service's ports.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{PostParams, WatchParams};
use kube::{Api, Client};

use super::{is_status, split_key, work, Next};
use crate::cached::Pod;
use crate::replicaset::{is_active, is_ready};
use crate::runtime::{enqueue_self, key_of, Change, Informer, WorkQueue};

pub async fn run(client: Client, shared: super::Shared) {
    let queue = WorkQueue::new();
    let services = Arc::new(Informer::start(
        Api::<Service>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(300),
        enqueue_self(queue.clone()),
    ));
    let q = queue.clone();
    let svc = services.clone();
    let pods = shared.pods.clone();
    pods.add_handler(move |c: Change<'_, Pod>| {
        let p = c.object();
        // Any service of the pod's namespace may select it.
        for s in svc.list_namespace(p.metadata.namespace.as_deref().unwrap_or("")) {
            q.add(&key_of(&*s));
        }
    });
    services.synced().await;
    pods.synced().await;
    work(queue, 1, move |key| {
        let (client, services, pods) = (client.clone(), services.clone(), pods.clone());
        async move { reconcile(&key, client, &services, &pods).await }
    })
    .await;
}

/// The Endpoints a service should have, given the pods of its namespace.
pub fn desired(service: &Service, pods: &[Arc<Pod>]) -> Option<Endpoints> {
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let mut selected: Vec<&Pod> = Vec::new();
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) || !is_active(p) {
            continue;
        }
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                namespace: p.metadata.namespace.clone(),
                uid: p.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        selected.push(p);
        if is_ready(p) {
            ready.push(address);
        } else {
            not_ready.push(address);
        }
    }
    ready.sort_by(|a, b| a.ip.cmp(&b.ip));
    not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
    // Ports: targetPort as a number, or a named port looked up in the selected pods' containers.
    let ports: Vec<EndpointPort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let port = match &sp.target_port {
                None => sp.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => selected.iter().find_map(|p| {
                    p.spec.as_ref()?.containers.iter().find_map(|c| {
                        c.ports
                            .iter()
                            .flatten()
                            .find(|cp| cp.name.as_deref() == Some(name))
                            .map(|cp| cp.container_port)
                    })
                })?,
            };
            Some(EndpointPort {
                name: sp.name.clone(),
                port,
                protocol: sp.protocol.clone().or_else(|| Some("TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    let subsets = if ready.is_empty() && not_ready.is_empty() {
        None
    } else {
        Some(vec![EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        }])
    };
    Some(Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: service.metadata.labels.clone(),
            ..Default::default()
        },
        subsets,
    })
}

async fn reconcile(
    key: &str,
    client: Client,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(service) = services.get(key) else {
        // The service is gone; its Endpoints go with it (owner GC does not apply: no owner ref).
        let api = Api::<Endpoints>::namespaced(client, ns);
        match api.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Next::Done);
    };
    let Some(want) = desired(&service, &pods.list_namespace(ns)) else {
        return Ok(Next::Done);
    };
    let api = Api::<Endpoints>::namespaced(client, ns);
    match api.get_opt(name).await? {
        None => {
            api.create(&PostParams::default(), &want).await?;
        }
        Some(mut have) if have.subsets != want.subsets => {
            have.subsets = want.subsets;
            api.replace(name, &PostParams::default(), &have).await?;
        }
        Some(_) => {}
    }
    Ok(Next::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, app: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip,
                           "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_and_not_ready_addresses_with_named_ports() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap();
        let pods = [
            pod("b", "10.88.0.3", true, "web"),
            pod("a", "10.88.0.2", true, "web"),
            pod("c", "10.88.0.4", false, "web"),
            pod("other", "10.88.0.5", true, "db"),
        ];
        let ep = desired(&svc, &pods).unwrap();
        let subset = &ep.subsets.unwrap()[0];
        let ips: Vec<&str> = subset
            .addresses
            .as_ref()
            .unwrap()
            .iter()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, ["10.88.0.2", "10.88.0.3"]);
        assert_eq!(
            subset.not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.88.0.4"
        );
        assert_eq!(subset.ports.as_ref().unwrap()[0].port, 8080);
        // No selector: no Endpoints managed here.
        let mut bare = svc.clone();
        bare.spec.as_mut().unwrap().selector = None;
        assert!(desired(&bare, &pods).is_none());
    }
}
