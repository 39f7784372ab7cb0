//! Moving bytes between HTTP bodies and files without holding a blob in memory and without
//! blocking tokio's workers: a blocking-pool thread does the file I/O (and the hashing, which
//! is the CPU-heavy part), connected to the async side by a small bounded channel. The channel
//! bounds memory per transfer and lets the network side and the disk side run in parallel.

use std::fs::File;
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

/// Chunks in flight between the network and the disk thread.
const CHANNEL_DEPTH: usize = 16;
/// Queued body chunks are written together up to this many bytes (fewer syscalls).
const WRITE_BATCH: usize = 1 << 20;
/// At most this many buffers per `writev` (IOV_MAX is 1024).
const MAX_IOVECS: usize = 512;
/// Writeback of what was written is started every this many bytes.
const WRITEBACK_STEP: u64 = 8 << 20;
/// Reads for downloads; large enough that per-chunk overhead vanishes, small enough that a
/// slow client does not pin much memory (CHANNEL_DEPTH_READ chunks at most).
const READ_CHUNK: usize = 512 << 10;
const CHANNEL_DEPTH_READ: usize = 4;

/// The state of a file after a body was streamed into it.
pub struct Written {
    pub file: File,
    /// SHA-256 over everything the file held before plus what was appended; `None` when a
    /// write failed (the file's content is then unknown and must be re-hashed).
    pub hasher: Option<Sha256>,
    /// Bytes appended.
    pub len: u64,
    /// How the body ended: `Ok` at its end, or the client's or the disk's error.
    pub result: Result<(), BodyError>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the request body: {0}")]
    Client(String),
    #[error("writing to storage: {0}")]
    Storage(#[from] io::Error),
}

/// Appends `body` to `file` (positioned at its end), hashing every byte with `hasher`.
pub async fn body_to_file(body: Body, file: File, hasher: Option<Sha256>) -> Written {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let disk = tokio::task::spawn_blocking(move || write_chunks(rx, file, hasher));

    let mut client_error = None;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if chunk.is_empty() {
                    continue;
                }
                // The disk thread stopped (a write failed): its result says why.
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                client_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let (file, hasher, len, disk_result) = match disk.await {
        Ok(r) => r,
        Err(e) => panic!("upload writer thread failed: {e}"),
    };
    let result = match (disk_result, client_error) {
        (Err(e), _) => Err(BodyError::Storage(e)),
        (Ok(()), Some(e)) => Err(BodyError::Client(e)),
        (Ok(()), None) => Ok(()),
    };
    Written {
        file,
        hasher,
        len,
        result,
    }
}

/// The disk side of [`body_to_file`]: takes chunks as they come (whatever is queued, up to
/// WRITE_BATCH, in one `writev`, so small network chunks cost neither a copy nor a syscall
/// each), hashes what was written, and starts writeback as it goes so the final fsync has
/// little left to wait for.
fn write_chunks(
    mut rx: mpsc::Receiver<Bytes>,
    mut file: File,
    mut hasher: Option<Sha256>,
) -> (File, Option<Sha256>, u64, io::Result<()>) {
    let mut len = 0u64;
    let mut batch = Vec::new();
    let result = (|| {
        let start = file.seek(SeekFrom::End(0))?;
        let mut flushed = start;
        while let Some(first) = rx.blocking_recv() {
            let mut batch_len = first.len();
            batch.push(first);
            while batch_len < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(c) => {
                        batch_len += c.len();
                        batch.push(c);
                    }
                    Err(_) => break,
                }
            }
            write_all_chunks(&mut file, &batch)?;
            if let Some(h) = hasher.as_mut() {
                batch.iter().for_each(|c| h.update(c));
            }
            len += batch_len as u64;
            batch.clear();
            let end = start + len;
            if end - flushed >= WRITEBACK_STEP {
                start_writeback(&file, flushed, end - flushed);
                flushed = end;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        // What reached the file is unknown: the caller re-hashes or discards it.
        hasher = None;
    }
    (file, hasher, len, result)
}

/// `write_all` over several buffers with `writev`.
fn write_all_chunks(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let (mut idx, mut off) = (0, 0);
    while idx < chunks.len() {
        let slices: Vec<IoSlice> = std::iter::once(&chunks[idx][off..])
            .chain(chunks[idx + 1..].iter().map(|c| &c[..]))
            .take(MAX_IOVECS)
            .map(IoSlice::new)
            .collect();
        let mut n = match file.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let rest = chunks[idx].len() - off;
            if n >= rest {
                n -= rest;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Asks the kernel to start writing a range to disk now, without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is valid for
    // the borrow of `file`. Failure only loses an optimisation (fsync still follows).
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// A response body streaming `len` bytes of `file` from `offset`, read on a blocking thread.
pub fn file_body(mut file: File, offset: u64, len: u64) -> Body {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH_READ);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let want = READ_CHUNK.min((end - pos) as usize);
            // read_to_end into fresh capacity: File reads into it without zeroing it first.
            let mut buf = Vec::with_capacity(want);
            let chunk = match (&file).take(want as u64).read_to_end(&mut buf) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob shorter than its size",
                )),
                Ok(n) => {
                    pos += n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            // The receiver is gone when the client went away: stop reading.
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
