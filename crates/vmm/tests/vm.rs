//! Real QEMU boots of Debian's cloud kernel. The kernel is cached in /var/cache/yun-test-kernel
//! (downloaded on first use); each test works in its own yun-test-… temp dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use yun_vmm::{qmp::Qmp, run_with, RunOptions, RunSpec};

const CACHE: &str = "/var/cache/yun-test-kernel";

fn cache() -> &'static Path {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = PathBuf::from(CACHE);
        std::fs::create_dir_all(&dir).unwrap();
        let k = yun_vmm::ensure_kernel(&dir).expect("kernel");
        yun_vmm::ensure_initramfs(&dir, &k).expect("initramfs");
        dir
    })
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("yun-test-vm-")
        .tempdir()
        .unwrap()
}

fn opts() -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_secs(120)),
        qmp_socket: None,
    }
}

fn spec(cmd: &str) -> RunSpec {
    RunSpec {
        cmd: vec![cmd.to_string()],
        ..RunSpec::default()
    }
}

#[test]
fn echo_and_exit_status() {
    let mut out = Vec::new();
    let status = run_with(
        cache(),
        &spec("echo hello-from-guest; exit 3"),
        &opts(),
        &mut out,
    )
    .unwrap();
    assert_eq!(status, 3);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("hello-from-guest\n"), "{out}");
    assert!(!out.contains("yun-exit"), "{out}");
}

#[test]
fn cpus_and_memory_reach_the_guest() {
    let s = RunSpec {
        cpus: 2,
        memory_mib: 192,
        ..spec("nproc; grep MemTotal /proc/meminfo")
    };
    let mut out = Vec::new();
    assert_eq!(run_with(cache(), &s, &opts(), &mut out).unwrap(), 0);
    let out = String::from_utf8_lossy(&out);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("2"), "{out}");
    let kb: u64 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        kb > 140 * 1024 && kb <= 192 * 1024,
        "MemTotal {kb} kB for 192 MiB"
    );
}

#[test]
fn qmp_pause_and_resume() {
    let dir = tmp();
    let sock = dir.path().join("qmp.sock");
    let o = RunOptions {
        qmp_socket: Some(sock.clone()),
        ..opts()
    };
    let vm = std::thread::spawn(move || {
        let mut out = Vec::new();
        let status = run_with(cache(), &spec("sleep 1; echo after-resume"), &o, &mut out);
        (status, out)
    });
    let mut qmp = Qmp::connect(&sock, Duration::from_secs(60)).unwrap();
    qmp.stop().unwrap();
    let st = qmp.query_status().unwrap();
    assert!(!st.running);
    assert_eq!(st.status, "paused");
    std::thread::sleep(Duration::from_millis(300));
    qmp.cont().unwrap();
    assert!(qmp.query_status().unwrap().running);
    let (status, out) = vm.join().unwrap();
    assert_eq!(status.unwrap(), 0);
    assert!(String::from_utf8_lossy(&out).contains("after-resume"));
    assert!(!sock.exists(), "QMP socket left behind");
}

#[test]
fn bad_input_is_one_clear_error() {
    let dir = tmp();
    let missing = RunSpec {
        kernel: Some(dir.path().join("nope")),
        ..spec("true")
    };
    let e = run_with(dir.path(), &missing, &opts(), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("kernel") && e.contains("no such file"), "{e}");
    let zero = RunSpec {
        memory_mib: 0,
        ..spec("true")
    };
    let e = run_with(dir.path(), &zero, &opts(), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("memory 0 MiB"), "{e}");
    let huge = RunSpec {
        memory_mib: u32::MAX,
        ..spec("true")
    };
    let e = run_with(dir.path(), &huge, &opts(), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("available"), "{e}");
    let cpus = RunSpec {
        cpus: 0,
        ..spec("true")
    };
    assert!(run_with(dir.path(), &cpus, &opts(), &mut Vec::new()).is_err());
    // nothing was created for the failed runs
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
