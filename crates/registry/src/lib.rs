//! An OCI distribution (v1.1) registry server: content-addressed blobs on disk, per-repository
//! links, tags, resumable chunked uploads, cross-repository mounts, the referrers API,
//! optional htpasswd (bcrypt) Basic authentication and optional TLS (rustls). Deletes are off
//! unless enabled; open upload sessions are capped per client and swept when idle.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let config = yun_registry::Config::new("127.0.0.1:5000".parse()?, "/var/lib/yun-registry");
//! yun_registry::serve(config).await
//! # }
//! ```

mod auth;
mod blobs;
mod error;
mod http;
mod listing;
mod manifests;
mod names;
mod store;
mod stream;
mod tls;
mod upload;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use futures::FutureExt;
use tokio::sync::oneshot;

use error::{ApiError, ApiResult, Code};
use http::{percent_decode, Query};
use names::{check_name, Digest, Reference};

/// How to run the registry.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port, see [`spawn`]).
    pub addr: SocketAddr,
    /// Storage directory (created if missing).
    pub root: PathBuf,
    /// An htpasswd file of bcrypt entries: when set, every request needs Basic credentials.
    pub htpasswd: Option<PathBuf>,
    /// PEM certificate chain and private key: when both are set, the registry speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Whether `DELETE` of manifests, tags and blobs is allowed (distribution's
    /// `storage.delete.enabled`); when not, they answer 405 UNSUPPORTED.
    pub enable_delete: bool,
    /// Upload sessions untouched for this long are removed, disk and memory.
    pub upload_idle_timeout: Duration,
    /// How many upload sessions one client may hold open: per remote IP, and per user when
    /// authentication is on. One more is refused with 429 TOOMANYREQUESTS.
    pub max_uploads_per_client: usize,
}

/// Distribution keeps abandoned uploads for a week; a client resuming an interrupted push
/// comes back within seconds, so ten idle minutes are plenty and bound what is held.
pub const DEFAULT_UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// A client pushes an image's layers in parallel (skopeo and podman use a handful of
/// connections); a hundred open sessions is far above that and bounds an abusive one.
pub const DEFAULT_MAX_UPLOADS_PER_CLIENT: usize = 100;

impl Config {
    /// Plain HTTP, no authentication, deletes off, the default upload limits.
    pub fn new(addr: SocketAddr, root: impl Into<PathBuf>) -> Config {
        Config {
            addr,
            root: root.into(),
            htpasswd: None,
            tls_cert: None,
            tls_key: None,
            enable_delete: false,
            upload_idle_timeout: DEFAULT_UPLOAD_IDLE_TIMEOUT,
            max_uploads_per_client: DEFAULT_MAX_UPLOADS_PER_CLIENT,
        }
    }
}

/// What every handler shares.
struct AppState {
    store: store::Store,
    uploads: upload::Uploads,
    auth: Option<Arc<auth::Htpasswd>>,
    enable_delete: bool,
}

type Shared = Arc<AppState>;

/// Who made a request, for the per-client upload cap: the peer's IP, and the user when
/// authentication is on (set by the `common` middleware).
#[derive(Clone, Debug)]
pub(crate) struct Client {
    ip: std::net::IpAddr,
    user: Option<String>,
}

/// The peer address of a connection, plain or TLS (axum provides `SocketAddr` only for its
/// own listeners).
#[derive(Clone, Copy, Debug)]
struct PeerAddr(SocketAddr);

impl Connected<IncomingStream<'_, tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, NoDelayListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, NoDelayListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Plain TCP with Nagle's algorithm off: small responses must not wait for it.
struct NoDelayListener(tokio::net::TcpListener);

impl Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Client {
    /// The keys an upload session counts against.
    fn keys(&self) -> Vec<String> {
        let mut keys = vec![format!("ip {}", self.ip)];
        if let Some(u) = &self.user {
            keys.push(format!("user {u:?}"));
        }
        keys
    }
}

type ServeFuture = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Loads the configuration's files, opens the store and binds: everything that can fail
/// because of the configuration fails here, with one line naming the cause.
async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, bool, ServeFuture)> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        (None, None) => None,
        _ => return Err(anyhow!("TLS needs both a certificate and a key file")),
    };
    let auth = match &config.htpasswd {
        Some(p) => Some(Arc::new(auth::Htpasswd::load(p)?)),
        None => None,
    };
    let root = config.root.clone();
    let idle = config.upload_idle_timeout;
    let store = tokio::task::spawn_blocking(move || store::Store::open(&root, idle))
        .await?
        .with_context(|| format!("cannot open registry storage {}", config.root.display()))?;
    if config.max_uploads_per_client == 0 {
        return Err(anyhow!("max uploads per client: must be at least 1"));
    }
    if config.upload_idle_timeout.is_zero() {
        return Err(anyhow!("upload idle timeout: must be more than zero"));
    }
    let uploads =
        upload::Uploads::new(config.max_uploads_per_client).context("cannot read /dev/urandom")?;
    let state = Arc::new(AppState {
        store,
        uploads,
        auth,
        enable_delete: config.enable_delete,
    });
    let app = router(state.clone());
    let tcp = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow!("cannot listen on {}: {e}", config.addr))?;
    let addr = tcp.local_addr()?;

    let app = app.into_make_service_with_connect_info::<PeerAddr>();
    let served: ServeFuture = match tls.clone() {
        Some(cfg) => axum::serve(tls::TlsListener::new(tcp, cfg)?, app)
            .with_graceful_shutdown(shutdown)
            .into_future()
            .boxed(),
        None => axum::serve(NoDelayListener(tcp), app)
            .with_graceful_shutdown(shutdown)
            .into_future()
            .boxed(),
    };
    // Checked ten times per idle period, so a session lives at most 1.1 times the timeout.
    let idle = config.upload_idle_timeout;
    let every = (idle / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await; // The first tick is immediate; the store swept on open.
        loop {
            tick.tick().await;
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || st.uploads.sweep(&st.store, idle)).await;
        }
    });
    let fut = async move {
        let result = served.await;
        sweeper.abort();
        result
    };
    Ok((addr, tls.is_some(), Box::pin(fut)))
}

/// Binds and serves until ctrl-c or SIGTERM, logging the bound address. Errors are one line
/// naming the cause (address in use, unreadable htpasswd, bad certificate, …).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (addr, tls, fut) = start(config, shutdown_signal()).await?;
    let scheme = if tls { "https" } else { "http" };
    tracing::info!("registry listening on {scheme}://{addr}");
    fut.await.context("serving")?;
    tracing::info!("registry stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A running server started by [`spawn`]; dropping it shuts the server down (connections in
/// flight finish their request).
pub struct ServerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// Shuts down and waits until every connection has closed.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// For tests and benchmarks: binds (port 0 allowed) and serves in a background task.
pub async fn spawn(config: Config) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    let (tx, rx) = oneshot::channel::<()>();
    let (addr, _tls, fut) = start(config, rx.map(|_| ())).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = fut.await {
            tracing::error!("registry: {e}");
        }
    });
    Ok((
        addr,
        ServerHandle {
            shutdown: Some(tx),
            task: Some(task),
        },
    ))
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/v2/", get(base))
        .route("/v2", get(base))
        .route("/v2/{*rest}", any(dispatch))
        // Outside /v2 too, authentication comes before "not found".
        .fallback(|| async {
            ApiError::new(Code::Unsupported, "no such endpoint").status(StatusCode::NOT_FOUND)
        })
        .layer(middleware::from_fn_with_state(state.clone(), common))
        .with_state(state)
}

/// Authentication and the API version header, for every request (every method and path:
/// the layer wraps the whole router), and who the client is.
async fn common(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0 .0.ip());
    let mut user = None;
    if let Some(auth) = &state.auth {
        match auth
            .clone()
            .check(req.headers().get(header::AUTHORIZATION))
            .await
        {
            Some(u) => user = Some(u),
            None => {
                return ApiError::new(Code::Unauthorized, "authentication required")
                    .header(header::WWW_AUTHENTICATE, "Basic realm=\"yun\"")
                    .into_response();
            }
        }
    }
    req.extensions_mut().insert(Client { ip, user });
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// `GET /v2/`: the API is here (and, behind auth, the credentials work).
async fn base() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
}

/// The endpoints below `/v2/`. Repository names contain slashes, so the path is matched from
/// its end, where the endpoint's fixed words are (as distribution's anchored patterns do).
#[derive(Debug, PartialEq)]
enum Route {
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

fn parse_route(path: &str) -> Option<Route> {
    if path == "_catalog" {
        return Some(Route::Catalog);
    }
    let segs: Vec<&str> = path.split('/').collect();
    let n = segs.len();
    let name = |k: usize| segs[..n - k].join("/");
    let tail = |k: usize| (n > k).then(|| &segs[n - k..]);
    if let Some(["tags", "list"]) = tail(2) {
        return Some(Route::Tags(name(2)));
    }
    if let Some(["blobs", "uploads", id]) = tail(3) {
        return Some(if id.is_empty() {
            Route::UploadStart(name(3))
        } else {
            Route::Upload(name(3), id.to_string())
        });
    }
    if let Some(["blobs", "uploads"]) = tail(2) {
        return Some(Route::UploadStart(name(2)));
    }
    match tail(2)? {
        ["manifests", r] => Some(Route::Manifest(name(2), r.to_string())),
        ["blobs", d] => Some(Route::Blob(name(2), d.to_string())),
        ["referrers", d] => Some(Route::Referrers(name(2), d.to_string())),
        _ => None,
    }
}

async fn dispatch(State(state): State<Shared>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let result = route(state, &parts, body).await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("{} {}: {}", parts.method, parts.uri, e.message);
            e.into_response()
        }
    };
    // An access log: the time is until the response head (bodies stream on afterwards).
    tracing::debug!(
        "{} {} {} {:.1?}",
        parts.method,
        parts.uri,
        resp.status().as_u16(),
        started.elapsed()
    );
    resp
}

async fn route(
    state: Shared,
    parts: &axum::http::request::Parts,
    body: Body,
) -> ApiResult<Response> {
    let path = percent_decode(parts.uri.path(), false);
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let not_found =
        || ApiError::new(Code::Unsupported, "no such endpoint").status(StatusCode::NOT_FOUND);
    let route = parse_route(rest).ok_or_else(not_found)?;
    let query = Query::parse(parts.uri.query());
    let h = &parts.headers;
    let m = &parts.method;
    let unsupported = || ApiError::new(Code::Unsupported, format!("method {m} not supported here"));
    let name = match &route {
        Route::Catalog => String::new(),
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::UploadStart(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => {
            check_name(n)?;
            n.clone()
        }
    };
    let head = m == Method::HEAD;
    // Deleting content is off unless enabled, as in distribution. Cancelling one's own upload
    // session is not deleting content and stays allowed.
    let deletes_content = matches!(route, Route::Manifest(..) | Route::Blob(..));
    if m == Method::DELETE && deletes_content && !state.enable_delete {
        return Err(ApiError::new(
            Code::Unsupported,
            "deletes are disabled on this registry (start it with --enable-delete)",
        ));
    }
    match route {
        Route::Catalog if m == Method::GET => listing::catalog(state, &query).await,
        Route::Tags(_) if m == Method::GET => listing::tags(state, name, &query).await,
        Route::Manifest(_, r) => {
            let reference = Reference::parse(&r);
            match *m {
                Method::PUT => manifests::put(state, name, reference?, h, body).await,
                Method::GET | Method::HEAD | Method::DELETE => {
                    // A malformed tag cannot name anything: unknown, not a bad request.
                    let reference = reference.map_err(|e| match e.code {
                        Code::DigestInvalid => e,
                        _ => {
                            ApiError::new(Code::ManifestUnknown, format!("manifest {r:?} unknown"))
                        }
                    })?;
                    if *m == Method::DELETE {
                        manifests::delete(state, name, reference).await
                    } else {
                        manifests::get(state, name, reference, h, head).await
                    }
                }
                _ => Err(unsupported()),
            }
        }
        Route::Blob(_, d) => {
            let d = Digest::parse(&d)?;
            match *m {
                Method::GET | Method::HEAD => blobs::get(state, name, d, h, head).await,
                Method::DELETE => blobs::delete(state, name, d).await,
                _ => Err(unsupported()),
            }
        }
        Route::UploadStart(_) if m == Method::POST => {
            let client = parts.extensions.get::<Client>().cloned();
            upload::start(state, name, &query, client, body).await
        }
        Route::Upload(_, id) => match *m {
            Method::PATCH => upload::patch(state, name, id, h, body).await,
            Method::PUT => upload::finish(state, name, id, &query, h, body).await,
            Method::GET => upload::status(state, name, id).await,
            Method::DELETE => upload::cancel(state, name, id).await,
            _ => Err(unsupported()),
        },
        Route::Referrers(_, d) if m == Method::GET => {
            let d = Digest::parse(&d)?;
            manifests::referrers(state, name, d, &query).await
        }
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        use Route::*;
        let s = |x: &str| x.to_string();
        assert_eq!(parse_route("_catalog"), Some(Catalog));
        assert_eq!(parse_route("a/b/tags/list"), Some(Tags(s("a/b"))));
        assert_eq!(
            parse_route("library/busybox/manifests/latest"),
            Some(Manifest(s("library/busybox"), s("latest")))
        );
        assert_eq!(
            parse_route("x/blobs/sha256:00"),
            Some(Blob(s("x"), s("sha256:00")))
        );
        assert_eq!(
            parse_route("x/y/blobs/uploads/"),
            Some(UploadStart(s("x/y")))
        );
        assert_eq!(parse_route("x/blobs/uploads"), Some(UploadStart(s("x"))));
        assert_eq!(
            parse_route("x/blobs/uploads/abc"),
            Some(Upload(s("x"), s("abc")))
        );
        // A repository may itself be called "blobs" or "manifests".
        assert_eq!(
            parse_route("blobs/manifests/manifests/v1"),
            Some(Manifest(s("blobs/manifests"), s("v1")))
        );
        assert_eq!(
            parse_route("x/referrers/sha256:00"),
            Some(Referrers(s("x"), s("sha256:00")))
        );
        assert_eq!(parse_route("x"), None);
        assert_eq!(parse_route("x/other/y"), None);
    }
}
