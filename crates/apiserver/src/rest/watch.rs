//! watch: a store watch on the collection's prefix, streamed as one JSON event per line.
//!
//! `resourceVersion=N` resumes after revision N (the store replays its history, so nothing is
//! lost across a server restart); no resourceVersion (or "0") first sends every current object
//! as ADDED. A compacted start revision ends the stream with an ERROR event carrying a 410
//! Expired Status, as kube-apiserver does; clients then list again.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use yun_store::{Event, EventKind, RangeRequest};

use super::selector;
use crate::error::{ApiError, ApiResult};
use crate::resources::Resource;
use crate::router::{Req, Target};
use crate::selectors::Selector;
use crate::Api;

/// How often an idle watch checks that its client is still there (and sends a bookmark).
const TICK: Duration = Duration::from_secs(15);

struct Encoder {
    res: Resource,
    table: bool,
    metadata: bool,
    protobuf: bool,
    req_accept: String,
    include: Option<String>,
}

impl Encoder {
    fn line(&self, kind: &str, obj: Value) -> Bytes {
        let object = if self.table && kind != "ERROR" && kind != "BOOKMARK" {
            let req = Req {
                method: axum::http::Method::GET,
                query: self
                    .include
                    .iter()
                    .map(|i| ("includeObject".to_string(), i.clone()))
                    .collect(),
                headers: {
                    let mut h = axum::http::HeaderMap::new();
                    if let Ok(v) = self.req_accept.parse() {
                        h.insert("accept", v);
                    }
                    h
                },
                body: Bytes::new(),
                user: Default::default(),
                conn: None,
                output: Default::default(),
                raw_query: String::new(),
                upgrade: None,
            };
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            crate::table::table_for(&self.res, &[obj], &req, json!({"resourceVersion": rv}))
        } else if self.metadata && kind != "ERROR" {
            crate::proto::partial(&obj)
        } else {
            obj
        };
        if self.protobuf {
            return match crate::proto::watch_frame(kind, &object) {
                Ok(frame) => Bytes::from(frame),
                Err(e) => {
                    // Not expected for a built-in kind (negotiation checked it has a message):
                    // an ERROR frame says so rather than a silent gap in the stream.
                    tracing::warn!("watch: encoding a {kind} event as protobuf: {e}");
                    let status = ApiError::internal(format!("encoding the event: {e}")).status();
                    Bytes::from(crate::proto::watch_frame("ERROR", &status).unwrap_or_default())
                }
            };
        }
        let mut bytes =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

/// The event a client should see for a store event, given its selector (an object that
/// stops matching is DELETED for this watcher, one that starts matching is ADDED).
fn translate(ev: &Event, sel: &Selector) -> Option<(&'static str, Value)> {
    match ev.kind {
        EventKind::Put => {
            let new = crate::meta::decode(&ev.kv)?;
            let new_m = sel.matches(&new);
            let created = ev.kv.create_revision == ev.kv.mod_revision;
            let old_m = match ev.prev_kv.as_ref().and_then(crate::meta::decode) {
                Some(old) if !created => sel.matches(&old),
                _ if created => false,
                _ => new_m,
            };
            match (old_m, new_m) {
                (false, true) => Some(("ADDED", new)),
                (true, true) => Some(("MODIFIED", new)),
                (true, false) => Some(("DELETED", new)),
                (false, false) => None,
            }
        }
        EventKind::Delete => {
            let mut old = ev.prev_kv.as_ref().and_then(crate::meta::decode)?;
            crate::meta::set_rv(&mut old, ev.kv.mod_revision);
            sel.matches(&old).then_some(("DELETED", old))
        }
    }
}

/// How long a watch from a revision the store has not reached waits for it, as
/// kube-apiserver's watch cache blocks (3 s) before answering "Too large resource version".
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// Wait (briefly) until the store has reached `rv`: a client that read from a server ahead of
/// this one (several on one etcd) gets its events; a revision that never comes is a 504.
async fn wait_for_revision(api: &Api, rv: i64) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
    loop {
        let current = api.store.current_revision().await?;
        if rv <= current {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::resource_version_too_large(rv, current));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Objects read from the store per range call while sending a watch's initial ADDED events:
/// a watcher holds one such chunk at a time, whatever the size of the collection.
const INITIAL_CHUNK: usize = 32;

/// The producer's side of one watch: a bounded channel to the response body, and what to do
/// when the client stops reading.
struct Sink {
    tx: mpsc::Sender<Bytes>,
    stall_timeout: Duration,
    conn: Option<crate::tls::Connection>,
}

impl Sink {
    /// Queue a line for the client. False when the watch is over: the client went away, or
    /// it has not made room for `stall_timeout`, in which case its connection is closed so
    /// everything buffered for it is freed (a watch that no one reads would otherwise hold
    /// its buffers until the client disconnects).
    async fn send(&self, line: Bytes) -> bool {
        match tokio::time::timeout(self.stall_timeout, self.tx.send(line)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::info!(
                    "watch: client read nothing for {:?}, closing its connection",
                    self.stall_timeout
                );
                if let Some(conn) = &self.conn {
                    conn.close();
                }
                false
            }
        }
    }
}

pub async fn watch(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let sel = selector(req, &t.res)?;
    let slot = api
        .watches
        .acquire(&req.user.name, api.watch_limits.per_user)?;
    let prefix = t.res.prefix(t.ns.as_deref());
    let enc = Encoder {
        res: t.res.clone(),
        table: req.output.table,
        metadata: req.output.metadata,
        protobuf: req.output.format == crate::proto::Format::Protobuf,
        req_accept: req.header("accept").to_string(),
        include: req.q("includeObject").map(str::to_string),
    };
    // With initial events the current objects come first: the first chunk is read here (so
    // a store error is the response's status), the rest by the producer as the client takes
    // them. A watch-list from a named revision waits until the store has it ("not older
    // than"), then reads the objects as they are now.
    let start = super::options::watch_start(req)?;
    let first = if start.initial_events {
        if let Some(rv) = start.resource_version {
            wait_for_revision(api, rv).await?;
        }
        Some(
            api.store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    limit: INITIAL_CHUNK,
                    ..Default::default()
                })
                .await?,
        )
    } else {
        None
    };
    let from = match (&first, start.resource_version) {
        (Some(page), _) => page.revision + 1,
        (None, Some(rv)) => {
            wait_for_revision(api, rv).await?;
            rv + 1
        }
        // No initial events and no revision: from now on.
        (None, None) => api.store.current_revision().await? + 1,
    };
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = req.flag("allowWatchBookmarks");
    // Started before the initial objects are sent: the store keeps what happens meanwhile.
    let mut events = api.store.watch(&prefix, from).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(api.watch_limits.buffer.max(1));
    let sink = Sink {
        tx,
        stall_timeout: api.watch_limits.stall_timeout,
        conn: req.conn.clone(),
    };
    let kind = t.res.kind.clone();
    let api_version = t.res.api_version();
    let store = api.store.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        if let Some(page) = first {
            let initial = send_initial(&store, &prefix, page, &sel, &enc, &sink);
            tokio::select! {
                done = initial => if !done { return },
                _ = &mut deadline => return,
            }
            // Watch-list: the client learns its initial state is complete (and at which
            // revision) from a bookmark annotated as the end of the initial events.
            if start.watch_list && bookmarks {
                let obj = json!({"kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": (from - 1).to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}});
                if !sink.send(enc.line("BOOKMARK", obj)).await {
                    return;
                }
            }
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        let mut last_rev = from - 1;
        loop {
            tokio::select! {
                ev = events.next() => {
                    let line = match ev {
                        Some(Ok(ev)) => {
                            last_rev = ev.revision();
                            match translate(&ev, &sel) {
                                Some((ty, obj)) => enc.line(ty, obj),
                                None => continue,
                            }
                        }
                        Some(Err(e)) => {
                            let status = ApiError::from(e).status();
                            sink.send(enc.line("ERROR", status)).await;
                            return;
                        }
                        None => return,
                    };
                    if !sink.send(line).await {
                        return;
                    }
                }
                // The client went away: free its place (and its count) at once.
                _ = sink.tx.closed() => return,
                _ = tick.tick() => {
                    if bookmarks && last_rev > 0 {
                        let obj = json!({"kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": last_rev.to_string()}});
                        if !sink.send(enc.line("BOOKMARK", obj)).await {
                            return;
                        }
                    }
                }
                _ = &mut deadline => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let ctype = if req.output.format == crate::proto::Format::Protobuf {
        crate::proto::WATCH_MEDIA_TYPE
    } else {
        "application/json"
    };
    Response::builder()
        .status(200)
        .header("content-type", ctype)
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Send the collection's objects as of `first.revision` as ADDED events, a chunk at a time,
/// each chunk read only once the client has taken the previous one. False when the watch is
/// over (client gone or stalled, or the store failed: then an ERROR event was sent).
async fn send_initial(
    store: &Arc<dyn yun_store::Store>,
    prefix: &str,
    first: yun_store::RangeResponse,
    sel: &Selector,
    enc: &Encoder,
    sink: &Sink,
) -> bool {
    let revision = first.revision;
    let mut page = first;
    loop {
        for kv in &page.kvs {
            if let Some(obj) = crate::meta::decode(kv).filter(|o| sel.matches(o)) {
                if !sink.send(enc.line("ADDED", obj)).await {
                    return false;
                }
            }
        }
        let Some(after) = page.continue_token.take() else {
            return true;
        };
        let next = store
            .range(RangeRequest {
                prefix: prefix.to_string(),
                limit: INITIAL_CHUNK,
                continue_after: Some(after),
                revision,
            })
            .await;
        page = match next {
            Ok(p) => p,
            Err(e) => {
                sink.send(enc.line("ERROR", ApiError::from(e).status()))
                    .await;
                return false;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yun_store::KeyValue;

    fn kv(labels: &str, create: i64, rev: i64) -> KeyValue {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": labels}}});
        KeyValue {
            key: "/registry/core/pods/default/a".into(),
            value: serde_json::to_vec(&obj).unwrap(),
            create_revision: create,
            mod_revision: rev,
            version: 1,
        }
    }

    #[test]
    fn selector_transitions() {
        let sel = Selector::parse(Some("app=web"), None).unwrap();
        let ev = |kind, kv, prev| Event {
            kind,
            kv,
            prev_kv: prev,
        };
        let t = |e: &Event| {
            translate(e, &sel).map(|(ty, o)| (ty, o["metadata"]["resourceVersion"].clone()))
        };
        assert_eq!(
            t(&ev(EventKind::Put, kv("web", 5, 5), None)),
            Some(("ADDED", json!("5")))
        );
        assert_eq!(
            t(&ev(EventKind::Put, kv("db", 5, 6), Some(kv("web", 5, 5)))),
            Some(("DELETED", json!("6")))
        );
        assert_eq!(
            t(&ev(EventKind::Put, kv("web", 5, 7), Some(kv("db", 5, 6)))),
            Some(("ADDED", json!("7")))
        );
        assert_eq!(
            t(&ev(EventKind::Put, kv("web", 5, 8), Some(kv("web", 5, 7)))),
            Some(("MODIFIED", json!("8")))
        );
        assert_eq!(t(&ev(EventKind::Put, kv("db", 9, 9), None)), None);
        let mut del = kv("", 5, 10);
        del.value.clear();
        assert_eq!(
            t(&ev(EventKind::Delete, del, Some(kv("web", 5, 8)))),
            Some(("DELETED", json!("10")))
        );
    }
}
