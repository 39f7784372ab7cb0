//! virtio-blk disks: `FILE[,ro][,format=raw|qcow2]`, checked before QEMU sees them.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Image formats QEMU is allowed to open (never probed by QEMU: a raw disk that a guest fills
/// with a qcow2 header must not turn into a qcow2 pointing at host files).
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

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

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
}

impl FromStr for Disk {
    type Err = anyhow::Error;

    /// `FILE[,ro][,format=raw|qcow2]`; without `format=`, qcow2 when the file has its magic.
    fn from_str(s: &str) -> Result<Disk> {
        let mut parts = s.split(',');
        let path = PathBuf::from(parts.next().unwrap_or(""));
        if path.as_os_str().is_empty() {
            bail!("disk {s:?}: no file");
        }
        let mut readonly = false;
        let mut format = None;
        for opt in parts {
            match opt {
                "ro" | "readonly" => readonly = true,
                "rw" => readonly = false,
                "format=raw" => format = Some(DiskFormat::Raw),
                "format=qcow2" => format = Some(DiskFormat::Qcow2),
                _ => bail!("disk {s:?}: unknown option {opt:?} (ro, format=raw, format=qcow2)"),
            }
        }
        let format = match format {
            Some(f) => f,
            None => sniff(&path).unwrap_or(DiskFormat::Raw),
        };
        Ok(Disk {
            path,
            readonly,
            format,
            scratch: false,
        })
    }
}

fn sniff(path: &Path) -> Option<DiskFormat> {
    let mut head = [0u8; 4];
    fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    Some(if &head == QCOW2_MAGIC {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    })
}

impl Disk {
    /// The file must be there, be a regular file, and look like its format.
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
        if self.format == DiskFormat::Qcow2 && sniff(&self.path) != Some(DiskFormat::Qcow2) {
            bail!("disk {p}: not a qcow2 image (bad magic)");
        }
        if !self.readonly && !self.scratch && meta.permissions().readonly() {
            bail!("disk {p}: file is read-only; add ,ro");
        }
        Ok(())
    }

    /// The canonical path, for comparing disks of different VMs.
    pub fn canonical(&self) -> PathBuf {
        fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
    }

    /// Whether QEMU opens the file for writing.
    pub fn writes(&self) -> bool {
        !self.readonly && !self.scratch
    }

    /// QEMU `-drive` value (commas in paths doubled, as QEMU's option parser wants).
    pub fn drive_arg(&self, id: &str) -> Result<String> {
        let path = self
            .path
            .to_str()
            .ok_or_else(|| anyhow!("disk {}: path is not UTF-8", self.path.display()))?;
        let mut arg = format!(
            "file={},if=none,id={id},format={},readonly={}",
            path.replace(',', ",,"),
            self.format.as_str(),
            if self.readonly { "on" } else { "off" }
        );
        if self.scratch {
            arg.push_str(",snapshot=on");
        }
        Ok(arg)
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
        let d: Disk = "/x/a.img,ro,format=qcow2".parse().unwrap();
        assert!(d.readonly);
        assert_eq!(d.format, DiskFormat::Qcow2);
        assert_eq!(
            d.drive_arg("d0").unwrap(),
            "file=/x/a.img,if=none,id=d0,format=qcow2,readonly=on"
        );
        let d: Disk = "/no/such,format=raw".parse().unwrap();
        assert!(!d.readonly);
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
