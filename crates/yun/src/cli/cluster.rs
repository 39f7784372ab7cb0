//! `yun up`, `yun agent` and `yun down`: the control plane and the node agent in one process
//! (like k3s server), an agent joining a control plane (like k3s agent), and taking a node's
//! pods down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use kube::config::{KubeConfigOptions, Kubeconfig};
use yun_agent::node::AgentConfig;
use yun_agent::{NodeConfig, PodRuntime};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a whole cloud on this machine: store, API server, controllers, scheduler and a node
    /// agent. Writes DATA_DIR/kubeconfig for kubectl.
    Up {
        #[arg(long, default_value = "127.0.0.1:6443")]
        addr: SocketAddr,
        /// "embedded" (a file in the data dir) or "etcd://HOST:PORT".
        #[arg(long, default_value = "embedded")]
        store: String,
        #[command(flatten)]
        node: NodeFlags,
    },
    /// Run a node agent that joins the control plane in KUBECONFIG.
    Agent {
        /// The API server URL (default: the kubeconfig's).
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        node: NodeFlags,
    },
    /// Stop and remove every pod container this node runs, and its bridge.
    Down {
        #[command(flatten)]
        node: NodeFlags,
    },
}

#[derive(clap::Args, Debug)]
pub struct NodeFlags {
    /// The node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// The pod bridge.
    #[arg(long, default_value = "yun0")]
    bridge: String,
    /// The node's pod subnet (k3s' range; podman's default network takes 10.88.0.0/16).
    #[arg(long, default_value = "10.42.0.0/24")]
    pod_cidr: String,
}

impl NodeFlags {
    fn node_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().to_lowercase())
                .unwrap_or_else(|_| "yun".into())
        })
    }

    fn config(&self, data_dir: &Path) -> Result<NodeConfig> {
        let exe = std::env::current_exe().context("locating the yun binary")?;
        let mut cfg = NodeConfig::new(data_dir, &exe);
        cfg.bridge = self.bridge.clone();
        cfg.pod_cidr = self
            .pod_cidr
            .parse()
            .with_context(|| format!("--pod-cidr {}", self.pod_cidr))?;
        Ok(cfg)
    }
}

pub fn run(data_dir: &Path, cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Down { node } => {
            let rt = PodRuntime::open(node.config(data_dir)?)?;
            let uids = rt.pod_uids();
            for uid in &uids {
                rt.remove(uid, std::time::Duration::from_secs(10))?;
            }
            rt.network().remove()?;
            println!("removed {} pod(s) and bridge {}", uids.len(), node.bridge);
            Ok(0)
        }
        Cmd::Up { addr, store, node } => {
            let cfg = node.config(data_dir)?;
            let tokio = tokio::runtime::Runtime::new()?;
            tokio.block_on(up(data_dir, addr, store, node.node_name(), cfg))
        }
        Cmd::Agent {
            server,
            kubeconfig,
            node,
        } => {
            let cfg = node.config(data_dir)?;
            let tokio = tokio::runtime::Runtime::new()?;
            tokio.block_on(async {
                let client = client(&kubeconfig, server.as_deref()).await?;
                let rt = open_runtime(cfg).await?;
                eprintln!("yun agent: node {} joined", node.node_name());
                tokio::select! {
                    r = yun_agent::node::run(client, agent_config(&node.node_name(), &kubeconfig)?, rt) => r?,
                    _ = shutdown_signal() => {}
                }
                Ok(0)
            })
        }
    }
}

async fn client(kubeconfig: &Path, server: Option<&str>) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    if let Some(url) = server {
        config.cluster_url = url.parse().with_context(|| format!("--server {url}"))?;
    }
    Ok(kube::Client::try_from(config)?)
}

/// The bearer token in a kubeconfig (its first user's), which the agent also demands of
/// callers of its log endpoint (the API server proxying `kubectl logs`).
fn kubeconfig_token(kubeconfig: &Path) -> Result<String> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not YAML", kubeconfig.display()))?;
    v["users"][0]["user"]["token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}: no users[0].user.token", kubeconfig.display()))
}

fn agent_config(name: &str, kubeconfig: &Path) -> Result<AgentConfig> {
    let mut cfg = AgentConfig::new(name);
    cfg.logs = Some((0, kubeconfig_token(kubeconfig)?));
    Ok(cfg)
}

async fn open_runtime(cfg: NodeConfig) -> Result<Arc<PodRuntime>> {
    // Opening brings up the bridge through netlink, which blocks.
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || PodRuntime::open(cfg)).await??,
    ))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn up(
    data_dir: &Path,
    addr: SocketAddr,
    store: String,
    node_name: String,
    cfg: NodeConfig,
) -> Result<i32> {
    let server = yun_apiserver::start(yun_apiserver::Config {
        addr,
        data_dir: data_dir.to_path_buf(),
        store,
        compaction_interval: yun_apiserver::DEFAULT_COMPACTION_INTERVAL,
    })
    .await?;
    let client = client(&server.kubeconfig, None).await?;
    let rt = open_runtime(cfg).await?;
    let identity = format!("{node_name}_{}", std::process::id());
    let controllers = tokio::spawn(yun_controllers::manager::run(client.clone(), identity));
    let agent = tokio::spawn(yun_agent::node::run(
        client,
        agent_config(&node_name, &server.kubeconfig)?,
        rt,
    ));
    println!(
        "yun up: API server at https://{}, node {node_name}\n\n    export KUBECONFIG={}\n    kubectl get nodes\n",
        server.addr,
        server.kubeconfig.display()
    );
    let agent_abort = agent.abort_handle();
    tokio::select! {
        r = agent => { r??; }
        _ = shutdown_signal() => {}
    }
    // Stop the clients of the API before the API itself, so nothing reports a vanished server.
    agent_abort.abort();
    controllers.abort();
    // Pods keep running: the next `yun up` on this data dir adopts them (`yun down` stops them).
    server.shutdown().await;
    Ok(0)
}
