//! `yun server`: the Kubernetes-compatible API server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    addr: SocketAddr,
    /// The store: "embedded" (a file under the data dir) or "etcd://HOST:PORT".
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Compact the store's history this often, to the revision of the previous compaction
    /// (as kube-apiserver's flag of the same name; also for the embedded store); 0 disables.
    #[arg(long, default_value = "5m")]
    etcd_compaction_interval: humantime::Duration,
    /// Where Service virtual IPs come from (kube-apiserver's --service-cluster-ip-range).
    #[arg(long, default_value = yun_apiserver::DEFAULT_SERVICE_CIDR)]
    service_cluster_ip_range: yun_apiserver::ServiceRange,
    #[command(flatten)]
    hardening: ApiFlags,
}

/// Flags `yun server` and `yun up` share.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiFlags {
    /// Encrypt Secrets in the store with the AES-256-GCM key in FILE (32 bytes, base64:
    /// `head -c 32 /dev/urandom | base64`); Secrets stored before are encrypted when next
    /// written.
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Most watches one user may have open at once; more get 429 Too Many Requests.
    #[arg(long, default_value_t = yun_apiserver::DEFAULT_MAX_WATCHES_PER_USER as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_watches_per_user: u32,
    /// Delete Events not written for this long (kube-apiserver's flag and default); 0 keeps
    /// them.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    event_ttl: std::time::Duration,
    /// IP:PORT pods reach this server at: the `default/kubernetes` Endpoints
    /// (kube-apiserver's --advertise-address with the secure port). Default: the address
    /// served when pods can route to it (`yun up`: the node's bridge gateway).
    #[arg(long, value_name = "IP:PORT")]
    advertise_address: Option<SocketAddr>,
}

impl ApiFlags {
    /// The address given with --advertise-address.
    pub fn advertise(&self) -> Option<SocketAddr> {
        self.advertise_address
    }

    /// Apply the flags to a server configuration.
    pub fn apply(&self, config: &mut yun_apiserver::Config) {
        config.encryption_key_file = self.encryption_key_file.clone();
        config.watch.per_user = self.max_watches_per_user as usize;
        config.event_ttl = self.event_ttl;
        if self.advertise_address.is_some() {
            config.advertise = self.advertise_address;
        }
    }
}

pub fn run(data_dir: &Path, args: ServerArgs) -> Result<i32> {
    let mut config = yun_apiserver::Config {
        addr: args.addr,
        data_dir: PathBuf::from(data_dir),
        store: args.store,
        compaction_interval: args.etcd_compaction_interval.into(),
        service_cidr: args.service_cluster_ip_range,
        ..Default::default()
    };
    args.hardening.apply(&mut config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(yun_apiserver::serve(config))?;
    Ok(0)
}
