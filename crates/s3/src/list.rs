//! Listings: ListBuckets, ListObjects (V1 and V2) with prefix, delimiter, markers and
//! continuation tokens, and ListObjectVersions. They walk the bucket's in-memory index, which
//! is sorted by key in UTF-8 byte order as S3 sorts.

use std::ops::Bound;
use std::sync::Arc;

use base64::Engine;
use hyper::Response;

use crate::error::{Code, S3Error, S3Result};
use crate::route::{xml_response, Req};
use crate::server::State;
use crate::store::Meta;
use crate::time::iso8601;
use crate::xml::escape;
use crate::Body;

const NS: &str = "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"";

pub fn list_buckets(state: &Arc<State>) -> S3Result<Response<Body>> {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult {NS}><Owner><ID>yun</ID><DisplayName>yun</DisplayName></Owner><Buckets>"
    );
    for b in state.store.buckets() {
        out.push_str(&format!(
            "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
            escape(&b.name),
            iso8601(b.created)
        ));
    }
    out.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml_response(out))
}

/// An item of a listing: an object or a common prefix.
enum Item {
    Object(Arc<Meta>),
    Prefix(String),
}

/// Walks keys after `after` (exclusive) under `prefix`, grouping by `delimiter`, up to `max`
/// items; returns the items and whether more remain.
fn walk(
    index: &std::collections::BTreeMap<String, Vec<Arc<Meta>>>,
    prefix: &str,
    delimiter: &str,
    after: &str,
    max: usize,
    versions: bool,
) -> (Vec<Item>, bool) {
    let mut items = Vec::new();
    let start = if after >= prefix {
        Bound::Excluded(after)
    } else {
        Bound::Included(prefix)
    };
    let mut last_prefix: Option<String> = None;
    for (key, vs) in index.range::<str, _>((start, Bound::Unbounded)) {
        if !key.starts_with(prefix) {
            break;
        }
        if !versions && vs.first().is_none_or(|m| m.delete_marker) {
            continue;
        }
        if !delimiter.is_empty() {
            if let Some(i) = key[prefix.len()..].find(delimiter) {
                let cp = &key[..prefix.len() + i + delimiter.len()];
                // A continuation after a common prefix skips everything under it.
                if last_prefix.as_deref() == Some(cp) || cp == after {
                    continue;
                }
                if items.len() == max {
                    return (items, true);
                }
                last_prefix = Some(cp.to_string());
                items.push(Item::Prefix(cp.to_string()));
                continue;
            }
        }
        if items.len() == max {
            return (items, true);
        }
        items.push(Item::Object(vs[0].clone()));
    }
    (items, false)
}

fn max_keys(r: &Req) -> S3Result<usize> {
    match r.q("max-keys").or(r.q("max-uploads")).or(r.q("max-parts")) {
        None => Ok(1000),
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).map_or_else(
            || {
                Err(S3Error::new(
                    Code::InvalidArgument,
                    "max-keys must be a non-negative integer",
                ))
            },
            |n| Ok((n as usize).min(1000)),
        ),
    }
}

/// Encodes a key for a listing body: as is, or percent-encoded with `encoding-type=url`.
pub fn enc(s: &str, url: bool) -> String {
    if url {
        escape(&crate::sigv4::uri_encode(s.as_bytes(), true))
    } else {
        escape(s)
    }
}

fn object_xml(m: &Meta, url: bool, owner: bool) -> String {
    format!(
        "<Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size>{}<StorageClass>STANDARD</StorageClass>",
        enc(&m.key, url),
        iso8601(m.modified()),
        m.etag,
        m.size,
        if owner { "<Owner><ID>yun</ID><DisplayName>yun</DisplayName></Owner>" } else { "" }
    )
}

pub fn list_objects(state: &Arc<State>, r: &Req, version: u8) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let prefix = r.q("prefix").unwrap_or("");
    let delimiter = r.q("delimiter").unwrap_or("");
    let url = match r.q("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(S3Error::new(
                Code::InvalidArgument,
                "Invalid Encoding Method specified in Request",
            ))
        }
    };
    let max = max_keys(r)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let token = match r.q("continuation-token") {
        Some(t) if version == 2 => Some(
            b64.decode(t)
                .ok()
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or_else(|| {
                    S3Error::new(
                        Code::InvalidArgument,
                        "The continuation token provided is incorrect",
                    )
                })?,
        ),
        _ => None,
    };
    let after = if version == 2 {
        token.clone().or(r.q("start-after").map(String::from))
    } else {
        r.q("marker").map(String::from)
    }
    .unwrap_or_default();
    let (items, truncated) = {
        let index = b.index.lock().unwrap();
        walk(&index, prefix, delimiter, &after, max, false)
    };
    let owner = version == 1 || r.q("fetch-owner") == Some("true");
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult {NS}><Name>{}</Name><Prefix>{}</Prefix>",
        escape(&r.bucket),
        enc(prefix, url)
    );
    let last = items.last().map(|i| match i {
        Item::Object(m) => m.key.clone(),
        Item::Prefix(p) => p.clone(),
    });
    if version == 2 {
        if let Some(t) = r.q("continuation-token") {
            out.push_str(&format!(
                "<ContinuationToken>{}</ContinuationToken>",
                escape(t)
            ));
        }
        if let Some(s) = r.q("start-after") {
            out.push_str(&format!("<StartAfter>{}</StartAfter>", enc(s, url)));
        }
        out.push_str(&format!("<KeyCount>{}</KeyCount>", items.len()));
        if truncated {
            if let Some(l) = &last {
                out.push_str(&format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    b64.encode(l)
                ));
            }
        }
    } else {
        out.push_str(&format!("<Marker>{}</Marker>", enc(&after, url)));
        // S3 gives NextMarker only with a delimiter; clients use the last key otherwise.
        if truncated && !delimiter.is_empty() {
            if let Some(l) = &last {
                out.push_str(&format!("<NextMarker>{}</NextMarker>", enc(l, url)));
            }
        }
    }
    out.push_str(&format!("<MaxKeys>{max}</MaxKeys>"));
    if !delimiter.is_empty() {
        out.push_str(&format!("<Delimiter>{}</Delimiter>", enc(delimiter, url)));
    }
    if url {
        out.push_str("<EncodingType>url</EncodingType>");
    }
    out.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    for item in &items {
        match item {
            Item::Object(m) => out.push_str(&format!(
                "<Contents>{}</Contents>",
                object_xml(m, url, owner)
            )),
            Item::Prefix(p) => out.push_str(&format!(
                "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                enc(p, url)
            )),
        }
    }
    out.push_str("</ListBucketResult>");
    Ok(xml_response(out))
}

pub fn list_versions(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let prefix = r.q("prefix").unwrap_or("");
    let delimiter = r.q("delimiter").unwrap_or("");
    let url = r.q("encoding-type") == Some("url");
    let max = max_keys(r)?;
    let key_marker = r.q("key-marker").unwrap_or("");
    let vid_marker = r.q("version-id-marker").unwrap_or("");
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListVersionsResult {NS}><Name>{}</Name><Prefix>{}</Prefix><KeyMarker>{}</KeyMarker><VersionIdMarker>{}</VersionIdMarker><MaxKeys>{max}</MaxKeys>",
        escape(&r.bucket),
        enc(prefix, url),
        enc(key_marker, url),
        escape(vid_marker)
    );
    if !delimiter.is_empty() {
        out.push_str(&format!("<Delimiter>{}</Delimiter>", enc(delimiter, url)));
    }
    let index = b.index.lock().unwrap();
    // Resume inside the marker key's versions when a version id marker is given.
    let mut body = String::new();
    let mut count = 0;
    let mut next: Option<(String, String)> = None;
    let emit = |m: &Meta, latest: bool, body: &mut String| {
        let tag = if m.delete_marker {
            "DeleteMarker"
        } else {
            "Version"
        };
        let rest = if m.delete_marker {
            "<Owner><ID>yun</ID><DisplayName>yun</DisplayName></Owner>".to_string()
        } else {
            format!(
                "<ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass><Owner><ID>yun</ID><DisplayName>yun</DisplayName></Owner>",
                m.etag, m.size
            )
        };
        body.push_str(&format!(
            "<{tag}><Key>{}</Key><VersionId>{}</VersionId><IsLatest>{latest}</IsLatest><LastModified>{}</LastModified>{rest}</{tag}>",
            enc(&m.key, url),
            m.version_id,
            iso8601(m.modified())
        ));
    };
    if !key_marker.is_empty() && !vid_marker.is_empty() {
        if let Some(vs) = index.get(key_marker) {
            let from = vs
                .iter()
                .position(|v| v.version_id == vid_marker)
                .map_or(vs.len(), |p| p + 1);
            for (i, m) in vs.iter().enumerate().skip(from) {
                if count == max {
                    next = Some((m.key.clone(), vs[i - 1].version_id.clone()));
                    break;
                }
                emit(m, i == 0, &mut body);
                count += 1;
            }
        }
    }
    let (items, _) = if next.is_none() {
        walk(&index, prefix, delimiter, key_marker, usize::MAX, true)
    } else {
        (Vec::new(), false)
    };
    'outer: for item in items {
        match item {
            Item::Prefix(p) => {
                if count == max {
                    next = Some((p, String::new()));
                    break;
                }
                body.push_str(&format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    enc(&p, url)
                ));
                count += 1;
            }
            Item::Object(first) => {
                let vs = &index[&first.key];
                for (i, m) in vs.iter().enumerate() {
                    if count == max {
                        next = Some(if i == 0 {
                            // Stopped between keys: resume at this key from its start.
                            (last_key_before(&index, &m.key), String::new())
                        } else {
                            (m.key.clone(), vs[i - 1].version_id.clone())
                        });
                        break 'outer;
                    }
                    emit(m, i == 0, &mut body);
                    count += 1;
                }
            }
        }
    }
    out.push_str(&format!("<IsTruncated>{}</IsTruncated>", next.is_some()));
    if let Some((k, v)) = &next {
        out.push_str(&format!("<NextKeyMarker>{}</NextKeyMarker>", enc(k, url)));
        if !v.is_empty() {
            out.push_str(&format!(
                "<NextVersionIdMarker>{}</NextVersionIdMarker>",
                escape(v)
            ));
        }
    }
    out.push_str(&body);
    out.push_str("</ListVersionsResult>");
    Ok(xml_response(out))
}

/// The key just before `key` (so that a key marker resumes at `key`); empty when first.
fn last_key_before(
    index: &std::collections::BTreeMap<String, Vec<Arc<Meta>>>,
    key: &str,
) -> String {
    index
        .range::<str, _>((Bound::Unbounded, Bound::Excluded(key)))
        .next_back()
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}
