//! A detached container with a terminal (`tty: true`, `yun run -dt`): the runtime creates the
//! pty inside the container and hands its master over a console socket to a relay process
//! the monitor forks. The relay copies everything the container writes to its terminal into
//! the log pipe (as stdout, which is all a terminal has), and gives each client of the
//! container's `attach.sock` a duplicate of the master: the attached client writes its input
//! into it and sets the window size on it, while the relay keeps the only reader, so the log
//! misses nothing whoever is attached. The relay ends when the container's side of the
//! terminal is gone (a read gives EIO), after the last output is copied.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::attach::short_path;

/// The relay, forked: `console` is the path to give the runtime as its console socket (valid
/// in this process while `dir` is open), `pid` the relay's.
pub struct TtyRelay {
    /// Held open: `console` names the socket through it.
    _dir: std::fs::File,
    pub console: PathBuf,
    pub pid: nix::unistd::Pid,
}

/// Bind the console socket and the attach socket in the container's directory and fork the
/// relay, which writes the terminal's output into `output`. The caller must be
/// single-threaded (the container monitor is).
pub fn spawn_relay(container_dir: &Path, attach: &str, output: OwnedFd) -> Result<TtyRelay> {
    let dir = std::fs::File::open(container_dir)
        .with_context(|| format!("open {}", container_dir.display()))?;
    let console = short_path(&dir, "console.sock");
    let _ = std::fs::remove_file(container_dir.join("console.sock"));
    let console_listener = UnixListener::bind(&console).context("bind the console socket")?;
    let _ = std::fs::remove_file(container_dir.join(attach));
    let attach_listener =
        UnixListener::bind(short_path(&dir, attach)).context("bind the attach socket")?;
    // SAFETY: the monitor is single-threaded (see the function docs), so the child may run
    // arbitrary code.
    match unsafe { nix::unistd::fork() }.context("fork the terminal relay")? {
        nix::unistd::ForkResult::Child => {
            let code = match relay(&console_listener, &attach_listener, output) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: leave the forked relay without running the parent's exit work.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(output);
            Ok(TtyRelay {
                _dir: dir,
                console,
                pid: child,
            })
        }
    }
}

fn relay(console: &UnixListener, attach: &UnixListener, output: OwnedFd) -> Result<()> {
    let (conn, _) = console.accept().context("accept the runtime's console")?;
    let master = yun_runtime::console::recv_fd(&conn)?;
    drop(conn);
    let mut log = std::fs::File::from(output);
    let mut term = std::fs::File::from(master.try_clone().context("dup the pty master")?);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut fds = [
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(attach.as_fd(), PollFlags::POLLIN),
        ];
        if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        if ready(0) {
            match term.read(&mut buf) {
                // EIO: every process of the container closed its terminal.
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => {
                    if log.write_all(&buf[..n]).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if ready(1) {
            if let Ok((client, _)) = attach.accept() {
                let _ = yun_runtime::console::send_fd(&client, master.as_raw_fd(), b"pty");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay copies the terminal's output into the log pipe, hands attach clients the
    /// master (input written to it reaches the terminal's reader), and ends with the terminal.
    #[test]
    fn relays_output_and_hands_out_the_master() {
        let dir = tempfile::tempdir().unwrap();
        let (log_r, log_w) = nix::unistd::pipe().unwrap();
        let relay = spawn_relay(dir.path(), "attach.sock", log_w).unwrap();
        // Play the runtime: a pty, its master sent over the console socket.
        let pty = nix::pty::openpty(None, None).unwrap();
        let console = std::os::unix::net::UnixStream::connect(&relay.console).unwrap();
        yun_runtime::console::send_fd(&console, pty.master.as_raw_fd(), b"pty").unwrap();
        drop(console);
        drop(pty.master);
        let mut slave = std::fs::File::from(pty.slave);
        // An attach client gets the master and types into the terminal.
        let client =
            std::os::unix::net::UnixStream::connect(dir.path().join("attach.sock")).unwrap();
        let master = yun_runtime::console::recv_fd(&client).unwrap();
        std::fs::File::from(master).write_all(b"typed\n").unwrap();
        let mut line = [0u8; 6];
        slave.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"typed\n");
        slave.write_all(b"shown\n").unwrap();
        drop(slave);
        let mut out = String::new();
        std::fs::File::from(log_r).read_to_string(&mut out).unwrap();
        // The terminal echoes what was typed, and maps \n to \r\n on output.
        assert_eq!(out, "typed\r\nshown\r\n");
        let status = nix::sys::wait::waitpid(relay.pid, None).unwrap();
        assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)));
    }
}
