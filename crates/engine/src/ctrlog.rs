//! Container logs in the CRI format that the kubelet and crictl read: one record per line,
//! `TIME STREAM TAG CONTENT`, e.g. `2026-12-06T22:14:50.123456789Z stdout F hello`.
//! TAG is `F` when CONTENT ended with a newline and `P` for a piece of a line (a line longer
//! than [`MAX_RECORD`], or output that ended without a newline). Every line keeps the time it
//! was written, so `logs --since`, `--timestamps` and `--limit-bytes` can be served.
//!
//! A logger process per container (forked by the monitor, single-threaded: a poll loop over
//! the container's stdout and stderr pipes) writes the records. Logs written before this
//! format (raw output) still read back: a line that is not a record is taken as content.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::logfile::LogWriter;

/// The longest record content; longer lines are split into `P` records (the CRI's 16 KiB).
pub const MAX_RECORD: usize = 16 * 1024;

/// One logical line: the time of its first record, and its content with the newline it ended
/// with (none when the output ended without one).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub time: Option<SystemTime>,
    pub text: Vec<u8>,
}

/// Append one record to `out`.
pub fn record(out: &mut Vec<u8>, time: SystemTime, stream: &str, content: &[u8], full: bool) {
    out.extend_from_slice(humantime::format_rfc3339_nanos(time).to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if full { b" F " } else { b" P " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// A record line (without its newline): time, whether it is full, content. A line that is not
/// a record (a log from before this format) is a full line of content with no time.
fn parse(line: &[u8]) -> (Option<SystemTime>, bool, &[u8]) {
    let parsed = (|| {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let time = std::str::from_utf8(parts.next()?).ok()?;
        let time = humantime::parse_rfc3339(time).ok()?;
        if !matches!(parts.next()?, b"stdout" | b"stderr") {
            return None;
        }
        let full = match parts.next()? {
            b"F" => true,
            b"P" => false,
            _ => return None,
        };
        Some((Some(time), full, parts.next().unwrap_or(b"")))
    })();
    parsed.unwrap_or((None, true, line))
}

/// What to show of a log (kubectl logs' flags).
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Only the last N lines (of what exists when reading starts).
    pub tail: Option<usize>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// Turns the bytes of a log file, as they come, into what a reader sees under
/// [`LogOptions`]. Keeps the unfinished last line (and a line still in `P` pieces) until the
/// rest arrives.
#[derive(Debug)]
pub struct Decoder {
    opts: LogOptions,
    pending: Vec<u8>,
    line: Option<Line>,
    written: u64,
}

impl Decoder {
    pub fn new(opts: LogOptions) -> Decoder {
        Decoder {
            opts,
            pending: Vec::new(),
            line: None,
            written: 0,
        }
    }

    /// Whether `limit_bytes` is used up: nothing more will be shown.
    pub fn exhausted(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// The complete lines in `chunk` (with what was pending), before any filtering.
    fn lines(&mut self, chunk: &[u8]) -> Vec<Line> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let (time, full, content) = parse(&self.pending[start..start + nl]);
            let line = self.line.get_or_insert_with(|| Line {
                time,
                text: Vec::new(),
            });
            line.text.extend_from_slice(content);
            if full {
                line.text.push(b'\n');
                lines.extend(self.line.take());
            }
            start += nl + 1;
        }
        self.pending.drain(..start);
        lines
    }

    /// The end of the log: a line still in `P` pieces is complete now (its output ended
    /// without a newline).
    fn last_line(&mut self) -> Option<Line> {
        self.line.take()
    }

    fn show(&mut self, lines: Vec<Line>) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            if let (Some(since), Some(t)) = (self.opts.since, line.time) {
                if t < since {
                    continue;
                }
            }
            if self.opts.timestamps {
                let t = line.time.unwrap_or(SystemTime::UNIX_EPOCH);
                out.extend_from_slice(humantime::format_rfc3339_nanos(t).to_string().as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&line.text);
        }
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.written) as usize;
            out.truncate(room);
        }
        self.written += out.len() as u64;
        out
    }

    /// What exists now: all of it, or its last `tail` lines. With `at_end` (the writer is
    /// gone) a last unfinished line counts too.
    pub fn first(&mut self, data: &[u8], at_end: bool) -> Vec<u8> {
        let mut lines = self.lines(data);
        if at_end {
            lines.extend(self.last_line());
        }
        if let Some(n) = self.opts.tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        self.show(lines)
    }

    /// What a later chunk of the file adds (follow).
    pub fn more(&mut self, chunk: &[u8]) -> Vec<u8> {
        let lines = self.lines(chunk);
        self.show(lines)
    }

    /// The writer is gone: what is left.
    pub fn end(&mut self) -> Vec<u8> {
        let line = self.last_line();
        self.show(line.into_iter().collect())
    }
}

/// Fork the logger of a container: returns the write ends for the container's stdout and
/// stderr, and the logger's pid (wait for it once the container and everything holding the
/// pipes is gone: it exits when both pipes are closed, after writing the last record).
///
/// The caller must be single-threaded (the container monitor is).
pub fn spawn_logger(log: LogWriter) -> Result<(OwnedFd, OwnedFd, nix::unistd::Pid)> {
    let (out_r, out_w) = nix::unistd::pipe().context("pipe for the container's stdout")?;
    let (err_r, err_w) = nix::unistd::pipe().context("pipe for the container's stderr")?;
    // SAFETY: the monitor is single-threaded (see the function docs), so the child may run
    // arbitrary code.
    match unsafe { nix::unistd::fork() }.context("fork the container logger")? {
        nix::unistd::ForkResult::Child => {
            drop(out_w);
            drop(err_w);
            let code = match copy_records(&[(out_r, "stdout"), (err_r, "stderr")], log) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: leave the forked logger without running the parent's exit work.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok((out_w, err_w, child)),
    }
}

/// The logger's loop: read both pipes as output comes, write records, until both are closed.
fn copy_records(streams: &[(OwnedFd, &str)], mut log: LogWriter) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut open: Vec<bool> = vec![true; streams.len()];
    let mut partial: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
    let mut buf = vec![0u8; 64 * 1024];
    while open.iter().any(|o| *o) {
        let mut fds: Vec<PollFd> = streams
            .iter()
            .zip(&open)
            .filter(|(_, o)| **o)
            .map(|((fd, _), _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let indices: Vec<usize> = (0..streams.len()).filter(|i| open[*i]).collect();
        let mut out = Vec::new();
        let now = SystemTime::now();
        for (slot, i) in indices.into_iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            let (fd, stream) = &streams[i];
            let n = match nix::unistd::read(fd, &mut buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => 0,
            };
            let pending = &mut partial[i];
            if n == 0 {
                open[i] = false;
                if !pending.is_empty() {
                    record(&mut out, now, stream, pending, false);
                    pending.clear();
                }
                continue;
            }
            pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                let line = &pending[start..start + nl];
                let pieces = line.len().div_ceil(MAX_RECORD);
                for (k, piece) in line.chunks(MAX_RECORD).enumerate() {
                    record(&mut out, now, stream, piece, k + 1 == pieces);
                }
                if line.is_empty() {
                    record(&mut out, now, stream, b"", true);
                }
                start += nl + 1;
            }
            pending.drain(..start);
            while pending.len() >= MAX_RECORD {
                record(&mut out, now, stream, &pending[..MAX_RECORD], false);
                pending.drain(..MAX_RECORD);
            }
        }
        if !out.is_empty() {
            log.write(&out)?;
        }
    }
    Ok(())
}

/// How long a reader following a log sleeps between looks at the file.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    fn log_of(records: &[(u64, &str, &str, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (secs, stream, text, full) in records {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(*secs);
            record(&mut out, t, stream, text.as_bytes(), *full);
        }
        out
    }

    #[test]
    fn records_read_back_with_since_tail_timestamps_and_limit() {
        let log = log_of(&[
            (100, "stdout", "one", true),
            (200, "stderr", "tw", false),
            (201, "stderr", "o", true),
            (300, "stdout", "three", true),
            (400, "stdout", "no newline", false),
        ]);
        let all = Decoder::new(LogOptions::default()).first(&log, true);
        assert_eq!(all, b"one\ntwo\nthree\nno newline");
        let since = LogOptions {
            since: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(200)),
            ..Default::default()
        };
        assert_eq!(Decoder::new(since).first(&log, false), b"two\nthree\n");
        let tail = LogOptions {
            tail: Some(1),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            Decoder::new(tail).first(&log, false),
            b"1970-01-01T00:05:00.000000000Z three\n"
        );
        let mut limited = Decoder::new(LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        });
        assert_eq!(limited.first(&log, false), b"one\ntw");
        assert!(limited.exhausted());
        assert_eq!(limited.more(b"x"), b"");
    }

    #[test]
    fn chunks_split_anywhere_and_old_raw_logs() {
        let log = log_of(&[(1, "stdout", "hello", true), (2, "stdout", "world", true)]);
        let mut d = Decoder::new(LogOptions::default());
        let mut got = d.first(&log[..7], false);
        for b in &log[7..] {
            got.extend(d.more(std::slice::from_ref(b)));
        }
        assert_eq!(got, b"hello\nworld\n");
        let raw = Decoder::new(LogOptions::default()).first(b"plain output\nmore\n", true);
        assert_eq!(raw, b"plain output\nmore\n");
    }

    #[test]
    fn the_logger_writes_records_per_stream() {
        let dir = std::env::temp_dir().join(format!("yun-ctrlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctr.log");
        let log = LogWriter::open(&path, Default::default()).unwrap();
        let (out_w, err_w, pid) = spawn_logger(log).unwrap();
        let mut out = File::from(out_w);
        let mut err = File::from(err_w);
        out.write_all(b"a\nb").unwrap();
        err.write_all(b"E\n").unwrap();
        let long = vec![b'x'; MAX_RECORD + 10];
        out.write_all(b"\n").unwrap();
        out.write_all(&long).unwrap();
        out.write_all(b"\n").unwrap();
        drop(out);
        drop(err);
        nix::sys::wait::waitpid(pid, None).unwrap();
        let log = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&log);
        assert!(
            text.contains(" stdout F a\n") && text.contains(" stderr F E\n"),
            "{text}"
        );
        assert!(
            text.contains(" stdout P xxx"),
            "a long line is split: {text}"
        );
        let shown = Decoder::new(LogOptions::default()).first(&log, true);
        let mut want = b"a\nb\nE\n".to_vec();
        want.extend(&long);
        want.push(b'\n');
        let mut got_lines: Vec<&[u8]> = shown.split(|b| *b == b'\n').collect();
        let mut want_lines: Vec<&[u8]> = want.split(|b| *b == b'\n').collect();
        got_lines.sort();
        want_lines.sort();
        assert_eq!(got_lines, want_lines);
    }
}
