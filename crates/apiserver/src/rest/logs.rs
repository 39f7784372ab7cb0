//! `GET pods/NAME/log`: proxied to the node agent that runs the pod (its /containerLogs
//! endpoint, at the node's InternalIP and kubeletEndpoint port), streamed back as it comes.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use serde_json::Value;

use super::{decode, get_kv};
use crate::error::{ApiError, ApiResult};
use crate::meta::str_at;
use crate::router::{Req, Target};
use crate::Api;

/// The names of a pod's containers (app, then init).
fn container_names(pod: &Value) -> Vec<String> {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container a pod subresource names with `?container=` (or the pod's only one), with
/// kube's messages for a wrong or missing name.
pub(super) fn pick_container(pod: &Value, name: &str, req: &Req) -> ApiResult<String> {
    let names = container_names(pod);
    match req.q("container") {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => {
            let app: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                app.join(" ")
            )))
        }
    }
}

/// The agent endpoint (InternalIP, kubeletEndpoint port) of the node `pod` is bound to.
pub(super) async fn node_endpoint(
    api: &Arc<Api>,
    pod: &Value,
    name: &str,
    container: &str,
) -> ApiResult<(String, String, u16)> {
    let Some(node_name) = str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
        )));
    };
    let nodes = api
        .registry
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let node = decode(&get_kv(api, &nodes, &nodes.key(None, node_name), node_name).await?)?;
    let Some((address, port)) = agent_address(&node) else {
        return Err(ApiError::bad_request(format!(
            "node {node_name} does not serve container logs or streams"
        )));
    };
    Ok((node_name.to_string(), address, port))
}

/// Where a Node's agent serves logs, streams and metrics: its InternalIP and kubeletEndpoint
/// port; None when it has not published both.
pub(crate) fn agent_address(node: &Value) -> Option<(String, u16)> {
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .map(str::to_string)?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)?;
    Some((address, port))
}

pub async fn log(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
    let pod = decode(&kv)?;
    let name = t.name();
    let container = pick_container(&pod, name, req)?;
    let (node_name, address, port) = node_endpoint(api, &pod, name, &container).await?;
    let ns = t.ns.as_deref().unwrap_or("default");
    let url = format!("http://{address}:{port}/containerLogs/{ns}/{name}/{container}");
    let mut query: Vec<(&str, &str)> = Vec::new();
    for key in [
        "follow",
        "previous",
        "tailLines",
        "sinceSeconds",
        "sinceTime",
        "timestamps",
        "limitBytes",
    ] {
        if let Some(v) = req.q(key) {
            query.push((key, v));
        }
    }
    let resp = reqwest::Client::new()
        .get(&url)
        .query(&query)
        .bearer_auth(&api.token)
        .send()
        .await
        .map_err(|e| ApiError::internal(format!("reaching the agent of node {node_name}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(ApiError::bad_request(text.trim().to_string()));
    }
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::from_stream(resp.bytes_stream()))
        .expect("valid response"))
}
