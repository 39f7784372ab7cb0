//! SPDY/3.1 framing, the server side, as far as Kubernetes' streaming protocols use it
//! (kubectl ≤ 1.29 speaks it for exec/attach/port-forward, and port-forward tunnels it inside
//! a WebSocket from 1.31 on). No maintained SPDY crate exists, so the framing is here:
//!
//! - control frames: `1 | version(15)=3 | type(16) | flags(8) | length(24) | data`;
//! - data frames: `0 | stream(31) | flags(8) | length(24) | data`, FLAG_FIN ends a direction;
//! - SYN_STREAM / SYN_REPLY / HEADERS carry a header block: `count(32)` then `len(32) name
//!   len(32) value` pairs, zlib-compressed with SPDY's dictionary in one compression context
//!   per direction for the whole connection (sync-flushed after every block);
//! - RST_STREAM ends a stream, PING is echoed, GOAWAY ends the session, SETTINGS and
//!   WINDOW_UPDATE are accepted and ignored (the peer, Go's spdystream, does not enforce
//!   windows either).
//!
//! [`serve`] reads frames and hands each new stream to the caller with its headers, a receiver
//! of its data (closed at the peer's FIN or reset) and a [`Handle`] to reply and write.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

/// The header-compression dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00 §2.6.10.1).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");

pub const FLAG_FIN: u8 = 1;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
/// A frame's payload may not exceed this (Go's spdystream writes at most 32 KiB of data).
pub const MAX_FRAME: usize = 1 << 20;
/// RST_STREAM status codes.
pub const CANCEL: u32 = 5;

pub type Headers = Vec<(String, String)>;

/// One frame as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    Control {
        kind: u16,
        flags: u8,
        data: Vec<u8>,
    },
}

/// Read one frame (None at a clean end of the connection).
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        bail!("SPDY frame of {len} bytes: the limit is {MAX_FRAME}");
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            bail!("SPDY version {version}: only 3 is served");
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Ok(Some(Frame::Control { kind, flags, data }))
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        Ok(Some(Frame::Data {
            stream,
            fin: flags & FLAG_FIN != 0,
            data,
        }))
    }
}

pub fn data_frame(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
    out
}

pub fn control_frame(kind: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
    out
}

/// The uncompressed form of a header block.
pub fn encode_headers(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Parse an uncompressed header block; names are lower-cased as SPDY/3 requires.
pub fn decode_headers(b: &[u8]) -> Result<Headers> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = b
            .get(at..at + n)
            .ok_or_else(|| anyhow!("SPDY header block: truncated"))?;
        at += n;
        Ok(s)
    };
    let word = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = word(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count.min(1024) {
        let n = word(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = word(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// One direction's header compression context (the whole connection is one zlib stream).
pub struct Deflater(Compress);

impl Default for Deflater {
    fn default() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY)
            .expect("zlib accepts the dictionary");
        Deflater(c)
    }
}

impl Deflater {
    pub fn block(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let input = encode_headers(headers);
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut consumed = 0;
        loop {
            out.reserve(256);
            let before = self.0.total_in();
            self.0
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate into a growing buffer");
            consumed += (self.0.total_in() - before) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// The peer's header decompression context.
pub struct Inflater(Decompress);

impl Default for Inflater {
    fn default() -> Self {
        Inflater(Decompress::new(true))
    }
}

impl Inflater {
    pub fn block(&mut self, compressed: &[u8]) -> Result<Headers> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            out.reserve(1024);
            if out.len() > MAX_FRAME {
                bail!("SPDY header block inflates past {MAX_FRAME} bytes");
            }
            let before = self.0.total_in();
            let r = self
                .0
                .decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync);
            // The zlib header is consumed even when the call stops for the dictionary.
            let used = (self.0.total_in() - before) as usize;
            consumed += used;
            match r {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .context("SPDY header dictionary")?;
                    continue;
                }
                Err(e) => bail!("SPDY header block: {e}"),
            }
            let room = out.len() < out.capacity();
            if room && (consumed == compressed.len() || used == 0) {
                break;
            }
        }
        decode_headers(&out)
    }
}

/// Writes frames for the streams of one connection, in order.
#[derive(Clone)]
pub struct Handle {
    out: mpsc::Sender<Vec<u8>>,
    deflater: Arc<Mutex<Deflater>>,
}

impl Handle {
    pub async fn reply(&self, stream: u32, headers: &[(String, String)]) -> Result<()> {
        // Compress and queue under one lock: the peer inflates blocks in the order sent.
        let mut d = self.deflater.lock().await;
        let mut body = stream.to_be_bytes().to_vec();
        body.extend(d.block(headers));
        self.out
            .send(control_frame(SYN_REPLY, 0, &body))
            .await
            .map_err(|_| anyhow!("SPDY connection closed"))
    }

    pub async fn data(&self, stream: u32, data: &[u8], fin: bool) -> Result<()> {
        self.out
            .send(data_frame(stream, fin, data))
            .await
            .map_err(|_| anyhow!("SPDY connection closed"))
    }

    pub async fn reset(&self, stream: u32, status: u32) {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&status.to_be_bytes());
        let _ = self.out.send(control_frame(RST_STREAM, 0, &body)).await;
    }
}

/// A stream the peer opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// Its data; closed when the peer half-closes (FIN) or resets it.
    pub data: mpsc::Receiver<Vec<u8>>,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Serve one SPDY connection: new streams go to `streams` (with the [`Handle`] returned
/// first), until the peer ends the connection, sends GOAWAY, or `streams` is dropped.
pub fn serve(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    streams: mpsc::Sender<Stream>,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let handle = Handle {
        out: tx,
        deflater: Arc::new(Mutex::new(Deflater::default())),
    };
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let h = handle.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = read_loop(&mut rd, &h, streams).await {
            tracing::debug!("SPDY connection: {e:#}");
        }
        drop(h);
        writer.abort();
    });
    (handle, task)
}

async fn read_loop(
    rd: &mut (impl AsyncRead + Unpin),
    h: &Handle,
    streams: mpsc::Sender<Stream>,
) -> Result<()> {
    let mut inflater = Inflater::default();
    let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    while let Some(frame) = read_frame(rd).await? {
        match frame {
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = open.get(&stream) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        open.remove(&stream);
                    }
                }
                if fin {
                    open.remove(&stream);
                }
            }
            Frame::Control { kind, flags, data } => match kind {
                SYN_STREAM => {
                    if data.len() < 10 {
                        bail!("SYN_STREAM of {} bytes", data.len());
                    }
                    let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff;
                    let headers = inflater.block(&data[10..])?;
                    let (tx, rx) = mpsc::channel(16);
                    if flags & FLAG_FIN == 0 {
                        open.insert(id, tx);
                    }
                    let s = Stream {
                        id,
                        headers,
                        data: rx,
                    };
                    if streams.send(s).await.is_err() {
                        return Ok(());
                    }
                }
                HEADERS | SYN_REPLY if data.len() >= 4 => {
                    // Keep the compression context in step even though the content is unused.
                    inflater.block(&data[4..])?;
                }
                RST_STREAM if data.len() >= 4 => {
                    let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff;
                    open.remove(&id);
                }
                PING => {
                    let _ = h.out.send(control_frame(PING, 0, &data)).await;
                }
                GOAWAY => return Ok(()),
                _ => {}
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_blocks_round_trip_through_one_context() {
        let (mut d, mut i) = (Deflater::default(), Inflater::default());
        let a = hs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        let b = hs(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "1"),
        ]);
        assert_eq!(i.block(&d.block(&a)).unwrap(), a);
        assert_eq!(i.block(&d.block(&b)).unwrap(), b);
        // The dictionary is SPDY/3's (its Adler-32 is what peers put in the zlib header).
        let adler = DICTIONARY.iter().fold((1u32, 0u32), |(a, b), x| {
            let a = (a + *x as u32) % 65521;
            (a, (b + a) % 65521)
        });
        assert_eq!((adler.1 << 16) | adler.0, 0xe3c6_a7c2);
        assert_eq!(DICTIONARY.len(), 1423);
    }

    #[test]
    fn frames_encode_and_parse() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut bytes = data_frame(3, true, b"hello");
            bytes.extend(control_frame(PING, 0, &7u32.to_be_bytes()));
            let mut r = &bytes[..];
            assert_eq!(
                read_frame(&mut r).await.unwrap(),
                Some(Frame::Data {
                    stream: 3,
                    fin: true,
                    data: b"hello".to_vec()
                })
            );
            assert_eq!(
                read_frame(&mut r).await.unwrap(),
                Some(Frame::Control {
                    kind: PING,
                    flags: 0,
                    data: 7u32.to_be_bytes().to_vec()
                })
            );
            assert_eq!(read_frame(&mut r).await.unwrap(), None);
            // Oversized frames are refused before their payload is read.
            let mut big = data_frame(1, false, b"");
            big[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
            assert!(read_frame(&mut &big[..]).await.is_err());
        });
        assert!(decode_headers(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']).is_err());
    }
}
