//! exec over SPDY/3.1 with `v4.channel.k8s.io` (kubectl 1.20–1.29): the client opens one
//! stream per channel, named by its `streamtype` header (`error`, then `stdin`, `stdout`,
//! `stderr` as asked, and `resize` with a tty, whose data is a sequence of
//! `{"Width":W,"Height":H}` objects). Output goes out on the output streams, each finished
//! when the process's side ends; the error stream then carries the same Status as the
//! WebSocket protocols and is finished too.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::exec::{self, ExecRequest};
use super::spdy::{self, Handle, Stream};
use super::{channel, IDLE_TIMEOUT};

pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client has to open the streams it asked for.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);
/// After the process exits, how long held-open output is still read.
const DRAIN: Duration = Duration::from_secs(2);

/// The streams of one exec, by type.
#[derive(Default)]
pub(super) struct Streams {
    pub ids: HashMap<String, u32>,
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub resize: Option<mpsc::Receiver<Vec<u8>>>,
}

/// Accept the streams the client opens for `req` (error, then stdin/stdout/stderr/resize as
/// asked), within [`STREAMS_TIMEOUT`].
pub(super) async fn collect(
    h: &Handle,
    srx: &mut mpsc::Receiver<Stream>,
    req: &ExecRequest,
) -> Result<Streams, String> {
    let wanted = 1 + [req.stdin, req.stdout, req.stderr, req.tty]
        .iter()
        .filter(|b| **b)
        .count();
    let mut got = Streams::default();
    let deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
    while got.ids.len() < wanted {
        let s = match tokio::time::timeout_at(deadline, srx.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the client went away".into()),
            Err(_) => return Err("timed out waiting for the client's streams".into()),
        };
        h.reply(s.id, &[]).await.map_err(|e| e.to_string())?;
        let kind = s.header("streamtype").unwrap_or("").to_string();
        match kind.as_str() {
            "stdin" => got.stdin = Some(s.data),
            "resize" => got.resize = Some(s.data),
            "error" | "stdout" | "stderr" => {}
            other => return Err(format!("unknown stream type {other:?}")),
        }
        got.ids.insert(kind, s.id);
    }
    Ok(got)
}

/// Copy `reader` onto stream `id` and finish it.
fn pump(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    id: u32,
    h: Handle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if h.data(id, &buf[..n], false).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = h.data(id, &[], true).await;
    })
}

/// Apply `{"Width","Height"}` objects from the resize stream as they complete.
pub(super) fn take_sizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Size>();
    let mut used = 0;
    while let Some(Ok(s)) = it.next() {
        used = it.byte_offset();
        out.push((s.width, s.height));
    }
    buf.drain(..used);
    out
}

pub async fn session(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    yun_exe: &Path,
    root: &Path,
    id: &str,
    req: ExecRequest,
    _permit: OwnedSemaphorePermit,
) {
    let (stx, mut srx) = mpsc::channel::<Stream>(16);
    let (h, mut conn) = spdy::serve(io, stx);
    let mut streams = match collect(&h, &mut srx, &req).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("exec over SPDY: {e}");
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
    let mut sess = match exec::start(yun_exe, root, id, &req).await {
        Ok(s) => s,
        Err(e) => {
            status(channel::failure_status(&format!("{e:#}"))).await;
            let _ = tokio::time::timeout(DRAIN, &mut conn).await;
            conn.abort();
            return;
        }
    };
    let mut pumps = Vec::new();
    for (kind, reader) in [
        ("stdout", sess.stdout.take()),
        ("stderr", sess.stderr.take()),
    ] {
        if let (Some(r), Some(sid)) = (reader, streams.ids.get(kind)) {
            pumps.push(pump(r, *sid, h.clone()));
        }
    }
    if let (Some(mut w), Some(mut rx)) = (sess.stdin.take(), streams.stdin.take()) {
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if w.write_all(&d).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
    }
    let mut resize = streams.resize.take();
    let mut pending = Vec::new();
    let code = loop {
        tokio::select! {
            code = sess.wait() => break Some(code),
            _ = &mut conn => break None,
            _ = tokio::time::sleep(IDLE_TIMEOUT) => break None,
            chunk = async { resize.as_mut().expect("guarded").recv().await }, if resize.is_some() => {
                match chunk {
                    Some(c) => {
                        pending.extend_from_slice(&c);
                        for (w, hgt) in take_sizes(&mut pending) {
                            sess.resize(w, hgt);
                        }
                    }
                    None => resize = None,
                }
            }
        }
    };
    match code {
        Some(code) => {
            for p in &mut pumps {
                if tokio::time::timeout(DRAIN, &mut *p).await.is_err() {
                    p.abort();
                }
            }
            status(channel::exit_status(&req.command, code)).await;
            // The client closes the connection once it has read everything.
            let _ = tokio::time::timeout(DRAIN, &mut conn).await;
        }
        None => {
            sess.kill().await;
            let _ = sess.wait().await;
            pumps.iter().for_each(|p| p.abort());
        }
    }
    conn.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_objects_apply_as_they_complete() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(take_sizes(&mut buf), [(80, 24)]);
        buf.extend_from_slice(br#""Height":30}"#);
        assert_eq!(take_sizes(&mut buf), [(100, 30)]);
        assert!(buf.is_empty());
    }
}
