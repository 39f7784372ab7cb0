//! Snapshots: each layer unpacked once into `snapshots/layers/<chain id hex>/fs`, shared
//! read-only by every container of every image that has it; a container's root is an overlay
//! of those lower dirs with its own upper and work dirs under `snapshots/containers/<key>`.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::content::copy_large;
use crate::digest::Digest;
use crate::digest::HashingWriter;
use crate::fsutil::{atomic_write, decompress, lock, try_lock, LockGuard, TEMP_MARK};
use crate::meta::{Image, LayerRecord};
use crate::unpack::{unpack_layer, UnpackOptions};
use crate::Store;

/// A prepared container root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// The overlay mount point: the container's `/`.
    pub path: PathBuf,
    /// The overlay's upper dir: what the container changed (for commits).
    pub upper: PathBuf,
}

/// The record of a prepared rootfs, `snapshots/containers/<key>/rootfs.json`.
#[derive(Debug, Serialize, Deserialize)]
struct RootfsRecord {
    image: Digest,
    /// Chain ids of its lower layers, bottom first: gc keeps them while the rootfs exists.
    layers: Vec<Digest>,
}

/// OCI chain ids: the first layer's is its diff id, each next one
/// `sha256(parent chain id + " " + diff id)`. A chain id names a layer *on top of* its
/// parents, which is what an unpacked directory is (its whiteouts refer to them).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

const UNPACK_TEMP: &str = "unpack";

impl Store {
    fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.layers.join(chain.hex())
    }

    fn layer_lock(&self, chain: &Digest) -> PathBuf {
        self.layers.join(format!("{}.lock", chain.hex()))
    }

    fn layer_temp(&self, chain: &Digest) -> PathBuf {
        self.layers
            .join(format!(".{}{TEMP_MARK}{UNPACK_TEMP}", chain.hex()))
    }

    /// Remove half-unpacked layers whose unpacker died (its lock is free).
    pub(crate) fn clean_layer_temps(&self) {
        let Ok(rd) = fs::read_dir(&self.layers) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(&format!("{TEMP_MARK}{UNPACK_TEMP}")))
            else {
                continue;
            };
            let Ok(chain) = Digest::from_hex(hex) else {
                continue;
            };
            if let Some(_held) = try_lock(&self.layer_lock(&chain)) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// Unpack every layer of `image` that is not unpacked yet (each exactly once, even with
    /// concurrent callers: a per-layer flock) and return the lower dirs, top layer first.
    pub fn unpack(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let rec = self.record(&image.id)?;
        let diff_ids: Vec<Digest> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let mut lowers = Vec::with_capacity(chains.len());
        for (layer, chain) in rec.layers.iter().zip(&chains) {
            lowers.push(self.unpack_once(layer, chain)?);
        }
        lowers.reverse();
        Ok(lowers)
    }

    fn unpack_once(&self, layer: &LayerRecord, chain: &Digest) -> Result<PathBuf> {
        if let Some(staged) = self
            .stage(layer, chain)
            .with_context(|| format!("unpack layer {}", layer.digest))?
        {
            staged.install()?;
        }
        Ok(self.layer_dir(chain).join("fs"))
    }

    /// Unpack `layer` into its temp dir (under its lock), checking every entry and the
    /// diff id; None when it is unpacked already. Nothing is in place until
    /// [`Staged::install`]; dropping the result removes it all.
    fn stage(&self, layer: &LayerRecord, chain: &Digest) -> Result<Option<Staged>> {
        let dir = self.layer_dir(chain);
        if dir.join("fs").is_dir() {
            return Ok(None);
        }
        self.protect_snapshots()?;
        let lock_path = self.layer_lock(chain);
        let held = lock(&lock_path, true)?;
        if dir.join("fs").is_dir() {
            return Ok(None); // unpacked by whoever held the lock before us
        }
        let staged = Staged {
            tmp: self.layer_temp(chain),
            dir,
            lock_path,
            installed: false,
            _held: held,
        };
        match fs::remove_dir_all(&staged.tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("remove {}", staged.tmp.display()))
            }
            _ => {}
        }
        fs::create_dir_all(staged.tmp.join("fs"))?;
        let blob = self.open_blob(&layer.digest)?;
        // Always hashed: the chain id (and so sharing) trusts the diff id, and a blob whose
        // digest equals its diff id may still be compressed.
        let opts = UnpackOptions {
            compute_diff_id: true,
        };
        let stats = unpack_layer(blob, &staged.tmp.join("fs"), &opts)?;
        check_diff_id(stats.diff_id.as_ref(), &layer.diff_id)?;
        tracing::debug!(layer = %layer.digest, entries = stats.entries, "unpacked");
        Ok(Some(staged))
    }

    /// Check every layer of an image being recorded (load, pull, commit) by unpacking it:
    /// the uncompressed stream must hash to its diff id and every entry must unpack (paths,
    /// link targets, whiteouts). Layers go in place only when all of them passed, so a
    /// refused image leaves no unpacked layer. A layer unpacked already is only re-hashed
    /// (its entries passed then), and not even that when a recorded image has the same
    /// blob with the same diff id.
    pub(crate) fn verify_layers(&self, layers: &[LayerRecord]) -> Result<()> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let db = self.read_db()?;
        let known: HashSet<(&Digest, &Digest)> = db
            .images
            .values()
            .flat_map(|r| r.layers.iter().map(|l| (&l.digest, &l.diff_id)))
            .collect();
        let mut staged = Vec::new();
        for (layer, chain) in layers.iter().zip(chain_ids(&diff_ids)) {
            let checked = if self.layer_dir(&chain).join("fs").is_dir() {
                if known.contains(&(&layer.digest, &layer.diff_id)) {
                    continue;
                }
                self.hash_layer(layer)
            } else {
                self.stage(layer, &chain).map(|s| staged.extend(s))
            };
            checked.with_context(|| format!("layer {}", layer.digest))?;
        }
        for s in staged {
            s.install()?;
        }
        Ok(())
    }

    /// The diff id check alone: decompress and hash.
    fn hash_layer(&self, layer: &LayerRecord) -> Result<()> {
        let (_, mut r) = decompress(self.open_blob(&layer.digest)?).context("read layer")?;
        let mut w = HashingWriter::new(io::sink());
        copy_large(&mut r, &mut w).context("read layer")?;
        check_diff_id(Some(&w.digest()), &layer.diff_id)
    }

    fn container_dir(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty()
            && key.len() <= 128
            && !key.starts_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            bail!("rootfs key {key:?}: use letters, digits, '_', '.', '-' (not leading '.')");
        }
        Ok(self.containers.join(key))
    }

    /// The root filesystem for container `key`: `image`'s layers (unpacked if needed) as
    /// overlay lower dirs, with the container's own upper and work dirs, mounted at
    /// `snapshots/containers/<key>/merged`. Even one layer goes through overlay, so the
    /// shared layer is never written. Calling it again for the same key and image remounts
    /// if needed (after a reboot the upper dir survives) and returns the same rootfs.
    pub fn prepare_rootfs(&self, key: &str, image: &Image) -> Result<Rootfs> {
        let dir = self.container_dir(key)?;
        let rec = self.record(&image.id)?;
        let diff_ids: Vec<Digest> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let rootfs = Rootfs {
            path: dir.join("merged"),
            upper: dir.join("upper"),
        };
        let record_path = dir.join("rootfs.json");
        let fresh = match fs::read(&record_path) {
            Ok(data) => {
                let old: RootfsRecord = serde_json::from_slice(&data)
                    .with_context(|| format!("{}", record_path.display()))?;
                if old.image != image.id {
                    bail!(
                        "rootfs {key:?} already exists for image {}",
                        old.image.short()
                    );
                }
                if is_mount_point(&rootfs.path)? {
                    return Ok(rootfs);
                }
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e).with_context(|| format!("read {}", record_path.display())),
        };
        let result = (|| -> Result<()> {
            // Record first, so gc keeps the layers from the moment we rely on them.
            if fresh {
                self.protect_snapshots()?;
                fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
                let rec = RootfsRecord {
                    image: image.id.clone(),
                    layers: chains.clone(),
                };
                atomic_write(&record_path, &serde_json::to_vec_pretty(&rec)?)?;
            }
            let lowers = self.unpack(image)?;
            for d in ["upper", "work", "merged"] {
                fs::create_dir_all(dir.join(d))?;
            }
            mount_overlay(&lowers, &rootfs.upper, &dir.join("work"), &rootfs.path)
        })();
        if let Err(e) = result {
            if fresh {
                let _ = fs::remove_dir_all(&dir);
            }
            return Err(e.context(format!("prepare rootfs {key:?}")));
        }
        Ok(rootfs)
    }

    /// Unmount container `key`'s rootfs (lazily, so a straggling process cannot block it)
    /// and delete its upper, work and merged dirs. Removing a rootfs that does not exist is
    /// not an error.
    pub fn remove_rootfs(&self, key: &str) -> Result<()> {
        self.unmount_rootfs(key)?;
        let dir = self.container_dir(key)?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Unmount container `key`'s rootfs (lazily), keeping its upper dir: what an exited
    /// container leaves, as podman unmounts a stopped container's storage. Every mount costs
    /// each reader of the mount table (the runtime reads it on every container operation), so
    /// a node's thousand finished Job pods must not keep theirs. `prepare_rootfs` mounts it
    /// again. Unmounting what is not mounted is not an error.
    pub fn unmount_rootfs(&self, key: &str) -> Result<()> {
        let merged = self.container_dir(key)?.join("merged");
        // Mounts may be stacked (a remount after a crash); peel until none is left.
        for _ in 0..16 {
            match nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => break,
                Err(e) => return Err(e).with_context(|| format!("unmount {}", merged.display())),
            }
        }
        Ok(())
    }

    /// (key, image id) of every prepared rootfs.
    pub fn rootfs_users(&self) -> Result<Vec<(String, Digest)>> {
        Ok(self
            .rootfs_records()?
            .into_iter()
            .map(|(k, r)| (k, r.image))
            .collect())
    }

    /// Chain ids of layers some prepared rootfs uses.
    pub(crate) fn layers_in_use(&self) -> Result<HashSet<Digest>> {
        Ok(self
            .rootfs_records()?
            .into_iter()
            .flat_map(|(_, r)| r.layers)
            .collect())
    }

    fn rootfs_records(&self) -> Result<Vec<(String, RootfsRecord)>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.containers)
            .with_context(|| format!("read {}", self.containers.display()))?;
        for e in rd {
            let e = e?;
            let key = e.file_name().to_string_lossy().into_owned();
            let path = e.path().join("rootfs.json");
            match fs::read(&path) {
                Ok(data) => {
                    let rec = serde_json::from_slice(&data)
                        .with_context(|| format!("{}", path.display()))?;
                    out.push((key, rec));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every unpacked layer (chain id) on disk.
    pub(crate) fn unpacked_layers(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.layers)? {
            if let Ok(d) = Digest::from_hex(&e?.file_name().to_string_lossy()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Delete an unpacked layer (under its lock, so never while it is being unpacked).
    pub(crate) fn remove_layer(&self, chain: &Digest) -> Result<u64> {
        let lock_path = self.layer_lock(chain);
        let guard = lock(&lock_path, true)?;
        let dir = self.layer_dir(chain);
        let size = dir_size(&dir);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("remove {}", dir.display()))
            }
            _ => {}
        }
        let _ = fs::remove_file(&lock_path);
        drop(guard);
        Ok(size)
    }
}

fn check_diff_id(got: Option<&Digest>, want: &Digest) -> Result<()> {
    match got {
        Some(got) if got != want => bail!(
            "uncompressed content is {got}, but the image config says {want} (rootfs.diff_ids)"
        ),
        _ => Ok(()),
    }
}

/// A layer unpacked into its temp dir, holding the layer's lock. Dropped without
/// [`Staged::install`], it removes the temp dir (and the lock file, when no layer came of
/// it): a refused layer leaves nothing.
struct Staged {
    tmp: PathBuf,
    dir: PathBuf,
    lock_path: PathBuf,
    installed: bool,
    _held: LockGuard,
}

impl Staged {
    fn install(mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.dir)
            .with_context(|| format!("rename {} into place", self.tmp.display()))?;
        self.installed = true;
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        fs::File::open(parent)?.sync_all()?;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.installed {
            return;
        }
        let _ = fs::remove_dir_all(&self.tmp);
        if !self.dir.exists() {
            // Safe while held: `lock` re-checks that the file it locked is still the one
            // named, so a waiter on this one starts over with a new file.
            let _ = fs::remove_file(&self.lock_path);
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn is_mount_point(path: &Path) -> Result<bool> {
    let parent = path
        .parent()
        .ok_or_else(|| anyhow!("{}: no parent", path.display()))?;
    match (fs::symlink_metadata(path), fs::metadata(parent)) {
        (Ok(m), Ok(p)) => Ok(m.dev() != p.dev()),
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        (Err(e), _) | (_, Err(e)) => Err(e).with_context(|| format!("stat {}", path.display())),
    }
}

/// Mount an overlay of `lowers` (top first) with `upper`/`work` at `target`.
fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            bail!(
                "overlay path {s:?} contains ',', ':' or '\\\\', which mount options cannot hold"
            );
        }
    }
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let mut opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    // Layers are shared by many overlays with different upper dirs; the inode index would
    // tie a lower dir to the first upper that used it.
    if Path::new("/sys/module/overlay/parameters/index").exists() {
        opts.push_str(",index=off");
    }
    // mount(2) takes at most a page of options; deep images go through the new mount API,
    // which takes lower dirs one by one.
    if opts.len() < 4000 {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .with_context(|| {
            format!(
                "mount overlay at {} ({} layers)",
                target.display(),
                lowers.len()
            )
        })
    } else {
        crate::snapshot::newmount::mount_overlay_fsconfig(lowers, upper, work, target)
    }
}

mod newmount;
