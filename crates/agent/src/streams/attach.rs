//! `attach`: the container's main process's stdio. Its output is its log followed from the
//! moment of attaching (the CRI records keep stdout and stderr apart); its stdin, for a
//! container started with `stdin: true`, is the engine's attach socket (see
//! `yun_engine::attach`), whose relay ends the container's stdin after the first attach when
//! the pod says `stdinOnce`. The session ends when the container does (Success on the error
//! channel, as the kubelet's) or when the client goes away.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::channel::{self, Incoming};
use super::exec::ExecRequest;
use super::IDLE_TIMEOUT;

/// One complete CRI log line: its stream and content (a partial record's content has no
/// newline; a full one gets it back).
pub fn parse_record(line: &[u8]) -> Option<(u8, Vec<u8>)> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let _time = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => channel::STDOUT,
        b"stderr" => channel::STDERR,
        _ => return None,
    };
    let tag = parts.next()?;
    let mut content = parts.next().unwrap_or_default().to_vec();
    if tag.first() == Some(&b'F') {
        content.push(b'\n');
    }
    Some((stream, content))
}

pub struct Attach {
    pub req: ExecRequest,
    pub log: PathBuf,
    /// The attach socket, when stdin was asked for or the container has a terminal.
    pub stdin: Option<PathBuf>,
    /// The container has a terminal: input and window sizes go to its master.
    pub tty: bool,
    /// Whether the container still runs.
    pub running: Box<dyn Fn() -> bool + Send + Sync>,
}

/// Read what was appended to `log` since `offset`; the new offset and the data.
async fn read_from(log: PathBuf, offset: u64) -> (u64, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&log) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut buf);
            }
        }
        (offset + buf.len() as u64, buf)
    })
    .await
    .unwrap_or((offset, Vec::new()))
}

pub async fn session(socket: WebSocket, v5: bool, a: Attach, _permit: OwnedSemaphorePermit) {
    let (sink, mut incoming) = socket.split();
    let (tx, writer) = super::spawn_writer(sink);
    let stdin = match &a.stdin {
        Some(path) => match open_input(path, a.tty).await {
            Ok(s) => Some(s),
            Err(e) => {
                let status = channel::failure_status(&format!("attaching stdin: {e}"));
                let _ = tx
                    .send(Message::Binary(
                        channel::frame(channel::ERROR, status.to_string().as_bytes()).into(),
                    ))
                    .await;
                drop(tx);
                let _ = writer.await;
                return;
            }
        },
        None => None,
    };
    let (stdin_tx, stdin_rx) = mpsc::channel::<InputMsg>(8);
    let mut stdin_tx = Some(stdin_tx);
    if let Some(input) = stdin {
        spawn_feeder(input, stdin_rx);
    }
    let start = tokio::fs::metadata(&a.log)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let framer = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some((ch, data)) = out_rx.recv().await {
                let m = Message::Binary(channel::frame(ch, &data).into());
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        })
    };
    let output = tokio::spawn(follow(
        a.log.clone(),
        start,
        a.req.clone(),
        a.running,
        out_tx,
    ));
    let ended = loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)), if output.is_finished() => break true,
            msg = tokio::time::timeout(IDLE_TIMEOUT, incoming.next()) => match msg {
                Ok(Some(Ok(Message::Binary(b)))) => match channel::decode(v5, &b) {
                    Ok(Incoming::Stdin(d)) if a.req.stdin => {
                        if let Some(s) = &stdin_tx {
                            if s.send(InputMsg::Data(d.to_vec())).await.is_err() {
                                stdin_tx = None;
                            }
                        }
                    }
                    Ok(Incoming::Resize { width, height }) => {
                        if let Some(s) = &stdin_tx {
                            let _ = s.send(InputMsg::Resize(width, height)).await;
                        }
                    }
                    Ok(Incoming::CloseStdin) => stdin_tx = None,
                    Ok(_) => {}
                    Err(e) => tracing::debug!("attach session: {e}"),
                },
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => break false,
                Ok(Some(Ok(_))) => {}
            }
        }
    };
    drop(stdin_tx);
    if ended {
        let _ = output.await;
        let _ = framer.await;
        let ok = channel::exit_status(&[], 0);
        let _ = tx
            .send(Message::Binary(
                channel::frame(channel::ERROR, ok.to_string().as_bytes()).into(),
            ))
            .await;
    } else {
        output.abort();
        framer.abort();
    }
    drop(tx);
    let _ = writer.await;
}

/// Where an attached client's input goes: the engine's stdin relay (a pipe into the
/// container), or, for a container with a terminal, the terminal's master, which the engine's
/// terminal relay hands over (input is typed into it and window sizes are set on it).
pub(super) enum Input {
    Pipe(tokio::net::UnixStream),
    Terminal(std::sync::Arc<std::fs::File>),
}

pub(super) enum InputMsg {
    Data(Vec<u8>),
    Resize(u16, u16),
}

/// Open the container's input at its attach socket; `tty`: the container has a terminal.
pub(super) async fn open_input(path: &std::path::Path, tty: bool) -> std::io::Result<Input> {
    let socket = connect(path).await?;
    if !tty {
        return Ok(Input::Pipe(socket));
    }
    let socket = socket.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let master = tokio::task::spawn_blocking(move || yun_runtime::console::recv_fd(&socket))
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    Ok(Input::Terminal(std::sync::Arc::new(std::fs::File::from(
        master,
    ))))
}

/// Feed what `rx` brings into `input` until the client's input ends (its end is the pipe's
/// end: with stdinOnce the engine's relay then ends the container's stdin; a terminal stays).
pub(super) fn spawn_feeder(input: Input, mut rx: mpsc::Receiver<InputMsg>) {
    tokio::spawn(async move {
        match input {
            Input::Pipe(mut s) => {
                while let Some(m) = rx.recv().await {
                    if let InputMsg::Data(d) = m {
                        if s.write_all(&d).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = s.shutdown().await;
            }
            Input::Terminal(master) => {
                while let Some(m) = rx.recv().await {
                    let master = master.clone();
                    // A terminal whose reader is slow blocks the write: off the runtime.
                    let written = tokio::task::spawn_blocking(move || match m {
                        InputMsg::Data(d) => std::io::Write::write_all(&mut &*master, &d).is_ok(),
                        InputMsg::Resize(w, h) => {
                            super::exec::set_window_size(&*master, w, h);
                            true
                        }
                    })
                    .await
                    .unwrap_or(false);
                    if !written {
                        return;
                    }
                }
            }
        }
    });
}

/// Connect to the container's attach socket (its stdin).
pub(super) async fn connect(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let dir = std::fs::File::open(path.parent().unwrap_or(path))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    // The container dir's full path may be too long for a socket address.
    tokio::net::UnixStream::connect(yun_engine::attach::short_path(&dir, name)).await
}

/// Send the log's new records, as (channel, data), for the streams asked for, until the
/// container has ended and everything it wrote is sent.
pub(super) async fn follow(
    log: PathBuf,
    mut offset: u64,
    req: ExecRequest,
    running: Box<dyn Fn() -> bool + Send + Sync>,
    tx: mpsc::Sender<(u8, Vec<u8>)>,
) {
    let running = std::sync::Arc::new(running);
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let r = running.clone();
        let alive = tokio::task::spawn_blocking(move || r())
            .await
            .unwrap_or(false);
        let (next, data) = read_from(log.clone(), offset).await;
        offset = next;
        partial.extend_from_slice(&data);
        while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=nl).collect();
            let Some((ch, content)) = parse_record(&line[..line.len() - 1]) else {
                continue;
            };
            let wanted =
                (ch == channel::STDOUT && req.stdout) || (ch == channel::STDERR && req.stderr);
            if wanted && !content.is_empty() && tx.send((ch, content)).await.is_err() {
                return;
            }
        }
        if !alive && data.is_empty() {
            return;
        }
        tokio::time::sleep(yun_engine::ctrlog::FOLLOW_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_stream() {
        let out = parse_record(b"2026-01-01T00:00:00.000000000Z stdout F hello world").unwrap();
        assert_eq!(out, (channel::STDOUT, b"hello world\n".to_vec()));
        let err = parse_record(b"2026-01-01T00:00:00.000000000Z stderr P part").unwrap();
        assert_eq!(err, (channel::STDERR, b"part".to_vec()));
        assert!(parse_record(b"garbage").is_none());
    }
}
