//! Service virtual IPs: what kube-apiserver's service REST storage does on create and update.
//!
//! A new Service of type ClusterIP (or NodePort/LoadBalancer) gets `spec.clusterIP` from the
//! service range (`--service-cidr`, 10.43.0.0/16 by default, as in k3s) unless it asks for one
//! or for `None` (headless). An IP is claimed with a create-only key
//! `/registry/yun/serviceips/<ip>` naming the Service's key and uid. Nothing has to release it:
//! a claim whose Service is gone (or is another object by now) is stale and is taken over by
//! the next allocation that meets it, so no delete path (API, garbage collector, namespace
//! deletion) needs to know about IPs.

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde_json::{json, Value};
use yun_store::Outcome;

use crate::error::{ApiError, ApiResult, Cause};
use crate::meta::str_at;
use crate::Api;

const CLAIMS: &str = "/registry/yun/serviceips/";

/// The range Service IPs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRange {
    network: u32,
    prefix: u8,
}

/// k3s' default `--service-cidr`.
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";

impl FromStr for ServiceRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("service CIDR {s:?}: expected A.B.C.D/N with N in 8..=30");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceRange {
            network: u32::from(addr) & mask,
            prefix,
        })
    }
}

impl Default for ServiceRange {
    fn default() -> Self {
        DEFAULT_SERVICE_CIDR
            .parse()
            .expect("valid default service CIDR")
    }
}

impl std::fmt::Display for ServiceRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

impl ServiceRange {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(self.network) < self.size()
    }

    /// The first host address, the `kubernetes` Service's.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// Assignable addresses: not the network, not the broadcast, and not the first host,
    /// which Kubernetes keeps for the `kubernetes` Service.
    fn assignable(&self, ip: Ipv4Addr) -> bool {
        let off = u32::from(ip).wrapping_sub(self.network);
        self.contains(ip) && off >= 2 && off < self.size() - 1
    }
}

/// Whether a Service of this spec gets a virtual IP at all.
fn wants_ip(obj: &Value) -> bool {
    str_at(obj, "/spec/type") != Some("ExternalName")
        && str_at(obj, "/spec/clusterIP") != Some("None")
}

/// Defaults Kubernetes fills in a Service: type, session affinity, traffic policies, IP
/// family, and each port's protocol and targetPort.
pub fn defaults(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    if spec.get("type").is_none() {
        spec["type"] = "ClusterIP".into();
    }
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = "None".into();
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP")
        && spec
            .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .is_none()
    {
        // Three hours, kube's DefaultClientIPServiceAffinitySeconds.
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
    }
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let external = ty == "NodePort" || ty == "LoadBalancer";
    if spec.get("internalTrafficPolicy").is_none() && (external || ty == "ClusterIP") {
        spec["internalTrafficPolicy"] = "Cluster".into();
    }
    if spec.get("externalTrafficPolicy").is_none() && external {
        spec["externalTrafficPolicy"] = "Cluster".into();
    }
    if spec.get("allocateLoadBalancerNodePorts").is_none() && ty == "LoadBalancer" {
        spec["allocateLoadBalancerNodePorts"] = true.into();
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("protocol").is_none() {
                p["protocol"] = "TCP".into();
            }
            if p.get("targetPort").is_none() {
                if let Some(port) = p.get("port").cloned() {
                    p["targetPort"] = port;
                }
            }
        }
    }
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        spec["ipFamilies"] = json!(["IPv4"]);
        spec["ipFamilyPolicy"] = "SingleStack".into();
    }
}

fn invalid(obj: &Value, field: &str, msg: String) -> ApiError {
    let name = str_at(obj, "/metadata/name").unwrap_or("");
    ApiError::invalid("Service", name, "", vec![Cause::invalid(field, &msg)])
}

/// Give a new Service (stored under `key`) its virtual IP: the one it asked for if free,
/// else the next free one after a random start.
pub async fn allocate(api: &Api, key: &str, obj: &mut Value) -> ApiResult<()> {
    if !wants_ip(obj) {
        return Ok(());
    }
    let range = api.service_range;
    let uid = str_at(obj, "/metadata/uid").unwrap_or("").to_string();
    let claim = json!({"service": key, "uid": uid}).to_string().into_bytes();
    let asked = str_at(obj, "/spec/clusterIP").filter(|s| !s.is_empty());
    let ip = match asked {
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| {
                invalid(
                    obj,
                    "spec.clusterIP",
                    format!("{s:?}: must be a valid IPv4 address"),
                )
            })?;
            let reserved =
                key == "/registry/core/services/default/kubernetes" && ip == range.first_host();
            if !range.assignable(ip) && !reserved {
                return Err(invalid(
                    obj,
                    "spec.clusterIP",
                    format!("{ip}: not in the service range {range} (or reserved)"),
                ));
            }
            if !try_claim(api, ip, &claim).await? {
                return Err(invalid(
                    obj,
                    "spec.clusterIP",
                    format!("{ip}: provided IP is already allocated"),
                ));
            }
            ip
        }
        None => {
            let size = range.size();
            let start = crate::meta::random_u32() % size;
            let mut found = None;
            for step in 0..size {
                let ip = Ipv4Addr::from(range.network + (start + step) % size);
                if range.assignable(ip) && try_claim(api, ip, &claim).await? {
                    found = Some(ip);
                    break;
                }
            }
            found.ok_or_else(|| {
                invalid(
                    obj,
                    "spec.clusterIP",
                    format!("the service range {range} is full"),
                )
            })?
        }
    };
    obj["spec"]["clusterIP"] = ip.to_string().into();
    obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
    Ok(())
}

/// Claim `ip`: a free one, or one whose claim is stale (its Service is gone or replaced).
async fn try_claim(api: &Api, ip: Ipv4Addr, claim: &[u8]) -> ApiResult<bool> {
    let key = format!("{CLAIMS}{ip}");
    let expected = match api.store.get(&key).await? {
        None => 0,
        Some(kv) => {
            let held: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            let service = held.get("service").and_then(Value::as_str).unwrap_or("");
            let uid = held.get("uid").and_then(Value::as_str).unwrap_or("");
            let live = match api.store.get(service).await? {
                Some(s) => {
                    let obj: Value = serde_json::from_slice(&s.value).unwrap_or(Value::Null);
                    str_at(&obj, "/metadata/uid") == Some(uid)
                }
                None => false,
            };
            if live {
                return Ok(false);
            }
            kv.mod_revision
        }
    };
    Ok(matches!(
        api.store.put(&key, claim.to_vec(), Some(expected)).await?,
        Outcome::Done(_)
    ))
}

/// On update: the virtual IP is immutable; an update that leaves it out keeps it (as
/// kube-apiserver does, so `kubectl replace` of a manifest without it works).
pub fn keep_ip(cur: &Value, new: &mut Value) -> ApiResult<()> {
    let Some(ip) = str_at(cur, "/spec/clusterIP").map(str::to_string) else {
        return Ok(());
    };
    match str_at(new, "/spec/clusterIP") {
        None | Some("") => {
            if !new.get("spec").is_some_and(Value::is_object) {
                new["spec"] = json!({});
            }
            new["spec"]["clusterIP"] = ip.clone().into();
            new["spec"]["clusterIPs"] = cur
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or_else(|| json!([ip]));
            Ok(())
        }
        Some(n) if n == ip => Ok(()),
        Some(n) => Err(invalid(
            new,
            "spec.clusterIP",
            format!("{n:?}: field is immutable"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_reserve_the_ends() {
        let r: ServiceRange = "10.43.7.9/16".parse().unwrap();
        assert_eq!(r.to_string(), "10.43.0.0/16");
        assert!(!r.assignable("10.43.0.0".parse().unwrap()));
        assert!(!r.assignable("10.43.0.1".parse().unwrap()));
        assert!(r.assignable("10.43.0.2".parse().unwrap()));
        assert!(r.assignable("10.43.255.254".parse().unwrap()));
        assert!(!r.assignable("10.43.255.255".parse().unwrap()));
        assert!(!r.assignable("10.44.0.5".parse().unwrap()));
        for bad in ["10.43.0.0", "10.43.0.0/31", "x/16", "10.43.0.0/4"] {
            assert!(bad.parse::<ServiceRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_fill_type_and_ports() {
        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        defaults(&mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "dns");
    }

    #[test]
    fn the_ip_is_kept_and_immutable() {
        let cur = json!({"spec": {"clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"]}});
        let mut new = json!({"metadata": {"name": "web"}, "spec": {}});
        keep_ip(&cur, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        let mut changed = json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.43.0.10"}});
        assert!(keep_ip(&cur, &mut changed).is_err());
    }
}
