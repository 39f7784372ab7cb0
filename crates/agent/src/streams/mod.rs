//! The agent's streaming endpoints, which the API server proxies `kubectl exec`, attach and
//! port-forward to, as kube-apiserver does to the kubelet:
//! `GET /exec/NAMESPACE/POD/CONTAINER?command=…&stdin=&stdout=&stderr=&tty=` upgraded to a
//! WebSocket speaking `v5.channel.k8s.io` or `v4.channel.k8s.io` ([`channel`]). Requests
//! carry the cluster's bearer token, like `/containerLogs`.
//!
//! Bounds: at most [`MAX_SESSIONS`] sessions at once on the node (429 beyond), messages of at
//! most [`MAX_MESSAGE`] bytes, and a session with no traffic either way for [`IDLE_TIMEOUT`]
//! is ended (the kubelet's streaming-connection-idle-timeout is 4 h). A session whose client
//! goes away kills its process.

pub mod attach;
pub mod channel;
pub mod exec;
pub mod portforward;
pub mod spdy;
pub mod spdy_attach;
pub mod spdy_exec;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::auth::authorized;
use crate::PodRuntime;
use channel::Incoming;
use exec::ExecRequest;

pub const MAX_SESSIONS: usize = 64;
pub const MAX_MESSAGE: usize = 1 << 20;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// After the process exits, how long output still held open (by a background child) is
/// read before the status is sent anyway.
const DRAIN: Duration = Duration::from_secs(2);

pub struct StreamState {
    rt: Arc<PodRuntime>,
    client: Client,
    token: String,
    sessions: Arc<Semaphore>,
}

/// The streaming routes, for the agent's HTTP server.
pub fn router(rt: Arc<PodRuntime>, client: Client, token: String) -> Router {
    let state = Arc::new(StreamState {
        rt,
        client,
        token,
        sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
    });
    // With the pod's uid in the path (as the kubelet's), sent by the API server that has
    // just read the pod, the agent does not read it again; without, it asks the API.
    Router::new()
        .route("/exec/{ns}/{pod}/{container}", get(exec).post(exec))
        .route("/exec/{ns}/{pod}/{uid}/{container}", get(exec).post(exec))
        .route("/attach/{ns}/{pod}/{container}", get(attach).post(attach))
        .route(
            "/attach/{ns}/{pod}/{uid}/{container}",
            get(attach).post(attach),
        )
        .route(
            "/portForward/{ns}/{pod}",
            get(port_forward).post(port_forward),
        )
        .route(
            "/portForward/{ns}/{pod}/{uid}",
            get(port_forward).post(port_forward),
        )
        .with_state(state)
}

/// A streaming path: `NAMESPACE/POD[/UID][/CONTAINER]`.
#[derive(serde::Deserialize)]
struct PodPath {
    ns: String,
    pod: String,
    uid: Option<String>,
    #[serde(default)]
    container: String,
}

/// The pod's uid: from the path, or else from the API.
async fn uid_of(state: &StreamState, p: &PodPath) -> Result<String, Response> {
    match &p.uid {
        Some(uid) => Ok(uid.clone()),
        None => pod_uid(state, &p.ns, &p.pod).await,
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message + "\n").into_response()
}

/// The pod's uid, or the response to give.
async fn pod_uid(state: &StreamState, ns: &str, pod: &str) -> Result<String, Response> {
    match Api::<Pod>::namespaced(state.client.clone(), ns)
        .get_opt(pod)
        .await
    {
        Ok(Some(p)) => Ok(p.metadata.uid.unwrap_or_default()),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            format!("pods \"{pod}\" not found"),
        )),
        Err(e) => Err(error(StatusCode::BAD_GATEWAY, format!("{e}"))),
    }
}

/// What exec and attach check before upgrading: the token, the query, the upgrade, the pod
/// and its running container, a free session slot and a served protocol.
struct Checked {
    req: ExecRequest,
    /// None for SPDY.
    ws: Option<WebSocketUpgrade>,
    v5: bool,
    container: yun_engine::ContainerStatus,
    permit: OwnedSemaphorePermit,
}

#[allow(clippy::too_many_arguments)]
async fn check(
    state: &StreamState,
    what: &str,
    path: &PodPath,
    query: Option<String>,
    headers: &HeaderMap,
    ws: Option<Result<WebSocketUpgrade, WebSocketUpgradeRejection>>,
) -> Result<Checked, Response> {
    if !authorized(headers, &state.token) {
        return Err(error(StatusCode::UNAUTHORIZED, "Unauthorized".into()));
    }
    let req = ExecRequest::parse(query.as_deref().unwrap_or(""), what == "exec")
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let ws = ws.transpose().map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} needs a WebSocket upgrade ({}) or SPDY/3.1: {e}",
                channel::PROTOCOLS.join(", "),
            ),
        )
    })?;
    let uid = uid_of(state, path).await?;
    let (rt, c2) = (state.rt.clone(), path.container.clone());
    let status = match tokio::task::spawn_blocking(move || rt.running(&uid, &c2)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(error(StatusCode::BAD_REQUEST, format!("{e:#}"))),
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let Ok(permit) = state.sessions.clone().try_acquire_owned() else {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this node already serves {MAX_SESSIONS} streaming sessions"),
        ));
    };
    let Some(ws) = ws else {
        return Ok(Checked {
            req,
            ws: None,
            v5: false,
            container: status,
            permit,
        });
    };
    let ws = ws
        .protocols(channel::PROTOCOLS)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    let v5 = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(p) => p == channel::PROTOCOLS[0],
        None => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "none of the offered WebSocket subprotocols is served; want one of {}",
                    channel::PROTOCOLS.join(", ")
                ),
            ))
        }
    };
    Ok(Checked {
        req,
        ws: Some(ws),
        v5,
        container: status,
        permit,
    })
}

/// Whether the request asks for an upgrade to `proto` (case-insensitive).
fn upgrade_to(headers: &HeaderMap, proto: &str) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(proto))
}

/// The 101 answer to a SPDY/3.1 upgrade speaking `protocol` (X-Stream-Protocol-Version).
fn spdy_switch(protocol: &str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", protocol)
        .body(axum::body::Body::empty())
        .expect("valid response")
}

async fn port_forward(
    State(state): State<Arc<StreamState>>,
    Path(path): Path<PodPath>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if !authorized(&parts.headers, &state.token) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    let pod = path.pod.clone();
    let uid = match uid_of(&state, &path).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let rt = state.rt.clone();
    let pid = match tokio::task::spawn_blocking(move || rt.sandbox_pid(&uid)).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("pod {pod} has no running sandbox: its network namespace is gone"),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Ok(permit) = state.sessions.clone().try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this node already serves {MAX_SESSIONS} streaming sessions"),
        );
    };
    let name = format!("{}/{pod}", path.ns);
    if upgrade_to(&parts.headers, "websocket") {
        use axum::extract::FromRequestParts;
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let ws = ws
            .protocols([portforward::TUNNEL_PROTOCOL])
            .max_message_size(MAX_MESSAGE)
            .max_frame_size(MAX_MESSAGE);
        if ws.selected_protocol().is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "port-forward over WebSocket needs the subprotocol {}",
                    portforward::TUNNEL_PROTOCOL
                ),
            );
        }
        return ws.on_upgrade(move |socket| {
            portforward::serve(portforward::tunnel(socket), pid, name, permit)
        });
    }
    if !upgrade_to(&parts.headers, "SPDY/3.1") {
        return error(
            StatusCode::BAD_REQUEST,
            "port-forward needs an upgrade to SPDY/3.1 or a WebSocket".into(),
        );
    }
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "the connection cannot be upgraded".into(),
        );
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => portforward::serve(hyper_util::rt::TokioIo::new(io), pid, name, permit).await,
            Err(e) => tracing::debug!("port-forward upgrade: {e}"),
        }
    });
    spdy_switch(portforward::PROTOCOL)
}

async fn attach(
    State(state): State<Arc<StreamState>>,
    Path(path): Path<PodPath>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, ws) = upgrade_parts(request).await;
    let container = path.container.clone();
    let c = match check(&state, "attach", &path, query, &parts.headers, ws).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let tty = c.container.container.tty;
    if c.req.tty && !tty {
        return error(
            StatusCode::BAD_REQUEST,
            format!("container {container} was not started with tty: true: attach without a tty"),
        );
    }
    let engine = state.rt.engine();
    let stdin = match (c.req.stdin || tty, c.container.container.stdin_open || tty) {
        (false, _) => None,
        (true, true) => Some(engine.attach_socket(&c.container.container)),
        (true, false) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("container {container} was not started with stdin: true: its stdin cannot be attached"),
            )
        }
    };
    let rt = state.rt.clone();
    let record = c.container.container.clone();
    let log = engine.log_path(&record);
    let log2 = log.clone();
    let a = attach::Attach {
        req: c.req,
        log,
        stdin,
        tty,
        // Until the monitor records the exit, which it does after the logger wrote the last
        // record (or the container is removed).
        running: Box::new(move || rt.engine().finished_at(&record).is_none() && log2.exists()),
    };
    let (v5, permit) = (c.v5, c.permit);
    match c.ws {
        Some(ws) => ws.on_upgrade(move |socket| attach::session(socket, v5, a, permit)),
        None => spdy_upgrade(&mut parts, "attach", move |io| {
            spdy_attach::session(io, a, permit)
        }),
    }
}

/// The request's parts, and its WebSocket upgrade unless it asks for SPDY (None then).
async fn upgrade_parts(
    request: axum::extract::Request,
) -> (
    axum::http::request::Parts,
    Option<Result<WebSocketUpgrade, WebSocketUpgradeRejection>>,
) {
    use axum::extract::FromRequestParts;
    let (mut parts, _) = request.into_parts();
    let ws = if upgrade_to(&parts.headers, "SPDY/3.1") {
        None
    } else {
        Some(WebSocketUpgrade::from_request_parts(&mut parts, &()).await)
    };
    (parts, ws)
}

/// Take the connection over as SPDY/3.1 speaking the exec/attach protocol the client offers,
/// and run `session` on it once switched.
fn spdy_upgrade<F>(
    parts: &mut axum::http::request::Parts,
    what: &str,
    session: impl FnOnce(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> F + Send + 'static,
) -> Response
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(protocol) = spdy_exec_protocol(&parts.headers) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} over SPDY needs X-Stream-Protocol-Version {}",
                spdy_exec::PROTOCOL
            ),
        );
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "the connection cannot be upgraded".into(),
        );
    };
    let what = what.to_string();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => session(hyper_util::rt::TokioIo::new(io)).await,
            Err(e) => tracing::debug!("{what} upgrade: {e}"),
        }
    });
    spdy_switch(protocol)
}

/// The SPDY exec protocol the client offers that is served: v4 (its status is the JSON
/// Status the WebSocket protocols carry too).
fn spdy_exec_protocol(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == spdy_exec::PROTOCOL)
        .then_some(spdy_exec::PROTOCOL)
}

async fn exec(
    State(state): State<Arc<StreamState>>,
    Path(path): Path<PodPath>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, ws) = upgrade_parts(request).await;
    let c = match check(&state, "exec", &path, query, &parts.headers, ws).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let cfg = state.rt.config().clone();
    let id = c.container.container.id;
    let (req, v5, permit) = (c.req, c.v5, c.permit);
    let Some(ws) = c.ws else {
        return spdy_upgrade(&mut parts, "exec", move |io| async move {
            let root = cfg.data_dir.join("runtime");
            spdy_exec::session(io, &cfg.yun_exe, &root, &id, req, permit).await
        });
    };
    ws.on_upgrade(move |socket| async move {
        let root = cfg.data_dir.join("runtime");
        exec_session(socket, v5, &cfg.yun_exe, &root, &id, req, permit).await
    })
}

/// Copy `reader` into messages on `channel` until it ends.
fn pump(
    mut reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ch: u8,
    tx: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                // A pty's master reads EIO once the process side is gone: its end of file.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = Message::Binary(channel::frame(ch, &buf[..n]).into());
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

async fn exec_session(
    socket: WebSocket,
    v5: bool,
    yun_exe: &std::path::Path,
    root: &std::path::Path,
    id: &str,
    req: ExecRequest,
    _permit: OwnedSemaphorePermit,
) {
    let (sink, mut incoming) = socket.split();
    let (tx, writer) = spawn_writer(sink);
    let status_message = |v: serde_json::Value| {
        Message::Binary(channel::frame(channel::ERROR, v.to_string().as_bytes()).into())
    };
    let mut sess = match exec::start(yun_exe, root, id, &req).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx
                .send(status_message(channel::failure_status(&format!("{e:#}"))))
                .await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let mut pumps = Vec::new();
    if let Some(r) = sess.stdout.take() {
        pumps.push(pump(r, channel::STDOUT, tx.clone()));
    }
    if let Some(r) = sess.stderr.take() {
        pumps.push(pump(r, channel::STDERR, tx.clone()));
    }
    // Stdin in a task of its own: a process that does not read must not stall the session.
    let mut stdin_tx = sess.stdin.take().map(|mut w| {
        let (stx, mut srx) = mpsc::channel::<Vec<u8>>(8);
        tokio::spawn(async move {
            while let Some(data) = srx.recv().await {
                if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        stx
    });
    let code = loop {
        tokio::select! {
            code = sess.wait() => break Some(code),
            msg = tokio::time::timeout(IDLE_TIMEOUT, incoming.next()) => match msg {
                Ok(Some(Ok(Message::Binary(b)))) => match channel::decode(v5, &b) {
                    Ok(Incoming::Stdin(d)) => {
                        if let Some(s) = &stdin_tx {
                            if s.send(d.to_vec()).await.is_err() {
                                stdin_tx = None;
                            }
                        }
                    }
                    Ok(Incoming::Resize { width, height }) => sess.resize(width, height),
                    Ok(Incoming::CloseStdin) => stdin_tx = None,
                    Ok(Incoming::Ignored) => {}
                    Err(e) => tracing::debug!("exec session: {e}"),
                },
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => break None,
                Ok(Some(Ok(_))) => {}
            }
        }
    };
    match code {
        Some(code) => {
            drop(stdin_tx);
            for p in &mut pumps {
                if tokio::time::timeout(DRAIN, &mut *p).await.is_err() {
                    p.abort();
                }
            }
            let _ = tx
                .send(status_message(channel::exit_status(&req.command, code)))
                .await;
        }
        None => {
            // The client is gone (or idle too long): the process goes too.
            sess.kill().await;
            let _ = sess.wait().await;
            pumps.iter().for_each(|p| p.abort());
        }
    }
    drop(tx);
    drop(sess);
    let _ = writer.await;
}

/// The session's sending half: messages queued on the returned sender go out in order; when
/// every sender is gone the socket is closed normally.
fn spawn_writer(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        // A normal close (1000): client-go reads the error channel to its end and takes a
        // close without a code (1005) as a failure.
        let close = CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    });
    (tx, writer)
}
