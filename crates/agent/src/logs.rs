//! The agent's log endpoint, which the API server proxies `kubectl logs` to (the kubelet's
//! /containerLogs): GET /containerLogs/NAMESPACE/POD/CONTAINER?follow=&previous=&tailLines=,
//! with the cluster's bearer token.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

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
}

/// Serve container logs on `listener` until the process ends. Requests must carry
/// `Authorization: Bearer TOKEN`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    rt: Arc<PodRuntime>,
    client: Client,
    token: String,
) -> anyhow::Result<()> {
    let state = Arc::new(LogState { rt, client, token });
    let app = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(logs))
        .with_state(state);
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

/// The last `n` lines of `data`.
fn tail(data: &[u8], n: usize) -> &[u8] {
    let mut seen = 0;
    let end = if data.ends_with(b"\n") {
        data.len() - 1
    } else {
        data.len()
    };
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

async fn logs(
    State(state): State<Arc<LogState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(state.token.as_str()) {
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
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {e}", path.display()),
            )
        }
    };
    let first = match q.tail_lines {
        Some(n) => tail(&data, n).to_vec(),
        None => data.clone(),
    };
    if q.follow != Some(true) || previous {
        return (StatusCode::OK, first).into_response();
    }
    // Follow: what is there, then whatever the container writes until it exits.
    let offset = data.len() as u64;
    let rt = state.rt.clone();
    let stream = async_stream(path, offset, first, move || rt.is_running(&uid, &container));
    Response::new(Body::from_stream(stream))
}

/// Chunks of a growing file from `offset` on, after `first`, until `running()` says the writer
/// is gone and everything is read.
fn async_stream(
    path: std::path::PathBuf,
    offset: u64,
    first: Vec<u8>,
    running: impl Fn() -> bool + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    let running = Arc::new(running);
    futures::stream::unfold(
        (Some(first), offset, false),
        move |(first, offset, done)| {
            let (path, running) = (path.clone(), running.clone());
            async move {
                if let Some(f) = first {
                    return Some((Ok(f), (None, offset, false)));
                }
                if done {
                    return None;
                }
                loop {
                    let (path2, running2) = (path.clone(), running.clone());
                    let read =
                        tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, bool)> {
                            let alive = running2();
                            let mut f = std::fs::File::open(&path2)?;
                            f.seek(SeekFrom::Start(offset))?;
                            let mut buf = Vec::new();
                            f.read_to_end(&mut buf)?;
                            Ok((buf, alive))
                        })
                        .await;
                    match read {
                        Ok(Ok((buf, alive))) if !buf.is_empty() => {
                            let next = offset + buf.len() as u64;
                            return Some((Ok(buf), (None, next, !alive)));
                        }
                        Ok(Ok((_, false))) => return None,
                        Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                        Ok(Err(e)) => return Some((Err(e), (None, offset, true))),
                        Err(_) => return None,
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_takes_the_last_lines() {
        assert_eq!(super::tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(super::tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(super::tail(b"a\n", 5), b"a\n");
        assert_eq!(super::tail(b"", 1), b"");
    }
}
