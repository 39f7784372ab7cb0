//! `pods/NAME/exec`, `pods/NAME/attach` and `pods/NAME/portforward`: the client's
//! upgrade request is proxied to the agent of the pod's node, authenticated there with the
//! cluster token, and once the agent answers 101 the two connections are spliced byte for
//! byte — as kube-apiserver's upgrade-aware proxy does to the kubelet, so WebSocket and SPDY
//! framing, stdin, resize and the exit status pass through untouched.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::logs::{node_endpoint, pick_container};
use super::{decode, get_kv};
use crate::error::{ApiError, ApiResult};
use crate::meta::str_at;
use crate::router::{Req, Target};
use crate::Api;

/// Streaming sessions one user may hold open at once through this server.
pub const MAX_SESSIONS_PER_USER: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers not forwarded to the agent: the client's credentials (the agent gets the
/// cluster's), and hop-by-hop ones hyper sets itself.
const DROPPED: [HeaderName; 3] = [header::AUTHORIZATION, header::HOST, header::CONTENT_LENGTH];

/// Whether the request asks to take the connection over (WebSocket or SPDY).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(header::UPGRADE)
}

/// POST/GET pods/NAME/exec and pods/NAME/attach (`sub`).
pub async fn exec_or_attach(
    api: &Arc<Api>,
    t: &Target,
    mut req: Req,
    sub: &str,
) -> ApiResult<Response> {
    let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
    let pod = decode(&kv)?;
    let name = t.name();
    let container = pick_container(&pod, name, &req)?;
    if let Some(phase @ ("Succeeded" | "Failed")) = str_at(&pod, "/status/phase") {
        let verb = if sub == "exec" {
            "exec into"
        } else {
            "attach to"
        };
        return Err(ApiError::bad_request(format!(
            "cannot {verb} a container in a completed pod; current phase is {phase}"
        )));
    }
    let (node, address, port) = node_endpoint(api, &pod, name, &container).await?;
    let ns = t.ns.as_deref().unwrap_or("default");
    // The uid in the path (as kube-apiserver gives the kubelet) spares the agent reading the
    // pod again.
    let path = match str_at(&pod, "/metadata/uid").filter(|u| !u.is_empty()) {
        Some(uid) => format!("/{sub}/{ns}/{name}/{uid}/{container}"),
        None => format!("/{sub}/{ns}/{name}/{container}"),
    };
    proxy_upgrade(api, &mut req, &node, &address, port, &path).await
}

/// GET/POST pods/NAME/portforward: to the agent's /portForward (SPDY, or SPDY tunneled in a
/// WebSocket; the ports are in the streams' headers or the query, passed on as they are).
pub async fn port_forward(api: &Arc<Api>, t: &Target, mut req: Req) -> ApiResult<Response> {
    let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
    let pod = decode(&kv)?;
    let name = t.name();
    if let Some(phase @ ("Succeeded" | "Failed")) = str_at(&pod, "/status/phase") {
        return Err(ApiError::bad_request(format!(
            "cannot port-forward to a completed pod; current phase is {phase}"
        )));
    }
    let (node, address, port) = node_endpoint(api, &pod, name, "").await?;
    let ns = t.ns.as_deref().unwrap_or("default");
    let path = match str_at(&pod, "/metadata/uid").filter(|u| !u.is_empty()) {
        Some(uid) => format!("/portForward/{ns}/{name}/{uid}"),
        None => format!("/portForward/{ns}/{name}"),
    };
    proxy_upgrade(api, &mut req, &node, &address, port, &path).await
}

/// Forward the upgrade request to the agent at `address:port` `path` (with the client's query)
/// and splice the connections once both sides have switched protocols.
async fn proxy_upgrade(
    api: &Arc<Api>,
    req: &mut Req,
    node: &str,
    address: &str,
    port: u16,
    path: &str,
) -> ApiResult<Response> {
    if !is_upgrade(&req.headers) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let Some(client_upgrade) = req.upgrade.take() else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let slot = api.streams.take(
        &req.user.name,
        MAX_SESSIONS_PER_USER,
        "streaming sessions",
        "",
    )?;
    let unreachable =
        |e: String| ApiError::internal(format!("reaching the agent of node {node}: {e}"));
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((address, port)),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("agent stream connection: {e}");
        }
    });
    let uri = if req.raw_query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", req.raw_query)
    };
    let mut forward = Request::builder()
        .method(req.method.clone())
        .uri(uri)
        .header(header::HOST, format!("{address}:{port}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token));
    for (k, v) in &req.headers {
        if !DROPPED.contains(k) {
            forward = forward.header(k, v);
        }
    }
    let forward = forward
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = sender
        .send_request(forward)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(Body::new(resp.into_body()), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(4096)])
            .trim()
            .to_string();
        return Err(match code {
            404 => ApiError::new(404, "NotFound", text),
            429 => ApiError::new(429, "TooManyRequests", text),
            _ => ApiError::bad_request(text),
        });
    }
    let agent_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    tokio::spawn(async move {
        let _slot = slot;
        let (client, agent) = match tokio::join!(client_upgrade, agent_upgrade) {
            (Ok(c), Ok(a)) => (c, a),
            (c, a) => {
                tracing::debug!("stream upgrade: client {:?}, agent {:?}", c.err(), a.err());
                return;
            }
        };
        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
        let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
    });
    out.body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}
