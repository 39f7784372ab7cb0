//! How a new process of a container (stage 1 of `create` and of `exec`) enters its cgroup
//! without stalling on the kernel's global lock.
//!
//! Moving *another* process by writing its pid to `cgroup.procs` takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, and that waits out an RCU grace period: 10–30 ms
//! per move on this 2-core host, most of a `kubectl exec`'s time in `yunc exec`. Two ways in
//! skip the lock:
//!
//! - a v1 hierarchy: a thread moving *itself*, by writing "0" to the hierarchy's `tasks` file
//!   (the kernel migrates `current` alone under `cgroup_mutex`; 0.1 ms measured). Stage 1 is
//!   a freshly forked, single-threaded child, so its one thread is the whole process;
//! - the cgroup2 hierarchy (the only one on v2 hosts, the "unified" one on hybrid hosts): a
//!   child born in its cgroup through clone3's `CLONE_INTO_CGROUP`.
//!
//! Where the kernel refuses clone3 (older than 5.7), the parent falls back to fork and writes
//! the child's pid to the cgroup2 `cgroup.procs` as before.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{anyhow, Context, Result};
use nix::unistd::{ForkResult, Pid};

use super::{write_file, Kind, Manager};

/// `CLONE_INTO_CGROUP` from linux/sched.h (since 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of linux/sched.h up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What the child of [`Manager::fork_into`] entered at birth, for [`Manager::finish_entry`].
#[derive(Clone, Copy, Debug)]
pub struct Born {
    in_cgroup2: bool,
}

impl Manager {
    /// Fork a child; where the container has a cgroup2 directory, the child is born in it.
    ///
    /// # Safety
    /// As for fork(2): the caller must be single-threaded, since the child runs arbitrary
    /// code. The child is made by the raw clone3 system call, past glibc's fork wrapper, whose
    /// only work in a single-threaded process is for robust mutexes and the cached thread id,
    /// which the runtime does not use.
    pub unsafe fn fork_into(&self) -> Result<(ForkResult, Born)> {
        if let Some(dir) = self.cgroup2_dir()? {
            let args = CloneArgs {
                flags: CLONE_INTO_CGROUP,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: dir.as_raw_fd() as u64,
                ..Default::default()
            };
            // SAFETY: `args` is a valid clone_args of the size passed; no CLONE_VM, so the
            // child gets a copy of our memory as with fork, and the caller promises we are
            // single-threaded.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            match r {
                0 => return Ok((ForkResult::Child, Born { in_cgroup2: true })),
                pid if pid > 0 => {
                    let child = Pid::from_raw(pid as i32);
                    return Ok((ForkResult::Parent { child }, Born { in_cgroup2: true }));
                }
                // Refused (no clone3, or the cgroup is not a leaf we may be born in): the
                // parent moves the child below instead.
                _ => {}
            }
        }
        // SAFETY: the caller promises we are single-threaded.
        let child = unsafe { nix::unistd::fork() }.context("fork")?;
        Ok((child, Born { in_cgroup2: false }))
    }

    /// In the child of [`Manager::fork_into`], before anything else: move this (single)
    /// thread into the container's cgroup of every v1 hierarchy.
    pub fn enter_self(&self) -> Result<()> {
        for h in &self.state.hierarchies {
            if h.kind == Kind::V1 {
                write_file(&h.dir.join("tasks"), "0")
                    .map_err(|e| anyhow!("enter cgroup {}: {e}", h.dir.display()))?;
            }
        }
        Ok(())
    }

    /// In the parent: move child `pid` into the hierarchies it did not enter by itself.
    pub fn finish_entry(&self, pid: i32, born: Born) -> Result<()> {
        for h in &self.state.hierarchies {
            if h.kind == Kind::Unified && !born.in_cgroup2 {
                write_file(&h.dir.join("cgroup.procs"), &pid.to_string())
                    .map_err(|e| anyhow!("add pid {pid} to cgroup: {e}"))?;
            }
        }
        Ok(())
    }

    /// The container's directory in the cgroup2 hierarchy, opened for CLONE_INTO_CGROUP.
    fn cgroup2_dir(&self) -> Result<Option<OwnedFd>> {
        let Some(h) = self
            .state
            .hierarchies
            .iter()
            .find(|h| h.kind == Kind::Unified)
        else {
            return Ok(None);
        };
        let f = fs::File::open(&h.dir).with_context(|| format!("open {}", h.dir.display()))?;
        Ok(Some(f.into()))
    }
}
