//! S3's error codes, the HTTP status each one goes with, and the XML error body
//! (`<Error><Code/><Message/><Resource/><RequestId/></Error>`).

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::xml::escape;
use crate::Body;

/// The S3 error codes yun answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    AccessDenied,
    AuthorizationHeaderMalformed,
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooLarge,
    EntityTooSmall,
    IncompleteBody,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidBucketName,
    InvalidDigest,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    KeyTooLongError,
    MalformedXML,
    MetadataTooLarge,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NotImplemented,
    NotModified,
    PreconditionFailed,
    RequestHeaderSectionTooLarge,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
    SlowDown,
    XAmzContentSHA256Mismatch,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            AccessDenied => "AccessDenied",
            AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            BadDigest => "BadDigest",
            BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            BucketNotEmpty => "BucketNotEmpty",
            EntityTooLarge => "EntityTooLarge",
            EntityTooSmall => "EntityTooSmall",
            IncompleteBody => "IncompleteBody",
            InternalError => "InternalError",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            InvalidArgument => "InvalidArgument",
            InvalidBucketName => "InvalidBucketName",
            InvalidDigest => "InvalidDigest",
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            InvalidRange => "InvalidRange",
            InvalidRequest => "InvalidRequest",
            KeyTooLongError => "KeyTooLongError",
            MalformedXML => "MalformedXML",
            MetadataTooLarge => "MetadataTooLarge",
            MethodNotAllowed => "MethodNotAllowed",
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            NoSuchUpload => "NoSuchUpload",
            NoSuchVersion => "NoSuchVersion",
            NotImplemented => "NotImplemented",
            NotModified => "NotModified",
            PreconditionFailed => "PreconditionFailed",
            RequestHeaderSectionTooLarge => "RequestHeaderSectionTooLarge",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            SlowDown => "SlowDown",
            XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    pub fn status(self) -> StatusCode {
        use Code::*;
        match self {
            AccessDenied | InvalidAccessKeyId | RequestTimeTooSkewed | SignatureDoesNotMatch => {
                StatusCode::FORBIDDEN
            }
            BucketAlreadyOwnedByYou | BucketNotEmpty => StatusCode::CONFLICT,
            NoSuchBucket | NoSuchKey | NoSuchUpload | NoSuchVersion => StatusCode::NOT_FOUND,
            InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            NotImplemented => StatusCode::NOT_IMPLEMENTED,
            NotModified => StatusCode::NOT_MODIFIED,
            PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            InvalidRange => StatusCode::RANGE_NOT_SATISFIABLE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SlowDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answered to the client: a code, a message and what it was about.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub code: Code,
    pub message: String,
    /// Extra elements of the body (`Key`, `BucketName`, `UploadId`, …).
    pub extra: Vec<(&'static str, String)>,
    /// Response headers that go with the error (`x-amz-delete-marker`, …).
    pub headers: Vec<(&'static str, String)>,
}

pub type S3Result<T> = Result<T, S3Error>;

impl S3Error {
    pub fn new(code: Code, message: impl Into<String>) -> S3Error {
        S3Error {
            code,
            message: message.into(),
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> S3Error {
        self.extra.push((name, value.into()));
        self
    }

    pub fn no_such_bucket(bucket: &str) -> S3Error {
        S3Error::new(Code::NoSuchBucket, "The specified bucket does not exist")
            .with("BucketName", bucket)
    }

    pub fn no_such_key(key: &str) -> S3Error {
        S3Error::new(Code::NoSuchKey, "The specified key does not exist.").with("Key", key)
    }

    pub fn internal(e: impl std::fmt::Display) -> S3Error {
        tracing::error!("s3: internal error: {e}");
        S3Error::new(
            Code::InternalError,
            "We encountered an internal error. Please try again.",
        )
    }

    pub fn not_implemented(what: &str) -> S3Error {
        S3Error::new(
            Code::NotImplemented,
            format!("{what} is not implemented by yun"),
        )
    }

    /// The response: XML body (none for HEAD and 304), with the request id and resource.
    pub fn into_response(self, resource: &str, request_id: &str, head: bool) -> Response<Body> {
        let status = self.code.status();
        let mut body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>",
            self.code.as_str(),
            escape(&self.message)
        );
        for (name, value) in &self.extra {
            body.push_str(&format!("<{name}>{}</{name}>", escape(value)));
        }
        body.push_str(&format!(
            "<Resource>{}</Resource><RequestId>{}</RequestId></Error>",
            escape(resource),
            request_id
        ));
        let no_body = head || status == StatusCode::NOT_MODIFIED;
        let mut resp = Response::new(if no_body {
            crate::empty()
        } else {
            crate::full(Bytes::from(body))
        });
        *resp.status_mut() = status;
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        if !no_body {
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        }
        resp
    }
}

impl From<std::io::Error> for S3Error {
    fn from(e: std::io::Error) -> S3Error {
        S3Error::internal(e)
    }
}
