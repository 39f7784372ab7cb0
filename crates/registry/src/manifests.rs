//! `PUT/GET/HEAD/DELETE /v2/<name>/manifests/<reference>` and the referrers API.
//!
//! Manifests are stored as the exact bytes pushed (their digest is over those bytes), with the
//! media type they were pushed with. No conversion between formats: a client whose `Accept`
//! excludes the stored type gets MANIFEST_UNKNOWN, as distribution answers.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult, Code};
use crate::http::{blocking, set, Query};
use crate::names::{Algorithm, Digest, Reference};
use crate::Shared;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The spec asks registries to accept manifests up to 4 MiB; larger ones are refused (413).
const MAX_MANIFEST: usize = 4 << 20;

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::ManifestInvalid, msg)
}

fn manifest_unknown(reference: &str) -> ApiError {
    ApiError::new(
        Code::ManifestUnknown,
        format!("manifest {reference:?} unknown to repository"),
    )
}

/// A descriptor's digest and size, checked.
struct Descriptor {
    digest: Digest,
    size: u64,
    /// Foreign/non-distributable layers (with `urls`) are not expected in the registry.
    external: bool,
}

fn descriptor(v: &Value, field: &str) -> ApiResult<Descriptor> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(format!("{field}: not a descriptor object")))?;
    if !obj.get("mediaType").is_some_and(Value::is_string) {
        return Err(invalid(format!(
            "{field}.mediaType: missing or not a string"
        )));
    }
    let digest = obj
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{field}.digest: missing or not a string")))?;
    let digest = Digest::parse(digest)
        .map_err(|_| invalid(format!("{field}.digest: invalid digest {digest:?}")))?;
    let size = obj.get("size").and_then(Value::as_u64).ok_or_else(|| {
        invalid(format!(
            "{field}.size: missing or not a non-negative integer"
        ))
    })?;
    let external = obj
        .get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    Ok(Descriptor {
        digest,
        size,
        external,
    })
}

/// The media type of a pushed manifest: the Content-Type, else its `mediaType` field, else
/// inferred (OCI manifests may omit the field); the two must agree when both are given.
fn media_type(headers: &HeaderMap, m: &Map<String, Value>) -> ApiResult<String> {
    let header = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty() && v != "application/json" && v != "application/octet-stream");
    let field = m.get("mediaType").map(|v| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| invalid("mediaType: not a string"))
    });
    let field = field.transpose()?;
    match (header, field) {
        (Some(h), Some(f)) if h != f => Err(invalid(format!(
            "Content-Type {h} does not match the manifest's mediaType {f}"
        ))),
        (Some(h), _) => Ok(h),
        (None, Some(f)) => Ok(f),
        (None, None) if m.contains_key("manifests") => Ok(OCI_INDEX.to_string()),
        (None, None) => Ok(OCI_MANIFEST.to_string()),
    }
}

/// `PUT /v2/<name>/manifests/<reference>`
pub async fn put(
    state: Shared,
    name: String,
    reference: Reference,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let too_large = || {
        ApiError::new(
            Code::SizeInvalid,
            format!("manifest larger than {MAX_MANIFEST} bytes"),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST)
        .await
        .map_err(|e| invalid(format!("reading manifest: {e}")))?;

    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    let m = value
        .as_object()
        .ok_or_else(|| invalid("manifest is not a JSON object"))?;
    let media_type = media_type(headers, m)?;
    if m.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion: must be 2"));
    }

    // What must already be in the repository: blobs for an image, manifests for an index.
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            blobs.push(descriptor(
                m.get("config").unwrap_or(&Value::Null),
                "config",
            )?);
            let layers = match m.get("layers") {
                None if media_type == OCI_MANIFEST => &[][..],
                v => v
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("layers: missing or not an array"))?,
            };
            for (i, l) in layers.iter().enumerate() {
                blobs.push(descriptor(l, &format!("layers[{i}]"))?);
            }
        }
        OCI_INDEX | DOCKER_LIST => {
            let manifests = m
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("manifests: missing or not an array"))?;
            for (i, c) in manifests.iter().enumerate() {
                children.push(descriptor(c, &format!("manifests[{i}]"))?);
            }
        }
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?}"
            )));
        }
    }
    let subject = match m.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => Some(descriptor(s, "subject")?.digest),
    };

    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm,
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let digest = Digest::of(algorithm, &bytes);
    if let Reference::Digest(want) = &reference {
        if want != &digest {
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!("manifest digest {digest} does not match the reference {want}"),
            ));
        }
    }

    let referrer = subject.as_ref().map(|_| {
        // The referrers API lists this descriptor; artifactType falls back to the config's
        // media type, as the spec says.
        let artifact_type = m
            .get("artifactType")
            .and_then(Value::as_str)
            .or_else(|| m.get("config")?.get("mediaType")?.as_str());
        let mut d = json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": bytes.len(),
        });
        if let Some(t) = artifact_type {
            d["artifactType"] = json!(t);
        }
        if let Some(a) = m.get("annotations").filter(|a| a.is_object()) {
            d["annotations"] = a.clone();
        }
        d
    });

    let (st, n, d, mt) = (state.clone(), name.clone(), digest.clone(), media_type);
    let (subj, raw) = (subject.clone(), bytes.clone());
    let tag = match &reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    blocking(move || -> std::io::Result<Result<(), ApiError>> {
        // No blob delete between the check below and the manifest becoming visible.
        let _shared = st.store.manifest_put_lock();
        for b in blobs.iter().filter(|b| !b.external) {
            match st.store.linked_blob_size(&n, &b.digest)? {
                None => return Ok(Err(missing(Code::ManifestBlobUnknown, &b.digest))),
                Some(size) if size != b.size => {
                    return Ok(Err(invalid(format!(
                        "blob {} has {size} bytes, the manifest says {}",
                        b.digest, b.size
                    ))))
                }
                Some(_) => {}
            }
        }
        for c in &children {
            if st.store.manifest_media_type(&n, &c.digest)?.is_none() {
                return Ok(Err(missing(Code::ManifestBlobUnknown, &c.digest)));
            }
        }
        let referrer = subj.as_ref().zip(referrer.as_ref());
        st.store
            .put_manifest(&n, &d, &raw, &mt, tag.as_deref(), referrer)?;
        Ok(Ok(()))
    })
    .await??;

    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    set(h, "location", format!("/v2/{name}/manifests/{digest}"));
    set(h, "docker-content-digest", digest.to_string());
    set(h, "content-length", "0");
    if let Some(s) = subject {
        set(h, "oci-subject", s.to_string());
    }
    Ok(resp)
}

fn missing(code: Code, d: &Digest) -> ApiError {
    ApiError::new(
        code,
        format!("manifest references {d}, unknown to the repository"),
    )
    .detail(json!({ "digest": d.to_string() }))
}

enum Found {
    Manifest(Digest, String),
    NoRepository,
    Unknown,
}

/// Resolves a reference to the digest and media type stored in `name`.
async fn resolve(state: &Shared, name: &str, reference: &Reference) -> ApiResult<(Digest, String)> {
    let (st, n, r) = (state.clone(), name.to_string(), reference.clone());
    let found = blocking(move || {
        if !st.store.repo_exists(&n) {
            return Ok(Found::NoRepository);
        }
        let d = match r {
            Reference::Digest(d) => Some(d),
            Reference::Tag(t) => st.store.resolve_tag(&n, &t)?,
        };
        let Some(d) = d else {
            return Ok(Found::Unknown);
        };
        Ok(match st.store.manifest_media_type(&n, &d)? {
            Some(mt) => Found::Manifest(d, mt),
            None => Found::Unknown,
        })
    })
    .await?;
    match found {
        Found::Manifest(d, mt) => Ok((d, mt)),
        Found::NoRepository => Err(ApiError::new(
            Code::NameUnknown,
            format!("repository {name:?} not known to registry"),
        )),
        Found::Unknown => Err(manifest_unknown(&match reference {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(d) => d.to_string(),
        })),
    }
}

/// Whether an `Accept` header list admits `media_type` (no header: anything goes).
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',') {
            let t = t.split(';').next().unwrap_or("").trim();
            if t.is_empty() {
                continue;
            }
            any = true;
            if t == "*/*" || t == "application/*" || t.eq_ignore_ascii_case(media_type) {
                return true;
            }
        }
    }
    !any
}

/// `GET/HEAD /v2/<name>/manifests/<reference>`
pub async fn get(
    state: Shared,
    name: String,
    reference: Reference,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    let (digest, media_type) = resolve(&state, &name, &reference).await?;
    if !accepts(headers, &media_type) {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!("manifest is {media_type}, which the request's Accept excludes"),
        ));
    }
    let etag = format!("\"{digest}\"");
    let path = state.store.blob_path(&digest);
    let (bytes, len) = if head {
        let len = blocking(move || std::fs::metadata(path).map(|m| m.len())).await?;
        (None, len)
    } else {
        let b = tokio::fs::read(path).await?;
        let len = b.len() as u64;
        (Some(b), len)
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match bytes {
            Some(b) => (StatusCode::OK, b).into_response(),
            None => StatusCode::OK.into_response(),
        }
    };
    let h = resp.headers_mut();
    set(h, "content-type", &media_type);
    if !not_modified {
        set(h, "content-length", len.to_string());
    }
    set(h, "docker-content-digest", digest.to_string());
    set(h, "etag", &etag);
    Ok(resp)
}

/// `DELETE /v2/<name>/manifests/<reference>`: by digest removes the manifest (and its tags);
/// by tag removes only the tag (OCI distribution spec v1.1).
pub async fn delete(state: Shared, name: String, reference: Reference) -> ApiResult<Response> {
    let (st, n, r) = (state.clone(), name.clone(), reference.clone());
    let removed = blocking(move || match &r {
        Reference::Digest(d) => st.store.delete_manifest(&n, d),
        Reference::Tag(t) => st.store.delete_tag(&n, t),
    })
    .await?;
    if !removed {
        return Err(manifest_unknown(&match reference {
            Reference::Tag(t) => t,
            Reference::Digest(d) => d.to_string(),
        }));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`: an image index of the manifests whose
/// `subject` is the digest (empty, not 404, when there are none).
pub async fn referrers(
    state: Shared,
    name: String,
    subject: Digest,
    query: &Query,
) -> ApiResult<Response> {
    let (st, n) = (state.clone(), name);
    let mut list = blocking(move || st.store.referrers(&n, &subject)).await?;
    let filter = query.get("artifactType").filter(|t| !t.is_empty());
    if let Some(t) = filter {
        list.retain(|d| d["artifactType"].as_str() == Some(t));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": list,
    });
    let mut resp = (StatusCode::OK, index.to_string()).into_response();
    let h = resp.headers_mut();
    set(h, "content-type", OCI_INDEX);
    if filter.is_some() {
        set(h, "oci-filters-applied", "artifactType");
    }
    Ok(resp)
}
