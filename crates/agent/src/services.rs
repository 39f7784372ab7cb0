//! The node's service proxy (kube-proxy's job): Services and their Endpoints, watched, become
//! the nftables rules of [`yun_net::proxy`], rewritten whole whenever they change.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use yun_net::proxy::{Protocol, ServicePort, ServiceProxy};

/// Coalesce bursts of changes (a rollout touches Endpoints many times) into one rewrite.
const SETTLE: Duration = Duration::from_millis(50);
/// Rewrite even without changes this often, to repair rules someone else flushed.
const RESYNC: Duration = Duration::from_secs(30);

/// Keep the rules for `bridge` in line with the cluster's Services until the task is dropped.
pub async fn run(client: Client, bridge: String) {
    let proxy = match ServiceProxy::new(&bridge) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("service proxy: {e}");
            return;
        }
    };
    let changed = Arc::new(Notify::new());
    let services = reflect::<Service>(client.clone(), changed.clone());
    let endpoints = reflect::<Endpoints>(client, changed.clone());
    let mut applied: Option<Vec<ServicePort>> = None;
    loop {
        let resync = tokio::time::timeout(RESYNC, changed.notified())
            .await
            .is_err();
        tokio::time::sleep(SETTLE).await;
        let want = service_ports(&services.0.state(), &endpoints.0);
        if !resync && applied.as_ref() == Some(&want) {
            continue;
        }
        let proxy = proxy.clone();
        let rules = want.clone();
        match tokio::task::spawn_blocking(move || proxy.apply(&rules)).await {
            Ok(Ok(())) => {
                if applied.as_ref() != Some(&want) {
                    tracing::info!("service proxy: {} service port(s)", want.len());
                }
                applied = Some(want);
            }
            Ok(Err(e)) => tracing::warn!("service proxy: {e}"),
            Err(e) => tracing::warn!("service proxy: {e}"),
        }
    }
}

/// A reflector store for kind K that pokes `changed` on every event; the watch ends with
/// the returned handle.
pub(crate) fn reflect<K>(
    client: Client,
    changed: Arc<Notify>,
) -> (Store<K>, tokio_util::task::AbortOnDropHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!("service proxy watch: {e}");
            }
            changed.notify_one();
        }
    });
    (reader, tokio_util::task::AbortOnDropHandle::new(task))
}

/// Every port of every Service with a virtual IP, with the ready endpoints behind it, sorted
/// so that equal cluster states give equal rules.
fn service_ports(services: &[Arc<Service>], endpoints: &Store<Endpoints>) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless, ExternalName, or not allocated
        };
        let key = reflector::ObjectRef::<Endpoints>::new(&svc.name_any())
            .within(&svc.namespace().unwrap_or_default());
        let eps = endpoints.get(&key);
        let ports = spec.ports.as_deref().unwrap_or_default();
        for sp in ports {
            let Some(protocol) = protocol(sp.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let targets = eps
                .as_deref()
                .map(|e| targets(e, sp.name.as_deref(), ports.len(), sp.protocol.as_deref()))
                .unwrap_or_default();
            out.push(ServicePort {
                cluster_ip: ip,
                port,
                protocol,
                endpoints: targets,
            });
        }
    }
    out.sort();
    out
}

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// The ready addresses behind the service port named `name` (the Endpoints controller names
/// each subset port after its service port; a single-port Service may leave both unnamed).
fn targets(
    eps: &Endpoints,
    name: Option<&str>,
    service_ports: usize,
    proto: Option<&str>,
) -> Vec<(Ipv4Addr, u16)> {
    let mut out: BTreeMap<(Ipv4Addr, u16), ()> = BTreeMap::new();
    for subset in eps.subsets.as_deref().unwrap_or_default() {
        let port = subset
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| {
                let same_name = p.name.as_deref().unwrap_or("") == name.unwrap_or("");
                let same_proto = p.protocol.as_deref().unwrap_or("TCP") == proto.unwrap_or("TCP");
                same_proto && (same_name || service_ports == 1)
            });
        let Some(port) = port.and_then(|p| u16::try_from(p.port).ok()) else {
            continue;
        };
        for a in subset.addresses.as_deref().unwrap_or_default() {
            if let Ok(ip) = a.ip.parse::<Ipv4Addr>() {
                out.insert((ip, port), ());
            }
        }
    }
    out.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_ports_pick_their_subset_port() {
        let eps: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "10.42.0.6"}, {"ip": "10.42.0.5"}],
                "notReadyAddresses": [{"ip": "10.42.0.7"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "metrics", "port": 9090, "protocol": "TCP"}]
            }]
        }))
        .unwrap();
        let http = targets(&eps, Some("http"), 2, Some("TCP"));
        assert_eq!(
            http,
            vec![
                ("10.42.0.5".parse().unwrap(), 8080),
                ("10.42.0.6".parse().unwrap(), 8080)
            ]
        );
        assert_eq!(targets(&eps, Some("metrics"), 2, None)[0].1, 9090);
        assert!(targets(&eps, Some("http"), 2, Some("UDP")).is_empty());
    }
}
