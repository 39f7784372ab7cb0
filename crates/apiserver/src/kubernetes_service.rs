//! The `default/kubernetes` Service and its Endpoints, kept by the API server as kube's
//! "kubernetes" service controller does: the service range's first host on port 443, sending
//! to the address pods reach the API server at (`Config::advertise`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::rest::write::create_object;
use crate::Api;

/// How often the Service and Endpoints are checked (kube's endpoint reconciler interval).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The Service's ClusterIP: the first host of the range, which no other Service gets.
pub fn cluster_ip(api: &Api) -> Ipv4Addr {
    api.service_range.first_host()
}

/// Where pods reach the API server: the advertised address, else the bound one unless it is
/// loopback or unspecified (those name no address a pod can route to).
fn endpoint(api: &Api, advertise: Option<SocketAddr>) -> Option<SocketAddr> {
    advertise.or_else(|| {
        let ip = api.addr.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(api.addr)
    })
}

/// Create (or repair) the Service and its Endpoints.
pub async fn ensure(api: &Api, advertise: Option<SocketAddr>) -> ApiResult<()> {
    let target = endpoint(api, advertise);
    let port = target.map_or(api.addr.port(), |a| a.port());
    let ports = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]);
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(api).to_string(),
                 "ports": ports, "sessionAffinity": "None"}});
    upsert(api, "services", svc, |cur, want| {
        cur["spec"]["ports"] = want["spec"]["ports"].clone();
    })
    .await?;
    let Some(target) = target else {
        return Ok(());
    };
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "subsets": [{"addresses": [{"ip": target.ip().to_string()}],
                     "ports": [{"name": "https", "port": target.port(), "protocol": "TCP"}]}]});
    upsert(api, "endpoints", eps, |cur, want| {
        cur["subsets"] = want["subsets"].clone();
    })
    .await
}

/// Create `want`, or bring the stored object in line with it through `fix`.
async fn upsert(
    api: &Api,
    plural: &str,
    want: Value,
    fix: impl Fn(&mut Value, &Value),
) -> ApiResult<()> {
    let Some(res) = api.registry.find("", "v1", plural) else {
        return Ok(());
    };
    let key = res.key(Some("default"), "kubernetes");
    match api.store.get(&key).await? {
        None => match create_object(api, &res, Some("default"), want, false).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Some(kv) => {
            let cur = crate::rest::decode(&kv)?;
            let mut next = cur.clone();
            fix(&mut next, &want);
            if next != cur {
                // A concurrent writer wins; the next pass looks again.
                crate::rest::put(api, &key, &next, Some(kv.mod_revision)).await?;
            }
            Ok(())
        }
    }
}

/// Keep the Service and Endpoints for as long as the server runs.
pub async fn run(api: std::sync::Arc<Api>, advertise: Option<SocketAddr>) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        if let Err(e) = ensure(&api, advertise).await {
            tracing::warn!("the kubernetes service: {}", e.message);
        }
    }
}
