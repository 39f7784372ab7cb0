//! One behaviour suite, run against both backends: the embedded redb store and a real etcd.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use yun_store::{
    Error, Event, EventKind, KeyValue, Outcome, RangeRequest, Store, WatchStream, MAX_VALUE_BYTES,
};

/// Generates `embedded::NAME` and `etcd::NAME` tests from one `async fn NAME(store)`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = crate::common::embedded().await;
                    super::$name(h.store.clone()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = crate::common::etcd().await;
                    super::$name(h.store.clone()).await;
                }
            )*
        }
    };
}

suite!(
    revisions_and_versions,
    range_prefix_limit_continue,
    compare_and_swap,
    delete_returns_prev,
    watch_from_now_with_concurrent_writer,
    watch_from_past_revision,
    compaction,
    large_value_rejected,
);

async fn put(store: &Arc<dyn Store>, key: &str, value: &str) -> KeyValue {
    store
        .put(key, value.as_bytes().to_vec(), None)
        .await
        .expect("put")
        .done()
        .expect("unconditional put")
}

async fn next_event(w: &mut WatchStream) -> Result<Event, Error> {
    tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("watch event within 30s")
        .expect("watch stream open")
}

async fn revisions_and_versions(store: Arc<dyn Store>) {
    let a1 = put(&store, "/v/a", "1").await;
    assert_eq!(a1.version, 1);
    assert_eq!(a1.create_revision, a1.mod_revision);
    let a2 = put(&store, "/v/a", "2").await;
    assert_eq!(a2.mod_revision, a1.mod_revision + 1);
    assert_eq!(a2.create_revision, a1.create_revision);
    assert_eq!(a2.version, 2);
    let b = put(&store, "/v/b", "x").await;
    assert_eq!(b.mod_revision, a2.mod_revision + 1);
    assert_eq!(store.current_revision().await.unwrap(), b.mod_revision);
    assert_eq!(store.get("/v/a").await.unwrap(), Some(a2));
    assert_eq!(store.get("/v/missing").await.unwrap(), None);
}

async fn range_prefix_limit_continue(store: Arc<dyn Store>) {
    for k in ["a", "b", "c", "d", "e"] {
        put(&store, &format!("/r/{k}"), k).await;
    }
    put(&store, "/r", "parent").await;
    put(&store, "/s/x", "other").await;
    let keys = |kvs: &[KeyValue]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();

    let all = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&all.kvs), ["/r/a", "/r/b", "/r/c", "/r/d", "/r/e"]);
    assert_eq!(all.continue_token, None);

    let page1 = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&page1.kvs), ["/r/a", "/r/b"]);
    let token = page1.continue_token.clone().expect("more pages");

    // Changes between pages are invisible when paging at the first page's revision.
    store.delete("/r/c", None).await.unwrap().done().unwrap();
    put(&store, "/r/bb", "new").await;
    put(&store, "/r/d", "changed").await;

    let page2 = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            limit: 2,
            continue_after: Some(token),
            revision: page1.revision,
        })
        .await
        .unwrap();
    assert_eq!(keys(&page2.kvs), ["/r/c", "/r/d"]);
    assert_eq!(page2.kvs[1].value, b"d");
    assert_eq!(page2.revision, page1.revision);
    let page3 = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            limit: 2,
            continue_after: page2.continue_token.clone(),
            revision: page1.revision,
        })
        .await
        .unwrap();
    assert_eq!(keys(&page3.kvs), ["/r/e"]);
    assert_eq!(page3.continue_token, None);

    let now = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&now.kvs), ["/r/a", "/r/b", "/r/bb", "/r/d", "/r/e"]);
    assert!(now.revision > page1.revision);
}

async fn compare_and_swap(store: Arc<dyn Store>) {
    let created = store
        .put("/c/k", b"v1".to_vec(), Some(0))
        .await
        .unwrap()
        .done()
        .expect("create if absent");
    match store.put("/c/k", b"again".to_vec(), Some(0)).await.unwrap() {
        Outcome::Conflict { current } => assert_eq!(current, Some(created.clone())),
        other => panic!("create over existing key succeeded: {other:?}"),
    }
    let updated = store
        .put("/c/k", b"v2".to_vec(), Some(created.mod_revision))
        .await
        .unwrap()
        .done()
        .expect("update at current revision");
    assert_eq!(updated.version, 2);
    match store
        .put("/c/k", b"stale".to_vec(), Some(created.mod_revision))
        .await
        .unwrap()
    {
        Outcome::Conflict { current } => assert_eq!(current, Some(updated.clone())),
        other => panic!("stale update succeeded: {other:?}"),
    }
    match store.put("/c/none", b"x".to_vec(), Some(5)).await.unwrap() {
        Outcome::Conflict { current } => assert_eq!(current, None),
        other => panic!("update of missing key succeeded: {other:?}"),
    }
    assert_eq!(store.get("/c/k").await.unwrap().unwrap().value, b"v2");
}

async fn delete_returns_prev(store: Arc<dyn Store>) {
    let kv = put(&store, "/d/k", "v").await;
    match store
        .delete("/d/k", Some(kv.mod_revision - 1))
        .await
        .unwrap()
    {
        Outcome::Conflict { current } => assert_eq!(current, Some(kv.clone())),
        other => panic!("stale delete succeeded: {other:?}"),
    }
    let deleted = store
        .delete("/d/k", Some(kv.mod_revision))
        .await
        .unwrap()
        .done()
        .expect("delete");
    assert_eq!(deleted.prev_kv, kv);
    assert_eq!(deleted.revision, kv.mod_revision + 1);
    assert_eq!(store.current_revision().await.unwrap(), deleted.revision);
    assert_eq!(store.get("/d/k").await.unwrap(), None);
    assert_eq!(
        store.delete("/d/k", None).await.unwrap(),
        Outcome::Conflict { current: None }
    );
    // Re-creation starts a new life: version 1, new create_revision.
    let again = put(&store, "/d/k", "w").await;
    assert_eq!(again.version, 1);
    assert_eq!(again.create_revision, deleted.revision + 1);
}

/// Writes puts and deletes under `/w/` interleaved with writes elsewhere; returns the
/// revisions of the `/w/` writes in order.
async fn write_mix(store: Arc<dyn Store>, n: usize) -> Vec<(EventKind, i64)> {
    let mut revs = Vec::new();
    for i in 0..n {
        let key = format!("/w/k{}", i % 7);
        if i % 5 == 4 {
            if let Outcome::Done(d) = store.delete(&key, None).await.unwrap() {
                revs.push((EventKind::Delete, d.revision));
            }
        } else {
            let kv = put(&store, &key, &i.to_string()).await;
            revs.push((EventKind::Put, kv.mod_revision));
        }
        put(&store, &format!("/elsewhere/{i}"), "noise").await;
    }
    revs
}

async fn collect(w: &mut WatchStream, n: usize) -> Vec<(EventKind, i64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let ev = next_event(w).await.expect("watch event");
        assert!(ev.kv.key.starts_with("/w/"), "foreign key {}", ev.kv.key);
        if ev.kind == EventKind::Delete {
            assert!(ev.prev_kv.is_some(), "delete event carries prev_kv");
        }
        got.push((ev.kind, ev.revision()));
    }
    got
}

async fn watch_from_now_with_concurrent_writer(store: Arc<dyn Store>) {
    put(&store, "/w/before", "not delivered").await;
    let mut w = store.watch("/w/", 0).await.unwrap();
    let writer = tokio::spawn(write_mix(store.clone(), 300));
    // Several concurrent writers to another prefix shake up the global revision order.
    let mut noise = Vec::new();
    for t in 0..3 {
        let store = store.clone();
        noise.push(tokio::spawn(async move {
            for i in 0..100 {
                put(&store, &format!("/noise/{t}/{i}"), "n").await;
            }
        }));
    }
    let expected = writer.await.unwrap();
    for n in noise {
        n.await.unwrap();
    }
    let got = collect(&mut w, expected.len()).await;
    assert_eq!(got, expected, "every event, in order, once");
    // Nothing more is pending.
    put(&store, "/w/last", "x").await;
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(ev.kv.key, "/w/last");
}

async fn watch_from_past_revision(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap() + 1;
    let mut expected = write_mix(store.clone(), 100).await;
    let mut w = store.watch("/w/", start).await.unwrap();
    let writer = tokio::spawn(write_mix(store.clone(), 200));
    expected.extend(writer.await.unwrap());
    let got = collect(&mut w, expected.len()).await;
    assert_eq!(got, expected, "history then live, no gaps, no duplicates");
}

async fn compaction(store: Arc<dyn Store>) {
    let first = put(&store, "/k/a", "1").await;
    put(&store, "/k/a", "2").await;
    let mid = put(&store, "/k/b", "1").await;
    let last = put(&store, "/k/a", "3").await;
    store.compact(mid.mod_revision).await.unwrap();

    let old = RangeRequest {
        prefix: "/k/".into(),
        revision: first.mod_revision,
        ..Default::default()
    };
    match store.range(old).await {
        Err(Error::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, mid.mod_revision),
        other => panic!("range at compacted revision: {other:?}"),
    }
    let mut w = store.watch("/k/", first.mod_revision).await.unwrap();
    match next_event(&mut w).await {
        Err(Error::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, mid.mod_revision),
        other => panic!("watch from compacted revision: {other:?}"),
    }
    // From the compact revision itself history is still there.
    let at_mid = store
        .range(RangeRequest {
            prefix: "/k/".into(),
            revision: mid.mod_revision,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(at_mid.kvs.len(), 2);
    assert_eq!(at_mid.kvs[0].value, b"2");
    let mut w = store.watch("/k/", mid.mod_revision).await.unwrap();
    assert_eq!(
        next_event(&mut w).await.unwrap().revision(),
        mid.mod_revision
    );
    assert_eq!(
        next_event(&mut w).await.unwrap().revision(),
        last.mod_revision
    );
    assert_eq!(store.get("/k/a").await.unwrap(), Some(last.clone()));
    // Compacting again at or below the compact revision is itself "compacted".
    assert!(matches!(
        store.compact(mid.mod_revision).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        store.compact(last.mod_revision + 100).await,
        Err(Error::FutureRevision { .. })
    ));
}

async fn large_value_rejected(store: Arc<dyn Store>) {
    let big = vec![7u8; 1024 * 1024];
    let kv = store
        .put("/big/ok", big.clone(), None)
        .await
        .unwrap()
        .done()
        .unwrap();
    assert_eq!(store.get("/big/ok").await.unwrap().unwrap().value, big);
    let rev = kv.mod_revision;
    match store
        .put("/big/no", vec![0u8; MAX_VALUE_BYTES + 1], None)
        .await
    {
        Err(Error::TooLarge { size, limit, .. }) => {
            assert_eq!(size, MAX_VALUE_BYTES + 1);
            assert_eq!(limit, MAX_VALUE_BYTES);
        }
        other => panic!("oversized put: {other:?}"),
    }
    assert_eq!(store.current_revision().await.unwrap(), rev);
}

#[tokio::test]
async fn bad_spec_is_one_clear_error() {
    let dir = common::temp_dir("spec");
    for spec in ["sqlite", "etcd://", "etcd://host", "etcd://host:notaport"] {
        let err = match yun_store::open(spec, dir.path()).await {
            Err(e) => e,
            Ok(_) => panic!("spec {spec:?} accepted"),
        };
        assert!(matches!(err, Error::InvalidSpec(_)), "{spec}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(spec) && !msg.contains('\n'), "{msg}");
    }
}
