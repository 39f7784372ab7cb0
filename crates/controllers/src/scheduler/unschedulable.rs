//! The unschedulable queue (kube-scheduler's unschedulable and backoff queues in one): a pod
//! that fits nowhere waits here and is tried again after a back-off that doubles from
//! [`INITIAL_BACKOFF`] to [`MAX_BACKOFF`], or sooner when something happens that may make it
//! fit — a node added, removed or changed in what scheduling reads, a pod leaving a node, the
//! pod's own spec or labels changing. Even then a pod is never tried twice within
//! [`INITIAL_BACKOFF`], so a storm of cluster changes cannot turn into a storm of retries.
//!
//! Without it every try's own status write came back through the watch as a "change" and
//! queued the pod again at once: thousands of tries (and Events) a second for one pod.
//!
//! A pure structure over `Instant`s, driven by the scheduler loop: [`Unschedulable::due`]
//! hands out the pods whose time has come, and says when to look next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The back-off after a pod's first failed try (kube-scheduler's podInitialBackoffSeconds).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off (kube-scheduler's podMaxBackoffSeconds).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Back-off after `attempts` failed tries (1 s, 2 s, 4 s, 8 s, 10 s, 10 s, …).
pub fn backoff(attempts: u32) -> Duration {
    let doubled = INITIAL_BACKOFF.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

#[derive(Debug, Clone)]
struct Waiting {
    attempts: u32,
    last_try: Instant,
    /// None while the pod is out being tried (handed out by `due`).
    next_try: Option<Instant>,
    /// What of the pod scheduling reads (spec, labels), to tell a real change from a status
    /// write.
    fingerprint: u64,
}

#[derive(Debug, Default)]
pub struct Unschedulable {
    pods: HashMap<String, Waiting>,
}

impl Unschedulable {
    pub fn new() -> Unschedulable {
        Unschedulable::default()
    }

    /// A try of `key` found no node at `now`: it waits its back-off. Returns the back-off.
    pub fn failed(&mut self, key: &str, fingerprint: u64, now: Instant) -> Duration {
        let w = self.pods.entry(key.to_string()).or_insert(Waiting {
            attempts: 0,
            last_try: now,
            next_try: None,
            fingerprint,
        });
        w.attempts = w.attempts.saturating_add(1);
        w.last_try = now;
        w.fingerprint = fingerprint;
        let delay = backoff(w.attempts);
        w.next_try = Some(now + delay);
        delay
    }

    /// The pod was placed, deleted, or is no longer ours to schedule.
    pub fn forget(&mut self, key: &str) {
        self.pods.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// How many failed tries `key` has had (0 if it is not waiting).
    pub fn attempts(&self, key: &str) -> u32 {
        self.pods.get(key).map_or(0, |w| w.attempts)
    }

    /// The waiting pod `key` was updated. Returns whether the update matters to scheduling
    /// (its fingerprint changed); if it does, the pod is tried again soon.
    pub fn pod_updated(&mut self, key: &str, fingerprint: u64, now: Instant) -> bool {
        let Some(w) = self.pods.get_mut(key) else {
            return false;
        };
        if w.fingerprint == fingerprint {
            return false;
        }
        w.fingerprint = fingerprint;
        Self::move_soon(w, now);
        true
    }

    /// Something in the cluster changed that may make waiting pods fit: try each again soon.
    pub fn move_all(&mut self, now: Instant) {
        for w in self.pods.values_mut() {
            Self::move_soon(w, now);
        }
    }

    fn move_soon(w: &mut Waiting, now: Instant) {
        if let Some(next) = w.next_try {
            let soonest = (w.last_try + INITIAL_BACKOFF).max(now);
            w.next_try = Some(next.min(soonest));
        }
    }

    /// The pods whose time has come (each handed out once, until it fails again), and when
    /// the next one is due.
    pub fn due(&mut self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, w) in self.pods.iter_mut() {
            match w.next_try {
                Some(t) if t <= now => {
                    w.next_try = None;
                    ready.push(key.clone());
                }
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        (ready, next)
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_from_one_to_ten_seconds() {
        let secs: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_pod_that_fits_nowhere_is_tried_at_its_backoff_and_no_sooner() {
        let mut q = Unschedulable::new();
        let t0 = Instant::now();
        assert_eq!(q.failed("ns/p", 1, t0), S);
        assert_eq!(q.due(t0), (vec![], Some(t0 + S)));
        // Its own status write comes back through the watch: same fingerprint, no retry.
        assert!(!q.pod_updated("ns/p", 1, t0));
        assert_eq!(q.due(t0 + S).0, vec!["ns/p".to_string()]);
        // Handed out once: not again until it has failed again.
        assert_eq!(q.due(t0 + 5 * S), (vec![], None));
        assert_eq!(q.failed("ns/p", 1, t0 + S), 2 * S);
        assert_eq!(q.due(t0 + 2 * S).0, Vec::<String>::new());
        assert_eq!(q.due(t0 + 3 * S).0, vec!["ns/p".to_string()]);
        // Ten minutes of failing: at most one try per 10 s after the first few.
        let mut now = t0 + 3 * S;
        let mut tries = 2;
        while now < t0 + 600 * S {
            now += q.failed("ns/p", 1, now);
            assert_eq!(q.due(now).0.len(), 1);
            tries += 1;
        }
        assert!(tries <= 64, "{tries} tries in 10 minutes");
    }

    #[test]
    fn cluster_changes_move_pods_back_soon_but_not_at_once_after_a_try() {
        let mut q = Unschedulable::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            q.failed("ns/p", 1, t0);
        }
        assert_eq!(q.due(t0).1, Some(t0 + MAX_BACKOFF));
        // A node changed right after the try: the pod goes again a second after it.
        q.move_all(t0);
        assert_eq!(q.due(t0).1, Some(t0 + S));
        // Long after the try: at once.
        q.failed("ns/p", 1, t0);
        q.move_all(t0 + 5 * S);
        assert_eq!(q.due(t0 + 5 * S).0, vec!["ns/p".to_string()]);
        // The pod's own spec changed (a toleration added): moved too.
        q.failed("ns/p", 1, t0 + 5 * S);
        assert!(q.pod_updated("ns/p", 2, t0 + 9 * S));
        assert_eq!(q.due(t0 + 9 * S).0, vec!["ns/p".to_string()]);
        q.forget("ns/p");
        assert!(q.is_empty());
    }
}
