//! Bearer-token authentication: the one admin token from `DATA_DIR/pki/token`.

use axum::http::HeaderMap;

pub mod serviceaccount;

/// Paths a load balancer or supervisor may probe without credentials.
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/.well-known/openid-configuration" | "/openid/v1/jwks"
    )
}

/// The user a request authenticates as: the admin token is the one user there is.
pub fn user(headers: &HeaderMap, token: &str) -> Option<&'static str> {
    authorized(headers, token).then_some("admin")
}

/// The bearer token a request carries, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Whether `given` is the admin token.
pub fn authorized_token(given: &str, token: &str) -> bool {
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Whether the request carries `Authorization: Bearer TOKEN` with the admin token.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Compare without an early exit, so response timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "abc"));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert!(authorized(&h, "abc"));
        assert!(!authorized(&h, "abd"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(!authorized(&h, "abc"));
    }
}
