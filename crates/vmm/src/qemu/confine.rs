//! What QEMU may do: every QEMU yun starts runs under QEMU's seccomp sandbox, without any
//! capability, and is handed the few privileged things it needs (taps, the saved state of a
//! restore, a run's monitor) as open fds instead of opening them itself. See
//! docs/security.md (VMs).

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{anyhow, Result};

/// QEMU's seccomp filter (`-sandbox`): no obsolete syscalls, no set*uid/set*gid/capset, no
/// fork/exec (so no `exec:` migration and no helper scripts), no scheduler/affinity/NUMA
/// changes. yun's features need none of these: taps and restore state arrive as fds.
pub(crate) const SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// A throwaway run's QMP monitor (one end of a socketpair).
pub(crate) const MONITOR_FD: RawFd = 3;
/// A restore's saved state (`-incoming fd:4`).
pub(crate) const INCOMING_FD: RawFd = 4;
/// The VM's taps, in order: `-netdev tap,fd=5`, 6, …
pub(crate) const TAP_FD_BASE: RawFd = 5;

/// Prepare `cmd` (a QEMU): it gets each `(fd, number)` of `fds` as that fd number (and no
/// other fd of ours: the rest are close-on-exec), no capabilities at all (the bounding set is
/// emptied, so exec as uid 0 grants none), and SIGKILL when its parent (the foreground
/// `yun vm run` or a VM's supervisor) dies first, so a crashed caller leaves no VM running.
pub(crate) fn confine(cmd: &mut Command, fds: Vec<(RawFd, RawFd)>) {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls (prctl, fcntl, dup2, capset) on fds and values prepared before the fork; it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Move every source out of the target range first, so no dup2 overwrites a source
            // still to be moved; the copies are close-on-exec.
            let mut moved = [0 as RawFd; 16];
            for (i, (src, _)) in fds.iter().enumerate().take(moved.len()) {
                moved[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in fds.iter().enumerate().take(moved.len()) {
                // dup2 clears close-on-exec on the target: QEMU inherits it.
                if libc::dup2(moved[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            drop_capabilities()
        });
    }
}

/// Empty the bounding, ambient, inheritable, permitted and effective capability sets.
///
/// # Safety
/// Only between fork and exec (it changes this process's capabilities for good).
unsafe fn drop_capabilities() -> std::io::Result<()> {
    // Capability numbers past the kernel's last one fail with EINVAL: nothing to drop.
    for cap in 0..64 {
        libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
    }
    libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
    );
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    if libc::syscall(libc::SYS_capset, &header, none.as_ptr()) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Open tap `name` (it must exist) the way QEMU would, for handing over as `-netdev tap,fd=`:
/// QEMU itself, without CAP_NET_ADMIN, could not attach to it.
pub(crate) fn open_tap(name: &str) -> Result<OwnedFd> {
    if !std::path::Path::new("/sys/class/net").join(name).exists() {
        return Err(anyhow!("tap {name}: no such interface"));
    }
    yun_net::tap::open(name).map_err(|e| anyhow!("tap {name}: cannot attach: {e}"))
}
