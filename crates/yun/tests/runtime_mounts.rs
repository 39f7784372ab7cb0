//! Mount propagation between a container's root and the host (`linux.rootfsPropagation`).
//! Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use nix::mount::{mount, MsFlags};
use serde_json::json;

/// A directory bind-mounted onto itself and made shared, plus a second bind of it (a peer in
/// the same peer group); both unmounted on drop.
struct SharedMount {
    dir: PathBuf,
    peer: PathBuf,
}

impl SharedMount {
    fn new(base: &Path) -> SharedMount {
        let m = SharedMount {
            dir: base.join("shared"),
            peer: base.join("peer"),
        };
        std::fs::create_dir_all(&m.dir).unwrap();
        std::fs::create_dir_all(&m.peer).unwrap();
        let none = None::<&str>;
        mount(Some(&m.dir), &m.dir, none, MsFlags::MS_BIND, none).unwrap();
        mount(none, &m.dir, none, MsFlags::MS_SHARED, none).unwrap();
        mount(Some(&m.dir), &m.peer, none, MsFlags::MS_BIND, none).unwrap();
        m
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        unmount_under(&[&self.dir, &self.peer]);
    }
}

/// Run a container whose root is on a shared host mount and which mounts a tmpfs under its
/// root; return whether the host saw that tmpfs (through the peer of the rootfs's mount).
fn tmpfs_made_inside_reaches_the_host(propagation: &str) -> bool {
    let env = Env::new(&format!("rprop-{propagation}"));
    let shared = SharedMount::new(&env.dir);
    let rootfs = shared.dir.join("rootfs");
    yun_runtime::bundle::build_busybox_rootfs(&rootfs).unwrap();
    let script = "mkdir -p /mnt/yunprop && mount -t tmpfs yunprop /mnt/yunprop && echo hi > /mnt/yunprop/f && touch /ready; sleep 30";
    let b = env.bundle("b", &["/bin/sh", "-c", script], |c| {
        c["root"]["path"] = rootfs.to_str().unwrap().into();
        c["linux"]["rootfsPropagation"] = propagation.into();
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYS_ADMIN"));
        }
    });
    let id = env.id("c");
    assert!(env.yunc_detached(&["run", "-d", "-b", b.to_str().unwrap(), &id]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rootfs.join("ready").exists() {
        assert!(Instant::now() < deadline, "the container never mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen_on_peer = shared.peer.join("rootfs/mnt/yunprop/f").exists();
    let seen_on_rootfs = rootfs.join("mnt/yunprop/f").exists();
    assert_eq!(seen_on_peer, seen_on_rootfs);
    let out = env.yunc(&["delete", "-f", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Whatever reached the host went with the container.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftover: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.contains(&format!("{}/", shared.dir.display()))
                || l.contains(&format!("{}/", shared.peer.display()))
        })
        .collect();
    assert!(leftover.is_empty(), "{leftover:#?}");
    seen_on_peer
}

#[test]
fn a_mount_in_a_shared_root_reaches_the_hosts_peer_group() {
    assert!(tmpfs_made_inside_reaches_the_host("shared"));
}

#[test]
fn a_mount_in_a_private_or_slave_root_stays_inside() {
    assert!(!tmpfs_made_inside_reaches_the_host("private"));
    assert!(!tmpfs_made_inside_reaches_the_host("rslave"));
}

#[test]
fn every_root_propagation_is_applied_to_the_new_root() {
    let env = Env::new("rprop-all");
    let shared = SharedMount::new(&env.dir);
    let rootfs = shared.dir.join("rootfs");
    yun_runtime::bundle::build_busybox_rootfs(&rootfs).unwrap();
    // mountinfo's optional fields of `/`: shared:N, master:N, unbindable, or none (private).
    for (propagation, want) in [
        ("shared", "shared:"),
        ("slave", "master:"),
        ("private", ""),
        ("unbindable", "unbindable"),
    ] {
        let b = env.bundle(
            propagation,
            &[
                "/bin/sh",
                "-c",
                "grep -E '^[0-9]+ [0-9]+ [0-9:]+ [^ ]+ / ' /proc/self/mountinfo",
            ],
            |c| {
                c["root"]["path"] = rootfs.to_str().unwrap().into();
                c["linux"]["rootfsPropagation"] = propagation.into();
            },
        );
        let out = env.run_ok(&env.id(propagation), &b);
        let optional: Vec<&str> = out.split(' ').skip(6).take_while(|f| *f != "-").collect();
        if want.is_empty() {
            assert!(optional.is_empty(), "{propagation}: {out}");
        } else {
            assert!(
                optional.iter().any(|f| f.starts_with(want)),
                "{propagation}: {out}"
            );
        }
    }
}
