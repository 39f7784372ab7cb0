//! Paths inside the container's root, resolved so they can never leave it.
//!
//! A rootfs is untrusted: it may hold symlinks like `/etc -> /host/etc` or `../../..`. Every
//! path the runtime creates or mounts on is resolved with openat2(RESOLVE_IN_ROOT) from a
//! descriptor of the root, and mounts target `/proc/self/fd/N` of the resolved descriptor, so
//! a symlink swapped in between the check and the mount cannot redirect it to the host.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// An open directory that paths are resolved within.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// The magic-link path of an fd: mounting on it mounts on the exact inode it holds.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `path` relative to the root ("/a/b" -> "a/b", "/" -> ".").
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("open rootfs {}", path.display()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolve `path` (a container path) to an O_PATH descriptor, never leaving the root.
    pub fn open_path(&self, path: &Path) -> nix::Result<OwnedFd> {
        self.open_with(path, OFlag::O_PATH)
    }

    pub fn open_with(&self, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        loop {
            match openat2(self.fd.as_fd(), &relative(path), how) {
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                other => return other,
            }
        }
    }

    /// Create `path` and its parents as directories (mode 0755) inside the root.
    pub fn mkdir_all(&self, path: &Path) -> Result<OwnedFd> {
        match self.open_with(path, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR) => bail!("{}: exists and is not a directory", path.display()),
            Err(e) => return Err(e).with_context(|| format!("resolve {}", path.display())),
        }
        let (parent, name) = split(path)?;
        let pfd = self.mkdir_all(parent)?;
        match nix::sys::stat::mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("mkdir {}", path.display())),
        }
        self.open_with(path, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .with_context(|| format!("resolve {}", path.display()))
    }

    /// Make sure `path` exists as a non-directory (an empty file is created if missing).
    pub fn create_file(&self, path: &Path) -> Result<OwnedFd> {
        match self.open_path(path) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("resolve {}", path.display())),
        }
        let (parent, name) = split(path)?;
        let pfd = self.mkdir_all(parent)?;
        let dirfd = self.reopen_dir(&pfd)?;
        match nix::fcntl::openat(
            dirfd.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(_) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
        }
        self.open_path(path)
            .with_context(|| format!("resolve {}", path.display()))
    }

    /// A real (non O_PATH) directory descriptor for the *at() calls that need one.
    pub fn reopen_dir(&self, fd: &OwnedFd) -> Result<OwnedFd> {
        nix::fcntl::open(
            fd_path(fd).as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context("reopen directory")
    }

    /// The parent directory (opened, inside the root) and the last name of `path`.
    pub fn parent_of<'a>(&self, path: &'a Path) -> Result<(OwnedFd, &'a OsStr)> {
        let (parent, name) = split(path)?;
        let pfd = self.mkdir_all(parent)?;
        Ok((self.reopen_dir(&pfd)?, name))
    }
}

fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    let name = path
        .file_name()
        .filter(|n| n.as_bytes() != b"..")
        .with_context(|| format!("{}: no file name", path.display()))?;
    Ok((path.parent().unwrap_or(Path::new("/")), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn symlinks_cannot_escape() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("yun-test-path-{}", std::process::id())));
        std::fs::create_dir_all(dir.0.join("root")).unwrap();
        std::os::unix::fs::symlink("/", dir.0.join("root/evil")).unwrap();
        std::os::unix::fs::symlink("../../../..", dir.0.join("root/up")).unwrap();
        let root = Root::open(&dir.0.join("root")).unwrap();
        root.mkdir_all(Path::new("/evil/yun-escaped")).unwrap();
        root.mkdir_all(Path::new("/up/yun-escaped2/x")).unwrap();
        assert!(dir.0.join("root/yun-escaped").is_dir());
        assert!(dir.0.join("root/yun-escaped2/x").is_dir());
        assert!(!Path::new("/yun-escaped").exists());
        root.create_file(Path::new("/evil/etc-file")).unwrap();
        assert!(dir.0.join("root/etc-file").is_file());
    }
}
