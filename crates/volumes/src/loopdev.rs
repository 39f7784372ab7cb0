//! Loop devices through the kernel's own interface (`/dev/loop-control` and the loop ioctls),
//! not `losetup`: a free device is claimed and configured in one `LOOP_CONFIGURE`, optionally
//! with autoclear so the device goes away with its last user (the mount), and a device's
//! backing file is read from sysfs.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, kernel 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// How a device is attached.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attach {
    pub read_only: bool,
    /// Detach when the last user closes it (a mount holds it open while mounted).
    pub autoclear: bool,
    /// Reach the backing file with direct I/O: no second copy of the data in the page
    /// cache (the filesystem above caches it once), and random reads go to the disk as on
    /// the host. The kernel falls back to buffered I/O where the file cannot do it.
    pub direct_io: bool,
}

/// Attach `file` to a free loop device; returns the device's path (`/dev/loopN`) and an open
/// handle on it (dropping the handle of an autoclear device whose user is gone detaches it).
pub fn attach(file: &Path, how: Attach) -> Result<(PathBuf, File)> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!how.read_only)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let control = File::open("/dev/loop-control").context("opening /dev/loop-control")?;
    // Another process may take the device between GET_FREE and CONFIGURE: try again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("finding a free loop device");
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new()
            .read(true)
            .write(!how.read_only)
            .open(&path)
        {
            Ok(d) => d,
            // udev may not have made the node yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                make_node(&path, n as u32)?;
                OpenOptions::new()
                    .read(true)
                    .write(!how.read_only)
                    .open(&path)?
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut flags = 0;
        if how.read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        if how.autoclear {
            flags |= LO_FLAGS_AUTOCLEAR;
        }
        if how.direct_io {
            flags |= LO_FLAGS_DIRECT_IO;
        }
        let mut name = [0u8; LO_NAME_SIZE];
        let shown = file.as_os_str().as_encoded_bytes();
        let len = shown.len().min(LO_NAME_SIZE - 1);
        name[..len].copy_from_slice(&shown[..len]);
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            // 4 KiB sectors, as the backing filesystem's blocks: direct I/O stays aligned
            // (the kernel turns direct I/O off for a smaller logical block size).
            block_size: 4096,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name: name,
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` that outlives the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &config) };
        if r == 0 {
            return Ok((path, dev));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err).with_context(|| format!("configuring {}", path.display()));
        }
    }
    bail!("no free loop device after 16 tries")
}

/// Make `/dev/loopN` (block, major 7) where nothing made it.
fn make_node(path: &Path, n: u32) -> Result<()> {
    let dev = nix::sys::stat::makedev(7, n as u64);
    match nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        dev,
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Detach the device at `dev`.
pub fn detach(dev: &Path) -> Result<()> {
    let f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        // ENXIO: not attached (any more).
        if err.raw_os_error() != Some(libc::ENXIO) {
            return Err(err).with_context(|| format!("detaching {}", dev.display()));
        }
    }
    Ok(())
}

/// Make the device see its backing file's new size.
pub fn refresh_capacity(dev: &Path) -> Result<()> {
    let f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_SET_CAPACITY as _, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("resizing {}", dev.display()));
    }
    Ok(())
}

/// The loop devices whose backing file is `file` (by the path the kernel records).
pub fn attached_to(file: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let want = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(backing.trim_end()) == want {
            out.push(PathBuf::from(format!("/dev/{name}")));
        }
    }
    out
}

/// Detach every loop device whose backing file lies under `dir` (a test's or a node's
/// cleanup): returns how many.
pub fn detach_under(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return 0;
    };
    let root = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        if name.starts_with("loop") && Path::new(backing.trim_end()).starts_with(&root) {
            let dev = PathBuf::from(format!("/dev/{name}"));
            if detach(&dev).is_ok() {
                n += 1;
            }
        }
    }
    n
}
