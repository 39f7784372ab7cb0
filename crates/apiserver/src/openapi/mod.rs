//! OpenAPI: `/openapi/v2` (one document) and `/openapi/v3` (an index of one document per
//! group-version, each addressed with a content hash so clients cache it for good), built
//! from the registry on each request so CRDs appear and disappear live.

pub mod fields;
mod patch_meta;
mod paths;
mod schemas;
mod v2proto;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::discovery::{hex_digest, served, MAJOR, MINOR};
use crate::error::{ApiError, ApiResult};
use crate::resources::Schema;
use crate::router::Req;
use crate::Api;

pub use schemas::for_resource;

/// The schema name of a built-in kind (a subresource's Scale, Binding…).
pub fn builtin_schema_name(group: &str, version: &str, kind: &str) -> String {
    for (g, v) in schemas::BUILTIN_GROUP_VERSIONS {
        if let Some(d) = schemas::builtin(g, v) {
            if let Some((name, ..)) = d
                .kinds
                .iter()
                .find(|(_, kg, kv, kk)| kg == group && kv == version && kk == kind)
            {
                return name.clone();
            }
        }
    }
    format!("{group}.{version}.{kind}")
}

/// `api/v1` or `apis/GROUP/VERSION`, as the v3 index names a document.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 document of one served group-version (None when nothing is served there).
fn gv_document(api: &Api, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<_> = api
        .registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let mut components = Map::new();
    let mut path_items = Map::new();
    if let Some(defs) = schemas::builtin(group, version) {
        components.extend(defs.schemas.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for r in &resources {
        let name = match r.schema {
            Schema::Builtin => builtin_schema_name(&r.group, &r.version, &r.kind),
            Schema::Custom(_) => {
                let name = schemas::crd_schema_name(r);
                components.insert(name.clone(), schemas::crd_schema(r));
                components.extend(schemas::meta_definitions());
                name
            }
        };
        paths::resource_paths(r, &name, &mut path_items);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": path_items,
        "components": {
            "schemas": components,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
    }))
}

fn serialized(doc: &Value) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(doc).unwrap_or_default();
    let hash = hex_digest(&body);
    (body, hash)
}

/// A document answer with its ETag (304 when the client has it) and the cache policy.
fn cached(req: &Req, body: Vec<u8>, hash: &str, content_type: &str, cache: &str) -> Response {
    let etag = format!("\"{hash}\"");
    let not_modified = req
        .header("if-none-match")
        .split(',')
        .any(|t| t.trim() == etag);
    let mut r = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let h = r.headers_mut();
    for (k, v) in [
        (header::ETAG, etag.as_str()),
        (header::CACHE_CONTROL, cache),
        (header::CONTENT_TYPE, content_type),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

const NO_CACHE: &str = "no-cache, private";

/// `GET /openapi/v3`: every served group-version with the URL of its current document.
pub fn v3_index(api: &Api, req: &Req) -> Response {
    let mut index = Map::new();
    for g in served(api) {
        for (v, _) in &g.versions {
            let Some(doc) = gv_document(api, &g.name, v) else {
                continue;
            };
            let (_, hash) = serialized(&doc);
            let p = gv_path(&g.name, v);
            index.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    let (body, hash) = serialized(&json!({ "paths": index }));
    cached(req, body, &hash, "application/json", NO_CACHE)
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/VERSION`. With the current `hash` the
/// answer never changes, so it may be cached for ever (as Kubernetes marks it); a stale hash is
/// redirected to the current one.
pub fn v3_document(api: &Api, req: &Req, group: &str, version: &str) -> ApiResult<Response> {
    let doc = gv_document(api, group, version).ok_or_else(|| {
        ApiError::path_not_found(&format!("/openapi/v3/{}", gv_path(group, version)))
    })?;
    let (body, hash) = serialized(&doc);
    match req.q("hash") {
        Some(h) if h == hash => Ok(cached(
            req,
            body,
            &hash,
            "application/json",
            "public, immutable, max-age=31536000",
        )),
        Some(_) => {
            let to = format!("/openapi/v3/{}?hash={hash}", gv_path(group, version));
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
            Ok(r)
        }
        None => Ok(cached(req, body, &hash, "application/json", NO_CACHE)),
    }
}

/// Kubernetes' v2 form of a v3 schema: a `$ref` carries its description beside it (v3 wraps
/// it in a one-element `allOf`), refs point under `#/definitions/`, and an int-or-string is a
/// string of format `int-or-string`.
fn to_v2(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let single_ref = o
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| a[0].get("$ref"))
                .cloned();
            if let Some(r) = single_ref {
                o.remove("allOf");
                o.insert("$ref".into(), r);
            }
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(schemas::REF_PREFIX) {
                    *r = format!("#/definitions/{name}");
                }
            }
            if o.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                && !o.contains_key("type")
            {
                o.insert("type".into(), "string".into());
                o.insert("format".into(), "int-or-string".into());
            }
            o.values_mut().for_each(to_v2);
        }
        Value::Array(a) => a.iter_mut().for_each(to_v2),
        _ => {}
    }
}

/// `GET /openapi/v2`: every served kind's definition, as JSON or, for kubectl ≤1.26 (which
/// asks for it), as the protobuf `openapi_v2.Document`.
pub fn v2(api: &Api, req: &Req) -> Response {
    let mut definitions = Map::new();
    for g in served(api) {
        for (v, _) in &g.versions {
            if let Some(doc) = gv_document(api, &g.name, v) {
                if let Some(Value::Object(s)) = doc.pointer("/components/schemas") {
                    definitions.extend(s.clone());
                }
            }
        }
    }
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": {},
        "definitions": definitions,
    });
    to_v2(&mut doc);
    if req.header("accept").contains("protobuf") {
        let body = v2proto::encode(&doc);
        let hash = hex_digest(&body);
        return cached(
            req,
            body,
            &hash,
            // What kube-apiserver answers with: Go's mime parser (so kubectl) rejects the
            // `…spec.v2@v1.0+protobuf` type it asks for.
            "application/octet-stream",
            NO_CACHE,
        );
    }
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let hash = hex_digest(&body);
    cached(req, body, &hash, "application/json", NO_CACHE)
}
