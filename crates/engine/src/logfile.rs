//! A container's log on disk, bounded: the logger rotates `ctr.log` once it would grow past
//! [`Rotation::max_bytes`], keeping `ctr.log.1` … `ctr.log.(max_files-1)` (the kubelet's
//! containerLogMaxSize and containerLogMaxFiles, 10 MiB and 5 by default), so a container that
//! writes without end costs the node a bounded amount of disk, and a reader a bounded amount
//! of memory (readers see the current file, as `kubectl logs` does on a kubelet).
//!
//! A follower keeps the file it reads open: after a rotation it reads the renamed file to its
//! end, then goes on with the new one from its start, so nothing written is skipped.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// How big a container's log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    /// Rotate before a write would take the current file past this many bytes.
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 2).
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

impl Rotation {
    /// The smallest file size accepted: a little over one poll's worth of records, so a
    /// rotation never happens on every write.
    pub const MIN_BYTES: u64 = 256 * 1024;

    pub fn new(max_bytes: u64, max_files: u32) -> Result<Rotation> {
        if max_bytes < Self::MIN_BYTES {
            bail!(
                "container log max size {max_bytes} bytes is below the minimum of {} (256Ki)",
                Self::MIN_BYTES
            );
        }
        if max_files < 2 {
            bail!("container log max files {max_files} must be at least 2");
        }
        Ok(Rotation {
            max_bytes,
            max_files,
        })
    }

    /// The most disk one container's log takes.
    pub fn budget(&self) -> u64 {
        self.max_bytes.saturating_mul(u64::from(self.max_files))
    }
}

/// A size as the kubelet and docker write it: `10Mi`, `10M`, `10m`, `512Ki`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("size {text:?}: expected a number with a unit like 10Mi"))?;
    let mult: u64 = match unit {
        "" | "b" | "B" => 1,
        "k" | "K" => 1000,
        "Ki" | "KiB" | "kb" | "KB" => 1024,
        "m" | "M" => 1000 * 1000,
        "Mi" | "MiB" | "mb" | "MB" => 1024 * 1024,
        "g" | "G" => 1000 * 1000 * 1000,
        "Gi" | "GiB" | "gb" | "GB" => 1024 * 1024 * 1024,
        _ => bail!("size {text:?}: unknown unit {unit:?} (use Ki, Mi, Gi, K, M or G)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("size {text:?} is too large"))
}

/// The `k`-th rotated file of `path` (`ctr.log.1` is the newest).
pub fn rotated(path: &Path, k: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// The logger's side: appends whole batches of records, rotating between batches.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl LogWriter {
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    /// Append `records` (whole records: a batch never straddles two files).
    pub fn write(&mut self, records: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + records.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(records)?;
        self.size += records.len() as u64;
        Ok(())
    }

    /// `ctr.log.K` → `ctr.log.K+1` (the oldest is replaced), `ctr.log` → `ctr.log.1`, and a new
    /// `ctr.log`.
    fn rotate(&mut self) -> io::Result<()> {
        let kept = self.rotation.max_files - 1;
        for k in (1..kept).rev() {
            match fs::rename(rotated(&self.path, k), rotated(&self.path, k + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The reader's side: what was written since the last read, across rotations.
pub struct LogFollower {
    path: PathBuf,
    file: Option<(File, u64)>,
}

impl LogFollower {
    /// Follow `path` (which may not exist yet).
    pub fn open(path: &Path) -> io::Result<LogFollower> {
        let mut f = LogFollower {
            path: path.to_path_buf(),
            file: None,
        };
        f.reopen()?;
        Ok(f)
    }

    /// Open what is at the path now; false when nothing is there.
    fn reopen(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(file) => {
                let ino = file.metadata()?.ino();
                self.file = Some((file, ino));
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the path now names another file than the one being read (a rotation).
    fn rotated_away(&self) -> bool {
        let Some((_, ino)) = &self.file else {
            return true;
        };
        fs::metadata(&self.path).is_ok_and(|m| m.ino() != *ino)
    }

    /// Everything written since the last call (empty when nothing new).
    pub fn read_new(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if let Some((file, _)) = &mut self.file {
            file.read_to_end(&mut out)?;
        }
        if self.rotated_away() {
            // The writer renamed the file away after its last write to it: read that to its
            // end (done above, once more now that the rename is seen), then the new one.
            if let Some((file, _)) = &mut self.file {
                file.read_to_end(&mut out)?;
            }
            if self.reopen()? {
                if let Some((file, _)) = &mut self.file {
                    file.read_to_end(&mut out)?;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("yun-logfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sizes_parse_like_the_kubelet_and_docker() {
        assert_eq!(parse_size("10Mi").unwrap(), 10 << 20);
        assert_eq!(parse_size("10m").unwrap(), 10_000_000);
        assert_eq!(parse_size("512Ki").unwrap(), 512 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("ten").unwrap_err().to_string().contains("10Mi"));
        assert!(parse_size("5Xi")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(Rotation::new(1024, 5)
            .unwrap_err()
            .to_string()
            .contains("minimum"));
        assert!(Rotation::new(1 << 20, 1)
            .unwrap_err()
            .to_string()
            .contains("at least 2"));
    }

    #[test]
    fn the_writer_keeps_max_files_and_the_follower_misses_nothing() {
        let d = dir("rotate");
        let path = d.join("ctr.log");
        let rotation = Rotation {
            max_bytes: 100,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, rotation).unwrap();
        let mut follower = LogFollower::open(&path).unwrap();
        let mut seen = Vec::new();
        let mut written = Vec::new();
        for i in 0..50 {
            let batch = format!("record {i:04} ..............................\n");
            w.write(batch.as_bytes()).unwrap();
            written.extend_from_slice(batch.as_bytes());
            // The follower reads every other batch: at most one rotation comes between two
            // reads (a follower further behind than max_files loses the oldest, as on a kubelet).
            if i % 2 == 1 {
                seen.extend(follower.read_new().unwrap());
            }
        }
        seen.extend(follower.read_new().unwrap());
        assert_eq!(
            String::from_utf8(seen).unwrap(),
            String::from_utf8(written).unwrap()
        );
        let mut names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["ctr.log", "ctr.log.1", "ctr.log.2"]);
        for n in &names {
            assert!(
                fs::metadata(d.join(n)).unwrap().len() <= 100,
                "{n} over the size"
            );
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
