//! The resource metrics API, `metrics.k8s.io/v1beta1` as metrics-server serves it for
//! `kubectl top` and autoscalers: NodeMetrics (`nodes`, cluster-scoped) and PodMetrics
//! (`pods`, namespaced), get and list (with the node's or pod's labels for `labelSelector`),
//! JSON only. Nothing is stored: each answer is computed from the agents' `/metrics/resource`
//! ([`window`]), CPU as a rate over a window of two scrapes, memory as the later working set.
//! RBAC applies as to any resource (`system:aggregated-metrics-reader` grants the reads to
//! view, edit and admin).

mod prom;
mod window;

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use crate::discovery::Listed;
use crate::error::{ApiError, ApiResult};
use crate::router::{Req, Target};
use crate::Api;

pub use window::Cache;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The two kinds as discovery lists them (see `discovery::listed`).
pub fn listed() -> Vec<Listed> {
    [
        ("NodeMetrics", "nodes", false),
        ("PodMetrics", "pods", true),
    ]
    .into_iter()
    .map(|(kind, plural, namespaced)| Listed {
        group: GROUP.into(),
        version: VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        namespaced,
        short_names: Vec::new(),
        in_all: false,
        verbs: vec!["get", "list"],
        subresources: Vec::new(),
    })
    .collect()
}

/// What a metrics path addresses.
enum Addressed<'a> {
    Nodes(Option<&'a str>),
    /// Namespace (None: all namespaces) and name.
    Pods(Option<&'a str>, Option<&'a str>),
}

/// Answer `/apis/metrics.k8s.io/v1beta1/...` (the part after the version is `rest`); None for
/// any other group or version.
pub async fn handle(
    api: &Arc<Api>,
    group: &str,
    version: &str,
    rest: &[&str],
    req: &Req,
) -> Option<ApiResult<Response>> {
    if group != GROUP || version != VERSION {
        return None;
    }
    let addressed = match rest {
        ["nodes"] => Addressed::Nodes(None),
        ["nodes", name] => Addressed::Nodes(Some(name)),
        ["pods"] => Addressed::Pods(None, None),
        ["namespaces", ns, "pods"] => Addressed::Pods(Some(ns), None),
        ["namespaces", ns, "pods", name] => Addressed::Pods(Some(ns), Some(name)),
        _ => return None,
    };
    if req.method != Method::GET {
        let plural = match addressed {
            Addressed::Nodes(_) => "nodes",
            Addressed::Pods(..) => "pods",
        };
        return Some(Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {plural}",
            req.method
        ))));
    }
    if req.flag("watch") {
        return Some(Err(ApiError::method_not_allowed(
            "watch is not supported on the metrics API",
        )));
    }
    Some(match addressed {
        Addressed::Nodes(name) => nodes(api, name, req).await,
        Addressed::Pods(ns, name) => pods(api, ns, name, req).await,
    })
}

/// The stored objects of core `plural` the request selects (its label and field selectors
/// apply to them), or the one named.
async fn core_objects(
    api: &Api,
    plural: &str,
    ns: Option<&str>,
    name: Option<&str>,
    req: &Req,
) -> ApiResult<Vec<Value>> {
    let res = api
        .registry
        .find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} resource")))?;
    if let Some(name) = name {
        return match api.store.get(&res.key(ns, name)).await? {
            Some(kv) => Ok(vec![crate::rest::decode(&kv)?]),
            None => Ok(Vec::new()),
        };
    }
    let t = Target {
        res,
        ns: ns.map(str::to_string),
        name: None,
        sub: None,
    };
    Ok(crate::rest::list_page(api, &t, req).await?.items)
}

/// A CPU rate as a quantity in nanocores (metrics-server's `resource.NewScaledQuantity(n, -9)`).
fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// A working set in KiB (rounded down), as kubectl top shows it in Mi.
fn memory_quantity(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// A Go duration as metav1.Duration serializes it, to the millisecond (`1.002s`, `15s`).
fn go_duration(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", s.trim_end_matches('0'))
    }
}

fn metadata(obj: &Value, now: &str) -> Value {
    let mut m = json!({"name": obj.pointer("/metadata/name"), "creationTimestamp": now});
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(labels) = obj.pointer("/metadata/labels").filter(|l| l.is_object()) {
        m["labels"] = labels.clone();
    }
    m
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

fn one(kind: &str, mut item: Value) -> Value {
    item["kind"] = json!(kind);
    item["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    item
}

/// The answer, or for `kubectl get nodemetrics|podmetrics` its Table.
fn respond(value: &Value, req: &Req) -> ApiResult<Response> {
    if req.wants_table() {
        let kind = value["kind"].as_str().unwrap_or_default();
        let (kind, items) = match kind.strip_suffix("List") {
            Some(item_kind) => (
                item_kind,
                value["items"].as_array().cloned().unwrap_or_default(),
            ),
            None => (kind, vec![value.clone()]),
        };
        let table = crate::table::table(kind, &items, req, json!({}));
        return Ok(crate::proto::respond(req.output, 200, &table));
    }
    Ok(crate::router::json(200, value))
}

/// A Table cell of NodeMetrics or PodMetrics (a pod's usage summed over its containers, in
/// the units the objects carry); None for other kinds and columns.
pub(crate) fn table_cell(kind: &str, col: &str, o: &Value) -> Option<Value> {
    let usage: Vec<&Value> = match kind {
        "NodeMetrics" => vec![&o["usage"]],
        "PodMetrics" => o["containers"]
            .as_array()
            .map(|cs| cs.iter().map(|c| &c["usage"]).collect())
            .unwrap_or_default(),
        _ => return None,
    };
    let sum = |resource: &str, unit: &str| -> u64 {
        usage
            .iter()
            .filter_map(|u| {
                u[resource]
                    .as_str()?
                    .strip_suffix(unit)?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    match col {
        "CPU" => Some(json!(format!("{}n", sum("cpu", "n")))),
        "Memory" => Some(json!(format!("{}Ki", sum("memory", "Ki")))),
        "Window" => Some(o["window"].clone()),
        _ => None,
    }
}

async fn nodes(api: &Arc<Api>, name: Option<&str>, req: &Req) -> ApiResult<Response> {
    let objs = core_objects(api, "nodes", None, name, req).await?;
    // Only a list of every node says which nodes are gone.
    let every =
        name.is_none() && req.q("labelSelector").is_none() && req.q("fieldSelector").is_none();
    let windows = api.metrics.windows(api, &objs, every).await;
    let now = crate::meta::now_rfc3339();
    let mut items = Vec::new();
    for node in &objs {
        let node_name = crate::meta::str_at(node, "/metadata/name").unwrap_or_default();
        let Some(rate) = windows.get(node_name).and_then(window::Window::node) else {
            continue;
        };
        items.push(json!({
            "metadata": metadata(node, &now),
            "timestamp": crate::meta::format_rfc3339(rate.end_ms.div_euclid(1000)),
            "window": go_duration(rate.window_ms),
            "usage": {"cpu": cpu_quantity(rate.nanocores), "memory": memory_quantity(rate.memory)},
        }));
    }
    match name {
        None => respond(&list("NodeMetricsList", items), req),
        Some(n) => match items.pop() {
            Some(item) => respond(&one("NodeMetrics", item), req),
            None => Err(ApiError::not_found(&format!("nodemetrics.{GROUP}"), n)),
        },
    }
}

async fn pods(
    api: &Arc<Api>,
    ns: Option<&str>,
    name: Option<&str>,
    req: &Req,
) -> ApiResult<Response> {
    let objs: Vec<Value> = core_objects(api, "pods", ns, name, req)
        .await?
        .into_iter()
        .filter(|p| crate::meta::str_at(p, "/status/phase") == Some("Running"))
        .filter(|p| crate::meta::str_at(p, "/spec/nodeName").is_some_and(|n| !n.is_empty()))
        .collect();
    let mut node_names: Vec<&str> = objs
        .iter()
        .filter_map(|p| crate::meta::str_at(p, "/spec/nodeName"))
        .collect();
    node_names.sort();
    node_names.dedup();
    let mut nodes = Vec::new();
    for n in node_names {
        nodes.extend(core_objects(api, "nodes", None, Some(n), req).await?);
    }
    let windows = api.metrics.windows(api, &nodes, false).await;
    let now = crate::meta::now_rfc3339();
    let mut items = Vec::new();
    for pod in &objs {
        let node = crate::meta::str_at(pod, "/spec/nodeName").unwrap_or_default();
        let pod_ns = crate::meta::str_at(pod, "/metadata/namespace").unwrap_or_default();
        let pod_name = crate::meta::str_at(pod, "/metadata/name").unwrap_or_default();
        let Some(rates) = windows.get(node).and_then(|w| w.pod(pod_ns, pod_name)) else {
            continue;
        };
        let Some(first) = rates.first().map(|(_, r)| *r) else {
            continue;
        };
        let containers: Vec<Value> = rates
            .iter()
            .map(|(c, r)| {
                json!({"name": c, "usage": {"cpu": cpu_quantity(r.nanocores),
                                            "memory": memory_quantity(r.memory)}})
            })
            .collect();
        items.push(json!({
            "metadata": metadata(pod, &now),
            "timestamp": crate::meta::format_rfc3339(first.end_ms.div_euclid(1000)),
            "window": go_duration(first.window_ms),
            "containers": containers,
        }));
    }
    match name {
        None => respond(&list("PodMetricsList", items), req),
        Some(n) => match items.pop() {
            Some(item) => respond(&one("PodMetrics", item), req),
            None => Err(ApiError::not_found(&format!("podmetrics.{GROUP}"), n)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_durations() {
        assert_eq!(cpu_quantity(1_234_567), "1234567n");
        assert_eq!(memory_quantity(5 * 1024 * 1024 + 1000), "5120Ki");
        assert_eq!(go_duration(1002), "1.002s");
        assert_eq!(go_duration(15_000), "15s");
        assert_eq!(go_duration(20_500), "20.5s");
    }

    #[test]
    fn table_cells_sum_a_pods_containers() {
        let pod = json!({"metadata": {"name": "web"}, "window": "10.5s", "containers": [
            {"name": "a", "usage": {"cpu": "1500000n", "memory": "2048Ki"}},
            {"name": "b", "usage": {"cpu": "500000n", "memory": "1024Ki"}}]});
        assert_eq!(
            table_cell("PodMetrics", "CPU", &pod),
            Some(json!("2000000n"))
        );
        assert_eq!(
            table_cell("PodMetrics", "Memory", &pod),
            Some(json!("3072Ki"))
        );
        assert_eq!(
            table_cell("PodMetrics", "Window", &pod),
            Some(json!("10.5s"))
        );
        let node = json!({"usage": {"cpu": "7n", "memory": "9Ki"}, "window": "1s"});
        assert_eq!(table_cell("NodeMetrics", "CPU", &node), Some(json!("7n")));
        assert_eq!(table_cell("NodeMetrics", "Name", &node), None);
        assert_eq!(table_cell("Pod", "CPU", &node), None);
    }

    #[test]
    fn discovery_lists_both_kinds() {
        let l = listed();
        assert_eq!(l.len(), 2);
        assert!(l
            .iter()
            .any(|r| r.kind == "PodMetrics" && r.namespaced && r.plural == "pods"));
        assert!(l.iter().all(|r| r.verbs == ["get", "list"]));
    }
}
