//! The node's local volumes on the real kernel: ext4 on a loop device, a size that is
//! enforced (ENOSPC), online growth, block devices, copies, and nothing left attached or
//! mounted afterwards.

use std::io::Write;
use std::path::Path;

use yun_volumes::local::{LocalVolumes, Mode};
use yun_volumes::loopdev;

/// Removes the test's volumes (and so their mounts and loop devices) even when it fails.
struct Cleanup(LocalVolumes, tempfile::TempDir);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in self.0.list() {
            let _ = self.0.delete(&id);
        }
        loopdev::detach_under(self.1.path());
    }
}

fn setup() -> Cleanup {
    let dir = tempfile::Builder::new()
        .prefix("yun-volumes-")
        .tempdir()
        .unwrap();
    let vols = LocalVolumes::open(&dir.path().join("volumes")).unwrap();
    Cleanup(vols, dir)
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
}

/// Write until the filesystem refuses; returns the bytes written and the error.
fn fill(path: &Path) -> (u64, std::io::Error) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => return (written, e),
        }
        if let Err(e) = f.sync_data() {
            return (written, e);
        }
    }
}

#[test]
fn a_filesystem_volume_holds_its_size_and_grows_online() {
    let c = setup();
    let v = &c.0;
    let id = "pvc-1234_default_data";
    assert_eq!(
        v.provision(id, 20 << 20, Mode::Filesystem).unwrap(),
        20 << 20
    );
    let fs = v.mount(id).unwrap();
    assert!(mounted(&fs));
    // Mounting again is a no-op.
    assert_eq!(v.mount(id).unwrap(), fs);
    std::fs::write(fs.join("keep"), b"kept").unwrap();
    let (written, err) = fill(&fs.join("big"));
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written <= 20 << 20 && written > 10 << 20, "wrote {written}");
    std::fs::remove_file(fs.join("big")).unwrap();

    // Growth while mounted: online where the kernel allows it (CAP_SYS_RESOURCE), else at
    // the next mount with nothing else on the filesystem. Either way the filesystem grows.
    let grown = v.expand(id, 40 << 20).unwrap();
    assert_eq!(grown.bytes, 40 << 20);
    if grown.filesystem_pending {
        // A pod still holds the filesystem (a bind mount of it, as a container has): the
        // next mount takes it back as it is, never resizing what is in use.
        let pod = c.1.path().join("pod");
        std::fs::create_dir(&pod).unwrap();
        nix::mount::mount(
            Some(&fs),
            &pod,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        assert_eq!(v.mount(id).unwrap(), fs);
        assert!(v.resize_pending(id) && mounted(&fs));
        std::fs::write(pod.join("from-pod"), b"x").unwrap();
        nix::mount::umount2(&pod, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    let fs = v.mount(id).unwrap();
    assert_eq!(std::fs::read(fs.join("keep")).unwrap(), b"kept");
    assert!(!v.resize_pending(id));
    let st = nix::sys::statvfs::statvfs(&fs).unwrap();
    let size = st.blocks() as u64 * st.fragment_size() as u64;
    assert!(
        size > 30 << 20,
        "filesystem is {size} bytes after growing to 40 MiB ({grown:?})"
    );
    assert_eq!(std::fs::read(fs.join("keep")).unwrap(), b"kept");
    assert_eq!(v.bytes(id).unwrap(), 40 << 20);

    // Unmounted and mounted again, the data is there; the loop device went with the mount.
    v.unmount(id).unwrap();
    assert!(!mounted(&fs));
    assert!(loopdev::attached_to(&v.dir(id).join("disk.img")).is_empty());
    let fs = v.mount(id).unwrap();
    assert_eq!(std::fs::read(fs.join("keep")).unwrap(), b"kept");

    // A copy taken while mounted (frozen for it) has the data and its own size; a snapshot
    // kept in another store restores into a new volume.
    v.copy_to(id, v, "pvc-5678_default_copy", 60 << 20).unwrap();
    let copy = v.mount("pvc-5678_default_copy").unwrap();
    assert_eq!(std::fs::read(copy.join("keep")).unwrap(), b"kept");
    std::fs::write(fs.join("later"), b"after the copy").unwrap();
    assert!(!copy.join("later").exists(), "the copy is its own");
    let snaps = LocalVolumes::open(&c.1.path().join("snapshots")).unwrap();
    v.copy_to(id, &snaps, "snap-1", 0).unwrap();
    std::fs::remove_file(fs.join("keep")).unwrap();
    snaps
        .copy_to("snap-1", v, "pvc-9999_default_restored", 0)
        .unwrap();
    let restored = v.mount("pvc-9999_default_restored").unwrap();
    assert_eq!(std::fs::read(restored.join("keep")).unwrap(), b"kept");
    v.delete("pvc-9999_default_restored").unwrap();
    snaps.delete("snap-1").unwrap();

    v.delete(id).unwrap();
    v.delete("pvc-5678_default_copy").unwrap();
    assert!(v.list().is_empty());
    assert!(!mounted(&fs) && !mounted(&copy));
}

#[test]
fn a_block_volume_is_a_loop_device_of_its_size() {
    let c = setup();
    let v = &c.0;
    let id = "pvc-9_default_raw";
    v.provision(id, 8 << 20, Mode::Block).unwrap();
    let dev = v.block_device(id).unwrap();
    assert_eq!(v.block_device(id).unwrap(), dev, "attached once");
    let name = dev.file_name().unwrap().to_string_lossy().into_owned();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sectors * 512, 8 << 20);
    v.expand(id, 16 << 20).unwrap();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sectors * 512, 16 << 20);
    assert!(v
        .mount(id)
        .unwrap_err()
        .to_string()
        .contains("block volume"));
    v.delete(id).unwrap();
    assert!(loopdev::attached_to(&v.dir(id).join("disk.img")).is_empty());
}

#[test]
fn bad_requests_are_refused_whole() {
    let c = setup();
    let v = &c.0;
    let err = v
        .provision("pvc-x_default_huge", 1 << 60, Mode::Filesystem)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("requested 1Ei but the node has only") && err.contains("free"),
        "{err}"
    );
    assert_eq!(yun_volumes::local::human(100 << 40), "100Ti");
    assert_eq!(yun_volumes::local::human(3 << 29), "1.5Gi");
    assert!(v.list().is_empty(), "nothing left of a refused volume");
    for id in ["../escape", "a/b", ".hidden", ""] {
        assert!(v.provision(id, 1 << 20, Mode::Block).is_err(), "{id:?}");
    }
    // A volume cut short (its .tmp dir) is dropped when the node opens its volumes again.
    std::fs::create_dir(v.root().join("pvc-y_default_cut.tmp")).unwrap();
    let again = LocalVolumes::open(v.root()).unwrap();
    assert!(!again.root().join("pvc-y_default_cut.tmp").exists());
}
