//! `yun up`, `yun agent`, `yun controller-manager` and `yun down`: the control plane and the
//! node agent in one process (like k3s server), an agent joining a control plane (like k3s
//! agent), the controllers on their own, and taking a node's pods down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use kube::config::{KubeConfigOptions, Kubeconfig};
use yun_agent::node::AgentConfig;
use yun_agent::record::NodeRecord;
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
        /// Where Service virtual IPs come from (k3s' flag and default).
        #[arg(long, default_value = yun_apiserver::DEFAULT_SERVICE_CIDR)]
        service_cidr: yun_apiserver::ServiceRange,
        /// Run only the control plane; nodes join with `yun agent` (k3s' --disable-agent).
        #[arg(long)]
        disable_agent: bool,
        #[command(flatten)]
        api: super::server::ApiFlags,
        #[command(flatten)]
        lifecycle: LifecycleFlags,
        #[command(flatten)]
        node: NodeFlags,
        #[command(flatten)]
        s3: super::s3up::S3Flags,
    },
    /// Run the scheduler and the controllers against the API server in KUBECONFIG (what
    /// `yun up` runs in-process; kube-controller-manager and kube-scheduler in one). Several
    /// may run: one leads, through a Lease, and the others wait.
    ControllerManager {
        /// The API server URL (default: the kubeconfig's).
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        lifecycle: LifecycleFlags,
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

/// Node lifecycle timing (kube-controller-manager's flags of the same names).
#[derive(clap::Args, Debug)]
pub struct LifecycleFlags {
    /// How long a node may go without renewing its Lease before it is marked unreachable.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    node_monitor_grace_period: Duration,
    /// How long an unreachable node keeps its pods before they are deleted (and replaced
    /// elsewhere by their controllers).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pod_eviction_timeout: Duration,
}

impl LifecycleFlags {
    fn timing(&self) -> yun_controllers::loops::nodes::Timing {
        yun_controllers::loops::nodes::Timing::new(
            self.node_monitor_grace_period,
            self.pod_eviction_timeout,
        )
    }
}

/// Who this process is in the controller manager's Lease.
fn identity() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "yun".into());
    format!("{host}_{}", std::process::id())
}

#[derive(clap::Args, Debug)]
pub struct NodeFlags {
    /// The node's name (default: the recorded one, else the host name).
    #[arg(long)]
    name: Option<String>,
    /// The pod bridge (default: the recorded one, else yun0).
    #[arg(long)]
    bridge: Option<String>,
    /// The node's pod subnet (default: the recorded one, else k3s' 10.42.0.0/24; podman's
    /// default network takes 10.88.0.0/16).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// How long the node's Lease is valid; it is renewed every quarter of that.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    node_lease_duration: Duration,
    /// How often the node agent syncs every pod without a change to it (the kubelet's
    /// --sync-frequency): the pass that runs probes and catches what no event reports.
    /// Container exits and pod changes sync a pod at once, whatever this is.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    sync_frequency: Duration,
    /// Rotate a container's log when it reaches this size (the kubelet's
    /// containerLogMaxSize), e.g. 10Mi.
    #[arg(long, default_value = "10Mi", value_parser = yun_engine::logfile::parse_size)]
    container_log_max_size: u64,
    /// Log files kept per container, the current one included (containerLogMaxFiles).
    #[arg(long, default_value_t = 5)]
    container_log_max_files: u32,
}

impl NodeFlags {
    /// The node's identity: flags first, then what `up`/`agent` recorded in the data dir,
    /// then the defaults. So `down` acts on the bridge the node really made.
    fn resolve(&self, data_dir: &Path) -> Result<NodeRecord> {
        let recorded = NodeRecord::load(data_dir)?;
        let name = self
            .name
            .clone()
            .or_else(|| recorded.as_ref().map(|r| r.name.clone()))
            .unwrap_or_else(|| {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().to_lowercase())
                    .unwrap_or_else(|_| "yun".into())
            });
        let bridge = self
            .bridge
            .clone()
            .or_else(|| recorded.as_ref().map(|r| r.bridge.clone()))
            .unwrap_or_else(|| "yun0".into());
        let pod_cidr = self
            .pod_cidr
            .clone()
            .or_else(|| recorded.as_ref().map(|r| r.pod_cidr.clone()))
            .unwrap_or_else(|| "10.42.0.0/24".into());
        Ok(NodeRecord {
            name,
            bridge,
            pod_cidr,
        })
    }

    fn config(&self, record: &NodeRecord, data_dir: &Path) -> Result<NodeConfig> {
        let exe = std::env::current_exe().context("locating the yun binary")?;
        let mut cfg = NodeConfig::new(data_dir, &exe);
        cfg.bridge = record.bridge.clone();
        cfg.pod_cidr = record
            .pod_cidr
            .parse()
            .with_context(|| format!("--pod-cidr {}", record.pod_cidr))?;
        cfg.log_rotation = yun_engine::logfile::Rotation::new(
            self.container_log_max_size,
            self.container_log_max_files,
        )
        .context("--container-log-max-size/--container-log-max-files")?;
        Ok(cfg)
    }

    /// The node's config for `up`/`agent`, recorded for the next `down`.
    fn start(&self, data_dir: &Path) -> Result<(NodeRecord, NodeConfig)> {
        let record = self.resolve(data_dir)?;
        let cfg = self.config(&record, data_dir)?;
        record.save(data_dir)?;
        Ok((record, cfg))
    }
}

pub fn run(data_dir: &Path, cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Down { node } => {
            let record = node.resolve(data_dir)?;
            let rt = PodRuntime::open(node.config(&record, data_dir)?)?;
            let uids = rt.pod_uids();
            for uid in &uids {
                rt.remove(uid, std::time::Duration::from_secs(10))?;
            }
            yun_net::proxy::ServiceProxy::new(&record.bridge)?.remove()?;
            rt.network().remove()?;
            let volumes = yun_agent::storage::NodeStorage::release_all(data_dir)?;
            println!(
                "removed {} pod(s), bridge {} and its service rules; released {volumes} volume(s)",
                uids.len(),
                record.bridge
            );
            Ok(0)
        }
        Cmd::Up {
            addr,
            store,
            service_cidr,
            disable_agent,
            api,
            lifecycle,
            node,
            s3,
        } => {
            let plane = ControlPlane {
                addr,
                store,
                service_cidr,
                api,
                nodes: lifecycle.timing(),
                s3,
            };
            let agent = if disable_agent {
                None
            } else {
                Some(node.start(data_dir)?)
            };
            let tokio = tokio::runtime::Runtime::new()?;
            tokio.block_on(up(data_dir, plane, &node, agent))
        }
        Cmd::ControllerManager {
            server,
            kubeconfig,
            lifecycle,
        } => {
            let tokio = tokio::runtime::Runtime::new()?;
            tokio.block_on(async {
                let client = client(&kubeconfig, server.as_deref(), CONTROLLER_MANAGER).await?;
                tokio::select! {
                    _ = yun_controllers::manager::run(
                        client,
                        identity(),
                        lifecycle.timing(),
                        kubeconfig_ca(&kubeconfig)?,
                    ) => {}
                    _ = shutdown_signal() => {}
                }
                Ok(0)
            })
        }
        Cmd::Agent {
            server,
            kubeconfig,
            node,
        } => {
            let (record, cfg) = node.start(data_dir)?;
            let tokio = tokio::runtime::Runtime::new()?;
            tokio.block_on(async {
                let client = client(&kubeconfig, server.as_deref(), AGENT).await?;
                let rt = open_runtime(cfg).await?;
                eprintln!("yun agent: node {} joined", record.name);
                let agent = agent_config(&record, &node, &kubeconfig)?;
                tokio::select! {
                    r = yun_agent::node::run(client, agent, rt) => r?,
                    _ = shutdown_signal() => {}
                }
                Ok(0)
            })
        }
    }
}

/// The User-Agent products yun's own API clients send: the API server records each one's
/// writes in `metadata.managedFields` under this name, as Kubernetes does for
/// `kube-controller-manager` and `kubelet`.
const CONTROLLER_MANAGER: &str = "yun-controller-manager";
const AGENT: &str = "yun-agent";

async fn client(kubeconfig: &Path, server: Option<&str>, product: &str) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    if let Some(url) = server {
        config.cluster_url = url.parse().with_context(|| format!("--server {url}"))?;
    }
    let agent = format!("{product}/v{}", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_str(&agent)?,
    ));
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

/// The cluster CA (PEM) from a kubeconfig's first cluster: what the controllers publish as
/// every namespace's `kube-root-ca.crt`.
fn kubeconfig_ca(kubeconfig: &Path) -> Result<String> {
    use base64::Engine;
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not YAML", kubeconfig.display()))?;
    let cluster = &v["clusters"][0]["cluster"];
    if let Some(data) = cluster["certificate-authority-data"].as_str() {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("{}: certificate-authority-data", kubeconfig.display()))?;
        return String::from_utf8(pem)
            .with_context(|| format!("{}: certificate-authority-data", kubeconfig.display()));
    }
    let file = cluster["certificate-authority"]
        .as_str()
        .with_context(|| format!("{}: the first cluster names no CA", kubeconfig.display()))?;
    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
}

/// Where pods reach an API server bound to `addr` on a node whose bridge gateway is
/// `gateway`: (the address advertised, where a relay must listen). Pods route to the server's
/// own address when it is a real one (advertised as bound), to the gateway when the server
/// listens on every address, and when it listens on loopback only, to a relay on the gateway
/// (port 0 is not advertised: the port is not known before binding).
fn pod_route_to_api(
    addr: SocketAddr,
    gateway: Option<std::net::Ipv4Addr>,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let (ip, port) = (addr.ip(), addr.port());
    match gateway {
        Some(gw) if port != 0 && ip.is_loopback() => {
            let at = SocketAddr::new(gw.into(), port);
            (Some(at), Some(at))
        }
        Some(gw) if port != 0 && ip.is_unspecified() => {
            (Some(SocketAddr::new(gw.into(), port)), None)
        }
        _ => (None, None),
    }
}

fn agent_config(record: &NodeRecord, node: &NodeFlags, kubeconfig: &Path) -> Result<AgentConfig> {
    let mut cfg = AgentConfig::new(&record.name);
    cfg.lease_duration = node.node_lease_duration;
    cfg.sync_period = node.sync_frequency;
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

/// What `yun up` runs besides an agent.
struct ControlPlane {
    addr: SocketAddr,
    store: String,
    service_cidr: yun_apiserver::ServiceRange,
    api: super::server::ApiFlags,
    nodes: yun_controllers::loops::nodes::Timing,
    s3: super::s3up::S3Flags,
}

async fn up(
    data_dir: &Path,
    plane: ControlPlane,
    node: &NodeFlags,
    agent: Option<(NodeRecord, NodeConfig)>,
) -> Result<i32> {
    // Pods reach the API server through the node's bridge gateway (see pod_route_to_api).
    let gateway = match &agent {
        Some((record, _)) => Some(
            record
                .pod_cidr
                .parse::<yun_net::Ipv4Cidr>()
                .ok()
                .and_then(|c| c.nth(1))
                .with_context(|| format!("the node's pod CIDR {:?}", record.pod_cidr))?,
        ),
        None => None,
    };
    // An address given by hand wins, and then no relay is needed.
    let (advertise, relay_at) = match plane.api.advertise() {
        Some(a) => (Some(a), None),
        None => pod_route_to_api(plane.addr, gateway),
    };
    let mut config = yun_apiserver::Config {
        addr: plane.addr,
        data_dir: data_dir.to_path_buf(),
        store: plane.store,
        compaction_interval: yun_apiserver::DEFAULT_COMPACTION_INTERVAL,
        service_cidr: plane.service_cidr,
        advertise,
        ..Default::default()
    };
    plane.api.apply(&mut config);
    let server = yun_apiserver::start(config).await?;
    let s3 = super::s3up::start(data_dir, server.addr, &plane.s3).await?;
    let client = client(&server.kubeconfig, None, CONTROLLER_MANAGER).await?;
    yun_agent::storage::ensure_default_class(&client)
        .await
        .context("creating the default StorageClass local-path")?;
    yun_controllers::snapshot::ensure(&client)
        .await
        .context("installing the volume snapshot kinds")?;
    let controllers = tokio::spawn(yun_controllers::manager::run(
        client,
        identity(),
        plane.nodes,
        kubeconfig_ca(&server.kubeconfig)?,
    ));
    let joined = match &agent {
        Some((record, _)) => format!(", node {}", record.name),
        None => String::new(),
    };
    let mut relay = None;
    let agent = match agent {
        Some((record, cfg)) => {
            let rt = open_runtime(cfg).await?;
            if let Some(at) = relay_at {
                let listener = yun_agent::relay::bind(at).await?;
                relay = Some(tokio::spawn(yun_agent::relay::serve(listener, server.addr)));
            }
            Some(tokio::spawn(yun_agent::node::run(
                self::client(&server.kubeconfig, None, AGENT).await?,
                agent_config(&record, node, &server.kubeconfig)?,
                rt,
            )))
        }
        None => None,
    };
    println!(
        "yun up: API server at https://{}{joined}\n\n    export KUBECONFIG={}\n    kubectl get nodes\n",
        server.addr,
        server.kubeconfig.display()
    );
    if let Some((addr, _)) = &s3 {
        println!(
            "yun up: S3 at http://{addr}\n\n    export AWS_SHARED_CREDENTIALS_FILE={} AWS_CONFIG_FILE={}\n    aws s3 ls\n",
            data_dir.join("s3-credentials").display(),
            data_dir.join("s3-config").display()
        );
    }
    match agent {
        Some(agent) => {
            let agent_abort = agent.abort_handle();
            tokio::select! {
                r = agent => { r??; }
                _ = shutdown_signal() => {}
            }
            // Stop the clients of the API before the API itself, so nothing reports a
            // vanished server.
            agent_abort.abort();
        }
        None => shutdown_signal().await,
    }
    controllers.abort();
    if let Some(r) = relay {
        r.abort();
    }
    if let Some((_, handle)) = s3 {
        handle.shutdown().await;
    }
    // Pods keep running: the next `yun up` on this data dir adopts them (`yun down` stops them).
    server.shutdown().await;
    Ok(0)
}
