//! Multipart uploads. Each upload is a directory `BUCKET/uploads/UPLOADID/` holding
//! `upload.json` (key, initiation time, the object's metadata to be) and one file per part,
//! `part-NNNNN`, in the same format as a version file (data then metadata trailer), renamed in
//! whole. Completing concatenates the chosen parts into the bucket's tmp dir (the kernel
//! copies: `copy_file_range`), seals and commits it like a PUT, then removes the upload.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::bucket::blocking;
use crate::error::{Code, S3Error, S3Result};
use crate::route::{xml_response, Req};
use crate::server::State;
use crate::store::{Bucket, Meta};
use crate::xml::escape;
use crate::Body;

/// Every part but the last must be at least this large (S3's rule).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 << 30;
const NS: &str = "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"";

#[derive(Serialize, Deserialize)]
struct UploadInfo {
    key: String,
    initiated: u64,
    meta: Meta,
}

fn no_such_upload(id: &str) -> S3Error {
    S3Error::new(
        Code::NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
    .with("UploadId", id)
}

/// An upload's directory and record; the id is checked to be ours (hex) before it is a path.
fn load(b: &Bucket, id: &str, key: &str) -> S3Result<(PathBuf, UploadInfo)> {
    if id.len() != 32 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(no_such_upload(id));
    }
    let dir = b.uploads_dir().join(id);
    let info: UploadInfo = fs::read(dir.join("upload.json"))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .ok_or_else(|| no_such_upload(id))?;
    if info.key != key {
        return Err(no_such_upload(id));
    }
    Ok((dir, info))
}

fn part_path(dir: &std::path::Path, n: u32) -> PathBuf {
    dir.join(format!("part-{n:05}"))
}

fn read_part(dir: &std::path::Path, n: u32) -> Option<Meta> {
    let mut f = fs::File::open(part_path(dir, n)).ok()?;
    crate::store::read_trailer(&mut f).ok()
}

pub fn create(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let meta = crate::object::meta_from_headers(r)?;
    let id = state.store.new_id();
    let info = UploadInfo {
        key: r.key.clone(),
        initiated: SystemTimeMs::now(),
        meta,
    };
    let dir = b.uploads_dir().join(&id);
    fs::create_dir(&dir)?;
    crate::store::write_atomic(
        &dir.join("upload.json"),
        &serde_json::to_vec(&info).map_err(S3Error::internal)?,
    )?;
    Ok(xml_response(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult {NS}><Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>",
        escape(&r.bucket),
        escape(&r.key)
    )))
}

struct SystemTimeMs;
impl SystemTimeMs {
    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64
    }
}

fn part_number(r: &Req) -> S3Result<u32> {
    r.q("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            S3Error::new(
                Code::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })
}

pub async fn upload_part(state: &Arc<State>, r: &Req, body: Incoming) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let n = part_number(r)?;
    let id = r.q("uploadId").unwrap_or("");
    let (dir, _) = load(&b, id, &r.key)?;
    let tmp = b.tmp_dir().join(format!("part-{}", state.store.new_id()));
    let copy = r.header("x-amz-copy-source").is_some();
    let mut staged = if copy {
        let (sb, sm) = crate::copy::source(state, r)?;
        crate::copy::copy_conditions(r, &sm)?;
        let (start, len) = match r.header("x-amz-copy-source-range") {
            None => (0, sm.size),
            Some(range) => {
                let invalid = || {
                    S3Error::new(
                        Code::InvalidArgument,
                        "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
                    )
                };
                let (a, z) = range
                    .strip_prefix("bytes=")
                    .and_then(|s| s.split_once('-'))
                    .ok_or_else(invalid)?;
                let a: u64 = a.parse().map_err(|_| invalid())?;
                let z: u64 = z.parse().map_err(|_| invalid())?;
                if a > z || z >= sm.size {
                    return Err(S3Error::new(
                        Code::InvalidRange,
                        "The requested range is not satisfiable",
                    ));
                }
                (a, z - a + 1)
            }
        };
        if len > MAX_PART_SIZE {
            return Err(S3Error::new(
                Code::EntityTooLarge,
                "Part size must not exceed 5 GiB",
            ));
        }
        let src = sb.version_path(&sm);
        blocking(move || Ok(crate::copy::copy_range(src, start, len, tmp)?)).await?
    } else {
        let recv = crate::body::Receive {
            tmp_dir: &b.tmp_dir(),
            tmp_name: tmp.file_name().unwrap().to_string_lossy().into_owned(),
            max_size: state.config.max_object_size.min(MAX_PART_SIZE),
        };
        crate::body::receive(&r.parts, body, &r.auth.payload, recv).await?
    };
    let meta = Meta {
        key: r.key.clone(),
        size: staged.size,
        etag: hex::encode(staged.md5),
        last_modified: SystemTimeMs::now(),
        ..Default::default()
    };
    let target = part_path(&dir, n);
    let etag = meta.etag.clone();
    let modified = meta.modified();
    let id2 = id.to_string();
    blocking(move || {
        staged.seal(&meta)?;
        fs::rename(&staged.path, &target).map_err(|_| no_such_upload(&id2))?;
        staged.keep();
        crate::store::sync_dir(&dir)?;
        Ok(())
    })
    .await?;
    if copy {
        return Ok(xml_response(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult><LastModified>{}</LastModified><ETag>&quot;{etag}&quot;</ETag></CopyPartResult>",
            crate::time::iso8601(modified)
        )));
    }
    let mut resp = Response::new(crate::empty());
    resp.headers_mut().insert(
        "etag",
        HeaderValue::from_str(&format!("\"{etag}\"")).map_err(S3Error::internal)?,
    );
    Ok(resp)
}

pub async fn complete(state: &Arc<State>, r: &Req, body: Incoming) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let id = r.q("uploadId").unwrap_or("").to_string();
    let (dir, info) = load(&b, &id, &r.key)?;
    let doc = crate::body::read_small(&r.parts, body, &r.auth.payload, 4 << 20).await?;
    let malformed = || {
        S3Error::new(
            Code::MalformedXML,
            "The XML you provided was not well-formed",
        )
    };
    let root = crate::xml::parse(&String::from_utf8_lossy(&doc)).ok_or_else(malformed)?;
    if root.name != "CompleteMultipartUpload" {
        return Err(malformed());
    }
    let mut wanted = Vec::new();
    for p in root.children("Part") {
        let n: u32 = p
            .child_text("PartNumber")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(malformed)?;
        let etag = p
            .child_text("ETag")
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .to_string();
        wanted.push((n, etag));
    }
    if wanted.is_empty() {
        return Err(S3Error::new(
            Code::MalformedXML,
            "You must specify at least one part",
        ));
    }
    if wanted.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::new(
            Code::InvalidPartOrder,
            "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
        ));
    }
    let mut parts = Vec::new();
    for (i, (n, etag)) in wanted.iter().enumerate() {
        let invalid = || {
            S3Error::new(
                Code::InvalidPart,
                "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
            )
            .with("UploadId", id.clone())
            .with("PartNumber", n.to_string())
            .with("ETag", etag.clone())
        };
        let m = read_part(&dir, *n).ok_or_else(invalid)?;
        if m.etag != *etag {
            return Err(invalid());
        }
        if i + 1 < wanted.len() && m.size < MIN_PART_SIZE {
            return Err(S3Error::new(
                Code::EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size.",
            )
            .with("PartNumber", n.to_string())
            .with("ProposedSize", m.size.to_string())
            .with("MinSizeAllowed", MIN_PART_SIZE.to_string()));
        }
        parts.push((*n, m));
    }
    let tmp = b
        .tmp_dir()
        .join(format!("complete-{}", state.store.new_id()));
    let dir2 = dir.clone();
    let count = parts.len();
    let staged = blocking(move || {
        let mut staged = crate::body::Staged::new(tmp)?;
        let mut md5s = Md5::new();
        let out = staged.file.as_mut().expect("fresh staged file");
        for (n, m) in &parts {
            let f = fs::File::open(part_path(&dir2, *n))?;
            let copied = std::io::copy(&mut std::io::Read::take(f, m.size), out)?;
            if copied != m.size {
                return Err(S3Error::internal(
                    "a part file is shorter than its metadata",
                ));
            }
            md5s.update(hex::decode(&m.etag).map_err(S3Error::internal)?);
            staged.size += m.size;
        }
        out.flush()?;
        staged.md5 = md5s.finalize().into();
        Ok(staged)
    })
    .await?;
    let mut meta = info.meta;
    meta.key = r.key.clone();
    meta.version_id = crate::object::version_for_write(state, &b);
    meta.etag = format!("{}-{count}", hex::encode(staged.md5));
    if staged.size > state.config.max_object_size {
        return Err(S3Error::new(
            Code::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size.",
        ));
    }
    let m = crate::object::commit(state, b.clone(), staged, meta).await?;
    blocking(move || Ok(fs::remove_dir_all(&dir)?)).await?;
    let mut resp = xml_response(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult {NS}><Location>/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>&quot;{}&quot;</ETag></CompleteMultipartUploadResult>",
        escape(&r.bucket),
        escape(&crate::sigv4::uri_encode(r.key.as_bytes(), true)),
        escape(&r.bucket),
        escape(&r.key),
        m.etag
    ));
    crate::object::version_header(resp.headers_mut(), &b, &m);
    Ok(resp)
}

pub fn abort(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let id = r.q("uploadId").unwrap_or("");
    let (dir, _) = load(&b, id, &r.key)?;
    fs::remove_dir_all(&dir).map_err(|_| no_such_upload(id))?;
    let mut resp = Response::new(crate::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

pub fn list_parts(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let id = r.q("uploadId").unwrap_or("");
    let (dir, _) = load(&b, id, &r.key)?;
    let marker: u32 = r
        .q("part-number-marker")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let max: usize = r
        .q("max-parts")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let mut numbers: Vec<u32> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("part-")?.parse().ok())
        .filter(|n| *n > marker)
        .collect();
    numbers.sort_unstable();
    let truncated = numbers.len() > max;
    numbers.truncate(max);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult {NS}><Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId><StorageClass>STANDARD</StorageClass><PartNumberMarker>{marker}</PartNumberMarker><MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated>",
        escape(&r.bucket),
        escape(&r.key)
    );
    if truncated {
        if let Some(last) = numbers.last() {
            out.push_str(&format!(
                "<NextPartNumberMarker>{last}</NextPartNumberMarker>"
            ));
        }
    }
    for n in numbers {
        if let Some(m) = read_part(&dir, n) {
            out.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size></Part>",
                crate::time::iso8601(m.modified()),
                m.etag,
                m.size
            ));
        }
    }
    out.push_str("</ListPartsResult>");
    Ok(xml_response(out))
}

pub fn list_uploads(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let prefix = r.q("prefix").unwrap_or("");
    let key_marker = r.q("key-marker").unwrap_or("");
    let max: usize = r
        .q("max-uploads")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let mut uploads: Vec<(String, u64, String)> = Vec::new();
    for e in fs::read_dir(b.uploads_dir())? {
        let e = e?;
        let id = e.file_name().to_string_lossy().into_owned();
        if let Some(info) = fs::read(e.path().join("upload.json"))
            .ok()
            .and_then(|d| serde_json::from_slice::<UploadInfo>(&d).ok())
        {
            if info.key.starts_with(prefix) && info.key.as_str() > key_marker {
                uploads.push((info.key, info.initiated, id));
            }
        }
    }
    uploads.sort();
    let truncated = uploads.len() > max;
    uploads.truncate(max);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult {NS}><Bucket>{}</Bucket><KeyMarker>{}</KeyMarker><UploadIdMarker></UploadIdMarker><Prefix>{}</Prefix><MaxUploads>{max}</MaxUploads><IsTruncated>{truncated}</IsTruncated>",
        escape(&r.bucket),
        escape(key_marker),
        escape(prefix)
    );
    if truncated {
        if let Some((k, _, id)) = uploads.last() {
            out.push_str(&format!(
                "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{id}</NextUploadIdMarker>",
                escape(k)
            ));
        }
    }
    for (key, initiated, id) in uploads {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(initiated);
        out.push_str(&format!(
            "<Upload><Key>{}</Key><UploadId>{id}</UploadId><Initiator><ID>yun</ID><DisplayName>yun</DisplayName></Initiator><Owner><ID>yun</ID><DisplayName>yun</DisplayName></Owner><StorageClass>STANDARD</StorageClass><Initiated>{}</Initiated></Upload>",
            escape(&key),
            crate::time::iso8601(t)
        ));
    }
    out.push_str("</ListMultipartUploadsResult>");
    Ok(xml_response(out))
}
