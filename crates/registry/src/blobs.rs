//! `HEAD/GET/DELETE /v2/<name>/blobs/<digest>`, with single byte ranges (206/416).

use std::fs::File;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult, Code};
use crate::http::{blocking, set};
use crate::names::Digest;
use crate::stream::file_body;
use crate::Shared;

fn blob_unknown(d: &Digest) -> ApiError {
    ApiError::new(Code::BlobUnknown, format!("blob {d} unknown to repository"))
        .detail(serde_json::json!({ "digest": d.to_string() }))
}

pub async fn get(
    state: Shared,
    name: String,
    d: Digest,
    req_headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    let st = state.clone();
    let digest = d.clone();
    let opened = blocking(move || -> std::io::Result<Option<(File, u64)>> {
        if st.store.linked_blob_size(&name, &digest)?.is_none() {
            return Ok(None);
        }
        match File::open(st.store.blob_path(&digest)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await?;
    let Some((file, size)) = opened else {
        return Err(blob_unknown(&d));
    };

    let etag = format!("\"{d}\"");
    let range = match req_headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => parse_range(r, size).map_err(|()| {
            ApiError::new(
                Code::SizeInvalid,
                format!("range {r:?} not satisfiable: blob has {size} bytes"),
            )
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, &format!("bytes */{size}"))
        })?,
        None => None,
    };
    // An If-Range that does not match our (immutable) content means "send it all".
    let range = match req_headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(tag) if tag != etag => None,
        _ => range,
    };

    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, size),
    };
    let body = if head || len == 0 {
        Body::empty()
    } else {
        file_body(file, start, len)
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    set(h, "content-length", len.to_string());
    set(h, "content-type", "application/octet-stream");
    set(h, "docker-content-digest", d.to_string());
    set(h, "accept-ranges", "bytes");
    set(h, "etag", &etag);
    // Content-addressed: the bytes behind a digest never change.
    set(h, "cache-control", "max-age=31536000");
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            h,
            "content-range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    Ok(resp)
}

pub async fn delete(state: Shared, name: String, d: Digest) -> ApiResult<Response> {
    let st = state.clone();
    let (n, dd) = (name.clone(), d.clone());
    match blocking(move || st.store.unlink_blob(&n, &dd)).await? {
        Ok(true) => Ok(StatusCode::ACCEPTED.into_response()),
        Ok(false) => Err(blob_unknown(&d)),
        Err(manifest) => Err(ApiError::new(
            Code::Denied,
            format!(
                "blob {d} is referenced by manifest {manifest} in repository {name:?}: \
                 delete the manifest first"
            ),
        )
        .status(StatusCode::CONFLICT)
        .detail(serde_json::json!({ "digest": d.to_string(), "manifest": manifest.to_string() }))),
    }
}

/// Parses a `Range: bytes=…` header against a blob of `size` bytes. `Ok(None)` means serve
/// the whole blob (a form we do not handle, e.g. several ranges: RFC 9110 lets us ignore it);
/// `Err` means 416.
pub fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // Suffix: the last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        if !b.is_empty() && b.parse::<u64>().map_err(|_| ())? < start {
            return Err(());
        }
        (start, end)
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=200-300", 100), Err(()));
        assert_eq!(parse_range("bytes=9-3", 100), Err(()));
        assert_eq!(parse_range("bytes=x-3", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }
}
