//! Stdin for attach (a pod's `stdin: true`): the container reads a pipe whose write end a
//! relay process holds; the relay listens on the container's `attach.sock` and copies what
//! one attached client at a time sends into the pipe. The pipe stays open between clients
//! (the container sees no end of file), unless `once` (`stdinOnce`): then the first client's
//! end is the container's end of file. The relay ends when the container's side of the pipe
//! is gone, or when the monitor kills it after the container exits.
//!
//! The socket is bound through `/proc/self/fd/DIRFD/attach.sock`: a container directory's
//! full path may exceed a socket address's 108 bytes.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// A short path naming `file` in the directory open as `dir` (valid while `dir` is).
pub fn short_path(dir: &impl AsRawFd, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{file}", dir.as_raw_fd()))
}

/// Bind `socket` and fork the relay: returns the read end for the container's stdin and the
/// relay's pid. The caller must be single-threaded (the container monitor is).
pub fn spawn_stdin_relay(socket: &Path, once: bool) -> Result<(OwnedFd, nix::unistd::Pid)> {
    let dir = socket
        .parent()
        .context("attach socket without a directory")?;
    let name = socket
        .file_name()
        .and_then(|n| n.to_str())
        .context("attach socket name")?;
    let dir_fd = std::fs::File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(short_path(&dir_fd, name))
        .with_context(|| format!("bind {}", socket.display()))?;
    let (r, w) = nix::unistd::pipe().context("pipe for the container's stdin")?;
    // SAFETY: the monitor is single-threaded (see the function docs), so the child may run
    // arbitrary code.
    match unsafe { nix::unistd::fork() }.context("fork the stdin relay")? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            relay(&listener, w, once);
            // SAFETY: leave the forked relay without running the parent's exit work.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok((r, child)),
    }
}

/// Whether the pipe's reader is gone (poll reports an error on the write end).
fn reader_gone(revents: Option<PollFlags>) -> bool {
    revents.is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

fn relay(listener: &UnixListener, w: OwnedFd, once: bool) {
    let mut file = std::fs::File::from(w.try_clone().expect("dup the stdin pipe"));
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(w.as_fd(), PollFlags::empty()),
        ];
        if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if reader_gone(fds[1].revents()) {
            return;
        }
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        if copy_until_end(&mut conn, &mut file, &w) && once {
            return;
        }
    }
}

/// Copy one client's bytes into the pipe; true when the client ended (false: the container's
/// side went away first).
fn copy_until_end(
    conn: &mut std::os::unix::net::UnixStream,
    file: &mut std::fs::File,
    w: &OwnedFd,
) -> bool {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut fds = [
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            PollFd::new(w.as_fd(), PollFlags::empty()),
        ];
        if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if reader_gone(fds[1].revents()) {
            return false;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if file.write_all(&buf[..n]).is_err() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relay_delivers_clients_and_ends_stdin_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("attach.sock");
        let (r, pid) = spawn_stdin_relay(&socket, true).unwrap();
        let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        c.write_all(b"hello\n").unwrap();
        drop(c);
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)));
    }
}
