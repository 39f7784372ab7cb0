//! Group commit without a writer thread: the caller that finds the writer free leads.
//!
//! A put queues its operation, then either its result arrives (another caller's batch
//! included it) or it gets the writer lock first and becomes the leader: it takes every
//! queued operation, applies them, appends them to the write-ahead log and syncs, then
//! answers the followers. A lone writer so never hands its request to another thread and
//! waits for no wake-up: with a writer thread each put cost two cross-thread wake-ups (on
//! this 2-core VM, ~3 futex calls + 1 eventfd write + 1 epoll_wait per put beside the
//! fdatasync), about as much as the sync itself.
//!
//! The leader runs the batch, including the sync, on the calling thread inside `poll`: it
//! blocks a runtime worker for one disk flush, which the caller waits for anyway, and the
//! other workers keep queuing the next batch meanwhile.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::embedded::{Op, OpResult};
use crate::writer::{Writer, FLUSH_EVERY};
use crate::{Error, Result};

struct Queued {
    id: u64,
    op: Op,
    reply: oneshot::Sender<Result<OpResult>>,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    waiting: Vec<Queued>,
    closed: bool,
}

pub(crate) struct Committer {
    queue: Mutex<Queue>,
    /// Held by the leader while it applies and syncs a batch. Fair (FIFO), so a waiting
    /// caller leads the next batch in turn.
    writer: tokio::sync::Mutex<Writer>,
}

/// Takes a queued request back out when its caller stops waiting before any leader took it,
/// so a cancelled put is not applied later behind the caller's back.
struct Withdraw<'a> {
    queue: &'a Mutex<Queue>,
    id: u64,
    armed: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = self.queue.lock().expect("commit queue");
            queue.waiting.retain(|q| q.id != self.id);
        }
    }
}

impl Committer {
    pub(crate) fn new(writer: Writer) -> Self {
        Committer {
            queue: Mutex::new(Queue::default()),
            writer: tokio::sync::Mutex::new(writer),
        }
    }

    pub(crate) async fn submit(&self, op: Op) -> Result<OpResult> {
        let (reply, mut rx) = oneshot::channel();
        let id = {
            let mut queue = self.queue.lock().expect("commit queue");
            if queue.closed {
                return Err(Error::Closed);
            }
            queue.next_id += 1;
            let id = queue.next_id;
            queue.waiting.push(Queued { id, op, reply });
            id
        };
        let mut withdraw = Withdraw {
            queue: &self.queue,
            id,
            armed: true,
        };
        let mut writer = tokio::select! {
            // A result first: a leader that finished answered us before it let go.
            biased;
            result = &mut rx => {
                withdraw.armed = false;
                return result.map_err(|_| Error::Closed)?;
            }
            writer = self.writer.lock() => writer,
        };
        withdraw.armed = false;
        // Leading. Every batch taken before is answered (its leader held the lock until it
        // had replied), so ours is still queued, unless it was just answered.
        let batch = std::mem::take(&mut self.queue.lock().expect("commit queue").waiting);
        let mut mine = None;
        if !batch.is_empty() {
            let ops: Vec<&Op> = batch.iter().map(|q| &q.op).collect();
            let results = writer.run_batch(&ops);
            drop(writer);
            for (queued, result) in batch.into_iter().zip(results) {
                if queued.id == id {
                    mine = Some(result);
                } else {
                    // A follower that gave up is fine: its write stands, as etcd's would.
                    let _ = queued.reply.send(result);
                }
            }
        } else {
            drop(writer);
        }
        match mine {
            Some(result) => result,
            None => rx.await.map_err(|_| Error::Closed)?,
        }
    }

    /// Refuse new requests and commit what was applied, so reopening replays no log.
    /// Called when no request is in flight (the store is being dropped).
    pub(crate) fn close(&self) {
        self.queue.lock().expect("commit queue").closed = true;
        match self.writer.try_lock() {
            Ok(mut writer) => writer.flush(),
            Err(_) => tracing::warn!("store: writer busy at close; the log will be replayed"),
        }
    }
}

/// While the store is open, commit to redb once writes have rested in the log for
/// `FLUSH_EVERY`. On a thread of its own because a redb commit (several flushes, milliseconds)
/// on a leader's runtime thread would stall every task there, e.g. watchers waiting for the
/// very events being committed; leaders only commit when the flusher is overdue.
pub(crate) struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(committer: Arc<Committer>) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("yun-store-flush".into())
            .spawn(move || {
                // Checking four times per interval bounds how long writes wait past it.
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(FLUSH_EVERY / 4)
                {
                    // Waits its turn behind queued leaders (the lock is fair).
                    committer.writer.blocking_lock().flush_if_due();
                }
            })?;
        Ok(Flusher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
