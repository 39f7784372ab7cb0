//! Object operations: PUT (streamed to disk), GET/HEAD (ranges, conditions), CopyObject,
//! DELETE and DeleteObjects (with versioning's delete markers), and tagging.

use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::time::SystemTime;

use futures::TryStreamExt;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::{Receive, Staged};
use crate::bucket::blocking;
use crate::error::{Code, S3Error, S3Result};
use crate::route::Req;
use crate::server::State;
use crate::store::{Bucket, Meta, Versioning, NULL_VERSION};
use crate::Body;

/// Standard headers stored with an object and returned on GET/HEAD.
const STORED_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
    "x-amz-website-redirect-location",
];
/// S3's limit on user metadata (names and values together).
const MAX_USER_META: usize = 2048;

/// Metadata given by a request's headers (PUT, copy with REPLACE, multipart create).
pub fn meta_from_headers(r: &Req) -> S3Result<Meta> {
    let h = &r.parts.headers;
    let mut m = Meta {
        content_type: h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        ..Default::default()
    };
    for name in STORED_HEADERS {
        if let Some(v) = h.get(*name).map(|v| String::from_utf8_lossy(v.as_bytes())) {
            let v = if *name == "content-encoding" {
                // aws-chunked is the transfer's, not the object's.
                v.split(',')
                    .map(str::trim)
                    .filter(|e| *e != "aws-chunked")
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                v.to_string()
            };
            if !v.is_empty() {
                m.headers.push((name.to_string(), v));
            }
        }
    }
    let mut size = 0;
    for (name, v) in h {
        if let Some(n) = name.as_str().strip_prefix("x-amz-meta-") {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            size += n.len() + v.len();
            m.user_meta.push((n.to_string(), v));
        }
    }
    if size > MAX_USER_META {
        return Err(S3Error::new(
            Code::MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size (2 KB).",
        ));
    }
    if let Some(t) = r.header("x-amz-tagging") {
        m.tags = parse_tag_query(t)?;
    }
    Ok(m)
}

pub fn parse_tag_query(t: &str) -> S3Result<Vec<(String, String)>> {
    let tags = crate::sigv4::query_pairs(&t.replace('+', "%20"));
    check_tags(&tags)?;
    Ok(tags)
}

pub fn check_tags(tags: &[(String, String)]) -> S3Result<()> {
    let bad = |m: &str| Err(S3Error::new(Code::InvalidArgument, m.to_string()));
    if tags.len() > 10 {
        return bad("Object tags cannot be greater than 10");
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return bad("The TagKey or TagValue you have provided is invalid");
        }
        if tags[..i].iter().any(|(k2, _)| k2 == k) {
            return bad("Cannot provide multiple Tags with the same key");
        }
    }
    Ok(())
}

pub fn version_for_write(state: &State, b: &Bucket) -> String {
    match b.versioning() {
        Versioning::Enabled => state.store.new_id(),
        _ => NULL_VERSION.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Seals a received body with its metadata and moves it under its key.
pub async fn commit(
    state: &Arc<State>,
    b: Arc<Bucket>,
    mut staged: Staged,
    mut meta: Meta,
) -> S3Result<Arc<Meta>> {
    meta.seq = state.store.next_seq();
    meta.last_modified = now_ms();
    meta.size = staged.size;
    let st = state.clone();
    blocking(move || {
        staged.seal(&meta)?;
        let m = st.store.commit(&b, &staged.path, meta)?;
        staged.keep();
        Ok(m)
    })
    .await
}

pub fn version_header(resp: &mut HeaderMap, b: &Bucket, m: &Meta) {
    if b.versioning() != Versioning::Unversioned || m.version_id != NULL_VERSION {
        if let Ok(v) = HeaderValue::from_str(&m.version_id) {
            resp.insert("x-amz-version-id", v);
        }
    }
}

pub async fn put(state: &Arc<State>, r: &Req, body: Incoming) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let mut meta = meta_from_headers(r)?;
    if r.header("if-none-match") == Some("*") && b.latest(&r.key).is_some_and(|m| !m.delete_marker)
    {
        return Err(S3Error::new(
            Code::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold",
        ));
    }
    let recv = Receive {
        tmp_dir: &b.tmp_dir(),
        tmp_name: format!("put-{}", state.store.new_id()),
        max_size: state.config.max_object_size,
    };
    let staged = crate::body::receive(&r.parts, body, &r.auth.payload, recv).await?;
    meta.key = r.key.clone();
    meta.version_id = version_for_write(state, &b);
    meta.etag = hex::encode(staged.md5);
    let m = commit(state, b.clone(), staged, meta).await?;
    let mut resp = Response::new(crate::empty());
    resp.headers_mut().insert(
        "etag",
        HeaderValue::from_str(&format!("\"{}\"", m.etag)).map_err(S3Error::internal)?,
    );
    version_header(resp.headers_mut(), &b, &m);
    Ok(resp)
}

/// `len` bytes of a file (positioned at their start) as a response body: read in 1 MiB
/// pieces by a blocking thread a few pieces ahead of the socket (a bounded channel), so the
/// bytes are copied once from the page cache and the async threads never wait on the disk.
fn file_body(mut file: std::fs::File, len: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let n = left.min(1 << 20) as usize;
            let mut buf = vec![0u8; n];
            let piece = match std::io::Read::read(&mut file, &mut buf) {
                Ok(0) => Err(std::io::Error::other(
                    "object file shorter than its metadata",
                )),
                Ok(got) => {
                    buf.truncate(got);
                    left -= got as u64;
                    Ok(bytes::Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = piece.is_err();
            // The client went away: stop reading.
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    http_body_util::StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

/// The version a GET/HEAD/copy addresses: `versionId` or the newest.
pub fn find(b: &Bucket, key: &str, version_id: Option<&str>) -> S3Result<Arc<Meta>> {
    match version_id {
        Some(v) => {
            let m = b.version(key, v).ok_or_else(|| {
                S3Error::new(Code::NoSuchVersion, "The specified version does not exist.")
                    .with("Key", key)
                    .with("VersionId", v)
            })?;
            if m.delete_marker {
                return Err(S3Error::new(
                    Code::MethodNotAllowed,
                    "The specified method is not allowed against this resource.",
                ));
            }
            Ok(m)
        }
        None => match b.latest(key) {
            Some(m) if !m.delete_marker => Ok(m),
            _ => Err(S3Error::no_such_key(key)),
        },
    }
}

fn etag_matches(cond: &str, etag: &str) -> bool {
    cond.split(',')
        .map(|c| c.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|c| c == "*" || c == etag)
}

/// If-Match, If-Unmodified-Since (412) then If-None-Match, If-Modified-Since (304), in S3's
/// order of precedence.
fn check_conditions(r: &Req, m: &Meta) -> S3Result<()> {
    let modified = crate::time::secs(m.modified());
    let since = |h: &str| {
        r.header(h)
            .and_then(crate::time::parse_http_date)
            .map(crate::time::secs)
    };
    let failed = || {
        S3Error::new(
            Code::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold",
        )
    };
    match r.header("if-match") {
        Some(c) if !etag_matches(c, &m.etag) => return Err(failed()),
        Some(_) => {}
        None => {
            if since("if-unmodified-since").is_some_and(|t| modified > t) {
                return Err(failed());
            }
        }
    }
    let not_modified = || S3Error::new(Code::NotModified, "Not Modified");
    match r.header("if-none-match") {
        Some(c) if etag_matches(c, &m.etag) => return Err(not_modified()),
        Some(_) => {}
        None => {
            if since("if-modified-since").is_some_and(|t| modified <= t) {
                return Err(not_modified());
            }
        }
    }
    Ok(())
}

/// `bytes=A-B`, `bytes=A-`, `bytes=-N` → (start, end inclusive); `None` for no/ignored range.
fn parse_range(h: Option<&str>, size: u64) -> S3Result<Option<(u64, u64)>> {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // S3 ignores multiple ranges and sends the whole object.
    }
    let invalid = || {
        S3Error::new(Code::InvalidRange, "The requested range is not satisfiable")
            .with("ActualObjectSize", size.to_string())
            .with("RangeRequested", format!("bytes={spec}"))
    };
    let (a, z) = spec.split_once('-').ok_or_else(invalid)?;
    let (a, z) = (a.trim(), z.trim());
    let range = if a.is_empty() {
        let n: u64 = z.parse().map_err(|_| invalid())?;
        if n == 0 || size == 0 {
            return Err(invalid());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let a: u64 = a.parse().map_err(|_| invalid())?;
        let z: u64 = if z.is_empty() {
            u64::MAX
        } else {
            z.parse().map_err(|_| invalid())?
        };
        if a > z {
            return Ok(None); // Syntactically invalid ranges are ignored (RFC 9110).
        }
        if a >= size {
            return Err(invalid());
        }
        (a, z.min(size - 1))
    };
    Ok(Some(range))
}

fn object_headers(resp: &mut HeaderMap, b: &Bucket, m: &Meta) {
    let mut put = |k: &str, v: &str| {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            // Raw bytes: metadata may hold UTF-8, which from_str would drop.
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            resp.insert(k, v);
        }
    };
    put("etag", &format!("\"{}\"", m.etag));
    put("last-modified", &crate::time::http_date(m.modified()));
    put(
        "content-type",
        m.content_type.as_deref().unwrap_or("binary/octet-stream"),
    );
    put("accept-ranges", "bytes");
    for (k, v) in &m.headers {
        put(k, v);
    }
    for (k, v) in &m.user_meta {
        put(&format!("x-amz-meta-{k}"), v);
    }
    if !m.tags.is_empty() {
        put("x-amz-tagging-count", &m.tags.len().to_string());
    }
    version_header(resp, b, m);
}

pub async fn get(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let head = r.parts.method == hyper::Method::HEAD;
    let m = match find(&b, &r.key, r.q("versionId")) {
        Err(mut e) if e.code == Code::NoSuchKey => {
            // A delete marker as newest version says so in a header.
            if b.latest(&r.key).is_some_and(|m| m.delete_marker) {
                e.headers.push(("x-amz-delete-marker", "true".to_string()));
            }
            return Err(e);
        }
        other => other?,
    };
    if let Some(pn) = r.q("partNumber") {
        if pn != "1" {
            return Err(S3Error::not_implemented("GET with partNumber other than 1"));
        }
    }
    if let Err(e) = check_conditions(r, &m) {
        if e.code == Code::NotModified {
            let mut resp = Response::new(crate::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            let h = resp.headers_mut();
            object_headers(h, &b, &m);
            h.remove("content-type");
            return Ok(resp);
        }
        return Err(e);
    }
    let range = parse_range(r.header("range"), m.size)?;
    let (start, len) = match range {
        Some((a, z)) => (a, z - a + 1),
        None => (0, m.size),
    };
    let body = if head || len == 0 {
        crate::empty()
    } else {
        let path = b.version_path(&m);
        let file = blocking(move || {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(start))?;
            Ok(f)
        })
        .await?;
        file_body(file, len)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    object_headers(h, &b, &m);
    h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    for (q, hname) in [
        ("response-content-type", "content-type"),
        ("response-content-disposition", "content-disposition"),
        ("response-cache-control", "cache-control"),
        ("response-content-encoding", "content-encoding"),
        ("response-content-language", "content-language"),
        ("response-expires", "expires"),
    ] {
        if let Some(v) = r.q(q).and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(hname, v);
        }
    }
    if let Some((a, z)) = range {
        h.insert(
            hyper::header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {a}-{z}/{}", m.size))
                .map_err(S3Error::internal)?,
        );
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}
