//! meta.k8s.io/v1 Table responses for `kubectl get`: per-kind columns (priority 1 = `-o wide`).

use serde_json::{json, Value};

use crate::meta::{age, str_at};
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
    if let Some(cols) = crate::storage_table::table_columns(kind) {
        return cols
            .into_iter()
            .map(|(name, wide)| Col { name, wide })
            .collect();
    }
    match kind {
        "Pod" => vec![
            c("Name"),
            c("Ready"),
            c("Status"),
            c("Restarts"),
            c("Age"),
            w("IP"),
            w("Node"),
            w("Nominated Node"),
            w("Readiness Gates"),
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
        "DaemonSet" => vec![
            c("Name"),
            c("Desired"),
            c("Current"),
            c("Ready"),
            c("Up-to-date"),
            c("Available"),
            c("Node Selector"),
            c("Age"),
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "StatefulSet" => vec![
            c("Name"),
            c("Ready"),
            c("Age"),
            w("Containers"),
            w("Images"),
        ],
        "ControllerRevision" => vec![c("Name"), c("Controller"), c("Revision"), c("Age")],
        "PriorityClass" => vec![
            c("Name"),
            c("Value"),
            c("Global-Default"),
            c("Age"),
            c("PreemptionPolicy"),
        ],
        "Namespace" => vec![c("Name"), c("Status"), c("Age")],
        "Node" => vec![
            c("Name"),
            c("Status"),
            c("Roles"),
            c("Age"),
            c("Version"),
            w("Internal-IP"),
            w("External-IP"),
            w("OS-Image"),
            w("Kernel-Version"),
            w("Container-Runtime"),
        ],
        "ConfigMap" => vec![c("Name"), c("Data"), c("Age")],
        "Secret" => vec![c("Name"), c("Type"), c("Data"), c("Age")],
        "Event" => vec![
            c("Last Seen"),
            c("Type"),
            c("Reason"),
            c("Object"),
            w("Subobject"),
            w("Source"),
            c("Message"),
            w("First Seen"),
            w("Count"),
            w("Name"),
        ],
        "Endpoints" => vec![c("Name"), c("Endpoints"), c("Age")],
        "ServiceAccount" => vec![c("Name"), c("Secrets"), c("Age")],
        "Job" => vec![
            c("Name"),
            c("Status"),
            c("Completions"),
            c("Duration"),
            c("Age"),
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "CronJob" => vec![
            c("Name"),
            c("Schedule"),
            c("Timezone"),
            c("Suspend"),
            c("Active"),
            c("Last Schedule"),
            c("Age"),
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "HorizontalPodAutoscaler" => vec![
            c("Name"),
            c("Reference"),
            c("Targets"),
            c("MinPods"),
            c("MaxPods"),
            c("Replicas"),
            c("Age"),
        ],
        "Lease" => vec![c("Name"), c("Holder"), c("Age")],
        "PodDisruptionBudget" => vec![
            c("Name"),
            c("Min Available"),
            c("Max Unavailable"),
            c("Allowed Disruptions"),
            c("Age"),
        ],
        "RuntimeClass" => vec![c("Name"), c("Handler"), c("Age")],
        "CustomResourceDefinition" | "LimitRange" => vec![c("Name"), c("Created At")],
        "ResourceQuota" => vec![c("Name"), c("Age"), c("Request"), c("Limit")],
        // metrics-server's columns.
        "NodeMetrics" | "PodMetrics" => vec![c("Name"), c("CPU"), c("Memory"), c("Window")],
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

/// A string map as `k=v,k2=v2` (a Service's selector, a node selector), `<none>` if empty.
fn key_values(map: Option<&Value>) -> String {
    let pairs = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    none_if_empty(pairs)
}

fn int_or_na(o: &Value, p: &str) -> String {
    match o.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
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

/// The containers' `field` (name or image) of a pod spec, comma-separated.
pub(crate) fn containers(pod_spec: Option<&Value>, field: &str) -> String {
    pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A label selector as kubectl prints it, `<none>` when empty.
pub(crate) fn selector(sel: Option<&Value>) -> String {
    none_if_empty(
        sel.map(crate::selectors::label_selector_string)
            .unwrap_or_default(),
    )
}

/// A node's STATUS as kubectl prints it: Ready, NotReady or Unknown, plus SchedulingDisabled
/// when it is cordoned.
fn node_status(o: &Value) -> String {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    // kubectl's rule: a Ready condition that is not True (False or Unknown) is NotReady;
    // no Ready condition at all is Unknown.
    let mut status = match ready {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if o.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/ROLE` labels (and the older `kubernetes.io/role`).
fn node_roles(o: &Value) -> String {
    let mut roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role),
            _ if k == "kubernetes.io/role" => v.as_str(),
            _ => None,
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    none_if_empty(roles.join(","))
}

fn node_address(o: &Value, kind: &str) -> String {
    let ip = o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some(kind))
        })
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .unwrap_or("");
    none_if_empty(ip.into())
}

/// ENDPOINTS: up to three ready `IP:PORT`s, then "+ N more...", as kubectl prints them.
fn endpoints(o: &Value) -> String {
    const SHOWN: usize = 3;
    let mut all = Vec::new();
    for subset in o
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let addresses: Vec<&str> = subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("ip").and_then(Value::as_str))
            .collect();
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        for ip in &addresses {
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for port in &ports {
                all.push(format!("{ip}:{port}"));
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n <= SHOWN => all.join(","),
        n => format!("{} + {} more...", all[..SHOWN].join(","), n - SHOWN),
    }
}

/// EXTERNAL-IP of a Service: its LoadBalancer ingress (`<pending>` until it has one) and its
/// `externalIPs`.
fn service_external_ips(o: &Value) -> String {
    let strings = |p: &str, field: Option<&str>| -> Vec<String> {
        o.pointer(p)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| match field {
                Some(f) => v.get(f).and_then(Value::as_str),
                None => v.as_str(),
            })
            .map(str::to_string)
            .collect()
    };
    let mut ips = strings("/spec/externalIPs", None);
    if s(o, "/spec/type") == "LoadBalancer" {
        let mut ingress = strings("/status/loadBalancer/ingress", Some("ip"));
        ingress.extend(strings("/status/loadBalancer/ingress", Some("hostname")));
        if ingress.is_empty() && ips.is_empty() {
            return "<pending>".into();
        }
        ingress.append(&mut ips);
        ips = ingress;
    }
    none_if_empty(ips.join(","))
}

/// READINESS GATES: how many of the pod's gates are True, e.g. "1/2"; none when it has none.
fn readiness_gates(o: &Value) -> String {
    let gates: Vec<&str> = o
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("conditionType").and_then(Value::as_str))
        .collect();
    if gates.is_empty() {
        return "<none>".into();
    }
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
    let met = gates
        .iter()
        .filter(|g| {
            conditions.into_iter().flatten().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(**g)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
        .count();
    format!("{met}/{}", gates.len())
}

/// SOURCE: "component, host" of an Event (or its reportingController).
fn event_source(o: &Value) -> String {
    let component = str_at(o, "/source/component")
        .or(str_at(o, "/reportingComponent"))
        .unwrap_or("");
    match str_at(o, "/source/host").filter(|h| !h.is_empty()) {
        Some(host) => format!("{component}, {host}"),
        None => component.to_string(),
    }
}

fn cell(kind: &str, col: &str, o: &Value) -> Value {
    let created = str_at(o, "/metadata/creationTimestamp");
    if let Some(v) = crate::storage_table::table_cell(kind, col, o) {
        return v;
    }
    if let Some(v) = crate::batch_table::cell(kind, col, o) {
        return v;
    }
    if let Some(v) = crate::hpa::cell(kind, col, o) {
        return v;
    }
    if let Some(v) = crate::metrics::table_cell(kind, col, o) {
        return v;
    }
    if let Some(v) = crate::resourcequota::table_cell(kind, col, o) {
        return v;
    }
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
        ("StatefulSet", "Ready") => json!(format!(
            "{}/{}",
            i(o, "/status/readyReplicas"),
            o.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        ("ControllerRevision", "Controller") => json!(revision_controller(o)),
        ("ControllerRevision", "Revision") => json!(i(o, "/revision")),
        ("PriorityClass", "Value") => json!(i(o, "/value")),
        ("PriorityClass", "Global-Default") => {
            json!(o.get("globalDefault") == Some(&Value::Bool(true)))
        }
        ("PriorityClass", "PreemptionPolicy") => json!(s(o, "/preemptionPolicy")),
        ("Deployment", "Up-to-date") => json!(i(o, "/status/updatedReplicas")),
        ("Deployment", "Available") => json!(i(o, "/status/availableReplicas")),
        ("ReplicaSet", "Desired") => {
            json!(o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1))
        }
        ("DaemonSet", "Desired") => json!(i(o, "/status/desiredNumberScheduled")),
        ("DaemonSet", "Current") => json!(i(o, "/status/currentNumberScheduled")),
        ("DaemonSet", "Ready") => json!(i(o, "/status/numberReady")),
        ("DaemonSet", "Up-to-date") => json!(i(o, "/status/updatedNumberScheduled")),
        ("DaemonSet", "Available") => json!(i(o, "/status/numberAvailable")),
        ("DaemonSet", "Node Selector") => {
            json!(key_values(o.pointer("/spec/template/spec/nodeSelector")))
        }
        ("ReplicaSet", "Current") => json!(i(o, "/status/replicas")),
        ("ReplicaSet", "Ready") => json!(i(o, "/status/readyReplicas")),
        (_, "Containers") => json!(containers(o.pointer("/spec/template/spec"), "name")),
        (_, "Images") => json!(containers(o.pointer("/spec/template/spec"), "image")),
        ("Service", "Selector") => json!(key_values(o.pointer("/spec/selector"))),
        (_, "Selector") => json!(selector(o.pointer("/spec/selector"))),
        ("Service", "Type") => json!(match s(o, "/spec/type") {
            "" => "ClusterIP",
            t => t,
        }),
        ("Service", "Cluster-IP") => json!(none_if_empty(s(o, "/spec/clusterIP").into())),
        ("Service", "External-IP") => json!(service_external_ips(o)),
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
        ("Namespace", "Status") => json!(match s(o, "/status/phase") {
            "" => "Active",
            p => p,
        }),
        ("Node", "Status") => json!(node_status(o)),
        ("Node", "Roles") => json!(node_roles(o)),
        ("Node", "Version") => json!(s(o, "/status/nodeInfo/kubeletVersion")),
        ("Node", "Internal-IP") => json!(node_address(o, "InternalIP")),
        ("Node", "External-IP") => json!(node_address(o, "ExternalIP")),
        ("Node", "OS-Image") => json!(none_if_empty(s(o, "/status/nodeInfo/osImage").into())),
        ("Node", "Kernel-Version") => {
            json!(none_if_empty(s(o, "/status/nodeInfo/kernelVersion").into()))
        }
        ("Node", "Container-Runtime") => json!(none_if_empty(
            s(o, "/status/nodeInfo/containerRuntimeVersion").into()
        )),
        ("Endpoints", "Endpoints") => json!(endpoints(o)),
        ("ServiceAccount", "Secrets") => json!(len_of(o, "/secrets")),
        ("Pod", "Nominated Node") => {
            json!(none_if_empty(s(o, "/status/nominatedNodeName").into()))
        }
        ("Pod", "Readiness Gates") => json!(readiness_gates(o)),
        ("ConfigMap", "Data") => json!(len_of(o, "/data") + len_of(o, "/binaryData")),
        ("Secret", "Type") => json!(s(o, "/type")),
        ("Secret", "Data") => json!(len_of(o, "/data")),
        ("Event", "Last Seen") => json!(age(str_at(o, "/series/lastObservedTime")
            .or(str_at(o, "/lastTimestamp"))
            .or(str_at(o, "/eventTime"))
            .or(created))),
        ("Event", "First Seen") => json!(age(str_at(o, "/firstTimestamp")
            .or(str_at(o, "/eventTime"))
            .or(created))),
        ("Event", "Count") => json!(o
            .pointer("/series/count")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| i(o, "/count").max(1))),
        ("Event", "Subobject") => json!(s(o, "/involvedObject/fieldPath")),
        ("Event", "Source") => json!(event_source(o)),
        ("Event", "Type") => json!(s(o, "/type")),
        ("Event", "Reason") => json!(s(o, "/reason")),
        ("Event", "Object") => json!(format!(
            "{}/{}",
            s(o, "/involvedObject/kind").to_lowercase(),
            s(o, "/involvedObject/name")
        )),
        ("Event", "Message") => json!(s(o, "/message")),
        ("Lease", "Holder") => json!(s(o, "/spec/holderIdentity")),
        // An int or a percent; kubectl prints N/A for the one not set.
        ("PodDisruptionBudget", "Min Available") => json!(int_or_na(o, "/spec/minAvailable")),
        ("PodDisruptionBudget", "Max Unavailable") => {
            json!(int_or_na(o, "/spec/maxUnavailable"))
        }
        ("PodDisruptionBudget", "Allowed Disruptions") => json!(i(o, "/status/disruptionsAllowed")),
        ("RuntimeClass", "Handler") => json!(s(o, "/handler")),
        (_, "Created At") => json!(created.unwrap_or("")),
        _ => json!(""),
    }
}

/// A Table of a resource's `items`: a custom resource with printer columns gets those (as
/// kube-apiserver serves a CRD's `additionalPrinterColumns`), every other kind its own.
pub fn table_for(
    res: &crate::resources::Resource,
    items: &[Value],
    req: &Req,
    metadata: Value,
) -> Value {
    if res.printer_columns.is_empty() {
        return table(&res.kind, items, req, metadata);
    }
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "", "priority": 0})];
    for c in &res.printer_columns {
        defs.push(json!({
            "name": c.get("name").cloned().unwrap_or_default(),
            "type": c.get("type").cloned().unwrap_or_else(|| json!("string")),
            "format": c.get("format").cloned().unwrap_or_else(|| json!("")),
            "description": c.get("description").cloned().unwrap_or_else(|| json!("")),
            "priority": c.get("priority").cloned().unwrap_or_else(|| json!(0)),
        }));
    }
    let cells = |o: &Value| -> Vec<Value> {
        let mut out = vec![json!(s(o, "/metadata/name"))];
        for c in &res.printer_columns {
            let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
            let v = json_path(o, path);
            let date = c.get("type").and_then(Value::as_str) == Some("date");
            out.push(match v {
                Some(Value::String(t)) if date => json!(age(Some(t.as_str()))),
                Some(v) => v,
                None => Value::Null,
            });
        }
        out
    };
    rows_table(defs, items, req, metadata, cells)
}

/// Build a Table of `items`. `includeObject` (None, Metadata — the default — or Object)
/// decides what each row carries besides its cells.
pub fn table(kind: &str, items: &[Value], req: &Req, metadata: Value) -> Value {
    let cols = columns(kind);
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
    rows_table(defs, items, req, metadata, |o| {
        cols.iter().map(|col| cell(kind, col.name, o)).collect()
    })
}

/// The value at a printer column's JSONPath: the simple paths CRDs use (`.status.phase`,
/// `.spec.containers[0].image`, `.metadata.labels.app`).
fn json_path(o: &Value, path: &str) -> Option<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = o;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (field, rest) = part.split_once('[').unwrap_or((part, ""));
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        for index in rest.split('[').filter(|i| !i.is_empty()) {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            cur = cur.get(i)?;
        }
    }
    Some(cur.clone())
}

fn rows_table(
    defs: Vec<Value>,
    items: &[Value],
    req: &Req,
    metadata: Value,
    cells_of: impl Fn(&Value) -> Vec<Value>,
) -> Value {
    let include = req.q("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells = cells_of(o);
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

/// A ControllerRevision's controller as kubectl prints it (`statefulset.apps/web`), or
/// `<none>`.
fn revision_controller(o: &Value) -> String {
    let owners = o
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    let controller = owners.and_then(|refs| {
        refs.iter()
            .find(|r| r.get("controller") == Some(&Value::Bool(true)))
    });
    match controller {
        Some(r) => {
            let kind = s(r, "/kind").to_lowercase();
            let group = s(r, "/apiVersion").split_once('/').map_or("", |(g, _)| g);
            let name = s(r, "/name");
            if group.is_empty() {
                format!("{kind}/{name}")
            } else {
                format!("{kind}.{group}/{name}")
            }
        }
        None => "<none>".into(),
    }
}

#[cfg(test)]
mod json_path_tests {
    use super::json_path;
    use serde_json::json;

    #[test]
    fn printer_column_paths() {
        let o = json!({"status": {"ready": true}, "spec": {"c": [{"image": "x"}]}});
        assert_eq!(json_path(&o, ".status.ready"), Some(json!(true)));
        assert_eq!(json_path(&o, ".spec.c[0].image"), Some(json!("x")));
        assert_eq!(json_path(&o, ".spec.c[1].image"), None);
        assert_eq!(json_path(&o, ".status.missing"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_print_like_kubectl() {
        let node = json!({
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        assert_eq!(
            cell("Node", "Status", &node),
            json!("Ready,SchedulingDisabled")
        );
        assert_eq!(cell("Node", "Roles", &node), json!("control-plane"));
        let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(cell("Node", "Status", &unknown), json!("NotReady"));
        assert_eq!(cell("Node", "Status", &json!({})), json!("Unknown"));

        let ep = json!({"subsets": [
            {"addresses": [{"ip": "10.42.0.2"}, {"ip": "10.42.0.3"}], "ports": [{"port": 8080}]},
            {"addresses": [{"ip": "10.42.0.4"}, {"ip": "10.42.0.5"}], "ports": [{"port": 8080}]},
        ]});
        assert_eq!(
            cell("Endpoints", "Endpoints", &ep),
            json!("10.42.0.2:8080,10.42.0.3:8080,10.42.0.4:8080 + 1 more...")
        );
        assert_eq!(cell("Endpoints", "Endpoints", &json!({})), json!("<none>"));

        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(cell("Service", "External-IP", &lb), json!("<pending>"));
        let ev = json!({"count": 7, "source": {"component": "kubelet", "host": "n1"}});
        assert_eq!(cell("Event", "Count", &ev), json!(7));
        assert_eq!(cell("Event", "Source", &ev), json!("kubelet, n1"));
        let gated = json!({
            "spec": {"readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
            "status": {"conditions": [{"type": "a", "status": "True"}]},
        });
        assert_eq!(cell("Pod", "Readiness Gates", &gated), json!("1/2"));
    }
}
