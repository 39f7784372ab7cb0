//! `yun push` / `yun pull` against Debian's docker-registry (a real distribution 2.8),
//! round trips that keep digests, a resumed download, and `yun load` of a `podman save`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

/// A docker-registry on a free loopback port, killed and its storage removed on drop.
struct DockerRegistry {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl DockerRegistry {
    fn start(tag: &str) -> DockerRegistry {
        let dir = PathBuf::from(format!("/tmp/yun-test-dreg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(&config, format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  addr: {addr}\n", dir.display())).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        wait_for_port(&addr, "docker-registry");
        DockerRegistry { child, dir, addr }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Data(PathBuf);

impl Data {
    fn new(tag: &str) -> Data {
        let p = PathBuf::from(format!("/tmp/yun-test-data-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Data(p)
    }
    fn yun(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(YUN)
            .arg("--data-dir")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.yun(args);
        assert!(ok, "yun {}: {out}{err}", args.join(" "));
        out
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        unmount_under(&[&self.0]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifest_digest(name: &str) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{name}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn push_pull_round_trip_through_docker_registry_keeps_digests() {
    let reg = DockerRegistry::start("rt");
    let a = Data::new("push");
    a.ok(&["run", "--rm", "busybox", "true"]);
    let dest = format!("{}/yun-test/busybox:v1", reg.addr);
    let last = |s: String| s.lines().last().unwrap_or_default().to_string();
    let pushed = last(a.ok(&["push", "busybox", &dest]));
    assert!(pushed.starts_with("sha256:"));
    assert_eq!(
        manifest_digest(&dest),
        pushed,
        "the registry holds other bytes than we pushed"
    );

    let b = Data::new("pull");
    let id = last(b.ok(&["pull", &dest]));
    assert_eq!(b.ok(&["run", "--rm", &dest, "echo", "pulled"]), "pulled\n");
    // And back: b pushes what it pulled; the digest is unchanged.
    let again = last(b.ok(&["push", &dest, &format!("{}/yun-test/again:v1", reg.addr)]));
    assert_eq!(again, pushed);
    assert!(id.starts_with("sha256:"));
    // A second push sends nothing new (every blob is already there).
    let out = a.ok(&["push", "busybox", &dest]);
    assert!(!out.contains("Pushing blob"), "{out}");
}

#[test]
fn an_interrupted_pull_resumes_and_a_bad_partial_is_refused() {
    let reg = DockerRegistry::start("resume");
    let a = Data::new("resume-src");
    a.ok(&["run", "--rm", "busybox", "true"]);
    let dest = format!("{}/yun-test/resume:v1", reg.addr);
    a.ok(&["push", "busybox", &dest]);
    // The layer: the biggest blob in a's store.
    let blobs = a.0.join("images/blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap();
    let bytes = std::fs::read(layer.path()).unwrap();
    let hex = layer.file_name().to_string_lossy().into_owned();

    // An interrupted download left the first half: the pull fetches only the rest.
    let b = Data::new("resume-dst");
    std::fs::create_dir_all(b.0.join("images/partial")).unwrap();
    std::fs::write(
        b.0.join("images/partial").join(&hex),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    b.ok(&["pull", &dest]);
    assert_eq!(
        std::fs::read(b.0.join("images/blobs/sha256").join(&hex)).unwrap(),
        bytes
    );

    // A corrupt partial fails verification, is dropped, and nothing is stored...
    let c = Data::new("resume-bad");
    std::fs::create_dir_all(c.0.join("images/partial")).unwrap();
    std::fs::write(
        c.0.join("images/partial").join(&hex),
        vec![0u8; bytes.len() / 2],
    )
    .unwrap();
    let (ok, _, err) = c.yun(&["pull", &dest]);
    assert!(!ok && err.contains("digest"), "{err}");
    assert!(!c.0.join("images/blobs/sha256").join(&hex).exists());
    // ...and the next pull succeeds from scratch.
    c.ok(&["pull", &dest]);
    assert_eq!(c.ok(&["run", "--rm", &dest, "echo", "ok"]), "ok\n");
}

#[test]
fn bad_references_and_unreachable_registries() {
    let a = Data::new("badref");
    let (ok, _, err) = a.yun(&["pull", "busybox-without-registry"]);
    assert!(!ok && err.contains("name the registry"), "{err}");
    let port = free_port();
    let (ok, _, err) = a.yun(&["pull", &format!("127.0.0.1:{port}/yun-test/none:v1")]);
    assert!(!ok && err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let reg = DockerRegistry::start("missing");
    let (ok, _, err) = a.yun(&["pull", &format!("{}/yun-test/none:v1", reg.addr)]);
    assert!(
        !ok && (err.contains("MANIFEST_UNKNOWN") || err.contains("NAME_UNKNOWN")),
        "{err}"
    );
}

#[test]
fn load_a_podman_save_archive_and_run_it() {
    let tag = format!("yun-test-podsave-{}", std::process::id());
    let storage = PathBuf::from(format!("/var/lib/{tag}"));
    let runroot = PathBuf::from(format!("/run/{tag}"));
    struct Cleanup(PathBuf, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = podman(&self.0, &self.1, &["system", "reset", "-f"]);
            unmount_under(&[&self.0, &self.1]);
            let _ = std::fs::remove_dir_all(&self.0);
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    fn podman(storage: &Path, runroot: &Path, args: &[&str]) -> std::process::Output {
        Command::new("podman")
            .arg("--root")
            .arg(storage)
            .arg("--runroot")
            .arg(runroot)
            .arg("--tmpdir")
            .arg(runroot.join("tmp"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .output()
            .unwrap()
    }
    let _c = Cleanup(storage.clone(), runroot.clone());
    let data = Data::new("podsave");
    let tar = data.0.join("rootfs.tar");
    std::fs::create_dir_all(&data.0).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(shared_rootfs())
        .args(["-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let out = podman(
        &storage,
        &runroot,
        &[
            "import",
            "--change",
            "CMD [\"echo\", \"from-podman\"]",
            tar.to_str().unwrap(),
            "yun-test/podsaved:1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = data.0.join("saved.tar");
    let out = podman(
        &storage,
        &runroot,
        &[
            "save",
            "-o",
            archive.to_str().unwrap(),
            "yun-test/podsaved:1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = data.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("yun-test/podsaved:1"), "{loaded}");
    assert_eq!(
        data.ok(&["run", "--rm", "yun-test/podsaved:1"]),
        "from-podman\n"
    );
}

/// `yun registry serve` on a free port with an htpasswd file, killed and removed on drop.
struct YunRegistry {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl YunRegistry {
    fn start(tag: &str, htpasswd: Option<(&str, &str)>) -> YunRegistry {
        YunRegistry::start_with(tag, htpasswd, &[])
    }

    fn start_with(tag: &str, htpasswd: Option<(&str, &str)>, extra: &[&str]) -> YunRegistry {
        let dir = PathBuf::from(format!("/tmp/yun-test-yreg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(YUN);
        cmd.args(["registry", "serve", "--addr", &addr, "--root"])
            .arg(dir.join("data"))
            .args(extra);
        if let Some((user, pass)) = htpasswd {
            let file = dir.join("htpasswd");
            let ok = Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(&file)
                .args([user, pass])
                .output()
                .unwrap();
            assert!(ok.status.success(), "htpasswd (apache2-utils)");
            cmd.arg("--htpasswd").arg(&file);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(&addr, "yun registry");
        YunRegistry { child, dir, addr }
    }
}

impl Drop for YunRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn credentials_for_a_registry_with_basic_auth() {
    let reg = YunRegistry::start("auth", Some(("yun", "s3cret")));
    let a = Data::new("auth");
    a.ok(&["run", "--rm", "busybox", "true"]);
    let dest = format!("{}/yun-test/private:v1", reg.addr);
    let (ok, _, err) = a.yun(&["push", "busybox", &dest]);
    assert!(!ok && err.contains("authentication required"), "{err}");
    let (ok, _, err) = a.yun(&["push", "--creds", "yun:wrong", "busybox", &dest]);
    assert!(!ok && err.contains("401"), "{err}");
    a.ok(&["push", "--creds", "yun:s3cret", "busybox", &dest]);
    let b = Data::new("auth-pull");
    b.ok(&["pull", "--creds", "yun:s3cret", &dest]);
    assert_eq!(
        b.ok(&["run", "--rm", &dest, "echo", "private"]),
        "private\n"
    );
}

/// Images with a bad layer on a good one, pushed to docker-registry by Python's urllib:
/// `yun pull` refuses each with the entry (or the check) named, and keeps nothing of it (no
/// blob of either layer, no unpacked layer, no partial download, no name).
#[test]
fn bad_layers_are_refused_by_pull_and_leave_nothing() {
    let reg = DockerRegistry::start("bad");
    for (case, needle) in BAD_LAYERS {
        let name = format!("yun-test/bad-{case}:v1");
        images_py(&["push", case, &reg.addr, &name]);
        let d = Data::new(&format!("badpull-{case}"));
        let (ok, out, err) = d.yun(&["pull", &format!("{}/{name}", reg.addr)]);
        assert!(!ok, "{case}: pulled: {out}");
        assert!(err.contains(needle), "{case}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{case}: {err}");
        assert_eq!(d.ok(&["images", "-q"]), "", "{case}");
        assert_nothing_stored(&d.0);
    }
}

/// curl's HTTP status and body for `METHOD URL`.
fn curl(method: &str, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {method} {url}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[test]
fn registry_serve_delete_and_upload_flags() {
    let none = format!("sha256:{}", "0".repeat(64));
    let reg = YunRegistry::start_with(
        "flags",
        None,
        &[
            "--max-uploads-per-client",
            "1",
            "--upload-idle-timeout",
            "1s",
        ],
    );
    let base = format!("http://{}/v2/yun-test/x", reg.addr);
    // Deletes are off by default, as in distribution.
    let (status, body) = curl("DELETE", &format!("{base}/manifests/{none}"));
    assert_eq!(status, 405, "{body}");
    assert!(
        body.contains("UNSUPPORTED") && body.contains("--enable-delete"),
        "{body}"
    );
    // One open upload session per client, and an idle one is gone after about a second.
    assert_eq!(curl("POST", &format!("{base}/blobs/uploads/")).0, 202);
    let (status, body) = curl("POST", &format!("{base}/blobs/uploads/"));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("TOOMANYREQUESTS"), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while curl("POST", &format!("{base}/blobs/uploads/")).0 != 202 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle upload was not swept"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(reg);

    // With --enable-delete the delete is tried: the manifest is merely unknown.
    let reg = YunRegistry::start_with("flags-del", None, &["--enable-delete"]);
    let base = format!("http://{}/v2/yun-test/x", reg.addr);
    let (status, body) = curl("DELETE", &format!("{base}/manifests/{none}"));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("MANIFEST_UNKNOWN"), "{body}");

    // A limit of zero is refused with one line naming the flag.
    let out = Command::new(YUN)
        .args([
            "registry",
            "serve",
            "--root",
            "/tmp/yun-test-never",
            "--max-uploads-per-client",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-uploads-per-client"), "{err}");
    assert!(!std::path::Path::new("/tmp/yun-test-never").exists());
}
