//! `exec`: run another process inside a live container.
//!
//! The new process joins the init's cgroup and namespaces (user first), forks once more to
//! enter the pid namespace, and goes through the same `process::prepare`/`exec` as the init.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::ForkResult;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::init::{child_main, fork};
use super::{wait, write_pid_file, Runtime};
use crate::cgroups;
use crate::config;
use crate::namespaces::{self, JOIN_ORDER};
use crate::process::{self, seccomp};
use crate::state::{ContainerState, Status};
use crate::sync::{self, Channel, Msg};
use crate::Error;

#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
}

impl Runtime {
    /// Run `process` in container `id`. Detached: returns 0 once it runs; otherwise waits and
    /// returns its exit code, forwarding signals.
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<i32> {
        crate::timing::mark("exec: start");
        let st = ContainerState::load(&self.root, id)?;
        let status = st.status(&self.root);
        // Not in `created`: the init still runs yunc's code there, and a process from the
        // image must never see that (CVE-2019-5736).
        if status != Status::Running {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "exec",
                wanted: "running",
            }
            .into());
        }
        config::validate_process(process, "process")?;
        let terminal = process.terminal().unwrap_or(false);
        let signals = (!opts.detach).then(wait::block_signals);
        let mut proxy_end = None;
        let console = match (&opts.console_socket, terminal) {
            (Some(p), _) => Some(crate::console::connect(p)?),
            (None, true) if opts.detach => bail!("--tty with --detach needs --console-socket"),
            (None, true) => {
                let (ours, theirs) = UnixStream::pair()?;
                proxy_end = Some(ours);
                Some(theirs)
            }
            (None, false) => None,
        };
        let seccomp = match st
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
        {
            Some(s) => Some(seccomp::compile(s)?),
            None => None,
        };
        crate::timing::mark("exec: seccomp compiled");
        let joins = namespaces_of(&st)?;
        let cg = cgroups::Manager::from_state(&st.cgroup);

        super::set_subreaper();
        // One channel per child process, as in create: stage 1 reports the pid on its own,
        // so the process's Ready cannot overtake it.
        let (parent_ch, child_ch) = sync::pair()?;
        let (parent_proc_ch, proc_ch) = sync::pair()?;
        // SAFETY: the exec path is single-threaded (see init::fork).
        let (forked, born) = unsafe { cg.fork_into() }?;
        let stage1 = match forked {
            ForkResult::Child => {
                drop(parent_ch);
                drop(parent_proc_ch);
                let job = ExecJob {
                    process,
                    joins,
                    seccomp: seccomp.as_ref(),
                    console: console.as_ref(),
                    preserve_fds: opts.preserve_fds,
                };
                child_main(&child_ch, || {
                    // First, while still root of the host's namespaces (see cgroups::entry).
                    cg.enter_self()?;
                    job.stage1(&child_ch, proc_ch)
                })
            }
            ForkResult::Parent { child } => child.as_raw(),
        };
        crate::timing::mark("exec: forked");
        drop(child_ch);
        drop(proc_ch);
        drop(console);
        let pid = match drive(&parent_ch, &parent_proc_ch, &cg, (stage1, born)) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(stage1),
                    nix::sys::signal::SIGKILL,
                );
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1), None);
                return Err(e);
            }
        };
        crate::timing::mark("exec: process runs");
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        if opts.detach {
            return Ok(0);
        }
        let proxy = match proxy_end {
            Some(sock) => Some(wait::ConsoleProxy::start(crate::console::recv_fd(&sock)?)?),
            None => None,
        };
        let signals = signals.expect("blocked when not detached");
        let code = wait::forward_until_exit(pid, &signals, proxy.as_ref());
        drop(proxy);
        Ok(code)
    }
}

fn drive(
    ch: &Channel,
    proc_ch: &Channel,
    cg: &cgroups::Manager,
    (stage1, born): (i32, cgroups::Born),
) -> Result<i32> {
    cg.finish_entry(stage1, born)?;
    ch.send(&Msg::Go)?;
    let pid = match ch.recv()? {
        Msg::Pid(p) => p,
        Msg::Error(e) => bail!(e),
        other => bail!("sync: unexpected {other:?}"),
    };
    if pid != stage1 {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1), None);
    }
    let ch = proc_ch;
    ch.expect(Msg::Ready)?;
    // After Ready the process execs; the channel closes on exec (CLOEXEC) or carries the
    // exec error.
    match ch.recv() {
        Ok(Msg::Error(e)) => Err(anyhow!(e)),
        _ => Ok(pid),
    }
}

/// The init's namespaces that differ from ours, as open files (opened by the parent, which
/// can still see /proc/PID), in join order.
fn namespaces_of(st: &ContainerState) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    let mut out = Vec::new();
    for t in JOIN_ORDER {
        let name = namespaces::name(t);
        let theirs = format!("/proc/{}/ns/{name}", st.pid);
        let ours = format!("/proc/self/ns/{name}");
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            continue;
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let f = File::open(&theirs).with_context(|| format!("open {theirs}"))?;
        out.push((t, f.into()));
    }
    Ok(out)
}

struct ExecJob<'a> {
    process: &'a Process,
    joins: Vec<(LinuxNamespaceType, OwnedFd)>,
    seccomp: Option<&'a seccomp::Filter>,
    console: Option<&'a UnixStream>,
    preserve_fds: u32,
}

impl ExecJob<'_> {
    fn stage1(&self, ch: &Channel, proc_ch: Channel) -> Result<Infallible> {
        ch.expect(Msg::Go)?;
        for (t, fd) in &self.joins {
            nix::sched::setns(fd, namespaces::flag(*t))
                .with_context(|| format!("join {} namespace", namespaces::name(*t)))?;
        }
        let joined_pid = self
            .joins
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::Pid);
        if joined_pid {
            match fork()? {
                ForkResult::Child => {
                    ch.close_in_forked_child();
                    child_main(&proc_ch, || self.stage2(&proc_ch))
                }
                ForkResult::Parent { child } => {
                    drop(proc_ch);
                    ch.send(&Msg::Pid(child.as_raw()))?;
                    // SAFETY: _exit ends the forked child without the parent's atexit work.
                    unsafe { libc::_exit(0) }
                }
            }
        }
        ch.send(&Msg::Pid(nix::unistd::getpid().as_raw()))?;
        ch.close_in_forked_child();
        child_main(&proc_ch, || self.stage2(&proc_ch))
    }

    fn stage2(&self, ch: &Channel) -> Result<Infallible> {
        nix::unistd::setsid().context("setsid")?;
        if let Some(adj) = self.process.oom_score_adj() {
            std::fs::write("/proc/self/oom_score_adj", adj.to_string())
                .context("process.oomScoreAdj")?;
        }
        crate::timing::mark("exec stage2: in the namespaces");
        let setgroups_allowed = std::fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim() != "deny")
            .unwrap_or(true);
        if self.process.terminal().unwrap_or(false) {
            let socket = self
                .console
                .ok_or_else(|| anyhow!("--tty needs a console"))?;
            crate::console::setup(socket, false, None).context("process.terminal")?;
        }
        let no_notify =
            |_fd: OwnedFd| -> Result<()> { bail!("SCMP_ACT_NOTIFY is not supported for exec") };
        let prepared = process::prepare(
            self.process,
            &process::Options {
                seccomp: self.seccomp,
                setgroups_allowed,
                preserve_fds: self.preserve_fds,
                on_notify_fd: &no_notify,
            },
        )?;
        crate::timing::mark("exec stage2: prepared");
        ch.send(&Msg::Ready)?;
        process::exec(prepared, &no_notify)
    }
}
