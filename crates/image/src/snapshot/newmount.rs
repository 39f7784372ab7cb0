//! Overlay mounts through the new mount API (fsopen/fsconfig/fsmount/move_mount), for images
//! with more layers than one page of mount(2) options can name: `lowerdir+` (Linux 6.8)
//! takes one lower dir per call.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

// From <linux/mount.h>; libc does not carry them.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

fn set_string(fs: &OwnedFd, key: &str, value: &str) -> Result<()> {
    let k = CString::new(key)?;
    let v = CString::new(value)?;
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("overlay option {key}={value}"));
    }
    Ok(())
}

pub(super) fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    // SAFETY: the name is a NUL-terminated literal.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
        .context("fsopen overlay")?;
    for l in lowers {
        set_string(&fs, "lowerdir+", &l.to_string_lossy())?;
    }
    set_string(&fs, "upperdir", &upper.to_string_lossy())?;
    set_string(&fs, "workdir", &work.to_string_lossy())?;
    if Path::new("/sys/module/overlay/parameters/index").exists() {
        set_string(&fs, "index", "off")?;
    }
    // SAFETY: plain syscall on a valid descriptor with null key and value, as CMD_CREATE wants.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error()).context("create the overlay");
    }
    // SAFETY: plain syscall on a valid descriptor.
    let mnt =
        owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
            .context("fsmount overlay")?;
    let target_c = CString::new(target.as_os_str().as_encoded_bytes())?;
    // SAFETY: "" and the target path are NUL-terminated; mnt is a valid mount descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error()).with_context(|| {
            format!(
                "mount overlay at {} ({} layers)",
                target.display(),
                lowers.len()
            )
        });
    }
    Ok(())
}
