//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket), run from the pod sync:
//! each probe keeps its own clock (initialDelaySeconds, periodSeconds) and counts consecutive
//! results against successThreshold / failureThreshold, as the kubelet does.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe's running tally for one container attempt.
#[derive(Debug, Clone)]
struct Tally {
    pod: String,
    started: Instant,
    last: Option<Instant>,
    successes: i32,
    failures: i32,
    /// The probe's verdict so far: None until it has reached a threshold.
    verdict: Option<bool>,
}

/// What the probes say about one running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// Readiness (true without a readiness probe once started).
    pub ready: bool,
    /// The liveness or startup probe failed past its threshold: restart the container.
    pub kill: bool,
}

#[derive(Default)]
pub struct Prober {
    /// (container id, kind) → tally. Container ids are per attempt, so a restart starts fresh.
    tallies: HashMap<(String, Kind), Tally>,
}

/// Where and how to run a probe of one container.
pub struct Target<'a> {
    pub pod_uid: &'a str,
    pub container_id: &'a str,
    pub pod_ip: &'a str,
    /// The `yun` binary and data dir, for exec probes (`yun exec`).
    pub yun_exe: &'a Path,
    pub data_dir: &'a Path,
}

impl Kind {
    /// As the kubelet's Unhealthy events name it.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

impl Prober {
    /// Run whichever probes of `c` are due and return the container's verdict, and the
    /// failures of the probes run now ("Liveness probe failed: …", the kubelet's Unhealthy
    /// messages).
    pub fn check(&mut self, c: &Container, t: &Target) -> (Verdict, Vec<String>) {
        let mut failures = Vec::new();
        let verdict = self.check_into(c, t, &mut failures);
        (verdict, failures)
    }

    fn check_into(&mut self, c: &Container, t: &Target, failures: &mut Vec<String>) -> Verdict {
        let startup = c.startup_probe.as_ref();
        let started = match startup {
            Some(p) => self.run(Kind::Startup, p, t, failures).unwrap_or(false),
            None => true,
        };
        let startup_failed = startup.is_some() && self.verdict(t, Kind::Startup) == Some(false);
        if !started {
            return Verdict {
                started: false,
                ready: false,
                kill: startup_failed,
            };
        }
        let alive = match &c.liveness_probe {
            Some(p) => self.run(Kind::Liveness, p, t, failures).unwrap_or(true),
            None => true,
        };
        let ready = match &c.readiness_probe {
            Some(p) => self.run(Kind::Readiness, p, t, failures).unwrap_or(false),
            None => true,
        };
        Verdict {
            started: true,
            ready,
            kill: !alive,
        }
    }

    fn verdict(&self, t: &Target, kind: Kind) -> Option<bool> {
        self.tallies
            .get(&(t.container_id.to_string(), kind))
            .and_then(|t| t.verdict)
    }

    /// Forget the tallies of one pod's containers that are no longer running (`live` holds
    /// the pod's running container ids; ids of other pods are kept).
    pub fn retain_for_pod(&mut self, uid: &str, live: &[String]) {
        self.tallies
            .retain(|(id, _), t| t.pod != uid || live.contains(id));
    }

    fn run(
        &mut self,
        kind: Kind,
        p: &Probe,
        t: &Target,
        failures: &mut Vec<String>,
    ) -> Option<bool> {
        let key = (t.container_id.to_string(), kind);
        let now = Instant::now();
        let tally = self.tallies.entry(key).or_insert_with(|| Tally {
            pod: t.pod_uid.to_string(),
            started: now,
            last: None,
            successes: 0,
            failures: 0,
            verdict: None,
        });
        let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        let due = now.duration_since(tally.started) >= delay
            && tally.last.is_none_or(|l| now.duration_since(l) >= period);
        if !due {
            return tally.verdict;
        }
        tally.last = Some(now);
        let result = probe_once(p, t);
        if let Err(why) = &result {
            failures.push(format!("{} probe failed: {why}", kind.title()));
        }
        if result.is_ok() {
            tally.successes += 1;
            tally.failures = 0;
            // Liveness and startup need one success; readiness its successThreshold.
            let needed = if kind == Kind::Readiness {
                p.success_threshold.unwrap_or(1).max(1)
            } else {
                1
            };
            if tally.successes >= needed {
                tally.verdict = Some(true);
            }
        } else {
            tally.failures += 1;
            tally.successes = 0;
            if tally.failures >= p.failure_threshold.unwrap_or(3).max(1) {
                tally.verdict = Some(false);
            }
        }
        tally.verdict
    }
}

fn port_of(port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(s) => s.parse().ok(),
    }
}

/// Run one probe once: why it failed, in the kubelet's words where it has them.
fn probe_once(p: &Probe, t: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &p.exec {
        let Some(cmd) = exec.command.as_ref().filter(|c| !c.is_empty()) else {
            return Err("exec probe has no command".into());
        };
        return exec_probe(t, cmd, timeout);
    }
    let ip: std::net::IpAddr = t
        .pod_ip
        .parse()
        .map_err(|_| format!("pod address {:?} is not known", t.pod_ip))?;
    if let Some(h) = &p.http_get {
        let port = port_of(&h.port).ok_or_else(|| format!("port {:?} is not a number", h.port))?;
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        return http_probe(SocketAddr::new(ip, port), &path, timeout);
    }
    if let Some(tcp) = &p.tcp_socket {
        let port =
            port_of(&tcp.port).ok_or_else(|| format!("port {:?} is not a number", tcp.port))?;
        let addr = SocketAddr::new(ip, port);
        return TcpStream::connect_timeout(&addr, timeout)
            .map(drop)
            .map_err(|e| format!("dial tcp {addr}: {e}"));
    }
    Err("the probe names no handler (exec, httpGet or tcpSocket)".into())
}

/// `yun exec` in a process of its own (the agent is multi-threaded and must not fork the
/// runtime itself), killed after the timeout.
fn exec_probe(t: &Target, cmd: &[String], timeout: Duration) -> Result<(), String> {
    // From the agent's one sealed copy of the binary, which `yun exec` would otherwise make
    // itself on every probe.
    let child = Command::new(yun_runtime::cloned_exe::shared_path(t.yun_exe))
        .arg0("yun")
        .arg("--data-dir")
        .arg(t.data_dir)
        .arg("exec")
        .arg(t.container_id)
        .args(cmd)
        .stdin(Stdio::null())
        // The output is the failure's message, as the kubelet's; a probe writing more than
        // a pipe holds is cut short by its timeout.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.map_err(|e| format!("starting {}: {e}", t.yun_exe.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut out = String::new();
                for pipe in [
                    child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
                    child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
                ]
                .into_iter()
                .flatten()
                {
                    let _ = pipe.take(4096).read_to_string(&mut out);
                }
                let out = out.trim_end();
                return Err(if out.is_empty() {
                    format!(
                        "command {cmd:?} exited with {}",
                        status.code().unwrap_or(-1)
                    )
                } else {
                    out.to_string()
                });
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("command {cmd:?} timed out"));
            }
        }
    }
}

/// A GET whose status is 200–399.
fn http_probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("Get \"{url}\": dial tcp {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: yun-probe\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..n]);
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
    {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        None => Err(format!("Get \"{url}\": no HTTP status line in the reply")),
    }
}
