//! The busybox root filesystem: the host's static busybox plus one symlink per applet and the
//! few files in /etc that programs expect.
//!
//! The image is built in a temp dir beside its final place and renamed into it, so readers see
//! either no image, the previous one, or a complete new one. A marker file written last records
//! which busybox the image came from (size + mtime); a matching marker makes a rebuild a no-op.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

use super::{sync_dir, temp_sibling, TEMP_INFIX};

/// Where Debian's busybox-static package installs its binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Name of the marker file at the top of a built image.
pub const MARKER: &str = ".yun-busybox";

/// First line of the marker; bump the version when the layout below changes so old images are
/// rebuilt.
const MARKER_HEADER: &str = "yun busybox rootfs v1";

const PACKAGE_HINT: &str =
    "yun's built-in image needs a static busybox: install Debian's busybox-static package";

/// The uid and gid of the unprivileged `yun` user inside the image.
pub const YUN_UID: u32 = 1000;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
yun:x:1000:1000:yun:/home/yun:/bin/sh
";

// tty (5) is the group the default spec's devpts mount hands to terminals (gid=5).
const GROUP: &str = "\
root:x:0:
tty:x:5:
nogroup:x:65534:
nobody:x:65534:
yun:x:1000:
";

/// Directories of the image with their modes; parents come before children.
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("proc", 0o755),
    ("sys", 0o755),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("home/yun", 0o755),
    ("var", 0o755),
];

/// Build a busybox root filesystem at `rootfs` from the host's static busybox
/// (`/bin/busybox`, Debian's busybox-static).
///
/// Layout: `/bin/busybox`, one symlink to it per applet where `busybox --list-full` puts it,
/// `/etc/{passwd,group,hostname,hosts,resolv.conf}` (users root, nobody and yun 1000:1000), and
/// the usual empty directories (`/tmp` 1777, `/home/yun` owned by 1000:1000 when run as root).
///
/// Idempotent and cheap when `rootfs` already holds an image built from the same busybox. An
/// image from another busybox (or an older layout) is replaced atomically; an empty directory is
/// filled; any other existing, non-empty directory is an error and is left untouched.
pub fn build_busybox_rootfs(rootfs: &Path) -> Result<()> {
    build_rootfs_from(Path::new(HOST_BUSYBOX), rootfs)
}

/// [`build_busybox_rootfs`] with the busybox binary as a parameter (for tests).
pub(super) fn build_rootfs_from(busybox: &Path, rootfs: &Path) -> Result<()> {
    let marker = expected_marker(busybox)?;
    if marker_matches(rootfs, &marker) {
        return Ok(());
    }
    check_static(busybox)?;
    check_replaceable(rootfs)?;

    let name = rootfs
        .file_name()
        .with_context(|| format!("rootfs path {} has no final name", rootfs.display()))?;
    let parent = match rootfs.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent)
        .with_context(|| format!("creating the rootfs parent {}", parent.display()))?;
    remove_abandoned_temps(parent, name);

    let staging = StagingDir::create(temp_sibling(rootfs)?)?;
    populate(&staging.path, busybox, &marker)
        .with_context(|| format!("building a busybox image in {}", staging.path.display()))?;
    install(staging, rootfs, parent, &marker)
}

/// The marker text for an image built from `busybox` as it is now.
fn expected_marker(busybox: &Path) -> Result<String> {
    let meta = match fs::metadata(busybox) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("{} not found: {PACKAGE_HINT}", busybox.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", busybox.display())),
    };
    if !meta.is_file() {
        bail!(
            "{} is not a regular file: {PACKAGE_HINT}",
            busybox.display()
        );
    }
    Ok(format!(
        "{MARKER_HEADER}\nsource {}\nsize {}\nmtime {}.{:09}\n",
        busybox.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

fn marker_matches(rootfs: &Path, expected: &str) -> bool {
    fs::read_to_string(rootfs.join(MARKER)).is_ok_and(|found| found == expected)
}

fn has_marker(rootfs: &Path) -> bool {
    fs::read_to_string(rootfs.join(MARKER)).is_ok_and(|found| found.starts_with("yun busybox"))
}

/// Refuse to replace anything but a yun image (of any version) or an empty directory.
fn check_replaceable(rootfs: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(rootfs) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading rootfs {}", rootfs.display())),
    };
    if !meta.is_dir() {
        bail!(
            "rootfs {} exists and is not a directory; remove it or choose another path",
            rootfs.display()
        );
    }
    if has_marker(rootfs) || is_empty_dir(rootfs)? {
        return Ok(());
    }
    bail!(
        "rootfs {} exists, is not empty and is not a yun busybox image (no {MARKER}); \
         remove it or choose another path",
        rootfs.display()
    )
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    let mut entries =
        fs::read_dir(dir).with_context(|| format!("reading rootfs {}", dir.display()))?;
    Ok(entries.next().is_none())
}

/// Fail unless `busybox` is an ELF executable without a program interpreter (PT_INTERP): a
/// dynamically linked busybox would not run inside the image, which has no libc.
pub(super) fn check_static(busybox: &Path) -> Result<()> {
    let file = File::open(busybox).with_context(|| format!("opening {}", busybox.display()))?;
    match elf_has_interpreter(&file) {
        Ok(false) => Ok(()),
        Ok(true) => bail!(
            "{} is dynamically linked (its ELF has a PT_INTERP header): {PACKAGE_HINT}",
            busybox.display()
        ),
        Err(why) => bail!(
            "{} is not a usable ELF executable ({why}): {PACKAGE_HINT}",
            busybox.display()
        ),
    }
}

/// Whether the ELF file has a PT_INTERP program header. Handles 32/64-bit, either byte order.
fn elf_has_interpreter(file: &File) -> std::result::Result<bool, String> {
    const PT_INTERP: u32 = 3;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header[..52], 0)
        .map_err(|e| format!("reading the ELF header: {e}"))?;
    if header[..4] != *b"\x7fELF" {
        return Err("no ELF magic".into());
    }
    let little = match header[5] {
        1 => true,
        2 => false,
        other => return Err(format!("unknown ELF byte order {other}")),
    };
    let u16_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1]];
        if little {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    let u32_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    let (phoff, phentsize, phnum) = match header[4] {
        1 => (
            u64::from(u32_at(&header, 0x1c)),
            u16_at(&header, 0x2a),
            u16_at(&header, 0x2c),
        ),
        2 => {
            file.read_exact_at(&mut header[52..], 52)
                .map_err(|e| format!("reading the ELF header: {e}"))?;
            let low = u64::from(u32_at(&header, 0x20));
            let high = u64::from(u32_at(&header, 0x24));
            let phoff = if little {
                low | high << 32
            } else {
                high | low << 32
            };
            (phoff, u16_at(&header, 0x36), u16_at(&header, 0x38))
        }
        other => return Err(format!("unknown ELF class {other}")),
    };
    if phentsize < 4 {
        return Err(format!("program header entries of {phentsize} bytes"));
    }
    let mut table = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    file.read_exact_at(&mut table, phoff)
        .map_err(|e| format!("reading the program headers: {e}"))?;
    Ok(table
        .chunks_exact(usize::from(phentsize))
        .any(|entry| u32_at(entry, 0) == PT_INTERP))
}

/// A temp directory that is removed on drop unless it was renamed into place.
struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    fn create(path: PathBuf) -> Result<Self> {
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let staging = StagingDir { path };
        set_mode(&staging.path, 0o755)?;
        Ok(staging)
    }

    /// The directory now lives elsewhere (or holds what must be deleted): stop tracking it.
    fn disarm(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Remove temp dirs left beside `name` by builds whose process no longer exists (a crash).
fn remove_abandoned_temps(parent: &Path, name: &OsStr) {
    let prefix = format!(".{}{TEMP_INFIX}", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Fill `dir` with the image. Everything is fsynced before the marker is written, and the marker
/// itself is fsynced, so a marker on disk vouches for a complete image even after a crash.
fn populate(dir: &Path, busybox: &Path, marker: &str) -> Result<()> {
    let mut created: Vec<PathBuf> = vec![dir.to_path_buf()];
    for (name, mode) in DIRS {
        let path = dir.join(name);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        set_mode(&path, *mode)?;
        created.push(path);
    }
    if nix::unistd::geteuid().is_root() {
        let home = dir.join("home/yun");
        std::os::unix::fs::chown(&home, Some(YUN_UID), Some(YUN_UID))
            .with_context(|| format!("chown {} to {YUN_UID}:{YUN_UID}", home.display()))?;
    }

    copy_busybox(busybox, &dir.join("bin/busybox"))?;
    let applets = list_applets(busybox)?;
    created.extend(link_applets(dir, &applets)?);

    let etc = dir.join("etc");
    write_file(&etc.join("passwd"), PASSWD.as_bytes())?;
    write_file(&etc.join("group"), GROUP.as_bytes())?;
    write_file(&etc.join("hostname"), b"yun\n")?;
    write_file(&etc.join("hosts"), b"")?;
    write_file(&etc.join("resolv.conf"), b"")?;

    for path in &created {
        sync_dir(path)?;
    }
    write_file(&dir.join(MARKER), marker.as_bytes())?;
    sync_dir(dir)
}

fn copy_busybox(from: &Path, to: &Path) -> Result<()> {
    let mut source = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    io::copy(&mut source, &mut target)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    target.set_permissions(fs::Permissions::from_mode(0o755))?;
    target
        .sync_all()
        .with_context(|| format!("syncing {}", to.display()))
}

/// Where each applet goes, relative to the image root, from `busybox --list-full`
/// (e.g. `bin/sh`, `usr/bin/env`). Entries that are not plain relative paths are ignored.
pub(super) fn list_applets(busybox: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    if !output.status.success() {
        bail!(
            "{} --list-full failed ({}): {}",
            busybox.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8(output.stdout)
        .with_context(|| format!("{} --list-full printed non-UTF-8", busybox.display()))?;
    let applets: Vec<PathBuf> = text
        .lines()
        .map(Path::new)
        .filter(|path| {
            path.components().count() >= 2
                && path.components().all(|c| matches!(c, Component::Normal(_)))
                && *path != Path::new("bin/busybox")
        })
        .map(Path::to_path_buf)
        .collect();
    if !applets.iter().any(|p| p == Path::new("bin/sh")) {
        bail!("{} has no sh applet: {PACKAGE_HINT}", busybox.display());
    }
    Ok(applets)
}

/// Symlink every applet in `applets` to /bin/busybox below `root`, creating missing parent
/// directories (0755). Returns the directories it created. Duplicates are ignored.
pub(super) fn link_applets(root: &Path, applets: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut known = HashSet::from([root.to_path_buf()]);
    let mut created = Vec::new();
    for applet in applets {
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            if !known.contains(parent) {
                create_dirs_below(root, parent, &mut known, &mut created)?;
            }
        }
        match std::os::unix::fs::symlink("/bin/busybox", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("symlinking {}", link.display())),
        }
    }
    Ok(created)
}

fn create_dirs_below(
    root: &Path,
    dir: &Path,
    known: &mut HashSet<PathBuf>,
    created: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut path = root.to_path_buf();
    for component in dir.strip_prefix(root).unwrap_or(dir).components() {
        path.push(component);
        if known.insert(path.clone()) {
            match fs::create_dir(&path) {
                Ok(()) => {
                    set_mode(&path, 0o755)?;
                    created.push(path.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(0o644))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Set an exact mode, whatever the umask took away at creation.
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Rename the staged image into place. When `rootfs` is already taken, either another builder
/// won the race with the same image (keep theirs) or it holds an outdated yun image, which is
/// exchanged atomically with ours and then deleted.
fn install(staging: StagingDir, rootfs: &Path, parent: &Path, marker: &str) -> Result<()> {
    match fs::rename(&staging.path, rootfs) {
        Ok(()) => {
            staging.disarm();
            return sync_dir(parent);
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "renaming {} to {}",
                    staging.path.display(),
                    rootfs.display()
                )
            })
        }
    }
    if marker_matches(rootfs, marker) {
        return Ok(()); // an equal image appeared meanwhile; the staging dir goes on drop
    }
    check_replaceable(rootfs)?;
    renameat2(
        AT_FDCWD,
        &staging.path,
        AT_FDCWD,
        rootfs,
        RenameFlags::RENAME_EXCHANGE,
    )
    .with_context(|| {
        format!(
            "exchanging {} with the outdated image {}",
            staging.path.display(),
            rootfs.display()
        )
    })?;
    // The staging path now holds the outdated image; dropping the guard deletes it.
    sync_dir(parent)
}
