//! A work queue of object keys, as controllers use it: a key is queued at most once however
//! often it changes, is never handed to two workers at once (a change during processing
//! queues it again for after), and failed keys come back with exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting in `queue` (or to be re-queued when their processing ends).
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
}

/// Back-off for a key's `n`th consecutive failure: 5 ms doubling, at most 60 s.
pub fn backoff(n: u32) -> Duration {
    let ms = 5u64.saturating_mul(1u64 << n.min(20));
    Duration::from_millis(ms.min(60_000))
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    /// Queue `key` (a no-op if it is already waiting).
    pub fn add(&self, key: &str) {
        let mut st = self.state.lock().expect("queue lock");
        if st.shut_down || !st.dirty.insert(key.to_string()) {
            return;
        }
        if !st.processing.contains(key) {
            st.queue.push_back(key.to_string());
            drop(st);
            self.ready.notify_one();
        }
    }

    /// Queue `key` after `delay`.
    pub fn add_after(&self, key: &str, delay: Duration) {
        let q = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(&key);
        });
    }

    /// Queue `key` again after its back-off, counting one more failure.
    pub fn add_rate_limited(&self, key: &str) {
        let n = {
            let mut st = self.state.lock().expect("queue lock");
            let n = st.failures.entry(key.to_string()).or_default();
            *n += 1;
            *n
        };
        self.add_after(key, backoff(n - 1));
    }

    /// Forget `key`'s failures (it succeeded).
    pub fn forget(&self, key: &str) {
        self.state.lock().expect("queue lock").failures.remove(key);
    }

    /// The next key to process; None once the queue is shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.ready.notified();
            {
                let mut st = self.state.lock().expect("queue lock");
                if st.shut_down {
                    return None;
                }
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    // Wake another worker if more is waiting.
                    if !st.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Processing of `key` has ended; if it changed meanwhile, it is queued again.
    pub fn done(&self, key: &str) {
        let mut st = self.state.lock().expect("queue lock");
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.to_string());
            drop(st);
            self.ready.notify_one();
        }
    }

    pub fn shut_down(&self) {
        self.state.lock().expect("queue lock").shut_down = true;
        self.ready.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_never_hands_out_a_key_twice_at_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await.unwrap();
        assert_eq!(k, "a");
        // "a" changes while it is processed: it is not handed out again until done.
        q.add("a");
        assert_eq!(q.get().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.get().await.unwrap(), "a");
        q.done("a");
        q.done("b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn failed_keys_come_back_later() {
        let q = WorkQueue::new();
        q.add_rate_limited("x");
        let start = std::time::Instant::now();
        assert_eq!(q.get().await.unwrap(), "x");
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(40), Duration::from_secs(60));
        q.shut_down();
        assert_eq!(q.get().await, None);
    }
}
