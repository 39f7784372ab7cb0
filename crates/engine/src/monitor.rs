//! The monitor of a detached container (conmon's job): it runs the container with its output
//! going to `ctr.log`, waits for it, records the exit code, and removes it when `--rm` was given.
//!
//! A CLI call forks the monitor from itself (cheap, and the CLI is single-threaded). A
//! long-lived multi-threaded caller, such as the node agent inside `yun up`, sets a monitor
//! command instead: the monitor is then a fresh process (exec'd `yun`), so the runtime's own
//! forks never happen in a process whose other threads might hold locks.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use yun_runtime::{CreateOptions, Status};

use crate::{devnull, Container, Engine};

impl Engine {
    /// Start monitors as `argv… ID` (e.g. `yun container-monitor --data-dir D`) instead of by
    /// forking the caller; the command must end up calling [`Engine::monitor_main`].
    pub fn set_monitor_command(&mut self, argv: Vec<OsString>) {
        self.monitor_command = Some(argv);
    }

    /// Start the monitor: it owns the container from here on.
    pub(crate) fn start_monitor(&self, c: &Container) -> Result<()> {
        let spawned = match &self.monitor_command {
            Some(argv) => self.spawn_monitor(argv, c)?,
            None => self.fork_monitor(c)?,
        };
        self.wait_started(c, spawned)
    }

    fn fork_monitor(&self, c: &Container) -> Result<nix::unistd::Pid> {
        // SAFETY: without a monitor command the engine's callers are single-threaded (see the
        // module docs), so the child may run arbitrary code.
        match unsafe { nix::unistd::fork() }.context("fork the monitor")? {
            nix::unistd::ForkResult::Child => {
                let _ = nix::unistd::setsid();
                let code = self.monitor(c);
                // SAFETY: leave the forked monitor without running the parent's atexit work.
                unsafe { libc::_exit(code.unwrap_or(1)) }
            }
            nix::unistd::ForkResult::Parent { child } => Ok(child),
        }
    }

    fn spawn_monitor(&self, argv: &[OsString], c: &Container) -> Result<nix::unistd::Pid> {
        let (exe, args) = argv.split_first().context("empty monitor command")?;
        let mut child = Command::new(exe)
            .args(args)
            .arg(&c.id)
            // mimalloc (yun's allocator) commits its first arena eagerly, as huge pages where
            // it can: megabytes zeroed for a process that holds kilobytes. Measured on a Job
            // of 300 pods: 8% of the node's CPU went to clearing those pages. (The container's
            // own environment is the spec's, not this one.)
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("start the monitor {}", exe.to_string_lossy()))?;
        // The spawned process daemonizes (forks and exits at once, see `monitor_main`):
        // reap it now so a long-lived caller collects no zombies.
        let status = child.wait().context("wait for the monitor to detach")?;
        if !status.success() {
            bail!("the container monitor failed to start ({status})");
        }
        Ok(nix::unistd::Pid::from_raw(0))
    }

    /// Entry point of an exec'd monitor for container `id`: detach from the caller (new
    /// session, reparented away by a fork) and run the container to its end. Returns the exit
    /// status for the detaching parent (0 once the monitor runs).
    pub fn monitor_main(&self, id: &str) -> i32 {
        let c = match self.layout.load(id) {
            Ok(c) => c,
            Err(_) => return 1,
        };
        // SAFETY: the exec'd monitor is single-threaded at this point.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { .. }) => 0,
            Ok(nix::unistd::ForkResult::Child) => {
                let _ = nix::unistd::setsid();
                let code = self.monitor(&c);
                // SAFETY: end the monitor without unwinding into the caller's main.
                unsafe { libc::_exit(code.unwrap_or(1)) }
            }
            Err(_) => 1,
        }
    }

    /// The monitor proper: run the container with the log as its output, record the end.
    fn monitor(&self, c: &Container) -> Result<i32> {
        let log = crate::logfile::LogWriter::open(&self.layout.log(&c.id), c.log_rotation)?;
        let null = devnull()?;
        // The monitor itself must not hold the caller's terminal or pipes.
        for fd in 0..3 {
            // SAFETY: dup2 of a valid fd onto our stdio numbers.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
        // Stdin for attach: forked before the logger, so the relay holds no output pipe. (With
        // a terminal, attach goes through the terminal relay below.)
        let (stdin, relay) = if c.stdin_open && !c.tty {
            let socket = self.layout.attach_socket(&c.id);
            let (r, pid) = crate::attach::spawn_stdin_relay(&socket, c.stdin_once)?;
            (r, Some(pid))
        } else {
            (devnull()?, None)
        };
        // The container writes into pipes; the logger turns them into timestamped records.
        let (stdout, stderr, logger) = crate::ctrlog::spawn_logger(log)?;
        let (opts, terminal) = if c.tty {
            // A terminal has one output: stdout. The relay holds the log's only writer.
            drop((stdin, stderr));
            let name = self.layout.attach_socket(&c.id);
            let name = name
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("attach.sock");
            let t = crate::tty::spawn_relay(&self.layout.dir(&c.id), name, stdout)?;
            let opts = CreateOptions {
                console_socket: Some(t.console.clone()),
                ..Default::default()
            };
            (opts, Some(t))
        } else {
            let opts = CreateOptions {
                stdio: Some([stdin, stdout, stderr]),
                ..Default::default()
            };
            (opts, None)
        };
        let result = self.run_to_end(c, opts);
        if let Some(t) = terminal {
            // The relay ends by itself once the container's terminal is closed, after the
            // last output; it is stopped if it has not within a few seconds (or never got the
            // console because the container did not start).
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match nix::sys::wait::waitpid(t.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                        let _ = nix::sys::signal::kill(t.pid, nix::sys::signal::Signal::SIGKILL);
                        let _ = nix::sys::wait::waitpid(t.pid, None);
                        break;
                    }
                    _ => break,
                }
            }
            let _ = fs::remove_file(self.layout.dir(&c.id).join("console.sock"));
            let _ = fs::remove_file(self.layout.attach_socket(&c.id));
        }
        if let Some(pid) = relay {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            let _ = fs::remove_file(self.layout.attach_socket(&c.id));
        }
        // The pipes are closed now (the container and all it started are gone): the logger
        // ends once it wrote the last record, before the exit is recorded.
        let _ = nix::sys::wait::waitpid(logger, None);
        self.finish(c, &result)?;
        result.map(|(code, _)| code)
    }

    /// Return once the container runs, or with the monitor's error. `monitor` is the forked
    /// monitor's pid (0 when it was spawned and has detached: then it is not ours to wait on).
    fn wait_started(&self, c: &Container, monitor: nix::unistd::Pid) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(msg) = fs::read_to_string(self.layout.error_file(&c.id)) {
                bail!("{msg}");
            }
            if self.layout.exit_code(&c.id).is_some() {
                return Ok(());
            }
            if let Ok(st) = self.runtime.state(&c.id) {
                if st.status != Status::Created {
                    return Ok(());
                }
            }
            // A --rm container that exited at once is already gone, monitor and all.
            let monitor_done = monitor.as_raw() != 0
                && !matches!(
                    nix::sys::wait::waitpid(monitor, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                    Ok(nix::sys::wait::WaitStatus::StillAlive)
                );
            if monitor_done || !self.layout.dir(&c.id).exists() {
                if let Ok(msg) = fs::read_to_string(self.layout.error_file(&c.id)) {
                    bail!("{msg}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("container {}: did not start within 60 s", c.name);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
