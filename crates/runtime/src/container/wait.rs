//! Foreground `run` and `exec`: wait for the container's process, forward signals to it,
//! and (with a terminal and no console socket) proxy the pty to our own stdio.

use std::os::fd::{AsRawFd, OwnedFd};
use std::thread::JoinHandle;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals blocked so that `sigwait` receives them; the old mask comes back on drop.
pub struct BlockedSignals {
    set: SigSet,
    old: SigSet,
}

/// Block every signal we forward plus SIGCHLD. Done before fork so that no signal sent
/// between fork and the wait loop is lost (children reset their mask before exec).
pub fn block_signals() -> BlockedSignals {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
    ] {
        set.remove(s);
    }
    let mut old = SigSet::empty();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old));
    BlockedSignals { set, old }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Forward signals to `pid` until it exits; returns its exit code (128+N when killed by N).
/// Other children that re-parent to us (we are a subreaper) are reaped on the way.
pub fn forward_until_exit(pid: i32, signals: &BlockedSignals, proxy: Option<&ConsoleProxy>) -> i32 {
    let target = Pid::from_raw(pid);
    loop {
        // Reap first: the child may have exited before we started waiting.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == target => return code,
                Ok(WaitStatus::Signaled(p, sig, _)) if p == target => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let Ok(sig) = signals.set.wait() else {
            continue;
        };
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGWINCH if proxy.is_some() => {
                if let Some(p) = proxy {
                    p.copy_window_size();
                }
            }
            // Terminal job-control signals stop nobody in the container; ignore them.
            Signal::SIGTTIN | Signal::SIGTTOU | Signal::SIGURG | Signal::SIGPIPE => {}
            other => {
                let _ = nix::sys::signal::kill(target, other);
            }
        }
    }
}

/// Copies between our stdio and the container's pty master; our terminal goes raw while it
/// runs and is restored on drop.
pub struct ConsoleProxy {
    master: std::sync::Arc<OwnedFd>,
    saved: Option<nix::sys::termios::Termios>,
    /// master -> stdout; joined on drop so no output is lost. (The stdin copier blocks in
    /// read(0) and is left to die with the process.)
    output: Option<JoinHandle<()>>,
}

impl ConsoleProxy {
    pub fn start(master: OwnedFd) -> anyhow::Result<ConsoleProxy> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        let master = std::sync::Arc::new(master);
        let proxy = ConsoleProxy {
            master: master.clone(),
            saved,
            output: Some(spawn_copy(1, master.clone(), false)),
        };
        spawn_copy(0, master, true);
        proxy.copy_window_size();
        Ok(proxy)
    }

    pub fn copy_window_size(&self) {
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ read or write a winsize struct we own.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }
}

impl Drop for ConsoleProxy {
    fn drop(&mut self) {
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Copy stdin -> master (`to_master`) or master -> stdout, until EOF or error.
fn spawn_copy(fd: i32, master: std::sync::Arc<OwnedFd>, to_master: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let (from, to) = if to_master {
            (fd, master.as_raw_fd())
        } else {
            (master.as_raw_fd(), fd)
        };
        loop {
            // SAFETY: reading into and writing from a buffer we own, on fds that stay open
            // for the life of this thread (the Arc keeps the master open).
            let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return;
            }
            let mut off = 0;
            while off < n as usize {
                // SAFETY: as above.
                let w = unsafe { libc::write(to, buf[off..].as_ptr().cast(), n as usize - off) };
                if w <= 0 {
                    return;
                }
                off += w as usize;
            }
        }
    })
}
