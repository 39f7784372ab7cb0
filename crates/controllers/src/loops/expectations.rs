//! Pods a loop created or deleted that the cache has not shown yet, per owner: acting again
//! before they show would create or delete twice (Kubernetes calls these expectations).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cached::Pod;

/// Give up waiting for the cache after this long and decide afresh.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Expectations {
    pending: HashMap<String, (HashSet<String>, HashSet<String>, Instant)>,
}

impl Expectations {
    pub fn forget(&mut self, key: &str) {
        self.pending.remove(key);
    }

    /// Whether `namespace_pods` (the cache) shows what was done for `key`: every created pod
    /// present, every deleted one gone (or deleting). Forgets the expectation when it does,
    /// or when it has waited too long.
    pub fn satisfied(&mut self, key: &str, namespace_pods: &[Pod]) -> bool {
        let Some((adds, dels, since)) = self.pending.get(key) else {
            return true;
        };
        let seen: HashSet<&str> = namespace_pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let adds_seen = adds.iter().all(|n| seen.contains(n.as_str()));
        let dels_seen = dels.iter().all(|n| !seen.contains(n.as_str()));
        if (adds_seen && dels_seen) || since.elapsed() > TIMEOUT {
            self.pending.remove(key);
            true
        } else {
            false
        }
    }

    /// Remember the pods just created and deleted for `key` (nothing if both are empty).
    pub fn expect(&mut self, key: &str, created: HashSet<String>, deleted: HashSet<String>) {
        if !created.is_empty() || !deleted.is_empty() {
            self.pending
                .insert(key.to_string(), (created, deleted, Instant::now()));
        }
    }
}
