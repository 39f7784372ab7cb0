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
    let out = env.yunc(&["create", "-b", b.to_str().unwrap(), &id]);
    assert_fails_with(&out, needle);
    assert!(!env.root.join(&id).exists(), "state directory left behind");
    assert!(cgroup_dirs_named(&id).is_empty(), "cgroup left behind");
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
