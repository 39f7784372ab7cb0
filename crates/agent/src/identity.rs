//! What a pod learns about the cluster it runs in, as the kubelet gives it: service-account
//! tokens for its projected volumes (requested through TokenRequest, bound to the pod, and
//! renewed once 80% of their life has passed) and the service environment variables
//! (`KUBERNETES_SERVICE_HOST`, … and, with `enableServiceLinks`, one set per Service of the
//! pod's namespace).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use kube::api::PostParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client};

/// A token the agent holds for a pod's volume.
#[derive(Debug, Clone)]
struct Held {
    token: String,
    /// Unix seconds: when it was issued, and when to replace it.
    refresh_at: i64,
    expires_at: i64,
}

/// The agent's service-account tokens, by (pod uid, audience, lifetime).
#[derive(Default)]
pub struct Tokens {
    held: Mutex<HashMap<(String, String, i64), Held>>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When a token issued at `iat` and expiring at `exp` is renewed: at 80% of its life (the
/// kubelet's rule), so a pod never reads one about to expire.
pub fn refresh_at(iat: i64, exp: i64) -> i64 {
    iat + (exp - iat) * 8 / 10
}

impl Tokens {
    /// The tokens `pod`'s projected volumes need, keyed `VOLUME/PATH`.
    pub async fn for_pod(&self, client: &Client, pod: &Pod) -> Result<HashMap<String, Vec<u8>>> {
        let mut out = HashMap::new();
        let spec = pod.spec.as_ref();
        for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
            for src in sources.into_iter().flatten() {
                let Some(t) = &src.service_account_token else {
                    continue;
                };
                let token = self
                    .get(
                        client,
                        pod,
                        t.audience.as_deref().unwrap_or(""),
                        t.expiration_seconds,
                    )
                    .await
                    .with_context(|| format!("volume {:?}: a service-account token", v.name))?;
                out.insert(format!("{}/{}", v.name, t.path), token.into_bytes());
            }
        }
        Ok(out)
    }

    async fn get(
        &self,
        client: &Client,
        pod: &Pod,
        audience: &str,
        seconds: Option<i64>,
    ) -> Result<String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let seconds = seconds.unwrap_or(3600);
        let key = (uid.clone(), audience.to_string(), seconds);
        let now = unix_now();
        let previous = {
            let mut held = self.held.lock().expect("lock");
            // Forget what has expired (the tokens of pods gone by).
            held.retain(|_, h| h.expires_at > now);
            match held.get(&key) {
                Some(h) if now < h.refresh_at => return Ok(h.token.clone()),
                h => h.map(|h| h.token.clone()),
            }
        };
        match self.request(client, pod, audience, seconds, key, now).await {
            Ok(t) => Ok(t),
            // The server is away or refuses for now: the token held is still good a while.
            Err(e) => previous.ok_or(e),
        }
    }

    async fn request(
        &self,
        client: &Client,
        pod: &Pod,
        audience: &str,
        seconds: i64,
        key: (String, String, i64),
        now: i64,
    ) -> Result<String> {
        let uid = key.0.clone();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if audience.is_empty() {
                    Vec::new()
                } else {
                    vec![audience.to_string()]
                },
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: Some(uid),
                }),
            },
            ..Default::default()
        };
        let answer = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create_token_request(&account, &PostParams::default(), &request)
            .await?;
        let status = answer.status.context("the TokenRequest has no status")?;
        let exp = status.expiration_timestamp.0.as_second();
        let held = Held {
            token: status.token.clone(),
            refresh_at: refresh_at(now, exp),
            expires_at: exp,
        };
        self.held.lock().expect("lock").insert(key, held);
        Ok(status.token)
    }
}

/// The variables one Service gives (docker links' form, as the kubelet writes them).
fn service_vars(svc: &Service, out: &mut Vec<(String, String)>) {
    let Some(spec) = &svc.spec else { return };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    else {
        return;
    };
    let Some(ports) = spec.ports.as_ref().filter(|p| !p.is_empty()) else {
        return;
    };
    let name = svc
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .to_ascii_uppercase()
        .replace('-', "_");
    let first = &ports[0];
    out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
    out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
    for p in ports {
        if let Some(n) = &p.name {
            let n = n.to_ascii_uppercase().replace('-', "_");
            out.push((format!("{name}_SERVICE_PORT_{n}"), p.port.to_string()));
        }
    }
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase()
    };
    out.push((
        format!("{name}_PORT"),
        format!("{}://{ip}:{}", proto(first), first.port),
    ));
    for p in ports {
        let (pr, port) = (proto(p), p.port);
        let base = format!("{name}_PORT_{port}_{}", pr.to_ascii_uppercase());
        out.push((base.clone(), format!("{pr}://{ip}:{port}")));
        out.push((format!("{base}_PROTO"), pr.clone()));
        out.push((format!("{base}_PORT"), port.to_string()));
        out.push((format!("{base}_ADDR"), ip.to_string()));
    }
}

/// The service variables for a pod in `ns`: those of every Service in `ns` when
/// `links` is on, and always those of `default/kubernetes` (the API server).
pub fn service_env(services: &[Arc<Service>], ns: &str, links: bool) -> Vec<(String, String)> {
    let mut chosen: Vec<&Service> = services
        .iter()
        .map(Arc::as_ref)
        .filter(|s| {
            let sns = s.metadata.namespace.as_deref().unwrap_or_default();
            let name = s.metadata.name.as_deref().unwrap_or_default();
            (links && sns == ns) || (sns == "default" && name == "kubernetes")
        })
        .collect();
    chosen.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    chosen.dedup_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    let mut out = Vec::new();
    for s in chosen {
        service_vars(s, &mut out);
    }
    out
}

/// What the agent keeps for every pod: the tokens it holds and the cluster's Services.
pub struct Identity {
    pub tokens: Tokens,
    pub services: Store<Service>,
}

impl Identity {
    pub fn env_for(&self, pod: &Pod) -> Vec<(String, String)> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        service_env(&self.services.state(), ns, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}}))
            .unwrap(),
        )
    }

    #[test]
    fn the_api_server_is_always_in_the_environment() {
        let all = vec![
            svc(
                "default",
                "kubernetes",
                "10.43.0.1",
                serde_json::json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc(
                "team",
                "web-front",
                "10.43.0.9",
                serde_json::json!([{"port": 80}]),
            ),
            svc(
                "other",
                "db",
                "10.43.0.7",
                serde_json::json!([{"port": 5432}]),
            ),
        ];
        let env: HashMap<_, _> = service_env(&all, "team", true).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.43.0.1:443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_ADDR"], "10.43.0.1");
        assert_eq!(env["WEB_FRONT_SERVICE_HOST"], "10.43.0.9");
        assert_eq!(env["WEB_FRONT_PORT_80_TCP_PROTO"], "tcp");
        assert!(
            !env.contains_key("DB_SERVICE_HOST"),
            "another namespace's service"
        );
        let no_links: HashMap<_, _> = service_env(&all, "team", false).into_iter().collect();
        assert!(no_links.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!no_links.contains_key("WEB_FRONT_SERVICE_HOST"));
    }

    #[test]
    fn tokens_are_renewed_at_four_fifths_of_their_life() {
        assert_eq!(refresh_at(1000, 1000 + 3607), 1000 + 2885);
        assert_eq!(refresh_at(0, 600), 480);
    }
}
