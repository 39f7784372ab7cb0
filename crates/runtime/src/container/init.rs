//! The child side of `create`: from a fork of the runtime to the container's process.
//!
//! Stage 1 (the first fork) joins the namespaces given by path, unshares the user namespace
//! and waits for its id maps, then unshares the rest. The pid and time namespaces only apply
//! to children, so stage 1 forks the init (stage 2), reports its pid and exits. The init
//! builds the root filesystem, enters it, drops privileges, reports `Ready`, and blocks on
//! the exec fifo until `start`.

use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;

use super::Setup;
use crate::hooks::{self, Kind};
use crate::namespaces;
use crate::process;
use crate::rootfs;
use crate::state::EXEC_FIFO;
use crate::sync::{Channel, Msg};

/// Run `f` in a forked child and never return: report its error to the parent, then _exit.
pub(crate) fn child_main(ch: &Channel, f: impl FnOnce() -> Result<Infallible>) -> ! {
    let err = match f() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let msg = format!("{err:#}");
    if ch.send(&Msg::Error(msg.clone())).is_err() {
        eprintln!("yunc: {msg}");
    }
    // SAFETY: _exit ends the forked child without running the parent's atexit handlers
    // or flushing its copied stdio buffers.
    unsafe { libc::_exit(1) }
}

pub(crate) fn fork() -> Result<ForkResult> {
    // SAFETY: the runtime's create/exec path is single-threaded, so the child may run
    // arbitrary code after fork.
    unsafe { nix::unistd::fork() }.context("fork")
}

pub(super) fn stage1(s: &Setup, ch: &Channel) -> Result<Infallible> {
    if let Some(stdio) = s.stdio {
        for (target, fd) in stdio.iter().enumerate() {
            // SAFETY: dup2 onto the stdio numbers of this (forked) process; `fd` is valid.
            if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(fd), target as i32) } < 0 {
                bail!("set up stdio: {}", std::io::Error::last_os_error());
            }
        }
    }
    // Until execve, nobody else may ptrace us or open /proc/PID/exe (execve resets this).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    crate::timing::mark("stage1: forked");
    namespaces::join_all(&s.plan.join)?;
    if s.plan.new_user {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER).context("create user namespace")?;
        ch.send(&Msg::UserNsReady)?;
    }
    ch.expect(Msg::Go)?;
    if s.plan.new_user {
        // Become root of the new namespace (it may not map 0; then we keep the ids we have,
        // with full capabilities in the namespace all the same).
        let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    nix::sched::unshare(s.plan.new).context("create namespaces")?;
    if s.plan.creates(LinuxNamespaceType::Time) {
        namespaces::write_time_offsets(&s.bundle.spec)?;
    }
    crate::timing::mark("stage1: unshared");
    if s.plan.needs_fork() {
        match fork()? {
            ForkResult::Child => child_main(ch, || init(s, ch)),
            ForkResult::Parent { child } => {
                ch.send(&Msg::Pid(child.as_raw()))?;
                // SAFETY: see child_main; stage 1 is done.
                unsafe { libc::_exit(0) }
            }
        }
    }
    ch.send(&Msg::Pid(nix::unistd::getpid().as_raw()))?;
    init(s, ch)
}

fn init(s: &Setup, ch: &Channel) -> Result<Infallible> {
    let spec = &s.bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| anyhow!("process: missing"))?;
    nix::unistd::setsid().context("setsid")?;
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .context("process.oomScoreAdj")?;
    }
    let setgroups_allowed = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    if s.plan.creates(LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(h).context("hostname")?;
        }
        if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            // SAFETY: setdomainname reads `len` bytes from the string we pass.
            if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
                bail!("domainname: {}", std::io::Error::last_os_error());
            }
        }
    }

    crate::timing::mark("init: forked");
    if s.plan.creates(LinuxNamespaceType::Network) {
        crate::namespaces::loopback_up().context("bring up lo")?;
    }
    rootfs::prepare(&rootfs::Plan {
        spec,
        rootfs: &s.bundle.rootfs,
        bundle: &s.bundle.dir,
        in_userns: s.plan.new_user,
        cgroup_sources: s.cgroup.mount_sources(),
    })?;

    crate::timing::mark("init: mounted");
    ch.send(&Msg::CreateRuntimeHooks)?;
    let mut state = match ch.recv()? {
        Msg::HookState(v) => v,
        Msg::Error(e) => bail!(e),
        other => bail!("sync: unexpected {other:?}"),
    };
    hooks::run(spec, Kind::CreateContainer, &state)?;

    rootfs::enter(&s.bundle.rootfs, s.no_pivot)?;
    if process.terminal().unwrap_or(false) {
        let socket = s
            .console
            .as_ref()
            .ok_or_else(|| anyhow!("process.terminal is true but no --console-socket was given"))?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        crate::console::setup(socket, true, size).context("process.terminal")?;
    }
    crate::timing::mark("init: pivoted");
    rootfs::finish(spec)?;
    crate::timing::mark("init: finished rootfs");

    let created_state = state.clone();
    let notify = |fd: OwnedFd| super::send_notify_fd(s, fd, &created_state);
    let prepared = process::prepare(
        process,
        &process::Options {
            seccomp: s.seccomp.as_ref(),
            setgroups_allowed,
            preserve_fds: s.preserve_fds,
            on_notify_fd: &notify,
        },
    )?;
    crate::timing::mark("init: prepared process");
    ch.send(&Msg::Ready)?;

    // Block until `start` opens the fifo for reading. The fd is opened relative to the
    // state directory's descriptor (taken before pivot_root) and closed at exec.
    let fifo = nix::fcntl::openat(
        s.state_dir.as_fd(),
        EXEC_FIFO,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open exec fifo")?;
    state["status"] = "created".into();
    hooks::run(spec, Kind::StartContainer, &state)?;
    // The byte says "hooks done"; the fd (close-on-exec) closing says "exec'd": `start` waits
    // for both before its poststart hooks.
    nix::unistd::write(&fifo, b"0").context("write exec fifo")?;
    let notify = |fd: OwnedFd| super::send_notify_fd(s, fd, &state);
    process::exec(prepared, &notify)
}
