//! [`QemuDriver`]: managed VMs, each run by its own supervisor process, controlled over QMP.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::supervisor::LOCK_FD;
use super::{
    boot_files, check_boot_file, check_size, choose_accel, find_qemu, guest_script, kernel_cmdline,
    machine_args, Devices, MachineArgs,
};
use crate::disk::{self, Disk, DiskFormat};
use crate::driver::{Console, Driver, State, VmConfig, VmStats, VmStatus};
use crate::machine::{
    atomic_write, cpu_ms, guest_ram, is_live, read_state, rss_kib, try_lock, Launch, Machines,
};
use crate::qmp::Qmp;
use crate::snapshot;

/// How long `start`/`restore` wait for the supervisor's report.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `balloon` waits for the guest to reach its target.
const BALLOON_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits for the supervisor to record the end.
const END_TIMEOUT: Duration = Duration::from_secs(60);

/// The QEMU driver over a data dir.
#[derive(Debug, Clone)]
pub struct QemuDriver {
    data_dir: PathBuf,
    machines: Machines,
    supervisor: Vec<OsString>,
    /// How long a non-forced stop lets the guest power off before QEMU is told to quit.
    pub stop_grace: Duration,
}

impl QemuDriver {
    /// `supervisor` is the program (and leading arguments) that runs [`crate::supervise`] for
    /// the VM directory appended to it — for yun, `yun vm supervise`.
    pub fn new(data_dir: &Path, supervisor: Vec<OsString>) -> QemuDriver {
        QemuDriver {
            data_dir: data_dir.to_path_buf(),
            machines: Machines::new(data_dir),
            supervisor,
            stop_grace: Duration::from_secs(10),
        }
    }

    fn live_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.machines.existing(name)?;
        if !is_live(&dir) {
            bail!("vm {name}: not running");
        }
        Ok(dir)
    }

    fn qmp(&self, name: &str) -> Result<Qmp> {
        let dir = self.live_dir(name)?;
        Qmp::connect(&dir.join("qmp.sock"), Duration::from_secs(10))
            .with_context(|| format!("vm {name}"))
    }

    /// Everything a start needs, checked: sizes, files, disks, QEMU itself.
    fn launch(&self, cfg: &VmConfig, incoming: Option<PathBuf>) -> Result<Launch> {
        check_size(cfg.cpus, cfg.memory_mib)?;
        check_boot_file("kernel", &cfg.kernel)?;
        check_boot_file("initrd", &cfg.initrd)?;
        for d in &cfg.disks {
            d.validate()?;
        }
        disk::check_conflicts(&cfg.disks, &live_disks(&self.data_dir, Some(&cfg.name)))?;
        let qemu = find_qemu()?;
        let script = if cfg.cmd.is_empty() {
            "sh".to_string()
        } else {
            guest_script(&cfg.cmd)
        };
        let root = cfg.image.as_ref().map(|_| ("/dev/vda", false));
        let accel = cfg.accel.clone().unwrap_or_else(choose_accel);
        let devices = Devices {
            acpi: true,
            blk: !cfg.disks.is_empty(),
            net: cfg.network.is_some(),
            balloon: true,
            vsock: cfg.vsock,
        };
        let mut extra = format!("{} {}", devices.kernel_param(), cfg.cmdline);
        if let Some(n) = &cfg.network {
            extra = format!("{} {extra}", crate::net::guest_params(n));
        }
        let append = kernel_cmdline(&script, &cfg.nonce, root, &accel, &extra)?;
        let taps: Vec<String> = cfg.network.iter().map(|n| n.tap.clone()).collect();
        let dir = self.machines.dir(&cfg.name)?;
        let (kernel, initrd) = boot_files(&self.data_dir, &cfg.kernel, &cfg.initrd, cfg.vsock)?;
        let args = machine_args(&MachineArgs {
            cpus: cfg.cpus,
            memory_mib: cfg.memory_mib,
            accel: &accel,
            kernel: &kernel,
            initrd: &initrd,
            append: &append,
            disks: &cfg.disks,
            taps: &taps,
            balloon: devices.balloon,
            acpi: devices.acpi,
        })?;
        let mut args = args;
        if cfg.vsock {
            args.extend(crate::vsock::qemu_args(&dir, cfg.memory_mib));
        }
        Ok(Launch {
            qemu,
            args,
            incoming,
            disks: cfg.disks.clone(),
            nonce: cfg.nonce.clone(),
            net: cfg.network.clone(),
            taps,
            vsock: cfg.vsock,
        })
    }

    /// Hand the locked VM to a new supervisor and wait for its `ok` (or its one-line error).
    fn spawn_supervisor(&self, dir: &Path, lock: fs::File, launch: &Launch) -> Result<()> {
        atomic_write(&dir.join("launch.json"), &serde_json::to_vec(launch)?)?;
        let (prog, args) = self
            .supervisor
            .split_first()
            .ok_or_else(|| anyhow!("no supervisor program configured"))?;
        let log = fs::File::create(dir.join("supervisor.log"))?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let lock_fd = lock.as_raw_fd();
        // SAFETY: setsid, dup2 and fcntl are async-signal-safe. The supervisor gets its own
        // session (a terminal closing does not reach it) and the lock as fd 3, without CLOEXEC.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if lock_fd == LOCK_FD {
                    libc::fcntl(LOCK_FD, libc::F_SETFD, 0);
                } else if libc::dup2(lock_fd, LOCK_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start supervisor {}", prog.to_string_lossy()))?;
        drop(lock); // the supervisor's fd 3 holds it now
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
            // Reap the supervisor when it ends, so no zombie stays behind in long-lived callers.
            let _ = child.wait();
            let _ = tx.send(String::new());
        });
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow!("VM did not start within {START_TIMEOUT:?}"))?;
        let line = line.trim();
        if line == "ok" {
            return Ok(());
        }
        // A failed start leaves no process behind: wait for the supervisor to be gone.
        let _ = rx.recv_timeout(Duration::from_secs(30));
        let _ = fs::remove_file(dir.join("launch.json"));
        match line.strip_prefix("error: ") {
            Some(e) => bail!("{e}"),
            None => bail!(
                "supervisor ended without a report: {}",
                super::supervisor::last_line(&dir.join("supervisor.log"))
            ),
        }
    }

    /// Wait until the supervisor has recorded the end and let go of the lock.
    fn wait_ended(&self, dir: &Path, name: &str) -> Result<()> {
        let deadline = Instant::now() + END_TIMEOUT;
        while is_live(dir) {
            if Instant::now() > deadline {
                bail!("vm {name}: still running {END_TIMEOUT:?} after stop");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The VM's lock, waiting a moment for a supervisor that has recorded the end of its VM
    /// and is only exiting; `None` while the VM is live.
    fn lock_ended(&self, dir: &Path) -> Result<Option<fs::File>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = try_lock(dir)? {
                return Ok(Some(l));
            }
            let ending = read_state(dir).is_some_and(|r| !r.state.is_live());
            if !ending || Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for the supervisor to record a state change QEMU made (it follows QEMU's events).
    fn wait_recorded(&self, name: &str, state: State) -> Result<()> {
        let dir = self.machines.existing(name)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_state(&dir).map(|r| r.state) != Some(state) {
            if Instant::now() > deadline || !is_live(&dir) {
                bail!("vm {name}: did not become {}", state.as_str());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn qmp_status(&self, name: &str) -> Result<(Qmp, String)> {
        let mut q = self.qmp(name)?;
        let st = q.query_status()?.status;
        Ok((q, st))
    }
}

/// Disks of live VMs (other than `except`), for refusing conflicting opens.
pub(crate) fn live_disks(data_dir: &Path, except: Option<&str>) -> Vec<(String, Vec<Disk>)> {
    let m = Machines::new(data_dir);
    let mut out = Vec::new();
    for name in m.names().unwrap_or_default() {
        if Some(name.as_str()) == except {
            continue;
        }
        let Ok(dir) = m.dir(&name) else { continue };
        if !is_live(&dir) {
            continue;
        }
        if let Ok(cfg) = m.config(&name) {
            out.push((name, cfg.disks));
        }
    }
    out
}

impl Driver for QemuDriver {
    fn define(&self, config: &VmConfig) -> Result<()> {
        let name = &config.name;
        let dir = self.machines.dir(name)?;
        if dir.exists() {
            bail!("vm {name}: name already in use");
        }
        check_size(config.cpus, config.memory_mib)?;
        check_boot_file("kernel", &config.kernel)?;
        check_boot_file("initrd", &config.initrd)?;
        for d in &config.disks {
            d.validate()?;
        }
        let mut cfg = config.clone();
        if cfg.nonce.is_empty() {
            cfg.nonce = super::nonce();
        }
        fs::create_dir_all(&self.machines.root)
            .with_context(|| format!("create {}", self.machines.root.display()))?;
        // Build in a hidden staging dir, then rename: a VM is either fully defined or absent.
        let stage = self
            .machines
            .root
            .join(format!(".stage-{name}-{}", super::nonce()));
        let result = (|| -> Result<()> {
            fs::create_dir(&stage)?;
            if let Some(image) = &cfg.image {
                let built = crate::rootfs::image_disk(&self.data_dir, image)?;
                let root = stage.join("root.ext4");
                crate::rootfs::copy_sparse(&built.path, &root)?;
                if cfg.cmd.is_empty() {
                    cfg.cmd = vec![built.script];
                } else {
                    cfg.cmd = vec![format!("{}{}", built.env_prefix, guest_script(&cfg.cmd))];
                }
                cfg.disks.insert(
                    0,
                    Disk {
                        path: dir.join("root.ext4"),
                        readonly: false,
                        format: DiskFormat::Raw,
                        scratch: false,
                        backing_allowed: false,
                    },
                );
            }
            if let Some(req) = &cfg.join {
                let owner = format!("vm:{name}:{}", cfg.nonce);
                let tap = crate::net::tap_name(&dir.to_string_lossy());
                cfg.network = Some(crate::net::reserve(&self.data_dir, req, &owner, &tap)?);
            }
            atomic_write(
                &stage.join("config.json"),
                &serde_json::to_vec_pretty(&cfg)?,
            )?;
            fs::rename(&stage, &dir).map_err(|e| {
                if dir.exists() {
                    anyhow!("vm {name}: name already in use")
                } else {
                    anyhow!("rename into {}: {e}", dir.display())
                }
            })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&stage);
            if let Some(n) = &cfg.network {
                let _ = crate::net::release(&self.data_dir, n);
            }
        }
        result
    }

    fn undefine(&self, name: &str, force: bool) -> Result<()> {
        let dir = self.machines.existing(name)?;
        // Hold the lock while deleting, so a concurrent start cannot begin on a half-gone dir.
        let _lock = match self.lock_ended(&dir)? {
            Some(l) => l,
            None if !force => bail!("vm {name}: running (stop it first, or rm -f)"),
            None => {
                self.stop(name, true)?;
                try_lock(&dir)?.ok_or_else(|| anyhow!("vm {name}: started meanwhile"))?
            }
        };
        let cfg = self.machines.config(name)?;
        let trash = self
            .machines
            .root
            .join(format!(".rm-{name}-{}", super::nonce()));
        fs::rename(&dir, &trash).with_context(|| format!("remove {}", dir.display()))?;
        if let Some(n) = &cfg.network {
            // A supervisor killed before its cleanup may have left the tap.
            crate::net::unplug(n);
            crate::net::release(&self.data_dir, n)?;
        }
        fs::remove_dir_all(&trash).with_context(|| format!("remove {}", trash.display()))
    }

    fn start(&self, name: &str) -> Result<()> {
        let dir = self.machines.existing(name)?;
        let cfg = self.machines.config(name)?;
        let lock = self
            .lock_ended(&dir)?
            .ok_or_else(|| anyhow!("vm {name}: already running"))?;
        let launch = self.launch(&cfg, None)?;
        self.spawn_supervisor(&dir, lock, &launch)
            .with_context(|| format!("vm {name}"))
    }

    fn stop(&self, name: &str, force: bool) -> Result<()> {
        let dir = self.live_dir(name)?;
        let mut q = self.qmp(name)?;
        if !force {
            // ACPI power button: a guest that handles it powers off cleanly; else quit after grace.
            let _ = q.execute("system_powerdown", None);
            let deadline = Instant::now() + self.stop_grace;
            while is_live(&dir) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if is_live(&dir) {
            // QEMU may close the socket before replying to quit; either way it is going.
            let _ = q.quit();
        }
        drop(q);
        self.wait_ended(&dir, name)
    }

    fn pause(&self, name: &str) -> Result<()> {
        let (mut q, st) = self.qmp_status(name)?;
        if st != "running" {
            bail!("vm {name}: cannot pause, it is {st}");
        }
        q.stop()?;
        self.wait_recorded(name, State::Paused)
    }

    fn resume(&self, name: &str) -> Result<()> {
        let (mut q, st) = self.qmp_status(name)?;
        if st == "running" {
            bail!("vm {name}: not paused (running)");
        }
        q.cont()?;
        self.wait_recorded(name, State::Running)
    }

    fn snapshot(&self, name: &str, tag: &str) -> Result<()> {
        let dir = self.machines.existing(name)?;
        if self.machines.config(name)?.vsock {
            // QEMU's vhost-user-vsock device has no migration support.
            bail!("vm {name}: a VM with vsock cannot be snapshotted");
        }
        let path = snapshot::path(&dir, tag)?;
        let mut q = self.qmp(name)?;
        let was = q.query_status()?.status;
        snapshot::save(&mut q, &path).with_context(|| format!("vm {name}: snapshot {tag:?}"))?;
        if was == "running" {
            self.wait_recorded(name, State::Running)?;
        }
        Ok(())
    }

    fn restore(&self, name: &str, tag: &str) -> Result<()> {
        let dir = self.machines.existing(name)?;
        let path = snapshot::path(&dir, tag)?;
        let cfg = self.machines.config(name)?;
        let lock = self
            .lock_ended(&dir)?
            .ok_or_else(|| anyhow!("vm {name}: running; stop it before restoring"))?;
        if !path.is_file() {
            bail!("vm {name}: no snapshot {tag:?}");
        }
        let launch = self.launch(&cfg, Some(path))?;
        self.spawn_supervisor(&dir, lock, &launch)
            .with_context(|| format!("vm {name}: restore {tag:?}"))
    }

    fn console(&self, name: &str) -> Result<Console> {
        let dir = self.machines.existing(name)?;
        let socket = dir.join("console.sock");
        Ok(Console {
            log: dir.join("console.log"),
            socket: (is_live(&dir) && socket.exists()).then_some(socket),
        })
    }

    fn status(&self, name: &str) -> Result<VmStatus> {
        let dir = self.machines.existing(name)?;
        let config = self.machines.config(name)?;
        let live = is_live(&dir);
        let rec = read_state(&dir);
        let mut st = VmStatus {
            config,
            state: State::Defined,
            reason: None,
            started_at: None,
            supervisor_pid: None,
            qemu_pid: None,
        };
        if let Some(r) = rec {
            st.state = r.state;
            st.reason = r.reason;
            if r.state.is_live() {
                if live {
                    st.started_at = r.started_at;
                    st.supervisor_pid = r.supervisor_pid;
                    st.qemu_pid = r.qemu_pid;
                } else {
                    // The lock is free but the record says live: the supervisor was killed.
                    st.state = State::Failed;
                    st.reason = Some("supervisor died".into());
                }
            }
        } else if live {
            st.state = State::Starting;
        }
        Ok(st)
    }

    fn list(&self) -> Result<Vec<VmStatus>> {
        let mut out = Vec::new();
        for name in self.machines.names()? {
            match self.status(&name) {
                Ok(s) => out.push(s),
                // Removed between listing and reading: not an error for a list.
                Err(_) if !self.machines.root.join(&name).exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn stats(&self, name: &str) -> Result<VmStats> {
        let st = self.status(name)?;
        let (Some(sup), Some(qemu)) = (st.supervisor_pid, st.qemu_pid) else {
            bail!("vm {name}: not running");
        };
        let balloon_mib = self
            .qmp(name)
            .and_then(|mut q| q.balloon_actual())
            .ok()
            .flatten()
            .map(|b| b >> 20);
        let ram = guest_ram(qemu, st.config.memory_mib);
        Ok(VmStats {
            hypervisor_rss_kib: rss_kib(qemu)?,
            supervisor_rss_kib: rss_kib(sup)?,
            cpu_ms: cpu_ms(qemu)?,
            balloon_mib,
            guest_ram_rss_kib: ram.map(|r| r.rss_kib),
            guest_ram_ksm_kib: ram.map(|r| r.ksm_kib),
        })
    }

    fn exec(&self, name: &str, script: &str, out: &mut dyn std::io::Write) -> Result<i32> {
        let cfg = self.machines.config(name)?;
        if !cfg.vsock {
            bail!("vm {name}: no vsock (create it with --vsock)");
        }
        let dir = self.live_dir(name)?;
        crate::vsock::exec(&dir, script, out).with_context(|| format!("vm {name}"))
    }

    fn balloon(&self, name: &str, target_mib: u64) -> Result<()> {
        let cfg = self.machines.config(name)?;
        let size = u64::from(cfg.memory_mib);
        if target_mib == 0 || target_mib > size {
            bail!("balloon: {target_mib} MiB is outside 1..={size} (the VM's memory)");
        }
        let mut q = self.qmp(name)?;
        if q.balloon_actual()?.is_none() {
            bail!("vm {name}: no balloon device");
        }
        q.execute(
            "balloon",
            Some(serde_json::json!({ "value": target_mib << 20 })),
        )?;
        // The guest's driver gives or takes pages at its own pace: wait for it, within reason.
        let deadline = Instant::now() + BALLOON_TIMEOUT;
        loop {
            let now = q.balloon_actual()?.unwrap_or(0) >> 20;
            if now == target_mib {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "vm {name}: the guest is at {now} MiB, not {target_mib}, after {BALLOON_TIMEOUT:?} (is virtio_balloon loaded in it?)"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
