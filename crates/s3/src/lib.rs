//! S3-compatible object storage: buckets, objects with metadata and tags, versioning,
//! multipart uploads, listing, and AWS Signature Version 4 (header, presigned URLs and
//! `aws-chunked` streaming bodies), over a storage engine of our own on the local filesystem
//! (layout in [`store`]). Path-style addressing (`/bucket/key`), and virtual-host style
//! (`bucket.DOMAIN`) when a domain is configured.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let mut config = yun_s3::Config::new("127.0.0.1:9000".parse()?, "/var/lib/yun-s3");
//! config.credentials.push(("access".into(), "secret-key".into()));
//! yun_s3::serve(config).await
//! # }
//! ```

mod body;
mod bucket;
mod copy;
mod delete;
mod error;
mod list;
mod multipart;
mod object;
mod route;
mod scan;
mod server;
mod sigv4;
mod store;
mod time;
mod xml;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::BodyExt;

pub use server::{serve, spawn, ServerHandle};

/// The body type of every response.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// S3 allows objects up to 5 TiB.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 5 << 40;
/// Requests one client (remote IP) may have in flight; more are answered 503 SlowDown.
pub const DEFAULT_MAX_REQUESTS_PER_CLIENT: usize = 128;
/// The request line and headers together (S3 allows 8 KiB of headers, plus the line).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 << 10;

/// How to run the S3 server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port, see [`spawn`]).
    pub addr: SocketAddr,
    /// Storage directory (created if missing).
    pub root: PathBuf,
    /// Access key id → secret access key pairs; every request must be signed with one.
    pub credentials: Vec<(String, String)>,
    /// The region answered by GetBucketLocation (signatures are accepted for any region).
    pub region: String,
    /// Largest object (and part) accepted, in bytes.
    pub max_object_size: u64,
    /// Requests in flight per remote IP.
    pub max_requests_per_client: usize,
    /// Largest request head (line and headers) accepted.
    pub max_header_bytes: usize,
    /// When set, `BUCKET.DOMAIN` hosts address a bucket (virtual-host style).
    pub domain: Option<String>,
}

impl Config {
    /// No credentials yet (add some: anonymous requests are refused), region us-east-1,
    /// default limits.
    pub fn new(addr: SocketAddr, root: impl Into<PathBuf>) -> Config {
        Config {
            addr,
            root: root.into(),
            credentials: Vec::new(),
            region: "us-east-1".to_string(),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            max_requests_per_client: DEFAULT_MAX_REQUESTS_PER_CLIENT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            domain: None,
        }
    }
}
