//! An MVCC key-value store with revisions and watch: embedded (redb) and etcd backends.
//!
//! The model is etcd v3's: one global revision that every write increments, each key
//! carrying `create_revision`, `mod_revision` and `version`; watches deliver every event in
//! revision order, optionally replaying history from a past revision; compaction forgets
//! history older than a revision, after which reads and watches from before it fail with
//! [`Error::Compacted`] (the API server answers 410 Gone).

mod codec;
mod commit;
mod embedded;
mod etcd;
mod wal;
mod writer;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;

/// Largest value accepted, like etcd's default request limit (1.5 MiB).
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// One key's state at some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last write to this key.
    pub mod_revision: i64,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A committed change. For a delete, `kv` holds the key, an empty value and
/// `mod_revision` = the revision of the deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// A range read: all keys starting with `prefix`, in key order.
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    pub prefix: String,
    /// Return at most this many keys (0 = no limit).
    pub limit: usize,
    /// Continue token from a previous page: only keys after it are returned.
    pub continue_after: Option<String>,
    /// Read at this revision (0 = current). Pass the revision of the first page to
    /// get a consistent listing across pages.
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The revision the read was served at.
    pub revision: i64,
    /// Set when more keys follow: pass it as `continue_after` (with `revision`).
    pub continue_token: Option<String>,
}

/// Result of a write with an optional compare-and-swap precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    Done(T),
    /// The precondition failed (or, for a delete, the key does not exist);
    /// `current` is the key's present state.
    Conflict {
        current: Option<KeyValue>,
    },
}

impl<T> Outcome<T> {
    pub fn done(self) -> Option<T> {
        match self {
            Outcome::Done(t) => Some(t),
            Outcome::Conflict { .. } => None,
        }
    }
}

/// What a delete removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub prev_kv: KeyValue,
    /// Revision of the deletion.
    pub revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("revision {requested} has been compacted (compacted up to {compact_revision})")]
    Compacted {
        requested: i64,
        compact_revision: i64,
    },
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("value of {size} bytes for key {key:?} exceeds the limit of {limit} bytes")]
    TooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
    #[error("store spec {0:?}: expected \"embedded\" or \"etcd://HOST:PORT\"")]
    InvalidSpec(String),
    #[error("store is closed")]
    Closed,
    #[error("store backend: {0}")]
    Backend(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Events of one watch, in revision order. Ends after an error.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// The store interface shared by both backends.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Current state of `key` (None if absent).
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys under a prefix, with paging and optional historical revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;
    /// Put `value` at `key`. With `expected_mod_revision = Some(r)` the write happens only if
    /// the key's mod_revision is `r` (0 = the key must not exist).
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<Outcome<KeyValue>>;
    /// Delete `key`, optionally only if its mod_revision is the expected one.
    /// A missing key yields `Conflict { current: None }`.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<Outcome<Deleted>>;
    /// Events under `prefix` from `from_revision` (0 = from now on), history then live.
    /// A compacted start revision arrives as a first item `Err(Error::Compacted)`.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;
    /// Forget history before `revision`.
    async fn compact(&self, revision: i64) -> Result<()>;
    /// The latest committed revision.
    async fn current_revision(&self) -> Result<i64>;
}

/// Open a store from a spec: `"embedded"` (a redb file under `data_dir`) or
/// `"etcd://HOST:PORT"`.
pub async fn open(spec: &str, data_dir: &Path) -> Result<Arc<dyn Store>> {
    if spec == "embedded" {
        let store = EmbeddedStore::open(data_dir)?;
        return Ok(Arc::new(store));
    }
    if let Some(addr) = spec.strip_prefix("etcd://") {
        let valid = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(Error::InvalidSpec(spec.to_string()));
        }
        let store = EtcdStore::connect(addr).await?;
        return Ok(Arc::new(store));
    }
    Err(Error::InvalidSpec(spec.to_string()))
}

/// The smallest key greater than every key starting with `prefix` (empty = unbounded),
/// as etcd computes range ends.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

pub(crate) fn check_value_size(key: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::TooLarge {
            key: key.to_string(),
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// The key just after `key` in byte order: where a continued range starts.
pub(crate) fn key_after(key: &str) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(0);
    k
}
