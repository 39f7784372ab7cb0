//! One process run in a live container for `exec`: `yunc exec` (the agent is multi-threaded
//! and must not fork the runtime itself) with the container's own process spec (env, user,
//! cwd, capabilities) and the given command, joined to its namespaces and cgroup. With a tty
//! the runtime hands the pty's master over a console socket, so resizes reach the pty
//! itself; without, stdio are pipes. The process's host pid (from `--pid-file`) lets a
//! session that ends early kill the process, not only `yunc`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::io::{AsyncRead, AsyncWrite};

/// What the client asked to run, from the request's query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecRequest {
    /// Parse `command=…&command=…&stdin=true&stdout=true&stderr=true&tty=false` (the
    /// repeated `command` parameters are the argv).
    pub fn from_query(query: &str) -> Result<ExecRequest, String> {
        Self::parse(query, true)
    }

    /// The same for attach, which runs no command.
    pub fn parse(query: &str, command: bool) -> Result<ExecRequest, String> {
        let mut r = ExecRequest::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let flag = matches!(v.as_ref(), "1" | "true" | "True");
            match k.as_ref() {
                "command" => r.command.push(v.into_owned()),
                "stdin" | "input" => r.stdin = flag,
                "stdout" | "output" => r.stdout = flag,
                "stderr" | "error" => r.stderr = flag,
                "tty" => r.tty = flag,
                _ => {}
            }
        }
        if command && r.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A tty merges stderr into stdout, as the kubelet does.
        if r.tty {
            r.stderr = false;
        }
        Ok(r)
    }
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A running exec: its stdio for the session to pump, a resize handle, and the processes.
pub struct Session {
    child: tokio::process::Child,
    dir: SessionDir,
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    pty: Option<OwnedFd>,
    exited: bool,
}

/// A directory of its own for the console socket and pid file (socket paths are short, so
/// it lives in the temp dir, not the data dir); removed on drop.
struct SessionDir(PathBuf);

impl Drop for SessionDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn session_dir() -> Result<SessionDir> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("yun-exec-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // 0700: the console socket hands over a pty master; nobody but root may connect to it.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(SessionDir(dir))
}

/// Start `req.command` in container `id` of the runtime at `runtime_root`.
pub async fn start(
    yun_exe: &Path,
    runtime_root: &Path,
    id: &str,
    req: &ExecRequest,
) -> Result<Session> {
    let dir = session_dir()?;
    let socket = dir.0.join("console.sock");
    // From the agent's one sealed copy of the binary: yunc does not copy itself per exec.
    let mut cmd = tokio::process::Command::new(yun_runtime::cloned_exe::shared_path(yun_exe));
    cmd.arg0("yunc")
        .arg("--root")
        .arg(runtime_root)
        .arg("exec")
        .arg("--pid-file")
        .arg(dir.0.join("pid"));
    let listener = if req.tty {
        cmd.arg("--tty").arg("--console-socket").arg(&socket);
        Some(tokio::net::UnixListener::bind(&socket).context("console socket")?)
    } else {
        None
    };
    cmd.arg(id).arg("--").args(&req.command).kill_on_drop(true);
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    if req.tty {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
    } else {
        cmd.stdin(piped(req.stdin)).stdout(piped(req.stdout));
    }
    // yunc's own errors (a container that stopped meanwhile) go where the process's would.
    cmd.stderr(piped(req.stderr || req.tty));
    let mut child = cmd.spawn().context("starting yunc exec")?;
    let mut s = Session {
        stdin: child.stdin.take().map(|w| Box::new(w) as Writer),
        stdout: child.stdout.take().map(|r| Box::new(r) as Reader),
        stderr: child.stderr.take().map(|r| Box::new(r) as Reader),
        child,
        dir,
        pty: None,
        exited: false,
    };
    if let Some(listener) = listener {
        // The runtime connects once the process has its pty; yunc failing first ends it.
        let accepted = tokio::select! {
            a = tokio::time::timeout(Duration::from_secs(30), listener.accept()) => a,
            status = s.child.wait() => {
                s.exited = true;
                let mut msg = String::new();
                if let Some(mut e) = s.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = (&mut e).take(4096).read_to_string(&mut msg).await;
                }
                return Err(anyhow!("exec failed ({}): {}", status?, msg.trim()));
            }
        };
        let (conn, _) = accepted
            .map_err(|_| anyhow!("the runtime did not hand over the pty in 30 s"))?
            .context("console socket")?;
        let conn = conn.into_std()?;
        conn.set_nonblocking(false)?;
        let master =
            tokio::task::spawn_blocking(move || yun_runtime::console::recv_fd(&conn)).await??;
        let pty = Pty::new(master.try_clone()?)?;
        s.stdout = Some(Box::new(pty.clone()));
        if req.stdin {
            s.stdin = Some(Box::new(pty));
        }
        s.pty = Some(master);
    }
    Ok(s)
}

impl Session {
    /// Set the pty's size (no-op without a tty): the process gets SIGWINCH.
    pub fn resize(&self, width: u16, height: u16) {
        if let Some(pty) = &self.pty {
            set_window_size(pty, width, height);
        }
    }

    /// Wait for the exec to end; its exit code (128+signal when killed, as a shell says).
    pub async fn wait(&mut self) -> i32 {
        let status = self.child.wait().await;
        self.exited = true;
        match status {
            Ok(s) => s.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + s.signal().unwrap_or(0)
            }),
            Err(_) => -1,
        }
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.0.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
    }

    /// End the process in the container (SIGKILL by its host pid) and yunc with it. yunc
    /// writes the pid file just after the process starts: a session ended in between waits
    /// for it (killing yunc alone would leave the process running).
    pub async fn kill(&mut self) {
        for _ in 0..100 {
            if self.pid().is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.start_kill();
    }
}

/// The pty master, non-blocking and driven by the reactor: a blocking read would hold a
/// pooled thread (and the runtime's shutdown) until the process side closes.
#[derive(Clone)]
struct Pty(std::sync::Arc<tokio::io::unix::AsyncFd<OwnedFd>>);

impl Pty {
    fn new(fd: OwnedFd) -> Result<Pty> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, stays open and is the same file for
        // its whole life (nothing else owns or closes it).
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Pty(std::sync::Arc::new(fd)))
    }
}

impl AsyncRead for Pty {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_read_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|fd| {
                // SAFETY: reads into the unfilled part of the buffer, whose length is passed.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // EIO: the process side of the pty is closed, the master's end of file.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Pty {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_write_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            let written = guard.try_io(|fd| {
                // SAFETY: writes from a slice whose length is passed.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match written {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.exited && !matches!(self.child.try_wait(), Ok(Some(_))) {
            self.kill_now();
        }
    }
}

/// Set the window size of the terminal whose master is `pty`: its foreground process gets
/// SIGWINCH.
pub fn set_window_size(pty: &impl AsRawFd, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call; the
    // fd is a pty master the caller holds open.
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc != 0 {
        tracing::debug!("resize: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_the_argv_and_the_streams() {
        let r = ExecRequest::from_query(
            "command=sh&command=-c&command=exit+3&stdin=true&stdout=true&stderr=true&tty=false",
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "exit 3"]);
        assert!(r.stdin && r.stdout && r.stderr && !r.tty);
        let tty = ExecRequest::from_query("command=sh&stdin=true&stdout=true&stderr=true&tty=true")
            .unwrap();
        assert!(tty.tty && !tty.stderr);
        assert!(ExecRequest::from_query("stdout=true")
            .unwrap_err()
            .contains("at least 1 command"));
        assert!(ExecRequest::from_query("command=ls")
            .unwrap_err()
            .contains("stdin, stdout, stderr"));
    }
}
