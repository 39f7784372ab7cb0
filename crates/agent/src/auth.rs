//! The one check every endpoint of the agent's HTTP server makes: the request carries the
//! cluster's token as `Authorization: Bearer TOKEN` (the API server's, which it proxies with).

use axum::http::HeaderMap;

/// Whether `headers` present `token` as a bearer token.
pub(crate) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(token)
}
