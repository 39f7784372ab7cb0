//! Small file-system helpers shared by the store's modules: atomic writes, flock guards,
//! compression sniffing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// Write `data` to `path` atomically: a temp file beside it, fsync, rename, fsync of the
/// directory. Readers see the old content or the new, never a mix.
pub(crate) fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("atomic_write: path has no parent")?;
    let tmp = temp_sibling(path);
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("write {}", path.display()))
}

/// `dir/.NAME.yun-tmp-PID-N`: unique within this process and between live processes.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}{TEMP_MARK}{}-{n}", std::process::id()))
}

/// Every temp file or dir the store creates has this in its name, so `Store::open` can find
/// leftovers of a killed process.
pub(crate) const TEMP_MARK: &str = ".yun-tmp-";

/// An flock on a lock file, released when dropped (or when the process dies, which is why
/// flock and not a lock file's existence: a killed yun never leaves the store locked).
pub(crate) struct LockGuard(#[allow(dead_code)] Flock<File>);

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Lock `path`. A holder may delete the lock file (a removed layer's): whoever was waiting
/// on it then holds a lock on a file nobody else can open, so it checks that the file it
/// locked is still the one at `path` and starts over if not.
pub(crate) fn lock(path: &Path, exclusive: bool) -> Result<LockGuard> {
    use std::os::unix::fs::MetadataExt;
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    loop {
        let f = open_lock_file(path).with_context(|| format!("open lock {}", path.display()))?;
        let locked = Flock::lock(f, arg)
            .map_err(|(_, e)| e)
            .with_context(|| format!("lock {}", path.display()))?;
        let same = match (locked.metadata(), fs::metadata(path)) {
            (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
            _ => false,
        };
        if same {
            return Ok(LockGuard(locked));
        }
    }
}

/// Like [`lock`] but exclusive and without waiting: `None` when someone holds it.
pub(crate) fn try_lock(path: &Path) -> Option<LockGuard> {
    let f = open_lock_file(path).ok()?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .ok()
        .map(LockGuard)
}

/// How a layer (or an archive) is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the magic bytes at the start of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// From an OCI or Docker layer media type, `None` when the type does not say.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") || mt.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("tar.diff") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// A reader of the decompressed stream of `r`, detecting the compression by magic bytes (the
/// media type can lie or be generic; the bytes cannot).
pub(crate) fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let kind = Compression::sniff(br.fill_buf()?);
    let reader: Box<dyn Read + 'a> = match kind {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
    };
    Ok((kind, reader))
}

/// Remove leftovers of killed processes (names with [`TEMP_MARK`]) directly under `dir`,
/// skipping those younger than a minute, which may belong to a live process.
pub(crate) fn clean_temp(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().contains(TEMP_MARK) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 60);
        if old {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}
