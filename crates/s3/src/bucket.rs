//! Bucket operations: create, delete, head, location, versioning.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use crate::error::{Code, S3Error, S3Result};
use crate::route::{xml_response, Req};
use crate::server::State;
use crate::store::Versioning;
use crate::Body;

/// Runs filesystem work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> S3Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(S3Error::internal)?
}

pub async fn create(state: &Arc<State>, r: &Req, body: Incoming) -> S3Result<Response<Body>> {
    crate::store::check_bucket_name(&r.bucket)?;
    // The body may hold a CreateBucketConfiguration (a location constraint): read, not needed.
    let doc = crate::body::read_small(&r.parts, body, &r.auth.payload, 64 << 10).await?;
    if !doc.iter().all(|b| b.is_ascii_whitespace())
        && crate::xml::parse(&String::from_utf8_lossy(&doc)).is_none()
    {
        return Err(S3Error::new(
            Code::MalformedXML,
            "The XML you provided was not well-formed",
        ));
    }
    let st = state.clone();
    let name = r.bucket.clone();
    blocking(move || st.store.create_bucket(&name)).await?;
    let mut resp = Response::new(crate::empty());
    resp.headers_mut().insert(
        "location",
        hyper::header::HeaderValue::from_str(&format!("/{}", r.bucket))
            .map_err(S3Error::internal)?,
    );
    Ok(resp)
}

pub fn delete(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let uploads = std::fs::read_dir(b.uploads_dir())?.next().is_some();
    if uploads {
        return Err(S3Error::new(
            Code::BucketNotEmpty,
            "The bucket you tried to delete has multipart uploads in progress",
        )
        .with("BucketName", &r.bucket));
    }
    state.store.delete_bucket(&r.bucket)?;
    let mut resp = Response::new(crate::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

pub fn head(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    state.store.bucket(&r.bucket)?;
    let mut resp = Response::new(crate::empty());
    if let Ok(v) = hyper::header::HeaderValue::from_str(&state.config.region) {
        resp.headers_mut().insert("x-amz-bucket-region", v);
    }
    Ok(resp)
}

pub fn location(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    state.store.bucket(&r.bucket)?;
    // us-east-1 is answered as an empty constraint, as S3 does.
    let region = if state.config.region == "us-east-1" {
        String::new()
    } else {
        crate::xml::escape(&state.config.region)
    };
    Ok(xml_response(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{region}</LocationConstraint>"
    )))
}

pub fn get_versioning(state: &Arc<State>, r: &Req) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let status = match b.versioning() {
        Versioning::Unversioned => String::new(),
        Versioning::Enabled => "<Status>Enabled</Status>".to_string(),
        Versioning::Suspended => "<Status>Suspended</Status>".to_string(),
    };
    Ok(xml_response(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{status}</VersioningConfiguration>"
    )))
}

pub async fn put_versioning(
    state: &Arc<State>,
    r: &Req,
    body: Incoming,
) -> S3Result<Response<Body>> {
    let b = state.store.bucket(&r.bucket)?;
    let doc = crate::body::read_small(&r.parts, body, &r.auth.payload, 64 << 10).await?;
    let malformed = || {
        S3Error::new(
            Code::MalformedXML,
            "The XML you provided was not well-formed",
        )
    };
    let root = crate::xml::parse(&String::from_utf8_lossy(&doc)).ok_or_else(malformed)?;
    if root.name != "VersioningConfiguration" {
        return Err(malformed());
    }
    if root.child_text("MfaDelete") == Some("Enabled") {
        return Err(S3Error::not_implemented("MFA delete"));
    }
    let v = match root.child_text("Status") {
        Some("Enabled") => Versioning::Enabled,
        Some("Suspended") => Versioning::Suspended,
        _ => return Err(malformed()),
    };
    let st = state.clone();
    blocking(move || st.store.set_versioning(&b, v)).await?;
    Ok(Response::new(crate::empty()))
}
