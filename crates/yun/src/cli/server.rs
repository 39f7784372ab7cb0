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
    /// Delete Events not written for this long (kube-apiserver's flag and default); 0 keeps
    /// them.
    #[arg(long, default_value = "1h")]
    event_ttl: humantime::Duration,
}

pub fn run(data_dir: &Path, args: ServerArgs) -> Result<i32> {
    let config = yun_apiserver::Config {
        addr: args.addr,
        data_dir: PathBuf::from(data_dir),
        store: args.store,
        compaction_interval: args.etcd_compaction_interval.into(),
        service_cidr: args.service_cluster_ip_range,
        event_ttl: args.event_ttl.into(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(yun_apiserver::serve(config))?;
    Ok(0)
}
