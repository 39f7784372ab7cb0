//! A Kubernetes-compatible REST API server over yun's MVCC store.
//!
//! One object is one store key (`/registry/GROUP/PLURAL/[NAMESPACE/]NAME`), its
//! `metadata.resourceVersion` is the key's `mod_revision`, and a watch is a store watch on the
//! collection's prefix. Objects are handled generically as JSON; the k8s-openapi types are used
//! to check that a built-in kind's body has the right shape. See docs/apiserver.md.

mod apply;
mod auth;
mod batch;
mod batch_table;
mod cascade;
mod compaction;
mod daemonset;
mod defaults;
mod discovery;
mod encryption;
mod error;
mod event_ttl;
mod field_labels;
mod hpa;
mod kubernetes_service;
mod limitrange;
mod limits;
mod meta;
mod metrics;
mod openapi;
mod patch;
mod policy;
mod priority;
mod proto;
mod rbac;
mod resourcequota;
mod resources;
mod rest;
mod router;
mod selectors;
mod services;
mod statefulset;
mod storage;
mod storage_table;
mod table;
mod tls;
mod validation;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use yun_store::Store;

pub use event_ttl::DEFAULT_EVENT_TTL;
pub use limits::{WatchLimits, DEFAULT_MAX_WATCHES_PER_USER};
pub use services::{ServiceRange, DEFAULT_SERVICE_CIDR};
pub use tls::{user_kubeconfig, Credentials};

/// The content types [`decode_body`] tells apart (the fuzz target picks one by its first byte).
#[doc(hidden)]
pub const BODY_CONTENT_TYPES: [&str; 6] = [
    "application/json",
    "application/yaml",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/vnd.kubernetes.protobuf",
];

/// What turns a request body into an object, by `content-type`: a PATCH type applies the body
/// to a small Pod (as a PATCH request does to the stored object); anything else is the JSON or
/// YAML decoder of create/update. For the fuzz targets and their corpus replay test; the error
/// is the status and message a client would get.
#[doc(hidden)]
pub fn decode_body(
    content_type: &str,
    body: &[u8],
) -> std::result::Result<serde_json::Value, (u16, String)> {
    let err = |e: error::ApiError| (e.code, e.message);
    match patch::PatchType::from_content_type(content_type) {
        Ok(kind) => {
            let target = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i",
                                         "ports": [{"containerPort": 80}],
                                         "env": [{"name": "A", "value": "1"}]}]},
            });
            patch::apply(kind, &target, body).map_err(err)
        }
        Err(_) => rest::decode_body(content_type, body).map_err(err),
    }
}

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Keeps the store (embedded), the CA, the serving certificate, the token and `kubeconfig`.
    pub data_dir: PathBuf,
    /// `"embedded"` or `"etcd://HOST:PORT"`.
    pub store: String,
    /// Compact the store's history every this often, to the revision of the previous
    /// compaction tick (kube-apiserver's `--etcd-compaction-interval`); zero disables it.
    pub compaction_interval: Duration,
    /// Where Service virtual IPs come from (kube-apiserver's `--service-cluster-ip-range`).
    pub service_cidr: ServiceRange,
    /// Delete Events not written for this long (kube-apiserver's `--event-ttl`); zero keeps
    /// them for ever.
    pub event_ttl: Duration,
    /// What one client's watches may hold of the server.
    pub watch: WatchLimits,
    /// Encrypt Secrets at rest with the AES-256 key in this file (32 bytes, base64).
    pub encryption_key_file: Option<PathBuf>,
    /// Where pods reach this server (the `default/kubernetes` Endpoints); None: the bound
    /// address, if it is one a pod can route to.
    pub advertise: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 6443)),
            data_dir: PathBuf::from("/var/lib/yun"),
            store: "embedded".into(),
            compaction_interval: DEFAULT_COMPACTION_INTERVAL,
            service_cidr: ServiceRange::default(),
            event_ttl: DEFAULT_EVENT_TTL,
            watch: WatchLimits::default(),
            encryption_key_file: None,
            advertise: None,
        }
    }
}

/// kube-apiserver's default `--etcd-compaction-interval`.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// Shared state of a running server.
pub(crate) struct Api {
    pub store: Arc<dyn Store>,
    pub registry: resources::Registry,
    pub token: String,
    /// Signs and verifies service-account tokens.
    pub sa_keys: Arc<auth::serviceaccount::Keys>,
    /// Checks credentials: client certificates and bearer tokens.
    pub authn: auth::Authenticator,
    /// The RBAC authorizer and its index of the store's roles and bindings.
    pub authz: Arc<rbac::Authorizer>,
    pub addr: SocketAddr,
    pub service_range: ServiceRange,
    pub watch_limits: WatchLimits,
    pub watches: limits::WatchCounts,
    /// Serialized OpenAPI documents, valid while the registry's generation stays.
    pub openapi: openapi::Cache,
    /// Open exec/attach/port-forward sessions per user.
    pub streams: limits::WatchCounts,
    /// The last scrapes of each node's resource metrics (`metrics.k8s.io`).
    pub metrics: metrics::Cache,
}

/// A server started with [`start`]; stops when [`Running::stop`] is called or it is dropped.
pub struct Running {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// Path of the kubeconfig written for this server.
    pub kubeconfig: PathBuf,
    shutdown: tokio::sync::watch::Sender<bool>,
    store: Option<Arc<dyn Store>>,
    serve_task: Option<tokio::task::JoinHandle<()>>,
    compaction_task: Option<tokio::task::JoinHandle<()>>,
    event_ttl_task: Option<tokio::task::JoinHandle<()>>,
    kubernetes_task: Option<tokio::task::JoinHandle<()>>,
    rbac_task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop serving and wait until every connection is closed and the store released (an
    /// embedded store can be opened again as soon as this returns).
    pub async fn shutdown(mut self) {
        self.store.take();
        let _ = self.shutdown.send(true);
        for t in [
            self.compaction_task.take(),
            self.event_ttl_task.take(),
            self.kubernetes_task.take(),
            self.rbac_task.take(),
        ]
        .into_iter()
        .flatten()
        {
            t.abort();
            let _ = t.await;
        }
        if let Some(t) = self.serve_task.take() {
            let _ = t.await;
        }
    }

    /// Compact the store's history before `revision` (watches from older revisions get 410).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        if let Some(store) = &self.store {
            store.compact(revision).await?;
        }
        Ok(())
    }

    /// Serve until the accept loop ends (after [`Running::shutdown`] elsewhere, or never).
    pub async fn wait(mut self) {
        if let Some(t) = self.serve_task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in [
            self.compaction_task.take(),
            self.event_ttl_task.take(),
            self.kubernetes_task.take(),
            self.rbac_task.take(),
        ]
        .into_iter()
        .flatten()
        {
            t.abort();
        }
    }
}

/// Open the store, create or load credentials, write `DATA_DIR/kubeconfig` and start serving.
pub async fn start(config: Config) -> Result<Running> {
    let encryption = config
        .encryption_key_file
        .as_deref()
        .map(encryption::Encryption::from_file)
        .transpose()?;
    private_dir(&config.data_dir)?;
    let store = yun_store::open(&config.store, &config.data_dir)
        .await
        .with_context(|| format!("opening store {:?}", config.store))?;
    encryption::check_key(store.as_ref(), encryption.as_ref()).await?;
    let store = encryption::EncryptedStore::wrap(store, encryption);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    // What pods dial: the `kubernetes` Service by IP or name, or the advertised address.
    let mut sans: Vec<String> = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec();
    sans.push(config.service_cidr.first_host().to_string());
    sans.extend(config.advertise.map(|a| a.ip().to_string()));
    let creds = tls::Credentials::load_or_create_with(&config.data_dir, addr, &sans)?;
    let kubeconfig = creds.write_kubeconfig(&config.data_dir, addr)?;
    let registry = resources::Registry::new();
    let api = Arc::new(Api {
        store: store.clone(),
        registry,
        token: creds.token.clone(),
        sa_keys: Arc::new(auth::serviceaccount::Keys::load_or_create(
            &config.data_dir.join("pki"),
        )?),
        authn: auth::Authenticator {
            token: creds.token.clone(),
            client_ca: creds.client_verifier()?,
        },
        authz: Default::default(),
        addr,
        service_range: config.service_cidr,
        watch_limits: config.watch,
        watches: Default::default(),
        openapi: Default::default(),
        streams: Default::default(),
        metrics: Default::default(),
    });
    resources::load_crds(&api).await?;
    rest::ensure_default_namespaces(&api).await?;
    kubernetes_service::ensure(&api, config.advertise)
        .await
        .map_err(|e| anyhow::anyhow!("the kubernetes service: {}", e.message))?;
    let kubernetes_task = tokio::spawn(kubernetes_service::run(api.clone(), config.advertise));
    rbac::bootstrap::ensure(&api).await?;
    priority::ensure(&api).await?;
    let rbac_rev = api.authz.load(store.as_ref()).await?;
    let rbac_task = tokio::spawn(api.authz.clone().run(store.clone(), rbac_rev));
    let acceptor = creds.acceptor()?;
    let app = router::app(api.clone());
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let serve_task = tokio::spawn(tls::serve(listener, acceptor, app, stop));
    drop(api);
    let compaction_task = (!config.compaction_interval.is_zero())
        .then(|| tokio::spawn(compaction::run(store.clone(), config.compaction_interval)));
    let event_ttl_task = (!config.event_ttl.is_zero())
        .then(|| tokio::spawn(event_ttl::run(store.clone(), config.event_ttl)));
    Ok(Running {
        addr,
        kubeconfig,
        shutdown,
        store: Some(store),
        serve_task: Some(serve_task),
        compaction_task,
        event_ttl_task,
        kubernetes_task: Some(kubernetes_task),
        rbac_task: Some(rbac_task),
    })
}

/// Create the data dir, or tighten an existing one, to its owner only: it holds the store (with
/// every Secret), the CA key, the token and the kubeconfig.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to mode 0700", dir.display()))
}

/// Run the API server until the process is interrupted.
pub async fn serve(config: Config) -> Result<()> {
    let running = start(config).await?;
    eprintln!(
        "yun server: serving https://{} (kubeconfig {})",
        running.addr,
        running.kubeconfig.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown().await;
    Ok(())
}
