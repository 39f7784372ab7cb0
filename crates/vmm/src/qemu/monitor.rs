//! A throwaway VM's private QMP monitor, on one end of a socketpair (no socket file): how the
//! VM ended when the guest did not report an exit status, and a guest that halted for good.
//!
//! Why the halt watch: without ACPI (a throwaway single-vCPU run boots `acpi=off`, see
//! cmdline.rs) the kernel has no way to power the machine off, so `poweroff` becomes a halt:
//! every vCPU stops in `hlt` with interrupts disabled and QEMU, which has no event for that,
//! would wait forever. While the console is quiet, the watch asks QEMU for the vCPUs' state
//! (`info registers -a`: HLT and the IF flag); all halted with interrupts off, twice in a row,
//! is a machine nothing but a reset can wake, so the run ends there.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How the VM ended, from QEMU's SHUTDOWN event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The guest powered the machine off (ACPI).
    Poweroff,
    /// The guest reset it (a reboot, or a panic with `panic=-1`), ended by `-no-reboot`.
    Reset,
    /// The guest panicked (pvpanic).
    Panic,
    Other(String),
}

/// What the watch tells the run while QEMU is still up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// QEMU answered on its monitor: every `-blockdev` file is open by now.
    Up,
    /// Every vCPU is halted with interrupts disabled.
    Halted,
}

/// What the monitor last saw, for the error of a run that times out: a guest that never ends
/// is otherwise a mystery (which vCPU spins where, and whether QEMU was told to shut down).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The vCPUs at the watch's last look (`#0 RIP=… HLT=0 IF=1`, one per vCPU).
    pub cpus: String,
    /// QEMU's SHUTDOWN event, if one came.
    pub shutdown: Option<End>,
}

/// How often the halt watch looks, and after how long a quiet console.
const POLL: Duration = Duration::from_millis(200);
const QUIET: Duration = Duration::from_millis(1000);

/// Follow the monitor on `stream` until QEMU closes it; returns the SHUTDOWN reason seen, if
/// any. `last_output_ms` is when the console last had output (ms since `t0`); `notify` gets
/// each [`Note`] and says whether the run still listens; `seen` is kept up to date.
pub(crate) fn watch(
    stream: UnixStream,
    t0: Instant,
    last_output_ms: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    notify: impl Fn(Note) -> bool + Send + 'static,
) -> JoinHandle<Option<End>> {
    std::thread::spawn(move || {
        let mut m = Lines::new(stream);
        let mut end = None;
        // The greeting, then leave negotiation mode.
        if m.next().is_none() || m.send(r#"{"execute":"qmp_capabilities"}"#).is_err() {
            return None;
        }
        let mut up = false;
        let mut halted_twice = 0;
        let _ = m.stream.set_read_timeout(Some(POLL));
        loop {
            let msg = match m.next_or_timeout() {
                Ok(Some(msg)) => msg,
                Ok(None) => return end,
                Err(()) => {
                    let quiet = t0.elapsed().as_millis() as u64
                        >= last_output_ms.load(Ordering::Relaxed) + QUIET.as_millis() as u64;
                    if up && quiet {
                        let ask = r#"{"execute":"human-monitor-command","arguments":{"command-line":"info registers -a"},"id":"halt"}"#;
                        if m.send(ask).is_err() {
                            return end;
                        }
                    }
                    continue;
                }
            };
            if let Some(ev) = msg.get("event").and_then(Value::as_str) {
                if ev == "SHUTDOWN" {
                    end = Some(match msg.pointer("/data/reason").and_then(Value::as_str) {
                        Some("guest-shutdown") => End::Poweroff,
                        Some("guest-reset") => End::Reset,
                        Some("guest-panic") => End::Panic,
                        r => End::Other(r.unwrap_or("unknown").to_string()),
                    });
                    if let Ok(mut seen) = seen.lock() {
                        seen.shutdown = end.clone();
                    }
                }
                continue;
            }
            if !up {
                up = true; // the answer to qmp_capabilities
                if !notify(Note::Up) {
                    return end;
                }
                continue;
            }
            if msg.get("id").and_then(Value::as_str) == Some("halt") {
                let text = msg.get("return").and_then(Value::as_str).unwrap_or("");
                if let Ok(mut seen) = seen.lock() {
                    seen.cpus = cpu_summary(text);
                }
                if all_halted(text) {
                    halted_twice += 1;
                } else {
                    halted_twice = 0;
                }
                if halted_twice >= 2 && !notify(Note::Halted) {
                    return end;
                }
            }
        }
    })
}

/// Whether every vCPU in `info registers -a` output sits in `hlt` with IF (bit 9) clear.
fn all_halted(text: &str) -> bool {
    let mut cpus = 0;
    for line in text.lines().filter(|l| l.contains("HLT=")) {
        cpus += 1;
        let flags = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("EFL=").or_else(|| w.strip_prefix("RFL=")))
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        let halted = line.split_whitespace().any(|w| w == "HLT=1");
        if !halted || flags.is_none_or(|f| f & 0x200 != 0) {
            return false;
        }
    }
    cpus > 0
}

/// One short line of `info registers -a`: each vCPU's instruction pointer, whether it sits in
/// `hlt`, and its interrupt flag.
fn cpu_summary(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("HLT="))
        .enumerate()
        .map(|(i, line)| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .unwrap_or("?")
                    .to_string()
            };
            let ip = match field("RIP=").as_str() {
                "?" => field("EIP="),
                ip => ip.to_string(),
            };
            let flags = match field("RFL=").as_str() {
                "?" => field("EFL="),
                f => f.to_string(),
            };
            let interrupts = u64::from_str_radix(&flags, 16)
                .map(|f| if f & 0x200 != 0 { "IF=1" } else { "IF=0" })
                .unwrap_or("IF=?");
            format!("#{i} IP={ip} HLT={} {interrupts}", field("HLT="))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// JSON lines off the monitor socket, with a partial line kept across read timeouts.
struct Lines {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Lines {
    fn new(stream: UnixStream) -> Lines {
        Lines {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())
    }

    fn next(&mut self) -> Option<Value> {
        loop {
            match self.next_or_timeout() {
                Ok(v) => return v,
                Err(()) => continue,
            }
        }
    }

    /// `Ok(None)`: closed; `Err(())`: nothing within the read timeout.
    fn next_or_timeout(&mut self) -> Result<Option<Value>, ()> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                match serde_json::from_slice(&line) {
                    Ok(v) => return Ok(Some(v)),
                    Err(_) => continue,
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(())
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halted_only_with_interrupts_off_on_every_cpu() {
        let cpu = |fl: &str, hlt: u8| {
            format!("RIP=ffffffff81000000 RFL={fl} [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT={hlt}\r\n")
        };
        assert!(all_halted(&cpu("00000046", 1)));
        // idle: hlt with interrupts on
        assert!(!all_halted(&cpu("00000246", 1)));
        assert!(!all_halted(&cpu("00000046", 0)));
        let two = format!(
            "CPU#0\r\n{}CPU#1\r\n{}",
            cpu("00000046", 1),
            cpu("00000246", 1)
        );
        assert!(!all_halted(&two));
        assert!(all_halted(
            "EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1"
        ));
        assert!(!all_halted(""));
        assert_eq!(
            cpu_summary(&two),
            "#0 IP=ffffffff81000000 HLT=1 IF=0, #1 IP=ffffffff81000000 HLT=1 IF=1"
        );
    }
}
