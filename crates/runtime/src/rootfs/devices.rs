//! Device nodes in the container's /dev: the OCI defaults plus `linux.devices`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::path::{fd_path, Root};

/// A device to create: path in the container, kind, numbers, mode, owner.
#[derive(Debug, Clone)]
pub struct Node {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every OCI container gets (runtime spec, "Default Devices").
pub fn defaults() -> Vec<Node> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(p, major, minor)| Node {
        path: p.into(),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn validate(d: &LinuxDevice) -> Result<()> {
    if !d.path().is_absolute() {
        bail!("path: {} must be absolute", d.path().display());
    }
    let needs_numbers = !matches!(d.typ(), LinuxDeviceType::P);
    if needs_numbers && (d.major() < 0 || d.minor() < 0) {
        bail!(
            "major/minor: must be given for a {} device",
            d.typ().as_str()
        );
    }
    if matches!(d.typ(), LinuxDeviceType::A) {
        bail!("type: \"a\" is only valid in linux.resources.devices");
    }
    if let Some(uid) = d.uid() {
        crate::config::check_id("uid", uid)?;
    }
    if let Some(gid) = d.gid() {
        crate::config::check_id("gid", gid)?;
    }
    Ok(())
}

impl Node {
    pub fn from_spec(d: &LinuxDevice) -> Node {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        Node {
            path: d.path().clone(),
            kind,
            major: d.major().max(0) as u64,
            minor: d.minor().max(0) as u64,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        }
    }
}

/// Create `node` in the root. In a user namespace mknod is not allowed: bind-mount the
/// host's device of the same path instead (as runc does).
pub fn create(root: &Root, node: &Node, bind: bool) -> Result<()> {
    let path = &node.path;
    if bind {
        let target = root.create_file(path)?;
        return mount(
            Some(path.as_path()),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind device {}", path.display()));
    }
    let (dir, name) = root.parent_of(path)?;
    // A file already there (from the image) is replaced by the device the config asks for.
    match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    mknodat(
        dir.as_fd(),
        name,
        node.kind,
        Mode::from_bits_truncate(node.mode),
        makedev(node.major, node.minor),
    )
    .with_context(|| format!("mknod {}", path.display()))?;
    // mknod applies the umask: set the exact mode afterwards.
    fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate(node.mode & 0o7777),
        FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|_| {
        fchmodat(
            dir.as_fd(),
            name,
            Mode::from_bits_truncate(node.mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
    })
    .with_context(|| format!("chmod {}", path.display()))?;
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {}", path.display()))?;
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx links.
pub fn create_links(root: &Root, has_devpts: bool) -> Result<()> {
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    if has_devpts {
        links.push(("pts/ptmx", "/dev/ptmx"));
    }
    for (target, link) in links {
        let (dir, name) = root.parent_of(Path::new(link))?;
        if link == "/dev/ptmx" {
            // An image's /dev/ptmx would bypass the container's devpts instance.
            let _ =
                nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        match nix::unistd::symlinkat(target, dir.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("symlink {link}")),
        }
    }
    Ok(())
}
