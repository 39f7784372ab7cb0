//! The Kubernetes protobuf codec (`application/vnd.kubernetes.protobuf`) for the built-in kinds,
//! and content negotiation between it, JSON and YAML.
//!
//! The store keeps JSON; objects are transcoded at the edge. An encoded object is the `k8s\0`
//! magic followed by a `runtime.Unknown` whose `typeMeta` carries apiVersion and kind and whose
//! `raw` is the kind's message (see [`transcode`]). A watch in protobuf is a stream of frames,
//! each a 4-byte big-endian length and a `WatchEvent` message (no envelope) whose object is an
//! enveloped object, as kube-apiserver writes them. Custom resources have no messages: they are
//! served as JSON only, and a protobuf body for one is a 415.

pub mod schema;
mod stream;
mod time;
pub mod transcode;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use transcode::{put_bytes, Wire};

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
const MAGIC: &[u8; 4] = b"k8s\0";

/// The media types a response can be given in, as kube-apiserver lists them in a 406.
const OFFERED: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// Wrap a kind's message in the envelope: `k8s\0` + runtime.Unknown.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::with_capacity(api_version.len() + kind.len() + 4);
    put_bytes(1, api_version.as_bytes(), &mut type_meta);
    put_bytes(2, kind.as_bytes(), &mut type_meta);
    let mut out = Vec::with_capacity(raw.len() + type_meta.len() + 16);
    out.extend_from_slice(MAGIC);
    put_bytes(1, &type_meta, &mut out);
    put_bytes(2, raw, &mut out);
    out
}

/// The message for a JSON object's own apiVersion and kind, if it is a built-in kind.
pub fn message_of(v: &Value) -> Option<(&'static schema::Message, &str, &str)> {
    let av = v.get("apiVersion")?.as_str()?;
    let kind = v.get("kind")?.as_str()?;
    Some((schema::find(av, kind)?, av, kind))
}

/// Encode a built-in object (by its apiVersion and kind) in the protobuf wire format; None
/// for anything without a message (custom resources).
pub fn encode_object(v: &Value) -> Option<Result<Vec<u8>, String>> {
    let (m, av, kind) = message_of(v)?;
    let mut raw = Vec::new();
    Some(transcode::encode(m, v, &mut raw).map(|()| envelope(av, kind, &raw)))
}

/// Encode a stored object (its JSON text, without resourceVersion) of a built-in kind straight
/// to the wire format, `resourceVersion` added; None for a kind without a message.
pub fn encode_stored(
    api_version: &str,
    kind: &str,
    text: &[u8],
    resource_version: &str,
) -> Option<Result<Vec<u8>, String>> {
    let m = schema::find(api_version, kind)?;
    let mut raw = Vec::with_capacity(text.len());
    Some(
        stream::encode_stored(m, text, Some(resource_version), &mut raw)
            .map(|()| envelope(api_version, kind, &raw)),
    )
}

/// Decode an enveloped object into its JSON form, apiVersion and kind included. A kind with
/// no message is 415 (custom resources are JSON only); malformed bytes are 400.
pub fn decode_object(bytes: &[u8]) -> ApiResult<Value> {
    let bad = |why: String| ApiError::bad_request(format!("the protobuf body is invalid: {why}"));
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("it does not start with the k8s\\0 magic".into()))?;
    let mut av = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (tag, w) in transcode::fields(rest).map_err(bad)? {
        match (tag, w) {
            (1, Wire::Bytes(tm)) => {
                for (t, w) in transcode::fields(tm).map_err(bad)? {
                    if let Wire::Bytes(s) = w {
                        let s = String::from_utf8_lossy(s).into_owned();
                        match t {
                            1 => av = s,
                            2 => kind = s,
                            _ => {}
                        }
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            (3, Wire::Bytes(enc)) if !enc.is_empty() => {
                return Err(bad(format!(
                    "contentEncoding {:?} is not supported",
                    String::from_utf8_lossy(enc)
                )))
            }
            _ => {}
        }
    }
    let m = schema::find(&av, &kind).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the body of the request was in an unsupported format: {MEDIA_TYPE} is not supported for {kind} in {av:?} (custom resources are JSON only) - accepted media types include: application/json, application/yaml"
        ))
    })?;
    let mut v = transcode::decode(m, raw).map_err(bad)?;
    if let Value::Object(o) = &mut v {
        o.insert("apiVersion".into(), Value::String(av));
        o.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

/// Encode a list of built-in objects as `<Kind>List` straight from the items, without a JSON
/// tree of the whole list. None if the kind has no list message.
pub struct ListEncoder {
    message: &'static schema::Message,
    item: &'static schema::Message,
    items_tag: u32,
    meta_tag: u32,
    api_version: String,
    kind: String,
    body: Vec<u8>,
}

impl ListEncoder {
    pub fn new(api_version: &str, kind: &str) -> Option<Self> {
        let list_kind = format!("{kind}List");
        let message = schema::find(api_version, &list_kind)?;
        let item = schema::find(api_version, kind)?;
        let tag = |name: &str| {
            message
                .fields
                .iter()
                .find(|f| f.json == name)
                .map(|f| f.tag)
        };
        Some(ListEncoder {
            message,
            item,
            items_tag: tag("items")?,
            meta_tag: tag("metadata")?,
            api_version: api_version.to_string(),
            kind: list_kind,
            body: Vec::new(),
        })
    }

    /// Add a stored object (JSON text without resourceVersion) without parsing it to a tree.
    pub fn push_stored(&mut self, text: &[u8], resource_version: &str) -> Result<(), String> {
        let mut raw = Vec::with_capacity(text.len());
        stream::encode_stored(self.item, text, Some(resource_version), &mut raw)?;
        put_bytes(self.items_tag, &raw, &mut self.body);
        Ok(())
    }

    pub fn push(&mut self, obj: &Value) -> Result<(), String> {
        let mut raw = Vec::new();
        transcode::encode(self.item, obj, &mut raw)?;
        put_bytes(self.items_tag, &raw, &mut self.body);
        Ok(())
    }

    /// The enveloped list, its ListMeta (`{"resourceVersion": …, "continue": …}`) added.
    pub fn finish(mut self, list_meta: &Value) -> Result<Vec<u8>, String> {
        let meta_field = self
            .message
            .fields
            .iter()
            .find(|f| f.tag == self.meta_tag)
            .ok_or("list without metadata")?;
        if let schema::Ty::Message(i) = meta_field.ty {
            let mut raw = Vec::new();
            transcode::encode(&schema::MESSAGES[i as usize], list_meta, &mut raw)?;
            put_bytes(self.meta_tag, &raw, &mut self.body);
        }
        Ok(envelope(&self.api_version, &self.kind, &self.body))
    }
}

/// One watch event as a protobuf frame: length, then WatchEvent{type, object{raw: envelope}}.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, String> {
    let inner = encode_object(obj).ok_or_else(|| "not a built-in kind".to_string())??;
    let mut raw_ext = Vec::with_capacity(inner.len() + 8);
    put_bytes(1, &inner, &mut raw_ext);
    let mut ev = Vec::with_capacity(raw_ext.len() + 16);
    put_bytes(1, event_type.as_bytes(), &mut ev);
    put_bytes(2, &raw_ext, &mut ev);
    let mut frame = Vec::with_capacity(ev.len() + 4);
    frame.extend_from_slice(&(ev.len() as u32).to_be_bytes());
    frame.extend_from_slice(&ev);
    Ok(frame)
}

/// How a response is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Yaml,
    Protobuf,
}

/// What the client's `Accept` asked for: a format, and whether as a `meta.k8s.io` Table or as
/// `PartialObjectMetadata` (metadata clients: garbage collectors, kube-rs metadata watchers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Output {
    pub format: Format,
    pub table: bool,
    pub metadata: bool,
}

/// An object as `PartialObjectMetadata`: its type and metadata only.
pub fn partial(obj: &Value) -> Value {
    serde_json::json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
    })
}

/// Pick the response encoding from `Accept` as kube-apiserver does: the first acceptable media
/// range (by q, then order). Protobuf only when `protobuf_ok` (a built-in kind) or for
/// `PartialObjectMetadata` (a meta message, whatever the kind); a Table only as JSON or YAML (it
/// has no protobuf message); other `as=` conversions are not served. Nothing acceptable is 406
/// naming what was asked and what is offered.
pub fn negotiate(accept: &str, protobuf_ok: bool) -> ApiResult<Output> {
    let mut ranges: Vec<(f32, &str)> = accept
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let q = param(r, "q").and_then(|q| q.parse().ok()).unwrap_or(1.0);
            (q, r)
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    if ranges.is_empty() {
        return Ok(Output::default());
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, r) in ranges {
        let media = r
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let conversion = param(r, "as");
        if conversion.is_some() {
            let g_ok = param(r, "g").is_none_or(|g| g == "meta.k8s.io");
            let v_ok = param(r, "v").is_none_or(|v| v == "v1" || v == "v1beta1");
            if !g_ok || !v_ok {
                continue;
            }
        }
        let metadata = matches!(
            conversion,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
        );
        let format = match media.as_str() {
            "application/json" | "*/*" | "application/*" => Format::Json,
            "application/yaml" => Format::Yaml,
            MEDIA_TYPE if protobuf_ok || metadata => Format::Protobuf,
            _ => continue,
        };
        let table = match conversion {
            None => false,
            Some("Table") if format != Format::Protobuf => true,
            Some(_) if metadata => false,
            Some(_) => continue,
        };
        return Ok(Output {
            format,
            table,
            metadata,
        });
    }
    Err(ApiError::not_acceptable(format!(
        "the server cannot serve {accept:?}: only the following media types are accepted: {OFFERED} (protobuf for built-in kinds only, Table as JSON or YAML)"
    )))
}

fn param<'a>(range: &'a str, key: &str) -> Option<&'a str> {
    range.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"'))
    })
}

/// A response with `v` in the negotiated format. Protobuf falls back to JSON for a value with
/// no message (a custom resource), which only happens when the client also accepts JSON:
/// [`negotiate`] was told the target is not built-in.
pub fn respond(out: Output, code: u16, v: &Value) -> Response {
    let status = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
    let (ctype, body) = match out.format {
        Format::Protobuf => match encode_object(v) {
            Some(Ok(b)) => (MEDIA_TYPE, b),
            Some(Err(e)) => {
                return ApiError::internal(format!("encoding the response as protobuf: {e}"))
                    .into_response()
            }
            None => (
                "application/json",
                serde_json::to_vec(v).unwrap_or_default(),
            ),
        },
        Format::Yaml => (
            "application/yaml",
            serde_yaml::to_string(v).unwrap_or_default().into_bytes(),
        ),
        Format::Json => (
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Body::from(body))
        .unwrap_or_else(|_| ApiError::internal("building response").into_response())
}

#[cfg(test)]
mod tests;
