//! The per-VM supervisor: a small process (yun re-executed) that owns one QEMU from start to
//! exit. It holds the VM's lock for its whole life, follows QEMU's events on a private QMP
//! monitor (pause/resume, guest poweroff, guest panic) into `state.json`, and records why the
//! VM ended. QEMU dies with it (PDEATHSIG), so a VM never outlives its record keeper.
//!
//! Start protocol: the starting command passes the VM's locked `lock` file as fd 3 and a pipe as
//! stdout; the supervisor writes `ok` once the guest runs, or `error: <one line>`.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::confine::{confine, open_tap, INCOMING_FD, TAP_FD_BASE};
use crate::disk::explain_qemu_error;
use crate::driver::State;
use crate::initramfs::EXIT_MARKER;
use crate::machine::{now, read_state, write_state, Launch, StateRecord};
use crate::qmp::Qmp;

/// The fd the lock arrives on.
pub(crate) const LOCK_FD: i32 = 3;
/// How long QEMU may take to open its monitor, and a restore to finish loading.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Entry point of the supervisor process for the VM in `dir`; returns the process exit code.
pub fn supervise(dir: &Path) -> i32 {
    // SAFETY: fd 3 is the lock the parent passed; keep it ours (not QEMU's) with CLOEXEC.
    unsafe { libc::fcntl(LOCK_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: fd 1 is the report pipe the parent gave us; we own it from here on.
    let mut report = unsafe { fs::File::from_raw_fd(libc::dup(1)) };
    // Nothing else may write into the report pipe, and the parent stops reading after one line.
    if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 of two fds we own.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    // SAFETY: ignoring SIGHUP/SIGINT (a terminal going away) has no memory-safety impact.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    match run(dir, &mut report) {
        Ok(()) => 0,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(report, "error: {line}");
            eprintln!("supervisor: {line}");
            1
        }
    }
}

struct Qemu {
    child: Child,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(dir: &Path, report: &mut fs::File) -> Result<()> {
    let launch: Launch =
        serde_json::from_slice(&fs::read(dir.join("launch.json")).context("read launch.json")?)
            .context("launch.json")?;
    let mut rec = StateRecord {
        state: State::Starting,
        reason: None,
        started_at: None,
        ended_at: None,
        supervisor_pid: Some(std::process::id()),
        qemu_pid: None,
    };
    write_state(dir, &rec)?;
    for s in ["qmp.sock", "sup.sock", "console.sock"] {
        let _ = fs::remove_file(dir.join(s));
    }
    let console_log = dir.join("console.log");
    let console_start = fs::metadata(&console_log).map(|m| m.len()).unwrap_or(0);

    let plugged = match &launch.net {
        Some(n) => crate::net::plug(n),
        None => Ok(()),
    };
    // The vsock device listens before QEMU starts (QEMU connects to it) and is stopped after
    // QEMU has ended, when this is dropped.
    let mut vsock = None;
    let result = plugged
        .and_then(|()| {
            if launch.vsock {
                vsock = Some(crate::vsock::Vsock::start(dir, crate::vsock::GUEST_CID)?);
            }
            Ok(())
        })
        .and_then(|()| start(dir, &launch, &mut rec))
        .and_then(|(qemu, qmp)| {
            rec.state = State::Running;
            rec.started_at = Some(now());
            write_state(dir, &rec)?;
            writeln!(report, "ok")?;
            Ok((qemu, qmp))
        });
    // From here on the supervisor only waits for events: let go of what start-up touched.
    shed_startup_pages();
    let (mut qemu, mut qmp) = match result {
        Ok(v) => v,
        Err(e) => {
            rec.state = State::Failed;
            rec.reason = Some(format!("{e:#}"));
            rec.ended_at = Some(now());
            rec.qemu_pid = None;
            let _ = write_state(dir, &rec);
            drop(vsock.take());
            cleanup(dir, &launch);
            return Err(e);
        }
    };

    // Follow events until QEMU closes the monitor (it is exiting).
    let mut shutdown: Option<(bool, String)> = None;
    let mut panicked = false;
    let _ = qmp.set_timeout(None);
    while let Ok(Some(ev)) = qmp.next_event() {
        match ev.get("event").and_then(Value::as_str).unwrap_or("") {
            "STOP" => set_live_state(dir, &mut rec, State::Paused),
            "RESUME" => set_live_state(dir, &mut rec, State::Running),
            "GUEST_PANICKED" => panicked = true,
            "SHUTDOWN" => {
                let data = ev.get("data").cloned().unwrap_or(Value::Null);
                let guest = data.get("guest").and_then(Value::as_bool).unwrap_or(false);
                let reason = data
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                shutdown = Some((guest, reason));
            }
            _ => {}
        }
        // Handling the event faulted some code back in; events are rare, so shed it again.
        shed_startup_pages();
    }
    let status = qemu.child.wait().context("wait for QEMU")?;
    let (state, reason) = exit_reason(
        panicked,
        shutdown.as_ref(),
        status,
        &last_line(&dir.join("qemu.log")),
        guest_status(&console_log, console_start, &launch.nonce),
    );
    rec.state = state;
    rec.reason = Some(reason);
    rec.ended_at = Some(now());
    rec.qemu_pid = None;
    write_state(dir, &rec)?;
    drop(vsock.take());
    cleanup(dir, &launch);
    Ok(())
}

/// Record paused/running, unless a yun command recorded something else meanwhile.
fn set_live_state(dir: &Path, rec: &mut StateRecord, state: State) {
    if let Some(cur) = read_state(dir) {
        if !cur.state.is_live() {
            return;
        }
    }
    rec.state = state;
    let _ = write_state(dir, rec);
}

fn start(dir: &Path, launch: &Launch, rec: &mut StateRecord) -> Result<(Qemu, Qmp)> {
    let sock = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let mut cmd = Command::new(&launch.qemu);
    cmd.args(&launch.args)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock("qmp.sock")))
        .arg("-chardev")
        .arg(format!(
            "socket,id=con0,path={},server=on,wait=off,logfile={},logappend=on",
            sock("console.sock"),
            sock("console.log")
        ))
        .args(["-serial", "chardev:con0"]);
    // QEMU may not spawn (`-sandbox spawn=deny`), so no `exec:cat`: it reads the saved state
    // from a file we open for it.
    let incoming = match &launch.incoming {
        Some(state) => {
            let f =
                fs::File::open(state).with_context(|| format!("snapshot {}", state.display()))?;
            cmd.arg("-incoming").arg(format!("fd:{INCOMING_FD}"));
            Some(f)
        }
        None => None,
    };
    let taps = launch
        .taps
        .iter()
        .map(|t| open_tap(t))
        .collect::<Result<Vec<_>>>()?;
    // Last, and waiting for us: QEMU runs nothing before the supervisor listens for events.
    cmd.arg("-chardev")
        .arg(format!(
            "socket,id=sup,path={},server=on,wait=on",
            sock("sup.sock")
        ))
        .args(["-mon", "chardev=sup,mode=control"]);
    let log = fs::File::create(dir.join("qemu.log")).context("create qemu.log")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let mut fds: Vec<_> = incoming
        .iter()
        .map(|f| (f.as_raw_fd(), INCOMING_FD))
        .collect();
    for (i, t) in taps.iter().enumerate() {
        fds.push((t.as_raw_fd(), TAP_FD_BASE + i as i32));
    }
    confine(&mut cmd, fds);
    let child = cmd
        .spawn()
        .with_context(|| format!("{}: cannot start", launch.qemu.display()))?;
    drop((incoming, taps));
    let mut qemu = Qemu { child };
    rec.qemu_pid = Some(qemu.child.id());
    write_state(dir, rec)?;

    let deadline = Instant::now() + START_TIMEOUT;
    let fail = |qemu: &mut Qemu, what: &str| -> anyhow::Error {
        let _ = qemu.child.kill();
        let _ = qemu.child.wait();
        let line = last_line(&dir.join("qemu.log"));
        let all = fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
        match explain_qemu_error(&all, &launch.disks) {
            Some(l) => anyhow!("{l}"),
            None if line.is_empty() => anyhow!("QEMU {what}"),
            None => anyhow!("{line}"),
        }
    };
    let mut qmp = loop {
        if let Ok(Some(_)) = qemu.child.try_wait() {
            return Err(fail(&mut qemu, "exited at start"));
        }
        if Instant::now() > deadline {
            return Err(fail(&mut qemu, "did not open its monitor in time"));
        }
        match Qmp::connect(&dir.join("sup.sock"), Duration::from_millis(100)) {
            Ok(q) => break q,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if launch.incoming.is_some() {
        loop {
            let st = match qmp.query_status() {
                Ok(s) => s,
                Err(_) => return Err(fail(&mut qemu, "failed while restoring")),
            };
            if st.running {
                break;
            }
            // Snapshots are taken paused (one consistent instant), so the loaded VM is paused.
            if st.status == "paused" {
                qmp.cont()?;
                continue;
            }
            if !matches!(st.status.as_str(), "inmigrate" | "prelaunch" | "restore-vm") {
                let e = fail(&mut qemu, "restore failed");
                bail!("restore failed (VM {}): {e:#}", st.status);
            }
            if Instant::now() > deadline {
                return Err(fail(&mut qemu, "restore timed out"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok((qemu, qmp))
}

/// Drop the pages start-up touched and the event loop will not need, so each VM's supervisor
/// costs little resident memory (yun is one big binary; argument parsing alone touches MiBs
/// of its code). Only read-only file mappings without private (copied-on-write) pages are
/// dropped: for those MADV_DONTNEED just unmaps clean page-cache pages, which fault back in
/// unchanged if used again. Writable and relocated (RELRO) mappings are left alone.
fn shed_startup_pages() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize, bool)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                if let Some(r) = current.take() {
                    ranges.push(r);
                }
                let perms = f.next().unwrap_or("");
                let path = f.nth(3).unwrap_or("");
                let file = path.starts_with('/');
                current = Some((start, end, file && !perms.contains('w')));
                continue;
            }
        }
        if first == "Anonymous:" && f.next() != Some("0") {
            if let Some(r) = current.as_mut() {
                r.2 = false;
            }
        }
    }
    ranges.extend(current);
    for (start, end, ok) in ranges {
        if ok {
            // SAFETY: the range is a whole read-only, file-backed private mapping of this
            // single-threaded process with no anonymous pages; DONTNEED only drops clean
            // page-cache pages from our page tables (they refault with the same content).
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

fn cleanup(dir: &Path, launch: &Launch) {
    for s in ["qmp.sock", "sup.sock", "console.sock", "launch.json"] {
        let _ = fs::remove_file(dir.join(s));
    }
    if let Some(n) = &launch.net {
        crate::net::unplug(n);
    }
}

/// Map what QEMU reported and how it exited to the VM's end state and a short reason.
fn exit_reason(
    panicked: bool,
    shutdown: Option<&(bool, String)>,
    status: ExitStatus,
    stderr_line: &str,
    guest_exit: Option<i32>,
) -> (State, String) {
    let with_exit = |s: &str| match guest_exit {
        Some(c) => format!("{s} (exit {c})"),
        None => s.to_string(),
    };
    if panicked || matches!(shutdown, Some((_, r)) if r == "guest-panic") {
        return (State::Failed, "guest panic".into());
    }
    match shutdown.map(|(g, r)| (*g, r.as_str())) {
        Some((true, "guest-shutdown")) => (State::Stopped, with_exit("poweroff")),
        Some((true, "guest-reset")) => (State::Failed, "guest reset (reboot or panic)".into()),
        Some((_, "host-qmp-quit")) => (State::Stopped, "stopped".into()),
        Some((_, "host-signal")) => (State::Failed, "killed (QEMU got a signal)".into()),
        Some((_, r)) => (State::Stopped, with_exit(r)),
        None => match (status.signal(), status.code()) {
            (Some(sig), _) => (State::Failed, format!("killed (signal {sig})")),
            (None, Some(0)) => (State::Stopped, with_exit("exited")),
            (None, code) => {
                let mut r = format!("QEMU exited with status {}", code.unwrap_or(-1));
                if !stderr_line.is_empty() {
                    r.push_str(": ");
                    r.push_str(stderr_line);
                }
                (State::Failed, r)
            }
        },
    }
}

/// The guest command's exit status, from the marker /init printed in this run's console output.
fn guest_status(log: &Path, from: u64, nonce: &str) -> Option<i32> {
    let mut f = fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(from.max(len.saturating_sub(4096))))
        .ok()?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).ok()?;
    let marker = format!("{EXIT_MARKER}{nonce}: ");
    let at = tail.rfind(&marker)?;
    tail[at + marker.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) fn last_line(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.contains(": info: "))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        let ok = ExitStatus::from_raw(0);
        let killed = ExitStatus::from_raw(9);
        let sd = |g: bool, r: &str| Some((g, r.to_string()));
        assert_eq!(
            exit_reason(false, sd(true, "guest-shutdown").as_ref(), ok, "", Some(3)),
            (State::Stopped, "poweroff (exit 3)".into())
        );
        assert_eq!(
            exit_reason(true, sd(true, "guest-panic").as_ref(), ok, "", None).0,
            State::Failed
        );
        assert_eq!(
            exit_reason(false, None, killed, "", None),
            (State::Failed, "killed (signal 9)".into())
        );
        assert_eq!(
            exit_reason(false, sd(false, "host-qmp-quit").as_ref(), ok, "", None),
            (State::Stopped, "stopped".into())
        );
    }
}
