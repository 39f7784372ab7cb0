//! Request routing: authentication, then discovery paths or a resource path
//! (`/api/v1/...`, `/apis/GROUP/VERSION/...`) dispatched by verb.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::rbac::attributes;
use crate::resources::Resource;
use crate::{auth, discovery, openapi, rest, Api};

/// Request bodies up to this size are read; objects over the store's 1.5 MiB limit are then
/// refused with a Status (Kubernetes reads up to 3 MiB as well).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn app(api: Arc<Api>) -> Router {
    Router::new().fallback(handle).with_state(api)
}

/// A parsed request: what the REST handlers need.
pub struct Req {
    pub method: Method,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Who the request is served as (after impersonation); per-user limits key on its name.
    pub user: UserInfo,
    /// The connection it came on (None for requests made up inside the server).
    pub conn: Option<crate::tls::Connection>,
    /// The response encoding negotiated from `Accept` (set by the REST dispatcher).
    pub output: crate::proto::Output,
    /// The query as sent (exec's repeated `command` parameters are forwarded as they are).
    pub raw_query: String,
    /// The connection's upgrade, for the streaming subresources (exec, attach, port-forward).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("1" | "true" | "True"))
    }
    pub fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The client asked for a `meta.k8s.io` Table (kubectl get).
    pub fn wants_table(&self) -> bool {
        crate::proto::negotiate(self.header("accept"), true).is_ok_and(|o| o.table)
    }
}

/// Where a resource request points.
pub struct Target {
    pub res: Resource,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
    pub fn key(&self) -> String {
        self.res.key(self.ns.as_deref(), self.name())
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode_component(k), decode_component(v));
    }
    out
}

/// Percent-decoding (and `+` as space) of one query component.
fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let out = crate::proto::negotiate(header(&parts.headers, "accept"), true).unwrap_or_default();
    let query = parse_query(parts.uri.query());
    let user = match identify(&api, &parts, &path, &query).await {
        Ok(u) => u,
        Err(e) if e.code == 401 => return e.into_response(),
        Err(e) => return crate::proto::respond(out, e.code, &e.status()),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::too_large(format!("Request entity too large: limit is {MAX_BODY}"))
                .into_response()
        }
    };
    let req = Req {
        method: parts.method,
        query,
        headers: parts.headers,
        body,
        user: user.clone(),
        conn: parts.extensions.get::<crate::tls::Connection>().cloned(),
        output: Default::default(),
        raw_query: parts.uri.query().unwrap_or("").to_string(),
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
    };
    // An error is a Status in what the client accepts (protobuf for kubectl); a 406 is JSON,
    // since what the client accepts is the problem.
    // The writer of RBAC objects, for the escalation checks deep in the write path.
    let requester = (user, api.authz.clone());
    let routed = crate::rbac::escalation::REQUESTER.scope(requester, route(&api, &path, req));
    match routed.await {
        Ok(r) => r,
        Err(e) if e.code == 406 => e.into_response(),
        Err(e) => crate::proto::respond(out, e.code, &e.status()),
    }
}

fn header<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Authenticate (401 for credentials that do not check out; none is `system:anonymous`),
/// apply impersonation, and authorize the request: the identity it is served as, or the error.
async fn identify(
    api: &Api,
    parts: &axum::http::request::Parts,
    path: &str,
    query: &HashMap<String, String>,
) -> ApiResult<UserInfo> {
    let peer = parts.extensions.get::<auth::PeerCerts>();
    let mut user = api.authn.authenticate(&parts.headers, peer);
    if user.is_none() && peer.is_none_or(|p| p.is_empty()) {
        if let Some(token) = auth::bearer(&parts.headers) {
            user = auth::serviceaccount::authenticate(api, token)
                .await
                .map(|sa| sa.user_info());
        }
    }
    let user = match user {
        Some(u) => u,
        None if auth::has_credentials(&parts.headers, peer) => return Err(ApiError::unauthorized()),
        None => UserInfo::anonymous(),
    };
    let user = auth::impersonate::apply(&api.authz, user, &parts.headers)?;
    let mut attrs = attributes::of_request(&user, &parts.method, path, query);
    let mut allowed = api.authz.allows(&attrs);
    // A websocket (GET) into exec/attach/port-forward/proxy opens the same stream as the
    // SPDY POST does: it needs `create` as well, as kube checks it since 1.30.
    if allowed && attrs.verb == "get" && attributes::is_stream(&attrs.subresource) {
        attrs.verb = "create".into();
        allowed = api.authz.allows(&attrs);
    }
    if allowed {
        Ok(user)
    } else {
        Err(forbidden(&attrs))
    }
}

/// kube's 403: `pods is forbidden: User "alice" cannot list resource "pods" in API group ""
/// in the namespace "default"`.
pub fn forbidden(a: &crate::rbac::rules::Attributes) -> ApiError {
    if !a.resource_request {
        return ApiError::new(403, "Forbidden", format!("forbidden: {}", a.denial()));
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let subject = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} {:?}", a.name)
    };
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!("{subject} is forbidden: {}", a.denial()),
    );
    e.details = Some(serde_json::json!({"name": a.name, "group": a.api_group, "kind": a.resource}));
    e
}

async fn route(api: &Arc<Api>, path: &str, mut req: Req) -> ApiResult<Response> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = req.method == Method::GET;
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz"] => return Ok("ok".into_response()),
        [".well-known", "openid-configuration"] if get => {
            return Ok(rest::tokens::openid_configuration(api))
        }
        ["openid", "v1", "jwks"] if get => return Ok(rest::tokens::jwks(api)),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] if req.method == Method::POST => {
            return rest::tokens::token_review(api, &req).await
        }
        ["version"] if get => return Ok(discovery::version()),
        ["openapi", "v2"] if get => return Ok(openapi::v2(api, &req)),
        ["openapi", "v3"] if get => return Ok(openapi::v3_index(api, &req)),
        ["openapi", "v3", "api", version] if get => {
            return openapi::v3_document(api, &req, "", version)
        }
        ["openapi", "v3", "apis", group, version] if get => {
            return openapi::v3_document(api, &req, group, version)
        }
        ["api"] if get => return Ok(discovery::api_versions(api, &req)),
        ["api", "v1"] if get => return discovery::resource_list(api, "", "v1"),
        ["apis"] if get => return Ok(discovery::group_list(api, &req)),
        ["apis", group] if get => return discovery::group(api, group),
        ["apis", group, version] if get => return discovery::resource_list(api, group, version),
        _ => {}
    }
    if let ["api", "v1", "namespaces", ns, kind @ ("pods" | "services"), spec, "proxy", rest @ ..] =
        segs.as_slice()
    {
        let mut to = format!("/{}", rest.join("/"));
        if path.ends_with('/') && !rest.is_empty() {
            to.push('/');
        }
        return rest::proxy::proxy(api, ns, kind, spec, &to, req).await;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found(path)),
    };
    if let [plural] = rest {
        if let Some(r) = crate::rbac::reviews::handle(api, group, version, plural, &req) {
            return r;
        }
    }
    if let Some(r) = crate::metrics::handle(api, group, version, rest, &req).await {
        return r;
    }
    let mut rest = rest;
    if let ["watch", r @ ..] = rest {
        // The old watch paths (/api/v1/watch/...) still used by some clients.
        req.query.insert("watch".into(), "true".into());
        rest = r;
    }
    let target =
        resolve(api, group, version, rest).ok_or_else(|| ApiError::path_not_found(path))?;
    rest::dispatch(api, target, req).await
}

fn resolve(api: &Api, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let find = |plural: &str| api.registry.find(group, version, plural);
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    if let ["namespaces", ns, plural, more @ ..] = rest {
        if let Some(res) = find(plural).filter(|r| r.namespaced) {
            if more.len() > 2 {
                return None;
            }
            return Some(Target {
                res,
                ns: Some(ns.to_string()),
                name: owned(more.first()),
                sub: owned(more.get(1)),
            });
        }
    }
    let [plural, more @ ..] = rest else {
        return None;
    };
    if more.len() > 2 {
        return None;
    }
    let res = find(plural)?;
    // A namespaced kind without a namespace in the path: only lists and watches across all
    // namespaces make sense.
    if res.namespaced && !more.is_empty() {
        return None;
    }
    Some(Target {
        res,
        ns: None,
        name: owned(more.first()),
        sub: owned(more.get(1)),
    })
}

/// A JSON response with the given status code.
pub fn json(code: u16, value: &serde_json::Value) -> Response {
    json_bytes(code, serde_json::to_vec(value).unwrap_or_default())
}

/// A response whose body is JSON already serialized.
pub fn json_bytes(code: u16, body: Vec<u8>) -> Response {
    bytes_response(code, "application/json", body)
}

/// A response whose body is already encoded as `content_type`.
pub fn bytes_response(code: u16, content_type: &str, body: Vec<u8>) -> Response {
    let code = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap_or_else(|_| ApiError::internal("building response").into_response())
}

#[cfg(test)]
impl Req {
    /// A GET with the given query and headers, for unit tests of handlers' parsing.
    pub fn for_test(query: &[(&str, &str)], headers: &[(&'static str, &str)]) -> Req {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().expect("header value"));
        }
        Req {
            method: Method::GET,
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: h,
            body: Bytes::new(),
            user: UserInfo::admin(),
            conn: None,
            output: Default::default(),
            raw_query: String::new(),
            upgrade: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&x"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(decode_component("%zz%4"), "%zz%4");
    }
}
