//! podman pulls an image from the registry and runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// podman with storage of its own under yun-named directories; dropping it resets that
/// storage, unmounts whatever is left mounted under it, and removes the directories.
struct Podman {
    dirs: Vec<PathBuf>,
    root: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        let id = std::process::id();
        let root = PathBuf::from(format!("/var/lib/yun-test-reg-{id}"));
        let runroot = PathBuf::from(format!("/run/yun-test-reg-{id}"));
        Podman {
            dirs: vec![root.clone(), runroot.clone()],
            root,
            runroot,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(self.runroot.join("tmp"))
            .args(["--storage-driver", "overlay"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            // crun refuses this host's hybrid cgroups; runc works.
            .args(["--runtime", "runc"]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        run(self.cmd().args(args))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["system", "reset", "-f"]).output();
        unmount_under(&self.dirs);
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Unmounts every mount point below `dirs`, deepest first.
fn unmount_under(dirs: &[PathBuf]) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| dirs.iter().any(|d| Path::new(p).starts_with(d)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

#[test]
fn podman_pulls_and_runs_busybox() {
    let tmp = temp_dir();
    let busybox = std::fs::read("/bin/busybox").expect("static busybox at /bin/busybox");
    let layer = tar_layer(&[File("bin/busybox", &busybox, 0o755)]);
    let src = oci_layout(
        &tmp.path().join("src"),
        "v1",
        &[layer],
        true,
        &["/bin/busybox", "echo", "ok"],
    );
    let reg = Registry::start(&tmp.path().join("root"));
    let image = format!("{}/yun/busybox:v1", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.dir.display()),
        &format!("docker://{image}"),
    ]);

    let podman = Podman::new();
    podman.run(&["pull", "--tls-verify=false", &image]);
    let digest = podman.run(&["image", "inspect", "--format", "{{.Digest}}", &image]);
    assert_eq!(digest.trim(), src.manifest_digest);
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &image,
        "/bin/busybox",
        "echo",
        "ok",
    ]);
    assert_eq!(out.trim(), "ok");
}
