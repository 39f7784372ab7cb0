//! The content store: blobs at `images/blobs/sha256/<hex>`, each verified against its digest
//! before it gets its name, so a named blob is always whole and correct.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::digest::{Digest, HashingWriter};
use crate::fsutil::temp_sibling;
use crate::Store;

impl Store {
    /// Store the bytes of `r` as a blob and return their digest. The data goes to an unnamed
    /// temp file (O_TMPFILE, so a killed process leaves nothing) that is hashed while written,
    /// synced, and linked to its final name only if it matches `expected`. A blob that is
    /// already stored under `expected` is not read again.
    pub fn put_blob(&self, mut r: impl Read, expected: Option<&Digest>) -> Result<Digest> {
        if let Some(d) = expected {
            if self.has_blob(d) {
                return Ok(d.clone());
            }
        }
        self.write_blob(expected, |w| {
            copy_large(&mut r, w)?;
            Ok(())
        })
        .map(|(d, _)| d)
    }

    /// Store a blob that `write` produces (e.g. a tar being built) straight into the store,
    /// hashed on the way: no temp copy to read back. Same guarantees as [`Store::put_blob`].
    pub fn put_blob_with(
        &self,
        write: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        self.write_blob(None, |w| write(w))
    }

    /// Store a blob produced by `write` (e.g. a tar being built), returning its digest and
    /// size; same guarantees as [`Store::put_blob`].
    pub(crate) fn write_blob(
        &self,
        expected: Option<&Digest>,
        write: impl FnOnce(&mut HashingWriter<File>) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        let dir = &self.blobs;
        let (file, named_tmp) = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o444)
            .open(dir)
        {
            Ok(f) => (f, None),
            // Filesystems without O_TMPFILE: a named temp file that Store::open cleans up.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                let tmp = temp_sibling(&dir.join("blob"));
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o444)
                    .open(&tmp)
                    .with_context(|| format!("create {}", tmp.display()))?;
                (f, Some(tmp))
            }
            Err(e) => {
                return Err(e).with_context(|| format!("create a temp file in {}", dir.display()))
            }
        };
        let cleanup = || {
            if let Some(t) = &named_tmp {
                let _ = fs::remove_file(t);
            }
        };
        let mut w = HashingWriter::new(file);
        let written = write(&mut w).and_then(|_| Ok(w.inner.sync_all()?));
        if let Err(e) = written {
            cleanup();
            return Err(e.context("write blob"));
        }
        let digest = w.digest();
        if let Some(exp) = expected {
            if *exp != digest {
                cleanup();
                bail!(
                    "blob {exp} does not match its digest (got {digest}, {} bytes)",
                    w.written
                );
            }
        }
        let dst = self.blob_path(&digest);
        let linked = match &named_tmp {
            Some(t) => fs::rename(t, &dst),
            None => link_tmpfile(&w.inner, &dst),
        };
        match linked {
            Ok(()) => {}
            // Someone stored the same content meanwhile: same bytes, nothing to do.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                cleanup();
                return Err(e).with_context(|| format!("store blob {}", dst.display()));
            }
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("sync {}", dir.display()))?;
        Ok((digest, w.written))
    }

    /// Store a blob from memory (manifests, configs, indexes).
    pub fn put_blob_bytes(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        self.put_blob(data, expected)
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).with_context(|| format!("blob {d}"))
    }

    /// The whole blob in memory (for manifests and configs, which are small).
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut data)
            .with_context(|| format!("read blob {d}"))?;
        Ok(data)
    }

    pub fn blob_size(&self, d: &Digest) -> Result<u64> {
        Ok(fs::metadata(self.blob_path(d))
            .with_context(|| format!("blob {d}"))?
            .len())
    }

    /// Every stored blob.
    pub fn blobs(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in
            fs::read_dir(&self.blobs).with_context(|| format!("read {}", self.blobs.display()))?
        {
            if let Ok(d) = Digest::from_hex(&e?.file_name().to_string_lossy()) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Give an O_TMPFILE file its name (linkat through /proc/self/fd: the file is fully written,
/// so the name appears with its content, never empty).
fn link_tmpfile(f: &File, dst: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let src = format!("/proc/self/fd/{}", f.as_raw_fd());
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        src.as_str(),
        nix::fcntl::AT_FDCWD,
        dst,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// io::copy with a 1 MiB buffer (io::copy's 8 KiB costs many syscalls for layer-sized blobs).
pub(crate) fn copy_large(r: &mut impl Read, w: &mut impl io::Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}
