//! get and list (with paging and selectors).

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};
use yun_store::RangeRequest;

use super::{decode, get_kv, object_response, selector};
use crate::error::{ApiError, ApiResult};
use crate::proto::{Format, ListEncoder};
use crate::router::{bytes_response, json_bytes, Req, Target};
use crate::Api;

pub async fn get(api: &Api, t: &Target, req: &Req) -> ApiResult<Response> {
    let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
    if plain_protobuf(req) {
        let rv = kv.mod_revision.to_string();
        let av = t.res.api_version();
        if let Some(r) = crate::proto::encode_stored(&av, &t.res.kind, &kv.value, &rv) {
            let body = r.map_err(|e| ApiError::internal(format!("encoding as protobuf: {e}")))?;
            return Ok(bytes_response(200, crate::proto::MEDIA_TYPE, body));
        }
    }
    let obj = decode(&kv)?;
    Ok(object_response(t, req, 200, obj))
}

/// Objects in protobuf, not as a Table or metadata: transcoded from the stored text directly.
fn plain_protobuf(req: &Req) -> bool {
    req.output.format == Format::Protobuf && !req.output.table && !req.output.metadata
}

/// A continue token: the revision of the first page and the store's own token.
fn encode_continue(revision: i64, token: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{revision}\n{token}"))
}

fn decode_continue(s: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::bad_request(format!("invalid continue token {s:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (rev, token) = text.split_once('\n').ok_or_else(bad)?;
    Ok((rev.parse().map_err(|_| bad())?, token.to_string()))
}

/// The items of a collection matching the request's selectors, one page at most.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

/// Objects read from the store per range call while listing: a list of 30 000 pods holds a
/// chunk of stored bytes at a time, not all of them (the chunks are read at one revision, so
/// the list is still one consistent snapshot).
const LIST_CHUNK: usize = 500;

/// Call `visit` with each object of the collection that matches the request's selectors, in
/// key order, up to the request's limit. Returns the revision the list was read at and the
/// continue token when the limit cut it short.
async fn for_each_listed(
    api: &Api,
    t: &Target,
    req: &Req,
    mut visit: impl FnMut(Value) -> ApiResult<()>,
) -> ApiResult<(i64, Option<String>)> {
    for_each_listed_kv(api, t, req, false, |kv, obj| match obj {
        Some(obj) => visit(obj),
        None => visit(decode(kv)?),
    })
    .await
}

/// [`for_each_listed`] with the stored key-value too; with `text_ok` and no selector the
/// object is not parsed (None), for a caller that works on the stored text.
async fn for_each_listed_kv(
    api: &Api,
    t: &Target,
    req: &Req,
    text_ok: bool,
    mut visit: impl FnMut(&yun_store::KeyValue, Option<Value>) -> ApiResult<()>,
) -> ApiResult<(i64, Option<String>)> {
    super::options::validate_list(req)?;
    let sel = selector(req, &t.res)?;
    let parse = !text_ok || !sel.is_empty();
    let limit: usize = match req.q("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let continued = req.q("continue").is_some();
    let (mut revision, mut after) = match req.q("continue") {
        Some(c) => {
            let (rev, token) = decode_continue(c)?;
            (rev, Some(token))
        }
        None => (0, None),
    };
    if revision == 0 && req.q("resourceVersionMatch") == Some("Exact") {
        if let Some(rv) = req.q("resourceVersion") {
            revision = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        }
    }
    let prefix = t.res.prefix(t.ns.as_deref());
    let mut count = 0;
    loop {
        let want = if limit == 0 {
            LIST_CHUNK
        } else {
            (limit - count).min(LIST_CHUNK)
        };
        let page = api
            .store
            .range(RangeRequest {
                prefix: prefix.clone(),
                limit: want,
                continue_after: after.clone(),
                revision,
            })
            .await
            .map_err(|e| match e {
                // Only a list that came with a continue token has one to blame; one at an
                // exact resourceVersion is told that version is too old (as kube-apiserver).
                yun_store::Error::Compacted { .. } if continued => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => other.into(),
            })?;
        revision = page.revision;
        for kv in &page.kvs {
            if !parse {
                visit(kv, None)?;
                count += 1;
                continue;
            }
            let obj = decode(kv)?;
            if sel.matches(&obj) {
                visit(kv, Some(obj))?;
                count += 1;
            }
        }
        after = page.continue_token;
        // With a selector a chunk can come back short: read on until the limit is reached.
        if after.is_none() || (limit != 0 && count >= limit) {
            break;
        }
    }
    let token = if limit == 0 {
        None
    } else {
        after.map(|a| encode_continue(revision, &a))
    };
    Ok((revision, token))
}

pub async fn list_page(api: &Api, t: &Target, req: &Req) -> ApiResult<Page> {
    let mut items = Vec::new();
    let (revision, continue_token) = for_each_listed(api, t, req, |obj| {
        items.push(obj);
        Ok(())
    })
    .await?;
    Ok(Page {
        items,
        revision,
        continue_token,
    })
}

pub async fn list(api: &Api, t: &Target, req: &Req) -> ApiResult<Response> {
    let meta = |revision: i64, token: &Option<String>| {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if let Some(c) = token {
            meta["continue"] = Value::String(c.clone());
        }
        meta
    };
    if req.wants_table() {
        let page = list_page(api, t, req).await?;
        let meta = meta(page.revision, &page.continue_token);
        let table = crate::table::table_for(&t.res, &page.items, req, meta);
        return Ok(crate::proto::respond(req.output, 200, &table));
    }
    if req.output.metadata {
        let page = list_page(api, t, req).await?;
        let items: Vec<Value> = page.items.iter().map(crate::proto::partial).collect();
        let list = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": meta(page.revision, &page.continue_token), "items": items});
        return Ok(crate::proto::respond(req.output, 200, &list));
    }
    if req.output.format == Format::Protobuf {
        if let Some(mut enc) = ListEncoder::new(&t.res.api_version(), &t.res.kind) {
            let (revision, token) = for_each_listed_kv(api, t, req, true, |kv, obj| {
                let r = match obj {
                    Some(obj) => enc.push(&obj),
                    None => enc.push_stored(&kv.value, &kv.mod_revision.to_string()),
                };
                r.map_err(|e| ApiError::internal(format!("encoding as protobuf: {e}")))
            })
            .await?;
            let body = enc
                .finish(&meta(revision, &token))
                .map_err(|e| ApiError::internal(format!("encoding as protobuf: {e}")))?;
            return Ok(bytes_response(200, crate::proto::MEDIA_TYPE, body));
        }
    }
    // Each object is written out as soon as it is read, so the response is the only copy of
    // the list the server holds (not a tree of every object, and then a copy of that tree).
    let mut body = serde_json::to_vec(&json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
    }))
    .map_err(|e| ApiError::internal(e.to_string()))?;
    body.pop(); // the closing brace: items and metadata follow
    body.extend_from_slice(b",\"items\":[");
    let mut first = true;
    let (revision, token) = for_each_listed(api, t, req, |obj| {
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &obj).map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    body.extend_from_slice(b"],\"metadata\":");
    serde_json::to_writer(&mut body, &meta(revision, &token))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    body.push(b'}');
    if req.output.format == Format::Yaml {
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(crate::proto::respond(req.output, 200, &v));
    }
    Ok(json_bytes(200, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_round_trip() {
        let c = encode_continue(42, "/registry/core/pods/default/a");
        assert_eq!(
            decode_continue(&c).unwrap(),
            (42, "/registry/core/pods/default/a".to_string())
        );
        assert!(decode_continue("!!").is_err());
    }
}
