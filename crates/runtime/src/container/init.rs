//! The child side of `create`: from a fork of the runtime to the container's process.
//!
//! Stage 1 (the first fork) joins the namespaces given by path, unshares the user namespace
//! and waits for its id maps, then unshares the rest. The pid and time namespaces only apply
//! to children, so stage 1 forks the init (stage 2), reports its pid and exits. The init
//! builds the root filesystem, enters it, drops privileges, reports `Ready`, and blocks on
//! the exec fifo until `start`.

use std::convert::Infallible;
use std::io::Write;
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
use crate::sync::{self, Channel, Msg};

/// Run `f` in a forked child and never return: report its error to the parent, then _exit.
/// When the parent aborted (it reports its own error), exit without a word: printing here too
/// would show the user the same failure twice.
pub(crate) fn child_main(ch: &Channel, f: impl FnOnce() -> Result<Infallible>) -> ! {
    let err = match f() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    if err.downcast_ref::<sync::Aborted>().is_none() {
        let msg = format!("{err:#}");
        if ch.send(&Msg::Error(msg.clone())).is_err() {
            // Straight to fd 2 (eprintln! may be redirected, e.g. by the test harness).
            let _ = writeln!(std::io::stderr(), "yunc: {msg}");
        }
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

/// Stage 1 talks to the parent on `ch`; the init on `init_ch`, its own channel. One shared
/// socket raced: the init could write CreateRuntimeHooks before stage 1 had written Pid.
pub(super) fn stage1(s: &Setup, ch: &Channel, init_ch: Channel) -> Result<Infallible> {
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
    // First, while still root of the host's namespaces: the v1 cgroups (see cgroups::entry).
    s.cgroup.enter_self()?;
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
            ForkResult::Child => {
                // Stage 1's channel must close when stage 1 exits, so that its death is EOF.
                ch.close_in_forked_child();
                child_main(&init_ch, || init(s, &init_ch))
            }
            ForkResult::Parent { child } => {
                drop(init_ch);
                ch.send(&Msg::Pid(child.as_raw()))?;
                // SAFETY: see child_main; stage 1 is done.
                unsafe { libc::_exit(0) }
            }
        }
    }
    ch.send(&Msg::Pid(nix::unistd::getpid().as_raw()))?;
    ch.close_in_forked_child();
    // From here on this process is the init: its errors go on the init's channel.
    child_main(&init_ch, || init(s, &init_ch))
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
    if s.share_root_with_host {
        ch.send_fd(&Msg::RootClone, &rootfs::propagation::clone_root()?)?;
    }
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

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Fork a child that runs `child_main(step)` on a channel whose parent end is already
    /// closed (so any report of its must go to stderr); return what it printed there.
    fn stderr_of_orphaned_child(
        first: Option<Msg>,
        step: fn(&Channel) -> Result<Infallible>,
    ) -> String {
        let (parent, child) = sync::pair().unwrap();
        if let Some(m) = first {
            parent.send(&m).unwrap();
        }
        drop(parent);
        let (rd, wr) = nix::unistd::pipe().unwrap();
        match fork().unwrap() {
            ForkResult::Child => {
                // SAFETY: dup2 onto this forked child's stderr; `wr` is a valid fd.
                unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&wr), 2) };
                child_main(&child, || step(&child))
            }
            ForkResult::Parent { child: pid } => {
                drop(wr);
                let mut out = String::new();
                std::fs::File::from(rd).read_to_string(&mut out).unwrap();
                let status = nix::sys::wait::waitpid(pid, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 1));
                out
            }
        }
    }

    #[test]
    fn a_child_the_parent_aborted_exits_without_repeating_the_error() {
        // The parent reports its own failure (a prestart hook): the init used to print it a
        // second time when its reply found the parent's end closed.
        let out = stderr_of_orphaned_child(Some(Msg::Abort), |ch| {
            ch.recv()?;
            bail!("unreachable")
        });
        assert_eq!(out, "");
    }

    #[test]
    fn a_child_whose_own_step_fails_still_says_why() {
        let out = stderr_of_orphaned_child(None, |_| bail!("yun-own-failure"));
        assert_eq!(out, "yunc: yun-own-failure\n");
    }
}
