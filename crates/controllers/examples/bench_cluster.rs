//! The control plane's benchmarks (bench/cluster.sh runs them against real yun processes):
//!
//!   bench populate KUBECONFIG NODES PODS CLIENTS   simulated nodes (Node + Lease, no agent)
//!                                                  and unscheduled pods, created concurrently
//!   bench schedule KUBECONFIG PODS                 watch pods get bound; prints pods/s
//!   bench podstart KUBECONFIG PODS RATE            create pods at RATE/s on a real node and
//!                                                  time create → Ready; prints p50/p99/max
//!
//! `schedule` is measured the way Kubernetes' scheduler_perf does: the nodes and pods exist
//! first, then the scheduler starts (the script starts `yun controller-manager` once this
//! prints "watching"), and the rate is bound pods over the time from the first binding seen
//! to the last.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

async fn config(path: &str) -> anyhow::Result<kube::Config> {
    let kc = Kubeconfig::read_from(path)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i).map(String::as_str).ok_or_else(|| {
            anyhow::anyhow!("usage: see the header of crates/controllers/examples/bench_cluster.rs")
        })
    };
    let cfg = config(arg(2)?).await?;
    match arg(1)? {
        "populate" => populate(cfg, arg(3)?.parse()?, arg(4)?.parse()?, arg(5)?.parse()?).await,
        "schedule" => schedule(cfg, arg(3)?.parse()?).await,
        "podstart" => podstart(cfg, arg(3)?.parse()?, arg(4)?.parse()?).await,
        other => anyhow::bail!("unknown benchmark {other}"),
    }
}

/// Run `n` jobs over `clients` concurrent kube clients, job `i` on client `i % clients`.
async fn fan_out<F, Fut>(cfg: &kube::Config, n: usize, clients: usize, job: F) -> anyhow::Result<()>
where
    F: Fn(kube::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let job = Arc::new(job);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = kube::Client::try_from(cfg.clone())?;
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                job(client.clone(), i).await?;
                i += clients;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn populate(
    cfg: kube::Config,
    nodes: usize,
    pods: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let start = Instant::now();
    fan_out(&cfg, nodes, clients, |client, i| async move {
        let name = format!("yun-sim-{i:04}");
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
            "spec": {"podCIDR": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)},
        }))?;
        let api = Api::<Node>::all(client.clone());
        api.create(&PostParams::default(), &node).await?;
        let status = json!({"status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                     "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                         k8s_openapi::jiff::Timestamp::now())},
        }))?;
        Api::<Lease>::namespaced(client, "kube-node-lease")
            .create(&PostParams::default(), &lease)
            .await?;
        Ok(())
    })
    .await?;
    let nodes_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    fan_out(&cfg, pods, clients, |client, i| async move {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("sim-{i:05}"), "labels": {"app": "sim", "shard": format!("{}", i % 10)}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
        }))?;
        Api::<Pod>::namespaced(client, "default")
            .create(&PostParams::default(), &pod)
            .await?;
        Ok(())
    })
    .await?;
    eprintln!(
        "populated {nodes} nodes in {nodes_secs:.1} s and {pods} pods in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

async fn schedule(cfg: kube::Config, pods: usize) -> anyhow::Result<()> {
    let api = Api::<Pod>::namespaced(kube::Client::try_from(cfg)?, "default");
    let list = api.list(&ListParams::default().labels("app=sim")).await?;
    let mut bound: std::collections::HashSet<String> = list
        .items
        .iter()
        .filter(|p| node_of(p).is_some())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let already = bound.len();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    let version = list.metadata.resource_version.unwrap_or_default();
    let wp = WatchParams::default().labels("app=sim").timeout(290);
    let mut stream = api.watch(&wp, &version).await?.boxed();
    eprintln!("watching ({already} of {pods} bound already)");
    let (mut first, mut last) = (None, None);
    let watch_start = Instant::now();
    while bound.len() < pods {
        let Some(event) = stream.try_next().await? else {
            anyhow::bail!("the watch ended with {} of {pods} bound", bound.len());
        };
        if let WatchEvent::Modified(p) = event {
            if let (Some(node), Some(name)) = (node_of(&p), p.metadata.name.clone()) {
                if bound.insert(name) {
                    *per_node.entry(node.to_string()).or_default() += 1;
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = Some(now);
                }
            }
        }
    }
    let (first, last) = (first.unwrap_or(watch_start), last.unwrap_or(watch_start));
    let secs = (last - first).as_secs_f64().max(1e-3);
    let newly = pods - already;
    let (min, max) = (
        per_node.values().min().copied().unwrap_or(0),
        per_node.values().max().copied().unwrap_or(0),
    );
    eprintln!(
        "{newly} pods bound in {secs:.2} s after the first binding ({:.2} s after the watch began); {} nodes used, {min}..{max} pods each",
        (last - watch_start).as_secs_f64(),
        per_node.len()
    );
    println!("{:.0}", newly as f64 / secs);
    Ok(())
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn podstart(cfg: kube::Config, pods: usize, rate: f64) -> anyhow::Result<()> {
    let client = kube::Client::try_from(cfg)?;
    let api = Api::<Pod>::namespaced(client, "default");
    let run = std::process::id();
    let label = format!("yun-podstart={run}");
    let version = api
        .list(&ListParams::default().labels(&label).limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api
        .watch(
            &WatchParams::default().labels(&label).timeout(290),
            &version,
        )
        .await?
        .boxed();
    // Create on a task of its own, one pod every 1/rate s, noting when each request went out.
    let created: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let creator = {
        let (api, created) = (api.clone(), created.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            for i in 0..pods {
                tick.tick().await;
                let name = format!("podstart-{run}-{i:03}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"yun-podstart": run.to_string()}},
                    "spec": {"terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "c", "image": "busybox",
                        "command": ["sleep", "3600"]}]}
                }))?;
                created.lock().expect("lock").insert(name, Instant::now());
                api.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut latencies: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120 + (pods as f64 / rate) as u64);
    while latencies.len() < pods {
        let event = tokio::time::timeout_at(deadline.into(), stream.try_next())
            .await
            .map_err(|_| {
                anyhow::anyhow!("only {} of {pods} pods became Ready", latencies.len())
            })??;
        let Some(event) = event else {
            anyhow::bail!("the watch ended");
        };
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event {
            let name = p.metadata.name.clone().unwrap_or_default();
            if ready(&p) && !latencies.contains_key(&name) {
                if let Some(t) = created.lock().expect("lock").get(&name) {
                    latencies.insert(name, t.elapsed());
                }
            }
        }
    }
    creator.await??;
    let mut all: Vec<Duration> = latencies.into_values().collect();
    all.sort();
    let pct = |q: f64| all[((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1];
    println!(
        "{:.0} {:.0} {:.0}",
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        all[all.len() - 1].as_secs_f64() * 1000.0
    );
    // Clean up: every pod deleted and gone before returning.
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&label),
    )
    .await?;
    let gone_by = Instant::now() + Duration::from_secs(120);
    while !api
        .list(&ListParams::default().labels(&label))
        .await?
        .items
        .is_empty()
    {
        anyhow::ensure!(Instant::now() < gone_by, "pods still there after 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
