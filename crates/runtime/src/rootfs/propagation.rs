//! `linux.rootfsPropagation`: how the container's root shares mount events with the host.
//!
//! pivot_root refuses a new root (or its parent) that is shared, so the rules are:
//! - during setup every mount of the new namespace is a slave (`private`: private): mounts
//!   the setup makes never reach the host, and the rootfs bind, cloned from a slave, is a
//!   slave of the host's peer group, so host mounts still reach the container;
//! - after pivot_root and the last setup mount, the requested propagation is applied to `/`;
//! - `shared` and `rshared` make `/` shared, which starts a peer group of its own (runc stops
//!   there, so nothing reaches the host). When the host mount holding the rootfs is shared,
//!   the init also hands the runtime a clone of its root (open_tree, which keeps the clone in
//!   that new peer group) and the runtime mounts it over the rootfs on the host: the host's
//!   mount is shared, so the clone propagates to its whole peer group, and from then on a
//!   mount made inside the container shows up there too. `delete` unmounts the clone.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;

use super::propagation_flag;

fn requested(spec: &Spec) -> Result<Option<MsFlags>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .map(propagation_flag)
        .transpose()
        .context("linux.rootfsPropagation")
}

/// The propagation of every mount while the root is set up.
pub fn during_setup(spec: &Spec) -> Result<MsFlags> {
    Ok(match requested(spec)? {
        Some(f) if f.contains(MsFlags::MS_PRIVATE) => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    })
}

/// Whether `/` is to be shared (and so may be handed back to the host).
pub fn wants_shared(spec: &Spec) -> bool {
    requested(spec).is_ok_and(|f| f.is_some_and(|f| f.contains(MsFlags::MS_SHARED)))
}

/// After the last setup mount: give `/` the requested propagation.
pub fn apply_to_root(spec: &Spec) -> Result<()> {
    if let Some(flags) = requested(spec)? {
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .context("linux.rootfsPropagation: set propagation of /")?;
    }
    Ok(())
}

/// A detached clone of `/` (just the root mount, none under it) in the root's peer group.
pub fn clone_root() -> Result<OwnedFd> {
    // SAFETY: open_tree with a NUL-terminated path and flags; the result is a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "linux.rootfsPropagation: clone the root: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Mount the container's root clone over `rootfs` on the host.
pub fn attach(clone: &OwnedFd, rootfs: &Path) -> Result<()> {
    let target = std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes())?;
    // SAFETY: move_mount with a valid fd, an empty path and a NUL-terminated target.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            clone.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        bail!(
            "linux.rootfsPropagation: mount the container's root on {}: {}",
            rootfs.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Remove what `attach` mounted (and its copies on the host's peers).
pub fn detach(rootfs: &Path) -> Result<()> {
    match umount2(rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("unmount {}", rootfs.display())),
    }
}

/// Whether the mount holding `path` in our mount namespace is shared.
pub fn host_mount_is_shared(path: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    let mut best: Option<(PathBuf, bool)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        let mp = super::mountinfo::unescape(mp);
        // The last matching line is the topmost of mounts stacked on one point.
        if path.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            let shared = fields[6..]
                .iter()
                .take_while(|f| **f != "-")
                .any(|f| f.starts_with("shared:"));
            best = Some((mp, shared));
        }
    }
    Ok(best.is_some_and(|(_, shared)| shared))
}
