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
            // podman's default tmpdir (/run/libpod) is shared by every podman on the host, and
            // another test's `system reset` would delete it under us.
            .arg("--tmpdir")
            .arg(self.runroot.join("tmp"))
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

    /// `podman ARGS`, insisting on success.
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `podman run` with this test's network and cgroup parent, then `rest`.
    fn run_args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            "--network",
            "none",
            "--cgroup-parent",
            &self.cgroup_parent,
        ];
        args.extend_from_slice(rest);
        args
    }

    /// `podman run --rm` with our defaults; returns stdout, asserting success.
    /// `podman run --rm FLAGS yun-busybox sh -c SCRIPT`; returns stdout, asserting success.
    fn run(&self, flags: &[&str], script: &str) -> String {
        let mut rest = vec!["--rm"];
        rest.extend_from_slice(flags);
        rest.extend_from_slice(&["yun-busybox", "sh", "-c", script]);
        String::from_utf8_lossy(&self.ok(&self.run_args(&rest)).stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["system", "reset", "--force"]);
        // Whatever podman left mounted under its storage, then the directories.
        unmount_under(&[&self.storage, &self.runroot]);
        let _ = std::fs::remove_dir_all(&self.storage);
        let _ = std::fs::remove_dir_all(&self.runroot);
        let _ = std::fs::remove_file(&self.conf);
        // podman gives its runtime `--root /run/<runtime name>`: yunc's default root, which
        // holds nothing once the containers are gone (rmdir leaves it if anything remains).
        let _ = std::fs::remove_dir("/run/yunc");
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
        &[],
        "echo hello; hostname; cat /proc/1/cmdline | tr '\\0' ' '",
    );
    assert!(out.starts_with("hello\n"), "{out}");

    let out = p.run(
        &["-e", "YUN_A=1", "-w", "/tmp", "-u", "1000:1000"],
        "echo $YUN_A; pwd; id -u; id -g",
    );
    assert_eq!(out, "1\n/tmp\n1000\n1000\n");

    let out = p.run(
        &["--read-only"],
        "touch /x 2>&1; touch /tmp/ok && echo tmp-ok",
    );
    assert!(
        out.contains("Read-only file system") && out.contains("tmp-ok"),
        "{out}"
    );

    let limits = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max";
    assert_eq!(
        p.run(&["-m", "32m", "--pids-limit", "50"], limits),
        "33554432\n50\n"
    );

    let out = p.run(&["-t"], "tty; echo tty-done");
    assert!(
        out.contains("/dev/pts/0") && out.contains("tty-done"),
        "{out:?}"
    );

    let out = p.podman(&p.run_args(&["--rm", "yun-busybox", "sh", "-c", "exit 7"]));
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // -d, then exec, stop, rm.
    let name = format!("yun-d-{}", std::process::id());
    let loop_until_term = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    p.ok(&p.run_args(&[
        "-d",
        "--name",
        &name,
        "yun-busybox",
        "sh",
        "-c",
        loop_until_term,
    ]));
    let out = p.ok(&["exec", &name, "sh", "-c", "echo exec-ok"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-ok\n");
    assert_eq!(
        p.podman(&["exec", &name, "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    p.ok(&["stop", "-t", "5", &name]);
    let out = p.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    // SIGTERM through `yunc kill` reached the trap: exit 0, not a SIGKILL after the timeout.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exited 0");
    p.ok(&["rm", &name]);

    // A runtime error reaches the podman user.
    let out = p.podman(&p.run_args(&["--rm", "yun-busybox", "/yun-no-such-program"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("yun-no-such-program"), "{err}");
}
