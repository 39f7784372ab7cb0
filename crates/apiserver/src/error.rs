//! Errors as Kubernetes `Status` objects (kind Status, apiVersion v1).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A failed request: HTTP code, the Status `reason`, a message and optional details.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// One invalid field: its path (e.g. `spec.containers`) and what is wrong.
#[derive(Debug, Clone)]
pub struct Cause {
    pub field: String,
    pub kind: &'static str,
    pub message: String,
}

impl Cause {
    pub fn required(field: &str) -> Self {
        Cause {
            field: field.into(),
            kind: "FieldValueRequired",
            message: "Required value".into(),
        }
    }
    /// A value outside an enumeration, listed as kube lists the supported ones.
    pub fn unsupported(field: &str, v: &serde_json::Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            field: field.into(),
            kind: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Cause {
            field: field.into(),
            kind: "FieldValueInvalid",
            message: message.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn not_found(resource: &str, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"));
        e.details = Some(json!({"name": name, "kind": resource}));
        e
    }
    pub fn path_not_found(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }
    pub fn already_exists(resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        );
        e.details = Some(json!({"name": name, "kind": resource}));
        e
    }
    pub fn conflict(resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
        e.details = Some(json!({"name": name, "kind": resource}));
        e
    }
    /// 403 Forbidden for `resource` (as kube qualifies it, e.g. `deployments.apps`) `name`.
    pub fn forbidden(resource: &str, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            403,
            "Forbidden",
            format!("{resource} \"{name}\" is forbidden: {why}"),
        );
        let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
        e.details = Some(json!({"name": name, "group": group, "kind": kind}));
        e
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    /// kube-apiserver's answer to a read or watch at a revision the store has not reached
    /// (`storage.NewTooLargeResourceVersionError`): 504 Timeout, retry after a second.
    pub fn resource_version_too_large(requested: i64, current: i64) -> Self {
        let mut e = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        );
        e.details = Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }));
        e
    }
    /// kube-apiserver's 410 for a read or watch from before the last compaction.
    pub fn resource_version_too_old(requested: i64, compacted: i64) -> Self {
        Self::gone(format!(
            "too old resource version: {requested} ({compacted})"
        ))
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    /// 422 Invalid with one cause per bad field, as `kubectl` prints them.
    pub fn invalid(kind: &str, name: &str, group: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = if list.len() == 1 {
            format!("{kind} \"{name}\" is invalid: {}", list[0])
        } else {
            format!("{kind} \"{name}\" is invalid: [{}]", list.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.kind, "message": c.message, "field": c.field}))
            .collect();
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}));
        e
    }

    /// The same error with another message (keeping code, reason and details).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl From<yun_store::Error> for ApiError {
    fn from(e: yun_store::Error) -> Self {
        match e {
            yun_store::Error::Compacted {
                requested,
                compact_revision,
            } => ApiError::resource_version_too_old(requested, compact_revision),
            yun_store::Error::TooLarge { .. } => {
                ApiError::too_large(format!("Request entity too large: {e}"))
            }
            yun_store::Error::FutureRevision { requested, current } => {
                ApiError::resource_version_too_large(requested, current)
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
