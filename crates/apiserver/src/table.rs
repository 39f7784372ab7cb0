//! meta.k8s.io/v1 Table responses for `kubectl get`: per-kind columns (priority 1 = `-o wide`).

use serde_json::{json, Value};

use crate::meta::{age, str_at};
use crate::resources::Resource;
use crate::router::Req;

struct Col {
    name: &'static str,
    wide: bool,
}

const fn c(name: &'static str) -> Col {
    Col { name, wide: false }
}
const fn w(name: &'static str) -> Col {
    Col { name, wide: true }
}

fn columns(kind: &str) -> Vec<Col> {
    match kind {
        "Pod" => vec![
            c("Name"),
            c("Ready"),
            c("Status"),
            c("Restarts"),
            c("Age"),
            w("IP"),
            w("Node"),
        ],
        "Deployment" => vec![
            c("Name"),
            c("Ready"),
            c("Up-to-date"),
            c("Available"),
            c("Age"),
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "ReplicaSet" => vec![
            c("Name"),
            c("Desired"),
            c("Current"),
            c("Ready"),
            c("Age"),
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "Service" => vec![
            c("Name"),
            c("Type"),
            c("Cluster-IP"),
            c("External-IP"),
            c("Port(s)"),
            c("Age"),
            w("Selector"),
        ],
        "Namespace" => vec![c("Name"), c("Status"), c("Age")],
        "Node" => vec![
            c("Name"),
            c("Status"),
            c("Roles"),
            c("Age"),
            c("Version"),
            w("Internal-IP"),
        ],
        "ConfigMap" => vec![c("Name"), c("Data"), c("Age")],
        "Secret" => vec![c("Name"), c("Type"), c("Data"), c("Age")],
        "Event" => vec![
            c("Last Seen"),
            c("Type"),
            c("Reason"),
            c("Object"),
            c("Message"),
        ],
        "Lease" => vec![c("Name"), c("Holder"), c("Age")],
        "RuntimeClass" => vec![c("Name"), c("Handler"), c("Age")],
        "CustomResourceDefinition" => vec![c("Name"), c("Created At")],
        _ => vec![c("Name"), c("Age")],
    }
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    str_at(v, p).unwrap_or("")
}

/// The STATUS column of `kubectl get pods`, worked out the way kubectl's printer does: the
/// first unfinished init container ("Init:…"), else the last container's waiting or
/// terminated reason, else the phase; "Terminating" once deletion has begun.
fn pod_status_column(o: &Value) -> String {
    let mut reason = match s(o, "/status/reason") {
        "" => s(o, "/status/phase").to_string(),
        r => r.to_string(),
    };
    let exit_reason = |t: &Value| -> String {
        match (str_at(t, "/reason"), i(t, "/signal"), i(t, "/exitCode")) {
            (Some(r), _, _) if !r.is_empty() => r.to_string(),
            (_, sig, _) if sig != 0 => format!("Signal:{sig}"),
            (_, _, code) => format!("ExitCode:{code}"),
        }
    };
    let statuses = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let init = statuses("/status/initContainerStatuses");
    let init_total = o
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut initializing = false;
    for (n, c) in init.iter().enumerate() {
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        initializing = true;
        reason = match terminated {
            Some(t) => format!("Init:{}", exit_reason(t)),
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{n}/{init_total}"),
        };
        break;
    }
    if !initializing {
        let mut running = false;
        for c in statuses("/status/containerStatuses").iter().rev() {
            let waiting_reason = s(c, "/state/waiting/reason");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = exit_reason(t);
            } else if c.pointer("/state/running").is_some()
                && c.get("ready") == Some(&Value::Bool(true))
            {
                running = true;
            }
        }
        if reason == "Completed" && running {
            reason = "Running".into();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    reason
}

fn none_if_empty(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

fn len_of(v: &Value, p: &str) -> usize {
    v.pointer(p)
        .map(|x| match x {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        })
        .unwrap_or(0)
}

fn containers(o: &Value, field: &str) -> String {
    o.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector(o: &Value) -> String {
    none_if_empty(
        o.pointer("/spec/selector")
            .map(crate::selectors::label_selector_string)
            .unwrap_or_default(),
    )
}

fn cell(kind: &str, col: &str, o: &Value) -> Value {
    let created = str_at(o, "/metadata/creationTimestamp");
    match (kind, col) {
        (_, "Name") => json!(s(o, "/metadata/name")),
        (_, "Age") => json!(age(created)),
        ("Pod", "Ready") => {
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses.map_or(0, |cs| {
                cs.iter()
                    .filter(|c| c.get("ready") == Some(&Value::Bool(true)))
                    .count()
            });
            json!(format!("{ready}/{}", len_of(o, "/spec/containers")))
        }
        ("Pod", "Status") => json!(pod_status_column(o)),
        ("Pod", "Restarts") => {
            let n: i64 = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |cs| cs.iter().map(|c| i(c, "/restartCount")).sum());
            json!(n)
        }
        ("Pod", "IP") => json!(none_if_empty(s(o, "/status/podIP").into())),
        ("Pod", "Node") => json!(none_if_empty(s(o, "/spec/nodeName").into())),
        ("Deployment", "Ready") => json!(format!(
            "{}/{}",
            i(o, "/status/readyReplicas"),
            o.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        ("Deployment", "Up-to-date") => json!(i(o, "/status/updatedReplicas")),
        ("Deployment", "Available") => json!(i(o, "/status/availableReplicas")),
        ("ReplicaSet", "Desired") => {
            json!(o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1))
        }
        ("ReplicaSet", "Current") => json!(i(o, "/status/replicas")),
        ("ReplicaSet", "Ready") => json!(i(o, "/status/readyReplicas")),
        (_, "Containers") => json!(containers(o, "name")),
        (_, "Images") => json!(containers(o, "image")),
        ("Service", "Selector") => {
            let sel = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            json!(none_if_empty(sel))
        }
        (_, "Selector") => json!(selector(o)),
        ("Service", "Type") => json!(match s(o, "/spec/type") {
            "" => "ClusterIP",
            t => t,
        }),
        ("Service", "Cluster-IP") => json!(none_if_empty(s(o, "/spec/clusterIP").into())),
        ("Service", "External-IP") => json!("<none>"),
        ("Service", "Port(s)") => {
            let ports = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                            format!("{}/{proto}", i(p, "/port"))
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            json!(none_if_empty(ports))
        }
        ("Namespace", "Status") => json!(s(o, "/status/phase")),
        ("Node", "Status") => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(Value::as_str))
                == Some("True");
            json!(if ready { "Ready" } else { "NotReady" })
        }
        ("Node", "Roles") => json!("<none>"),
        ("Node", "Version") => json!(s(o, "/status/nodeInfo/kubeletVersion")),
        ("Node", "Internal-IP") => {
            let ip = o
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
                })
                .and_then(|x| x.get("address").and_then(Value::as_str))
                .unwrap_or("");
            json!(none_if_empty(ip.into()))
        }
        ("ConfigMap", "Data") => json!(len_of(o, "/data") + len_of(o, "/binaryData")),
        ("Secret", "Type") => json!(s(o, "/type")),
        ("Secret", "Data") => json!(len_of(o, "/data")),
        ("Event", "Last Seen") => json!(age(str_at(o, "/lastTimestamp").or(created))),
        ("Event", "Type") => json!(s(o, "/type")),
        ("Event", "Reason") => json!(s(o, "/reason")),
        ("Event", "Object") => json!(format!(
            "{}/{}",
            s(o, "/involvedObject/kind").to_lowercase(),
            s(o, "/involvedObject/name")
        )),
        ("Event", "Message") => json!(s(o, "/message")),
        ("Lease", "Holder") => json!(s(o, "/spec/holderIdentity")),
        ("RuntimeClass", "Handler") => json!(s(o, "/handler")),
        (_, "Created At") => json!(created.unwrap_or("")),
        _ => json!(""),
    }
}

/// Build a Table of `items`. `includeObject` (None, Metadata — the default — or Object)
/// decides what each row carries besides its cells.
pub fn table(res: &Resource, items: &[Value], req: &Req, metadata: Value) -> Value {
    let cols = columns(&res.kind);
    let defs: Vec<Value> = cols
        .iter()
        .map(|col| {
            json!({
                "name": col.name,
                "type": "string",
                "format": if col.name == "Name" { "name" } else { "" },
                "description": "",
                "priority": if col.wide { 1 } else { 0 },
            })
        })
        .collect();
    let include = req.q("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols
                .iter()
                .map(|col| cell(&res.kind, col.name, o))
                .collect();
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(Value::Null),
                }),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}
