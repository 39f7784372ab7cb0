//! The HTTP/1.1 server: binding, the accept loop with per-connection limits, per-client
//! request counting, graceful shutdown, and the request envelope (request id, error bodies).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

use crate::error::{Code, S3Error};
use crate::store::Store;
use crate::{Body, Config};

/// What every request shares.
pub struct State {
    pub store: Store,
    pub config: Config,
    pub credentials: HashMap<String, String>,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
}

/// Counts a request against its client until dropped.
struct InFlight<'a> {
    state: &'a State,
    ip: IpAddr,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.state.in_flight.lock().unwrap();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl State {
    fn admit(&self, ip: IpAddr) -> Option<InFlight<'_>> {
        let mut m = self.in_flight.lock().unwrap();
        let n = m.entry(ip).or_insert(0);
        if *n >= self.config.max_requests_per_client {
            return None;
        }
        *n += 1;
        Some(InFlight { state: self, ip })
    }
}

/// hyper's read buffer: bounds the request head hyper will parse (our own, lower limit on the
/// headers is checked in `handle`), and is the largest piece of a body read at once.
const READ_BUF_BYTES: usize = 256 << 10;

type ServeFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Opens the store and binds: everything the configuration can make fail, fails here.
async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, ServeFuture)> {
    if config.credentials.is_empty() {
        return Err(anyhow!(
            "credentials: at least one access key and secret key are needed"
        ));
    }
    for (access, secret) in &config.credentials {
        if access.is_empty() || secret.is_empty() {
            return Err(anyhow!(
                "credentials: access key and secret key must not be empty"
            ));
        }
    }
    if config.max_requests_per_client == 0 {
        return Err(anyhow!("max requests per client: must be at least 1"));
    }
    let root = config.root.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&root))
        .await?
        .with_context(|| format!("cannot open S3 storage {}", config.root.display()))?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow!("cannot listen on {}: {e}", config.addr))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State {
        store,
        credentials: config.credentials.iter().cloned().collect(),
        config,
        in_flight: Mutex::new(HashMap::new()),
    });
    let fut = Box::pin(accept_loop(listener, state, shutdown));
    Ok((addr, fut))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("s3: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(handle(&st, peer.ip(), req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(60))
            .max_buf_size(READ_BUF_BYTES.max(state.config.max_header_bytes))
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
}

/// Binds and serves until ctrl-c or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (addr, fut) = start(config, shutdown_signal()).await?;
    tracing::info!("s3 listening on http://{addr}");
    fut.await;
    tracing::info!("s3 stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A server started by [`spawn`]; dropping it shuts the server down.
pub struct ServerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// Shuts down and waits for connections in flight to finish.
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

/// Binds (port 0 allowed) and serves in a background task: for `yun up` and tests.
pub async fn spawn(config: Config) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    let (tx, rx) = oneshot::channel::<()>();
    let (addr, fut) = start(config, async move {
        let _ = rx.await;
    })
    .await?;
    let task = tokio::spawn(fut);
    Ok((
        addr,
        ServerHandle {
            shutdown: Some(tx),
            task: Some(task),
        },
    ))
}

async fn handle(state: &Arc<State>, ip: IpAddr, req: Request<Incoming>) -> Response<Body> {
    let request_id = state.store.new_id()[..16].to_ascii_uppercase();
    let head = req.method() == hyper::Method::HEAD;
    let resource =
        String::from_utf8_lossy(&crate::sigv4::percent_decode(req.uri().path())).into_owned();
    let head_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().to_string().len();
    let mut resp =
        if head_bytes > state.config.max_header_bytes {
            S3Error::new(
                Code::RequestHeaderSectionTooLarge,
                format!(
                    "Your request header section exceeds the maximum allowed size ({} bytes).",
                    state.config.max_header_bytes
                ),
            )
            .into_response(&resource, &request_id, head)
        } else {
            match state.admit(ip) {
                None => S3Error::new(Code::SlowDown, "Please reduce your request rate.")
                    .into_response(&resource, &request_id, head),
                Some(_guard) => match crate::route::dispatch(state, req).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(&resource, &request_id, head),
                },
            }
        };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amz-request-id", v.clone());
        h.insert("x-amz-id-2", v);
    }
    h.insert(SERVER, HeaderValue::from_static("yun"));
    resp
}
