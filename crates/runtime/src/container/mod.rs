//! The container lifecycle as the OCI runtime spec defines it: create, start, run.
//!
//! Other operations (state, kill, delete, pause, ...) live in `ops`; exec in `exec`.

mod exec;
mod init;
mod ops;
mod wait;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;

pub use exec::ExecOptions;
pub use ops::Event;

use crate::cgroups;
use crate::config::{self, Bundle};
use crate::hooks::{self, Kind};
use crate::namespaces;
use crate::process::seccomp;
use crate::rootfs::propagation;
use crate::state::{self, ContainerState, Status, EXEC_FIFO};
use crate::sync::{self, Msg};
use crate::Error;

/// Where containers' state lives; every operation goes through one of these.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// `create`/`run` options that are not in config.json.
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (a root on ramfs cannot be pivoted).
    pub no_pivot: bool,
    /// Pass fds 3..3+N to the container.
    pub preserve_fds: u32,
    /// The container's stdin, stdout and stderr; by default it inherits ours.
    pub stdio: Option<[OwnedFd; 3]>,
    /// `run` in the foreground: keep the stopped container's state instead of deleting it.
    pub keep: bool,
}

/// Everything the forked children need, computed by the parent beforehand.
pub(crate) struct Setup<'a> {
    bundle: &'a Bundle,
    plan: namespaces::Plan,
    cgroup: &'a cgroups::Manager,
    seccomp: Option<seccomp::Filter>,
    console: Option<UnixStream>,
    notify_listener: Option<UnixStream>,
    state_dir: OwnedFd,
    no_pivot: bool,
    preserve_fds: u32,
    stdio: Option<&'a [OwnedFd; 3]>,
    /// `linux.rootfsPropagation` shared and the rootfs on a shared host mount: the init hands
    /// back a clone of its root to mount there (see `rootfs::propagation`).
    share_root_with_host: bool,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Create container `id` from the bundle: namespaces, cgroup, root filesystem, all set;
    /// its process waits for `start`. Returns the init's pid. On error nothing is left.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<i32> {
        crate::timing::mark("create: start");
        state::check_id(id)?;
        let bundle = config::load_bundle(bundle)?;
        let console = match &opts.console_socket {
            Some(p) => Some(crate::console::connect(p)?),
            None => None,
        };
        self.create_with_console(id, &bundle, opts, console)
    }

    /// The create proper, on a bundle already loaded and validated (by `create` or `run`).
    fn create_with_console(
        &self,
        id: &str,
        bundle: &Bundle,
        opts: &CreateOptions,
        console: Option<UnixStream>,
    ) -> Result<i32> {
        let spec = &bundle.spec;
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| anyhow!("linux: missing"))?;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| anyhow!("process: missing"))?;
        if process.terminal().unwrap_or(false) && console.is_none() {
            bail!("process.terminal is true: --console-socket is required");
        }
        let plan = namespaces::Plan::from_spec(spec);
        if !plan.creates(oci_spec::runtime::LinuxNamespaceType::Mount)
            && !plan
                .join
                .iter()
                .any(|(t, _)| *t == oci_spec::runtime::LinuxNamespaceType::Mount)
        {
            bail!("config.json: linux.namespaces: a mount namespace is required");
        }
        let mut cgroup =
            cgroups::Manager::new(linux.cgroups_path().as_deref(), id).context("config.json")?;
        if let Some(res) = linux.resources() {
            cgroup.validate(res).context("config.json")?;
        }
        let seccomp = match linux.seccomp() {
            Some(s) => Some(seccomp::compile(s).context("config.json")?),
            None => None,
        };
        let notify_listener = match linux
            .seccomp()
            .as_ref()
            .and_then(|s| s.listener_path().clone())
        {
            Some(p) if seccomp.as_ref().is_some_and(|f| f.uses_notify()) => {
                Some(UnixStream::connect(&p).with_context(|| {
                    format!("linux.seccomp.listenerPath: connect {}", p.display())
                })?)
            }
            _ => None,
        };

        crate::timing::mark("create: validated");
        // From here on the host changes: the guard undoes everything on error.
        let dir = self.make_state_dir(id)?;
        let mut guard = CreateGuard {
            dir: dir.clone(),
            cgroup: None,
            pid: None,
            root_clone: None,
        };
        nix::unistd::mkfifo(&dir.join(EXEC_FIFO), Mode::from_bits_truncate(0o622))
            .context("create exec fifo")?;
        // mkfifo applies the umask; the container's (possibly unprivileged) user must write it.
        std::fs::set_permissions(dir.join(EXEC_FIFO), std::fs::Permissions::from_mode(0o622))?;
        cgroup.create()?;
        guard.cgroup = Some(cgroups::Manager::from_state(&cgroup.state()));
        if let Some(res) = linux.resources() {
            cgroup.apply_without_devices(res)?;
        }
        crate::timing::mark("create: cgroup ready");
        let state_dir = nix::fcntl::open(
            &dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let setup = Setup {
            bundle,
            plan,
            cgroup: &cgroup,
            seccomp,
            console,
            notify_listener,
            state_dir,
            no_pivot: opts.no_pivot,
            preserve_fds: opts.preserve_fds,
            stdio: opts.stdio.as_ref(),
            share_root_with_host: propagation::wants_shared(spec)
                && propagation::host_mount_is_shared(&bundle.rootfs)?,
        };

        // Children re-parent to us when stage 1 exits, so we can reap the init if this fails.
        set_subreaper();
        // One channel per child process: each has one writer, so messages cannot race.
        let (parent_ch, child_ch) = sync::pair()?;
        let (parent_init_ch, init_ch) = sync::pair()?;
        // SAFETY: the create path is single-threaded (see init::fork).
        let (forked, born) = unsafe { cgroup.fork_into() }?;
        let stage1 = match forked {
            ForkResult::Child => {
                drop(parent_ch);
                drop(parent_init_ch);
                init::child_main(&child_ch, || init::stage1(&setup, &child_ch, init_ch))
            }
            ForkResult::Parent { child } => child.as_raw(),
        };
        drop(child_ch);
        drop(init_ch);
        guard.pid = Some(stage1);
        let channels = Channels {
            stage1: &parent_ch,
            init: &parent_init_ch,
        };
        let pid = self.drive_create(&setup, &channels, (stage1, born), id, bundle, &mut guard)?;

        let created = ContainerState {
            id: id.to_string(),
            pid,
            pid_start: state::pid_start_time(pid)
                .ok_or_else(|| anyhow!("the container process exited during create"))?,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: state::now_rfc3339(),
            owner: owner(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup: cgroup.state(),
            config: spec.clone(),
            root_clone: guard.root_clone.clone(),
        };
        crate::timing::mark("create: ready");
        created.save(&self.root)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        guard.disarm();
        crate::timing::mark("create: saved");
        Ok(pid)
    }

    /// The parent's half of the create protocol (see `init`).
    fn drive_create(
        &self,
        s: &Setup,
        chans: &Channels,
        (stage1, born): (i32, cgroups::Born),
        id: &str,
        bundle: &Bundle,
        guard: &mut CreateGuard,
    ) -> Result<i32> {
        let ch = chans.stage1;
        s.cgroup.finish_entry(stage1, born)?;
        if s.plan.new_user {
            ch.expect(Msg::UserNsReady)?;
            let linux = bundle.spec.linux().as_ref().expect("validated");
            namespaces::write_id_maps(
                stage1,
                linux.uid_mappings().as_deref().unwrap_or_default(),
                linux.gid_mappings().as_deref().unwrap_or_default(),
            )?;
        }
        ch.send(&Msg::Go)?;
        let pid = match ch.recv()? {
            Msg::Pid(p) => p,
            Msg::Error(e) => bail!(e),
            other => bail!("sync: unexpected {other:?}"),
        };
        if pid != stage1 {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1), None);
        }
        guard.pid = Some(pid);
        let ch = chans.init;
        ch.expect(Msg::CreateRuntimeHooks)?;
        // The device nodes exist now: a deny rule can no longer stop their mknod.
        if let Some(res) = bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
        {
            if let Err(e) = s.cgroup.apply_devices(res) {
                let _ = ch.send(&Msg::Abort);
                return Err(e);
            }
        }
        let hook_state = state::OciState {
            oci_version: bundle.spec.version().clone(),
            id: id.to_string(),
            status: Status::Creating,
            pid: Some(pid),
            bundle: bundle.dir.clone(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        };
        let hooks_result = hooks::run(&bundle.spec, Kind::Prestart, &hook_state)
            .and_then(|()| hooks::run(&bundle.spec, Kind::CreateRuntime, &hook_state));
        if let Err(e) = hooks_result {
            // We report the error; the init exits without repeating it.
            let _ = ch.send(&Msg::Abort);
            return Err(e);
        }
        ch.send(&Msg::HookState(serde_json::to_value(&hook_state)?))?;
        if s.share_root_with_host {
            let (msg, fds) = ch.recv_with_fds()?;
            match (msg, fds.first()) {
                (Msg::RootClone, Some(clone)) => {
                    propagation::attach(clone, &bundle.rootfs)?;
                    guard.root_clone = Some(bundle.rootfs.clone());
                }
                (Msg::Error(e), _) => bail!(e),
                (other, _) => bail!("sync: expected RootClone, got {other:?}"),
            }
        }
        ch.expect(Msg::Ready)?;
        Ok(pid)
    }

    fn make_state_dir(&self, id: &str) -> Result<PathBuf> {
        // A root yunc makes is 0711, as runc's: a container's user can reach its own fifo by
        // name but cannot list the containers; an existing root keeps its mode.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .with_context(|| format!("--root {}", self.root.display()))?;
        let dir = state::dir(&self.root, id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.to_string()).into())
            }
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
        // 0711: the container's user, maybe unprivileged, opens the fifo by name from here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        Ok(dir)
    }

    /// Let the created container's process run its program.
    pub fn start(&self, id: &str) -> Result<()> {
        let st = ContainerState::load(&self.root, id)?;
        let status = st.status(&self.root);
        if status != Status::Created {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "start",
                wanted: "created",
            }
            .into());
        }
        let fifo = state::dir(&self.root, id).join(EXEC_FIFO);
        crate::timing::mark("start: begin");
        release_fifo(&fifo, &st)?;
        crate::timing::mark("start: exec'd");
        let _ = std::fs::remove_file(&fifo);
        // The spec: a failing poststart hook is logged and the lifecycle goes on.
        hooks::run_all_warn(&st.config, Kind::Poststart, &st.oci(Status::Running));
        Ok(())
    }

    /// create + start, and unless `detach`, wait for the container, forward signals to it,
    /// delete it (unless `opts.keep`), and return its exit code (128+N for signal N).
    pub fn run(&self, id: &str, bundle: &Path, opts: &CreateOptions, detach: bool) -> Result<i32> {
        if detach {
            self.create(id, bundle, opts)?;
            if let Err(e) = self.start(id) {
                let _ = self.delete(id, true);
                return Err(e);
            }
            return Ok(0);
        }
        let signals = wait::block_signals();
        state::check_id(id)?;
        let bundle = config::load_bundle(bundle)?;
        let terminal = bundle
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let mut proxy_end = None;
        let console = match (&opts.console_socket, terminal) {
            (Some(p), _) => Some(crate::console::connect(p)?),
            (None, true) => {
                let (ours, theirs) = UnixStream::pair()?;
                proxy_end = Some(ours);
                Some(theirs)
            }
            (None, false) => None,
        };
        let pid = self.create_with_console(id, &bundle, opts, console)?;
        let proxy = match proxy_end {
            Some(sock) => Some(wait::ConsoleProxy::start(crate::console::recv_fd(&sock)?)?),
            None => None,
        };
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            return Err(e);
        }
        let code = wait::forward_until_exit(pid, &signals, proxy.as_ref());
        crate::timing::mark("run: exited");
        drop(proxy);
        drop(signals);
        if let Ok(st) = ContainerState::load(&self.root, id) {
            let cg = cgroups::Manager::from_state(&st.cgroup);
            if cg.oom_kill_count().unwrap_or(0) > 0 {
                tracing::warn!("container {id}: killed by the OOM killer (memory limit reached)");
            }
        }
        if !opts.keep {
            self.delete(id, true)?;
        }
        crate::timing::mark("run: deleted");
        Ok(code)
    }
}

/// Open the fifo for reading, which unblocks the init's open for writing; then wait for its
/// byte (startContainer hooks done) and for EOF (the write end closed by execve). Non-blocking
/// open + poll, so that a dead init becomes an error rather than a hang.
fn release_fifo(fifo: &Path, st: &ContainerState) -> Result<()> {
    let fd = nix::fcntl::open(
        fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open exec fifo")?;
    let mut got_byte = false;
    loop {
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {
                if !state::pid_alive(st.pid, st.pid_start) {
                    if got_byte {
                        return Ok(()); // it exec'd and already exited
                    }
                    bail!("container {}: its process died before start", st.id);
                }
            }
            Ok(_) => {
                let mut b = [0u8; 1];
                match nix::unistd::read(&fd, &mut b) {
                    Ok(1) => got_byte = true,
                    Ok(_) if got_byte => return Ok(()),
                    // EOF before the byte: the init failed after opening (its error went to
                    // the container's stderr).
                    Ok(_) => bail!("container {}: its process failed during start", st.id),
                    Err(nix::errno::Errno::EAGAIN) => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    Err(e) => return Err(e).context("read exec fifo"),
                }
            }
            Err(e) => return Err(e).context("poll exec fifo"),
        }
    }
}

/// The parent's ends of the create channels: one per child process (see `init`).
struct Channels<'a> {
    stage1: &'a sync::Channel,
    init: &'a sync::Channel,
}

/// Undo a partial create: kill the process, remove the cgroup and the state directory.
struct CreateGuard {
    dir: PathBuf,
    cgroup: Option<cgroups::Manager>,
    pid: Option<i32>,
    /// Where the container's root clone was mounted on the host.
    root_clone: Option<PathBuf>,
}

impl CreateGuard {
    fn disarm(&mut self) {
        self.cgroup = None;
        self.pid = None;
        self.root_clone = None;
        self.dir = PathBuf::new();
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if let Some(cg) = &self.cgroup {
            for p in cg.pids().unwrap_or_default() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        if let Some(pid) = self.pid {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(rootfs) = &self.root_clone {
            if let Err(e) = propagation::detach(rootfs) {
                tracing::warn!("cleanup: {e:#}");
            }
        }
        // Reap whatever else re-parented to us (stage 1 if it was still around).
        while let Ok(
            nix::sys::wait::WaitStatus::Exited(..) | nix::sys::wait::WaitStatus::Signaled(..),
        ) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {}
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleanup: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_subreaper() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

fn owner() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}

/// Write the pid atomically, like runc: readers (conmon) never see an empty file.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = std::path::absolute(path)?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("--pid-file {}", path.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("--pid-file {}", path.display()))?;
    Ok(())
}

/// SCMP_ACT_NOTIFY: hand the notification fd to the listener with the container's state,
/// as the runtime spec's "seccomp notify" section describes.
fn send_notify_fd(s: &Setup, fd: OwnedFd, state: &serde_json::Value) -> Result<()> {
    let Some(sock) = &s.notify_listener else {
        bail!("linux.seccomp.listenerPath: not connected");
    };
    let metadata = s
        .bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .and_then(|sc| sc.listener_metadata().clone())
        .unwrap_or_default();
    let msg = serde_json::json!({
        "ociVersion": s.bundle.spec.version(),
        "fds": ["seccompFd"],
        "pid": state.get("pid"),
        "metadata": metadata,
        "state": state,
    });
    crate::console::send_fd(sock, fd.as_raw_fd(), &serde_json::to_vec(&msg)?)
}
