//! Store benchmark, driven by bench/store.sh: put throughput (one writer, many writers)
//! and watch delivery latency with many watchers, against one store spec.
//!
//! Usage: bench SPEC DATA_DIR [PUTS] [WRITERS] [WATCHERS]
//! Prints one line: `puts_1w puts_nw watch_p50_us watch_p99_us` (numbers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use yun_store::Store;

fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i)
        .map_or(default, |s| s.parse().expect("numeric argument"))
}

async fn puts_per_sec(store: &Arc<dyn Store>, tag: &str, puts: usize, writers: usize) -> f64 {
    let value = vec![b'x'; 100];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = value.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..puts / writers {
                store
                    .put(&format!("/bench/{tag}/{w}/{i}"), value.clone(), None)
                    .await
                    .expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    (puts / writers * writers) as f64 / started.elapsed().as_secs_f64()
}

/// Each put carries its send time; every watcher records how long each event took.
async fn watch_latency(store: &Arc<dyn Store>, watchers: usize, events: usize) -> (f64, f64) {
    let base = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut w = store.watch("/lat/", 0).await.expect("watch");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(events);
            while lat.len() < events {
                let ev = w.next().await.expect("stream open").expect("event");
                let sent = u64::from_le_bytes(ev.kv.value[..8].try_into().expect("8 bytes"));
                lat.push(base.elapsed().as_nanos() as u64 - sent);
            }
            lat
        }));
    }
    for i in 0..events {
        let sent = (base.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
        store
            .put(&format!("/lat/{}", i % 10), sent, None)
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("watcher"));
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (pct(0.5), pct(0.99))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bench SPEC DATA_DIR [PUTS] [WRITERS] [WATCHERS]");
        std::process::exit(2);
    }
    let puts = arg(&args, 3, 5000);
    let writers = arg(&args, 4, 16);
    let watchers = arg(&args, 5, 100);
    let store = yun_store::open(&args[1], args[2].as_ref())
        .await
        .unwrap_or_else(|e| {
            eprintln!("bench: {e}");
            std::process::exit(1);
        });
    let one = puts_per_sec(&store, "one", puts, 1).await;
    let many = puts_per_sec(&store, "many", puts * 4, writers).await;
    let (p50, p99) = watch_latency(&store, watchers, 200).await;
    println!("{one:.0} {many:.0} {p50:.0} {p99:.0}");
}
