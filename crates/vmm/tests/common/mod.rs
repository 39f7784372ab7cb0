//! Shared harness: the kernel cache, temp data dirs and a driver whose VMs are removed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use yun_vmm::{Driver, QemuDriver, State, VmConfig, VmStatus};

pub const CACHE: &str = "/var/cache/yun-test-kernel";
pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_yun-vm-supervisor");

/// Kernel and initramfs, fetched/built once per machine.
pub fn boot_files() -> &'static (PathBuf, PathBuf) {
    static ONCE: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = PathBuf::from(CACHE);
        std::fs::create_dir_all(&dir).unwrap();
        let k = yun_vmm::ensure_kernel(&dir).expect("kernel");
        let i = yun_vmm::ensure_initramfs(&dir, &k).expect("initramfs");
        (k.vmlinux.clone().unwrap_or(k.vmlinuz.clone()), i)
    })
}

/// The initramfs with the vsock modules and yun's guest agent.
pub fn vsock_initrd() -> PathBuf {
    boot_files();
    let k = yun_vmm::ensure_kernel(Path::new(CACHE)).expect("kernel");
    yun_vmm::ensure_initramfs_vsock(Path::new(CACHE), &k).expect("vsock initramfs")
}

pub fn cache() -> &'static Path {
    boot_files();
    Path::new(CACHE)
}

pub fn tmp() -> Tmp {
    Tmp(tempfile::Builder::new()
        .prefix("yun-test-vm-")
        .tempdir()
        .unwrap())
}

/// A temp data dir. A yun image store in it keeps `snapshots/` mounted (a nosuid,nodev bind
/// of itself) for as long as the data dir exists: detached first, so the dir can go.
pub struct Tmp(tempfile::TempDir);

impl Tmp {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let snapshots =
            std::ffi::CString::new(self.path().join("snapshots").as_os_str().as_encoded_bytes())
                .unwrap();
        // SAFETY: a NUL-terminated path; failing (nothing mounted there) is fine.
        unsafe { libc::umount2(snapshots.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A data dir with a driver; every VM in it is force-removed on drop, then the dir.
pub struct Env {
    pub dir: Tmp,
    pub driver: QemuDriver,
}

impl Env {
    pub fn new() -> Env {
        let dir = tmp();
        let mut driver = QemuDriver::new(dir.path(), vec![SUPERVISOR.into()]);
        driver.stop_grace = Duration::from_secs(2);
        Env { dir, driver }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// A config with the cached kernel and initramfs.
    pub fn config(&self, name: &str, cmd: &str) -> VmConfig {
        let (k, i) = boot_files();
        VmConfig {
            kernel: Some(k.clone()),
            initrd: Some(i.clone()),
            cmd: vec![cmd.to_string()],
            memory_mib: 128,
            ..VmConfig::new(name)
        }
    }

    pub fn wait(&self, name: &str, what: &str, ok: impl Fn(&VmStatus) -> bool) -> VmStatus {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let st = self.driver.status(name).unwrap();
            if ok(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{name}: never {what}: {st:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_state(&self, name: &str, state: State) -> VmStatus {
        self.wait(name, state.as_str(), |s| s.state == state)
    }

    /// Wait until the console log contains `needle`; returns the log.
    pub fn wait_console(&self, name: &str, needle: &str) -> String {
        let log = self.driver.console(name).unwrap().log;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            // Lossy: a console may carry stray bytes (e.g. the guest's own escape sequences).
            // The guest's tty writes "\r\n"; compare lines without the "\r".
            let text =
                String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).replace('\r', "");
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: console never showed {needle:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for vm in self.driver.list().unwrap_or_default() {
            let _ = self.driver.undefine(&vm.config.name, true);
        }
    }
}

/// Processes whose command line mentions `needle` (to prove nothing was left running).
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// A network interface the test made, deleted on drop (also when the test fails).
pub struct Link(pub String);

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

impl Link {
    /// A tap holding `host_cidr`, up.
    pub fn tap(name: &str, host_cidr: &str) -> Link {
        Link::gone(name);
        ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        let link = Link(name.to_string());
        ip(&["addr", "add", host_cidr, "dev", name]);
        ip(&["link", "set", name, "up"]);
        link
    }

    /// `name` is for yun to create: removed now (a killed earlier run's) and on drop.
    pub fn owned_by_yun(name: &str) -> Link {
        Link::gone(name);
        Link(name.to_string())
    }

    fn gone(name: &str) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        Link::gone(&self.0);
    }
}

/// Whether interface `name` exists on the host.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// One ping from the host (busybox: the host has no iputils) through `dev` to `addr`.
pub fn ping(dev: &str, addr: &str) -> bool {
    std::process::Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "1", "-I", dev, addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
