//! podman as the client: Debian's podman (with conmon) drives yunc through `--runtime`.
//!
//! One test runs the scenarios in order on a private podman storage (`/var/lib/yun-test-…`,
//! `/run/yun-test-…`) and a private cgroup parent; the guard removes all of it, even when a
//! scenario fails.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

struct Podman {
    storage: PathBuf,
    runroot: PathBuf,
    cgroup_parent: String,
    conf: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        let tag = format!("yun-test-podman-{}", std::process::id());
        let conf = PathBuf::from(format!("/tmp/{tag}.conf"));
        // podman asks for RLIMIT_NOFILE above this host's hard limit (20000) by default.
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman {
            storage: PathBuf::from(format!("/var/lib/{tag}")),
            runroot: PathBuf::from(format!("/run/{tag}")),
            cgroup_parent: format!("/{tag}"),
            conf,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(&self.storage)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--runtime")
            .arg(YUNC)
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run podman")
    }

    /// `podman run --rm` with our defaults; returns stdout, asserting success.
    fn run(&self, scenario: &str, flags: &[&str], script: &str) -> String {
        let mut args = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--cgroup-parent",
            &self.cgroup_parent,
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["yun-busybox", "sh", "-c", script]);
        let out = self.podman(&args);
        assert!(
            out.status.success(),
            "{scenario}: podman {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["system", "reset", "--force"]);
        // Whatever podman left mounted under its storage, then the directories.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| {
                    m.starts_with(self.storage.to_str().unwrap())
                        || m.starts_with(self.runroot.to_str().unwrap())
                })
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.storage);
        let _ = std::fs::remove_dir_all(&self.runroot);
        let _ = std::fs::remove_file(&self.conf);
        // The cgroup parent: children first (conmon's and any container's), then itself.
        let name = self.cgroup_parent.trim_start_matches('/');
        let mut dirs = cgroup_dirs_named(name);
        for d in dirs.clone() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                dirs.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        dirs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

#[test]
fn podman_runs_containers_through_yunc() {
    assert!(
        Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "podman is not installed (the README's test command installs it)"
    );
    let p = Podman::new();

    // An image made with `podman import` from the busybox rootfs.
    let mut import = p
        .cmd(&["import", "-", "yun-busybox"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(shared_rootfs())
        .args(["-c", "."])
        .stdout(import.stdin.take().unwrap())
        .status()
        .unwrap();
    assert!(tar.success());
    let out = import.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = p.run(
        "basic",
        &[],
        "echo hello; hostname; cat /proc/1/cmdline | tr '\\0' ' '",
    );
    assert!(out.starts_with("hello\n"), "{out}");

    let out = p.run(
        "env, workdir, user",
        &["-e", "YUN_A=1", "-w", "/tmp", "-u", "1000:1000"],
        "echo $YUN_A; pwd; id -u; id -g",
    );
    assert_eq!(out, "1\n/tmp\n1000\n1000\n");

    let out = p.run(
        "read-only",
        &["--read-only"],
        "touch /x 2>&1; touch /tmp/ok && echo tmp-ok",
    );
    assert!(
        out.contains("Read-only file system") && out.contains("tmp-ok"),
        "{out}"
    );

    let out = p.run(
        "memory and pids",
        &["-m", "32m", "--pids-limit", "50"],
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
    );
    assert_eq!(out, "33554432\n50\n");

    let out = p.run("pseudo terminal", &["-t"], "tty; echo tty-done");
    assert!(
        out.contains("/dev/pts/0") && out.contains("tty-done"),
        "{out:?}"
    );

    let out = p.podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cgroup-parent",
        &p.cgroup_parent,
        "yun-busybox",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit code: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // -d, then exec, stop, rm.
    let name = format!("yun-d-{}", std::process::id());
    let out = p.podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--cgroup-parent",
        &p.cgroup_parent,
        "yun-busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    assert!(
        out.status.success(),
        "run -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p.podman(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo exec-ok; cat /proc/1/status | grep ^Name",
    ]);
    assert!(
        out.status.success(),
        "exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("exec-ok\n"));
    let out = p.podman(&["exec", &name, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = p.podman(&["stop", "-t", "5", &name]);
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p.podman(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "exited 0",
        "stopped by SIGTERM through yunc kill"
    );
    let out = p.podman(&["rm", &name]);
    assert!(
        out.status.success(),
        "rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A runtime error reaches the podman user.
    let out = p.podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cgroup-parent",
        &p.cgroup_parent,
        "yun-busybox",
        "/yun-no-such-program",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("yun-no-such-program"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
