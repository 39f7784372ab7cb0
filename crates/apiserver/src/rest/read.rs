//! get and list (with paging and selectors).

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};
use yun_store::RangeRequest;

use super::{decode, get_kv, object_response, selector};
use crate::error::{ApiError, ApiResult};
use crate::router::{json, Req, Target};
use crate::Api;

pub async fn get(api: &Api, t: &Target, req: &Req) -> ApiResult<Response> {
    let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
    let obj = decode(&kv)?;
    Ok(object_response(t, req, 200, obj))
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

pub async fn list_page(api: &Api, t: &Target, req: &Req) -> ApiResult<Page> {
    let sel = selector(req)?;
    let limit: usize = match req.q("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
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
    let mut items = Vec::new();
    loop {
        let want = if limit == 0 { 0 } else { limit - items.len() };
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
                yun_store::Error::Compacted { .. } => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => other.into(),
            })?;
        revision = page.revision;
        for kv in &page.kvs {
            let obj = decode(kv)?;
            if sel.matches(&obj) {
                items.push(obj);
            }
        }
        after = page.continue_token;
        // With a selector a page can come back short: read on until it is full.
        if after.is_none() || limit == 0 || items.len() >= limit {
            break;
        }
    }
    Ok(Page {
        items,
        revision,
        continue_token: after.map(|a| encode_continue(revision, &a)),
    })
}

pub async fn list(api: &Api, t: &Target, req: &Req) -> ApiResult<Response> {
    let page = list_page(api, t, req).await?;
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = Value::String(c.clone());
    }
    if req.wants_table() {
        return Ok(json(
            200,
            &crate::table::table(&t.res, &page.items, req, meta),
        ));
    }
    Ok(json(
        200,
        &json!({
            "kind": format!("{}List", t.res.kind),
            "apiVersion": t.res.api_version(),
            "metadata": meta,
            "items": page.items,
        }),
    ))
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
