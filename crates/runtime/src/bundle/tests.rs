use super::busybox::{build_rootfs_from, check_static, link_applets, list_applets};
use super::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Instant;

use oci_spec::runtime::{Capability, LinuxNamespaceType};

/// A directory `/tmp/yun-test-bundle-<what>-<pid>-<n>` removed on drop, even when a test fails.
struct TestDir(PathBuf);

impl TestDir {
    fn new(what: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = PathBuf::from(format!(
            "/tmp/yun-test-bundle-{what}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        TestDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names in the directory, sorted (to spot leftover temp dirs).
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn busybox_rootfs_runs_in_chroot() {
    let dir = TestDir::new("chroot");
    let rootfs = dir.join("rootfs");
    let started = Instant::now();
    build_busybox_rootfs(&rootfs).unwrap();
    println!("fresh busybox rootfs built in {:?}", started.elapsed());

    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert!(fs::symlink_metadata(rootfs.join("usr/bin/env"))
        .unwrap()
        .is_symlink());
    let busybox = fs::metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!(busybox.len(), fs::metadata(HOST_BUSYBOX).unwrap().len());
    assert_eq!(busybox.permissions().mode() & 0o7777, 0o755);
    for d in [
        "proc", "sys", "dev", "run", "root", "var", "etc", "usr/bin", "usr/sbin", "sbin",
    ] {
        assert!(rootfs.join(d).is_dir(), "{d} missing");
    }
    let tmp = fs::metadata(rootfs.join("tmp")).unwrap();
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    for f in ["etc/hosts", "etc/resolv.conf"] {
        assert_eq!(fs::metadata(rootfs.join(f)).unwrap().len(), 0, "{f}");
    }
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/hostname")).unwrap(),
        "yun\n"
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
    assert!(passwd.contains("\nnobody:x:65534:65534:"));
    let group = fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.contains("\nnogroup:x:65534:") && group.contains("\nyun:x:1000:"));
    assert_eq!(
        dir.entries(),
        ["rootfs"],
        "no temp dir left beside the image"
    );

    if !is_root() {
        println!("not root: skipping the chroot and ownership checks");
        return;
    }
    let home = fs::metadata(rootfs.join("home/yun")).unwrap();
    assert_eq!((home.uid(), home.gid()), (YUN_UID, YUN_UID));
    let output = Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "echo ok; id -u yun"])
        .output()
        .unwrap();
    assert!(output.status.success(), "chroot failed: {output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n1000\n");
}

#[test]
fn applet_symlinks_are_fast() {
    let dir = TestDir::new("applets");
    let applets = list_applets(Path::new(HOST_BUSYBOX)).unwrap();
    assert!(applets.len() > 100, "only {} applets", applets.len());
    let started = Instant::now();
    let created = link_applets(&dir.0, &applets).unwrap();
    println!(
        "{} applet symlinks (and {} dirs) in {:?}",
        applets.len(),
        created.len(),
        started.elapsed()
    );
    assert!(created.contains(&dir.join("usr/bin")));
    for applet in &applets {
        assert!(fs::symlink_metadata(dir.0.join(applet))
            .unwrap()
            .is_symlink());
    }

    // For comparison: the cost is the filesystem's inode allocation (ext4 without a journal
    // scans for recently deleted inodes), which tmpfs does not have.
    let shm = PathBuf::from(format!(
        "/dev/shm/yun-test-bundle-applets-{}",
        std::process::id()
    ));
    if fs::create_dir(&shm).is_ok() {
        let guard = TestDir(shm);
        let started = Instant::now();
        link_applets(&guard.0, &applets).unwrap();
        println!("the same on /dev/shm (tmpfs) in {:?}", started.elapsed());
    }
}

#[test]
fn rebuild_is_a_no_op_until_busybox_changes() {
    let dir = TestDir::new("idem");
    let rootfs = dir.join("rootfs");
    build_busybox_rootfs(&rootfs).unwrap();
    let marker = fs::read_to_string(rootfs.join(MARKER)).unwrap();
    let host = fs::metadata(HOST_BUSYBOX).unwrap();
    assert!(
        marker.contains(&format!("size {}\n", host.len())),
        "{marker}"
    );
    assert!(
        marker.contains(&format!("mtime {}.", host.mtime())),
        "{marker}"
    );

    // A matching marker: nothing is rebuilt (the sentinel survives).
    fs::write(rootfs.join("sentinel"), "").unwrap();
    let started = Instant::now();
    build_busybox_rootfs(&rootfs).unwrap();
    println!("rebuild of a complete image took {:?}", started.elapsed());
    assert!(rootfs.join("sentinel").exists());

    // A marker from another busybox: the image is replaced atomically, nothing left beside it.
    fs::write(rootfs.join(MARKER), marker.replace("size ", "size 1")).unwrap();
    build_busybox_rootfs(&rootfs).unwrap();
    assert!(!rootfs.join("sentinel").exists());
    assert_eq!(fs::read_to_string(rootfs.join(MARKER)).unwrap(), marker);
    assert_eq!(dir.entries(), ["rootfs"]);
}

#[test]
fn concurrent_builds_of_one_image_agree() {
    let dir = TestDir::new("race");
    let rootfs = dir.join("rootfs");
    std::thread::scope(|s| {
        let builders: Vec<_> = (0..4)
            .map(|_| s.spawn(|| build_busybox_rootfs(&rootfs)))
            .collect();
        for builder in builders {
            builder.join().unwrap().unwrap();
        }
    });
    assert!(rootfs.join(MARKER).exists());
    assert!(rootfs.join("bin/sh").is_symlink());
    assert_eq!(dir.entries(), ["rootfs"]);
}

#[test]
fn an_empty_directory_is_filled_and_a_foreign_one_refused() {
    let dir = TestDir::new("existing");
    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    build_busybox_rootfs(&empty).unwrap();
    assert!(empty.join("bin/busybox").is_file());

    let foreign = dir.join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("data"), "keep me").unwrap();
    let err = build_busybox_rootfs(&foreign).unwrap_err().to_string();
    assert!(err.contains("not a yun busybox image"), "{err}");
    assert_eq!(fs::read_to_string(foreign.join("data")).unwrap(), "keep me");
    assert_eq!(dir.entries(), ["empty", "foreign"]);
}

#[test]
fn a_missing_or_dynamic_busybox_names_the_package() {
    let dir = TestDir::new("nobusybox");
    let err = build_rootfs_from(&dir.join("no-busybox"), &dir.join("rootfs")).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("not found") && err.contains("busybox-static"),
        "{err}"
    );

    // The test binary itself is dynamically linked (it has a PT_INTERP header).
    let me = std::env::current_exe().unwrap();
    let err = build_rootfs_from(&me, &dir.join("rootfs")).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("dynamically linked") && err.contains("busybox-static"),
        "{err}"
    );

    let not_elf = dir.join("not-elf");
    fs::write(&not_elf, "#!/bin/sh\n").unwrap();
    let err = format!("{:#}", check_static(&not_elf).unwrap_err());
    assert!(
        err.contains("not a usable ELF") && err.contains("busybox-static"),
        "{err}"
    );
    check_static(Path::new(HOST_BUSYBOX)).unwrap();
    assert_eq!(dir.entries(), ["not-elf"], "nothing left behind");
}

#[test]
fn default_spec_matches_runc_spec() {
    let spec = default_spec(&[], false).unwrap();
    assert_eq!(spec.version(), oci_spec::runtime::VERSION);
    assert_eq!(spec.hostname().as_deref(), Some("yun"));
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.args().as_ref().unwrap(), &["sh".to_string()]);
    assert_eq!(process.terminal(), Some(false));
    assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
    assert_eq!(process.cwd(), Path::new("/"));
    assert_eq!(process.no_new_privileges(), Some(true));
    let env = process.env().as_ref().unwrap();
    assert_eq!(env, &[DEFAULT_PATH.to_string(), "TERM=xterm".to_string()]);
    let caps = process.capabilities().as_ref().unwrap();
    let expected = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ];
    for set in [caps.bounding(), caps.effective(), caps.permitted()] {
        let set = set.as_ref().unwrap();
        assert_eq!(set.len(), 3);
        assert!(expected.iter().all(|c| set.contains(c)));
    }
    assert!(caps.ambient().as_ref().is_none_or(|a| a.is_empty()));
    let rlimits = process.rlimits().as_ref().unwrap();
    assert_eq!(rlimits.len(), 1);
    assert_eq!((rlimits[0].soft(), rlimits[0].hard()), (1024, 1024));

    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), Path::new("rootfs"));
    assert_eq!(root.readonly(), Some(false));

    let mounts = spec.mounts().as_ref().unwrap();
    let destinations: Vec<_> = mounts.iter().map(|m| m.destination().clone()).collect();
    let expected: Vec<PathBuf> = [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(destinations, expected);
    let devpts = mounts[2].options().as_ref().unwrap();
    assert!(devpts.contains(&"gid=5".to_string()));

    let linux = spec.linux().as_ref().unwrap();
    let namespaces: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    use LinuxNamespaceType::*;
    assert_eq!(namespaces, [Pid, Network, Ipc, Uts, Mount, Cgroup]);
    assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 10);
    assert_eq!(linux.readonly_paths().as_ref().unwrap().len(), 5);
    let devices = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(devices.len(), 1);
    assert!(!devices[0].allow());
    assert_eq!(devices[0].access().as_deref(), Some("rwm"));
    assert!(linux.uid_mappings().is_none());

    let args = vec!["echo".to_string(), "hi".to_string()];
    let spec = default_spec(&args, false).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref(),
        Some(&args)
    );
}

#[test]
fn rootless_spec_maps_the_caller() {
    let spec = default_spec(&[], true).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let namespaces: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(namespaces.contains(&LinuxNamespaceType::User));
    assert!(!namespaces.contains(&LinuxNamespaceType::Network));
    let uid = linux.uid_mappings().as_ref().unwrap();
    let gid = linux.gid_mappings().as_ref().unwrap();
    assert_eq!(uid.len(), 1);
    assert_eq!(
        (uid[0].container_id(), uid[0].host_id(), uid[0].size()),
        (0, nix::unistd::geteuid().as_raw(), 1)
    );
    assert_eq!(
        (gid[0].container_id(), gid[0].host_id(), gid[0].size()),
        (0, nix::unistd::getegid().as_raw(), 1)
    );
    assert!(linux.resources().is_none());

    let mounts = spec.mounts().as_ref().unwrap();
    assert!(mounts.iter().all(|m| m.typ().as_deref() != Some("cgroup")));
    let sys = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert_eq!(sys.typ().as_deref(), Some("none"));
    assert_eq!(sys.source().as_deref(), Some(Path::new("/sys")));
    assert!(sys
        .options()
        .as_ref()
        .unwrap()
        .contains(&"rbind".to_string()));
    assert!(mounts
        .iter()
        .flat_map(|m| m.options().iter().flatten())
        .all(|o| !o.starts_with("gid=")));
}

#[test]
fn bundle_config_round_trips() {
    let dir = TestDir::new("bundle");
    let bundle = dir.join("bundle");
    let args = vec!["/bin/sh".to_string(), "-c".to_string(), "true".to_string()];
    let spec = create_busybox_bundle(&bundle, &args, None).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
    assert!(bundle.join("rootfs/bin/busybox").is_file());

    let loaded = Spec::load(bundle.join("config.json")).unwrap();
    assert_eq!(loaded, spec);
    let text = fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(text.starts_with("{\n  \"ociVersion\": "), "{text}");
    assert!(
        text.contains("\n    \"args\": [\n      \"/bin/sh\","),
        "{text}"
    );
    let mut names: Vec<_> = fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "rootfs"], "no temp file left");

    // Writing again replaces config.json and reuses the image.
    let spec = create_busybox_bundle(&bundle, &[], None).unwrap();
    assert_eq!(Spec::load(bundle.join("config.json")).unwrap(), spec);
    let written = fs::read(bundle.join("config.json")).unwrap();
    write_config(&bundle, &spec).unwrap();
    assert_eq!(
        fs::read(bundle.join("config.json")).unwrap(),
        written,
        "deterministic"
    );
}

#[test]
fn bundles_can_share_one_rootfs() {
    let dir = TestDir::new("shared");
    let shared = dir.join("image");
    for name in ["a", "b"] {
        let bundle = dir.join(name);
        let spec = create_busybox_bundle(&bundle, &[], Some(&shared)).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().path(), &shared);
        assert!(!bundle.join("rootfs").exists());
        assert_eq!(Spec::load(bundle.join("config.json")).unwrap(), spec);
    }
    assert!(shared.join("bin/sh").is_symlink());
    assert_eq!(dir.entries(), ["a", "b", "image"]);
}

#[test]
fn a_failed_bundle_leaves_nothing_behind() {
    let dir = TestDir::new("failed");
    let foreign = dir.join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("data"), "").unwrap();
    let bundle = dir.join("bundle");
    let err = create_busybox_bundle(&bundle, &[], Some(&foreign)).unwrap_err();
    assert!(err.to_string().contains("not a yun busybox image"), "{err}");
    assert_eq!(dir.entries(), ["foreign"]);
}
