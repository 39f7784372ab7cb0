//! Errors that callers of the runtime need to tell apart.
//!
//! Everything else travels as `anyhow::Error` with context; these variants are wrapped in it
//! and can be recovered with `err.downcast_ref::<yun_runtime::Error>()`.

use thiserror::Error;

/// A failure with a meaning a caller may act on (exit codes, HTTP statuses).
#[derive(Debug, Error)]
pub enum Error {
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("container \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("container \"{id}\" is {status}: {action} needs it {wanted}")]
    WrongState {
        id: String,
        status: String,
        action: &'static str,
        wanted: &'static str,
    },
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.' (not '.' or '..' alone)")]
    InvalidId(String),
}
