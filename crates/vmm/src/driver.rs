//! The hypervisor driver interface: what a VM manager asks of any driver (QEMU today; yun's own
//! rust-vmm monitor later), and the types it speaks in.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::net::{NetRequest, VmNet};

/// A VM's definition: written once by [`Driver::define`], never edited in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Kernel image; default: Debian's cloud kernel (uncompressed vmlinux).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Initramfs; default: yun's.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Appended to the kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// The guest command (see [`crate::guest_script`]); empty: an interactive `sh` on the console.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// virtio-blk disks, in order (`/dev/vda`, `/dev/vdb`, …).
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// The yun image the root disk (`/dev/vda`) was built from, if any.
    #[serde(default)]
    pub image: Option<String>,
    /// QEMU `-accel` value; default from [`crate::choose_accel`].
    #[serde(default)]
    pub accel: Option<String>,
    /// Identifies this VM's exit marker on the console.
    #[serde(default)]
    pub nonce: String,
    /// Ask `define` to put the VM on this bridge network (the answer is `network`).
    #[serde(skip)]
    pub join: Option<NetRequest>,
    /// The VM's address and tap on a bridge network, reserved by `define`, released by `rm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<VmNet>,
    /// A vsock device (guest CID 3, host sockets in the VM's directory) and `exec` through
    /// yun's in-guest agent. Its RAM is then a shared memfd, which KSM cannot merge.
    #[serde(default)]
    pub vsock: bool,
}

impl VmConfig {
    pub fn new(name: &str) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            cpus: 1,
            memory_mib: 256,
            kernel: None,
            initrd: None,
            cmdline: String::new(),
            cmd: Vec::new(),
            disks: Vec::new(),
            image: None,
            accel: None,
            nonce: String::new(),
            join: None,
            network: None,
            vsock: false,
        }
    }
}

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Defined, never started.
    Defined,
    /// The supervisor is bringing QEMU up.
    Starting,
    Running,
    Paused,
    /// Ended in an orderly way (guest poweroff, `yun vm stop`).
    Stopped,
    /// Ended otherwise (guest panic, QEMU killed or failing); the reason says how.
    Failed,
}

impl State {
    pub fn is_live(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Paused)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Defined => "defined",
            State::Starting => "starting",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// A VM's definition plus its current state, as `yun vm list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmStatus {
    pub config: VmConfig,
    pub state: State,
    /// Why the VM ended (for stopped and failed VMs).
    pub reason: Option<String>,
    /// Unix seconds when the guest started running (live VMs).
    pub started_at: Option<u64>,
    pub supervisor_pid: Option<u32>,
    pub qemu_pid: Option<u32>,
}

/// Resource use of a live VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmStats {
    /// Resident memory of the hypervisor process (QEMU), KiB.
    pub hypervisor_rss_kib: u64,
    /// Resident memory of yun's supervisor process, KiB.
    pub supervisor_rss_kib: u64,
    /// CPU time the hypervisor process used, milliseconds (user + system).
    pub cpu_ms: u64,
    /// Memory the guest has now, MiB: its size less what the balloon holds.
    pub balloon_mib: Option<u64>,
    /// How much of the guest's RAM is resident on the host, KiB (pages it never touched are
    /// not); KSM-shared pages count in every VM that shares them.
    pub guest_ram_rss_kib: Option<u64>,
    /// How much of that resident guest RAM is KSM-merged, KiB: pages the host holds once for all
    /// the VMs (and processes) with the same content. 0 when KSM is off or has not reached them.
    pub guest_ram_ksm_kib: Option<u64>,
}

/// How to reach a VM's serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// Everything the guest wrote to its console, across restarts.
    pub log: PathBuf,
    /// A Unix socket to attach to while the VM runs.
    pub socket: Option<PathBuf>,
}

/// The lifecycle operations of a hypervisor driver. Names are the VM names of [`VmConfig`].
pub trait Driver {
    /// Record a new VM (fails when the name is in use or the definition is invalid).
    fn define(&self, config: &VmConfig) -> Result<()>;
    /// Forget a VM and its files; a live VM only with `force` (it is killed first).
    fn undefine(&self, name: &str, force: bool) -> Result<()>;
    /// Boot a defined or ended VM; returns once the guest runs.
    fn start(&self, name: &str) -> Result<()>;
    /// End a live VM: ask the guest to power off, then quit; `force` quits at once.
    fn stop(&self, name: &str, force: bool) -> Result<()>;
    fn pause(&self, name: &str) -> Result<()>;
    fn resume(&self, name: &str) -> Result<()>;
    /// Save a live VM's memory and device state under `tag`; the VM keeps its run state.
    fn snapshot(&self, name: &str, tag: &str) -> Result<()>;
    /// Start an ended VM from the state saved under `tag`; returns once the guest runs.
    fn restore(&self, name: &str, tag: &str) -> Result<()>;
    fn console(&self, name: &str) -> Result<Console>;
    fn status(&self, name: &str) -> Result<VmStatus>;
    fn list(&self) -> Result<Vec<VmStatus>>;
    fn stats(&self, name: &str) -> Result<VmStats>;
    /// Inflate or deflate a live VM's balloon until the guest has `target_mib` MiB; returns
    /// once the guest got there.
    fn balloon(&self, name: &str, target_mib: u64) -> Result<()>;
    /// Run `script` with `sh -c` in a live VM (through its agent), copying its output to
    /// `out`; returns the command's exit status.
    fn exec(&self, name: &str, script: &str, out: &mut dyn std::io::Write) -> Result<i32>;
}
