//! OpenAPI: `/openapi/v2` (one document) and `/openapi/v3` (an index of one document per
//! group-version, each addressed with a content hash so clients cache it for good), built
//! from the registry on each request so CRDs appear and disappear live.

pub mod fields;
mod patch_meta;
mod paths;
mod schemas;
mod v2proto;

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

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

/// Serialized documents by name (`v3:api/v1`, `v2:json`…), each with the registry generation
/// it was built at and its hash: kubectl fetches the v3 index (which hashes every document)
/// before each write it validates, so building them per request would cost every command.
#[derive(Default)]
pub struct Cache {
    docs: Mutex<HashMap<String, (u64, Bytes, String)>>,
}

impl Cache {
    /// The cached bytes and hash of `name`, built by `build` when missing or stale.
    fn get(
        &self,
        api: &Api,
        name: &str,
        build: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<(Bytes, String)> {
        let generation = api.registry.generation();
        let lock = || self.docs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, body, hash)) = lock().get(name) {
            if *g == generation {
                return Some((body.clone(), hash.clone()));
            }
        }
        let body = Bytes::from(build()?);
        let hash = hex_digest(&body);
        lock().insert(name.to_string(), (generation, body.clone(), hash.clone()));
        Some((body, hash))
    }
}

/// The serialized v3 document of a group-version and its hash (None when not served).
fn gv_serialized(api: &Api, group: &str, version: &str) -> Option<(Bytes, String)> {
    let key = format!("v3:{}", gv_path(group, version));
    api.openapi.get(api, &key, || {
        gv_document(api, group, version).map(|d| serde_json::to_vec(&d).unwrap_or_default())
    })
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
fn cached(req: &Req, body: Bytes, hash: &str, content_type: &str, cache: &str) -> Response {
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
            let Some((_, hash)) = gv_serialized(api, &g.name, v) else {
                continue;
            };
            let p = gv_path(&g.name, v);
            index.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    let (body, hash) = serialized(&json!({ "paths": index }));
    cached(req, Bytes::from(body), &hash, "application/json", NO_CACHE)
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/VERSION`. With the current `hash` the
/// answer never changes, so it may be cached for ever (as Kubernetes marks it); a stale hash is
/// redirected to the current one.
pub fn v3_document(api: &Api, req: &Req, group: &str, version: &str) -> ApiResult<Response> {
    let (body, hash) = gv_serialized(api, group, version).ok_or_else(|| {
        ApiError::path_not_found(&format!("/openapi/v3/{}", gv_path(group, version)))
    })?;
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
    let proto = req.header("accept").contains("protobuf");
    let key = if proto { "v2:protobuf" } else { "v2:json" };
    let Some((body, hash)) = api.openapi.get(api, key, || Some(v2_document(api, proto))) else {
        return ApiError::internal("building /openapi/v2").into_response();
    };
    // kube-apiserver answers protobuf as octet-stream: Go's mime parser (so kubectl) rejects
    // the `…spec.v2@v1.0+protobuf` type kubectl asks for.
    let ct = if proto {
        "application/octet-stream"
    } else {
        "application/json"
    };
    cached(req, body, &hash, ct, NO_CACHE)
}

fn v2_document(api: &Api, proto: bool) -> Vec<u8> {
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
    if proto {
        v2proto::encode(&doc)
    } else {
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}
