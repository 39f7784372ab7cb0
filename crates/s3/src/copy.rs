//! CopyObject and the source side of UploadPartCopy: `x-amz-copy-source` parsing and a
//! server-side copy of a byte range into a new staged file (hashed as it is copied).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use hyper::Response;
use md5::{Digest, Md5};

use crate::body::Staged;
use crate::bucket::blocking;
use crate::error::{Code, S3Error, S3Result};
use crate::route::{xml_response, Req};
use crate::server::State;
use crate::store::{Bucket, Meta};
use crate::Body;

/// The object `x-amz-copy-source` names: `[/]bucket/key[?versionId=V]`, URL-encoded.
pub fn source(state: &State, r: &Req) -> S3Result<(Arc<Bucket>, Arc<Meta>)> {
    let raw = r.header("x-amz-copy-source").unwrap_or("");
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    let path = String::from_utf8_lossy(&crate::sigv4::percent_decode(path)).into_owned();
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (bucket, key) = path.split_once('/').ok_or_else(|| {
        S3Error::new(
            Code::InvalidArgument,
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    })?;
    crate::store::check_key(key)?;
    let version = crate::sigv4::query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "versionId")
        .map(|(_, v)| v);
    let b = state.store.bucket(bucket)?;
    let m = crate::object::find(&b, key, version.as_deref())?;
    Ok((b, m))
}

/// Copies `len` bytes at `offset` of a version file into a new file in `tmp_dir`.
pub fn copy_range(
    src: PathBuf,
    offset: u64,
    len: u64,
    tmp_path: PathBuf,
) -> std::io::Result<Staged> {
    let mut from = File::open(&src)?;
    from.seek(SeekFrom::Start(offset))?;
    let mut from = from.take(len);
    let mut staged = Staged::new(tmp_path)?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let out = staged.file.as_mut().expect("fresh staged file");
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        staged.size += n as u64;
    }
    if staged.size != len {
        return Err(std::io::Error::other(
            "the copy source is shorter than its metadata",
        ));
    }
    staged.md5 = md5.finalize().into();
    Ok(staged)
}

pub async fn copy(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let (sb, sm) = source(state, r)?;
    let replace = match r.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => {
            return Err(S3Error::new(
                Code::InvalidArgument,
                "Unknown metadata directive.",
            ))
        }
    };
    if sb.name == b.name && sm.key == r.key && !replace && r.header("x-amz-tagging").is_none() {
        return Err(S3Error::new(
            Code::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    copy_conditions(r, &sm)?;
    let mut meta = if replace {
        crate::object::meta_from_headers(r)?
    } else {
        Meta {
            content_type: sm.content_type.clone(),
            headers: sm.headers.clone(),
            user_meta: sm.user_meta.clone(),
            tags: sm.tags.clone(),
            ..Default::default()
        }
    };
    match r.header("x-amz-tagging-directive") {
        Some("REPLACE") => {
            meta.tags = match r.header("x-amz-tagging") {
                Some(t) => crate::object::parse_tag_query(t)?,
                None => Vec::new(),
            }
        }
        _ => meta.tags = sm.tags.clone(),
    }
    let src = sb.version_path(&sm);
    let tmp = b.tmp_dir().join(format!("copy-{}", state.store.new_id()));
    let size = sm.size;
    let staged = blocking(move || Ok(copy_range(src, 0, size, tmp)?)).await?;
    meta.key = r.key.clone();
    meta.version_id = crate::object::version_for_write(state, &b);
    meta.etag = hex::encode(staged.md5);
    let m = crate::object::commit(state, b.clone(), staged, meta).await?;
    let mut resp = xml_response(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag></CopyObjectResult>",
        crate::time::iso8601(m.modified()),
        m.etag
    ));
    if sm.version_id != crate::store::NULL_VERSION {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&sm.version_id) {
            resp.headers_mut().insert("x-amz-copy-source-version-id", v);
        }
    }
    crate::object::version_header(resp.headers_mut(), &b, &m);
    Ok(resp)
}

/// `x-amz-copy-source-if-*`: the conditions on the source of a copy (all 412 when false).
pub fn copy_conditions(r: &Req, m: &Meta) -> S3Result<()> {
    let failed = || {
        S3Error::new(
            Code::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold",
        )
    };
    let modified = crate::time::secs(m.modified());
    let date = |h: &str| {
        r.header(h)
            .and_then(crate::time::parse_http_date)
            .map(crate::time::secs)
    };
    let tag = |c: &str| c.trim().trim_matches('"').to_string();
    if let Some(c) = r.header("x-amz-copy-source-if-match") {
        if tag(c) != m.etag && tag(c) != "*" {
            return Err(failed());
        }
    }
    if let Some(c) = r.header("x-amz-copy-source-if-none-match") {
        if tag(c) == m.etag || tag(c) == "*" {
            return Err(failed());
        }
    }
    if date("x-amz-copy-source-if-unmodified-since").is_some_and(|t| modified > t) {
        return Err(failed());
    }
    if date("x-amz-copy-source-if-modified-since").is_some_and(|t| modified <= t) {
        return Err(failed());
    }
    Ok(())
}
