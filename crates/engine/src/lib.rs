//! Local containers from images: `run`, `ps`, `logs`, `exec`, `stop`, `rm` and the image verbs
//! (the layer podman occupies), on the runtime and image crates.
//!
//! A container is an engine record (`record`), an overlay rootfs from the image store, an OCI
//! bundle generated from the image config (`spec`), and a runtime container. A detached
//! container has a monitor process (a fork of the calling `yun`, like conmon) that runs it
//! with its output going to `ctr.log`, waits for it, records the exit code, and removes it
//! when `--rm` was given. Calls that fork (run, exec) must come from a single-threaded process.

pub mod attach;
pub mod build;
pub mod ctrlog;
pub mod distribution;
pub mod logfile;
mod monitor;
mod record;
pub mod spec;
mod tty;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use yun_image::{ArchiveFormat, Image, Store};
use yun_runtime::{CreateOptions, ExecOptions, Runtime, Status};

pub use record::Container;
use record::Layout;
pub use spec::RunOptions;

pub struct Engine {
    data_dir: PathBuf,
    layout: Layout,
    pub images: Store,
    runtime: Runtime,
    /// How detached containers get their monitor (see [`Engine::set_monitor_command`]).
    monitor_command: Option<Vec<std::ffi::OsString>>,
}

/// A line of `yun ps`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerStatus {
    pub container: Container,
    /// "running", "paused", "created" or "exited".
    pub state: String,
    pub exit_code: Option<i32>,
    /// The memory limit ended it (the OOM killer killed a process of the container).
    pub oom_killed: bool,
    pub pid: Option<i32>,
}

impl Engine {
    pub fn open(data_dir: &Path) -> Result<Engine> {
        fs::create_dir_all(data_dir)
            .with_context(|| format!("--data-dir {}", data_dir.display()))?;
        let layout = Layout::new(data_dir);
        fs::create_dir_all(&layout.containers)?;
        Ok(Engine {
            data_dir: data_dir.to_path_buf(),
            images: Store::open(data_dir)?,
            runtime: Runtime::new(data_dir.join("runtime")),
            layout,
            monitor_command: None,
        })
    }

    /// The image for `reference`; "busybox" is built in and made on first use.
    pub fn image(&self, reference: &str) -> Result<Image> {
        match self.images.resolve(reference) {
            Ok(i) => Ok(i),
            Err(e) => {
                if matches!(reference, "busybox" | "busybox:latest") {
                    return self.images.busybox();
                }
                Err(e)
            }
        }
    }

    /// Create and start a container. Foreground: wait and return its exit code. Detached:
    /// return once it runs (the id is in the returned container).
    pub fn run(&self, image_ref: &str, opts: &RunOptions) -> Result<(Container, i32)> {
        let image = self.image(image_ref)?;
        let config = self.images.image_config(&image)?;
        let img_config = config.config().clone().unwrap_or_default();
        // Refused before a name, rootfs or directory exists for the container.
        match (&opts.user, img_config.user()) {
            (Some(u), _) => spec::check_user_ids("--user", u)?,
            (None, Some(u)) => spec::check_user_ids("the image config's User", u)?,
            (None, None) => {}
        }
        let id = random_id()?;
        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| id[..12].to_string());
        let name = match &opts.name {
            Some(n) => {
                check_name(n)?;
                n.clone()
            }
            None => format!("yun-{}", &id[..12]),
        };
        if let Some(stale) = self.layout.claim_name(&name, &id, STALE_CLAIM)? {
            let _ = self.images.remove_rootfs(&stale);
            let _ = fs::remove_dir_all(self.layout.dir(&stale));
        }
        let mut guard = Cleanup {
            engine: self,
            id: id.clone(),
            name: name.clone(),
            armed: true,
        };
        let rootfs = self.images.prepare_rootfs(&id, &image)?;
        let files = spec::Generated::write(&self.layout.dir(&id), &hostname, &opts.extra_hosts)?;
        let runtime_spec = spec::generate(&spec::Input {
            image: &img_config,
            opts,
            rootfs: &rootfs.path,
            hostname: &hostname,
            files: &files,
            volumes_dir: &self.data_dir.join("volumes"),
        })?;
        let container = Container {
            id: id.clone(),
            name,
            image: image_ref.to_string(),
            image_id: image.id.to_string(),
            command: runtime_spec
                .process()
                .as_ref()
                .and_then(|p| p.args().clone())
                .unwrap_or_default(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            detached: opts.detach,
            auto_remove: opts.auto_remove,
            tty: opts.tty,
            stdin_open: opts.detach && opts.interactive,
            stdin_once: opts.detach && opts.interactive && opts.stdin_once,
            labels: opts.labels.clone(),
            log_rotation: opts.log_rotation.unwrap_or_default(),
        };
        fs::create_dir_all(self.layout.bundle(&id))?;
        yun_runtime::bundle::write_config(&self.layout.bundle(&id), &runtime_spec)?;
        self.layout.save(&container)?;
        guard.armed = false;

        if opts.detach {
            if let Err(e) = self.start_monitor(&container) {
                let _ = self.remove(&container);
                return Err(e);
            }
            return Ok((container, 0));
        }
        let stdin = if opts.interactive || opts.tty {
            None
        } else {
            Some(devnull()?)
        };
        let code = self.run_attached(&container, stdin);
        Ok((container, code?))
    }

    /// Run in this process with our stdio (stdin replaced by /dev/null unless interactive).
    fn run_attached(&self, c: &Container, stdin: Option<OwnedFd>) -> Result<i32> {
        let stdio = match stdin {
            Some(null) => Some([null, dup_fd(1)?, dup_fd(2)?]),
            None => None,
        };
        let opts = CreateOptions {
            stdio,
            ..Default::default()
        };
        let result = self.run_to_end(c, opts);
        if let Err(e) = result {
            // It never ran: leave nothing behind, like a failed create.
            let _ = self.remove(c);
            return Err(e);
        }
        self.finish(c, &result)?;
        result.map(|(code, _)| code)
    }

    /// Run the container in this process to its end: its exit code, and whether the OOM
    /// killer ended it (the runtime keeps the stopped container until its memory cgroup has
    /// been asked, then it is deleted).
    pub(crate) fn run_to_end(&self, c: &Container, opts: CreateOptions) -> Result<(i32, bool)> {
        let opts = CreateOptions { keep: true, ..opts };
        let code = self
            .runtime
            .run(&c.id, &self.layout.bundle(&c.id), &opts, false)?;
        let oom_killed = self.runtime.oom_kills(&c.id).unwrap_or(0) > 0;
        let _ = self.runtime.delete(&c.id, true);
        Ok((code, oom_killed))
    }

    /// Record the exit (or the failure to start), and remove the container if asked.
    fn finish(&self, c: &Container, result: &Result<(i32, bool)>) -> Result<()> {
        // An exited container keeps its upper dir and log but not its mount (before the exit
        // is recorded, so whoever sees the exit sees the mount gone).
        if !c.auto_remove && result.is_ok() {
            if let Err(e) = self.images.unmount_rootfs(&c.id) {
                tracing::debug!("unmount the rootfs of {}: {e:#}", c.id);
            }
        }
        match result {
            Ok((code, oom_killed)) => self.layout.write_exit(&c.id, *code, *oom_killed)?,
            Err(e) => fs::write(self.layout.error_file(&c.id), format!("{e:#}"))?,
        }
        // A failed start is removed by whoever reports it (`run`), after reading the error.
        if c.auto_remove && result.is_ok() {
            self.remove(c)?;
        }
        Ok(())
    }

    /// The exit code its monitor recorded, once the container has ended (the monitor writes
    /// it after the last log record, so a caller that sees it sees the whole log).
    pub fn exit_code(&self, c: &Container) -> Option<i32> {
        self.layout.exit_code(&c.id)
    }

    pub fn status(&self, c: &Container) -> ContainerStatus {
        let exit_code = self.layout.exit_code(&c.id);
        let (state, pid) = match self.runtime.state(&c.id) {
            Ok(st) if st.status != Status::Stopped => (st.status.to_string(), Some(st.pid)),
            _ => ("exited".to_string(), None),
        };
        ContainerStatus {
            container: c.clone(),
            state,
            exit_code,
            oom_killed: exit_code.is_some() && self.layout.oom_killed(&c.id),
            pid,
        }
    }

    /// Containers (with `all`, also exited ones), oldest first.
    pub fn ps(&self, all: bool) -> Vec<ContainerStatus> {
        self.layout
            .all()
            .iter()
            .map(|c| self.status(c))
            .filter(|s| all || s.state != "exited")
            .collect()
    }

    /// Every container's record, oldest first, without asking the runtime for its state
    /// (callers that only need some of them ask [`Engine::status`] for those).
    pub fn containers(&self) -> Vec<Container> {
        self.layout.all()
    }

    /// The containers whose names start with `prefix` (reads only their records).
    pub fn containers_named(&self, prefix: &str) -> Vec<Container> {
        self.layout.with_name_prefix(prefix)
    }

    pub fn find(&self, key: &str) -> Result<Container> {
        self.layout.find(key)
    }

    /// Where a detached container's output goes.
    pub fn log_path(&self, c: &Container) -> PathBuf {
        self.layout.log(&c.id)
    }

    /// Where attach writes the stdin of a container run with `stdin_open` (see [`attach`]).
    pub fn attach_socket(&self, c: &Container) -> PathBuf {
        self.layout.attach_socket(&c.id)
    }

    /// The usage its cgroup counts (CPU time, memory with its `memory.stat`), for a container
    /// that is running; an error once it has stopped.
    pub fn stats(&self, c: &Container) -> Result<yun_runtime::cgroups::Stats> {
        self.runtime
            .stats(&c.id)?
            .data
            .ok_or_else(|| anyhow!("container {}: no statistics", c.id))
    }

    /// When the container exited (when its monitor recorded the exit code).
    pub fn finished_at(&self, c: &Container) -> Option<std::time::SystemTime> {
        fs::metadata(self.layout.exit_file(&c.id))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Write the container's log to `out` as `opts` say; with `follow`, keep going until it
    /// exits.
    pub fn logs(
        &self,
        key: &str,
        opts: &ctrlog::LogOptions,
        follow: bool,
        out: &mut dyn Write,
    ) -> Result<()> {
        let c = self.find(key)?;
        let path = self.layout.log(&c.id);
        if !path.exists() && !c.detached {
            bail!(
                "container {}: ran attached, its output went to the terminal (no log)",
                c.name
            );
        }
        let mut log = logfile::LogFollower::open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let mut decoder = ctrlog::Decoder::new(opts.clone());
        let exited = self.status(&c).state == "exited";
        out.write_all(&decoder.first(&log.read_new()?, exited || !follow))?;
        out.flush()?;
        if !follow || exited {
            return Ok(());
        }
        while !decoder.exhausted() {
            let exited = self.status(&c).state == "exited";
            // Read after the look at the state: what was written before the exit is in.
            let chunk = log.read_new()?;
            out.write_all(&decoder.more(&chunk))?;
            if exited {
                out.write_all(&decoder.end())?;
                break;
            }
            if chunk.is_empty() {
                out.flush()?;
                std::thread::sleep(ctrlog::FOLLOW_INTERVAL);
            }
        }
        out.flush()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `timeout`; returns once the container has exited.
    pub fn stop(&self, key: &str, timeout: Duration) -> Result<Container> {
        let c = self.find(key)?;
        if self.status(&c).state == "exited" {
            return Ok(c);
        }
        let _ = self.runtime.kill(&c.id, Signal::SIGTERM, false);
        if !self.wait_exited(&c, timeout) {
            let _ = self.runtime.kill(&c.id, Signal::SIGKILL, true);
            if !self.wait_exited(&c, Duration::from_secs(10)) {
                bail!("container {}: still running after SIGKILL", c.name);
            }
        }
        Ok(c)
    }

    fn wait_exited(&self, c: &Container, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            // The monitor writes the exit code after the runtime container is gone.
            if self.status(c).state == "exited"
                && (!c.detached || self.layout.exit_code(&c.id).is_some())
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// `yun rm`: refuses a running container unless `force` (then kills it).
    pub fn rm(&self, key: &str, force: bool) -> Result<Container> {
        let c = self.find(key)?;
        if self.status(&c).state != "exited" {
            if !force {
                bail!(
                    "container {} is running: stop it first or use --force",
                    c.name
                );
            }
            self.stop(&c.id, Duration::ZERO)?;
        }
        // An --rm container's monitor may be removing it right now.
        if self.layout.dir(&c.id).exists() {
            self.remove(&c)?;
        }
        Ok(c)
    }

    fn remove(&self, c: &Container) -> Result<()> {
        let _ = self.runtime.delete(&c.id, true);
        self.images.remove_rootfs(&c.id)?;
        self.layout.release_name(&c.name);
        fs::remove_dir_all(self.layout.dir(&c.id)).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(())
    }

    /// Run `cmd` in a running container; returns its exit code.
    pub fn exec(&self, key: &str, cmd: &[String], opts: &RunOptions) -> Result<i32> {
        let c = self.find(key)?;
        let bundle =
            yun_runtime::config::load_spec(&self.layout.bundle(&c.id).join("config.json"))?;
        let mut process = bundle
            .process()
            .clone()
            .ok_or_else(|| anyhow!("container has no process"))?;
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(opts.tty));
        if let Some(w) = &opts.workdir {
            process.set_cwd(PathBuf::from(w));
        }
        let mut env = process.env().clone().unwrap_or_default();
        for kv in &opts.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        process.set_env(Some(env));
        if let Some(u) = &opts.user {
            let rootfs = bundle
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default();
            let (uid, gid, groups) =
                spec::resolve_user(&rootfs, u).with_context(|| format!("--user {u:?}"))?;
            let mut user = process.user().clone();
            user.set_uid(uid);
            user.set_gid(gid);
            user.set_additional_gids(Some(groups));
            process.set_user(user);
        }
        self.runtime.exec(&c.id, &process, &ExecOptions::default())
    }

    /// `yun rmi`: refuses images that containers (running or not) still use.
    pub fn rmi(&self, reference: &str) -> Result<Vec<String>> {
        let containers = self.layout.all();
        self.images.untag_or_remove(reference, &|img: &Image| {
            containers.iter().any(|c| c.image_id == img.id.to_string())
        })
    }

    /// `yun prune`: remove dangling images (no name, no container) such as build
    /// intermediates, then every blob and unpacked layer no image references.
    pub fn prune(&self) -> Result<(Vec<String>, yun_image::GcReport)> {
        let containers = self.layout.all();
        let mut removed = Vec::new();
        for img in self.images.images()? {
            let used = containers.iter().any(|c| c.image_id == img.id.to_string());
            if img.names.is_empty() && !used {
                removed.extend(self.images.untag_or_remove(img.id.as_ref(), &|_| false)?);
            }
        }
        let report = self.images.gc(&|_| false)?;
        Ok((removed, report))
    }

    /// `yun pull`: fetch an image from a registry into the store.
    pub fn pull(&self, reference: &str, opts: &distribution::client::Options) -> Result<Image> {
        let store = std::sync::Arc::new(Store::open(&self.data_dir)?);
        // A runtime per call, dropped (threads joined) before anything forks a container.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(distribution::pull(store, reference, opts))
    }

    /// `yun push`: send an image to `dest` (HOST/REPO[:TAG]); returns the manifest digest.
    pub fn push(
        &self,
        image: &str,
        dest: &str,
        opts: &distribution::client::Options,
    ) -> Result<String> {
        let store = std::sync::Arc::new(Store::open(&self.data_dir)?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(distribution::push(store, image, dest, opts))
    }

    pub fn load(&self, path: &Path) -> Result<Vec<Image>> {
        self.images.load(path)
    }

    pub fn save(&self, image: &str, path: &Path, format: ArchiveFormat) -> Result<()> {
        self.images.save(image, path, format)
    }
}

/// A name claimed this long ago by a create that never recorded its container belongs to a
/// process that died mid-create (a create records within milliseconds).
const STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(5);

/// Undo a half-made container (name, rootfs, directory) when `run` fails before it starts.
struct Cleanup<'a> {
    engine: &'a Engine,
    id: String,
    name: String,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = self.engine.images.remove_rootfs(&self.id);
        self.engine.layout.release_name(&self.name);
        let _ = fs::remove_dir_all(self.engine.layout.dir(&self.id));
    }
}

fn check_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 128
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!(
            "--name {n:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        );
    }
    Ok(())
}

fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

fn devnull() -> Result<OwnedFd> {
    Ok(fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

fn dup_fd(fd: i32) -> Result<OwnedFd> {
    // SAFETY: borrowing a standard fd only for the duration of the dup.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    Ok(b.try_clone_to_owned()?)
}
