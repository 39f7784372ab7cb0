//! `tmpcopyup`: copy a directory's contents into the tmpfs mounted over it.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstatat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};

/// Copy every entry of `from` into `to` (both open directories), keeping modes and owners.
pub fn copy_dir(from: &OwnedFd, to: &OwnedFd) -> Result<()> {
    let src = from.try_clone()?;
    let mut dir = Dir::from_fd(src).context("read directory")?;
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        let st = fstatat(from.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        match kind {
            SFlag::S_IFDIR => {
                nix::sys::stat::mkdirat(to.as_fd(), name.as_c_str(), mode)?;
                let open = |d: &OwnedFd| {
                    nix::fcntl::openat(
                        d.as_fd(),
                        name.as_c_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                };
                copy_dir(&open(from)?, &open(to)?)?;
            }
            SFlag::S_IFREG => {
                let mut r = std::fs::File::from(nix::fcntl::openat(
                    from.as_fd(),
                    name.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?);
                let mut w = std::fs::File::from(nix::fcntl::openat(
                    to.as_fd(),
                    name.as_c_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
                    mode,
                )?);
                std::io::copy(&mut r, &mut w)?;
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(from.as_fd(), name.as_c_str())?;
                nix::unistd::symlinkat(target.as_os_str(), to.as_fd(), name.as_c_str())?;
            }
            _ => continue, // devices, fifos and sockets are not copied up
        }
        fchownat(
            to.as_fd(),
            name.as_c_str(),
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if kind != SFlag::S_IFLNK {
            fchmodat(
                to.as_fd(),
                name.as_c_str(),
                mode,
                FchmodatFlags::FollowSymlink,
            )?;
        }
    }
    Ok(())
}
