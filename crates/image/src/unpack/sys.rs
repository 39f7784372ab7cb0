//! Thin wrappers over the *at syscalls the unpacker needs: every call names its target by a
//! directory descriptor and one path component, so no path is ever resolved through a
//! symlink of the layer except by [`open_dir_in_root`], which the kernel confines to the root.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Open the directory `path` (relative, may be empty for the root itself) with every symlink
/// and `..` resolved as if `root` were `/` (RESOLVE_IN_ROOT): the result is always a
/// directory inside `root`, whatever the layer's symlinks say.
pub fn open_dir_in_root(root: BorrowedFd, path: &CStr) -> io::Result<OwnedFd> {
    open_dir_resolve(root, path, libc::RESOLVE_IN_ROOT)
}

/// Open the directory `path` below `root` without following any symlink on the way
/// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: ELOOP when one is met, EXDEV for `..` above the
/// root). Hard link targets are resolved this way: a link names an earlier entry by its
/// literal path.
pub fn open_dir_beneath_no_symlinks(root: BorrowedFd, path: &CStr) -> io::Result<OwnedFd> {
    open_dir_resolve(
        root,
        path,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    )
}

fn open_dir_resolve(root: BorrowedFd, path: &CStr, resolve: u64) -> io::Result<OwnedFd> {
    let mut how: libc::open_how = zeroed_open_how();
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = resolve | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;
    let path = if path.is_empty() { c"." } else { path };
    // SAFETY: path is NUL-terminated, `how` is a valid open_how of the size passed, and the
    // returned descriptor is owned by nobody else.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from openat2.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn zeroed_open_how() -> libc::open_how {
    // SAFETY: open_how is plain integers; all-zero is its documented "no flags" value.
    unsafe { std::mem::zeroed() }
}

/// openat(dir, name, flags | O_CLOEXEC | O_NOFOLLOW, mode).
pub fn openat(dir: BorrowedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: name is NUL-terminated; the descriptor returned is owned by the OwnedFd.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) })?;
    // SAFETY: a fresh descriptor from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdirat(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd, name: &CStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A hard link to `old` in `old_dir` (not following a symlink there: the link is to the
/// symlink itself, as tar does).
pub fn linkat(old_dir: BorrowedFd, old: &CStr, new_dir: BorrowedFd, new: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated.
    cvt(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn unlinkat(dir: BorrowedFd, name: &CStr, remove_dir: bool) -> io::Result<()> {
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// The st_mode of `name` in `dir`, not following a symlink.
pub fn lstat_mode(dir: BorrowedFd, name: &CStr) -> io::Result<u32> {
    // SAFETY: stat is plain data, filled by the kernel before it is read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated and st is a valid out pointer.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st.st_mode)
}

pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid descriptor.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// chown of `name` itself (AT_SYMLINK_NOFOLLOW), for symlinks and device nodes.
pub fn lchownat(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid descriptor.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// chmod of `name` in `dir`; only used on device nodes and fifos just created by mknodat
/// (never on symlinks, which fchmodat would follow).
pub fn fchmodat(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

pub fn timespec(secs: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as _,
    }
}

pub fn futimens(fd: BorrowedFd, t: libc::timespec) -> io::Result<()> {
    let times = [t, t];
    // SAFETY: times points to two valid timespecs.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// utimensat of `name` itself (AT_SYMLINK_NOFOLLOW).
pub fn lutimensat(dir: BorrowedFd, name: &CStr, t: libc::timespec) -> io::Result<()> {
    let times = [t, t];
    // SAFETY: name is NUL-terminated and times points to two valid timespecs.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn fsetxattr(fd: BorrowedFd, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: key is NUL-terminated; value is a valid slice of the length passed.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// setxattr on `name` in `dir` without following it, through /proc/self/fd (there is no
/// *at variant of lsetxattr); for symlinks and device nodes, which cannot be opened.
pub fn lsetxattrat(dir: BorrowedFd, name: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    let path = std::ffi::CString::new(path).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: path and key are NUL-terminated; value is a valid slice of the length passed.
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// The process umask, read without changing it (umask(2) can only set it, racily).
pub fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}
