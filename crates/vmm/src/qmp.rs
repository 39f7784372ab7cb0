//! A small QMP client: JSON lines over QEMU's Unix socket.

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
    pub fn quit(&mut self) -> Result<()> {
        self.execute("quit", None).map(drop)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(anyhow!("connection closed by QEMU"));
        }
        serde_json::from_str(&line).with_context(|| format!("bad JSON {line:?}"))
    }
}
