//! The channel between the runtime (parent) and the process it is turning into a container.
//!
//! A SOCK_SEQPACKET socket pair keeps message boundaries, so each message is one small JSON
//! datagram. The parent sees EOF when the child dies, which turns any crash into an error.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    /// Child: "I unshared the user namespace, write my id maps."
    UserNsReady,
    /// Parent: "go on" (maps written, cgroup joined, hooks run).
    Go,
    /// Intermediate child: the host pid of the process that becomes the container.
    Pid(i32),
    /// Init: "mounts are done; run prestart/createRuntime hooks now."
    CreateRuntimeHooks,
    /// Parent: hooks done; the state JSON for the container's own hooks.
    HookState(serde_json::Value),
    /// Init: "created; waiting for start."
    Ready,
    /// Either side: the step failed.
    Error(String),
}

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
        let buf = serde_json::to_vec(msg)?;
        nix::sys::socket::send(
            self.fd.as_raw_fd(),
            &buf,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .context("sync send")?;
        Ok(())
    }

    /// Receive one message; EOF means the peer exited.
    pub fn recv(&self) -> Result<Msg> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match nix::sys::socket::recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.context("sync recv")?,
            }
        };
        if n == 0 {
            bail!("the container process exited during setup");
        }
        serde_json::from_slice(&buf[..n]).map_err(|e| anyhow!("sync: bad message: {e}"))
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
