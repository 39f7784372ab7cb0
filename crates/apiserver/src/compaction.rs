//! Automatic compaction, as kube-apiserver's `--etcd-compaction-interval`: every interval the
//! store is compacted to the revision it had at the previous tick. History one interval deep
//! stays for watchers and paged lists to resume from; older history is dropped, so the store's
//! log does not grow without bound (a watch or continue token from before gets 410 Expired).

use std::sync::Arc;
use std::time::Duration;

use yun_store::{Error, Store};

pub async fn run(store: Arc<dyn Store>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    let mut previous = None;
    loop {
        // Read the revision before compacting, so the one compacted to next time is at least
        // a full interval old.
        let current = match store.current_revision().await {
            Ok(rev) => Some(rev),
            Err(e) => {
                tracing::warn!("compaction: reading the revision: {e}");
                None
            }
        };
        if let Some(rev) = previous {
            match store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "compaction: compacted"),
                // Nothing written since the last compaction (or another server compacted
                // further, as happens when several share one etcd).
                Err(Error::Compacted { .. }) => {}
                Err(e) => tracing::warn!("compaction at {rev}: {e}"),
            }
        }
        previous = current;
        ticks.tick().await;
    }
}
