//! Overlay snapshots on the real kernel: whiteouts and opaque dirs across layers, shared
//! lower layers, remounts, commits of upper dirs, deep images.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{image_of_plain, mounts_under, tar_of, TestDir, E};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn two_layer_image(s: &yun_image::Store, name: &str) -> yun_image::Image {
    let l1 = tar_of(&[
        E::Dir("keep/", 0o755),
        E::File("keep/a", 0o644, b"a"),
        E::File("del", 0o644, b"deleted in layer 2"),
        E::Dir("opq/", 0o755),
        E::File("opq/old1", 0o644, b"1"),
        E::Dir("opq/olddir/", 0o755),
        E::File("opq/olddir/f", 0o644, b"f"),
    ]);
    let l2 = tar_of(&[
        E::File(".wh.del", 0o644, b""),
        E::Dir("opq/", 0o755),
        E::File("opq/.wh..wh..opq", 0o644, b""),
        E::File("opq/new", 0o644, b"new"),
        E::File("keep/b", 0o644, b"b"),
    ]);
    image_of_plain(s, &[l1, l2], name)
}

#[test]
fn whiteouts_and_opaque_dirs_in_the_mounted_rootfs() {
    let t = TestDir::new("ovl-wh");
    let s = t.store();
    let img = two_layer_image(&s, "yun-test-wh");
    let root = s.prepare_rootfs("yun-test-c1", &img).unwrap();
    assert_eq!(
        root.path,
        t.path.join("data/snapshots/containers/yun-test-c1/merged")
    );
    let m = &root.path;
    assert!(!m.join("del").exists(), "whited out");
    assert_eq!(
        names(&m.join("opq")),
        ["new"],
        "opaque dir shows only layer 2"
    );
    assert_eq!(names(&m.join("keep")), ["a", "b"]);
    assert_eq!(
        s.rootfs_users().unwrap(),
        [("yun-test-c1".to_string(), img.id.clone())]
    );

    // Writes go to the container's upper dir, never to the shared layers.
    fs::write(m.join("keep/a"), b"changed").unwrap();
    let lowers = s.unpack(&img).unwrap();
    assert_eq!(fs::read(lowers[1].join("keep/a")).unwrap(), b"a");
    assert_eq!(fs::read(root.upper.join("keep/a")).unwrap(), b"changed");

    s.remove_rootfs("yun-test-c1").unwrap();
    s.remove_rootfs("yun-test-c1").unwrap(); // idempotent
    assert_eq!(mounts_under(&t.path), t.store_mounts());
    assert!(!t
        .path
        .join("data/snapshots/containers/yun-test-c1")
        .exists());
    assert!(s.rootfs_users().unwrap().is_empty());
    assert!(s.prepare_rootfs("../evil", &img).is_err());
}

#[test]
fn rootfs_share_layers_unpacked_once() {
    let t = TestDir::new("ovl-share");
    let s = t.store();
    let img = two_layer_image(&s, "yun-test-share");
    // Concurrent first users: one unpack, same dirs for all.
    let all: Vec<Vec<_>> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| s.unpack(&img).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(all.windows(2).all(|w| w[0] == w[1]));
    let lowers = &all[0];
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before: Vec<_> = lowers.iter().map(|p| stamp(p)).collect();
    let a = s.prepare_rootfs("yun-test-a", &img).unwrap();
    let b = s.prepare_rootfs("yun-test-b", &img).unwrap();
    let after: Vec<_> = lowers.iter().map(|p| stamp(p)).collect();
    assert_eq!(before, after, "layers were not unpacked again");
    fs::write(a.path.join("only-in-a"), b"a").unwrap();
    assert!(!b.path.join("only-in-a").exists());
    // One layer dir per layer, nothing else (no temp dirs left).
    let layer_dirs: Vec<_> = names(&t.path.join("data/snapshots/layers"))
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(layer_dirs.len(), 2);

    // After an unmount (a reboot), preparing the same key remounts with the upper kept.
    nix::mount::umount2(&a.path, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(!a.path.join("only-in-a").exists());
    let again = s.prepare_rootfs("yun-test-a", &img).unwrap();
    assert_eq!(fs::read(again.path.join("only-in-a")).unwrap(), b"a");
    // ...but a key belongs to one image.
    let other = image_of_plain(
        &s,
        &[tar_of(&[E::File("z", 0o644, b"z")])],
        "yun-test-other",
    );
    assert!(
        format!("{:#}", s.prepare_rootfs("yun-test-a", &other).unwrap_err())
            .contains("already exists")
    );
    // a single-layer image still goes through overlay: its layer stays untouched
    let single = s.prepare_rootfs("yun-test-single", &other).unwrap();
    fs::write(single.path.join("z"), b"changed").unwrap();
    assert_eq!(
        fs::read(s.unpack(&other).unwrap()[0].join("z")).unwrap(),
        b"z"
    );
    // gc keeps layers of prepared rootfs
    assert!(s.gc(&|_| false).unwrap().layers.is_empty());
    for k in ["yun-test-a", "yun-test-b", "yun-test-single"] {
        s.remove_rootfs(k).unwrap();
    }
    assert_eq!(mounts_under(&t.path), t.store_mounts());
}

#[test]
fn commit_of_an_upper_dir_round_trips() {
    let t = TestDir::new("ovl-commit");
    let s = t.store();
    let img = two_layer_image(&s, "yun-test-base");
    let c = s.prepare_rootfs("yun-test-commit", &img).unwrap();
    let m = &c.path;
    fs::write(m.join("added"), b"new file").unwrap();
    fs::remove_file(m.join("keep/a")).unwrap(); // → whiteout in upper
    fs::remove_dir_all(m.join("opq")).unwrap();
    fs::create_dir(m.join("opq")).unwrap(); // → opaque dir in upper
    fs::write(m.join("opq/fresh"), b"fresh").unwrap();
    let config = oci_spec::image::ConfigBuilder::default()
        .cmd(vec!["echo".to_string(), "committed".to_string()])
        .build()
        .unwrap();
    let new = s
        .commit_layer(Some(&img), &c.upper, "yun-test-committed", Some(config))
        .unwrap();
    assert_eq!(s.manifest(&new).unwrap().layers.len(), 3);
    let cfg = s.image_config(&new).unwrap();
    assert_eq!(cfg.rootfs().diff_ids().len(), 3);
    assert_eq!(
        cfg.config().as_ref().unwrap().cmd().as_ref().unwrap()[1],
        "committed"
    );
    let v = s.prepare_rootfs("yun-test-view", &new).unwrap();
    assert_eq!(names(&v.path), names(m));
    assert_eq!(names(&v.path.join("keep")), ["b"]);
    assert_eq!(names(&v.path.join("opq")), ["fresh"]);
    assert_eq!(fs::read(v.path.join("added")).unwrap(), b"new file");
    s.remove_rootfs("yun-test-view").unwrap();
    s.remove_rootfs("yun-test-commit").unwrap();
}

#[test]
fn deep_images_mount_through_the_new_mount_api() {
    let t = TestDir::new("ovl-deep");
    let s = t.store();
    // 80 layers: their lower dirs do not fit in one page of mount(2) options.
    let layers: Vec<Vec<u8>> = (0..80)
        .map(|i| {
            let n = format!("{i}");
            tar_of(&[
                E::File("top", 0o644, n.as_bytes()),
                E::File(&format!("f{i}"), 0o644, b""),
            ])
        })
        .collect();
    let img = image_of_plain(&s, &layers, "yun-test-deep");
    let r = s.prepare_rootfs("yun-test-deep", &img).unwrap();
    assert_eq!(fs::read(r.path.join("top")).unwrap(), b"79");
    assert_eq!(names(&r.path).len(), 81);
    s.remove_rootfs("yun-test-deep").unwrap();
    assert_eq!(mounts_under(&t.path), t.store_mounts());
}

#[test]
fn busybox_runs_in_a_prepared_rootfs() {
    let t = TestDir::new("ovl-busybox");
    let s = t.store();
    let img = s.busybox().unwrap();
    let r = s.prepare_rootfs("yun-test-bb", &img).unwrap();
    let out = std::process::Command::new("chroot")
        .arg(&r.path)
        .args([
            "/bin/sh",
            "-c",
            "echo hi > /tmp/x && cat /tmp/x && ls /bin | wc -l",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("hi\n"), "{text}");
    s.remove_rootfs("yun-test-bb").unwrap();
}
