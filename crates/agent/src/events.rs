//! The event recorder every component shares (the scheduler, the controllers, the node agent):
//! Kubernetes Events about objects, aggregated and rate limited as client-go's recorder does,
//! so a condition that repeats (a pod that fits nowhere, tried again and again) costs one Event
//! object whose `count` and `lastTimestamp` grow, not one object per try.
//!
//! It lives here, in the agent, because that is the lowest crate every user of it depends on
//! (the controllers depend on the agent, nothing below speaks to the API).
//!
//! [`Correlator`] is the decision, a pure function of what was seen and when:
//! - the same (object, type, reason, message) is one Event: the first occurrence creates it,
//!   later ones update its count and last time;
//! - each object has a token bucket ([`BURST`] writes, then one per [`REFILL`]): an occurrence
//!   without a token is counted but not written (the next write carries the count);
//! - both caches are LRUs of [`CACHE_ENTRIES`], so memory is bounded however many objects come
//!   and go.
//!
//! [`Recorder`] feeds it and sends the writes, in order, from one task: a write that finds its
//! Event gone (expired by the API server's `--event-ttl`) creates it again.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lru::LruCache;
use serde_json::json;
use tokio::sync::mpsc;

/// Writes an object may make at once before the rate limit applies (per object, all reasons).
pub const BURST: u32 = 10;
/// After the burst, one more write per this long.
pub const REFILL: Duration = Duration::from_secs(60);
/// How many distinct events, and objects, are remembered (client-go's LRU size).
pub const CACHE_ENTRIES: usize = 4096;
/// Writes waiting for the writer task; more are dropped (events are informational).
const QUEUED_WRITES: usize = 1024;

/// Normal or Warning, as Kubernetes types events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What makes two occurrences the same Event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    object: String,
    type_: EventType,
    reason: String,
    message: String,
}

#[derive(Debug, Clone)]
struct Seen {
    /// The Event object's name (chosen here, as client-go does, so an update needs no read).
    name: String,
    count: i32,
    first: Timestamp,
    /// Whether a create was sent for it.
    created: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What to write for one occurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new Event object.
    Create {
        name: String,
        count: i32,
        first: Timestamp,
    },
    /// An existing one: its count and last time change.
    Update {
        name: String,
        count: i32,
        first: Timestamp,
    },
}

/// One occurrence of an event.
#[derive(Debug, Clone, Copy)]
pub struct Occurrence<'a> {
    /// Identifies the object (kind, namespace, name, uid) and the component reporting.
    pub object: &'a str,
    /// The object's name (the Event's name starts with it).
    pub object_name: &'a str,
    pub type_: EventType,
    pub reason: &'a str,
    pub message: &'a str,
}

/// The aggregation and rate-limit decision (see the module's documentation).
pub struct Correlator {
    events: LruCache<EventKey, Seen>,
    buckets: LruCache<String, Bucket>,
    burst: u32,
    refill: Duration,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(BURST, REFILL, CACHE_ENTRIES)
    }
}

impl Correlator {
    pub fn new(burst: u32, refill: Duration, entries: usize) -> Correlator {
        let cap = NonZeroUsize::new(entries.max(1)).expect("non-zero");
        Correlator {
            events: LruCache::new(cap),
            buckets: LruCache::new(cap),
            burst: burst.max(1),
            refill,
        }
    }

    /// One occurrence at (`now`, `wall`): what to write, or None when the object's rate limit
    /// holds it back (it is still counted, and the next write carries the count).
    pub fn observe(&mut self, o: &Occurrence<'_>, now: Instant, wall: Timestamp) -> Option<Write> {
        let key = EventKey {
            object: o.object.to_string(),
            type_: o.type_,
            reason: o.reason.to_string(),
            message: o.message.to_string(),
        };
        let seen = self.events.get_or_insert_mut(key.clone(), || Seen {
            // client-go's naming: the object's name and the time in hex nanoseconds.
            name: format!("{}.{:x}", o.object_name, wall.as_nanosecond()),
            count: 0,
            first: wall,
            created: false,
        });
        seen.count = seen.count.saturating_add(1);
        let (name, count, first, created) =
            (seen.name.clone(), seen.count, seen.first, seen.created);
        if !self.take_token(o.object, now) {
            return None;
        }
        if created {
            return Some(Write::Update { name, count, first });
        }
        if let Some(s) = self.events.peek_mut(&key) {
            s.created = true;
        }
        Some(Write::Create { name, count, first })
    }

    fn take_token(&mut self, object: &str, now: Instant) -> bool {
        let (burst, refill) = (self.burst as f64, self.refill.as_secs_f64());
        let b = self
            .buckets
            .get_or_insert_mut(object.to_string(), || Bucket {
                tokens: burst,
                at: now,
            });
        let earned = if refill > 0.0 {
            now.saturating_duration_since(b.at).as_secs_f64() / refill
        } else {
            burst
        };
        b.tokens = (b.tokens + earned).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many distinct events are remembered (bounded by the cache size).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A reference to an object for [`Recorder::record`].
pub fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

struct Outgoing {
    event: Event,
    update: bool,
}

/// Records events for one component; cheap to clone. Writes go out from a task of its own,
/// which ends when the last clone is dropped.
#[derive(Clone)]
pub struct Recorder {
    correlator: Arc<Mutex<Correlator>>,
    tx: mpsc::Sender<Outgoing>,
    component: String,
    host: Option<String>,
}

impl Recorder {
    /// A recorder for `component` (e.g. "default-scheduler", "kubelet") on `host` (a node's
    /// name, for the agent). Must be called inside a tokio runtime.
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUED_WRITES);
        tokio::spawn(write_events(client, rx));
        Recorder {
            correlator: Arc::default(),
            tx,
            component: component.to_string(),
            host: host.map(str::to_string),
        }
    }

    /// Record that `reason` happened to `object` (never blocks, never fails: events are
    /// informational). `action` says what the component was doing ("Scheduling").
    pub fn record(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
        let name = object.name.clone().unwrap_or_default();
        // Events about the same name but another incarnation (uid) are distinct, and so are
        // events about two parts (containers) of one object: the part is in the key.
        let key = format!(
            "{}/{ns}/{name}/{}/{}/{}",
            object.kind.as_deref().unwrap_or(""),
            object.uid.as_deref().unwrap_or(""),
            self.component,
            object.field_path.as_deref().unwrap_or(""),
        );
        let wall = Timestamp::now();
        let occurrence = Occurrence {
            object: &key,
            object_name: &name,
            type_,
            reason,
            message,
        };
        let write =
            self.correlator
                .lock()
                .expect("events lock")
                .observe(&occurrence, Instant::now(), wall);
        let Some(write) = write else { return };
        let (event_name, count, first, update) = match write {
            Write::Create { name, count, first } => (name, count, first, false),
            Write::Update { name, count, first } => (name, count, first, true),
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name),
                namespace: Some(ns),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.as_str().into()),
            count: Some(count),
            first_timestamp: Some(Time(first)),
            last_timestamp: Some(Time(wall)),
            event_time: None,
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            // The kubelet's events (the core/v1 recorder) carry no action.
            action: (!action.is_empty()).then(|| action.into()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            ..Default::default()
        };
        if self.tx.try_send(Outgoing { event, update }).is_err() {
            tracing::debug!("event dropped: the writer is behind");
        }
    }

    /// How many distinct events this recorder remembers.
    pub fn remembered(&self) -> usize {
        self.correlator.lock().expect("events lock").len()
    }
}

/// The writer: one write at a time, in order, so an update never overtakes its create.
async fn write_events(client: Client, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(Outgoing { event, update }) = rx.recv().await {
        let ns = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        let api = Api::<Event>::namespaced(client.clone(), &ns);
        let result = if update {
            let patch = json!({
                "count": event.count,
                "lastTimestamp": event.last_timestamp,
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                // Expired (the API server's event TTL) or never made it: create it again.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    api.create(&PostParams::default(), &event).await.map(|_| ())
                }
                r => r.map(|_| ()),
            }
        } else {
            api.create(&PostParams::default(), &event).await.map(|_| ())
        };
        if let Err(e) = result {
            tracing::debug!("writing event {ns}/{name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(c: &mut Correlator, t: Instant, msg: &str) -> Option<Write> {
        let o = Occurrence {
            object: "Pod/default/p/uid/s",
            object_name: "p",
            type_: EventType::Warning,
            reason: "FailedScheduling",
            message: msg,
        };
        c.observe(&o, t, Timestamp::now())
    }

    #[test]
    fn the_same_event_is_one_object_with_a_growing_count() {
        let mut c = Correlator::default();
        let t = Instant::now();
        let Some(Write::Create { name, count: 1, .. }) = at(&mut c, t, "no nodes") else {
            panic!("first occurrence must create");
        };
        for n in 2..=5 {
            match at(&mut c, t, "no nodes") {
                Some(Write::Update { name: m, count, .. }) => {
                    assert_eq!(m, name);
                    assert_eq!(count, n);
                }
                other => panic!("expected an update, got {other:?}"),
            }
        }
        // Another message is another event.
        assert!(matches!(
            at(&mut c, t, "other"),
            Some(Write::Create { count: 1, .. })
        ));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn an_object_is_rate_limited_and_the_count_catches_up() {
        let mut c = Correlator::new(3, Duration::from_secs(10), 16);
        let t = Instant::now();
        let writes = (0..20).filter(|_| at(&mut c, t, "m").is_some()).count();
        assert_eq!(writes, 3, "only the burst is written at once");
        // A refill later, the next write carries every occurrence.
        match at(&mut c, t + Duration::from_secs(10), "m") {
            Some(Write::Update { count, .. }) => assert_eq!(count, 21),
            other => panic!("expected an update, got {other:?}"),
        }
        assert_eq!(at(&mut c, t + Duration::from_secs(11), "m"), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = Correlator::new(1, Duration::from_secs(1), 8);
        let t = Instant::now();
        for i in 0..1000 {
            let object = format!("Pod/default/p{i}");
            let o = Occurrence {
                object: &object,
                object_name: "p",
                type_: EventType::Normal,
                reason: "R",
                message: "m",
            };
            c.observe(&o, t, Timestamp::now());
        }
        assert_eq!(c.len(), 8);
        assert!(c.buckets.len() <= 8);
    }
}
