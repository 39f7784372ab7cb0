//! DeleteObject and DeleteObjects (versioning-aware: delete markers when enabled), and object
//! tagging (Put/Get/Delete `?tagging`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use crate::bucket::blocking;
use crate::error::{Code, S3Error, S3Result};
use crate::route::{xml_response, Req};
use crate::server::State;
use crate::store::{Bucket, Meta, Versioning, NULL_VERSION};
use crate::xml::escape;
use crate::Body;

/// What a delete did: the version it removed or created, and whether that is a delete marker.
struct Deleted {
    version_id: Option<String>,
    delete_marker: bool,
}

async fn delete_one(
    state: &Arc<State>,
    b: &Arc<Bucket>,
    key: &str,
    version_id: Option<&str>,
) -> S3Result<Deleted> {
    crate::store::check_key(key)?;
    if let Some(v) = version_id {
        let (st, b2, k, v2) = (state.clone(), b.clone(), key.to_string(), v.to_string());
        let gone = blocking(move || Ok(st.store.remove_version(&b2, &k, &v2))).await?;
        return Ok(Deleted {
            version_id: Some(v.to_string()),
            delete_marker: gone.is_some_and(|m| m.delete_marker),
        });
    }
    let marker_id = match b.versioning() {
        Versioning::Unversioned => {
            let (st, b2, k) = (state.clone(), b.clone(), key.to_string());
            blocking(move || Ok(st.store.remove_version(&b2, &k, NULL_VERSION))).await?;
            return Ok(Deleted {
                version_id: None,
                delete_marker: false,
            });
        }
        Versioning::Enabled => state.store.new_id(),
        Versioning::Suspended => NULL_VERSION.to_string(),
    };
    let staged =
        crate::body::Staged::new(b.tmp_dir().join(format!("marker-{}", state.store.new_id())))?;
    let meta = Meta {
        key: key.to_string(),
        version_id: marker_id.clone(),
        delete_marker: true,
        ..Default::default()
    };
    crate::object::commit(state, b.clone(), staged, meta).await?;
    Ok(Deleted {
        version_id: Some(marker_id),
        delete_marker: true,
    })
}

pub async fn delete(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let d = delete_one(state, &b, &r.key, r.q("versionId")).await?;
    let mut resp = Response::new(crate::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if let Some(v) = d.version_id.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert("x-amz-version-id", v);
    }
    if d.delete_marker {
        resp.headers_mut()
            .insert("x-amz-delete-marker", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

pub async fn delete_objects(
    state: &Arc<State>,
    r: &Req,
    body: Incoming,
) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let doc = crate::body::read_small(&r.parts, body, &r.auth.payload, 2 << 20).await?;
    let malformed = || {
        S3Error::new(
            Code::MalformedXML,
            "The XML you provided was not well-formed",
        )
    };
    let root = crate::xml::parse(&String::from_utf8_lossy(&doc)).ok_or_else(malformed)?;
    if root.name != "Delete" {
        return Err(malformed());
    }
    let quiet = root.child_text("Quiet") == Some("true");
    let objects: Vec<_> = root.children("Object").collect();
    if objects.is_empty() || objects.len() > 1000 {
        return Err(malformed());
    }
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for o in objects {
        let key = o.child_text("Key").ok_or_else(malformed)?;
        let vid = o.child_text("VersionId");
        match delete_one(state, &b, key, vid).await {
            Ok(d) => {
                if quiet {
                    continue;
                }
                out.push_str(&format!("<Deleted><Key>{}</Key>", escape(key)));
                if let Some(v) = vid {
                    out.push_str(&format!("<VersionId>{}</VersionId>", escape(v)));
                }
                if d.delete_marker {
                    out.push_str("<DeleteMarker>true</DeleteMarker>");
                    if vid.is_none() {
                        if let Some(v) = &d.version_id {
                            out.push_str(&format!(
                                "<DeleteMarkerVersionId>{}</DeleteMarkerVersionId>",
                                escape(v)
                            ));
                        }
                    }
                }
                out.push_str("</Deleted>");
            }
            Err(e) => out.push_str(&format!(
                "<Error><Key>{}</Key><Code>{}</Code><Message>{}</Message></Error>",
                escape(key),
                e.code.as_str(),
                escape(&e.message)
            )),
        }
    }
    out.push_str("</DeleteResult>");
    Ok(xml_response(out))
}

pub fn get_tagging(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let m = crate::object::find(&b, &r.key, r.q("versionId"))?;
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>",
    );
    for (k, v) in &m.tags {
        out.push_str(&format!(
            "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
            escape(k),
            escape(v)
        ));
    }
    out.push_str("</TagSet></Tagging>");
    let mut resp = xml_response(out);
    crate::object::version_header(resp.headers_mut(), &b, &m);
    Ok(resp)
}

pub async fn put_tagging(state: &Arc<State>, r: &Req, body: Incoming) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let m = crate::object::find(&b, &r.key, r.q("versionId"))?;
    let doc = crate::body::read_small(&r.parts, body, &r.auth.payload, 64 << 10).await?;
    let malformed = || {
        S3Error::new(
            Code::MalformedXML,
            "The XML you provided was not well-formed",
        )
    };
    let root = crate::xml::parse(&String::from_utf8_lossy(&doc)).ok_or_else(malformed)?;
    let set = root.child("TagSet").ok_or_else(malformed)?;
    let mut tags = Vec::new();
    for t in set.children("Tag") {
        tags.push((
            t.child_text("Key").ok_or_else(malformed)?.to_string(),
            t.child_text("Value").unwrap_or("").to_string(),
        ));
    }
    crate::object::check_tags(&tags)?;
    set_tags(state, &b, &m, tags).await?;
    let mut resp = Response::new(crate::empty());
    crate::object::version_header(resp.headers_mut(), &b, &m);
    Ok(resp)
}

pub async fn delete_tagging(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let m = crate::object::find(&b, &r.key, r.q("versionId"))?;
    set_tags(state, &b, &m, Vec::new()).await?;
    let mut resp = Response::new(crate::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    crate::object::version_header(resp.headers_mut(), &b, &m);
    Ok(resp)
}

async fn set_tags(
    state: &Arc<State>,
    b: &Arc<Bucket>,
    m: &Arc<Meta>,
    tags: Vec<(String, String)>,
) -> S3Result<()> {
    let (st, b, m) = (state.clone(), b.clone(), m.clone());
    blocking(move || st.store.set_tags(&b, &m, tags)).await
}
