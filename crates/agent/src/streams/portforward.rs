//! `portforward.k8s.io` over SPDY (kubectl ≤ 1.30, and tunneled inside a WebSocket with the
//! subprotocol `SPDY/3.1+portforward.k8s.io` from 1.31 on): for every forwarded connection
//! the client opens an `error` and a `data` stream with the same `requestid` and a `port`
//! header. The data stream is spliced to a TCP connection made inside the pod's network
//! namespace (so ports bound to the pod's loopback work, as with the kubelet); a failure is
//! written on the error stream. Both streams are finished when the pod's side closes.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::spdy::{self, Handle, Stream};
use super::IDLE_TIMEOUT;

pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunneled through a WebSocket (kubectl ≥ 1.31).
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Connect to `port` on the loopback of the network namespace of process `pid`. On a thread
/// of its own: setns changes the calling thread, which must not be a pooled one.
async fn connect_in_netns(pid: i32, port: u16) -> Result<tokio::net::TcpStream> {
    let thread = std::thread::spawn(move || -> Result<std::net::TcpStream> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("the pod's network namespace (/proc/{pid}/ns/net)"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("joining the pod's network namespace")?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
            .with_context(|| format!("dial tcp4 {addr}"))?;
        s.set_nonblocking(true)?;
        Ok(s)
    });
    let s = tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow!("the connecting thread panicked"))??;
    Ok(tokio::net::TcpStream::from_std(s)?)
}

/// Serve one port-forward connection (SPDY on `io`) into the pod whose sandbox is `pid`.
pub async fn serve(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    pid: i32,
    pod: String,
    _permit: OwnedSemaphorePermit,
) {
    let (stx, mut srx) = mpsc::channel::<Stream>(16);
    let (h, conn) = spdy::serve(io, stx);
    let mut errors: HashMap<String, u32> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    while let Ok(Some(s)) = tokio::time::timeout(IDLE_TIMEOUT, srx.recv()).await {
        if h.reply(s.id, &[]).await.is_err() {
            break;
        }
        let request = s.header("requestid").unwrap_or("").to_string();
        match s.header("streamtype") {
            Some("error") => {
                errors.insert(request, s.id);
            }
            Some("data") => {
                let error = errors.remove(&request);
                let port = s.header("port").and_then(|p| p.parse::<u16>().ok());
                let (h, pod) = (h.clone(), pod.clone());
                forwards.spawn(forward(h, s, error, pid, port, pod));
            }
            _ => h.reset(s.id, spdy::CANCEL).await,
        }
    }
    forwards.abort_all();
    conn.abort();
}

async fn forward(
    h: Handle,
    mut s: Stream,
    error: Option<u32>,
    pid: i32,
    port: Option<u16>,
    pod: String,
) {
    let finish_error = |msg: Option<String>| {
        let h = h.clone();
        async move {
            if let Some(e) = error {
                let _ = h.data(e, msg.unwrap_or_default().as_bytes(), true).await;
            }
        }
    };
    let tcp = match port {
        Some(p) => connect_in_netns(pid, p)
            .await
            .map_err(|e| format!("error forwarding port {p} to pod {pod}: {e:#}")),
        None => Err("port-forward: the data stream names no valid port".to_string()),
    };
    let tcp = match tcp {
        Ok(t) => t,
        Err(msg) => {
            finish_error(Some(msg)).await;
            let _ = h.data(s.id, &[], true).await;
            return;
        }
    };
    let (mut r, mut w) = tcp.into_split();
    let id = s.id;
    let up = async move {
        while let Some(d) = s.data.recv().await {
            if w.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let h2 = h.clone();
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if h2.data(id, &buf[..n], false).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The pod's side is done: finish both streams (the client waits for the error
        // stream's end before it closes the local connection).
        let _ = h2.data(id, &[], true).await;
    };
    let down = async {
        down.await;
        finish_error(None).await;
    };
    tokio::join!(up, down);
}

/// Carry a byte stream over a WebSocket's binary messages (the SPDY tunnel of kubectl ≥ 1.31):
/// returns the local end to speak SPDY on.
pub fn tunnel(socket: WebSocket) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut incoming) = socket.split();
    tokio::spawn(async move {
        let inbound = async {
            while let Some(Ok(m)) = incoming.next().await {
                match m {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink
                            .send(Message::Binary(buf[..n].to_vec().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        // Either side ending ends the tunnel.
        tokio::select! {
            _ = inbound => {},
            _ = outbound => {},
        }
    });
    ours
}
