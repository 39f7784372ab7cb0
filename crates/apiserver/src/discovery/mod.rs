//! Discovery: /version, the legacy /api, /apis, /apis/GROUP and APIResourceLists, and the
//! aggregated APIGroupDiscoveryList ([`aggregated`]) that kubectl ≥1.26 asks for first. Both are
//! rendered from one view of the registry ([`served`]), so they cannot disagree.

mod aggregated;
mod listed;

pub use listed::Listed;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::resources::Resource;
use crate::router::{json, Req};
use crate::Api;

/// The Kubernetes version yun's API corresponds to (k8s-openapi feature v1_33).
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";

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

/// One group as discovery shows it: versions in preference order, each with its resources.
pub struct Group {
    pub name: String,
    pub versions: Vec<(String, Vec<Listed>)>,
}

/// A subresource as discovery lists it: (name, its kind's group, version, kind, verbs).
pub type Subresource = (&'static str, String, String, String, Vec<&'static str>);

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically (so `v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > foo`).
fn version_rank(v: &str) -> (u8, i64, i64, String) {
    let parsed = v.strip_prefix('v').and_then(|rest| {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let major: i64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let stage = |p: &str, rank: u8| {
            tail.strip_prefix(p)
                .and_then(|n| n.parse::<i64>().ok())
                .map(|n| (rank, major, n))
        };
        match tail {
            "" => Some((0, major, 0)),
            _ => stage("beta", 1).or_else(|| stage("alpha", 2)),
        }
    });
    match parsed {
        Some((rank, major, minor)) => (rank, -major, -minor, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// The served groups: core ("") first, then the others in registration order; a group appears
/// only with at least one version that has resources, so no client sees an empty group.
pub fn served(api: &Api) -> Vec<Group> {
    let mut out: Vec<Group> = vec![Group {
        name: String::new(),
        versions: Vec::new(),
    }];
    let registry = api
        .registry
        .all()
        .iter()
        .map(Listed::of)
        .collect::<Vec<_>>();
    let unstored = listed::reviews()
        .into_iter()
        .chain(crate::metrics::listed());
    for r in registry.into_iter().chain(unstored) {
        let gi = match out.iter().position(|g| g.name == r.group) {
            Some(i) => i,
            None => {
                out.push(Group {
                    name: r.group.clone(),
                    versions: Vec::new(),
                });
                out.len() - 1
            }
        };
        let vs = &mut out[gi].versions;
        match vs.iter_mut().find(|(v, _)| *v == r.version) {
            Some((_, rs)) => rs.push(r),
            None => vs.push((r.version.clone(), vec![r])),
        }
    }
    out.retain(|g| !g.versions.is_empty());
    for g in &mut out {
        g.versions.sort_by_key(|(v, _)| version_rank(v));
    }
    out
}

/// Which subresources a resource serves: (name, kind's group, version, kind, verbs).
pub fn subresources(r: &Resource) -> Vec<Subresource> {
    let own = || (r.group.clone(), r.version.clone(), r.kind.clone());
    let mut out = Vec::new();
    let rw = vec!["get", "patch", "update"];
    if r.status {
        let (g, v, k) = own();
        out.push(("status", g, v, k, rw.clone()));
    }
    if r.scale {
        out.push((
            "scale",
            "autoscaling".into(),
            "v1".into(),
            "Scale".into(),
            rw,
        ));
    }
    if r.binding {
        out.push((
            "binding",
            String::new(),
            "v1".into(),
            "Binding".into(),
            vec!["create"],
        ));
        out.push((
            "eviction",
            crate::policy::GROUP.into(),
            "v1".into(),
            "Eviction".into(),
            vec!["create"],
        ));
        let (g, v, k) = own();
        out.push(("log", g, v, k, vec!["get"]));
    }
    if r.kind == "Namespace" && r.group.is_empty() {
        let (g, v, k) = own();
        out.push(("finalize", g, v, k, vec!["update"]));
    }
    out
}

/// What discovery lists: the subresources above plus the connect ones kube-apiserver lists
/// (`pods/exec`, `attach`, `portforward`, `proxy`; `services/proxy`), which take query
/// parameters rather than a body and so have no schema in OpenAPI's paths, and
/// `serviceaccounts/token` (TokenRequest, answered by `rest::tokens`).
pub fn discovered_subresources(r: &Resource) -> Vec<Subresource> {
    let mut out = subresources(r);
    if !r.group.is_empty() {
        return out;
    }
    let proxy = vec!["create", "delete", "get", "patch", "update"];
    let connect = |name, kind: &str, verbs: Vec<&'static str>| {
        (
            name,
            String::new(),
            "v1".to_string(),
            kind.to_string(),
            verbs,
        )
    };
    match r.kind.as_str() {
        "Pod" => {
            out.push(connect("attach", "PodAttachOptions", vec!["create", "get"]));
            out.push(connect("exec", "PodExecOptions", vec!["create", "get"]));
            out.push(connect(
                "portforward",
                "PodPortForwardOptions",
                vec!["create", "get"],
            ));
            out.push(connect("proxy", "PodProxyOptions", proxy));
        }
        "Service" => out.push(connect("proxy", "ServiceProxyOptions", proxy)),
        "ServiceAccount" => out.push((
            "token",
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
            vec!["create"],
        )),
        _ => {}
    }
    out
}

/// The verbs of a resource, as Kubernetes lists them (namespaces have no deletecollection).
pub fn verbs(r: &Resource) -> Vec<&'static str> {
    let mut v = vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    if r.group.is_empty() && r.plural == "namespaces" {
        v.retain(|v| *v != "deletecollection");
    }
    v
}

/// A JSON discovery answer with an ETag, and 304 when the client already has it (kubectl's
/// discovery cache revalidates this way).
pub fn etagged(req: &Req, content_type: &str, body: Vec<u8>) -> Response {
    let etag = format!("\"{}\"", hex_digest(&body));
    if req
        .header("if-none-match")
        .split(',')
        .any(|t| t.trim() == etag)
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

pub fn hex_digest(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .take(16)
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// `GET /api`: the legacy APIVersions, or the aggregated list of the core group.
pub fn api_versions(api: &Api, req: &Req) -> Response {
    if let Some(kind) = aggregated::wanted(req) {
        return aggregated::respond(api, req, kind, true);
    }
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

fn group_json(g: &Group) -> Value {
    let vs: Vec<Value> = g
        .versions
        .iter()
        .map(|(v, _)| json!({"groupVersion": format!("{}/{v}", g.name), "version": v}))
        .collect();
    json!({
        "name": g.name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `GET /apis`: the legacy APIGroupList, or the aggregated list of every other group.
pub fn group_list(api: &Api, req: &Req) -> Response {
    if let Some(kind) = aggregated::wanted(req) {
        return aggregated::respond(api, req, kind, false);
    }
    let groups: Vec<Value> = served(api)
        .iter()
        .filter(|g| !g.name.is_empty())
        .map(group_json)
        .collect();
    json(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

pub fn group(api: &Api, group: &str) -> ApiResult<Response> {
    let gs = served(api);
    let g = gs
        .iter()
        .find(|g| !g.name.is_empty() && g.name == group)
        .ok_or_else(|| ApiError::path_not_found(&format!("/apis/{group}")))?;
    let mut v = group_json(g);
    v["kind"] = "APIGroup".into();
    v["apiVersion"] = "v1".into();
    Ok(json(200, &v))
}

fn resource_json(r: &Listed) -> Value {
    let mut v = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
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
    let served = served(api);
    let resources = served
        .iter()
        .filter(|g| g.name == group)
        .flat_map(|g| &g.versions)
        .filter(|(v, _)| v == version)
        .flat_map(|(_, rs)| rs);
    for r in resources {
        list.push(resource_json(r));
        for (name, g, v, kind, verbs) in &r.subresources {
            let mut s = json!({"name": format!("{}/{name}", r.plural), "singularName": "",
                   "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if *g != r.group || *v != r.version {
                s["group"] = g.as_str().into();
                s["version"] = v.as_str().into();
            }
            list.push(s);
        }
    }
    if list.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_prefers_them() {
        let mut vs = vec!["v1alpha1", "foo", "v1beta1", "v2", "v1", "v1beta2", "v10"];
        vs.sort_by_key(|v| version_rank(v));
        assert_eq!(
            vs,
            ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }
}
