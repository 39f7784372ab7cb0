//! Layer unpack: faithful (compared with GNU tar's own extraction of the same tar), safe
//! against hostile tars, compressed layers, whiteouts in overlay form.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{tar_of, TestDir, E};
use yun_image::{unpack_layer, Digest, UnpackOptions};

fn unpack_bytes(tar: &[u8], dest: &Path) -> anyhow::Result<yun_image::UnpackStats> {
    fs::create_dir_all(dest).unwrap();
    unpack_layer(Cursor::new(tar.to_vec()), dest, &UnpackOptions::default())
}

fn xattr(p: &Path, key: &str) -> Option<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ck = CString::new(key).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: NUL-terminated strings and a writable buffer of the length passed.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), ck.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

fn set_xattr(p: &Path, key: &str, value: &[u8]) {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ck = CString::new(key).unwrap();
    // SAFETY: NUL-terminated strings and a valid value slice.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            ck.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {key} on {}", p.display());
}

/// Everything about a tree that unpack must reproduce, per relative path.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let mut d = format!(
            "mode={:o} uid={} gid={} size={} nlink={}",
            md.mode(),
            md.uid(),
            md.gid(),
            if ft.is_dir() { 0 } else { md.size() },
            md.nlink()
        );
        // Directories the tar did not list get the time of extraction.
        if !(ft.is_dir() && rel.is_empty()) {
            d += &format!(" mtime={}.{:09}", md.mtime(), md.mtime_nsec());
        }
        if ft.is_symlink() {
            d += &format!(" -> {}", fs::read_link(&p).unwrap().display());
        } else if ft.is_char_device() || ft.is_block_device() {
            d += &format!(
                " rdev={}:{}",
                libc::major(md.rdev()),
                libc::minor(md.rdev())
            );
        } else if ft.is_file() {
            d += &format!(" sha={}", Digest::of(&fs::read(&p).unwrap()));
        }
        for k in ["user.yun", "security.capability"] {
            if !ft.is_symlink() {
                if let Some(v) = xattr(&p, k) {
                    d += &format!(" {k}={v:?}");
                }
            }
        }
        out.insert(rel, d);
        if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-ec").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

#[test]
fn unpack_matches_gnu_tar() {
    let t = TestDir::new("faithful");
    let src = t.path.join("src");
    fs::create_dir_all(&src).unwrap();
    let s = src.display();
    sh(&format!(
        "cd {s}
         D=deep/$(printf 'd%.0s' $(seq 1 60))/$(printf 'e%.0s' $(seq 1 60))
         mkdir -p bin etc/ro sticky $D
         printf 'hello' > etc/hello; chmod 640 etc/hello; chown 1234:5678 etc/hello
         head -c 3000000 /dev/urandom > bin/big
         cp /bin/true bin/suid; chmod 4755 bin/suid
         cp /bin/true bin/sgid; chmod 2711 bin/sgid; chown 0:50 bin/sgid
         cp /bin/true bin/cap; if command -v setcap >/dev/null; then setcap cap_net_raw+ep bin/cap; fi
         ln bin/big bin/big-link; ln bin/big etc/big-link2
         ln -s ../etc/hello bin/rel-link; ln -s /etc/passwd bin/abs-link; ln -s nowhere bin/dangling
         mknod dev-null c 1 3; mknod dev-loop b 7 200; mkfifo fifo
         chmod 1777 sticky; touch sticky/file
         : > empty
         printf deep > $D/file-with-a-rather-long-name-$(printf 'x%.0s' $(seq 1 120))
         touch etc/ro/inside; chmod 500 etc/ro
         touch -h -d '2001-02-03 04:05:06.123456789' bin/rel-link etc/hello dev-null
         touch -d '1999-01-01 00:00:00.5' etc/ro deep"
    ));
    set_xattr(&src.join("etc/hello"), "user.yun", b"xattr value");
    set_xattr(&src.join("sticky"), "user.yun", b"on a dir");
    let tar = t.path.join("layer.tar");
    sh(&format!(
        "tar --format=pax --xattrs --xattrs-include='*' -C {s} -cf {} .",
        tar.display()
    ));

    let ours = t.path.join("ours");
    let theirs = t.path.join("theirs");
    fs::create_dir_all(&ours).unwrap();
    fs::create_dir_all(&theirs).unwrap();
    let stats = unpack_layer(
        fs::File::open(&tar).unwrap(),
        &ours,
        &UnpackOptions {
            compute_diff_id: true,
        },
    )
    .unwrap();
    assert_eq!(stats.diff_id, Some(Digest::of(&fs::read(&tar).unwrap())));
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --same-owner -xpf {} -C {}",
        tar.display(),
        theirs.display()
    ));
    let (a, b) = (describe(&ours), describe(&theirs));
    assert_eq!(a.len(), b.len());
    for (k, v) in &b {
        assert_eq!(a.get(k), Some(v), "{k}");
    }
    // and both match the source where tar can (root's mtime aside)
    let src_d = describe(&src);
    assert_eq!(a["bin/suid"], src_d["bin/suid"]);
    // (setcap is Debian's libcap2-bin; without it the file has no capability to compare)
    if xattr(&src.join("bin/cap"), "security.capability").is_some() {
        assert!(a["bin/cap"].contains("security.capability"));
    }
    assert_eq!(
        fs::metadata(ours.join("bin/big")).unwrap().ino(),
        fs::metadata(ours.join("etc/big-link2")).unwrap().ino()
    );
}

#[test]
fn gzip_and_zstd_layers() {
    let t = TestDir::new("compressed");
    let plain = tar_of(&[E::Dir("d/", 0o755), E::File("d/f", 0o600, b"content")]);
    let gz = common::gzip(&plain);
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    for (name, data) in [("plain", plain.clone()), ("gz", gz), ("zst", zst)] {
        let dest = t.path.join(name);
        fs::create_dir_all(&dest).unwrap();
        let stats = unpack_layer(
            Cursor::new(data),
            &dest,
            &UnpackOptions {
                compute_diff_id: true,
            },
        )
        .unwrap();
        assert_eq!(stats.diff_id, Some(Digest::of(&plain)), "{name}");
        assert_eq!(stats.entries, 2);
        assert_eq!(fs::read(dest.join("d/f")).unwrap(), b"content");
        assert_eq!(
            fs::metadata(dest.join("d/f")).unwrap().mode() & 0o7777,
            0o600
        );
    }
    // A corrupt gzip stream is an error, not a silent short layer.
    let mut bad = common::gzip(&plain);
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    bad.truncate(n - 4);
    let dest = t.path.join("bad");
    assert!(unpack_bytes(&bad, &dest).is_err());
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let t = TestDir::new("whiteout");
    let dest = t.path.join("l");
    unpack_bytes(
        &tar_of(&[
            E::Dir("a/", 0o755),
            E::File("a/.wh.gone", 0o644, b""),
            E::Dir("opq/", 0o755),
            E::File("opq/.wh..wh..opq", 0o644, b""),
            E::File("opq/new", 0o644, b"n"),
            E::File(".wh..wh.plnk", 0o644, b""),
        ]),
        &dest,
    )
    .unwrap();
    let md = fs::symlink_metadata(dest.join("a/gone")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), 0);
    assert!(!dest.join("a/.wh.gone").exists());
    assert_eq!(
        xattr(&dest.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!dest.join("opq/.wh..wh..opq").exists());
    assert!(dest.join("opq/new").exists());
    assert!(!dest.join(".wh..wh.plnk").exists());
    // A layer cannot smuggle overlay xattrs in through PAX.
    let d2 = t.path.join("l2");
    unpack_bytes(
        &tar_of(&[E::PaxFile(
            "f",
            0o644,
            b"x",
            vec![("SCHILY.xattr.trusted.overlay.redirect", b"/etc".as_slice())],
        )]),
        &d2,
    )
    .unwrap();
    assert_eq!(xattr(&d2.join("f"), "trusted.overlay.redirect"), None);
}

#[test]
fn owners_modes_and_replacements() {
    let t = TestDir::new("meta");
    let dest = t.path.join("l");
    unpack_bytes(
        &tar_of(&[
            E::FileOwned("./x/owned", 0o4750, 4321, 8765, 1_234_567_890, b"o"),
            E::File("x/replaced", 0o644, b"first"),
            E::File("x/replaced", 0o600, b"second"),
            E::Dir("x/", 0o700),
            E::Symlink("x/link", "owned"),
            E::File("x/link", 0o644, b"file now"),
            E::Hardlink("x/hl", "x/owned"),
            E::Char("x/null", 1, 3),
            E::Fifo("x/fifo"),
        ]),
        &dest,
    )
    .unwrap();
    let md = fs::metadata(dest.join("x/owned")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o4750, 4321, 8765)
    );
    assert_eq!(md.mtime(), 1_234_567_890);
    assert_eq!(md.nlink(), 2);
    assert_eq!(fs::read(dest.join("x/replaced")).unwrap(), b"second");
    assert_eq!(
        fs::metadata(dest.join("x/replaced"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // a directory entry after its contents keeps them and takes its own mode
    assert_eq!(fs::metadata(dest.join("x")).unwrap().mode() & 0o7777, 0o700);
    assert!(fs::symlink_metadata(dest.join("x/link")).unwrap().is_file());
    assert_eq!(
        fs::read(dest.join("x/owned")).unwrap(),
        b"o",
        "not written through the symlink"
    );
    assert!(fs::symlink_metadata(dest.join("x/null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(fs::symlink_metadata(dest.join("x/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

/// Paths outside every test dir that a hostile layer would like to write.
struct Outside {
    paths: Vec<PathBuf>,
}

impl Drop for Outside {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
        }
    }
}

#[test]
fn hostile_tars_write_nothing_outside() {
    let t = TestDir::new("hostile");
    let pid = std::process::id();
    let outside_dir = PathBuf::from(format!("/tmp/yun-test-outside-{pid}"));
    fs::create_dir_all(&outside_dir).unwrap();
    let guard = Outside {
        paths: vec![
            outside_dir.clone(),
            PathBuf::from(format!("/yun-test-abs-{pid}")),
            PathBuf::from(format!("/etc/yun-pwned-{pid}")),
            PathBuf::from(format!("/tmp/yun-pwned-{pid}")),
        ],
    };
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let od = outside_dir.display().to_string();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // (name, tar, whether unpack errors)
        (
            "dotdot",
            tar_of(&[E::File(
                &format!("../../../../../../../..{od}/x"),
                0o644,
                b"x",
            )]),
            true,
        ),
        (
            "dotdot-inner",
            tar_of(&[E::File("a/../../x", 0o644, b"x")]),
            true,
        ),
        (
            "abs",
            tar_of(&[E::File(&format!("/yun-test-abs-{pid}"), 0o644, b"x")]),
            false,
        ),
        (
            "symlink-root",
            tar_of(&[
                E::Symlink("evil", "/"),
                E::File(&format!("evil/etc/yun-pwned-{pid}"), 0o644, b"x"),
                E::File(&format!("evil/tmp/yun-pwned-{pid}"), 0o644, b"x"),
            ]),
            false,
        ),
        (
            "symlink-dotdot",
            tar_of(&[
                E::Symlink("up", "../../../../../../.."),
                E::File(&format!("up{od}/x"), 0o644, b"x"),
            ]),
            false,
        ),
        (
            "hardlink-passwd",
            tar_of(&[E::Hardlink("pw", "/etc/passwd")]),
            true,
        ),
        (
            "hardlink-through-symlink",
            tar_of(&[E::Symlink("etc", "/etc"), E::Hardlink("pw", "etc/passwd")]),
            true,
        ),
        (
            "file-through-outside-symlink",
            tar_of(&[E::Symlink("out", &od), E::File("out/x", 0o644, b"x")]),
            true,
        ),
        (
            "overwrite-symlink",
            tar_of(&[
                E::Symlink("s", &format!("{od}/x")),
                E::File("s", 0o644, b"x"),
            ]),
            false,
        ),
        (
            "hardlink-to-symlink-then-write",
            tar_of(&[
                E::Symlink("s", &format!("{od}/x")),
                E::Hardlink("h", "s"),
                E::File("h", 0o644, b"x"),
            ]),
            false,
        ),
        (
            "whiteout-through-symlink",
            tar_of(&[E::Symlink("w", &od), E::File("w/.wh.victim", 0o644, b"")]),
            true,
        ),
    ];
    fs::write(outside_dir.join("victim"), b"keep me").unwrap();
    for (name, tar, errs) in cases {
        let dest = t.path.join("deep/er/than/the/dotdots").join(name);
        let r = unpack_bytes(&tar, &dest);
        assert_eq!(r.is_err(), errs, "{name}: {r:?}");
        if let Err(e) = r {
            let msg = format!("{e:#}");
            assert!(msg.starts_with("layer entry"), "{name}: {msg}");
        }
        // nothing outside
        let listing: Vec<_> = fs::read_dir(&outside_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listing, ["victim"], "{name}");
        assert_eq!(
            fs::read(outside_dir.join("victim")).unwrap(),
            b"keep me",
            "{name}"
        );
        for p in &guard.paths[1..] {
            assert!(!p.exists(), "{name}: {}", p.display());
        }
        assert_eq!(
            fs::metadata("/etc/passwd").unwrap().nlink(),
            passwd_links,
            "{name}"
        );
        assert!(
            !t.path.join("x").exists() && !t.path.join("deep/x").exists(),
            "{name}"
        );
    }
    // Absolute and symlinked paths landed inside the layer instead.
    let d = t.path.join("deep/er/than/the/dotdots");
    assert!(d.join(format!("abs/yun-test-abs-{pid}")).is_file());
    assert!(d
        .join(format!("symlink-root/etc/yun-pwned-{pid}"))
        .is_file());
    assert!(d.join(format!("symlink-dotdot{od}/x")).is_file());
    assert!(fs::symlink_metadata(d.join("overwrite-symlink/s"))
        .unwrap()
        .is_file());
    drop(guard);
}
