//! `yun vm run`: Debian's cloud kernel + yun's initramfs under QEMU, the guest command's
//! output on stdout and its exit status as ours.

mod common;

use std::process::{Command, Stdio};

#[test]
fn vm_run_returns_the_guest_status() {
    // The same kernel cache as yun-vmm's tests: fetched once per machine, reused after.
    let out = Command::new(common::YUN)
        .args([
            "--data-dir",
            "/var/cache/yun-test-kernel",
            "vm",
            "run",
            "--cpus",
            "2",
            "--memory",
            "192",
            "--",
            "sh",
            "-c",
            "echo in-guest; nproc; exit 7",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("in-guest\n2\n"), "{text:?}");
    let bad = Command::new(common::YUN)
        .args([
            "--data-dir",
            "/var/cache/yun-test-kernel",
            "vm",
            "run",
            "--memory",
            "0",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1
    );
}

/// A bridge yun creates for the test, deleted on drop (also when the test fails).
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn vm_run_net_joins_a_bridge_and_leaves_nothing() {
    let env = VmEnv::new();
    let bridge = Bridge(format!("yunvr{}", std::process::id() % 100_000));
    let (code, out, err) = env.yun(&[
        "run",
        "--kernel",
        &env.kernel,
        "--initrd",
        &env.initrd,
        "--net",
        "--bridge",
        &bridge.0,
        "--subnet",
        "10.213.94.0/24",
        "--",
        "ip -4 addr show eth0; ping -c 1 -W 10 10.213.94.1 >/dev/null && echo reached-gateway",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("inet 10.213.94.2/24"), "{out}");
    assert!(out.contains("reached-gateway"), "{out}");
    // The run's tap is gone from the bridge, and its address is free again.
    let ports = std::fs::read_dir(format!("/sys/class/net/{}/brif", bridge.0))
        .unwrap()
        .count();
    assert_eq!(ports, 0, "a tap is still on {}", bridge.0);
    let held = std::fs::read_dir(env.dir.path().join("net/10.213.94.0"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .count();
    assert_eq!(held, 0);

    one_line_error(
        env.yun(&["run", "--net", "--subnet", "10.0.0/8", "--", "true"]),
        "subnet: invalid IPv4 CIDR",
    );
    one_line_error(
        env.create(
            "yun-badbr",
            &["--net", "--bridge", "yun-name-far-too-long"],
            "true",
        ),
        "bridge:",
    );
    assert!(!env.yun(&["list"]).1.contains("yun-badbr"));
}

/// A temp data dir for managed VMs; every VM in it is force-removed on drop.
struct VmEnv {
    dir: tempfile::TempDir,
    kernel: String,
    initrd: String,
}

impl VmEnv {
    fn new() -> VmEnv {
        let cache = std::path::Path::new("/var/cache/yun-test-kernel");
        let k = yun_vmm::ensure_kernel(cache).unwrap();
        let i = yun_vmm::ensure_initramfs(cache, &k).unwrap();
        VmEnv {
            dir: tempfile::Builder::new()
                .prefix("yun-test-cli-vm-")
                .tempdir()
                .unwrap(),
            kernel: k.vmlinux.unwrap().display().to_string(),
            initrd: i.display().to_string(),
        }
    }

    fn yun(&self, args: &[&str]) -> (i32, String, String) {
        self.yun_env(args, &[])
    }

    fn yun_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = Command::new(common::YUN)
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("vm")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn create(&self, name: &str, extra: &[&str], cmd: &str) -> (i32, String, String) {
        let mut args = vec![
            "create",
            name,
            "--kernel",
            &self.kernel,
            "--initrd",
            &self.initrd,
        ];
        if !extra.contains(&"--memory") {
            args.extend_from_slice(&["--memory", "128"]);
        }
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", cmd]);
        self.yun(&args)
    }

    fn row(&self, name: &str) -> Vec<String> {
        let (_, out, _) = self.yun(&["list"]);
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in {out}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

impl Drop for VmEnv {
    fn drop(&mut self) {
        let (_, out, _) = self.yun(&["list", "--json"]);
        let vms: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        for vm in vms.as_array().into_iter().flatten() {
            if let Some(n) = vm.pointer("/config/name").and_then(|n| n.as_str()) {
                let _ = self.yun(&["rm", "-f", n]);
            }
        }
    }
}

fn one_line_error((code, out, err): (i32, String, String), want: &str) {
    assert_ne!(code, 0, "{out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(want), "want {want:?}: {err}");
}

#[test]
fn managed_vm_through_the_cli() {
    let env = VmEnv::new();
    let (code, out, err) = env.create(
        "yun-cli",
        &["--cpus", "2"],
        "echo hi-console; while true; do sleep 1; done",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "yun-cli");
    assert_eq!(env.row("yun-cli")[1], "defined");
    assert_eq!(env.yun(&["start", "yun-cli"]).0, 0);
    let row = env.row("yun-cli");
    assert_eq!(&row[1..4], ["running", "2", "128M"], "{row:?}");
    one_line_error(env.yun(&["start", "yun-cli"]), "already running");
    one_line_error(env.yun(&["resume", "yun-cli"]), "not paused");
    one_line_error(env.yun(&["restore", "yun-cli"]), "stop it before restoring");
    assert_eq!(env.yun(&["pause", "yun-cli"]).0, 0);
    assert_eq!(env.row("yun-cli")[1], "paused");
    assert_eq!(env.yun(&["resume", "yun-cli"]).0, 0);
    assert_eq!(env.row("yun-cli")[1], "running");
    // Not a terminal: console prints the log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !env.yun(&["console", "yun-cli"]).1.contains("hi-console") {
        assert!(std::time::Instant::now() < deadline, "no console output");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (code, stats, _) = env.yun(&["stats", "yun-cli"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(stats["supervisor_rss_kib"].as_u64().unwrap() > 0);
    assert_eq!(env.yun(&["stop", "--force", "yun-cli"]).0, 0);
    let row = env.row("yun-cli");
    assert_eq!((row[1].as_str(), row[6].as_str()), ("stopped", "stopped"));
    one_line_error(env.yun(&["restore", "yun-cli"]), "no snapshot");
    assert_eq!(env.yun(&["rm", "yun-cli"]).0, 0);
    assert!(!env.yun(&["list"]).1.contains("yun-cli"));
}

#[test]
fn managed_vm_bad_input() {
    let env = VmEnv::new();
    assert_eq!(env.create("yun-dup", &[], "true").0, 0);
    one_line_error(env.create("yun-dup", &[], "true"), "name already in use");
    one_line_error(
        env.create("yun-big", &["--memory", "100000000"], "true"),
        "more than the host's available",
    );
    one_line_error(
        env.create("yun-nodisk", &["--disk", "/nonexistent/yun.img"], "true"),
        "no such file",
    );
    one_line_error(
        env.create("yun-badopt", &["--disk", "/tmp/x,bogus"], "true"),
        "unknown option",
    );
    // QEMU missing: a PATH without it.
    one_line_error(
        env.yun_env(&["start", "yun-dup"], &[("PATH", "/nonexistent")]),
        "qemu-system-x86_64: not found in PATH",
    );
    one_line_error(env.yun(&["stop", "yun-dup"]), "not running");
    one_line_error(env.yun(&["balloon", "yun-dup", "64"]), "not running");
    one_line_error(env.yun(&["pause", "yun-nope"]), "no such VM");
    let (code, out, _) = env.yun(&["list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let machines = env.dir.path().join("vm/machines");
    assert_eq!(std::fs::read_dir(machines).unwrap().count(), 1);
}

#[test]
fn ksm_status_reports() {
    let (code, out, err) = VmEnv::new().yun(&["ksm", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ksm "), "{out}");
    assert!(out.contains("pages_sharing"), "{out}");
}

#[test]
fn vm_exec_runs_commands_through_vsock() {
    let env = VmEnv::new();
    let cache = std::path::Path::new("/var/cache/yun-test-kernel");
    let k = yun_vmm::ensure_kernel(cache).unwrap();
    let initrd = yun_vmm::ensure_initramfs_vsock(cache, &k).unwrap();
    let (code, _, err) = env.yun(&[
        "create",
        "yun-exec",
        "--kernel",
        &env.kernel,
        "--initrd",
        &initrd.to_string_lossy(),
        "--memory",
        "128",
        "--vsock",
        "--start",
        "--",
        "while true; do sleep 1; done",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = env.yun(&[
        "exec",
        "yun-exec",
        "--",
        "sh",
        "-c",
        "echo in-guest; exit 4",
    ]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(out, "in-guest\n");

    assert_eq!(env.create("yun-plain", &[], "true").0, 0);
    one_line_error(
        env.yun(&["exec", "yun-plain", "--", "true"]),
        "no vsock (create it with --vsock)",
    );
    one_line_error(env.yun(&["exec", "yun-nope", "--", "true"]), "no such VM");
}
