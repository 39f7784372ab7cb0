//! `pods/NAME[:PORT]/proxy/PATH` and `services/NAME[:PORT]/proxy/PATH`: an HTTP request
//! passed on to the pod's IP (for a service, the first ready endpoint of the named port) and
//! the answer streamed back, as kube-apiserver's proxy subresources do. The client's
//! credentials are not forwarded. Only `http` is proxied (no `https:` scheme prefix).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use serde_json::Value;

use super::{decode, get_kv};
use crate::error::{ApiError, ApiResult};
use crate::meta::str_at;
use crate::router::Req;
use crate::Api;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Split `NAME[:PORT]` (a leading `http:` scheme is accepted and dropped).
fn name_and_port(spec: &str) -> ApiResult<(&str, Option<&str>)> {
    let spec = spec.strip_prefix("http:").unwrap_or(spec);
    if spec.starts_with("https:") {
        return Err(ApiError::bad_request("proxying to https is not supported"));
    }
    Ok(match spec.split_once(':') {
        Some((n, p)) if !p.is_empty() => (n, Some(p)),
        Some((n, _)) => (n, None),
        None => (spec, None),
    })
}

/// A pod's container port by number or name; 80 when none is given (as kube dials).
fn pod_port(pod: &Value, port: Option<&str>) -> ApiResult<u16> {
    let Some(port) = port else { return Ok(80) };
    if let Ok(n) = port.parse::<u16>() {
        return Ok(n);
    }
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(port))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ApiError::bad_request(format!("no such port: {port}")))
}

async fn object(api: &Arc<Api>, plural: &str, ns: &str, name: &str) -> ApiResult<Value> {
    let res = api
        .registry
        .find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} resource")))?;
    decode(&get_kv(api, &res, &res.key(Some(ns), name), name).await?)
}

/// Where a service proxy request goes: the first ready endpoint of the service port named
/// (by name or number) or its only port.
async fn service_target(
    api: &Arc<Api>,
    ns: &str,
    name: &str,
    port: Option<&str>,
) -> ApiResult<(String, u16)> {
    let svc = object(api, "services", ns, name).await?;
    let ports: Vec<&Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let chosen = match port {
        Some(p) => ports.iter().find(|sp| {
            sp.get("name").and_then(Value::as_str) == Some(p)
                || sp
                    .get("port")
                    .and_then(Value::as_i64)
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(p)
        }),
        None if ports.len() == 1 => ports.first(),
        None => None,
    }
    .ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service \"{name}\""),
        )
    })?;
    let port_name = chosen.get("name").and_then(Value::as_str).unwrap_or("");
    let endpoints = object(api, "endpoints", ns, name).await.ok();
    let target = endpoints
        .as_ref()
        .and_then(|e| e.get("subsets").and_then(Value::as_array))
        .into_iter()
        .flatten()
        .find_map(|subset| {
            let ip = subset
                .pointer("/addresses/0/ip")
                .and_then(Value::as_str)?
                .to_string();
            let ports = subset.get("ports").and_then(Value::as_array)?;
            let p = ports
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
                .or_else(|| (ports.len() == 1).then(|| &ports[0]))?;
            let port = u16::try_from(p.get("port").and_then(Value::as_u64)?).ok()?;
            Some((ip, port))
        });
    target.ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service \"{name}\""),
        )
    })
}

/// Proxy `req` for `kind` ("pods" or "services") `spec` (NAME[:PORT]) in `ns` to `path`.
pub async fn proxy(
    api: &Arc<Api>,
    ns: &str,
    kind: &str,
    spec: &str,
    path: &str,
    req: Req,
) -> ApiResult<Response> {
    let (name, port) = name_and_port(spec)?;
    let (ip, port) = if kind == "pods" {
        let pod = object(api, "pods", ns, name).await?;
        let ip = str_at(&pod, "/status/podIP")
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("pod {name} has no IP address yet"),
                )
            })?
            .to_string();
        (ip, pod_port(&pod, port)?)
    } else {
        service_target(api, ns, name, port).await?
    };
    let mut url = format!("http://{ip}:{port}{path}");
    if !req.raw_query.is_empty() {
        url = format!("{url}?{}", req.raw_query);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut forward = client.request(req.method.clone(), &url);
    for (k, v) in &req.headers {
        if ![
            header::AUTHORIZATION,
            header::HOST,
            header::CONNECTION,
            header::CONTENT_LENGTH,
        ]
        .contains(k)
        {
            forward = forward.header(k, v);
        }
    }
    let resp = forward.body(req.body.clone()).send().await.map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach {kind}/{name} at {ip}:{port}: {e}"),
        )
    })?;
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if k != header::CONNECTION && k != header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    out.body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ports_and_named_container_ports() {
        assert_eq!(name_and_port("web").unwrap(), ("web", None));
        assert_eq!(name_and_port("web:8080").unwrap(), ("web", Some("8080")));
        assert_eq!(
            name_and_port("http:web:http").unwrap(),
            ("web", Some("http"))
        );
        assert!(name_and_port("https:web:443").is_err());
        let pod = serde_json::json!({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(pod_port(&pod, Some("http")).unwrap(), 8080);
        assert_eq!(pod_port(&pod, Some("9090")).unwrap(), 9090);
        assert_eq!(pod_port(&pod, None).unwrap(), 80);
        assert!(pod_port(&pod, Some("nope")).is_err());
    }
}
