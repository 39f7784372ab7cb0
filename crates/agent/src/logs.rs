//! The agent's log endpoint, which the API server proxies `kubectl logs` to (the kubelet's
//! /containerLogs): GET /containerLogs/NAMESPACE/POD/CONTAINER?follow=&previous=&tailLines=
//! &sinceSeconds=&sinceTime=&timestamps=&limitBytes=, with the cluster's bearer token. The
//! container's log is in the CRI format (yun_engine::ctrlog), so every line has its time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use yun_engine::ctrlog::{Decoder, LogOptions, FOLLOW_INTERVAL};
use yun_engine::logfile::LogFollower;

use crate::PodRuntime;

struct LogState {
    rt: Arc<PodRuntime>,
    client: Client,
    token: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    follow: Option<bool>,
    previous: Option<bool>,
    tail_lines: Option<usize>,
    since_seconds: Option<u64>,
    since_time: Option<String>,
    timestamps: Option<bool>,
    limit_bytes: Option<u64>,
}

impl LogQuery {
    fn options(&self) -> Result<LogOptions, String> {
        let since = match (&self.since_seconds, &self.since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of sinceTime or sinceSeconds may be specified".into())
            }
            (Some(s), None) => Some(SystemTime::now() - Duration::from_secs(*s)),
            (None, Some(t)) => Some(
                humantime::parse_rfc3339_weak(t)
                    .map_err(|_| format!("sinceTime {t:?}: not an RFC 3339 time"))?,
            ),
            (None, None) => None,
        };
        Ok(LogOptions {
            since,
            timestamps: self.timestamps == Some(true),
            tail: self.tail_lines,
            limit_bytes: self.limit_bytes,
        })
    }
}

/// Serve container logs (and the streams of [`crate::streams`], the resource metrics of
/// [`crate::metrics`]) on `listener` until the process ends. Requests must carry
/// `Authorization: Bearer TOKEN`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    rt: Arc<PodRuntime>,
    client: Client,
    token: String,
    node_name: String,
) -> anyhow::Result<()> {
    let streams = crate::streams::router(rt.clone(), client.clone(), token.clone());
    let metrics = crate::metrics::router(rt.clone(), client.clone(), token.clone(), node_name);
    let state = Arc::new(LogState { rt, client, token });
    let app = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(logs))
        .with_state(state)
        .merge(streams)
        .merge(metrics);
    // Streams (exec, attach, port-forward) write small frames each answered by the API
    // server's relay: without TCP_NODELAY, Nagle holds a frame back until the previous one is
    // acknowledged, which a delayed ACK makes 40 ms.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// Bind the log endpoint on `addr` (port 0 picks one); returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message + "\n").into_response()
}

async fn logs(
    State(state): State<Arc<LogState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    if !crate::auth::authorized(&headers, &state.token) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    let pod_obj = match Api::<Pod>::namespaced(state.client.clone(), &ns)
        .get_opt(&pod)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("pods \"{pod}\" not found")),
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("{e}")),
    };
    let uid = pod_obj.metadata.uid.clone().unwrap_or_default();
    let previous = q.previous == Some(true);
    let (rt, uid2, container2) = (state.rt.clone(), uid.clone(), container.clone());
    let path = match tokio::task::spawn_blocking(move || rt.log_path(&uid2, &container2, previous))
        .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let opts = match q.options() {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    // The current file only, as a kubelet serves it: rotation bounds what is read here.
    let opened = tokio::task::spawn_blocking(move || {
        let mut log = LogFollower::open(&path)?;
        let data = log.read_new()?;
        Ok::<_, std::io::Error>((log, data))
    })
    .await;
    let (log, data) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("log: {e}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let follow = q.follow == Some(true) && !previous;
    let running = {
        let (rt, uid, container) = (state.rt.clone(), uid.clone(), container.clone());
        move || rt.is_running(&uid, &container)
    };
    let mut decoder = Decoder::new(opts);
    let first = decoder.first(&data, !follow || !running());
    if !follow {
        return (StatusCode::OK, first).into_response();
    }
    // Follow: what is there, then whatever the container writes until it exits.
    let stream = async_stream(log, first, decoder, running);
    Response::new(Body::from_stream(stream))
}

/// What the container writes to its log after `first`, decoded, until `running()` says the
/// writer is gone and everything is read (or the byte limit is reached).
fn async_stream(
    log: LogFollower,
    first: Vec<u8>,
    decoder: Decoder,
    running: impl Fn() -> bool + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    let running = Arc::new(running);
    futures::stream::unfold(
        (Some(first), Some(log), decoder),
        move |(first, log, mut decoder)| {
            let running = running.clone();
            async move {
                if let Some(f) = first {
                    return Some((Ok(f), (None, log, decoder)));
                }
                let mut log = log?;
                if decoder.exhausted() {
                    return None;
                }
                loop {
                    let running2 = running.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        // Look at the writer first: what it wrote before it ended is read now.
                        let alive = running2();
                        let chunk = log.read_new();
                        (log, chunk, alive)
                    })
                    .await;
                    let Ok((back, chunk, alive)) = read else {
                        return None;
                    };
                    log = back;
                    match chunk {
                        Ok(buf) if !buf.is_empty() || !alive => {
                            let mut out = decoder.more(&buf);
                            if !alive {
                                out.extend(decoder.end());
                                return Some((Ok(out), (None, None, decoder)));
                            }
                            return Some((Ok(out), (None, Some(log), decoder)));
                        }
                        Ok(_) => tokio::time::sleep(FOLLOW_INTERVAL).await,
                        Err(e) => return Some((Err(e), (None, None, decoder))),
                    }
                }
            }
        },
    )
}
