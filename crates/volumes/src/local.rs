//! A node's local-path volumes, one directory each under the node's volume root:
//!
//! ```text
//! ROOT/pvc-<uid>_<namespace>_<claim>/
//!     volume.json   what it is: {"mode": "Filesystem"|"Block", "bytes": N}
//!     disk.img      a sparse file of exactly N bytes (ext4 inside, in Filesystem mode)
//!     fs/           where the ext4 is mounted (Filesystem mode), through a loop device
//! ```
//!
//! A volume is made in `NAME.tmp` and renamed into place, so a directory without the suffix
//! is always complete. The filesystem is mounted `nosuid,nodev`: what a pod writes into its
//! volume never becomes a set-uid program or a device node on the host. The loop device under
//! a mount is attached with autoclear, so unmounting releases it; a Block volume's device
//! stays attached while the volume exists and is detached when it is deleted.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::loopdev::{self, Attach};

/// How a volume is presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Filesystem,
    Block,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    mode: Mode,
    bytes: u64,
    /// The size the filesystem was last grown to (0: the volume's size); less than `bytes`
    /// while a growth waits for the volume's next mount.
    #[serde(default)]
    fs_bytes: u64,
}

impl Record {
    fn resize_pending(&self) -> bool {
        self.mode == Mode::Filesystem && self.fs_bytes != 0 && self.fs_bytes < self.bytes
    }
}

/// What a growth did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expansion {
    pub bytes: u64,
    /// The filesystem could not grow while in use (online resizing needs CAP_SYS_RESOURCE):
    /// it grows when the volume is next mounted with no pod on it (kube's
    /// FileSystemResizePending).
    pub filesystem_pending: bool,
}

/// ext4 needs room for its own structures: a volume smaller than this is made this size.
pub const MIN_FILESYSTEM_BYTES: u64 = 4 << 20;

/// The volumes under one root (a node's `DATA/volumes`).
#[derive(Clone, Debug)]
pub struct LocalVolumes {
    root: PathBuf,
}

/// The directory name of a claim's volume, as local-path-provisioner names it.
pub fn volume_id(claim_uid: &str, namespace: &str, claim: &str) -> String {
    format!("pvc-{claim_uid}_{namespace}_{claim}")
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!("volume id {id:?} is not a plain directory name");
    }
    Ok(())
}

/// Bytes free for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st =
        nix::sys::statvfs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// A size as Kubernetes writes one, to a tenth where it is not whole (`100Ti`, `42.1Gi`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut unit = None;
    for (i, u) in UNITS.iter().enumerate() {
        if bytes >= 1u64 << (10 * (i + 1)) {
            unit = Some((i, *u));
        }
    }
    match unit {
        None => bytes.to_string(),
        Some((i, u)) => {
            let size = 1u64 << (10 * (i + 1));
            if bytes.is_multiple_of(size) {
                format!("{}{u}", bytes / size)
            } else {
                format!("{:.1}{u}", bytes as f64 / size as f64)
            }
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_mount_point(dir: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| p == want)
}

impl LocalVolumes {
    /// The volumes under `root` (made 0700: only root on the node reaches them).
    pub fn open(root: &Path) -> Result<LocalVolumes> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        let root = fs::canonicalize(root)?;
        // A volume whose making was cut short never became visible: drop it.
        for e in fs::read_dir(&root)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(LocalVolumes { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Where a Filesystem volume is mounted (the path a PV names).
    pub fn mount_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn image(&self, id: &str) -> PathBuf {
        self.dir(id).join("disk.img")
    }

    fn record(&self, id: &str) -> Result<Record> {
        let path = self.dir(id).join("volume.json");
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&text)?)
    }

    fn write_record(dir: &Path, r: &Record) -> Result<()> {
        let tmp = dir.join("volume.json.tmp");
        fs::write(&tmp, serde_json::to_vec(r)?)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, dir.join("volume.json"))?;
        Ok(())
    }

    pub fn exists(&self, id: &str) -> bool {
        self.dir(id).join("volume.json").is_file()
    }

    /// The size a volume has now.
    pub fn bytes(&self, id: &str) -> Result<u64> {
        Ok(self.record(id)?.bytes)
    }

    /// Make volume `id` of `bytes` (rounded up to whole 4 KiB sectors, and to ext4's minimum in
    /// Filesystem mode). Refused, with the figures, when the node has less free space.
    /// Making an existing volume again is a no-op.
    pub fn provision(&self, id: &str, bytes: u64, mode: Mode) -> Result<u64> {
        check_id(id)?;
        if self.exists(id) {
            return self.bytes(id);
        }
        let mut bytes = bytes.div_ceil(4096) * 4096;
        if mode == Mode::Filesystem {
            bytes = bytes.max(MIN_FILESYSTEM_BYTES);
        }
        let free = free_bytes(&self.root)?;
        if bytes > free {
            bail!(
                "requested {} but the node has only {} free under {}",
                human(bytes),
                human(free),
                self.root.display()
            );
        }
        let tmp = self.root.join(format!("{id}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp)?;
        let result = (|| -> Result<()> {
            let image = tmp.join("disk.img");
            let f = fs::File::create(&image)?;
            f.set_len(bytes)?;
            f.sync_all()?;
            drop(f);
            if mode == Mode::Filesystem {
                // No reserved blocks: the claim's size is what its pod may write. The root
                // directory is world-writable, like local-path's, so non-root pods can use it.
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-m", "0", "-b", "4096"])
                    .args(["-E", "root_owner=0:0,nodiscard"])
                    .arg(&image))?;
                fs::create_dir(tmp.join("fs"))?;
            }
            Self::write_record(
                &tmp,
                &Record {
                    mode,
                    bytes,
                    fs_bytes: 0,
                },
            )?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, self.dir(id))?;
        fs::File::open(&self.root)?.sync_all()?;
        Ok(bytes)
    }

    /// Mount a Filesystem volume (if it is not mounted yet); returns its mount path.
    pub fn mount(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        let rec = self.record(id)?;
        if rec.mode != Mode::Filesystem {
            bail!("volume {id} is a block volume, not a filesystem");
        }
        let target = self.mount_path(id);
        if is_mount_point(&target) {
            if !rec.resize_pending() {
                return Ok(target);
            }
            // A growth waits for the filesystem: let go of it, and grow it if nothing else
            // holds it (the loop device goes with the last mount, anywhere).
            self.unmount(id)?;
            if !self.released(id) {
                // Still in a pod's mounts: take it back as it is.
                let dev = loopdev::attached_to(&self.image(id))
                    .into_iter()
                    .next()
                    .context("the volume's loop device vanished while in use")?;
                Self::mount_device(&dev, &target)?;
                return Ok(target);
            }
        }
        if rec.resize_pending() {
            self.grow_offline(id)?;
        }
        let (dev, handle) = loopdev::attach(
            &self.image(id),
            Attach {
                read_only: false,
                autoclear: true,
                direct_io: true,
            },
        )?;
        let mounted = Self::mount_device(&dev, &target);
        // The mount now holds the device; with autoclear it goes when the mount does (and
        // now, if the mount failed).
        drop(handle);
        mounted?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o777))?;
        Ok(target)
    }

    fn mount_device(dev: &Path, target: &Path) -> Result<()> {
        use nix::mount::MsFlags;
        nix::mount::mount(
            Some(dev),
            target,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .with_context(|| format!("mounting {} at {}", dev.display(), target.display()))
    }

    /// Whether the volume's loop device is gone (no mount anywhere holds the filesystem),
    /// waiting up to a second for the kernel's deferred release.
    fn released(&self, id: &str) -> bool {
        let image = self.image(id);
        for _ in 0..50 {
            if loopdev::attached_to(&image).is_empty() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Grow an unmounted filesystem to its volume's size.
    fn grow_offline(&self, id: &str) -> Result<()> {
        let mut rec = self.record(id)?;
        let image = self.image(id);
        run(Command::new("e2fsck").args(["-f", "-p"]).arg(&image))?;
        run(Command::new("resize2fs").arg(&image))?;
        rec.fs_bytes = rec.bytes;
        Self::write_record(&self.dir(id), &rec)
    }

    /// Whether the volume's filesystem still waits to grow.
    pub fn resize_pending(&self, id: &str) -> bool {
        self.record(id).is_ok_and(|r| r.resize_pending())
    }

    /// The loop device of a Block volume, attached if it is not yet.
    pub fn block_device(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        let rec = self.record(id)?;
        if rec.mode != Mode::Block {
            bail!("volume {id} is a filesystem volume, not a block one");
        }
        let image = self.image(id);
        if let Some(dev) = loopdev::attached_to(&image).into_iter().next() {
            return Ok(dev);
        }
        let (dev, _handle) = loopdev::attach(
            &image,
            Attach {
                direct_io: true,
                ..Attach::default()
            },
        )?;
        Ok(dev)
    }

    /// Grow volume `id` to `bytes` (never shrink): the file, the loop device's view of it,
    /// then the filesystem — online if it is mounted and the kernel lets us, else at its next
    /// mount with no pod on it.
    pub fn expand(&self, id: &str, bytes: u64) -> Result<Expansion> {
        check_id(id)?;
        let mut rec = self.record(id)?;
        let bytes = bytes.div_ceil(4096) * 4096;
        if bytes <= rec.bytes {
            return Ok(Expansion {
                bytes: rec.bytes,
                filesystem_pending: rec.resize_pending(),
            });
        }
        let free = free_bytes(&self.root)?;
        if bytes - rec.bytes > free {
            bail!(
                "growing by {} but the node has only {} free under {}",
                human(bytes - rec.bytes),
                human(free),
                self.root.display()
            );
        }
        let image = self.image(id);
        fs::OpenOptions::new()
            .write(true)
            .open(&image)?
            .set_len(bytes)?;
        let devices = loopdev::attached_to(&image);
        for dev in &devices {
            loopdev::refresh_capacity(dev)?;
        }
        if rec.mode == Mode::Filesystem && rec.fs_bytes == 0 {
            rec.fs_bytes = rec.bytes;
        }
        rec.bytes = bytes;
        Self::write_record(&self.dir(id), &rec)?;
        if rec.mode == Mode::Filesystem {
            match devices.first() {
                Some(dev) => {
                    // resize2fs grows a mounted ext4 online, given CAP_SYS_RESOURCE.
                    if let Err(e) = run(Command::new("resize2fs").arg(dev)) {
                        tracing::info!(
                            "volume {id}: the filesystem grows at its next mount ({e:#})"
                        );
                        return Ok(Expansion {
                            bytes,
                            filesystem_pending: true,
                        });
                    }
                    rec.fs_bytes = bytes;
                    Self::write_record(&self.dir(id), &rec)?;
                }
                None => self.grow_offline(id)?,
            }
        }
        Ok(Expansion {
            bytes,
            filesystem_pending: false,
        })
    }

    /// Unmount a volume (and so release its loop device); the data stays.
    pub fn unmount(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let target = self.mount_path(id);
        if is_mount_point(&target) {
            nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("unmounting {}", target.display()))?;
        }
        Ok(())
    }

    /// Remove volume `id` and its data.
    pub fn delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let dir = self.dir(id);
        if !dir.exists() {
            return Ok(());
        }
        self.unmount(id)?;
        for dev in loopdev::attached_to(&self.image(id)) {
            loopdev::detach(&dev)?;
        }
        // Renamed first, so a half-removed volume is never taken for a whole one.
        let doomed = self.root.join(format!("{id}.tmp"));
        let _ = fs::remove_dir_all(&doomed);
        fs::rename(&dir, &doomed)?;
        fs::remove_dir_all(&doomed)?;
        Ok(())
    }

    /// Let go of every volume (a node being taken down): unmounted, loop devices detached;
    /// the data stays. Returns how many were in use.
    pub fn release_all(&self) -> Result<usize> {
        let mut n = 0;
        for id in self.list() {
            let image = self.image(&id);
            let attached = loopdev::attached_to(&image);
            if attached.is_empty() {
                continue;
            }
            n += 1;
            self.unmount(&id)?;
            for dev in loopdev::attached_to(&image) {
                loopdev::detach(&dev)?;
            }
        }
        Ok(n)
    }

    /// The ids of the volumes under the root.
    pub fn list(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp") && self.exists(n))
            .collect();
        ids.sort();
        ids
    }

    /// Copy volume `id` into `dest` as volume `to` (a snapshot, a restore from one, a clone),
    /// grown to at least `bytes`: the image is copied with reflinks where the filesystem has
    /// them, else byte for byte (holes stay holes). A mounted filesystem is frozen while it
    /// is copied, so the copy is what was on disk at one instant. Copying again to an
    /// existing volume is a no-op.
    pub fn copy_to(&self, id: &str, dest: &LocalVolumes, to: &str, bytes: u64) -> Result<u64> {
        check_id(id)?;
        check_id(to)?;
        if dest.exists(to) {
            return dest.bytes(to);
        }
        let rec = self.record(id)?;
        let free = free_bytes(&dest.root)?;
        if rec.bytes > free {
            bail!(
                "copying {} but the node has only {} free under {}",
                human(rec.bytes),
                human(free),
                dest.root.display()
            );
        }
        let tmp = dest.root.join(format!("{to}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp)?;
        let result = (|| -> Result<()> {
            let frozen = Frozen::freeze(&self.mount_path(id))?;
            let copied = run(Command::new("cp")
                .args(["--reflink=auto", "--sparse=always"])
                .arg(self.image(id))
                .arg(tmp.join("disk.img")));
            drop(frozen);
            copied?;
            fs::File::open(tmp.join("disk.img"))?.sync_all()?;
            if rec.mode == Mode::Filesystem {
                fs::create_dir(tmp.join("fs"))?;
            }
            let copy = Record {
                fs_bytes: if rec.resize_pending() {
                    rec.fs_bytes
                } else {
                    0
                },
                ..rec.clone()
            };
            Self::write_record(&tmp, &copy)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, dest.dir(to))?;
        fs::File::open(&dest.root)?.sync_all()?;
        Ok(dest.expand(to, bytes)?.bytes)
    }
}

/// A mounted filesystem frozen (FIFREEZE) until dropped; nothing when it is not mounted.
struct Frozen(Option<fs::File>);

const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

impl Frozen {
    fn freeze(mount: &Path) -> Result<Frozen> {
        if !is_mount_point(mount) {
            return Ok(Frozen(None));
        }
        let dir = fs::File::open(mount).with_context(|| format!("opening {}", mount.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: FIFREEZE takes an int argument it does not read; the fd is a directory on
        // the filesystem to freeze.
        let r = unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE as _, 0) };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("freezing {}", mount.display()));
        }
        Ok(Frozen(Some(dir)))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            use std::os::fd::AsRawFd;
            // SAFETY: FITHAW on the directory FIFREEZE was given.
            unsafe { libc::ioctl(dir.as_raw_fd(), FITHAW as _, 0) };
        }
    }
}
