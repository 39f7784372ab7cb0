//! Limits on what one client's watches may hold of the server: how many it may have open at
//! once, how many encoded events each buffers, and how long a watch whose client stopped
//! reading keeps its place before it is dropped (kube-apiserver's per-watcher channel and its
//! "forcing watcher close due to unresponsiveness").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::error::ApiError;

/// Watch limits of a server (`Config::watch`).
#[derive(Debug, Clone)]
pub struct WatchLimits {
    /// Most watches one authenticated user may have open (`--max-watches-per-user`).
    pub per_user: usize,
    /// Encoded events buffered per watch before its producer waits for the client.
    pub buffer: usize,
    /// How long a watch may wait for its client to read before it is dropped and its
    /// connection closed.
    pub stall_timeout: Duration,
}

/// Sized for `yun up`, whose controllers and agent share the admin token and hold a few dozen
/// watches between them, plus many `kubectl get -w`; a watch costs the server a bounded buffer
/// (see docs/apiserver.md for the measured figure), so this many stay within a few hundred MiB.
pub const DEFAULT_MAX_WATCHES_PER_USER: usize = 500;

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            per_user: DEFAULT_MAX_WATCHES_PER_USER,
            buffer: 16,
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Open watches per user.
#[derive(Default)]
pub struct WatchCounts {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open watch, counted until dropped.
pub struct WatchSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl WatchCounts {
    /// Count a new watch for `user`, or 429 TooManyRequests when it already has `max`.
    pub fn acquire(&self, user: &str, max: usize) -> Result<WatchSlot, ApiError> {
        self.take(user, max, "watches", " (--max-watches-per-user)")
    }

    /// The same count for streaming sessions (exec, attach, port-forward): `what` names them.
    pub fn take(
        &self,
        user: &str,
        max: usize,
        what: &str,
        flag: &str,
    ) -> Result<WatchSlot, ApiError> {
        let mut open = self.open.lock().expect("watch counts");
        let n = open.entry(user.to_string()).or_insert(0);
        if *n >= max {
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                format!("too many {what}: user {user:?} has {n} open, the limit is {max}{flag}"),
            );
            e.details = Some(json!({"retryAfterSeconds": 1}));
            return Err(e);
        }
        *n += 1;
        Ok(WatchSlot {
            open: self.open.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("watch counts");
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_user_and_free_on_drop() {
        let counts = WatchCounts::default();
        let a1 = counts.acquire("a", 2).unwrap();
        let _a2 = counts.acquire("a", 2).unwrap();
        let e = counts.acquire("a", 2).err().expect("third watch refused");
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        let _b = counts.acquire("b", 2).unwrap();
        drop(a1);
        counts.acquire("a", 2).unwrap();
    }
}
