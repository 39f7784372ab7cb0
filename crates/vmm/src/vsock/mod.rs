//! vsock for VMs, through vhost-user: this host's kernel has no vhost-vsock
//! (CONFIG_VHOST_VSOCK is unset, no /dev/vhost-vsock), so QEMU's `vhost-user-vsock-pci` talks
//! to yun's own device model ([`device`]), which runs in the VM's supervisor on the rust-vmm
//! crates (vhost-user-backend, virtio-queue, virtio-vsock, vm-memory). vhost-user needs the
//! guest's RAM shared with the backend, so a vsock VM's memory is a shared memfd — which KSM
//! cannot merge, hence vsock is opt-in.
//!
//! Files in the VM's directory: `vsock-vhost.sock` (QEMU ↔ device), `vsock.sock` (host
//! processes connect here, Firecracker's hybrid vsock), `vsock.sock_P` (where guest
//! connections to host port P go, if something listens).

mod device;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use device::Device;

/// The guest's CID (the first one guests may use).
pub const GUEST_CID: u64 = 3;
/// The port yun's in-guest agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// The line the agent ends a command's output with: `yun-exit: <status>`.
pub const AGENT_EXIT: &str = "yun-exit: ";

/// How long `exec` waits for the agent of a guest that is still booting.
const AGENT_WAIT: Duration = Duration::from_secs(60);

pub(crate) const VHOST_SOCKET: &str = "vsock-vhost.sock";
pub(crate) const HOST_SOCKET: &str = "vsock.sock";

/// A running vsock device for one VM; stopped (threads joined, sockets removed) on drop.
pub(crate) struct Vsock {
    dir: PathBuf,
    device: Arc<Device>,
    thread: Option<JoinHandle<()>>,
}

/// QEMU arguments for the device and the shared memory it needs.
pub(crate) fn qemu_args(dir: &Path, memory_mib: u32) -> Vec<String> {
    vec![
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={memory_mib}M,share=on"),
        "-machine".into(),
        "memory-backend=mem".into(),
        "-chardev".into(),
        format!("socket,id=vsock0,path={}", dir.join(VHOST_SOCKET).display()),
        "-device".into(),
        "vhost-user-vsock-pci,chardev=vsock0".into(),
    ]
}

impl Vsock {
    /// Listen on the VM directory's sockets; QEMU may connect once this returns.
    pub(crate) fn start(dir: &Path, cid: u64) -> Result<Vsock> {
        remove_sockets(dir);
        let host = dir.join(HOST_SOCKET);
        let listener =
            UnixListener::bind(&host).with_context(|| format!("vsock: bind {}", host.display()))?;
        let device = Arc::new(Device::new(cid, host, listener).context("vsock device")?);
        let mut daemon = VhostUserDaemon::new(
            "yun-vsock".into(),
            device.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(|e| anyhow!("vsock: {e}"))?;
        let epoll = daemon
            .get_epoll_handlers()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("vsock: no worker"))?;
        device
            .attach(epoll)
            .context("vsock: watch the host socket")?;
        let vhost = dir.join(VHOST_SOCKET);
        let mut vhost_listener = vhost::vhost_user::Listener::new(&vhost, true)
            .map_err(|e| anyhow!("vsock: listen on {}: {e}", vhost.display()))?;
        let worker = device.clone();
        let thread = std::thread::Builder::new()
            .name("yun-vsock".into())
            .spawn(move || {
                // Serves one QEMU until it disconnects (the VM ended).
                if let Err(e) = daemon.start(&mut vhost_listener) {
                    tracing::warn!("vsock: {e}");
                } else if let Err(e) = daemon.wait() {
                    tracing::debug!("vsock: {e}");
                }
                worker.stop_worker();
                worker.detach();
            })
            .context("vsock: start its thread")?;
        Ok(Vsock {
            dir: dir.to_path_buf(),
            device,
            thread: Some(thread),
        })
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            if !t.is_finished() {
                // Still waiting for a QEMU that never came (a failed start): connect and
                // hang up, which ends the wait.
                let _ = UnixStream::connect(self.dir.join(VHOST_SOCKET));
            }
            let _ = t.join();
        }
        self.device.detach();
        remove_sockets(&self.dir);
    }
}

fn remove_sockets(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(VHOST_SOCKET));
    let _ = std::fs::remove_file(dir.join(HOST_SOCKET));
}

/// Open a stream to guest port `port` through the VM directory's `vsock.sock`.
pub fn connect(dir: &Path, port: u32, timeout: Duration) -> Result<UnixStream> {
    let path = dir.join(HOST_SOCKET);
    let mut s = UnixStream::connect(&path).with_context(|| format!("{}", path.display()))?;
    s.set_read_timeout(Some(timeout))?;
    writeln!(s, "CONNECT {port}")?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("OK ") {
        bail!("guest port {port}: nothing listens there");
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// Run `script` with `sh -c` in the guest through its agent, copying its output to `out`;
/// returns its exit status.
pub fn exec(dir: &Path, script: &str, out: &mut dyn Write) -> Result<i32> {
    if script.contains('\n') {
        bail!("exec: the command must be one line");
    }
    // A VM that was just started may still be booting: wait for its agent a while.
    let deadline = std::time::Instant::now() + AGENT_WAIT;
    let mut s = loop {
        match connect(dir, AGENT_PORT, Duration::from_secs(10)) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => {
                return Err(e.context(format!(
                    "the guest agent did not answer within {AGENT_WAIT:?}"
                )))
            }
        }
    };
    writeln!(s, "{script}")?;
    // Stream the output, holding back what could be the start of the exit line.
    let mut held: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        held.extend_from_slice(&buf[..n]);
        let keep = AGENT_EXIT.len() + 16;
        if held.len() > keep {
            let flush = held.len() - keep;
            out.write_all(&held[..flush])?;
            out.flush()?;
            held.drain(..flush);
        }
    }
    let text = String::from_utf8_lossy(&held).into_owned();
    let (before, status) = text
        .rsplit_once(AGENT_EXIT)
        .ok_or_else(|| anyhow!("the guest agent ended without a status"))?;
    out.write_all(before.as_bytes())?;
    status
        .trim()
        .parse()
        .map_err(|_| anyhow!("the guest agent sent a bad status {status:?}"))
}
