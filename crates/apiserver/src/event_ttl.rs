//! Event expiry, as kube-apiserver's `--event-ttl` (default 1 h): an Event not written for the
//! TTL is deleted. kube-apiserver puts each Event on an etcd lease; yun's store has no leases,
//! so a sweeper reads the Events every so often and deletes those whose last write is older
//! than the TTL. "Last write" is the latest of the times the Event carries (lastTimestamp,
//! eventTime, series.lastObservedTime, creationTimestamp), which every recorder moves forward
//! when it counts a repeat — so an Event that keeps happening stays, and a flood of Events that
//! stopped does not fill the store for ever.
//!
//! A delete is a compare-and-swap on the revision read: an Event updated meanwhile is kept.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use yun_store::{RangeRequest, Store};

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// Where core/v1 Events are kept (`resources::Resource::prefix` of "events").
const PREFIX: &str = "/registry/core/events/";
/// Events read per store range.
const PAGE: usize = 500;

/// How often to sweep for a TTL: a tenth of it, between 1 s and 1 min, so an Event outlives
/// its TTL by at most that much.
pub fn sweep_period(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The latest time an Event says it was written, in milliseconds since the epoch.
pub fn last_written_ms(event: &Value) -> Option<i64> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p)?.as_str())
    .filter_map(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    .map(|t| t.as_millisecond())
    .max()
}

pub async fn run(store: Arc<dyn Store>, ttl: Duration) {
    let mut ticks = tokio::time::interval(sweep_period(ttl));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweep(store.as_ref(), ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("event TTL: deleted {n} expired events"),
            Err(e) => tracing::warn!("event TTL: {e:#}"),
        }
    }
}

/// Delete every Event last written more than `ttl` ago; returns how many went.
pub async fn sweep(store: &dyn Store, ttl: Duration) -> anyhow::Result<usize> {
    // From the system clock, not jiff's `Timestamp::now` (that needs jiff's `std` feature,
    // which this crate's own dependencies do not turn on).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let cutoff = now_ms - ttl.as_millis() as i64;
    let mut deleted = 0;
    let mut req = RangeRequest {
        prefix: PREFIX.into(),
        limit: PAGE,
        ..Default::default()
    };
    loop {
        let page = store.range(req.clone()).await?;
        for kv in &page.kvs {
            let expired = serde_json::from_slice::<Value>(&kv.value)
                .ok()
                .and_then(|v| last_written_ms(&v))
                .is_some_and(|t| t < cutoff);
            if expired
                && store
                    .delete(&kv.key, Some(kv.mod_revision))
                    .await?
                    .done()
                    .is_some()
            {
                deleted += 1;
            }
        }
        match page.continue_token {
            Some(token) => {
                req.continue_after = Some(token);
                req.revision = page.revision;
            }
            None => return Ok(deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_latest_time_an_event_carries_counts() {
        let e = json!({
            "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
            "lastTimestamp": "2024-01-01T01:00:00Z",
            "eventTime": null,
        });
        let hour = 3_600_000;
        assert_eq!(
            last_written_ms(&e),
            Some(1_704_067_200_000 + hour),
            "lastTimestamp is later than creation"
        );
        assert_eq!(last_written_ms(&json!({})), None);
        assert_eq!(sweep_period(DEFAULT_EVENT_TTL), Duration::from_secs(60));
        assert_eq!(sweep_period(Duration::from_secs(3)), Duration::from_secs(1));
    }
}
