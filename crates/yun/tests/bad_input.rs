//! Bad input: one line naming the field and the cause, exit 1, and nothing left behind.

mod common;

use common::*;
use serde_json::json;

/// Create with `edit` applied to a good config; expect failure mentioning `needle` and no
/// state directory or cgroup afterwards.
fn refused(name: &str, edit: impl FnOnce(&mut serde_json::Value), needle: &str) {
    let env = Env::new(name);
    let id = env.id("c");
    let b = env.bundle("b", &["/bin/true"], edit);
    let out = output_via_files(&env, &["create", "-b", b.to_str().unwrap(), &id]);
    assert_fails_with(&out, needle);
    assert!(!env.root.join(&id).exists(), "state directory left behind");
    assert!(cgroup_dirs_named(&id).is_empty(), "cgroup left behind");
}

/// Run yunc with stdout and stderr in files: if a create wrongly succeeds, its waiting init
/// holds them open, and reading pipes would wait for it instead of failing the test.
fn output_via_files(env: &Env, args: &[&str]) -> std::process::Output {
    let out_path = env.dir.join("yunc.stdout");
    let err_path = env.dir.join("yunc.stderr");
    let status = env
        .yunc_cmd(args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

#[test]
fn unknown_namespace_type() {
    refused(
        "badns",
        |c| c["linux"]["namespaces"][0]["type"] = "bogus".into(),
        "linux.namespaces[0].type",
    );
}

#[test]
fn missing_root_path() {
    refused(
        "noroot",
        |c| c["root"] = json!({"path": ""}),
        "root.path: missing",
    );
}

#[test]
fn rootfs_does_not_exist() {
    refused(
        "norootfs",
        |c| c["root"]["path"] = "/nonexistent/yun".into(),
        "does not exist",
    );
}

#[test]
fn invalid_rlimit() {
    refused(
        "rlimit",
        |c| {
            c["process"]["rlimits"] =
                json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1048576}])
        },
        "RLIMIT_NOFILE",
    );
    refused(
        "rlimittype",
        |c| c["process"]["rlimits"] = json!([{"type": "RLIMIT_YUN", "soft": 1, "hard": 1}]),
        "process.rlimits[0].type",
    );
}

#[test]
fn uid_mappings_without_user_namespace() {
    refused(
        "maps",
        |c| c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]),
        "linux.uidMappings",
    );
}

#[test]
fn bad_seccomp_action() {
    refused(
        "secaction",
        |c| c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_YUN"}),
        "linux.seccomp.defaultAction",
    );
}

#[test]
fn missing_program_is_reported_at_create() {
    refused(
        "noexec",
        |c| c["process"]["args"] = json!(["/bin/yun-no-such-program"]),
        "no such executable",
    );
    refused(
        "nopath",
        |c| c["process"]["args"] = json!(["yun-no-such-program"]),
        "not found in $PATH",
    );
}

#[test]
fn malformed_json() {
    let env = Env::new("malformed");
    let b = env.bundle("b", &["/bin/true"], |_| {});
    std::fs::write(
        b.join("config.json"),
        "{\"ociVersion\": \"1.0.2\", \"process\": [",
    )
    .unwrap();
    let out = env.yunc(&["create", "-b", b.to_str().unwrap(), &env.id("c")]);
    assert_fails_with(&out, "config.json");
}

#[test]
fn duplicate_id_leaves_the_first_untouched() {
    let env = Env::new("dup");
    let id = env.id("c");
    let b = env.bundle("b", &["/bin/sleep", "30"], |_| {});
    assert!(env.yunc_detached(&["run", "-d", "-b", b.to_str().unwrap(), &id]));
    let before = env.state(&id);
    let out = env.yunc(&["create", "-b", b.to_str().unwrap(), &id]);
    assert_fails_with(&out, "already exists");
    let after = env.state(&id);
    assert_eq!(before["pid"], after["pid"]);
    assert_eq!(after["status"], "running");
}

#[test]
fn unknown_ids_and_bad_ids() {
    let env = Env::new("unknown");
    assert_fails_with(&env.yunc(&["kill", "yun-nope", "KILL"]), "does not exist");
    assert_fails_with(&env.yunc(&["delete", "yun-nope"]), "does not exist");
    assert_fails_with(&env.yunc(&["state", "yun-nope"]), "does not exist");
    assert_fails_with(&env.yunc(&["state", "../etc"]), "invalid container id");
}

#[test]
fn systemd_cgroup_is_refused() {
    let env = Env::new("systemd");
    assert_fails_with(&env.yunc(&["--systemd-cgroup", "list"]), "not supported");
}

#[test]
fn terminal_without_console_socket() {
    refused(
        "noconsole",
        |c| c["process"]["terminal"] = true.into(),
        "--console-socket",
    );
}

/// A data dir for `yun` alone, removed (with the store's mount) on drop.
struct YunData(std::path::PathBuf);

impl YunData {
    fn new(tag: &str) -> YunData {
        let p =
            std::path::PathBuf::from(format!("/tmp/yun-test-badimg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        YunData(p)
    }

    /// `yun --data-dir DIR/data-SUB ARGS`.
    fn yun(&self, sub: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(YUN)
            .arg("--data-dir")
            .arg(self.0.join(format!("data-{sub}")))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for YunData {
    fn drop(&mut self) {
        unmount_under(&[&self.0]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Archives made by Python's tarfile with a bad layer on a good one: `yun load` refuses each
/// with the entry (or the check) named, and stores nothing of it: not even the good layer's
/// blob or its unpacked copy, and `yun images` lists nothing.
#[test]
fn bad_layers_are_refused_by_load_and_leave_nothing() {
    let d = YunData::new("load");
    std::fs::create_dir_all(&d.0).unwrap();
    for (case, needle) in BAD_LAYERS {
        let archive = d.0.join(format!("{case}.tar"));
        images_py(&["archive", case, archive.to_str().unwrap()]);
        let out = d.yun(case, &["load", "-i", archive.to_str().unwrap()]);
        assert_fails_with(&out, needle);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&archive.display().to_string()),
            "{case}: {err}"
        );
        let images = d.yun(case, &["images", "-q"]);
        assert!(images.status.success());
        assert_eq!(String::from_utf8_lossy(&images.stdout), "", "{case}");
        assert_nothing_stored(&d.0.join(format!("data-{case}")));
    }
}

#[test]
fn ids_the_kernel_reads_as_unchanged_are_refused() {
    // (uid_t)-1 means "leave unchanged" to setresuid: the process would have kept root.
    refused(
        "uidmax",
        |c| c["process"]["user"]["uid"] = json!(4294967295u32),
        "process.user.uid 4294967295 is out of range 0..2147483647",
    );
    refused(
        "gidmax",
        |c| c["process"]["user"]["gid"] = json!(4294967295u32),
        "process.user.gid 4294967295 is out of range",
    );
    refused(
        "groupsmax",
        |c| c["process"]["user"]["additionalGids"] = json!([5, 4294967295u32]),
        "process.user.additionalGids[1] 4294967295 is out of range",
    );
    let env = Env::new("execuid");
    let id = env.id("c");
    let b = env.bundle("b", &["/bin/sleep", "30"], |_| {});
    assert!(env.yunc_detached(&["run", "-d", "-b", b.to_str().unwrap(), &id]));
    let proc_file = env.dir.join("process.json");
    std::fs::write(
        &proc_file,
        json!({"args": ["/bin/id", "-u"], "cwd": "/", "user": {"uid": 4294967295u32, "gid": 0}})
            .to_string(),
    )
    .unwrap();
    assert_fails_with(
        &output_via_files(
            &env,
            &["exec", "--process", proc_file.to_str().unwrap(), &id],
        ),
        "process.user.uid 4294967295 is out of range",
    );
    assert_fails_with(
        &output_via_files(&env, &["exec", "--user", "0:4294967295", &id, "/bin/id"]),
        "process.user.gid 4294967295 is out of range",
    );
    // Nothing of the refused execs runs: only the init is in the container.
    let out = env.yunc(&["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pids.len(), 1, "{pids:?}");
}

#[test]
fn a_config_above_the_size_limit_names_the_limit() {
    // 100 MB of annotation: once "sync send: EMSGSIZE" from deep inside create.
    refused(
        "bigconfig",
        |c| c["annotations"] = json!({"yun.big": "x".repeat(100 << 20)}),
        "is too large (the limit is 16777216 bytes, 16 MiB)",
    );
}

#[test]
fn a_failing_prestart_hook_is_reported_once() {
    // The init used to print the parent's error too; repeat, as that depended on timing.
    for i in 0..5 {
        refused(
            &format!("prestart{i}"),
            |c| c["hooks"] = json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo yun-hook-says-no >&2; exit 7"]}]}),
            "hooks.prestart[0] (/bin/sh): failed (exit status: 7): yun-hook-says-no",
        );
    }
}
