//! Shared harness for tests that run real containers through the `yunc` binary.
//!
//! Every test gets its own state root (`/run/yunc-test-…`) and bundle directory
//! (`/tmp/yun-test-…`); a guard force-deletes its containers and removes both on drop, so a
//! failing assertion leaves nothing behind.

#![allow(dead_code)]

pub mod kubectl;
pub mod plane;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub const YUNC: &str = env!("CARGO_BIN_EXE_yunc");
pub const YUN: &str = env!("CARGO_BIN_EXE_yun");

static N: AtomicUsize = AtomicUsize::new(0);

/// The busybox image, built once (kept in cargo's test scratch dir) and shared by bundles.
pub fn shared_rootfs() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs");
        yun_runtime::bundle::build_busybox_rootfs(&p).expect("build busybox rootfs");
        p
    })
    .clone()
}

pub struct Env {
    pub root: PathBuf,
    pub dir: PathBuf,
    pub name: String,
}

impl Env {
    pub fn new(name: &str) -> Env {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{name}-{}-{n}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/yun-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Env {
            root: PathBuf::from(format!("/run/yunc-test-{tag}")),
            dir,
            name: tag,
        }
    }

    /// A container id unique to this test run.
    pub fn id(&self, suffix: &str) -> String {
        format!("yun-{}-{suffix}", self.name)
    }

    /// A bundle running `args` on the shared busybox rootfs; `edit` adjusts config.json.
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.dir.join(name);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        yun_runtime::bundle::create_busybox_bundle(&b, &args, Some(&shared_rootfs())).unwrap();
        let path = b.join("config.json");
        let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        b
    }

    pub fn yunc(&self, args: &[&str]) -> Output {
        self.yunc_cmd(args).output().unwrap()
    }

    /// For commands that leave a container running (`run -d`, `start`): the container would
    /// hold captured pipes open, so its stdio goes nowhere. Returns success.
    pub fn yunc_detached(&self, args: &[&str]) -> bool {
        self.yunc_cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    pub fn yunc_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(YUNC);
        c.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// `yunc run` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&self, id: &str, bundle: &Path) -> (i32, String, String) {
        let out = self.yunc(&["run", "-b", bundle.to_str().unwrap(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run and insist on success; returns stdout.
    pub fn run_ok(&self, id: &str, bundle: &Path) -> String {
        let (code, out, err) = self.run(id, bundle);
        assert_eq!(code, 0, "container {id} failed: stdout={out} stderr={err}");
        out
    }

    pub fn state(&self, id: &str) -> Value {
        let out = self.yunc(&["state", id]);
        assert!(
            out.status.success(),
            "state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.yunc(&["delete", "--force", &id]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Expect failure with one line on stderr containing `needle`.
pub fn assert_fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout={}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "exit code; stderr={err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
}

/// Cgroup directories anywhere whose name contains `needle`.
pub fn cgroup_dirs_named(needle: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, needle: &str, depth: usize, out: &mut Vec<PathBuf>) {
        if depth > 6 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                if e.file_name().to_string_lossy().contains(needle) {
                    out.push(p.clone());
                }
                walk(&p, needle, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), needle, 0, &mut out);
    out
}

/// A loopback port free right now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something listens on `addr` (a server the test just started).
pub fn wait_for_port(addr: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Wait until a server the test started has written `path` (its kubeconfig is written after
/// its port opens).
pub fn wait_for_file(path: &Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} wrote no {path:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Lazily unmount every mount at or below any of `dirs` (deepest first).
pub fn unmount_under(dirs: &[&Path]) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| dirs.iter().any(|d| m.starts_with(d.to_str().unwrap())))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Run a shell command line under script(1), which gives it a terminal as a user at a
/// shell has; returns (success, what it printed).
pub fn in_terminal(cmd: &str) -> (bool, String) {
    let out = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// tests/tools/images.py: images made by Python's tarfile and urllib, not by yun.
pub fn images_py(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/images.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "images.py {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bad layers of images.py, each with what yun's one-line refusal must say.
pub const BAD_LAYERS: [(&str, &str); 7] = [
    (
        "dotdot",
        r#"layer entry "../../yun-escape": path escapes the layer root with "..""#,
    ),
    (
        "hardlink-outside",
        r#"hard link target "../../../etc/passwd": path escapes the layer root"#,
    ),
    (
        "hardlink-through-symlink",
        r#"hard link target "s/passwd" goes through a symlink"#,
    ),
    (
        "whiteout-empty",
        r#"layer entry "d/.wh.": invalid whiteout name"#,
    ),
    (
        "whiteout-dir",
        r#"invalid whiteout: ".wh.d" is used as a directory"#,
    ),
    ("diffid-mismatch", "but the image config says"),
    (
        "truncated-gzip",
        "read layer tar: incomplete deflate stream",
    ),
];

/// After a refused image: nothing of it in the data dir. No image record, no blob, no
/// unpacked layer (nor its lock), no partial download, no temp file.
pub fn assert_nothing_stored(data: &Path) {
    let images = std::fs::read_to_string(data.join("images/images.json")).unwrap_or_default();
    assert!(
        !images.contains("sha256:"),
        "an image was recorded: {images}"
    );
    for dir in ["images/blobs/sha256", "snapshots/layers", "images/partial"] {
        let left: Vec<String> = std::fs::read_dir(data.join(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    let mut stack = vec![data.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".yun-tmp-"),
                "temp file {}",
                e.path().display()
            );
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
}
