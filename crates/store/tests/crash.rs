//! Embedded backend only: the redb file survives a process that dies without closing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use futures::StreamExt;
use yun_store::{RangeRequest, Store};

const CHILD_ENV: &str = "YUN_STORE_CRASH_CHILD_DIR";

/// In the child process: put `/crash/N` and `counter = N` in a loop, printing `ACK N` after
/// each put returns. Does nothing when run as an ordinary test.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = yun_store::open("embedded", dir.as_ref()).await.unwrap();
        let mut out = std::io::stdout();
        for n in 0u64.. {
            let value = n.to_string().into_bytes();
            store
                .put(&format!("/crash/{n:08}"), value.clone(), None)
                .await
                .unwrap();
            store.put("counter", value, None).await.unwrap();
            writeln!(out, "ACK {n}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn killed_writer_leaves_last_acknowledged_put() {
    let dir = common::temp_dir("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_ack = None;
    // Run past several redb commits (every 100 ms) so recovery needs both the redb file
    // and the write-ahead log written since its last commit.
    let started = std::time::Instant::now();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            last_ack = Some(n.parse::<u64>().unwrap());
            if last_ack >= Some(300) && started.elapsed() > std::time::Duration::from_millis(500) {
                break;
            }
        }
    }
    child.kill().unwrap();
    // Acknowledgements already printed before the kill landed count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("ACK ") {
            last_ack = Some(n.parse::<u64>().unwrap());
        }
    }
    child.wait().unwrap();
    let last_ack = last_ack.expect("child acknowledged puts");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = yun_store::open("embedded", dir.path()).await.unwrap();
        let counter = store
            .get("counter")
            .await
            .unwrap()
            .expect("counter present");
        let counter: u64 = String::from_utf8(counter.value).unwrap().parse().unwrap();
        assert!(
            counter >= last_ack,
            "counter {counter} < last ack {last_ack}"
        );
        let all = store
            .range(RangeRequest {
                prefix: "/crash/".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(all.kvs.len() as u64 > last_ack);
        for (i, kv) in all.kvs.iter().enumerate() {
            assert_eq!(kv.key, format!("/crash/{i:08}"), "no holes");
        }
        // The reopened store keeps counting from where it stopped.
        let rev = store.current_revision().await.unwrap();
        let kv = store
            .put("after", b"x".to_vec(), None)
            .await
            .unwrap()
            .done()
            .unwrap();
        assert_eq!(kv.mod_revision, rev + 1);
    });
}

#[tokio::test]
async fn drop_without_close_then_reopen() {
    let dir = common::temp_dir("reopen");
    let (rev, first) = {
        let store = yun_store::open("embedded", dir.path()).await.unwrap();
        let first = store
            .put("/a", b"1".to_vec(), None)
            .await
            .unwrap()
            .done()
            .unwrap();
        store.put("/a", b"2".to_vec(), None).await.unwrap();
        store.put("/b", b"3".to_vec(), None).await.unwrap();
        (store.current_revision().await.unwrap(), first)
        // dropped here without any close call
    };
    let store = yun_store::open("embedded", dir.path()).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), rev);
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.version), (&b"2"[..], 2));
    // History survived too: a watch from the first write replays it.
    let mut w = store.watch("/", first.mod_revision).await.unwrap();
    let mut revs = Vec::new();
    for _ in 0..3 {
        revs.push(w.next().await.unwrap().unwrap().revision());
    }
    assert_eq!(revs, [rev - 2, rev - 1, rev]);
}

/// A slow watcher that falls behind the live broadcast catches up from the log without
/// losing or repeating events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_catches_up_from_log() {
    let h = common::embedded().await;
    let store: std::sync::Arc<dyn Store> = h.store.clone();
    let mut w = store.watch("/lag/", 0).await.unwrap();
    let start = store.current_revision().await.unwrap();
    let n = 20_000;
    let mut writers = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..n / 4 {
                store
                    .put(&format!("/lag/{t}/{i}"), b"x".to_vec(), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for wr in writers {
        wr.await.unwrap();
    }
    for expect in start + 1..=start + n {
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.revision(), expect);
    }
}

/// Reads merge writes not yet committed to redb (the overlay) with committed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_merge_committed_and_pending_writes() {
    let h = common::embedded().await;
    let store = h.store.clone();
    for i in 0..20 {
        store
            .put(&format!("/m/{i:02}"), b"old".to_vec(), None)
            .await
            .unwrap();
    }
    let before = store.current_revision().await.unwrap();
    // Past the 100 ms commit interval: the above is in redb, what follows in the overlay.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    store.put("/m/00", b"idle".to_vec(), None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for i in (0..20).step_by(3) {
        store.delete(&format!("/m/{i:02}"), None).await.unwrap();
    }
    store.put("/m/05", b"new".to_vec(), None).await.unwrap();
    store.put("/m/055", b"added".to_vec(), None).await.unwrap();
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: "/m/".into(),
                limit: 4,
                continue_after: token,
                revision: 0,
            })
            .await
            .unwrap();
        keys.extend(page.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())));
        token = page.continue_token;
        if token.is_none() {
            break;
        }
    }
    let mut expect: Vec<(String, Vec<u8>)> = (0..20)
        .filter(|i| i % 3 != 0)
        .map(|i| (format!("/m/{i:02}"), b"old".to_vec()))
        .collect();
    expect[3].1 = b"new".to_vec(); // /m/05
    expect.insert(4, ("/m/055".into(), b"added".to_vec()));
    assert_eq!(keys, expect);
    assert_eq!(store.get("/m/03").await.unwrap(), None);
    assert_eq!(store.get("/m/05").await.unwrap().unwrap().value, b"new");
    // The state before the deletes, across committed and pending history.
    let old = store
        .range(RangeRequest {
            prefix: "/m/".into(),
            revision: before,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(old.kvs.len(), 20);
    assert!(old.kvs.iter().all(|kv| kv.value == b"old"));
}

/// Puts run on the callers' threads (group commit, one leader at a time): callers that give
/// up mid-way neither stall the others nor leave their write to surface later, and every
/// put that returned is there with consecutive revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_puts_neither_stall_nor_linger() {
    let h = common::embedded().await;
    let store = h.store.clone();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..200 {
                let key = format!("/cancel/{t}/{i}");
                let put = store.put(&key, b"x".to_vec(), None);
                // Every third put gives up almost at once, often while queued.
                if i % 3 == 0 {
                    let _ = tokio::time::timeout(std::time::Duration::from_micros(50), put).await;
                } else {
                    let mod_rev = put.await.unwrap().done().unwrap().mod_revision;
                    done.push((key, mod_rev));
                }
            }
            done
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let rev = store.current_revision().await.unwrap();
    // Nothing queued by a cancelled put shows up after everybody stopped.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(store.current_revision().await.unwrap(), rev);
    for (key, mod_rev) in &acked {
        assert_eq!(
            store.get(key).await.unwrap().unwrap().mod_revision,
            *mod_rev
        );
    }
    let all = store
        .range(RangeRequest {
            prefix: "/cancel/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut revs: Vec<i64> = all.kvs.iter().map(|kv| kv.mod_revision).collect();
    revs.sort_unstable();
    assert!(
        revs.windows(2).all(|w| w[1] == w[0] + 1),
        "revisions without gaps"
    );
    assert!(all.kvs.len() >= acked.len());
}
