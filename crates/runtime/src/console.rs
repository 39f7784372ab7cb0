//! `process.terminal`: a pseudo-terminal whose master goes to the caller over a Unix socket.
//!
//! The caller (conmon, or `yunc run` itself) listens on `--console-socket`; the container
//! opens a pty in its own devpts, makes the slave its controlling terminal and stdio, and
//! sends the master with SCM_RIGHTS, the payload being the pty's name, as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::Mode;

pub fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path)
        .with_context(|| format!("--console-socket: connect {}", path.display()))
}

/// In the container (after pivot_root): create the pty, make it our terminal, send the master.
pub fn setup(socket: &UnixStream, mount_console: bool, size: Option<(u16, u16)>) -> Result<()> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("open /dev/ptmx (is /dev/pts mounted?)")?;
    nix::pty::grantpt(&master).context("grantpt")?;
    nix::pty::unlockpt(&master).context("unlockpt")?;
    let name = nix::pty::ptsname_r(&master).context("ptsname")?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {name}"))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct we own.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    if mount_console {
        let root = crate::rootfs::path::Root::open(Path::new("/"))?;
        let target = root.create_file(Path::new("/dev/console"))?;
        mount(
            Some(name.as_str()),
            crate::rootfs::path::fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("bind the pty on /dev/console")?;
    }
    send_fd(socket, master.as_raw_fd(), name.as_bytes())?;
    drop(master);
    // SAFETY: TIOCSCTTY takes an int; we are a session leader without a terminal.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        bail!(
            "make the pty our terminal: {}",
            std::io::Error::last_os_error()
        );
    }
    for target in 0..3 {
        // SAFETY: dup2 onto stdio numbers; the source fd is valid.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            bail!("dup2 pty: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn send_fd(socket: &UnixStream, fd: RawFd, payload: &[u8]) -> Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(payload)];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context("send the pty master over the console socket")?;
    Ok(())
}

/// Receive one fd sent with `send_fd`.
pub fn recv_fd(socket: &UnixStream) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receive the pty master")?;
    for c in msg.cmsgs().context("read control message")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us; we own it now.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    bail!("the container sent no pty master")
}
