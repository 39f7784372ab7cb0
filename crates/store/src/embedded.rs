//! The embedded backend: one redb file, laid out as etcd keeps its data.
//!
//! * `log`: revision → event (with the previous value), the history that watches replay
//!   and historical reads undo;
//! * `kvs`: key → current KeyValue;
//! * `meta`: current and compacted revision;
//!
//! plus a write-ahead log (`store.wal`) for the writes made since the last redb commit, which
//! readers see through the in-memory `Pending` overlay (see `writer.rs`). redb commits are
//! atomic and the log is replayed on open, so a killed process reopens at its last
//! acknowledged write.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use crate::codec::{decode_event, decode_kv};
use crate::commit::{Committer, Flusher};
use crate::wal::Wal;
use crate::writer::{recover, Writer};
use crate::{
    check_value_size, key_after, prefix_end, Deleted, Error, Event, KeyValue, Outcome,
    RangeRequest, RangeResponse, Result, Store, WatchStream,
};

pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
pub(crate) const KVS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kvs");
pub(crate) const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");

/// Live events buffered per watcher before it falls back to replaying the log.
const BROADCAST_CAPACITY: usize = 8192;
/// Events queued per watch for its consumer.
const WATCH_BUFFER: usize = 128;
/// Events read from the log per read transaction during replay.
const REPLAY_CHUNK: usize = 1024;

pub(crate) fn backend<E: std::fmt::Display>(e: E) -> Error {
    Error::Backend(e.to_string())
}

pub(crate) enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        expected: Option<i64>,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
    Compact {
        revision: i64,
    },
}

pub(crate) enum OpResult {
    Put(Outcome<KeyValue>),
    Delete(Outcome<Deleted>),
    Compacted,
}

/// Acknowledged writes not yet committed to redb, newest state per key and every event.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) keys: BTreeMap<String, Option<KeyValue>>,
    pub(crate) events: Vec<Arc<Event>>,
}

pub(crate) struct Shared {
    pub(crate) db: Database,
    /// Latest published revision (changes only under the `pending` write lock).
    pub(crate) revision: AtomicI64,
    /// Readers take this lock while they open their redb read transaction, so the snapshot
    /// and the overlay they combine belong together.
    pub(crate) pending: RwLock<Pending>,
}

impl Shared {
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.read().expect("pending lock").events.len()
    }
}

/// A consistent view: a redb snapshot plus the overlay entries a read needs.
struct View {
    txn: redb::ReadTransaction,
    revision: i64,
    keys: Vec<(String, Option<KeyValue>)>,
    events: Vec<Arc<Event>>,
}

impl Shared {
    fn view(&self, start: &[u8], end: &[u8], events_from: Option<i64>) -> Result<View> {
        let pending = self.pending.read().expect("pending lock");
        let txn = self.db.begin_read().map_err(backend)?;
        let keys = pending_in_range(&pending.keys, start, end)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let events = match events_from {
            Some(from) => pending
                .events
                .iter()
                .filter(|e| e.revision() >= from)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        Ok(View {
            txn,
            revision: self.revision.load(Ordering::SeqCst),
            keys,
            events,
        })
    }
}

fn in_range(k: &[u8], start: &[u8], end: &[u8]) -> bool {
    k >= start && (end.is_empty() || k < end)
}

/// The overlay's entries in `[start, end)` (`end` empty: no upper bound). A B-tree range when
/// both bounds are text (keys are, and str order is byte order), so a GET does not walk every
/// pending write; a scan otherwise.
fn pending_in_range<'a>(
    keys: &'a BTreeMap<String, Option<KeyValue>>,
    start: &'a [u8],
    end: &'a [u8],
) -> Box<dyn Iterator<Item = (&'a String, &'a Option<KeyValue>)> + 'a> {
    use std::ops::Bound;
    match (std::str::from_utf8(start), std::str::from_utf8(end)) {
        (Ok(s), Ok(e)) if e.is_empty() || s <= e => {
            let upper = if e.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Excluded(e)
            };
            Box::new(keys.range::<str, _>((Bound::Included(s), upper)))
        }
        _ => Box::new(
            keys.iter()
                .filter(move |(k, _)| in_range(k.as_bytes(), start, end)),
        ),
    }
}

pub struct EmbeddedStore {
    shared: Arc<Shared>,
    committer: Arc<Committer>,
    events: broadcast::Sender<Arc<Event>>,
    flusher: Option<Flusher>,
}

/// The most redb keeps of the file in memory.
const CACHE_BYTES: usize = 16 << 20;

impl EmbeddedStore {
    /// Open (or create) `data_dir/store.redb` and replay `data_dir/store.wal`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::Backend(format!("create {}: {e}", data_dir.display())))?;
        // The store holds every Secret: its directory and files are the owner's only, also
        // when an earlier version left them readable.
        restrict(data_dir, 0o700)?;
        let path = data_dir.join("store.redb");
        create_private(&path)?;
        // redb would cache up to 1 GiB of pages by default, so the server's memory would grow
        // with the file; the kernel's page cache keeps the rest of the file close at hand.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| Error::Backend(format!("open {}: {e}", path.display())))?;
        let (revision, compact) = {
            let txn = db.begin_write().map_err(backend)?;
            let revs = {
                let mut meta = txn.open_table(META).map_err(backend)?;
                txn.open_table(KVS).map_err(backend)?;
                txn.open_table(LOG).map_err(backend)?;
                let rev = meta.get("revision").map_err(backend)?.map(|g| g.value());
                let compact = meta.get("compact").map_err(backend)?.map(|g| g.value());
                if rev.is_none() {
                    meta.insert("revision", 1).map_err(backend)?;
                    meta.insert("compact", 0).map_err(backend)?;
                }
                (rev.unwrap_or(1), compact.unwrap_or(0))
            };
            txn.commit().map_err(backend)?;
            revs
        };
        let wal_path = data_dir.join("store.wal");
        let (wal, recovered) = Wal::open(&wal_path, revision)?;
        let revision = recover(&db, recovered, revision)?;
        let shared = Arc::new(Shared {
            db,
            revision: AtomicI64::new(revision),
            pending: RwLock::new(Pending::default()),
        });
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let writer = Writer::new(shared.clone(), events.clone(), wal, revision, compact);
        let committer = Arc::new(Committer::new(writer));
        let flusher = Flusher::start(committer.clone()).map_err(backend)?;
        Ok(EmbeddedStore {
            shared,
            committer,
            events,
            flusher: Some(flusher),
        })
    }

    async fn submit(&self, op: Op) -> Result<OpResult> {
        self.committer.submit(op).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(backend)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // No request is in flight (they borrow the store). Stopping the flusher first
        // leaves the writer to `close`, whose redb commit makes reopening replay nothing;
        // the database file is released with the last `Arc<Shared>`.
        self.flusher.take();
        self.committer.close();
    }
}

pub(crate) fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::Backend(format!("chmod {mode:o} {}: {e}", path.display())))
}

/// Create `path` empty with mode 0600 unless it exists, and make it 0600 if it does: so the
/// file is never readable by others, not even between its creation and a chmod.
pub(crate) fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Backend(format!("open {}: {e}", path.display())))?;
    restrict(path, 0o600)
}

/// Current and compacted revision as seen by a read transaction.
fn read_meta(txn: &redb::ReadTransaction) -> Result<(i64, i64)> {
    let meta = txn.open_table(META).map_err(backend)?;
    let get = |name: &str| -> Result<i64> {
        Ok(meta.get(name).map_err(backend)?.map_or(0, |g| g.value()))
    };
    Ok((get("revision")?, get("compact")?))
}

fn read_range(shared: &Shared, req: RangeRequest) -> Result<RangeResponse> {
    let prefix = req.prefix.as_bytes().to_vec();
    let start = match &req.continue_after {
        Some(after) => key_after(after).max(prefix.clone()),
        None => prefix.clone(),
    };
    let end = prefix_end(&prefix);
    let historical_from = (req.revision > 0).then_some(req.revision + 1);
    let view = shared.view(&start, &end, historical_from)?;
    let (_, compact) = read_meta(&view.txn)?;
    let current = view.revision;
    let rev = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if rev > current {
        return Err(Error::FutureRevision {
            requested: rev,
            current,
        });
    }
    if rev < compact {
        return Err(Error::Compacted {
            requested: rev,
            compact_revision: compact,
        });
    }
    let historical = rev < current;
    let kvs = view.txn.open_table(KVS).map_err(backend)?;
    let iter = if end.is_empty() {
        kvs.range(start.as_slice()..).map_err(backend)?
    } else {
        kvs.range(start.as_slice()..end.as_slice())
            .map_err(backend)?
    };
    let wanted = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit + 1
    };
    // Enough committed keys that, after the overlay removes some, `wanted` remain.
    let read_at_most = if historical {
        usize::MAX
    } else {
        wanted.saturating_add(view.keys.len())
    };
    let mut state = BTreeMap::new();
    for entry in iter.take(read_at_most) {
        let (_, v) = entry.map_err(backend)?;
        let kv = decode_kv(v.value())?;
        state.insert(kv.key.clone(), kv);
    }
    let last_read = state.keys().next_back().cloned();
    let complete = state.len() < read_at_most;
    for (key, value) in view.keys {
        // Beyond the last committed key read, an overlay key may hide an unread one.
        if !complete && last_read.as_ref().is_some_and(|l| key > *l) {
            continue;
        }
        match value {
            Some(kv) => state.insert(key, kv),
            None => state.remove(&key),
        };
    }
    if historical {
        // Put every key written after `rev` back to the value its first later event replaced.
        let log = view.txn.open_table(LOG).map_err(backend)?;
        let mut seen = HashSet::new();
        let mut undo = |ev: &Event| {
            if in_range(ev.kv.key.as_bytes(), &start, &end) && seen.insert(ev.kv.key.clone()) {
                match &ev.prev_kv {
                    Some(prev) => state.insert(ev.kv.key.clone(), prev.clone()),
                    None => state.remove(&ev.kv.key),
                };
            }
        };
        for entry in log.range(rev + 1..).map_err(backend)? {
            let (_, v) = entry.map_err(backend)?;
            undo(&decode_event(v.value())?);
        }
        for ev in &view.events {
            undo(ev);
        }
    }
    let mut out: Vec<KeyValue> = state.into_values().take(wanted).collect();
    let continue_token = if req.limit > 0 && out.len() > req.limit {
        out.truncate(req.limit);
        out.last().map(|kv| kv.key.clone())
    } else {
        None
    };
    Ok(RangeResponse {
        kvs: out,
        revision: rev,
        continue_token,
    })
}

/// Events from `from` on (up to a chunk), committed and pending, or Compacted.
fn read_log(shared: &Shared, from: i64) -> Result<Vec<Event>> {
    let view = shared.view(&[], &[], Some(from))?;
    let (_, compact) = read_meta(&view.txn)?;
    if from < compact {
        return Err(Error::Compacted {
            requested: from,
            compact_revision: compact,
        });
    }
    let log = view.txn.open_table(LOG).map_err(backend)?;
    let mut out: Vec<Event> = Vec::new();
    for entry in log.range(from..).map_err(backend)?.take(REPLAY_CHUNK) {
        let (_, v) = entry.map_err(backend)?;
        out.push(decode_event(v.value())?);
    }
    let mut next = out.last().map_or(from, |e| e.revision() + 1);
    for ev in view.events {
        if out.len() >= REPLAY_CHUNK {
            break;
        }
        if ev.revision() == next {
            out.push((*ev).clone());
            next += 1;
        }
    }
    Ok(out)
}

/// Deliver logged events after `*last` that match `prefix`, advancing `*last`.
/// Returns false when the watch is over (receiver gone, store closed or error sent).
async fn replay(
    shared: &Weak<Shared>,
    prefix: &str,
    last: &mut i64,
    tx: &tokio::sync::mpsc::Sender<Result<Event>>,
) -> bool {
    loop {
        let Some(strong) = shared.upgrade() else {
            return false;
        };
        let from = *last + 1;
        let chunk = tokio::task::spawn_blocking(move || read_log(&strong, from))
            .await
            .map_err(backend)
            .and_then(|r| r);
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        };
        if chunk.is_empty() {
            return true;
        }
        for ev in chunk {
            *last = ev.revision();
            if ev.kv.key.starts_with(prefix) && tx.send(Ok(ev)).await.is_err() {
                return false;
            }
        }
    }
}

async fn watch_task(
    shared: Weak<Shared>,
    mut live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    mut last: i64,
    tx: tokio::sync::mpsc::Sender<Result<Event>>,
) {
    if !replay(&shared, &prefix, &mut last, &tx).await {
        return;
    }
    loop {
        match live.recv().await {
            Ok(ev) => {
                let rev = ev.revision();
                if rev <= last {
                    continue;
                }
                if rev != last + 1 && !replay(&shared, &prefix, &mut last, &tx).await {
                    return;
                }
                if rev <= last {
                    continue;
                }
                last = rev;
                if ev.kv.key.starts_with(&prefix) && tx.send(Ok((*ev).clone())).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !replay(&shared, &prefix, &mut last, &tx).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // A point read runs here, on the caller's thread: it reads a page or two, mostly from
        // redb's cache, in microseconds, while handing it to the blocking pool (as ranges are)
        // cost two thread wake-ups per GET, the largest part of the server's CPU per GET in
        // a perf profile (context switches and futex wake-ups).
        let view = self.shared.view(key.as_bytes(), &key_after(key), None)?;
        if let Some((_, kv)) = view.keys.into_iter().next() {
            return Ok(kv);
        }
        let kvs = view.txn.open_table(KVS).map_err(backend)?;
        let found = kvs.get(key.as_bytes()).map_err(backend)?;
        found.map(|g| decode_kv(g.value())).transpose()
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.read(move |shared| read_range(shared, req)).await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<Outcome<KeyValue>> {
        check_value_size(key, &value)?;
        let op = Op::Put {
            key: key.to_string(),
            value,
            expected: expected_mod_revision,
        };
        match self.submit(op).await? {
            OpResult::Put(outcome) => Ok(outcome),
            _ => Err(Error::Backend("unexpected writer reply".into())),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<Outcome<Deleted>> {
        let op = Op::Delete {
            key: key.to_string(),
            expected: expected_mod_revision,
        };
        match self.submit(op).await? {
            OpResult::Delete(outcome) => Ok(outcome),
            _ => Err(Error::Backend("unexpected writer reply".into())),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        // Subscribe before reading where history ends, so no event falls between the two;
        // duplicates are skipped by revision.
        let live = self.events.subscribe();
        let last = if from_revision <= 0 {
            self.current_revision().await?
        } else {
            from_revision - 1
        };
        // A watcher whose consumer is slow holds at most this many events here (each with its
        // previous value); beyond them the task waits, and catches up from the log later.
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(watch_task(
            Arc::downgrade(&self.shared),
            live,
            prefix.to_string(),
            last,
            tx,
        ));
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }
}
