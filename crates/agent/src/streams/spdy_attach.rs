//! attach over SPDY/3.1 with `v4.channel.k8s.io` (kubectl 1.20–1.29 `attach` and `run -i`):
//! the same streams as exec over SPDY ([`super::spdy_exec`]), fed as the WebSocket attach
//! is ([`super::attach`]): output is the container's log followed from now, stdin goes to
//! the engine's attach socket, and the Success status follows once the container has ended.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::attach::{self, Attach, InputMsg};
use super::channel;
use super::spdy::{self, Stream};
use super::spdy_exec::{collect, take_sizes};

/// After the status is sent, how long the client has to close the connection.
const DRAIN: Duration = Duration::from_secs(2);

pub async fn session(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    a: Attach,
    _permit: OwnedSemaphorePermit,
) {
    let (stx, mut srx) = mpsc::channel::<Stream>(16);
    let (h, mut conn) = spdy::serve(io, stx);
    let mut streams = match collect(&h, &mut srx, &a.req).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("attach over SPDY: {e}");
            conn.abort();
            return;
        }
    };
    let error_id = streams.ids["error"];
    let status = |v: serde_json::Value| {
        let h = h.clone();
        async move {
            let _ = h.data(error_id, v.to_string().as_bytes(), true).await;
        }
    };
    // Where the output starts: measured before stdin is connected, since the client's first
    // bytes may reach the container (and its answer the log) before this task runs again.
    let start = tokio::fs::metadata(&a.log)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if let Some(path) = &a.stdin {
        match attach::open_input(path, a.tty).await {
            Ok(input) => {
                let (tx, rx) = mpsc::channel::<InputMsg>(8);
                attach::spawn_feeder(input, rx);
                // The client's end of stdin (FIN) ends the feeder's input: with stdinOnce
                // the engine's relay then closes the container's stdin.
                let stdin = streams.stdin.take();
                let resize = streams.resize.take();
                tokio::spawn(feed(stdin, resize, tx));
            }
            Err(e) => {
                status(channel::failure_status(&format!("attaching stdin: {e}"))).await;
                let _ = tokio::time::timeout(DRAIN, &mut conn).await;
                conn.abort();
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let output = tokio::spawn(attach::follow(
        a.log.clone(),
        start,
        a.req,
        a.running,
        out_tx,
    ));
    let stream_of = |ch: u8| {
        let kind = if ch == channel::STDOUT {
            "stdout"
        } else {
            "stderr"
        };
        streams.ids.get(kind).copied()
    };
    let ended = loop {
        tokio::select! {
            next = out_rx.recv() => match next {
                Some((ch, data)) => {
                    if let Some(id) = stream_of(ch) {
                        if h.data(id, &data, false).await.is_err() {
                            break false;
                        }
                    }
                }
                // The container ended and all it wrote is sent.
                None => break true,
            },
            _ = &mut conn => break false,
        }
    };
    if ended {
        for kind in ["stdout", "stderr"] {
            if let Some(id) = streams.ids.get(kind) {
                let _ = h.data(*id, &[], true).await;
            }
        }
        status(channel::exit_status(&[], 0)).await;
        // The client closes the connection once it has read everything.
        let _ = tokio::time::timeout(DRAIN, &mut conn).await;
    } else {
        output.abort();
    }
    conn.abort();
}

/// Merge the client's stdin and resize streams into the container's input, until stdin ends
/// (or, without stdin, until the resize stream does).
async fn feed(
    mut stdin: Option<mpsc::Receiver<Vec<u8>>>,
    mut resize: Option<mpsc::Receiver<Vec<u8>>>,
    tx: mpsc::Sender<InputMsg>,
) {
    let mut pending = Vec::new();
    while stdin.is_some() || resize.is_some() {
        tokio::select! {
            d = async { stdin.as_mut().expect("guarded").recv().await }, if stdin.is_some() => match d {
                Some(d) => {
                    if tx.send(InputMsg::Data(d)).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            c = async { resize.as_mut().expect("guarded").recv().await }, if resize.is_some() => match c {
                Some(c) => {
                    pending.extend_from_slice(&c);
                    for (w, h) in take_sizes(&mut pending) {
                        if tx.send(InputMsg::Resize(w, h)).await.is_err() {
                            return;
                        }
                    }
                }
                None => resize = None,
            },
        }
    }
}
