//! The content store and image records: blobs, names, tags, rmi, gc, busybox, crash leftovers.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{image_of_plain, tar_of, TestDir, E};
use yun_image::{Digest, Store};

#[test]
fn put_blob_verifies_and_dedups() {
    let t = TestDir::new("blob");
    let s = t.store();
    let d = s.put_blob(&b"hello"[..], None).unwrap();
    assert_eq!(d, Digest::of(b"hello"));
    assert!(s.has_blob(&d));
    assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"hello");
    assert_eq!(
        s.blob_path(&d),
        t.path.join("data/images/blobs/sha256").join(d.hex())
    );
    // Known content is not read again; the right digest is accepted.
    assert_eq!(s.put_blob(&b"hello"[..], Some(&d)).unwrap(), d);

    let wrong = Digest::of(b"other");
    let err = s.put_blob(&b"hello!"[..], Some(&wrong)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("blob {wrong} does not match its digest")),
        "{msg}"
    );
    assert!(!s.has_blob(&wrong));
    assert!(
        !s.has_blob(&Digest::of(b"hello!")),
        "nothing stored on mismatch"
    );
    // Only the one good blob, no temp files.
    let names: Vec<_> = fs::read_dir(t.path.join("data/images/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [d.hex()]);
}

#[test]
fn resolve_tag_and_names() {
    let t = TestDir::new("names");
    let s = t.store();
    let layer = tar_of(&[E::File("f", 0o644, b"x")]);
    let img = image_of_plain(&s, &[layer], "yun-test/app:v1");
    assert_eq!(img.names, ["yun-test/app:v1"]);
    assert_eq!(s.resolve("yun-test/app:v1").unwrap().id, img.id);
    assert_eq!(s.resolve("localhost/yun-test/app:v1").unwrap().id, img.id);
    assert!(format!("{:#}", s.resolve("yun-test/app").unwrap_err())
        .contains("image \"yun-test/app\" not found"));
    // ids: full, sha256: prefix, bare prefix of 12+
    assert_eq!(s.resolve(img.id.as_str()).unwrap().id, img.id);
    assert_eq!(
        s.resolve(&format!("sha256:{}", &img.id.hex()[..12]))
            .unwrap()
            .id,
        img.id
    );
    assert_eq!(s.resolve(img.id.short()).unwrap().id, img.id);
    assert!(s.resolve("sha256:abc").is_err(), "too short a prefix");
    // by manifest digest
    assert_eq!(
        s.resolve(&format!("yun-test/app@{}", img.manifest_digest))
            .unwrap()
            .id,
        img.id
    );

    s.tag("yun-test/app:v1", "yun-test-other").unwrap();
    s.tag(img.id.short(), "127.0.0.1:5000/yun-test/app:v2")
        .unwrap();
    let got = s.resolve("yun-test-other").unwrap();
    assert_eq!(got.id, img.id);
    assert_eq!(
        got.names,
        [
            "yun-test/app:v1",
            "yun-test-other:latest",
            "127.0.0.1:5000/yun-test/app:v2"
        ]
    );
    assert!(s.tag("yun-test/app:v1", "Bad Name").is_err());
    assert!(s.tag("yun-test-missing", "x").is_err());

    // A name moves to the image it is given to last, like podman tag.
    let layer2 = tar_of(&[E::File("g", 0o644, b"y")]);
    let img2 = image_of_plain(&s, &[layer2], "yun-test-other");
    assert_eq!(s.resolve("yun-test-other").unwrap().id, img2.id);
    assert!(!s
        .resolve(img.id.as_str())
        .unwrap()
        .names
        .contains(&"yun-test-other:latest".into()));
    assert_eq!(s.images().unwrap().len(), 2);
}

#[test]
fn rmi_untags_refuses_in_use_and_deletes() {
    let t = TestDir::new("rmi");
    let s = t.store();
    let layer = tar_of(&[E::File("f", 0o644, b"x")]);
    let img = image_of_plain(&s, &[layer], "yun-test-rmi");
    s.tag("yun-test-rmi", "yun-test-rmi:two").unwrap();
    let in_use = |i: &yun_image::Image| i.id == img.id;

    // Untagging one of two names is fine even while in use (podman does the same).
    assert_eq!(
        s.untag_or_remove("yun-test-rmi:two", &in_use).unwrap(),
        ["Untagged: yun-test-rmi:two"]
    );
    // Removing the last name would delete the image: refused while in use.
    let err = s.untag_or_remove("yun-test-rmi", &in_use).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("yun-test-rmi") && msg.contains("in use by a container"),
        "{msg}"
    );
    assert!(s.resolve("yun-test-rmi").is_ok());

    s.unpack(&img).unwrap();
    let lines = s.untag_or_remove("yun-test-rmi", &|_| false).unwrap();
    assert_eq!(
        lines,
        [
            "Untagged: yun-test-rmi:latest".to_string(),
            format!("Deleted: {}", img.id)
        ]
    );
    assert!(s.resolve(img.id.as_str()).is_err());
    assert!(
        s.blobs().unwrap().is_empty(),
        "rmi deleted the image's blobs"
    );
    assert_eq!(
        fs::read_dir(t.path.join("data/snapshots/layers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn gc_removes_only_unreferenced() {
    let t = TestDir::new("gc");
    let s = t.store();
    let l1 = tar_of(&[E::File("a", 0o644, b"1")]);
    let l2 = tar_of(&[E::File("b", 0o644, b"2")]);
    let keep_img = image_of_plain(&s, std::slice::from_ref(&l1), "yun-test-keep");
    let drop_img = image_of_plain(&s, &[l1, l2], "yun-test-drop");
    s.unpack(&keep_img).unwrap();
    s.unpack(&drop_img).unwrap();
    let stray = s.put_blob(&b"stray"[..], None).unwrap();
    let kept = s.put_blob(&b"kept by the caller"[..], None).unwrap();
    // rmi cleans up after itself: what it drops must not include what keep_img shares.
    s.untag_or_remove("yun-test-drop", &|_| false).unwrap();
    let layers_dir = t.path.join("data/snapshots/layers");
    let before: Vec<_> = fs::read_dir(&layers_dir).unwrap().collect();
    assert_eq!(
        before
            .iter()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count(),
        1
    );

    let report = s.gc(&|d| *d == kept).unwrap();
    assert_eq!(report.blobs, std::slice::from_ref(&stray));
    assert!(!s.has_blob(&stray) && s.has_blob(&kept));
    // everything keep_img needs is still there and still unpacks without work
    for b in [&keep_img.id, &keep_img.manifest_digest] {
        assert!(s.has_blob(b));
    }
    assert_eq!(s.unpack(&keep_img).unwrap().len(), 1);

    // An unpacked layer of no image goes too.
    let orphan = layers_dir.join("ab".repeat(32));
    fs::create_dir_all(orphan.join("fs")).unwrap();
    let report = s.gc(&|_| false).unwrap();
    assert_eq!(report.layers, [Digest::from_hex(&"ab".repeat(32)).unwrap()]);
    assert!(!orphan.exists());
    assert!(!s.has_blob(&kept));
}

#[test]
fn add_image_converts_docker_schema2() {
    let t = TestDir::new("docker");
    let s = t.store();
    let layer = common::gzip(&tar_of(&[E::File("f", 0o644, b"x")]));
    let plain = tar_of(&[E::File("f", 0o644, b"x")]);
    let ld = s.put_blob(&layer[..], None).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "container_config": {"Hostname": "docker-only field"},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&plain)]},
    }))
    .unwrap();
    let cd = s.put_blob(&config[..], None).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": cd},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": ld}],
    });
    let img = s
        .add_image(
            &serde_json::to_vec(&manifest).unwrap(),
            &["yun-test-docker".into()],
        )
        .unwrap();
    assert_eq!(img.id, cd);
    let m = s.manifest(&img).unwrap();
    assert_eq!(
        m.media_type.as_deref(),
        Some(yun_image::media::OCI_MANIFEST)
    );
    assert_eq!(m.config.media_type, yun_image::media::OCI_CONFIG);
    assert_eq!(m.layers[0].media_type, yun_image::media::OCI_LAYER_GZIP);
    assert_eq!(m.layers[0].digest, ld, "layer digests are kept");
    let cfg = s.image_config(&img).unwrap();
    assert_eq!(
        cfg.config().as_ref().unwrap().cmd().as_ref().unwrap(),
        &["sh"]
    );
    // the gzip layer's diff id is checked while unpacking
    let lowers = s.unpack(&img).unwrap();
    assert_eq!(fs::read(lowers[0].join("f")).unwrap(), b"x");

    // index and schema1 are refused with a clear line
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    assert!(format!("{:#}", s.add_image(index, &[]).unwrap_err()).contains("image index"));
    let missing = serde_json::json!({
        "schemaVersion": 2, "mediaType": yun_image::media::OCI_MANIFEST,
        "config": {"mediaType": yun_image::media::OCI_CONFIG, "size": 1, "digest": Digest::of(b"nope")},
        "layers": [],
    });
    let err = s
        .add_image(&serde_json::to_vec(&missing).unwrap(), &[])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("is not in the store"),
        "{err:#}"
    );
}

/// Names under `snapshots/layers`: unpacked layers, their locks, temp dirs.
fn layer_dir_names(t: &TestDir) -> Vec<String> {
    fs::read_dir(t.path.join("data/snapshots/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn wrong_diff_id_is_refused_when_recorded() {
    let t = TestDir::new("diffid");
    let s = t.store();
    let plain = tar_of(&[E::File("f", 0o644, b"x")]);
    let other = tar_of(&[E::File("f", 0o644, b"y")]);
    // stored gzip of `plain`, but the config claims `other`
    let err =
        common::try_image_of(&s, &[(common::gzip(&plain), other)], "yun-test-diffid").unwrap_err();
    assert!(
        format!("{err:#}").contains("but the image config says"),
        "{err:#}"
    );
    // no record, no half layer, no lock file left
    assert!(s.images().unwrap().is_empty());
    assert!(layer_dir_names(&t).is_empty(), "{:?}", layer_dir_names(&t));
}

/// Every check of a layer happens when its image is recorded, not at its first run: a bad
/// layer anywhere in the image refuses it with the entry named, and the good layers below
/// it are not left unpacked.
#[test]
fn bad_layers_are_refused_when_recorded() {
    let t = TestDir::new("badlayers");
    let s = t.store();
    let good = tar_of(&[E::Dir("etc", 0o755), E::File("etc/passwd", 0o644, b"root")]);
    let full = tar_of(&[E::File("a", 0o644, &[7u8; 4096])]);
    let truncated = {
        let gz = common::gzip(&full);
        gz[..gz.len() / 2].to_vec()
    };
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            tar_of(&[E::File("a/../../x", 0o644, b"x")]),
            vec![],
            "\"a/../../x\": path escapes the layer root",
        ),
        (
            "hardlink-outside",
            tar_of(&[E::Hardlink("h", "../../../etc/passwd")]),
            vec![],
            "hard link target \"../../../etc/passwd\": path escapes the layer root",
        ),
        (
            // resolved inside the layer it would even work: refused all the same
            "hardlink-through-symlink",
            tar_of(&[
                E::Dir("etc", 0o755),
                E::File("etc/passwd", 0o644, b"x"),
                E::Symlink("s", "/etc"),
                E::Hardlink("h", "s/passwd"),
            ]),
            vec![],
            "hard link target \"s/passwd\" goes through a symlink",
        ),
        (
            "whiteout-empty",
            tar_of(&[E::File("d/.wh.", 0o644, b"")]),
            vec![],
            "invalid whiteout name",
        ),
        (
            "whiteout-as-dir",
            tar_of(&[E::File(".wh.d/x", 0o644, b"")]),
            vec![],
            "invalid whiteout: \".wh.d\" is used as a directory",
        ),
        ("truncated-gzip", truncated, full.clone(), "layer sha256:"),
    ];
    for (name, layer, diff, needle) in cases {
        let diff = if diff.is_empty() { layer.clone() } else { diff };
        let r = common::try_image_of(
            &s,
            &[(good.clone(), good.clone()), (layer, diff)],
            &format!("yun-test-{name}"),
        );
        let err = format!("{:#}", r.unwrap_err());
        assert!(err.contains(needle), "{name}: {err}");
        assert!(s.images().unwrap().is_empty(), "{name}");
        assert!(
            layer_dir_names(&t).is_empty(),
            "{name}: {:?}",
            layer_dir_names(&t)
        );
    }
    // The same good layer alone is fine, and unpacked once recorded.
    common::image_of_plain(&s, &[good], "yun-test-good");
    assert_eq!(
        layer_dir_names(&t)
            .iter()
            .filter(|n| !n.ends_with(".lock"))
            .count(),
        1
    );
}

/// A data dir from before: every directory 0755 and a layer unpacked with a setuid file
/// and a device node where anyone could reach them. Opening the store tightens the modes
/// (never loosening a tighter one) and puts the snapshots under a nosuid,nodev mount.
#[test]
fn an_old_data_dir_is_tightened_and_its_snapshots_mounted_nosuid_nodev() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new("olddata");
    let data = t.path.join("data");
    let fs_dir = data
        .join("snapshots/layers")
        .join("ab".repeat(32))
        .join("fs");
    fs::create_dir_all(&fs_dir).unwrap();
    fs::create_dir_all(data.join("images/blobs/sha256")).unwrap();
    for d in [&data, &data.join("images"), &data.join("snapshots")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let s = t.store();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&data), 0o710);
    assert_eq!(mode(&data.join("images")), 0o700);
    assert_eq!(mode(&data.join("snapshots")), 0o700);
    assert_eq!(common::mounts_under(&t.path), t.store_mounts());
    let opts = mount_options(&data.join("snapshots"));
    assert!(
        opts.contains(&"nosuid".to_string()) && opts.contains(&"nodev".to_string()),
        "{opts:?}"
    );
    // Opening again neither stacks another mount nor loosens a tighter mode.
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    drop(s);
    let _s = t.store();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(common::mounts_under(&t.path), t.store_mounts());
}

/// The per-mount options of the mount at `point` (mountinfo's sixth field).
fn mount_options(point: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .rfind(|l| l.split(' ').nth(4) == point.to_str())
        .unwrap_or_else(|| panic!("{} is not a mount point", point.display()));
    line.split(' ')
        .nth(5)
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect()
}

#[test]
fn busybox_is_built_once() {
    let t = TestDir::new("busybox");
    let s = t.store();
    let a = s.busybox().unwrap();
    assert_eq!(a.names, ["busybox:latest"]);
    let b = s.busybox().unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(s.resolve("busybox").unwrap().id, a.id);
    let cfg = s.image_config(&a).unwrap();
    let c = cfg.config().as_ref().unwrap();
    assert_eq!(c.cmd().as_ref().unwrap(), &["sh"]);
    assert!(c.env().as_ref().unwrap()[0].starts_with("PATH="));
    let lowers = s.unpack(&a).unwrap();
    assert_eq!(lowers.len(), 1);
    assert!(lowers[0].join("bin/busybox").is_file());
    assert!(fs::symlink_metadata(lowers[0].join("bin/sh"))
        .unwrap()
        .file_type()
        .is_symlink());
    // /home/yun belongs to the yun user
    assert_eq!(
        fs::metadata(lowers[0].join("home/yun")).unwrap().uid(),
        1000
    );
    assert!(fs::read_dir(t.path.join("data/images")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("yun-tmp")));
}

#[test]
fn concurrent_updates_are_not_lost() {
    let t = TestDir::new("concurrent");
    let s = t.store();
    let layer = tar_of(&[E::File("f", 0o644, b"x")]);
    image_of_plain(&s, &[layer], "yun-test-base");
    std::thread::scope(|scope| {
        for i in 0..8 {
            let s = s.clone();
            scope.spawn(move || s.tag("yun-test-base", &format!("yun-test-tag{i}")).unwrap());
        }
    });
    assert_eq!(s.resolve("yun-test-base").unwrap().names.len(), 9);
}

#[test]
fn open_cleans_up_after_a_killed_process() {
    let t = TestDir::new("crash");
    let s = t.store();
    let layer = tar_of(&[E::File("f", 0o644, b"x")]);
    let img = image_of_plain(&s, &[layer], "yun-test-crash");
    drop(s);
    // What a killed unpack and a killed metadata write leave behind.
    // a single layer's chain id is its diff id
    let diff = Digest::of(&tar_of(&[E::File("f", 0o644, b"x")]));
    let half = t.path.join(format!(
        "data/snapshots/layers/.{}.yun-tmp-unpack",
        diff.hex()
    ));
    fs::create_dir_all(half.join("fs/partial")).unwrap();
    let tmp_meta = t.path.join("data/images/.images.json.yun-tmp-99999-0");
    fs::write(&tmp_meta, b"{half").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&tmp_meta)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let s = Store::open(&t.path.join("data")).unwrap();
    assert!(!half.exists(), "half-unpacked layer removed");
    assert!(!tmp_meta.exists(), "temp file removed");
    assert_eq!(s.resolve("yun-test-crash").unwrap().id, img.id);
    let lowers = s.unpack(&img).unwrap();
    assert_eq!(fs::read(lowers[0].join("f")).unwrap(), b"x");
}
