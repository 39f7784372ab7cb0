//! Interop with podman (Debian's, real storage): load what `podman save` writes in all three
//! formats, round-trip yun's own saves, and have podman load what yun saves.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{mounts_under, TestDir};
use yun_image::{ArchiveFormat, Digest, Store};

/// A private podman storage (`/var/lib/yun-test-img-…`, `/run/yun-test-img-…`), reset and
/// removed on drop.
struct Podman {
    root: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Podman {
            root: PathBuf::from(format!("/var/lib/yun-test-img-{tag}")),
            runroot: PathBuf::from(format!("/run/yun-test-img-{tag}")),
        }
    }

    /// podman on this storage only. `--tmpdir` too: its default, /run/libpod, is shared by
    /// every podman on the host, and `system reset` of one storage deletes it under the others.
    fn base(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(self.runroot.join("libpod-tmp"))
            .args(["--storage-driver", "overlay"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = self.base().args(args).output().expect("run podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.base().args(["system", "reset", "-f"]).output();
        for dir in [&self.root, &self.runroot] {
            for m in mounts_under(dir).into_iter().rev() {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A small root filesystem tarball for `podman import`.
fn rootfs_tarball(t: &TestDir) -> PathBuf {
    let dir = t.path.join("rootfs");
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("etc/yun-test"), b"from podman\n").unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    let tarball = t.path.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tarball
}

fn index_manifest_digest(layout_index: &[u8]) -> Digest {
    let v: serde_json::Value = serde_json::from_slice(layout_index).unwrap();
    v["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn tar_member(archive: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn check_loaded(s: &Store, images: &[yun_image::Image], podman_id: &str) {
    assert_eq!(images.len(), 1);
    let img = &images[0];
    assert_eq!(img.names, ["localhost/yun-x:latest"]);
    assert_eq!(
        img.id.as_str(),
        podman_id,
        "the image id is the config digest"
    );
    assert_eq!(s.resolve("yun-x").unwrap().id, img.id);
    let cfg = s.image_config(img).unwrap();
    assert_eq!(cfg.rootfs().diff_ids().len(), 1);
    let m = s.manifest(img).unwrap();
    assert_eq!(m.layers.len(), 1);
    let lowers = s.unpack(img).unwrap();
    assert_eq!(
        fs::read(lowers[0].join("etc/yun-test")).unwrap(),
        b"from podman\n"
    );
    assert!(lowers[0].join("bin/busybox").is_file());
}

#[test]
fn load_what_podman_saves() {
    let t = TestDir::new("podman-load");
    let p = Podman::new();
    let tarball = rootfs_tarball(&t);
    let id = p
        .cmd(&["import", tarball.to_str().unwrap(), "yun-x"])
        .trim()
        .to_string();
    let id = if id.starts_with("sha256:") {
        id
    } else {
        format!("sha256:{id}")
    };

    let docker = t.path.join("x-docker.tar");
    let oci = t.path.join("x-oci.tar");
    let ocidir = t.path.join("x-oci-dir");
    p.cmd(&["save", "-o", docker.to_str().unwrap(), "yun-x"]);
    p.cmd(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        oci.to_str().unwrap(),
        "yun-x",
    ]);
    p.cmd(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        ocidir.to_str().unwrap(),
        "yun-x",
    ]);

    for (i, path) in [&docker, &oci, &ocidir].into_iter().enumerate() {
        let st = Store::open(&t.path.join(format!("store{i}"))).unwrap();
        let images = st.load(path).unwrap();
        check_loaded(&st, &images, &id);
        let img = &images[0];
        // OCI formats keep podman's manifest byte for byte.
        if path == &oci {
            assert_eq!(
                img.manifest_digest,
                index_manifest_digest(&tar_member(&oci, "index.json"))
            );
        }
        if path == &ocidir {
            let index = fs::read(ocidir.join("index.json")).unwrap();
            assert_eq!(img.manifest_digest, index_manifest_digest(&index));
        }
        // Only blobs the image needs are left (no docker-archive bookkeeping files).
        assert_eq!(st.blobs().unwrap().len(), 3, "{}", path.display());
        // Loading again changes nothing.
        assert_eq!(st.load(path).unwrap()[0].id, img.id);
        assert_eq!(st.images().unwrap().len(), 1);
    }

    // Not an archive: one clear line.
    let junk = t.path.join("junk");
    fs::write(&junk, b"not a tar at all").unwrap();
    let st = Store::open(&t.path.join("store-junk")).unwrap();
    let err = format!("{:#}", st.load(&junk).unwrap_err());
    assert_eq!(
        err,
        format!(
            "load {}: not an OCI layout, OCI archive or docker-archive",
            junk.display()
        )
    );
    assert!(st.blobs().unwrap().is_empty());
}

#[test]
fn save_load_round_trip_and_podman_loads_yun_saves() {
    let t = TestDir::new("podman-save");
    let a = Store::open(&t.path.join("a")).unwrap();
    let bb = a.busybox().unwrap();
    a.tag("busybox", "localhost/yun-test-rt:v1").unwrap();
    let manifest = a.manifest(&bb).unwrap();
    for (fmt, file) in [
        (ArchiveFormat::OciArchive, "rt-oci.tar"),
        (ArchiveFormat::OciDir, "rt-oci-dir"),
        (ArchiveFormat::DockerArchive, "rt-docker.tar"),
    ] {
        let path = t.path.join(file);
        a.save("yun-test-rt:v1", &path, fmt).unwrap();
        assert!(
            a.save("yun-test-rt:v1", &path, fmt).is_err(),
            "no overwrite"
        );
        let b = Store::open(&t.path.join(format!("b-{file}"))).unwrap();
        let got = b.load(&path).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, bb.id, "{fmt}");
        assert_eq!(got[0].names, ["localhost/yun-test-rt:v1"], "{fmt}");
        let m = b.manifest(&got[0]).unwrap();
        let digests = |m: &yun_image::Manifest| {
            m.layers
                .iter()
                .map(|l| l.digest.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(digests(&m), digests(&manifest), "{fmt}: layer digests");
        if fmt != ArchiveFormat::DockerArchive {
            assert_eq!(
                got[0].manifest_digest, bb.manifest_digest,
                "{fmt}: manifest digest"
            );
        }
    }
    // no temp files beside the outputs
    assert!(fs::read_dir(&t.path).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("yun-tmp")));

    // podman reads both archive formats yun writes.
    let p = Podman::new();
    for file in ["rt-docker.tar", "rt-oci.tar"] {
        let out = p.cmd(&["load", "-i", t.path.join(file).to_str().unwrap()]);
        assert!(out.contains("yun-test-rt:v1"), "{file}: {out}");
        let inspect = p.cmd(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "localhost/yun-test-rt:v1",
        ]);
        assert_eq!(inspect.trim(), bb.id.hex(), "{file}");
        p.cmd(&["rmi", "-f", "localhost/yun-test-rt:v1"]);
    }
}
