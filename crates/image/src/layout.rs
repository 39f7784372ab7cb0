//! Who can reach image content on the host. Layers are unpacked faithfully: a setuid-root
//! file stays setuid-root and a device node stays a device node, because the container's
//! root must have them. On the host they must be dead:
//!
//! - **Modes.** `images/` and `snapshots/` are 0700 and the data dir at most 0710 (as
//!   containerd keeps its snapshots 0700 and Docker its data root 0710), so no other user can
//!   even name a path inside. Overlay reaches lower, upper and work dirs with the mounter's
//!   credentials, so containers need nothing more. An existing data dir is tightened when a
//!   store opens it, never loosened.
//! - **Mount flags.** `snapshots/` (unpacked layers and containers' upper dirs) is a bind
//!   mount of itself with `nosuid,nodev`, private so the overlays mounted under it do not
//!   propagate. A set-id bit or a device there does nothing even for someone who got hold of
//!   a path or a descriptor. A container's root is its own overlay mount, whose flags decide
//!   what works inside it, so the container still gets its set-id programs and devices.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::MsFlags;
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::fsutil::lock;

/// The most the data dir keeps of its mode: no one but its owner (and its group, which
/// may traverse but not list) gets in.
const DATA_DIR_MASK: u32 = 0o710;
/// The most the dirs holding image content keep of their mode.
const CONTENT_MASK: u32 = 0o700;

/// Create `dir` (and missing parents) with mode 0700, or tighten it to at most 0700.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(CONTENT_MASK)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    tighten(dir, CONTENT_MASK)
}

/// Tighten the data dir to at most 0710, unless it is not ours to tighten: someone else's
/// directory, or a shared one (the sticky bit, as /tmp has). The content dirs inside are
/// 0700 whatever the data dir is.
pub(crate) fn tighten_data_dir(dir: &Path) -> Result<()> {
    let md = fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    let sticky = md.mode() & 0o1000 != 0;
    if md.uid() != nix::unistd::geteuid().as_raw() || sticky {
        return Ok(());
    }
    tighten(dir, DATA_DIR_MASK)
}

/// Clear every mode bit of `dir` outside `mask` (only ever removes bits).
fn tighten(dir: &Path, mask: u32) -> Result<()> {
    let md = fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    let mode = md.mode() & 0o7777;
    if mode & !mask != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & mask))
            .with_context(|| format!("chmod {} to {:o}", dir.display(), mode & mask))?;
    }
    Ok(())
}

/// Whether the mount `dir` lives on ignores set-id bits and device nodes already.
pub(crate) fn is_nosuid_nodev(dir: &Path) -> Result<bool> {
    let st = statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.flags().contains(FsFlags::ST_NOSUID | FsFlags::ST_NODEV))
}

/// Make `dir` a nosuid,nodev mount (a private bind of itself) unless it is on one already.
/// Only root can mount; an unprivileged store relies on the modes alone (its content can
/// hold no set-id-root file or device node anyway: it could not create them). `lock_path`
/// serializes concurrent stores, so the bind is made once.
pub(crate) fn ensure_nosuid_nodev(dir: &Path, lock_path: &Path) -> Result<()> {
    if !nix::unistd::geteuid().is_root() || is_nosuid_nodev(dir)? {
        return Ok(());
    }
    let _held = lock(lock_path, true)?;
    if is_nosuid_nodev(dir)? {
        return Ok(());
    }
    let what = || format!("bind {} onto itself nosuid,nodev", dir.display());
    nix::mount::mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(what)?;
    // A bind remount sets every per-mount flag at once: keep those the mount had.
    let had = statvfs(dir).with_context(what)?.flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (f, m) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if had.contains(f) {
            flags |= m;
        }
    }
    let set =
        nix::mount::mount(None::<&str>, dir, None::<&str>, flags, None::<&str>).and_then(|()| {
            // Private: container overlays mounted below must not appear in other mounts
            // (the host's root is usually shared).
            nix::mount::mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
        });
    if let Err(e) = set {
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        return Err(e).with_context(what);
    }
    Ok(())
}
