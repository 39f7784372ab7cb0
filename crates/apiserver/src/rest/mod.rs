//! The generic REST verbs over stored JSON objects.

mod admission;
mod apply;
mod eviction;
mod logs;
mod namespaces;
mod options;
pub mod proxy;
mod read;
mod stream;
mod sub;
pub mod tokens;
mod watch;
pub mod write;

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};
use yun_store::{KeyValue, Outcome};

use crate::error::{ApiError, ApiResult};
use crate::resources::Resource;
use crate::router::{Req, Target};
use crate::selectors::Selector;
use crate::Api;

pub(crate) use logs::agent_address;
pub(crate) use read::list_page;
pub use write::{create_object, ensure_default_namespaces};

pub async fn dispatch(api: &Arc<Api>, t: Target, mut req: Req) -> ApiResult<Response> {
    let sub = t.sub.clone();
    if sub.as_deref() != Some("log") {
        req.output = crate::proto::negotiate(req.header("accept"), builtin(&t.res))?;
    }
    match (&req.method, t.name.is_some(), sub.as_deref()) {
        (&Method::GET, false, None) => {
            if req.flag("watch") {
                watch::watch(api, &t, &req).await
            } else {
                read::list(api, &t, &req).await
            }
        }
        (&Method::GET, true, None) if req.flag("watch") => {
            // Watching one object by path: the same as a name field selector.
            let mut req = req;
            req.query.insert(
                "fieldSelector".into(),
                format!("metadata.name={}", t.name()),
            );
            let t = Target { name: None, ..t };
            watch::watch(api, &t, &req).await
        }
        (&Method::GET, true, None) => read::get(api, &t, &req).await,
        (&Method::GET, true, Some("status")) if t.res.status => read::get(api, &t, &req).await,
        (&Method::GET | &Method::PUT | &Method::PATCH, true, Some("scale")) if t.res.scale => {
            sub::scale(api, &t, &req).await
        }
        (&Method::GET, true, Some("log")) if t.res.binding => logs::log(api, &t, &req).await,
        (&Method::GET | &Method::POST, true, Some(s @ ("exec" | "attach"))) if t.res.binding => {
            let s = s.to_string();
            stream::exec_or_attach(api, &t, req, &s).await
        }
        (&Method::GET | &Method::POST, true, Some("portforward")) if t.res.binding => {
            stream::port_forward(api, &t, req).await
        }
        (&Method::POST, true, Some("binding")) if t.res.binding => {
            sub::binding(api, &t, &req).await
        }
        (&Method::POST, true, Some("eviction")) if t.res.binding => {
            eviction::evict(api, &t, &req).await
        }
        (&Method::POST, true, Some("token")) if t.res.kind == "ServiceAccount" => {
            tokens::token_request(api, &t, &req).await
        }
        (&Method::POST, false, None) => write::create(api, &t, &req).await,
        (&Method::PUT, true, None) => write::update(api, &t, &req, false).await,
        (&Method::PUT, true, Some("status")) if t.res.status => {
            write::update(api, &t, &req, true).await
        }
        (&Method::PATCH, true, None) => write::patch(api, &t, &req, false).await,
        (&Method::PATCH, true, Some("status")) if t.res.status => {
            write::patch(api, &t, &req, true).await
        }
        (&Method::PUT, true, Some("finalize")) if namespaces::is_namespace(&t.res) => {
            namespaces::finalize(api, &t, &req).await
        }
        (&Method::DELETE, true, None) => write::delete(api, &t, &req).await,
        (&Method::DELETE, false, None) => write::delete_collection(api, &t, &req).await,
        (_, _, Some(s)) => Err(ApiError::path_not_found(&format!(
            "{}/{}/{s}",
            t.res.plural,
            t.name()
        ))),
        (m, _, None) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported on {}",
            t.res.plural
        ))),
    }
}

/// A built-in kind with a protobuf message (custom resources are JSON only, as on Kubernetes).
pub fn builtin(res: &Resource) -> bool {
    matches!(res.schema, crate::resources::Schema::Builtin)
        && crate::proto::schema::find(&res.api_version(), &res.kind).is_some()
}

/// How a request body is encoded, from its `Content-Type` (parameters such as `charset`
/// ignored). Decoding dispatches on this, so another codec is one more arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCodec {
    Json,
    Yaml,
    Protobuf,
}

/// The media types a body may have, as kube-apiserver lists them in its 415.
const ACCEPTED_MEDIA: &str =
    "application/json, application/yaml, application/vnd.kubernetes.protobuf";

impl BodyCodec {
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            // No Content-Type: JSON, which every client of this server sends.
            "" | "application/json" | "*/*" => Ok(BodyCodec::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(BodyCodec::Yaml),
            crate::proto::MEDIA_TYPE => Ok(BodyCodec::Protobuf),
            other => Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: {ACCEPTED_MEDIA}"
            ))),
        }
    }
}

/// Parse a request body as the object its `Content-Type` says it is (JSON or YAML).
pub fn parse_body(req: &Req) -> ApiResult<Value> {
    decode_body(req.header("content-type"), &req.body)
}

/// The body decoder behind [`parse_body`], by content type (also the fuzz targets' entry):
/// JSON, YAML or protobuf (built-in kinds only); any other media type is 415.
pub fn decode_body(ct: &str, body: &[u8]) -> ApiResult<Value> {
    let codec = BodyCodec::from_content_type(ct)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let v: Value = match codec {
        BodyCodec::Yaml => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))?,
        BodyCodec::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON: {e} (content-type {ct:?})"
            ))
        })?,
        BodyCodec::Protobuf => crate::proto::decode_object(body)?,
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Check (or fill in) `apiVersion` and `kind` against the resource addressed by the path.
pub fn check_type_meta(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = Value::String(want_av.clone()),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = Value::String(res.kind.clone()),
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )))
        }
    }
    Ok(())
}

/// Serialize for the store: without `resourceVersion`, which is the key's revision.
pub fn encode(obj: &Value) -> ApiResult<Vec<u8>> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))?;
    if bytes.len() > yun_store::MAX_VALUE_BYTES {
        return Err(ApiError::too_large(format!(
            "Request entity too large: the object is {} bytes, the limit is {} bytes",
            bytes.len(),
            yun_store::MAX_VALUE_BYTES
        )));
    }
    Ok(bytes)
}

/// Compare-and-swap put; returns the stored object with its new resourceVersion, or None
/// when the key changed (or appeared) meanwhile.
pub async fn put(
    api: &Api,
    key: &str,
    obj: &Value,
    expected: Option<i64>,
) -> ApiResult<Option<Value>> {
    let bytes = encode(obj)?;
    match api.store.put(key, bytes, expected).await? {
        Outcome::Done(kv) => {
            let mut out = obj.clone();
            crate::meta::set_rv(&mut out, kv.mod_revision);
            Ok(Some(out))
        }
        Outcome::Conflict { .. } => Ok(None),
    }
}

/// Read one object; 404 with the resource's name when absent.
pub async fn get_kv(api: &Api, res: &Resource, key: &str, name: &str) -> ApiResult<KeyValue> {
    api.store
        .get(key)
        .await?
        .ok_or_else(|| ApiError::not_found(&res.qualified(), name))
}

/// Every stored object of a cluster-scoped built-in kind (none if the kind is not served).
pub async fn list_cluster(api: &Api, group: &str, plural: &str) -> ApiResult<Vec<Value>> {
    let Some(res) = api.registry.find(group, "v1", plural) else {
        return Ok(Vec::new());
    };
    let page = api
        .store
        .range(yun_store::RangeRequest {
            prefix: res.prefix(None),
            ..Default::default()
        })
        .await?;
    Ok(page.kvs.iter().filter_map(crate::meta::decode).collect())
}

pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    crate::meta::decode(kv)
        .ok_or_else(|| ApiError::internal(format!("stored object {} is not JSON", kv.key)))
}

/// The request's label and field selectors for the collection of `res`.
pub fn selector(req: &Req, res: &crate::resources::Resource) -> ApiResult<Selector> {
    Selector::for_kind(res, req.q("labelSelector"), req.q("fieldSelector"))
}

/// Respond with one object, or with a one-row Table for `kubectl get NAME`.
pub fn object_response(t: &Target, req: &Req, code: u16, obj: Value) -> Response {
    if req.wants_table() {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let table = crate::table::table_for(&t.res, &[obj], req, json!({"resourceVersion": rv}));
        return crate::proto::respond(req.output, code, &table);
    }
    if req.output.metadata {
        return crate::proto::respond(req.output, code, &crate::proto::partial(&obj));
    }
    crate::proto::respond(req.output, code, &obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_codec_by_media_type() {
        assert_eq!(BodyCodec::from_content_type("").unwrap(), BodyCodec::Json);
        let json = "application/json; charset=utf-8";
        assert_eq!(BodyCodec::from_content_type(json).unwrap(), BodyCodec::Json);
        let yaml = BodyCodec::from_content_type("application/yaml").unwrap();
        assert_eq!(yaml, BodyCodec::Yaml);
        let pb = BodyCodec::from_content_type("application/vnd.kubernetes.protobuf").unwrap();
        assert_eq!(pb, BodyCodec::Protobuf);
        let e = BodyCodec::from_content_type("text/plain").unwrap_err();
        assert!(e.code == 415 && e.message.contains("text/plain"), "{e:?}");
    }
}
