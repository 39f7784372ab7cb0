//! From a request to an operation: authentication, the bucket and key (path or virtual-host
//! style), and the method plus sub-resource (`?uploads`, `?tagging`, …) that name the
//! operation. Operations yun does not build answer 501 NotImplemented.

use std::sync::Arc;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response};

use crate::error::{Code, S3Error, S3Result};
use crate::server::State;
use crate::sigv4::{self, Auth};
use crate::Body;

/// One request, parsed: what every operation gets.
pub struct Req {
    pub parts: Parts,
    pub auth: Auth,
    pub bucket: String,
    pub key: String,
    pub query: Vec<(String, String)>,
}

impl Req {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sub-resources of S3 that yun does not build: any of them makes the request 501.
const NOT_BUILT: &[&str] = &[
    "acl",
    "policy",
    "policyStatus",
    "cors",
    "lifecycle",
    "website",
    "logging",
    "notification",
    "replication",
    "encryption",
    "object-lock",
    "legal-hold",
    "retention",
    "restore",
    "select",
    "torrent",
    "accelerate",
    "analytics",
    "inventory",
    "metrics",
    "ownershipControls",
    "publicAccessBlock",
    "requestPayment",
    "intelligent-tiering",
    "attributes",
    "renameObject",
];

pub fn xml_response(body: String) -> Response<Body> {
    let mut r = Response::new(crate::full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    r
}

/// The bucket and key a request addresses.
fn locate(parts: &Parts, domain: Option<&str>) -> (String, String) {
    let path = String::from_utf8_lossy(&sigv4::percent_decode(parts.uri.path())).into_owned();
    let path = path.strip_prefix('/').unwrap_or(&path);
    if let Some(domain) = domain {
        let host = parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if let Some(bucket) = host.strip_suffix(domain).and_then(|b| b.strip_suffix('.')) {
            if !bucket.is_empty() {
                return (bucket.to_string(), path.to_string());
            }
        }
    }
    match path.split_once('/') {
        Some((b, k)) => (b.to_string(), k.to_string()),
        None => (path.to_string(), String::new()),
    }
}

pub async fn dispatch(state: &Arc<State>, req: Request<Incoming>) -> S3Result<Response<Body>> {
    let (parts, body) = req.into_parts();
    let auth = sigv4::authenticate(&parts, &state.credentials, SystemTime::now())?;
    let (bucket, key) = locate(&parts, state.config.domain.as_deref());
    let query = sigv4::query_pairs(parts.uri.query().unwrap_or(""));
    tracing::debug!("s3: {} {} by {}", parts.method, parts.uri, auth.access_key);
    let r = Req {
        parts,
        auth,
        bucket,
        key,
        query,
    };
    if let Some(sub) = NOT_BUILT.iter().find(|s| r.has(s)) {
        return Err(S3Error::not_implemented(&format!(
            "the ?{sub} sub-resource"
        )));
    }
    let m = r.parts.method.clone();
    if r.bucket.is_empty() {
        return match m {
            Method::GET => crate::list::list_buckets(state),
            _ => Err(S3Error::new(
                Code::MethodNotAllowed,
                "The specified method is not allowed against this resource.",
            )),
        };
    }
    if r.key.is_empty() {
        return match m {
            Method::GET if r.has("location") => crate::bucket::location(state, &r),
            Method::GET if r.has("versioning") => crate::bucket::get_versioning(state, &r),
            Method::GET if r.has("versions") => crate::list::list_versions(state, &r),
            Method::GET if r.has("uploads") => crate::multipart::list_uploads(state, &r),
            Method::GET if r.has("tagging") => Err(S3Error::not_implemented("bucket tagging")),
            Method::GET if r.q("list-type") == Some("2") => crate::list::list_objects(state, &r, 2),
            Method::GET => crate::list::list_objects(state, &r, 1),
            Method::HEAD => crate::bucket::head(state, &r),
            Method::PUT if r.has("versioning") => {
                crate::bucket::put_versioning(state, &r, body).await
            }
            Method::PUT if r.query.is_empty() => crate::bucket::create(state, &r, body).await,
            Method::DELETE if r.query.is_empty() => crate::bucket::delete(state, &r),
            Method::POST if r.has("delete") => crate::delete::delete_objects(state, &r, body).await,
            _ => Err(S3Error::not_implemented(&format!(
                "{m} on a bucket with this query"
            ))),
        };
    }
    crate::store::check_key(&r.key)?;
    match m {
        Method::GET if r.has("tagging") => crate::delete::get_tagging(state, &r),
        Method::PUT if r.has("tagging") => crate::delete::put_tagging(state, &r, body).await,
        Method::DELETE if r.has("tagging") => crate::delete::delete_tagging(state, &r).await,
        Method::GET if r.has("uploadId") => crate::multipart::list_parts(state, &r),
        Method::PUT if r.has("uploadId") => crate::multipart::upload_part(state, &r, body).await,
        Method::POST if r.has("uploads") => crate::multipart::create(state, &r),
        Method::POST if r.has("uploadId") => crate::multipart::complete(state, &r, body).await,
        Method::DELETE if r.has("uploadId") => crate::multipart::abort(state, &r),
        Method::GET | Method::HEAD => crate::object::get(state, &r).await,
        Method::PUT if r.header("x-amz-copy-source").is_some() => {
            crate::copy::copy(state, &r).await
        }
        Method::PUT => crate::object::put(state, &r, body).await,
        Method::DELETE => crate::delete::delete(state, &r).await,
        _ => Err(S3Error::not_implemented(&format!(
            "{m} on an object with this query"
        ))),
    }
}
