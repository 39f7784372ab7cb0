//! virtio-blk disks: `FILE[,ro][,format=raw|qcow2][,backing=allow]`, checked before QEMU sees
//! them and opened with an explicit `-blockdev` node chain: QEMU never probes a format nor
//! follows a file name it found inside an image.

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::qcow2;

/// Image formats QEMU is allowed to open. The format is what the user said when the disk was
/// given (raw by default) and never what the content looks like: a raw disk that a guest fills
/// with a qcow2 header must not turn into a qcow2 pointing at host files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// Longest backing chain yun follows (a loop or a pathological chain ends here).
const MAX_CHAIN: usize = 16;

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    #[serde(default)]
    pub readonly: bool,
    pub format: DiskFormat,
    /// Writes go to a throwaway overlay (QEMU `snapshot=on`); the file itself is never written.
    #[serde(default)]
    pub scratch: bool,
    /// `backing=allow`: a qcow2 may have a backing chain, of files inside the disk's own
    /// directory (symlinks resolved). Off by default: a user's image must not make QEMU read
    /// another host file.
    #[serde(default)]
    pub backing_allowed: bool,
}

/// One image file of a disk's chain, resolved by yun: what QEMU opens, in what format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    pub path: PathBuf,
    pub format: DiskFormat,
}

impl FromStr for Disk {
    type Err = anyhow::Error;

    /// `FILE[,ro][,format=raw|qcow2][,backing=allow]`; without `format=`, raw (never guessed
    /// from the content, which a guest may have written).
    fn from_str(s: &str) -> Result<Disk> {
        let mut parts = s.split(',');
        let path = PathBuf::from(parts.next().unwrap_or(""));
        if path.as_os_str().is_empty() {
            bail!("disk {s:?}: no file");
        }
        let mut readonly = false;
        let mut format = DiskFormat::Raw;
        let mut backing_allowed = false;
        for opt in parts {
            match opt {
                "ro" | "readonly" => readonly = true,
                "rw" => readonly = false,
                "format=raw" => format = DiskFormat::Raw,
                "format=qcow2" => format = DiskFormat::Qcow2,
                "backing=allow" => backing_allowed = true,
                "backing=deny" => backing_allowed = false,
                _ => bail!(
                    "disk {s:?}: unknown option {opt:?} (ro, format=raw, format=qcow2, backing=allow)"
                ),
            }
        }
        Ok(Disk {
            path,
            readonly,
            format,
            scratch: false,
            backing_allowed,
        })
    }
}

impl Disk {
    /// The file must be there, be a regular file, look like its format, and name no other
    /// file QEMU would open (see [`Disk::chain`]).
    pub fn validate(&self) -> Result<()> {
        let p = self.path.display();
        let meta = fs::metadata(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!("disk {p}: no such file"),
            _ => anyhow!("disk {p}: {e}"),
        })?;
        if !meta.is_file() {
            bail!("disk {p}: not a regular file");
        }
        if meta.len() == 0 {
            bail!("disk {p}: empty file");
        }
        if !self.readonly && !self.scratch && meta.permissions().readonly() {
            bail!("disk {p}: file is read-only; add ,ro");
        }
        self.chain().map(drop)
    }

    /// The files QEMU is to open for this disk, top first, each with its format. A raw disk is
    /// its file. A qcow2 is checked header by header: no external data file, no encryption,
    /// and a backing file only with `backing=allow` — then it must be a regular file inside the
    /// disk's own directory once every symlink is resolved, with its format recorded in the
    /// header (raw, or a qcow2 checked the same way). QEMU gets this chain spelled out and
    /// never reads a file name from an image itself.
    pub(crate) fn chain(&self) -> Result<Vec<Layer>> {
        let p = self.path.display();
        let top = fs::canonicalize(&self.path).map_err(|e| anyhow!("disk {p}: {e}"))?;
        let mut layers = vec![Layer {
            path: top.clone(),
            format: self.format,
        }];
        if self.format == DiskFormat::Raw {
            return Ok(layers);
        }
        let root = top.parent().unwrap_or(Path::new("/")).to_path_buf();
        loop {
            let cur = layers.last().expect("top layer").path.clone();
            let which = if cur == top {
                String::new()
            } else {
                format!(" (backing file {})", cur.display())
            };
            let h = qcow2::read_header(&cur).map_err(|e| anyhow!("disk {p}{which}: {e:#}"))?;
            if h.encrypted {
                bail!("disk {p}{which}: encrypted qcow2 images are not supported");
            }
            if let Some(data) = &h.data_file {
                bail!("disk {p}{which}: refused: its data lives in another file ({data:?})");
            }
            let Some(name) = h.backing_file else {
                return Ok(layers);
            };
            if !self.backing_allowed {
                bail!(
                    "disk {p}: refused: its qcow2 header names backing file {name:?} (add backing=allow to use a backing file in the disk's own directory)"
                );
            }
            let format = match h.backing_format.as_deref() {
                Some("raw") => DiskFormat::Raw,
                Some("qcow2") => DiskFormat::Qcow2,
                Some(f) => bail!("disk {p}: backing file {name:?}: format {f:?} not supported"),
                None => bail!(
                    "disk {p}: backing file {name:?}: no format recorded (QEMU would guess it; recreate with -F raw or -F qcow2)"
                ),
            };
            let named = cur.parent().unwrap_or(Path::new("/")).join(&name);
            let real = fs::canonicalize(&named)
                .map_err(|e| anyhow!("disk {p}: backing file {name:?}: {e}"))?;
            if !real.starts_with(&root) {
                bail!(
                    "disk {p}: refused: backing file {name:?} is {} outside the disk's directory {}",
                    real.display(),
                    root.display()
                );
            }
            if !real.is_file() {
                bail!("disk {p}: backing file {name:?}: not a regular file");
            }
            if layers.iter().any(|l| l.path == real) || layers.len() >= MAX_CHAIN {
                bail!("disk {p}: backing chain loops or is longer than {MAX_CHAIN}");
            }
            layers.push(Layer { path: real, format });
            if format == DiskFormat::Raw {
                return Ok(layers);
            }
        }
    }

    /// The canonical path, for comparing disks of different VMs.
    pub fn canonical(&self) -> PathBuf {
        fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
    }

    /// Whether QEMU opens the file for writing.
    pub fn writes(&self) -> bool {
        !self.readonly && !self.scratch
    }

    /// QEMU `-blockdev` value (JSON) for node `id`: the checked [`Disk::chain`], each layer
    /// with its driver named, and `"backing": null` on a qcow2 without an allowed backing file.
    /// Scratch disks are given as their overlay (see `qemu::run`), so are never this disk.
    pub(crate) fn blockdev_arg(&self, id: &str) -> Result<String> {
        let layers = self.chain()?;
        let mut node = layer_node(&layers, 0)?;
        node["node-name"] = json!(id);
        node["read-only"] = json!(self.readonly);
        Ok(node.to_string())
    }
}

fn layer_node(layers: &[Layer], i: usize) -> Result<Value> {
    let l = &layers[i];
    let path = l
        .path
        .to_str()
        .ok_or_else(|| anyhow!("disk {}: path is not UTF-8", l.path.display()))?;
    let mut node = json!({
        "driver": l.format.as_str(),
        "file": { "driver": "file", "filename": path },
    });
    if i > 0 {
        node["read-only"] = json!(true);
    }
    if l.format == DiskFormat::Qcow2 {
        node["backing"] = match layers.get(i + 1) {
            Some(_) => layer_node(layers, i + 1)?,
            None => Value::Null,
        };
    }
    Ok(node)
}

/// Scratch disks of a throwaway run as qcow2 overlays (writes land there; the disk itself is
/// only read), made next to their disk and removed once QEMU has them open (or on drop).
#[derive(Default)]
pub(crate) struct Overlays(Vec<PathBuf>);

impl Overlays {
    /// `d` itself, or for a scratch disk an overlay over it, with the disk as its backing.
    pub(crate) fn over(&mut self, d: Disk) -> Result<Disk> {
        if !d.scratch {
            return Ok(d);
        }
        let base =
            fs::canonicalize(&d.path).with_context(|| format!("disk {}", d.path.display()))?;
        let name = format!(
            ".yun-scratch-{}-{}.qcow2",
            std::process::id(),
            crate::qemu::nonce()
        );
        let overlay = base.with_file_name(name);
        let out = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", d.format.as_str(), "-b"])
            .arg(&base)
            .arg(&overlay)
            .output()
            .context("qemu-img: cannot run (install qemu-utils)")?;
        if !out.status.success() {
            let _ = fs::remove_file(&overlay);
            bail!(
                "disk {}: cannot make a scratch overlay: {}",
                d.path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.0.push(overlay.clone());
        Ok(Disk {
            path: overlay,
            readonly: false,
            format: DiskFormat::Qcow2,
            scratch: false,
            backing_allowed: true,
        })
    }

    pub(crate) fn unlink(&mut self) {
        for p in self.0.drain(..) {
            let _ = fs::remove_file(p);
        }
    }
}

impl Drop for Overlays {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Map QEMU's image-locking complaint (somewhere in its stderr) to a line naming the disk.
pub(crate) fn explain_qemu_error(stderr: &str, disks: &[Disk]) -> Option<String> {
    let line = stderr
        .lines()
        .find(|l| l.contains("Failed to get") && l.contains("lock"))?;
    let disk = disks
        .iter()
        .find(|d| line.contains(&*d.path.to_string_lossy()))
        .or(disks.first())?;
    Some(format!(
        "disk {}: already open read-write by another process ({})",
        disk.path.display(),
        line.trim()
    ))
}

/// Refuse a disk another live VM has open in a conflicting way (either side writing).
pub(crate) fn check_conflicts(mine: &[Disk], others: &[(String, Vec<Disk>)]) -> Result<()> {
    for d in mine {
        let path = d.canonical();
        for (vm, disks) in others {
            for o in disks.iter().filter(|o| o.canonical() == path) {
                if o.writes() {
                    bail!(
                        "disk {}: already open read-write by VM {vm:?}",
                        d.path.display()
                    );
                }
                if d.writes() {
                    bail!(
                        "disk {}: open read-only by VM {vm:?}; cannot open it read-write",
                        d.path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// A sparse raw file of `size_mib` MiB with an empty ext4 file system (for tests and images).
/// `inodes`: at least this many (an image with many small files outgrows the default ratio).
pub fn make_ext4(
    path: &Path,
    size_mib: u64,
    from_dir: Option<&Path>,
    inodes: Option<u64>,
) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.set_len(size_mib * 1024 * 1024)?;
    drop(f);
    let mut cmd = std::process::Command::new("mkfs.ext4");
    // No journal: a VM disk written by one guest at a time, rebuilt rather than repaired.
    cmd.args(["-q", "-F", "-O", "^has_journal", "-E", "root_owner=0:0"]);
    if let Some(d) = from_dir {
        cmd.arg("-d").arg(d);
    }
    if let Some(n) = inodes {
        cmd.arg("-N").arg(n.to_string());
    }
    cmd.arg(path);
    let out = cmd
        .output()
        .context("mkfs.ext4: cannot run (install e2fsprogs)")?;
    if !out.status.success() {
        let _ = fs::remove_file(path);
        bail!(
            "mkfs.ext4 {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let d: Disk = "/x/a.img,ro,format=qcow2,backing=allow".parse().unwrap();
        assert!(d.readonly && d.backing_allowed);
        assert_eq!(d.format, DiskFormat::Qcow2);
        let d: Disk = "/no/such".parse().unwrap();
        assert!(!d.readonly && !d.backing_allowed);
        assert_eq!(d.format, DiskFormat::Raw);
        assert!("/x,bogus".parse::<Disk>().is_err());
        assert!(",ro".parse::<Disk>().is_err());
    }

    #[test]
    fn conflicts() {
        let rw: Disk = "/tmp/yun-x,format=raw".parse().unwrap();
        let ro: Disk = "/tmp/yun-x,ro,format=raw".parse().unwrap();
        let others = vec![("a".to_string(), vec![rw.clone()])];
        assert!(check_conflicts(std::slice::from_ref(&ro), &others).is_err());
        let others = vec![("a".to_string(), vec![ro.clone()])];
        assert!(check_conflicts(std::slice::from_ref(&ro), &others).is_ok());
        assert!(check_conflicts(&[rw], &others).is_err());
    }
}
