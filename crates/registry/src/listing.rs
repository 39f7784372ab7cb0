//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, paginated with `n`/`last` and an RFC 5988
//! `Link` header to the next page, as the spec describes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiError, ApiResult, Code};
use crate::http::{blocking, set, Query};
use crate::Shared;

/// The page of the sorted `all` after `last`, at most `n` long, and the link to the next page.
fn paginate(
    mut all: Vec<String>,
    query: &Query,
    base: &str,
) -> ApiResult<(Vec<String>, Option<String>)> {
    if let Some(last) = query.get("last") {
        all.retain(|x| x.as_str() > last);
    }
    let Some(n) = query.get("n").filter(|n| !n.is_empty()) else {
        return Ok((all, None));
    };
    let n: usize = n.parse().map_err(|_| {
        ApiError::new(
            Code::PaginationNumberInvalid,
            format!("n={n:?} is not a non-negative integer"),
        )
    })?;
    if all.len() <= n {
        return Ok((all, None));
    }
    all.truncate(n);
    let link = all
        .last()
        .map(|last| format!("<{base}?n={n}&last={last}>; rel=\"next\""));
    Ok((all, link))
}

fn json_page(body: serde_json::Value, link: Option<String>) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(link) = link {
        set(resp.headers_mut(), "link", link);
    }
    resp
}

pub async fn tags(state: Shared, name: String, query: &Query) -> ApiResult<Response> {
    let (st, n) = (state.clone(), name.clone());
    let Some(tags) = blocking(move || st.store.tags(&n)).await? else {
        return Err(ApiError::new(
            Code::NameUnknown,
            format!("repository {name:?} not known to registry"),
        )
        .detail(json!({ "name": name })));
    };
    let (page, link) = paginate(tags, query, &format!("/v2/{name}/tags/list"))?;
    Ok(json_page(json!({ "name": name, "tags": page }), link))
}

pub async fn catalog(state: Shared, query: &Query) -> ApiResult<Response> {
    let st = state.clone();
    let repos = blocking(move || st.store.catalog()).await?;
    let (page, link) = paginate(repos, query, "/v2/_catalog")?;
    Ok(json_page(json!({ "repositories": page }), link))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = v(&["a", "b", "c", "d"]);
        let q = Query::parse(Some("n=2"));
        let (p, l) = paginate(all.clone(), &q, "/x").unwrap();
        assert_eq!(p, v(&["a", "b"]));
        assert_eq!(l.unwrap(), "</x?n=2&last=b>; rel=\"next\"");
        let q = Query::parse(Some("n=2&last=b"));
        let (p, l) = paginate(all.clone(), &q, "/x").unwrap();
        assert_eq!(p, v(&["c", "d"]));
        assert!(l.is_none());
        let (p, _) = paginate(all.clone(), &Query::parse(None), "/x").unwrap();
        assert_eq!(p.len(), 4);
        assert!(paginate(all, &Query::parse(Some("n=x")), "/x").is_err());
    }
}
