//! yunc against the real kernel: isolation, limits, privileges, lifecycle.
//! Needs root (as the README's test command runs it).

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

#[test]
fn every_requested_namespace_is_new_and_process_is_pid_1() {
    let env = Env::new("ns");
    let b = env.bundle(
        "b",
        &sh("for n in pid mnt uts ipc net cgroup; do echo $n $(stat -L -c %i /proc/self/ns/$n); done; echo pid=$$; hostname"),
        |c| c["hostname"] = "yun-box".into(),
    );
    let out = env.run_ok(&env.id("c"), &b);
    for n in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        let host = std::fs::metadata(format!("/proc/self/ns/{n}"))
            .unwrap()
            .ino();
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap();
        let inside: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert_ne!(inside, host, "{n} namespace is the host's");
    }
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("yun-box"), "{out}");
}

#[test]
fn masked_and_readonly_paths() {
    let env = Env::new("paths");
    // Mask one directory and one file that exist on every kernel, plus the defaults.
    let b = env.bundle(
        "b",
        &sh("cat /proc/version | wc -c; ls /sys/kernel | wc -l; echo x > /proc/sys/kernel/domainname && echo WROTE; echo end"),
        |c| {
            let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
            masked.push("/proc/version".into());
            masked.push("/sys/kernel".into());
        },
    );
    let (code, out, err) = env.run(&env.id("c"), &b);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "masked file readable: {out}");
    assert_eq!(lines.next(), Some("0"), "masked directory not empty: {out}");
    assert!(!out.contains("WROTE"), "/proc/sys writable: {out}");
    assert!(err.contains("Read-only file system"), "{err}");
}

#[test]
fn capabilities_are_dropped() {
    let env = Env::new("caps");
    let b = env.bundle(
        "b",
        &sh("grep -E 'Cap(Eff|Bnd|Prm|Amb)' /proc/self/status"),
        |_| {},
    );
    let out = env.run_ok(&env.id("c"), &b);
    // AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10): runc's default set.
    let want = format!("{:016x}", (1u64 << 29) | (1 << 5) | (1 << 10));
    for set in ["CapEff", "CapBnd", "CapPrm"] {
        let line = out.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with(&want), "{set}: {line}");
    }
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
}

#[test]
fn seccomp_returns_the_configured_errno() {
    let env = Env::new("seccomp");
    let b = env.bundle("b", &sh("mkdir /tmp/x; echo rc=$?; echo still-alive"), |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
        });
    });
    let out = env.run_ok(&env.id("c"), &b);
    // errno 42 is ENOMSG.
    assert!(out.contains("rc=1") && out.contains("still-alive"), "{out}");
    let b2 = env.bundle("b2", &sh("mkdir /tmp/y 2>&1; true"), |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
        });
    });
    let out = env.run_ok(&env.id("c2"), &b2);
    assert!(out.contains("No message of desired type"), "{out}");
}

#[test]
fn memory_limit_stops_an_allocation_and_reports_oom() {
    let env = Env::new("oom");
    // tmpfs pages are charged to the writer's memory cgroup.
    let b = env.bundle(
        "b",
        &sh("dd if=/dev/zero of=/dev/shm/fill bs=1M count=60 2>/dev/null; echo rc=$?"),
        |c| {
            c["linux"]["resources"]["memory"] =
                json!({"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024});
        },
    );
    let (code, out, err) = env.run(&env.id("c"), &b);
    assert_eq!(code, 0, "{err}");
    // dd, not the shell, is the biggest process: the OOM killer picks it (SIGKILL, 128+9).
    assert!(
        out.contains("rc=137"),
        "allocation above the limit was not stopped: {out}"
    );
    assert!(err.contains("OOM"), "OOM not reported: {err}");
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let env = Env::new("pids");
    let limit = |c: &mut serde_json::Value| c["linux"]["resources"]["pids"] = json!({"limit": 10});
    let b = env.bundle("b", &sh("cat /sys/fs/cgroup/pids/pids.max"), limit);
    assert_eq!(env.run_ok(&env.id("c"), &b), "10\n");
    // busybox sh gives up (exit 2) when fork fails.
    let b = env.bundle(
        "b2",
        &sh("i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; echo all-forked"),
        limit,
    );
    let (code, out, err) = env.run(&env.id("c2"), &b);
    assert!(
        !out.contains("all-forked"),
        "forks beyond the limit succeeded"
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("can't fork"), "{err}");
}

#[test]
fn rlimits_are_applied() {
    let env = Env::new("rlimit");
    let b = env.bundle("b", &sh("ulimit -Sn; ulimit -Hn"), |c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]);
    });
    assert_eq!(env.run_ok(&env.id("c"), &b), "123\n456\n");
}

#[test]
fn user_namespace_maps_ids() {
    let env = Env::new("userns");
    let b = env.bundle(
        "b",
        &sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/f && stat -c %u /tmp/f"),
        |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            c["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        },
    );
    let out = env.run_ok(&env.id("c"), &b);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        &words[..6],
        ["0", "100000", "65536", "0", "100000", "65536"],
        "{out}"
    );
    assert_eq!(words[6], "0", "{out}");
}

#[test]
fn user_and_cwd_and_env_and_umask() {
    let env = Env::new("user");
    let b = env.bundle("b", &sh("id; pwd; echo $YUN_X; umask"), |c| {
        c["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
        c["process"]["cwd"] = "/home/yun".into();
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("YUN_X=hello".into());
    });
    let out = env.run_ok(&env.id("c"), &b);
    assert!(
        out.starts_with("uid=1000(yun) gid=1000(yun) groups=10,20"),
        "{out}"
    );
    assert!(out.contains("/home/yun\nhello\n0077"), "{out}");
}

#[test]
fn exit_codes_propagate() {
    let env = Env::new("exit");
    let b = env.bundle("b", &sh("exit 3"), |_| {});
    assert_eq!(env.run(&env.id("c"), &b).0, 3);
    // Killed by a signal: 128 + N. (A pid-1 shell ignores its own kill -9: kill from outside.)
    let id = env.id("c2");
    let b = env.bundle("b2", &["/bin/sleep", "30"], |_| {});
    let mut child = env
        .yunc_cmd(&["run", "-b", b.to_str().unwrap(), &id])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env
        .yunc(&["state", &id])
        .stdout
        .windows(7)
        .any(|w| w == b"running")
    {
        assert!(Instant::now() < deadline, "container never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(env.yunc(&["kill", &id, "9"]).status.success());
    assert_eq!(child.wait().unwrap().code(), Some(137));
}

#[test]
fn foreground_run_forwards_signals() {
    let env = Env::new("signal");
    let b = env.bundle(
        "b",
        &sh("trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.05; done"),
        |_| {},
    );
    let mut child = env
        .yunc_cmd(&["run", "-b", b.to_str().unwrap(), &env.id("c")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(42), "{rest}");
    assert!(rest.contains("got-term"));
}

#[test]
fn create_start_exec_pause_resume_kill_delete() {
    let env = Env::new("life");
    let id = env.id("c");
    let b = env.bundle("b", &["/bin/sleep", "60"], |_| {});
    let pid_file = env.dir.join("pid");
    assert!(env.yunc_detached(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id
    ]));
    let st = env.state(&id);
    assert_eq!(st["status"], "created");
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(st["pid"], pid);
    // CVE-2019-5736: nothing from the image may run while the init still runs yunc.
    assert_fails_with(
        &env.yunc(&["exec", &id, "/bin/true"]),
        "exec needs it running",
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Uid:\t0\t0\t0\t0"));

    assert!(env.yunc_detached(&["start", &id]));
    assert_eq!(env.state(&id)["status"], "running");
    let out = env.yunc(&["exec", &id, "sh", "-c", "echo in-$(hostname); exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-yun\n");

    // exec --process with a file, detached, with a pid file.
    let proc_file = env.dir.join("process.json");
    std::fs::write(
        &proc_file,
        json!({"args": ["/bin/sleep", "30"], "cwd": "/", "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .unwrap();
    let exec_pid = env.dir.join("exec.pid");
    assert!(env.yunc_detached(&[
        "exec",
        "--process",
        proc_file.to_str().unwrap(),
        "-d",
        "--pid-file",
        exec_pid.to_str().unwrap(),
        &id
    ]));
    let out = env.yunc(&["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap();
    let epid: i64 = std::fs::read_to_string(&exec_pid).unwrap().parse().unwrap();
    assert!(pids.contains(&pid) && pids.contains(&epid), "{pids:?}");
    // Init and exec'd process entered the container's cgroup in every hierarchy, the v1 ones
    // by themselves and the cgroup2 one at birth (cgroups::entry), not just the ones ps reads.
    let init_cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let own = format!("/yun/{id}");
    assert!(
        init_cgroups.lines().all(|l| l.ends_with(&own)),
        "{init_cgroups}"
    );
    let exec_cgroups = std::fs::read_to_string(format!("/proc/{epid}/cgroup")).unwrap();
    assert_eq!(exec_cgroups, init_cgroups);

    assert!(env.yunc(&["pause", &id]).status.success());
    assert_eq!(env.state(&id)["status"], "paused");
    // The container's cgroup (default path /yun/ID) is frozen, not just reported paused.
    let freezer =
        std::fs::read_to_string(format!("/sys/fs/cgroup/freezer/yun/{id}/freezer.state")).unwrap();
    assert_eq!(freezer.trim(), "FROZEN");
    assert!(env.yunc(&["resume", &id]).status.success());
    assert_eq!(env.state(&id)["status"], "running");

    let stats = env.yunc(&["events", "--stats", &id]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["type"], "stats");
    assert!(v["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert_eq!(v["data"]["pids"]["current"], 2);

    let out = env.yunc(&["delete", &id]);
    assert_fails_with(&out, "running");
    assert!(env.yunc(&["kill", &id, "KILL"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.state(&id)["status"] != "stopped" {
        assert!(Instant::now() < deadline, "container did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(env.yunc(&["delete", &id]).status.success());
    assert!(!env.root.join(&id).exists());
    assert!(
        cgroup_dirs_named(&id).is_empty(),
        "{:?}",
        cgroup_dirs_named(&id)
    );
}

#[test]
fn console_socket_receives_the_pty_master() {
    use std::os::unix::net::UnixListener;
    let env = Env::new("tty");
    let id = env.id("c");
    let b = env.bundle("b", &sh("tty; echo tty-ok"), |c| {
        c["process"]["terminal"] = true.into()
    });
    let sock = env.dir.join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        yun_runtime::console::recv_fd(&conn).unwrap()
    });
    assert!(env.yunc_detached(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        &id
    ]));
    let master = receiver.join().unwrap();
    assert!(env.yunc(&["start", &id]).status.success());
    let mut f = std::fs::File::from(master);
    let mut text = String::new();
    let mut buf = [0u8; 256];
    // EIO once the container's side is closed.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        text.contains("/dev/pts/0") && text.contains("tty-ok"),
        "{text:?}"
    );
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let env = Env::new("hooks");
    let id = env.id("c");
    let log_dir = env.dir.join("log");
    std::fs::create_dir(&log_dir).unwrap();
    let host_log = log_dir.join("hooks.log");
    let hook = |name: &str, log: &Path| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r s; echo \"{name} $s\" >> {}", log.display())], "timeout": 5});
    let inside = Path::new("/hooklog/hooks.log");
    let b = env.bundle("b", &sh("echo main"), |c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooklog", "type": "bind", "source": log_dir, "options": ["rbind"]}));
        c["hooks"] = json!({
            "prestart": [hook("prestart", &host_log)],
            "createRuntime": [hook("createRuntime", &host_log)],
            "createContainer": [hook("createContainer", &host_log)],
            "startContainer": [hook("startContainer", inside)],
            "poststart": [hook("poststart", &host_log)],
            "poststop": [hook("poststop", &host_log)],
        });
    });
    env.run_ok(&id, &b);
    let log = std::fs::read_to_string(&host_log).unwrap();
    let names: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{log}"
    );
    for line in log.lines() {
        let state: serde_json::Value =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(state["id"], id.as_str());
        assert!(state["bundle"].as_str().unwrap().ends_with("/b"));
    }
    assert!(log.contains("\"status\":\"creating\"") && log.contains("\"status\":\"stopped\""));
}

#[test]
fn a_failing_hook_fails_create_and_leaves_nothing() {
    let env = Env::new("hookfail");
    let id = env.id("c");
    let b = env.bundle("b", &["/bin/true"], |c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}]});
    });
    let out = env.yunc(&["create", "-b", b.to_str().unwrap(), &id]);
    assert_fails_with(&out, "hooks.createRuntime[0]");
    assert!(String::from_utf8_lossy(&out.stderr).contains("boom"));
    assert!(!env.root.join(&id).exists());
    assert!(cgroup_dirs_named(&id).is_empty());
}

#[test]
fn joins_a_network_namespace_by_path() {
    let env = Env::new("joinns");
    let ns = format!("yun-test-{}", std::process::id());
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    struct NsGuard(String);
    impl Drop for NsGuard {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
    let _g = NsGuard(ns.clone());
    let path = format!("/var/run/netns/{ns}");
    let want = std::fs::metadata(&path).unwrap().ino();
    let b = env.bundle("b", &sh("stat -L -c %i /proc/self/ns/net"), |c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "network" {
                n["path"] = path.clone().into();
            }
        }
    });
    let out = env.run_ok(&env.id("c"), &b);
    assert_eq!(out.trim(), want.to_string());
}

#[test]
fn no_host_fd_reaches_the_container_and_cwd_must_be_inside() {
    let env = Env::new("fds");
    let b = env.bundle("b", &sh("ls /proc/self/fd | tr '\\n' ' '"), |_| {});
    let out = env.run_ok(&env.id("c"), &b);
    // 0 1 2, and 3 is ls' own directory fd.
    assert_eq!(out.trim(), "0 1 2 3", "{out}");
    // CVE-2024-21626: a cwd through /proc/self/fd must not land on a host directory.
    for fd in 3..8 {
        let b = env.bundle(&format!("cwd{fd}"), &["/bin/pwd"], |c| {
            c["process"]["cwd"] = format!("/proc/self/fd/{fd}").into()
        });
        let (code, out, _) = env.run(&env.id(&format!("cwd{fd}")), &b);
        assert!(
            code != 0
                || !out.contains("(unreachable)")
                    && !out.starts_with("/sys")
                    && !out.starts_with("/run"),
            "fd {fd}: {out}"
        );
    }
}

#[test]
fn a_container_sharing_a_pid_namespace_gets_a_sealed_runtime_copy() {
    // CVE-2019-5736: joining a pid namespace, the waiting init is visible to what already
    // runs there, so it must not run the host's yunc binary.
    let env = Env::new("memfd");
    let host = env.id("host");
    let b = env.bundle("host", &["/bin/sleep", "30"], |_| {});
    assert!(env.yunc_detached(&["run", "-d", "-b", b.to_str().unwrap(), &host]));
    let host_pid = env.state(&host)["pid"].as_i64().unwrap();
    let id = env.id("guest");
    let b = env.bundle("guest", &["/bin/true"], |c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "pid" {
                n["path"] = format!("/proc/{host_pid}/ns/pid").into();
            }
        }
    });
    assert!(env.yunc_detached(&["create", "-b", b.to_str().unwrap(), &id]));
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:yunc"),
        "{}",
        exe.display()
    );
    let host_exe = std::fs::read_link(format!("/proc/{host_pid}/exe")).unwrap();
    assert!(host_exe.ends_with("busybox"), "{}", host_exe.display());
}

#[test]
fn readonly_root() {
    let env = Env::new("roroot");
    let b = env.bundle(
        "b",
        &sh("touch /x 2>&1; touch /dev/shm/ok && echo tmpfs-ok"),
        |c| c["root"]["readonly"] = true.into(),
    );
    let out = env.run_ok(&env.id("c"), &b);
    assert!(
        out.contains("Read-only file system") && out.contains("tmpfs-ok"),
        "{out}"
    );
}

#[test]
fn failing_poststart_and_poststop_hooks_warn_and_the_rest_still_run() {
    let env = Env::new("posthooks");
    let log = env.dir.join("hooks.log");
    let fail = json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 9"]});
    let record = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", log.display())]});
    let b = env.bundle("b", &["/bin/true"], |c| {
        c["hooks"] = json!({
            "poststart": [fail.clone(), record("poststart-2")],
            "poststop": [fail.clone(), record("poststop-2"), fail.clone()],
        });
    });
    let (code, _, err) = env.run(&env.id("c"), &b);
    assert_eq!(code, 0, "{err}");
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got, "poststart-2\npoststop-2\n", "stderr: {err}");
    for warned in [
        "hooks.poststart[0]",
        "hooks.poststop[0]",
        "hooks.poststop[2]",
    ] {
        assert!(err.contains(warned), "no warning for {warned}: {err}");
    }
}

#[test]
fn config_devices_are_made_under_a_deny_all_device_cgroup() {
    // runc order: nodes first, rules after; the rules still hold for the container.
    let env = Env::new("denyall");
    let b = env.bundle(
        "b",
        &sh("ls -l /dev/yunkmsg; head -c1 /dev/yunkmsg; echo rc=$?; echo x > /dev/null && echo null-ok"),
        |c| {
            c["linux"]["devices"] = json!([
                {"path": "/dev/yunkmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o600}
            ]);
            c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
        },
    );
    let (code, out, err) = env.run(&env.id("c"), &b);
    assert_eq!(code, 0, "stdout={out} stderr={err}");
    assert!(
        out.starts_with("crw-------") && out.contains("1,  11"),
        "{out}"
    );
    assert!(
        out.contains("rc=1") && err.contains("Operation not permitted"),
        "{out} {err}"
    );
    assert!(out.contains("null-ok"), "{out}");
}

#[test]
fn a_config_bigger_than_a_socket_buffer_still_creates() {
    // 1 MiB of annotations reach the hooks' state through the create channel: one datagram
    // of that size used to fail with EMSGSIZE.
    let env = Env::new("bigann");
    let log = env.dir.join("state.json");
    let b = env.bundle("b", &["/bin/true"], |c| {
        c["annotations"] = json!({"yun.big": "y".repeat(1 << 20)});
        c["hooks"] = json!({"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", log.display())]}]});
    });
    env.run_ok(&env.id("c"), &b);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert_eq!(
        state["annotations"]["yun.big"].as_str().unwrap().len(),
        1 << 20
    );
}

/// A container's state (it holds the whole config) is root's alone; the root yunc makes can be
/// traversed (the container's user reaches its fifo) but not listed.
#[test]
fn state_files_are_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("statemode");
    let b = env.bundle("b", &["sleep", "30"], |_| {});
    let id = env.id("c");
    // The waiting init holds create's stdio: let it go nowhere.
    assert!(env.yunc_detached(&["create", "-b", b.to_str().unwrap(), &id]));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.root), 0o711);
    let state = env.root.join(&id).join("state.json");
    assert_eq!(mode(&state), 0o600);
    let as_nobody = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!as_nobody.status.success(), "nobody read the state");
    let _ = env.yunc(&["delete", "-f", &id]);
}
