//! A small QMP client: JSON lines over QEMU's Unix socket.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

/// A QMP session past capability negotiation.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events that arrived while waiting for a command's reply, for [`Qmp::next_event`].
    events: VecDeque<Value>,
}

/// Answer of `query-status`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub running: bool,
    /// `running`, `paused`, `prelaunch`, `shutdown`, …
    pub status: String,
}

impl Qmp {
    /// Connect (retrying until `wait` passes, as QEMU creates the socket shortly after start),
    /// read the greeting and leave capability negotiation mode.
    pub fn connect(socket: &Path, wait: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e)
                        .with_context(|| format!("QMP {}: cannot connect", socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: VecDeque::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP: unexpected greeting {greeting}");
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Run one command and return its `return` value; events arriving meanwhile are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = serde_json::to_vec(&msg)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .with_context(|| format!("QMP {command}: write"))?;
        loop {
            let reply = self
                .read_message()
                .with_context(|| format!("QMP {command}"))?;
            if reply.get("event").is_some() {
                self.events.push_back(reply);
                continue;
            }
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                let desc = e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                bail!("QMP {command}: {desc}");
            }
            bail!("QMP {command}: unexpected reply {reply}");
        }
    }

    pub fn query_status(&mut self) -> Result<Status> {
        Ok(serde_json::from_value(self.execute("query-status", None)?)?)
    }

    /// Pause all vCPUs.
    pub fn stop(&mut self) -> Result<()> {
        self.execute("stop", None).map(drop)
    }

    /// Resume all vCPUs.
    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", None).map(drop)
    }

    /// Ask QEMU to exit now.
    /// The guest's current memory (size less the balloon), bytes; None without a balloon.
    pub fn balloon_actual(&mut self) -> Result<Option<u64>> {
        match self.execute("query-balloon", None) {
            Ok(v) => Ok(v.get("actual").and_then(Value::as_u64)),
            Err(e) if e.to_string().contains("No balloon device") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn quit(&mut self) -> Result<()> {
        self.execute("quit", None).map(drop)
    }

    /// Hand QEMU an open file as `fdname` (QMP `getfd`, the fd travels as SCM_RIGHTS).
    pub fn send_fd(&mut self, fdname: &str, fd: std::os::fd::BorrowedFd) -> Result<()> {
        use std::os::fd::AsRawFd;
        let msg = serde_json::to_vec(&json!({
            "execute": "getfd",
            "arguments": { "fdname": fdname },
        }))?;
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) };
        let mut cbuf = vec![0u8; space as usize];
        // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = space as usize;
        // SAFETY: the control buffer is CMSG_SPACE(int) bytes, room for exactly one cmsg with
        // one int; CMSG_FIRSTHDR/CMSG_DATA stay within it.
        let sent = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, fd.as_raw_fd());
            libc::sendmsg(self.writer.as_raw_fd(), &hdr, 0)
        };
        if sent < 0 || sent as usize != msg.len() {
            return Err(std::io::Error::last_os_error()).context("QMP getfd: sendmsg");
        }
        self.writer.write_all(b"\n")?;
        loop {
            let reply = self.read_message().context("QMP getfd")?;
            if reply.get("event").is_some() {
                self.events.push_back(reply);
                continue;
            }
            if reply.get("return").is_some() {
                return Ok(());
            }
            let desc = reply
                .pointer("/error/desc")
                .and_then(Value::as_str)
                .unwrap_or("unexpected reply");
            bail!("QMP getfd: {desc}");
        }
    }

    /// Block (up to the read timeout) for the next event; `None` once QEMU closed the socket.
    pub fn next_event(&mut self) -> Result<Option<Value>> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let msg: Value =
                serde_json::from_str(&line).with_context(|| format!("bad JSON {line:?}"))?;
            if msg.get("event").is_some() {
                return Ok(Some(msg));
            }
        }
    }

    /// How long reads may block; `None`: forever.
    pub fn set_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.writer.set_read_timeout(t)?;
        Ok(())
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(anyhow!("connection closed by QEMU"));
        }
        serde_json::from_str(&line).with_context(|| format!("bad JSON {line:?}"))
    }
}
