//! Pods created per second through the API server with concurrent kube-rs clients.
//!
//!   cargo run --release -p yun-apiserver --example bench_api -- KUBECONFIG PODS CLIENTS
//!
//! Prints `pods_per_second`. Each client is a tokio task with its own connection pool
//! (its own kube::Client) doing POSTs back to back.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(pods), Some(clients)) = (args.get(1), args.get(2), args.get(3)) else {
        anyhow::bail!("usage: bench KUBECONFIG PODS CLIENTS");
    };
    let pods: usize = pods.parse()?;
    let clients: usize = clients.parse()?;
    let kc = Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let run = format!("{}", std::process::id());
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..clients {
        let client = kube::Client::try_from(config.clone())?;
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, "default");
            let mut i = c;
            while i < pods {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("bench-{run}-{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                i += clients;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.0}", pods as f64 / secs);
    Ok(())
}
