//! The channels between the runtime (parent) and the processes it turns into a container.
//!
//! A SOCK_SEQPACKET socket pair keeps message boundaries; a message is JSON, split into
//! datagrams of at most [`CHUNK`] bytes (a datagram must fit the socket's send buffer, ~200 KiB,
//! or send fails with EMSGSIZE), each led by one byte saying whether more follow. The parent
//! sees EOF when every child holding the other end has died, which turns any crash into an
//! error.
//!
//! Each child process has a channel of its own (see `container::init`): two processes writing
//! to one socket could interleave their messages in any order.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

/// Payload bytes per datagram.
const CHUNK: usize = 32 * 1024;
const MORE: u8 = 1;
const LAST: u8 = 0;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    /// Child: "I unshared the user namespace, write my id maps."
    UserNsReady,
    /// Parent: "go on" (maps written, cgroup joined, hooks run).
    Go,
    /// Stage 1: the host pid of the process that becomes the container.
    Pid(i32),
    /// Init: "mounts and devices are done; apply the device rules and run the
    /// prestart/createRuntime hooks now."
    CreateRuntimeHooks,
    /// Parent: hooks done; the state JSON for the container's own hooks.
    HookState(serde_json::Value),
    /// Init: "here is a clone of my root (an fd alongside), to mount on the host"
    /// (`linux.rootfsPropagation` shared, see `rootfs::propagation`).
    RootClone,
    /// Init: "created; waiting for start."
    Ready,
    /// Child: the step failed.
    Error(String),
    /// Parent: "I failed and report it myself: exit without a word."
    Abort,
}

/// The child got [`Msg::Abort`]: the parent reports the failure, the child stays silent.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("aborted by the runtime")
    }
}

impl std::error::Error for Aborted {}

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> Result<()> {
        let body = serde_json::to_vec(msg)?;
        let mut chunks = body.chunks(CHUNK).peekable();
        let mut datagram = Vec::with_capacity(CHUNK.min(body.len()) + 1);
        while let Some(chunk) = chunks.next() {
            datagram.clear();
            datagram.push(if chunks.peek().is_some() { MORE } else { LAST });
            datagram.extend_from_slice(chunk);
            loop {
                match nix::sys::socket::send(self.fd.as_raw_fd(), &datagram, MsgFlags::MSG_NOSIGNAL)
                {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => {
                        other.context("sync send")?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Close this end in a forked process that owns a copy of it but never returns to the
    /// frame that owns the `Channel` (it leaves through `_exit`), so that the fd is neither
    /// used nor closed again.
    pub fn close_in_forked_child(&self) {
        // SAFETY: see above; closing an fd we hold has no other effect on memory.
        unsafe { libc::close(self.fd.as_raw_fd()) };
    }

    /// Send a small message with `fd` attached (SCM_RIGHTS).
    pub fn send_fd(&self, msg: &Msg, fd: &OwnedFd) -> Result<()> {
        let mut datagram = vec![LAST];
        serde_json::to_writer(&mut datagram, msg)?;
        if datagram.len() > CHUNK {
            bail!("sync: a message with an fd must fit one datagram");
        }
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(&datagram)];
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .context("sync send")?;
        Ok(())
    }

    /// Receive one message; EOF means the peer exited. `Abort` becomes an [`Aborted`] error.
    pub fn recv(&self) -> Result<Msg> {
        Ok(self.recv_with_fds()?.0)
    }

    /// Receive one message and the fds sent along with it.
    pub fn recv_with_fds(&self) -> Result<(Msg, Vec<OwnedFd>)> {
        let mut body = Vec::new();
        let mut fds = Vec::new();
        let mut buf = vec![0u8; CHUNK + 1];
        loop {
            let n = loop {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let mut space = nix::cmsg_space!([RawFd; 1]);
                match recvmsg::<()>(
                    self.fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("sync recv"),
                    Ok(msg) => {
                        for c in msg.cmsgs().context("sync recv")? {
                            if let ControlMessageOwned::ScmRights(got) = c {
                                // SAFETY: the kernel just installed these fds for us.
                                fds.extend(
                                    got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                                );
                            }
                        }
                        break msg.bytes;
                    }
                }
            };
            if n == 0 {
                bail!("the container process exited during setup");
            }
            body.extend_from_slice(&buf[1..n]);
            if buf[0] == LAST {
                break;
            }
        }
        match serde_json::from_slice(&body).map_err(|e| anyhow!("sync: bad message: {e}"))? {
            Msg::Abort => Err(Aborted.into()),
            m => Ok((m, fds)),
        }
    }

    /// Receive and insist on `want`; a child's `Error` becomes our error.
    pub fn expect(&self, want: Msg) -> Result<()> {
        match self.recv()? {
            m if m == want => Ok(()),
            Msg::Error(e) => Err(anyhow!(e)),
            other => bail!("sync: expected {want:?}, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_larger_than_a_socket_buffer_arrive_whole() {
        let (a, b) = pair().unwrap();
        // 4 MiB: far above the ~200 KiB a single datagram may carry.
        let big = "y".repeat(4 << 20);
        let sent = Msg::Error(big.clone());
        let reader = std::thread::spawn(move || b.recv().unwrap());
        a.send(&sent).unwrap();
        a.send(&Msg::Ready).unwrap();
        assert_eq!(reader.join().unwrap(), Msg::Error(big));
    }

    #[test]
    fn an_fd_travels_with_its_message() {
        let (a, b) = pair().unwrap();
        let (rd, wr) = nix::unistd::pipe().unwrap();
        a.send_fd(&Msg::RootClone, &wr).unwrap();
        drop(wr);
        let (msg, mut fds) = b.recv_with_fds().unwrap();
        assert_eq!(msg, Msg::RootClone);
        nix::unistd::write(fds.pop().unwrap(), b"yun").unwrap();
        let mut got = [0u8; 3];
        nix::unistd::read(&rd, &mut got).unwrap();
        assert_eq!(&got, b"yun");
    }

    #[test]
    fn abort_is_an_error_the_child_can_tell_apart() {
        let (a, b) = pair().unwrap();
        a.send(&Msg::Abort).unwrap();
        assert!(b.recv().unwrap_err().downcast_ref::<Aborted>().is_some());
        drop(a);
        let e = b.recv().unwrap_err().to_string();
        assert!(e.contains("exited during setup"), "{e}");
    }
}
