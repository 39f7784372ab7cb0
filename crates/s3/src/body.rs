//! Request bodies: streamed to a temp file by a blocking writer thread (bounded channel, so
//! memory stays bounded whatever the object's size), hashed on the way (MD5 for the ETag, and
//! SHA-256 / CRC32 when the request's signature or trailer needs them), with `aws-chunked`
//! bodies decoded and their chunk signatures checked as they arrive.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Code, S3Error, S3Result};
use crate::sigv4::{ChunkSigner, Payload};

/// A received body in the bucket's tmp dir; removed on drop unless kept.
pub struct Staged {
    pub path: PathBuf,
    pub file: Option<File>,
    pub size: u64,
    pub md5: [u8; 16],
    sha256: Option<[u8; 32]>,
    crc32: Option<u32>,
    kept: bool,
}

impl Staged {
    /// A new empty file at `path` (in a bucket's tmp dir), removed on drop unless kept.
    pub fn new(path: PathBuf) -> io::Result<Staged> {
        let file = File::create(&path)?;
        Ok(Staged {
            path,
            file: Some(file),
            size: 0,
            md5: [0; 16],
            sha256: None,
            crc32: None,
            kept: false,
        })
    }

    /// Appends the metadata trailer and fsyncs; the file is ready to be renamed into place.
    pub fn seal(&mut self, meta: &crate::store::Meta) -> io::Result<()> {
        let f = self.file.as_mut().expect("sealed once");
        crate::store::append_trailer(f, meta)?;
        f.sync_all()?;
        self.file = None;
        Ok(())
    }

    /// The file now belongs to someone else (renamed into place).
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Which hashes to compute besides MD5.
#[derive(Default, Clone, Copy)]
struct Want {
    sha256: bool,
    crc32: bool,
}

struct Sink {
    tx: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<io::Result<Staged>>,
}

fn start_sink(tmp_dir: &Path, name: &str, want: Want) -> io::Result<Sink> {
    let path = tmp_dir.join(name);
    let file = File::create(&path)?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let mut staged = Staged {
            path,
            file: None,
            size: 0,
            md5: [0; 16],
            sha256: None,
            crc32: None,
            kept: false,
        };
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut md5 = Md5::new();
        let mut sha = want.sha256.then(Sha256::new);
        let mut crc = want.crc32.then(crc32fast::Hasher::new);
        let mut kicked = 0u64;
        while let Some(b) = rx.blocking_recv() {
            md5.update(&b);
            if let Some(s) = sha.as_mut() {
                s.update(&b);
            }
            if let Some(c) = crc.as_mut() {
                c.update(&b);
            }
            out.write_all(&b)?;
            staged.size += b.len() as u64;
            if staged.size - kicked >= WRITEBACK_STEP {
                out.flush()?;
                start_writeback(out.get_ref(), kicked, staged.size - kicked);
                kicked = staged.size;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        staged.file = Some(file);
        staged.md5 = md5.finalize().into();
        staged.sha256 = sha.map(|s| s.finalize().into());
        staged.crc32 = crc.map(|c| c.finalize());
        Ok(staged)
    });
    Ok(Sink { tx, writer })
}

/// How much written data may wait in the page cache before its writeback is started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Starts writing a range of the file to disk without waiting, so the fsync before the
/// rename finds little left to do: the disk works while the rest of the body arrives.
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open (borrowed
    // from `f`) for the whole call. Failure only loses the head start, so it is ignored.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Limits and identity for one body.
pub struct Receive<'a> {
    pub tmp_dir: &'a Path,
    pub tmp_name: String,
    pub max_size: u64,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Streams the body into a temp file and checks it against what the request declared:
/// Content-Length, x-amz-content-sha256, chunk signatures, trailer checksum, Content-MD5.
pub async fn receive(
    parts: &Parts,
    body: Incoming,
    payload: &Payload,
    r: Receive<'_>,
) -> S3Result<Staged> {
    let chunked = matches!(payload, Payload::Chunked { .. })
        || header(parts, "content-encoding").is_some_and(|e| e.contains("aws-chunked"));
    let declared: Option<u64> = if chunked {
        header(parts, "x-amz-decoded-content-length").and_then(|v| v.parse().ok())
    } else {
        header(parts, "content-length").and_then(|v| v.parse().ok())
    };
    if declared.is_some_and(|d| d > r.max_size) {
        return Err(S3Error::new(
            Code::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size.",
        ));
    }
    let trailer_name = header(parts, "x-amz-trailer").map(|t| t.to_ascii_lowercase());
    // Checksums sent as headers (botocore's flexible checksums over plain HTTP).
    let header_sums: Vec<(&str, String)> = ["x-amz-checksum-crc32", "x-amz-checksum-sha256"]
        .into_iter()
        .filter_map(|n| header(parts, n).map(|v| (n, v.to_string())))
        .collect();
    let wants = |name: &str| {
        trailer_name.as_deref() == Some(name) || header_sums.iter().any(|(n, _)| *n == name)
    };
    let want = Want {
        sha256: matches!(payload, Payload::Sha256(_)) || wants("x-amz-checksum-sha256"),
        crc32: wants("x-amz-checksum-crc32"),
    };
    let sink = start_sink(r.tmp_dir, &r.tmp_name, want)?;
    let mut decoder = match payload {
        Payload::Chunked { signer, .. } => Some(ChunkDecoder::new(signer.clone())),
        _ if chunked => Some(ChunkDecoder::new(None)),
        _ => None,
    };
    let fed = feed(body, &sink.tx, decoder.as_mut(), r.max_size).await;
    drop(sink.tx);
    let staged = sink
        .writer
        .await
        .map_err(S3Error::internal)?
        .map_err(S3Error::internal)?;
    fed?;
    if let Some(d) = &decoder {
        if !d.finished() {
            return Err(S3Error::new(
                Code::IncompleteBody,
                "The aws-chunked body ended early",
            ));
        }
        check_trailer(d, trailer_name.as_deref(), &staged)?;
    }
    for (name, value) in &header_sums {
        check_checksum(name, value, &staged)?;
    }
    if declared.is_some_and(|d| d != staged.size) {
        return Err(S3Error::new(
            Code::IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header",
        ));
    }
    if let Payload::Sha256(want) = payload {
        if staged.sha256.map(hex::encode).as_deref() != Some(want.as_str()) {
            return Err(S3Error::new(
                Code::XAmzContentSHA256Mismatch,
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    if let Some(md5) = header(parts, "content-md5") {
        let given = base64::engine::general_purpose::STANDARD
            .decode(md5)
            .map_err(|_| {
                S3Error::new(
                    Code::InvalidDigest,
                    "The Content-MD5 you specified was invalid.",
                )
            })?;
        if given != staged.md5 {
            return Err(S3Error::new(
                Code::BadDigest,
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    Ok(staged)
}

async fn feed(
    mut body: Incoming,
    tx: &mpsc::Sender<Bytes>,
    mut decoder: Option<&mut ChunkDecoder>,
    max: u64,
) -> S3Result<()> {
    let mut total = 0u64;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            S3Error::new(
                Code::IncompleteBody,
                format!("reading the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match decoder.as_deref_mut() {
            Some(d) => d.feed(data, &mut out)?,
            None => out.push(data),
        }
        for b in out.drain(..) {
            total += b.len() as u64;
            if total > max {
                return Err(S3Error::new(
                    Code::EntityTooLarge,
                    "Your proposed upload exceeds the maximum allowed object size.",
                ));
            }
            if tx.send(b).await.is_err() {
                return Err(S3Error::internal("the body writer stopped"));
            }
        }
    }
    Ok(())
}

/// Reads a small body (XML documents) into memory, refusing more than `max` bytes.
pub async fn read_small(
    parts: &Parts,
    mut body: Incoming,
    payload: &Payload,
    max: usize,
) -> S3Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut decoder = match payload {
        Payload::Chunked { signer, .. } => Some(ChunkDecoder::new(signer.clone())),
        _ => None,
    };
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            S3Error::new(
                Code::IncompleteBody,
                format!("reading the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match decoder.as_mut() {
            Some(d) => d.feed(data, &mut out)?,
            None => out.push(data),
        }
        for b in out.drain(..) {
            buf.extend_from_slice(&b);
        }
        if buf.len() > max {
            return Err(S3Error::new(
                Code::MalformedXML,
                "The request body is too large",
            ));
        }
    }
    if let Payload::Sha256(want) = payload {
        if hex::encode(Sha256::digest(&buf)) != *want {
            return Err(S3Error::new(
                Code::XAmzContentSHA256Mismatch,
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    if let Some(md5) = header(parts, "content-md5") {
        let given = base64::engine::general_purpose::STANDARD
            .decode(md5)
            .unwrap_or_default();
        if given != Md5::digest(&buf).as_slice() {
            return Err(S3Error::new(
                Code::BadDigest,
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    Ok(buf)
}

fn check_trailer(d: &ChunkDecoder, name: Option<&str>, staged: &Staged) -> S3Result<()> {
    let Some(name) = name else { return Ok(()) };
    let Some(value) = d.trailers.iter().find(|(k, _)| k == name).map(|(_, v)| v) else {
        return Err(S3Error::new(
            Code::InvalidRequest,
            format!("the trailer {name} announced in x-amz-trailer is missing"),
        ));
    };
    check_checksum(name, value, staged)
}

/// Compares a base64 checksum the client sent with the one computed while receiving.
fn check_checksum(name: &str, value: &str, staged: &Staged) -> S3Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let computed = match name {
        "x-amz-checksum-crc32" => staged.crc32.map(|c| b64.encode(c.to_be_bytes())),
        "x-amz-checksum-sha256" => staged.sha256.map(|s| b64.encode(s)),
        // CRC32C, CRC64NVME and SHA-1 are accepted unchecked.
        _ => None,
    };
    if computed.is_some_and(|c| c != value) {
        return Err(S3Error::new(
            Code::BadDigest,
            format!("The {name} you specified did not match the calculated checksum."),
        ));
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum State {
    Header,
    Data,
    DataEnd,
    Trailer,
    Done,
}

/// Decodes `aws-chunked` (`SIZE[;chunk-signature=SIG]\r\nDATA\r\n` … `0…\r\n` trailers `\r\n`).
pub struct ChunkDecoder {
    state: State,
    line: BytesMut,
    remaining: u64,
    signer: Option<ChunkSigner>,
    chunk_sig: String,
    chunk_hash: Sha256,
    last: bool,
    pub trailers: Vec<(String, String)>,
    trailer_raw: Vec<u8>,
}

fn bad_chunk(msg: &str) -> S3Error {
    S3Error::new(
        Code::IncompleteBody,
        format!("malformed aws-chunked body: {msg}"),
    )
}

impl ChunkDecoder {
    pub fn new(signer: Option<ChunkSigner>) -> ChunkDecoder {
        ChunkDecoder {
            state: State::Header,
            line: BytesMut::new(),
            remaining: 0,
            signer,
            chunk_sig: String::new(),
            chunk_hash: Sha256::new(),
            last: false,
            trailers: Vec::new(),
            trailer_raw: Vec::new(),
        }
    }

    pub fn finished(&self) -> bool {
        self.state == State::Done || (self.state == State::Trailer && self.line.is_empty())
    }

    /// Takes a line (without CRLF) from `input` once complete.
    fn take_line(&mut self, input: &mut Bytes) -> S3Result<Option<String>> {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.line.extend_from_slice(&input.split_to(i + 1));
                let l = std::mem::take(&mut self.line);
                let s = std::str::from_utf8(&l).map_err(|_| bad_chunk("not text"))?;
                Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()))
            }
            None => {
                self.line.extend_from_slice(input);
                input.clear();
                if self.line.len() > 4096 {
                    return Err(bad_chunk("line too long"));
                }
                Ok(None)
            }
        }
    }

    fn verify_chunk(&mut self) -> S3Result<()> {
        let hash = std::mem::take(&mut self.chunk_hash).finalize();
        if let Some(signer) = self.signer.as_mut() {
            let expected = signer.chunk_signature(&hash);
            if !crate::sigv4::same(&expected, &self.chunk_sig) {
                return Err(S3Error::new(
                    Code::SignatureDoesNotMatch,
                    "The chunk signature we calculated does not match the signature you provided.",
                ));
            }
            signer.prev = expected;
        }
        Ok(())
    }

    pub fn feed(&mut self, mut input: Bytes, out: &mut Vec<Bytes>) -> S3Result<()> {
        while !input.is_empty() {
            match self.state {
                State::Header => {
                    let Some(line) = self.take_line(&mut input)? else {
                        continue;
                    };
                    let (size, ext) = line.split_once(';').unwrap_or((&line, ""));
                    self.remaining = u64::from_str_radix(size.trim(), 16)
                        .map_err(|_| bad_chunk("bad chunk size"))?;
                    self.chunk_sig = ext
                        .trim()
                        .strip_prefix("chunk-signature=")
                        .unwrap_or("")
                        .to_string();
                    if self.signer.is_some() && self.chunk_sig.is_empty() {
                        return Err(S3Error::new(
                            Code::SignatureDoesNotMatch,
                            "a chunk of a signed aws-chunked body has no chunk-signature",
                        ));
                    }
                    self.last = self.remaining == 0;
                    self.state = if self.last {
                        self.verify_chunk()?;
                        State::Trailer
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let n = (self.remaining as usize).min(input.len());
                    let data = input.split_to(n);
                    if self.signer.is_some() {
                        self.chunk_hash.update(&data);
                    }
                    out.push(data);
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataEnd;
                    }
                }
                State::DataEnd => {
                    let Some(line) = self.take_line(&mut input)? else {
                        continue;
                    };
                    if !line.is_empty() {
                        return Err(bad_chunk("chunk data longer than its size"));
                    }
                    self.verify_chunk()?;
                    self.state = State::Header;
                }
                State::Trailer => {
                    let Some(line) = self.take_line(&mut input)? else {
                        continue;
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    let (k, v) = line
                        .split_once(':')
                        .ok_or_else(|| bad_chunk("bad trailer"))?;
                    let k = k.trim().to_ascii_lowercase();
                    if k == "x-amz-trailer-signature" {
                        if let Some(signer) = &self.signer {
                            let expected = signer.trailer_signature(&self.trailer_raw);
                            if !crate::sigv4::same(&expected, v.trim()) {
                                return Err(S3Error::new(
                                    Code::SignatureDoesNotMatch,
                                    "The trailer signature does not match.",
                                ));
                            }
                        }
                    } else {
                        self.trailer_raw
                            .extend_from_slice(format!("{k}:{}\n", v.trim()).as_bytes());
                        self.trailers.push((k, v.trim().to_string()));
                    }
                }
                State::Done => {
                    if input.iter().any(|b| !b.is_ascii_whitespace()) {
                        return Err(bad_chunk("data after the last chunk"));
                    }
                    input.clear();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented streaming example (PUT of 65536 + 1024 bytes of 'a' in 64 KiB chunks):
    /// the seed signature from the header, then each chunk's signature chained on it.
    #[test]
    fn aws_example_signed_chunks() {
        let req = hyper::Request::builder()
            .method("PUT")
            .uri("/examplebucket/chunkObject.txt")
            .header("host", "s3.amazonaws.com")
            .header("x-amz-date", "20130524T000000Z")
            .header("x-amz-storage-class", "REDUCED_REDUNDANCY")
            .header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
            .header("content-encoding", "aws-chunked")
            .header("x-amz-decoded-content-length", "66560")
            .header("content-length", "66824")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let creds = std::collections::HashMap::from([(
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        )]);
        let now = crate::time::parse_amz_date("20130524T000500Z").unwrap();
        let auth = crate::sigv4::authenticate(&parts, &creds, now).unwrap();
        let Payload::Chunked { signer } = auth.payload else {
            panic!("not chunked")
        };
        let mut body = Vec::new();
        for (len, sig) in [
            (
                65536,
                "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            ),
            (
                1024,
                "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            ),
            (
                0,
                "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
            ),
        ] {
            body.extend(format!("{len:x};chunk-signature={sig}\r\n").as_bytes());
            body.extend(vec![b'a'; len]);
            body.extend(b"\r\n");
        }
        assert_eq!(body.len(), 66824);
        let mut d = ChunkDecoder::new(signer.clone());
        let mut out = Vec::new();
        for piece in body.chunks(1000) {
            d.feed(Bytes::copy_from_slice(piece), &mut out).unwrap();
        }
        assert!(d.finished());
        assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 66560);
        // One byte changed in the second chunk: its signature no longer matches.
        let mut bad = body.clone();
        bad[65700] = b'b';
        let mut d = ChunkDecoder::new(signer);
        let err = d.feed(Bytes::from(bad), &mut Vec::new()).unwrap_err();
        assert_eq!(err.code, Code::SignatureDoesNotMatch);
    }

    #[test]
    fn decodes_unsigned_chunks_with_trailer_in_pieces() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:abc=\r\n\r\n";
        for split in 1..body.len() {
            let mut d = ChunkDecoder::new(None);
            let mut out = Vec::new();
            d.feed(Bytes::copy_from_slice(&body[..split]), &mut out)
                .unwrap();
            d.feed(Bytes::copy_from_slice(&body[split..]), &mut out)
                .unwrap();
            let all: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!(all, b"hello world");
            assert!(d.finished());
            assert_eq!(d.trailers, [("x-amz-checksum-crc32".into(), "abc=".into())]);
        }
    }
}
