//! Layer unpack: a tar stream (plain, gzip or zstd) written into a directory safely and
//! faithfully.
//!
//! Safety: every entry's parent directory is opened with openat2(RESOLVE_IN_ROOT) from a
//! descriptor of the destination, so `..`, absolute symlinks and symlink chains all resolve
//! inside it; the entry itself is then created relative to that descriptor with *at calls
//! that never follow a final symlink (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, O_EXCL). A path that
//! climbs above the root with `..` is refused; a leading `/` is dropped (as GNU tar does).
//!
//! Faithfulness: modes (with set-id bits, applied after chown, which clears them), owners,
//! mtimes (PAX sub-second ones too), PAX `SCHILY.xattr.*`, hard links within the layer,
//! devices, fifos, symlinks. Whiteouts become what overlayfs reads in a lower dir:
//! `.wh.NAME` a 0:0 character device NAME, `.wh..wh..opq` the `trusted.overlay.opaque=y`
//! xattr on its directory.
//!
//! Speed: decompression (and diff-id hashing) run on a second thread ([`pipe`]); parent
//! directories stay open in a small cache so most entries cost no path lookup; a regular file
//! costs openat, write, fchown, futimens and close (plus fchmod only when the umask or set-id
//! bits require it) — what GNU tar spends, minus its fchmod.

mod pipe;
mod sys;

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};

use crate::digest::Digest;

/// Counts from one unpack.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries applied (files, dirs, links, whiteouts...).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// The sha256 of the uncompressed tar stream, when asked for.
    pub diff_id: Option<Digest>,
}

#[derive(Debug, Default, Clone)]
pub struct UnpackOptions {
    /// Hash the uncompressed stream (the layer's diff id) while unpacking.
    pub compute_diff_id: bool,
}

/// Unpack the layer tar `src` (plain, gzip or zstd: detected from its first bytes) into the
/// existing directory `dest`. Nothing is written outside `dest`. On error `dest` holds part of
/// the layer: callers unpack into a temp dir and rename (as [`crate::Store::unpack`] does).
pub fn unpack_layer(
    src: impl Read + Send + 'static,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    let root = File::open(dest)
        .map(OwnedFd::from)
        .with_context(|| format!("unpack into {}", dest.display()))?;
    let stream = pipe::spawn(src, opts.compute_diff_id);
    let mut u = Unpacker {
        root: Rc::new(root),
        dirs: HashMap::new(),
        stale_dirs: false,
        dir_times: Vec::new(),
        umask: sys::current_umask().unwrap_or(0o777),
        is_root: nix::unistd::geteuid().is_root(),
        buf: vec![0u8; 1 << 20],
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(stream);
    let result = (|| -> Result<()> {
        for entry in archive.entries().context("read layer tar")? {
            let mut entry = entry.context("read layer tar")?;
            let path = entry.path_bytes().into_owned();
            u.entry(&mut entry)
                .with_context(|| format!("layer entry {:?}", String::from_utf8_lossy(&path)))?;
        }
        u.finish_dir_times()
    })();
    let mut stream = archive.into_inner();
    let produced = stream.finish(result.is_ok());
    result?;
    u.stats.diff_id = produced.context("read layer")?;
    Ok(u.stats)
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Unpacker {
    root: Rc<OwnedFd>,
    /// Open directories by their path in the layer ("a/b"), so siblings skip the lookup.
    dirs: HashMap<Vec<u8>, Rc<OwnedFd>>,
    /// Set when an existing directory or symlink was replaced: cached paths may now resolve
    /// elsewhere, so the cache is dropped before the next entry.
    stale_dirs: bool,
    /// Directory mtimes, applied last: creating children would change them.
    dir_times: Vec<(Vec<u8>, libc::timespec)>,
    umask: u32,
    is_root: bool,
    buf: Vec<u8>,
    stats: UnpackStats,
}

const MAX_CACHED_DIRS: usize = 256;

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        use tar::EntryType as T;
        if self.stale_dirs || self.dirs.len() > MAX_CACHED_DIRS {
            self.dirs.clear();
            self.stale_dirs = false;
        }
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        let rel = clean_path(&entry.path_bytes())?;
        let meta = read_meta(entry)?;
        self.stats.entries += 1;
        let (parent_rel, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], &rel[..]),
        };
        if name.is_empty() {
            // The layer's root itself ("./"): only its metadata applies.
            if kind == T::Directory {
                let root = self.root.clone();
                self.set_meta_fd(root.as_fd(), &meta, true)?;
                self.dir_times.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        }
        // A whiteout is a marker, never a directory: `a/.wh.x/b` would make a real
        // directory named `.wh.x` that overlay shows in the container as is.
        if let Some(c) = parent_rel
            .split(|&b| b == b'/')
            .find(|c| c.starts_with(b".wh."))
        {
            bail!(
                "invalid whiteout: {:?} is used as a directory",
                String::from_utf8_lossy(c)
            );
        }
        let parent = self.dir(parent_rel)?;
        let parent = parent.as_fd();
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent, hidden);
        }
        let cname = cstring(name)?;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let file = self
                    .replace(parent, &cname, false, || {
                        sys::openat(
                            parent,
                            &cname,
                            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                            meta.mode & 0o777,
                        )
                    })?
                    .expect("not a directory");
                let mut file = File::from(file);
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e).context("read"),
                    };
                    file.write_all(&self.buf[..n]).context("write")?;
                    self.stats.bytes += n as u64;
                }
                self.set_meta_fd(file.as_fd(), &meta, false)?;
                sys::futimens(file.as_fd(), meta.mtime).context("set mtime")?;
            }
            T::Directory => {
                self.replace(parent, &cname, true, || {
                    sys::mkdirat(parent, &cname, meta.mode & 0o777)
                })?;
                let dir = sys::openat(parent, &cname, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .context("open the new directory")?;
                self.set_meta_fd(dir.as_fd(), &meta, true)?;
                self.dirs.insert(rel.clone(), Rc::new(dir));
                self.dir_times.push((rel, meta.mtime));
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("symlink without a target"))?;
                let target = cstring(&target)?;
                self.replace(parent, &cname, false, || {
                    sys::symlinkat(&target, parent, &cname)
                })?;
                self.set_meta_at(parent, &cname, &meta, false)?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("hard link without a target"))?;
                let target_rel = clean_path(&target).with_context(|| {
                    format!("hard link target {:?}", String::from_utf8_lossy(&target))
                })?;
                if target_rel == rel {
                    return Ok(());
                }
                let (tparent, tname) = match target_rel.iter().rposition(|&b| b == b'/') {
                    Some(i) => (&target_rel[..i], &target_rel[i + 1..]),
                    None => (&target_rel[..0], &target_rel[..]),
                };
                let tdir = self.link_target_dir(tparent, &target)?;
                let tname = cstring(tname)?;
                self.replace(parent, &cname, false, || {
                    sys::linkat(tdir.as_fd(), &tname, parent, &cname)
                })
                .with_context(|| {
                    format!(
                        "hard link to {:?} (must be an earlier entry of this layer)",
                        String::from_utf8_lossy(&target)
                    )
                })?;
            }
            T::Char | T::Block | T::Fifo => {
                let (fmt, dev) = match kind {
                    T::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major()?.unwrap_or(0);
                        let minor = h.device_minor()?.unwrap_or(0);
                        let fmt = if kind == T::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (fmt, libc::makedev(major, minor))
                    }
                };
                self.replace(parent, &cname, false, || {
                    sys::mknodat(parent, &cname, fmt | (meta.mode & 0o777), dev)
                })
                .context("mknod")?;
                self.set_meta_at(parent, &cname, &meta, true)?;
            }
            other => {
                tracing::warn!(
                    "layer entry {:?}: skipping unsupported tar entry type {other:?}",
                    String::from_utf8_lossy(&rel)
                );
                self.stats.entries -= 1;
            }
        }
        Ok(())
    }

    /// The open directory at `rel` (inside the root whatever symlinks say), created with
    /// mode 0755 where missing, as tar does for entries whose parents were not listed.
    fn dir(&mut self, rel: &[u8]) -> Result<Rc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.dirs.get(rel) {
            return Ok(fd.clone());
        }
        let fd = match sys::open_dir_in_root(self.root.as_fd(), &cstring(rel)?) {
            Ok(fd) => Rc::new(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.mkdir_all(rel)?,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("parent directory {:?}", String::from_utf8_lossy(rel))
                })
            }
        };
        self.dirs.insert(rel.to_vec(), fd.clone());
        Ok(fd)
    }

    /// The directory of a hard link's target, by its literal path: a link must name an
    /// earlier entry of this layer, so a symlink on the way (which could lead anywhere in
    /// the layer, and means a tar made by something other than an archiver) is refused,
    /// as is a directory that does not exist (nothing is created for a link).
    fn link_target_dir(&mut self, rel: &[u8], target: &[u8]) -> Result<Rc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        let shown = String::from_utf8_lossy(target);
        match sys::open_dir_beneath_no_symlinks(self.root.as_fd(), &cstring(rel)?) {
            Ok(fd) => Ok(Rc::new(fd)),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                bail!("hard link target {shown:?} goes through a symlink")
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                bail!("hard link target {shown:?} is not an earlier entry of this layer")
            }
            Err(e) => Err(e).with_context(|| format!("hard link target {shown:?}")),
        }
    }

    fn mkdir_all(&mut self, rel: &[u8]) -> Result<Rc<OwnedFd>> {
        let mut cur = self.root.clone();
        let mut end = 0;
        for comp in rel.split(|&b| b == b'/') {
            end += comp.len();
            let prefix = &rel[..end];
            let cprefix = cstring(prefix)?;
            let what = || format!("parent directory {:?}", String::from_utf8_lossy(prefix));
            cur = match sys::open_dir_in_root(self.root.as_fd(), &cprefix) {
                Ok(fd) => Rc::new(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // mkdirat never follows a final symlink: EEXIST here means a dangling
                    // symlink (pointing at nothing inside the root), which the open below
                    // then reports as ENOENT. Any other failure shows there too.
                    let _ = sys::mkdirat(cur.as_fd(), &cstring(comp)?, 0o755);
                    Rc::new(sys::open_dir_in_root(self.root.as_fd(), &cprefix).with_context(what)?)
                }
                Err(e) => return Err(e).with_context(what),
            };
            end += 1; // the '/'
        }
        Ok(cur)
    }

    /// Run `create`; if the name exists, replace it (a directory entry over a directory
    /// keeps it and returns None, as tar merges them) and run `create` again.
    fn replace<T>(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        is_dir: bool,
        create: impl Fn() -> io::Result<T>,
    ) -> Result<Option<T>> {
        match create() {
            Ok(t) => return Ok(Some(t)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let fmt = sys::lstat_mode(parent, name).context("stat the existing entry")? & libc::S_IFMT;
        if fmt == libc::S_IFDIR {
            if is_dir {
                return Ok(None);
            }
            remove_all_at(parent, name).context("remove the existing directory")?;
        } else {
            sys::unlinkat(parent, name, false).context("remove the existing entry")?;
        }
        if fmt == libc::S_IFDIR || fmt == libc::S_IFLNK {
            self.stale_dirs = true;
        }
        Ok(Some(create()?))
    }

    fn whiteout(&mut self, parent: BorrowedFd, hidden: &[u8]) -> Result<()> {
        if hidden == b".wh..opq" {
            return sys::fsetxattr(parent, c"trusted.overlay.opaque", b"y")
                .context("set trusted.overlay.opaque on the directory");
        }
        if hidden.starts_with(b".wh.") {
            return Ok(()); // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs), nothing to apply
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            bail!("invalid whiteout name");
        }
        let name = cstring(hidden)?;
        self.replace(parent, &name, false, || {
            sys::mknodat(parent, &name, libc::S_IFCHR, libc::makedev(0, 0))
        })
        .context("create the whiteout device")?;
        Ok(())
    }

    /// Owner, mode and xattrs through an open descriptor (files, directories). Order matters:
    /// chown clears set-id bits and file capabilities, so mode and xattrs come after it.
    fn set_meta_fd(&self, fd: BorrowedFd, meta: &Meta, is_dir: bool) -> Result<()> {
        self.chown_result(sys::fchown(fd, meta.uid, meta.gid))?;
        let mode = meta.mode & 0o7777;
        if is_dir || mode != mode & 0o777 & !self.umask {
            sys::fchmod(fd, mode).context("chmod")?;
        }
        for (k, v) in &meta.xattrs {
            xattr_result(k, sys::fsetxattr(fd, k, v))?;
        }
        Ok(())
    }

    /// Owner, mode (for nodes) , xattrs and mtime of a name that cannot be opened (symlinks,
    /// devices, fifos), never following it.
    fn set_meta_at(&self, parent: BorrowedFd, name: &CStr, meta: &Meta, chmod: bool) -> Result<()> {
        self.chown_result(sys::lchownat(parent, name, meta.uid, meta.gid))?;
        if chmod {
            sys::fchmodat(parent, name, meta.mode & 0o7777).context("chmod")?;
        }
        for (k, v) in &meta.xattrs {
            xattr_result(k, sys::lsetxattrat(parent, name, k, v))?;
        }
        sys::lutimensat(parent, name, meta.mtime).context("set mtime")
    }

    fn chown_result(&self, r: io::Result<()>) -> Result<()> {
        match r {
            // Without privileges files stay ours, as with tar run by a user.
            Err(e) if !self.is_root && e.raw_os_error() == Some(libc::EPERM) => Ok(()),
            r => r.context("chown"),
        }
    }

    fn finish_dir_times(&mut self) -> Result<()> {
        // Newest listing of a directory first; an earlier listing of the same path is stale.
        let mut done = std::collections::HashSet::new();
        for (rel, t) in self.dir_times.iter().rev() {
            if !done.insert(rel.as_slice()) {
                continue;
            }
            let fd = match self.dirs.get(rel) {
                Some(fd) if !self.stale_dirs => fd.clone(),
                _ if rel.is_empty() => self.root.clone(),
                _ => match sys::open_dir_in_root(self.root.as_fd(), &cstring(rel)?) {
                    Ok(fd) => Rc::new(fd),
                    // Replaced by a later entry: its own time was set then.
                    Err(_) => continue,
                },
            };
            sys::futimens(fd.as_fd(), *t)
                .with_context(|| format!("set mtime of {:?}", String::from_utf8_lossy(rel)))?;
        }
        Ok(())
    }
}

fn xattr_result(key: &CStr, r: io::Result<()>) -> Result<()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => {
            tracing::debug!("xattr {key:?} not supported here: skipped");
            Ok(())
        }
        r => r.with_context(|| format!("set xattr {key:?}")),
    }
}

/// The entry's path made relative and clean: no leading `/`, no `.` or empty components,
/// `..` applied lexically and refused when it would climb above the root.
fn clean_path(raw: &[u8]) -> Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    bail!("path escapes the layer root with \"..\"");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

fn cstring(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| anyhow!("path contains a NUL byte"))
}

fn read_meta<R: Read>(entry: &mut tar::Entry<R>) -> Result<Meta> {
    let h = entry.header();
    let mut meta = Meta {
        mode: h.mode().context("header mode")? & 0o7777,
        uid: u32::try_from(h.uid().context("header uid")?).context("uid")?,
        gid: u32::try_from(h.gid().context("header gid")?).context("gid")?,
        mtime: sys::timespec(h.mtime().unwrap_or(0) as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions().context("PAX header")? {
        for ext in pax {
            let ext = ext.context("PAX header")?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                // overlayfs reads trusted.overlay.* of lower dirs as instructions (redirects,
                // metacopy): a layer must not smuggle those in. Opaque dirs come from
                // `.wh..wh..opq` only.
                if name.starts_with("trusted.overlay.") {
                    continue;
                }
                meta.xattrs
                    .push((cstring(name.as_bytes())?, ext.value_bytes().to_vec()));
            } else if key == "mtime" {
                if let Some(t) = parse_pax_time(ext.value().unwrap_or("")) {
                    meta.mtime = t;
                }
            }
        }
    }
    Ok(meta)
}

/// A PAX time: decimal seconds with an optional fraction ("1700000000.123456789").
fn parse_pax_time(s: &str) -> Option<libc::timespec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nsec: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    for _ in digits.len()..9 {
        nsec *= 10;
    }
    if secs < 0 && nsec > 0 {
        return Some(sys::timespec(secs - 1, 1_000_000_000 - nsec));
    }
    Some(sys::timespec(secs, nsec))
}

/// Remove `name` in `dir` and everything under it, never following a symlink.
pub(crate) fn remove_all_at(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    match sys::unlinkat(dir, name, true) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
        Err(e) => return Err(e),
    }
    let sub = sys::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from_fd(sub).map_err(io::Error::from)?;
    let names: Vec<(CString, bool)> = d
        .iter()
        .filter_map(|e| e.ok())
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .map(|e| {
            let is_dir = e.file_type() == Some(nix::dir::Type::Directory);
            (e.file_name().to_owned(), is_dir)
        })
        .collect();
    for (n, is_dir) in names {
        if is_dir {
            remove_all_at(d.as_fd(), &n)?;
        } else {
            sys::unlinkat(d.as_fd(), &n, false)?;
        }
    }
    sys::unlinkat(dir, name, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(b"./a//b/./c").unwrap(), b"a/b/c");
        assert_eq!(clean_path(b"/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean_path(b"a/../b").unwrap(), b"b");
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert!(clean_path(b"../x").is_err());
        assert!(clean_path(b"a/../../x").is_err());
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1700000000, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time("x").is_none());
    }
}
