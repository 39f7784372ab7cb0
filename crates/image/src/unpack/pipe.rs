//! The reading half of an unpack on its own thread: read the layer, decompress it and hash
//! the tar stream there, hand 1 MiB chunks to the unpacking thread. On two cores gzip
//! inflation and sha256 then overlap with the file-system work instead of adding to it.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::fsutil::decompress;

const CHUNK: usize = 1 << 20;
/// Chunks in flight: enough to ride over a slow stretch on either side.
const DEPTH: usize = 4;

pub struct Stream {
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    /// Emptied chunks go back to the reader so it does not allocate (and fault in) new ones.
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    handle: Option<JoinHandle<io::Result<Option<Digest>>>>,
}

/// Start reading `src` on a new thread; `hash` computes the sha256 of the decompressed stream.
pub fn spawn(src: impl Read + Send + 'static, hash: bool) -> Stream {
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    let (back, back_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let handle = std::thread::Builder::new()
        .name("yun-layer-read".into())
        .spawn(move || produce(src, hash, &tx, &back_rx))
        .expect("spawn the layer reader thread");
    Stream {
        rx: Some(rx),
        back,
        cur: Vec::new(),
        pos: 0,
        handle: Some(handle),
    }
}

fn produce(
    src: impl Read,
    hash: bool,
    tx: &SyncSender<io::Result<Vec<u8>>>,
    back: &Receiver<Vec<u8>>,
) -> io::Result<Option<Digest>> {
    let fail = |e: io::Error| {
        let copy = io::Error::new(e.kind(), e.to_string());
        let _ = tx.send(Err(e));
        copy
    };
    let (_, mut r) = decompress(src).map_err(fail)?;
    let mut hasher = hash.then(Sha256::new);
    loop {
        let mut buf = match back.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(CHUNK),
        };
        buf.resize(CHUNK, 0);
        let mut n = 0;
        // Fill the chunk: fewer, fuller messages.
        while n < CHUNK {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        if n == 0 {
            return Ok(hasher.map(|h| Digest::from_sha256(h.finalize().into())));
        }
        buf.truncate(n);
        if let Some(h) = &mut hasher {
            h.update(&buf);
        }
        if tx.send(Ok(buf)).is_err() {
            return Ok(None); // the unpacker gave up
        }
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            let Some(rx) = &self.rx else { return Ok(0) };
            match rx.recv() {
                Ok(Ok(next)) => {
                    let done = std::mem::replace(&mut self.cur, next);
                    let _ = self.back.try_send(done);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.rx = None;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Stream {
    /// Wait for the reader thread. With `drain`, the rest of the stream (the tar's end
    /// padding) is read first so the hash covers all of it; without, the reader is told to
    /// stop. Returns the stream's digest when hashing was asked for.
    pub fn finish(&mut self, drain: bool) -> io::Result<Option<Digest>> {
        if drain {
            let mut sink = [0u8; 8192];
            while self.read(&mut sink)? > 0 {}
        }
        self.rx = None;
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("the layer reader thread panicked"))?,
            None => Ok(None),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.finish(false);
    }
}
