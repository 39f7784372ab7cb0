//! The rest of runc's command line: features, logging, list, the `yun runtime` alias,
//! --no-pivot, config devices, the time namespace, hook timeouts, the foreground terminal
//! and OOM events.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

#[test]
fn features_describe_the_runtime() {
    let env = Env::new("features");
    let out = env.yunc(&["features"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for n in [
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
    ] {
        assert!(ns.contains(&n), "{n}");
    }
    assert_eq!(v["linux"]["seccomp"]["enabled"], true);
    assert!(v["linux"]["seccomp"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "SCMP_ACT_ERRNO"));
    assert!(v["hooks"].as_array().unwrap().len() == 6);
    let version = env.yunc(&["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("yunc version"));
}

#[test]
fn errors_go_to_the_log_file_as_runc_json() {
    let env = Env::new("log");
    let log = env.dir.join("log.json");
    let out = env.yunc(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "delete",
        "yun-nope",
    ]);
    assert_fails_with(&out, "does not exist");
    let line = std::fs::read_to_string(&log).unwrap();
    let v: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("does not exist"));
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn yun_runtime_is_the_same_runtime_and_list_formats() {
    let env = Env::new("alias");
    let id = env.id("c");
    let b = env.bundle("b", &["/bin/sleep", "30"], |_| {});
    let status = Command::new(YUN)
        .args([
            "runtime",
            "--root",
            env.root.to_str().unwrap(),
            "run",
            "-d",
            "-b",
            b.to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let out = env.yunc(&["list", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["status"], "running");
    let out = env.yunc(&["list", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    let out = env.yunc(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ID") && text.contains(&id) && text.contains("running"),
        "{text}"
    );
    let out = env.yunc(&["ps", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("sleep 30"));
}

#[test]
fn no_pivot_config_devices_and_time_namespace() {
    let env = Env::new("misc");
    let out = env.yunc(&[
        "run",
        "--no-pivot",
        "-b",
        env.bundle("b", &sh("stat -c '%t:%T %a %u' /dev/yun-null; echo x > /dev/yun-null && echo wrote; cut -d. -f1 /proc/uptime"), |c| {
            c["linux"]["devices"] = json!([{"path": "/dev/yun-null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 0, "gid": 1000}]);
            c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]);
            c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
            c["linux"]["timeOffsets"] = json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}});
        })
        .to_str()
        .unwrap(),
        &env.id("c"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("1:3 640 0"));
    assert_eq!(lines.next(), Some("wrote"));
    let uptime: u64 = lines.next().unwrap().parse().unwrap();
    assert!(
        uptime >= 86400 * 365,
        "boottime offset not applied: {uptime}"
    );
}

#[test]
fn a_hook_that_hangs_times_out() {
    let env = Env::new("hooktimeout");
    let id = env.id("c");
    let b = env.bundle("b", &["/bin/true"], |c| {
        c["hooks"] = json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    });
    let start = Instant::now();
    let out = env.yunc(&["create", "-b", b.to_str().unwrap(), &id]);
    assert_fails_with(&out, "timed out after 1s");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!env.root.join(&id).exists());
}

#[test]
fn foreground_terminal_is_proxied() {
    let env = Env::new("fgtty");
    let b = env.bundle("b", &sh("tty; echo fg-tty-ok"), |c| {
        c["process"]["terminal"] = true.into()
    });
    let cmd = format!(
        "{YUNC} --root {} run -b {} {}",
        env.root.display(),
        b.display(),
        env.id("c")
    );
    let (ok, text) = in_terminal(&cmd);
    assert!(ok, "{text}");
    assert!(
        text.contains("/dev/pts/0") && text.contains("fg-tty-ok"),
        "{text:?}"
    );
}

#[test]
fn events_stream_reports_oom() {
    let env = Env::new("events");
    let id = env.id("c");
    let b = env.bundle(
        "b",
        &sh("sleep 1; dd if=/dev/zero of=/dev/shm/fill bs=1M count=60 2>/dev/null; sleep 30"),
        |c| {
            c["linux"]["resources"]["memory"] =
                json!({"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024});
        },
    );
    assert!(env.yunc_detached(&["run", "-d", "-b", b.to_str().unwrap(), &id]));
    let mut events = env
        .yunc_cmd(&["events", "--interval", "1s", &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(events.stdout.take().unwrap());
    let mut kinds = Vec::new();
    for line in reader.lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        kinds.push(v["type"].as_str().unwrap().to_string());
        if v["type"] == "oom" || kinds.len() > 20 {
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(kinds.first().map(String::as_str), Some("stats"));
    assert!(kinds.iter().any(|k| k == "oom"), "{kinds:?}");
}

#[test]
fn a_root_on_ramfs_falls_back_to_chroot() {
    let env = Env::new("ramfs");
    let root = env.dir.join("ramfs-root");
    std::fs::create_dir(&root).unwrap();
    nix::mount::mount(
        Some("ramfs"),
        &root,
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _u = Unmount(root.clone());
    let copy = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", shared_rootfs().display()))
        .arg(&root)
        .status()
        .unwrap();
    assert!(copy.success());
    let b = env.bundle(
        "b",
        &sh("echo on-ramfs; cat /proc/self/mountinfo | wc -l"),
        |c| c["root"]["path"] = root.to_str().unwrap().into(),
    );
    let out = env.run_ok(&env.id("c"), &b);
    assert!(out.starts_with("on-ramfs\n"), "{out}");
}

#[test]
fn run_keep_waits_and_keeps_the_stopped_container() {
    let env = Env::new("keep");
    let id = env.id("c");
    let b = env.bundle("b", &sh("echo kept; exit 4"), |_| {});
    let out = env.yunc(&["run", "--keep", "-b", b.to_str().unwrap(), &id]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "--keep must still wait for the exit"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    assert_eq!(env.state(&id)["status"], "stopped");
    assert!(env.yunc(&["delete", &id]).status.success());
    assert!(cgroup_dirs_named(&id).is_empty());
}
