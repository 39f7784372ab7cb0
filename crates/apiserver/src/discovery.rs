//! Discovery: /version, /api, /apis, the APIResourceLists and /openapi/v2.

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::resources::Resource;
use crate::router::{json, Req};
use crate::Api;

/// The Kubernetes version yun's API corresponds to (k8s-openapi feature v1_33).
const MAJOR: &str = "1";
const MINOR: &str = "33";

pub fn version() -> Response {
    json(
        200,
        &json!({
            "major": MAJOR,
            "minor": MINOR,
            "gitVersion": format!("v{MAJOR}.{MINOR}.0-yun{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "none (rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
        }),
    )
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn api_versions(api: &Api) -> Response {
    json(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": api.addr.to_string()}
            ],
        }),
    )
}

/// Groups other than core, each with its versions (in registration order).
fn groups(api: &Api) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in api.registry.all() {
        if r.group.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version.clone());
                }
            }
            None => out.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    // Scale objects are autoscaling/v1; clients resolve that group/version through discovery.
    if !out.iter().any(|(g, _)| g == "autoscaling") {
        out.push(("autoscaling".into(), vec!["v1".into()]));
    }
    out
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn group_list(api: &Api) -> Response {
    let groups: Vec<Value> = groups(api)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

pub fn group(api: &Api, group: &str) -> ApiResult<Response> {
    let gs = groups(api);
    let (g, vs) = gs
        .iter()
        .find(|(g, _)| g == group)
        .ok_or_else(|| ApiError::path_not_found(&format!("/apis/{group}")))?;
    let mut v = group_json(g, vs);
    v["kind"] = "APIGroup".into();
    v["apiVersion"] = "v1".into();
    Ok(json(200, &v))
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_json(r: &Resource) -> Value {
    let mut v = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if r.in_all {
        v["categories"] = json!(["all"]);
    }
    v
}

pub fn resource_list(api: &Api, group: &str, version: &str) -> ApiResult<Response> {
    let mut list = Vec::new();
    for r in api.registry.all() {
        if r.group != group || r.version != version {
            continue;
        }
        list.push(resource_json(&r));
        let sub = |name: &str, verbs: &[&str]| {
            json!({"name": format!("{}/{name}", r.plural), "singularName": "",
                   "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs})
        };
        if r.status {
            list.push(sub("status", &["get", "patch", "update"]));
        }
        if r.scale {
            let mut s = sub("scale", &["get", "patch", "update"]);
            s["group"] = "autoscaling".into();
            s["version"] = "v1".into();
            s["kind"] = "Scale".into();
            list.push(s);
        }
        if r.kind == "Namespace" && r.group.is_empty() {
            list.push(sub("finalize", &["update"]));
        }
        if r.binding {
            let mut s = sub("binding", &["create"]);
            s["kind"] = "Binding".into();
            list.push(s);
        }
    }
    if group == "autoscaling" && version == "v1" {
        // Served only as the scale subresource of deployments and replicasets.
    } else if list.is_empty() {
        let path = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        return Err(ApiError::path_not_found(&path));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    ))
}

/// kubectl 1.20 fetches /openapi/v2 as protobuf (an `openapi_v2.Document`) to validate objects
/// before `create` and `apply`; kinds it finds no schema for are not validated client-side (the
/// server validates them). So the answer is a valid document with no definitions: as protobuf
/// `swagger: "2.0"` (field 1) and `info {title: "yun", version: "v1"}` (field 2), as JSON the same.
pub fn openapi_v2(req: &Req) -> Response {
    if req.header("accept").contains("protobuf") {
        let mut doc = vec![0x0a, 3];
        doc.extend_from_slice(b"2.0");
        let info = [&[0x0a, 3][..], b"yun", &[0x12, 2][..], b"v1"].concat();
        doc.push(0x12);
        doc.push(info.len() as u8);
        doc.extend_from_slice(&info);
        return ([("content-type", "application/octet-stream")], doc).into_response();
    }
    json(
        200,
        &json!({"swagger": "2.0", "info": {"title": "yun", "version": "v1"}, "paths": {}, "definitions": {}}),
    )
}
