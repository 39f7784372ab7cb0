//! Small HTTP helpers shared by the handlers: query strings, percent-decoding, the
//! blocking-pool bridge, and the response headers every handler sets the same way.

use std::io;

use axum::http::{HeaderMap, HeaderValue};

use crate::error::{ApiError, ApiResult};

/// Decodes `%XX` escapes (clients differ on whether they escape the `:` of a digest); with
/// `plus_is_space`, `+` is a space as in form-encoded query strings.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parsed query string of a request, in order.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k, true), percent_decode(v, true))
            })
            .collect();
        Query(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs blocking storage work on tokio's blocking pool.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::internal("storage", e)),
        Err(e) => Err(ApiError::internal("storage task", e)),
    }
}

/// Inserts a header whose value we built ourselves (always valid ASCII).
pub fn set(headers: &mut HeaderMap, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        headers.insert(name, v);
    }
}

/// The `Range` header of an upload holding `size` bytes: `0-<last byte>` (`0-0` when empty,
/// as distribution sends).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("sha256%3Aab", false), "sha256:ab");
        assert_eq!(percent_decode("a+b%2", true), "a b%2");
        assert_eq!(percent_decode("%zz%", false), "%zz%");
        let q = Query::parse(Some("n=2&last=b%2Fc&digest=sha256%3A00"));
        assert_eq!(q.get("n"), Some("2"));
        assert_eq!(q.get("last"), Some("b/c"));
        assert_eq!(q.get("digest"), Some("sha256:00"));
        assert_eq!(q.get("x"), None);
    }
}
