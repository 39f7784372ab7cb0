//! The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.
//!
//! Runs in the container's init, inside its new mount namespace, in three steps around the
//! hooks: `prepare` (before createContainer hooks), `enter` (pivot_root), `finish` (after).

pub mod copy;
pub mod devices;
pub mod mountinfo;
pub mod mounts;
pub mod path;
pub mod propagation;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

pub use mounts::{parse_mount_options, propagation_flag};
use path::{fd_path, Root};

/// What `prepare` needs besides the spec.
pub struct Plan<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_userns: bool,
    pub cgroup_sources: Vec<(String, PathBuf, String)>,
}

/// Mount everything the config asks for under the rootfs and populate /dev.
pub fn prepare(plan: &Plan) -> Result<()> {
    let linux = plan.spec.linux().as_ref();
    // Nothing the setup mounts may reach the host (see `propagation`); this also keeps the
    // rootfs and its parent from being shared, which pivot_root refuses.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        propagation::during_setup(plan.spec)?,
        None::<&str>,
    )
    .context("set propagation of /")?;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(plan.rootfs),
        plan.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind rootfs onto itself")?;

    let root = Root::open(plan.rootfs)?;
    let ctx = mounts::MountContext {
        root: &root,
        bundle: plan.bundle,
        in_userns: plan.in_userns,
        cgroup_sources: &plan.cgroup_sources,
    };
    let list = plan.spec.mounts().clone().unwrap_or_default();
    for (i, m) in list.iter().enumerate() {
        mounts::mount_entry(&ctx, m)
            .with_context(|| format!("mounts[{i}] ({})", m.destination().display()))?;
    }

    // A /dev bound from the host already has its devices; a fresh one gets the defaults.
    let dev_is_bind = list.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    });
    let config_devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
    if !dev_is_bind {
        for node in devices::defaults() {
            if config_devices.iter().any(|d| d.path() == &node.path) {
                continue;
            }
            devices::create(&root, &node, plan.in_userns)?;
        }
        let has_devpts = list
            .iter()
            .any(|m| m.destination() == Path::new("/dev/pts"));
        devices::create_links(&root, has_devpts)?;
    }
    for (i, d) in config_devices.iter().enumerate() {
        devices::create(&root, &devices::Node::from_spec(d), plan.in_userns)
            .with_context(|| format!("linux.devices[{i}]"))?;
    }
    Ok(())
}

/// statfs magic of ramfs (linux/magic.h).
const RAMFS_MAGIC: i64 = 0x858458f6;

/// Make the rootfs the process's `/`: pivot_root, or with `no_pivot` (a root on ramfs
/// cannot be pivoted) move it over / and chroot, like runc's --no-pivot.
pub fn enter(rootfs: &Path, no_pivot: bool) -> Result<()> {
    // pivot_root cannot move the initramfs (ramfs) root: fall back by ourselves, as the
    // user of a ramfs-rooted host would otherwise always have to pass --no-pivot.
    let on_ramfs =
        nix::sys::statfs::statfs(rootfs).is_ok_and(|st| st.filesystem_type().0 == RAMFS_MAGIC);
    if no_pivot || on_ramfs {
        nix::unistd::chdir(rootfs).context("chdir rootfs")?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .context("move rootfs to /")?;
        nix::unistd::chroot(".").context("chroot")?;
        nix::unistd::chdir("/").context("chdir /")?;
        return Ok(());
    }
    let old = nix::fcntl::open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open /")?;
    let new = nix::fcntl::open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open rootfs")?;
    nix::unistd::fchdir(&new).context("fchdir rootfs")?;
    // pivot_root(".", ".") stacks the old root on top of the new one; no put_old directory
    // is needed inside the image.
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    nix::unistd::fchdir(&old).context("fchdir old root")?;
    // The old root must not propagate the unmount to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("make old root slave")?;
    umount2(".", MntFlags::MNT_DETACH).context("unmount old root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(())
}

/// After pivot_root: sysctls, masked paths, read-only paths, read-only /dev and root.
pub fn finish(spec: &Spec) -> Result<()> {
    let root = Root::open(Path::new("/"))?;
    let linux = spec.linux().as_ref();
    // Sysctls first: /proc/sys is usually among the read-only paths.
    for (key, value) in linux.and_then(|l| l.sysctl().clone()).unwrap_or_default() {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).with_context(|| format!("linux.sysctl[{key:?}]"))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default()
    {
        mask(&root, Path::new(&p)).with_context(|| format!("linux.maskedPaths: {p}"))?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default()
    {
        readonly(&root, Path::new(&p)).with_context(|| format!("linux.readonlyPaths: {p}"))?;
    }
    let dev_ro = spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev") && m.options().iter().flatten().any(|o| o == "ro")
    });
    if dev_ro {
        mounts::remount(&root, Path::new("/dev"), MsFlags::MS_RDONLY)?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mounts::remount(&root, Path::new("/"), MsFlags::MS_RDONLY | MsFlags::MS_REC)
            .context("root.readonly")?;
    }
    // Last: from here on a mount in the container may propagate, when shared.
    propagation::apply_to_root(spec)
}

fn mask(root: &Root, p: &Path) -> Result<()> {
    let fd = match root.open_with(p, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let is_dir = nix::sys::stat::fstat(&fd)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let res = if is_dir {
        mount(
            Some("tmpfs"),
            fd_path(&fd).as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            fd_path(&fd).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.context("mask")
}

fn readonly(root: &Root, p: &Path) -> Result<()> {
    let fd = match root.open_path(p) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    mount(
        Some(fd_path(&fd).as_str()),
        fd_path(&fd).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind")?;
    mounts::remount(
        root,
        p,
        MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_REC,
    )
}
