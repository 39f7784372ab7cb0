//! The embedded store's writer state, used by one group-commit leader at a time (`commit.rs`).
//!
//! Requests queued while the previous batch was syncing are applied together (group commit)
//! to one long-lived redb write transaction, their events appended to the write-ahead log
//! and synced, then published to the shared `Pending` overlay that readers merge over the
//! last redb commit — only then is anything acknowledged or broadcast to watchers. Once writes
//! have rested `FLUSH_EVERY` in the log (the flusher thread in `commit.rs`; or on compaction,
//! a full log, or close) the transaction is committed with
//! `Durability::Immediate`, the overlay cleared and the log restarted: the same split as
//! etcd's WAL and its batched bbolt commits, since a redb commit costs far more than a
//! log append.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::broadcast;

use crate::codec::{decode_kv, encode_event, encode_kv};
use crate::embedded::{backend, Op, OpResult, Shared, KVS, LOG, META};
use crate::wal::Wal;
use crate::{Deleted, Error, Event, EventKind, KeyValue, Outcome, Result};

/// Longest time between durable redb commits.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Age at which a leader commits to redb itself, on a caller's (runtime) thread, because the
/// flusher thread (which commits at `FLUSH_EVERY`) did not get to it.
const FLUSH_OVERDUE: Duration = Duration::from_millis(400);
/// Most events kept in the overlay before a redb commit.
const FLUSH_EVENTS: usize = 20_000;

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) wal: Wal,
    pub(crate) revision: i64,
    pub(crate) compact: i64,
    txn: Option<WriteTransaction>,
    /// When the open transaction took its first write: how long writes have rested in the log.
    opened: Instant,
    /// Set when the store can no longer guarantee durability; every later write fails.
    failed: Option<String>,
}

/// Apply events found in the write-ahead log after redb's durable revision, durably.
pub(crate) fn recover(db: &Database, events: Vec<Event>, revision: i64) -> Result<i64> {
    let Some(last) = events.last().map(|e| e.revision()) else {
        return Ok(revision);
    };
    tracing::info!(
        from = revision + 1,
        to = last,
        "store: replaying write-ahead log"
    );
    let mut txn = db.begin_write().map_err(backend)?;
    txn.set_durability(Durability::Immediate);
    {
        let mut meta = txn.open_table(META).map_err(backend)?;
        let mut kvs = txn.open_table(KVS).map_err(backend)?;
        let mut log = txn.open_table(LOG).map_err(backend)?;
        let mut buf = Vec::new();
        for ev in &events {
            match ev.kind {
                EventKind::Put => {
                    buf.clear();
                    encode_kv(&mut buf, &ev.kv);
                    kvs.insert(ev.kv.key.as_bytes(), buf.as_slice())
                        .map_err(backend)?;
                }
                EventKind::Delete => {
                    kvs.remove(ev.kv.key.as_bytes()).map_err(backend)?;
                }
            }
            log.insert(ev.revision(), encode_event(ev).as_slice())
                .map_err(backend)?;
        }
        meta.insert("revision", last).map_err(backend)?;
    }
    txn.commit().map_err(backend)?;
    Ok(last)
}

struct Applied {
    results: Vec<Result<OpResult>>,
    events: Vec<Event>,
    encoded: Vec<Vec<u8>>,
    compacted: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        events: broadcast::Sender<Arc<Event>>,
        wal: Wal,
        revision: i64,
        compact: i64,
    ) -> Self {
        Writer {
            shared,
            events,
            wal,
            revision,
            compact,
            txn: None,
            opened: Instant::now(),
            failed: None,
        }
    }

    /// Apply a batch of operations, make it durable and visible, and broadcast its events;
    /// the results are in the order of `ops`. Nothing is acknowledged before this returns.
    pub(crate) fn run_batch(&mut self, ops: &[&Op]) -> Vec<Result<OpResult>> {
        if let Some(why) = &self.failed {
            return ops
                .iter()
                .map(|_| Err(Error::Backend(why.clone())))
                .collect();
        }
        let applied = match self.apply(ops) {
            Ok(applied) => applied,
            Err(e) => {
                // Changes of earlier, acknowledged batches sit in the same transaction and in
                // the log; without a commit they would be lost here, so stop writing: a
                // restart recovers them from the log.
                self.fail(format!("store write failed: {e}"));
                return ops.iter().map(|_| Err(e.clone_msg())).collect();
            }
        };
        let payload: usize = applied.encoded.iter().map(|e| e.len() + 4).sum();
        let flush_now = applied.compacted || !self.wal.fits(payload);
        if !flush_now && !applied.encoded.is_empty() {
            let first_rev = applied.events[0].revision();
            if let Err(e) = self.wal.append(first_rev, &applied.encoded) {
                tracing::error!("store: {e}; committing to redb instead");
                self.publish(&applied.events);
                self.flush();
                return self.finish(applied);
            }
        }
        self.publish(&applied.events);
        if flush_now
            || self.shared.pending_len() >= FLUSH_EVENTS
            || self.opened.elapsed() >= FLUSH_OVERDUE
        {
            self.flush();
        }
        self.finish(applied)
    }

    /// Commit to redb if writes have waited in the log for `FLUSH_EVERY` (the flusher thread).
    pub(crate) fn flush_if_due(&mut self) {
        if self.txn.is_some() && self.opened.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    fn finish(&mut self, applied: Applied) -> Vec<Result<OpResult>> {
        for ev in applied.events {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(Arc::new(ev));
        }
        match &self.failed {
            Some(why) => applied
                .results
                .iter()
                .map(|_| Err(Error::Backend(why.clone())))
                .collect(),
            None => applied.results,
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!("{why}");
        self.failed = Some(why);
        self.txn = None;
    }

    /// Make applied events visible to readers.
    fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut pending = self.shared.pending.write().expect("pending lock");
        for ev in events {
            let state = match ev.kind {
                EventKind::Put => Some(ev.kv.clone()),
                EventKind::Delete => None,
            };
            pending.keys.insert(ev.kv.key.clone(), state);
            pending.events.push(Arc::new(ev.clone()));
        }
        self.shared.revision.store(self.revision, Ordering::SeqCst);
    }

    /// Commit the open transaction durably and clear the overlay and the log.
    pub(crate) fn flush(&mut self) {
        let Some(mut txn) = self.txn.take() else {
            return;
        };
        txn.set_durability(Durability::Immediate);
        if let Err(e) = txn.commit() {
            self.fail(format!("store commit failed: {e}"));
            return;
        }
        let mut pending = self.shared.pending.write().expect("pending lock");
        pending.keys.clear();
        pending.events.clear();
        drop(pending);
        self.wal.reset();
    }

    fn apply(&mut self, batch: &[&Op]) -> Result<Applied> {
        if self.txn.is_none() {
            self.txn = Some(self.shared.db.begin_write().map_err(backend)?);
            self.opened = Instant::now();
        }
        let txn = self.txn.as_ref().expect("open transaction");
        let mut meta = txn.open_table(META).map_err(backend)?;
        let mut kvs = txn.open_table(KVS).map_err(backend)?;
        let mut log = txn.open_table(LOG).map_err(backend)?;
        let mut out = Applied {
            results: Vec::with_capacity(batch.len()),
            events: Vec::new(),
            encoded: Vec::new(),
            compacted: false,
        };
        let mut buf = Vec::new();
        let mut revision = self.revision;
        let mut compact = self.compact;
        for op in batch {
            let current = match op {
                Op::Put { key, .. } | Op::Delete { key, .. } => {
                    match kvs.get(key.as_bytes()).map_err(backend)? {
                        Some(g) => Some(decode_kv(g.value())?),
                        None => None,
                    }
                }
                Op::Compact { .. } => None,
            };
            let cur_mod = current.as_ref().map_or(0, |c| c.mod_revision);
            let result = match op {
                Op::Put {
                    key,
                    value,
                    expected,
                } => {
                    if expected.is_some_and(|e| e != cur_mod) {
                        Ok(OpResult::Put(Outcome::Conflict { current }))
                    } else {
                        revision += 1;
                        let kv = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: current
                                .as_ref()
                                .map_or(revision, |c| c.create_revision),
                            mod_revision: revision,
                            version: current.as_ref().map_or(1, |c| c.version + 1),
                        };
                        buf.clear();
                        encode_kv(&mut buf, &kv);
                        kvs.insert(key.as_bytes(), buf.as_slice())
                            .map_err(backend)?;
                        let ev = Event {
                            kind: EventKind::Put,
                            kv: kv.clone(),
                            prev_kv: current,
                        };
                        let bytes = encode_event(&ev);
                        log.insert(revision, bytes.as_slice()).map_err(backend)?;
                        out.encoded.push(bytes);
                        out.events.push(ev);
                        Ok(OpResult::Put(Outcome::Done(kv)))
                    }
                }
                Op::Delete { key, expected } => match current {
                    Some(prev) if expected.is_none_or(|e| e == cur_mod) => {
                        revision += 1;
                        kvs.remove(key.as_bytes()).map_err(backend)?;
                        let ev = Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: revision,
                                version: 0,
                            },
                            prev_kv: Some(prev.clone()),
                        };
                        let bytes = encode_event(&ev);
                        log.insert(revision, bytes.as_slice()).map_err(backend)?;
                        out.encoded.push(bytes);
                        out.events.push(ev);
                        Ok(OpResult::Delete(Outcome::Done(Deleted {
                            prev_kv: prev,
                            revision,
                        })))
                    }
                    current => Ok(OpResult::Delete(Outcome::Conflict { current })),
                },
                Op::Compact { revision: target } => {
                    let target = *target;
                    if target > revision {
                        Err(Error::FutureRevision {
                            requested: target,
                            current: revision,
                        })
                    } else if target <= compact {
                        Err(Error::Compacted {
                            requested: target,
                            compact_revision: compact,
                        })
                    } else {
                        log.retain_in(..target, |_, _| false).map_err(backend)?;
                        meta.insert("compact", target).map_err(backend)?;
                        compact = target;
                        out.compacted = true;
                        Ok(OpResult::Compacted)
                    }
                }
            };
            out.results.push(result);
        }
        meta.insert("revision", revision).map_err(backend)?;
        self.revision = revision;
        self.compact = compact;
        Ok(out)
    }
}

impl Error {
    fn clone_msg(&self) -> Error {
        Error::Backend(self.to_string())
    }
}
