//! The `mounts` of config.json: option parsing and mounting one entry.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;

use super::path::{fd_path, Root};

/// Parsed mount options: flags to set, propagation changes, and the fs-specific rest.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    /// `tmpcopyup`: copy what the covered directory held into the new tmpfs.
    pub copy_up: bool,
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// A propagation option ("rprivate", "shared", ...) as mount flags.
pub fn propagation_flag(opt: &str) -> Result<MsFlags> {
    let rec = MsFlags::MS_REC;
    Ok(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        other => bail!("unknown propagation {other:?}"),
    })
}

pub fn parse_mount_options(opts: &[String]) -> Result<MountOptions> {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        copy_up: false,
    };
    for opt in opts {
        // (flag, set?) pairs as mount(8) knows them.
        let (flag, set) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), true),
            "ro" => (MsFlags::MS_RDONLY, true),
            "rw" => (MsFlags::MS_RDONLY, false),
            "suid" => (MsFlags::MS_NOSUID, false),
            "nosuid" => (MsFlags::MS_NOSUID, true),
            "dev" => (MsFlags::MS_NODEV, false),
            "nodev" => (MsFlags::MS_NODEV, true),
            "exec" => (MsFlags::MS_NOEXEC, false),
            "noexec" => (MsFlags::MS_NOEXEC, true),
            "sync" => (MsFlags::MS_SYNCHRONOUS, true),
            "async" => (MsFlags::MS_SYNCHRONOUS, false),
            "dirsync" => (MsFlags::MS_DIRSYNC, true),
            "remount" => (MsFlags::MS_REMOUNT, true),
            "mand" => (MsFlags::MS_MANDLOCK, true),
            "nomand" => (MsFlags::MS_MANDLOCK, false),
            "atime" => (MsFlags::MS_NOATIME, false),
            "noatime" => (MsFlags::MS_NOATIME, true),
            "diratime" => (MsFlags::MS_NODIRATIME, false),
            "nodiratime" => (MsFlags::MS_NODIRATIME, true),
            "bind" => (MsFlags::MS_BIND, true),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, true),
            "relatime" => (MsFlags::MS_RELATIME, true),
            "norelatime" => (MsFlags::MS_RELATIME, false),
            "strictatime" => (MsFlags::MS_STRICTATIME, true),
            "nostrictatime" => (MsFlags::MS_STRICTATIME, false),
            "silent" => (MsFlags::MS_SILENT, true),
            "loud" => (MsFlags::MS_SILENT, false),
            "tmpcopyup" => {
                o.copy_up = true;
                continue;
            }
            "idmap" | "ridmap" => bail!("{opt:?}: id-mapped mounts are not supported by yunc"),
            p if propagation_flag(p).is_ok() => {
                o.propagation.push(propagation_flag(p)?);
                continue;
            }
            data => {
                o.data.push(data.to_string());
                continue;
            }
        };
        if set {
            o.flags |= flag;
        } else {
            o.flags &= !flag;
        }
    }
    Ok(o)
}

/// Everything a mount needs to know about the container being built.
pub struct MountContext<'a> {
    pub root: &'a Root,
    pub bundle: &'a Path,
    /// The container created a user namespace: mknod and some fs types are not allowed.
    pub in_userns: bool,
    /// v1: (mount name, host dir of this container's cgroup, super options); v2: one entry.
    pub cgroup_sources: &'a [(String, PathBuf, String)],
}

pub fn mount_entry(ctx: &MountContext, m: &Mount) -> Result<()> {
    let opts = parse_mount_options(m.options().as_deref().unwrap_or_default())?;
    let typ = m.typ().as_deref().unwrap_or("none");
    let dest = m.destination();
    if opts.is_bind() || typ == "bind" {
        return bind_entry(ctx, m, &opts);
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return cgroup_entry(ctx, dest, &opts);
    }
    let target = ctx.root.mkdir_all(dest)?;
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.to_string());
    let saved = if opts.copy_up {
        Some(ctx.root.reopen_dir(&target)?)
    } else {
        None
    };
    let data = opts.data.join(",");
    let res = mount(
        Some(source.as_str()),
        fd_path(&target).as_str(),
        Some(typ),
        opts.flags,
        (!data.is_empty()).then_some(data.as_str()),
    );
    match res {
        Ok(()) => {}
        // A user namespace that does not own the network namespace may not mount sysfs:
        // bind the host's instead, as runc does.
        Err(Errno::EPERM) if typ == "sysfs" && ctx.in_userns => {
            mount(
                Some("/sys"),
                fd_path(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .context("bind /sys")?;
            remount(ctx.root, dest, opts.flags | MsFlags::MS_REC)?;
        }
        Err(e) => {
            return Err(e).with_context(|| format!("mount {typ} on {}", dest.display()));
        }
    }
    if let Some(old) = saved {
        let new = ctx.root.open_with(
            dest,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        )?;
        super::copy::copy_dir(&old, &new)
            .with_context(|| format!("tmpcopyup {}", dest.display()))?;
    }
    apply_propagation(ctx.root, dest, &opts.propagation)
}

fn bind_entry(ctx: &MountContext, m: &Mount, opts: &MountOptions) -> Result<()> {
    let dest = m.destination();
    let source = m
        .source()
        .as_ref()
        .ok_or_else(|| anyhow!("bind mount on {} has no source", dest.display()))?;
    let source = if source.is_absolute() {
        source.clone()
    } else {
        ctx.bundle.join(source)
    };
    let meta =
        std::fs::metadata(&source).with_context(|| format!("bind source {}", source.display()))?;
    let target = if meta.is_dir() {
        ctx.root.mkdir_all(dest)?
    } else {
        ctx.root.create_file(dest)?
    };
    let bind_flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
    mount(
        Some(&source),
        fd_path(&target).as_str(),
        None::<&str>,
        bind_flags,
        None::<&str>,
    )
    .with_context(|| format!("bind {} on {}", source.display(), dest.display()))?;
    let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        remount(ctx.root, dest, opts.flags)?;
    }
    apply_propagation(ctx.root, dest, &opts.propagation)
}

/// A cgroup mount: a tmpfs holding one bind of this container's cgroup per v1 hierarchy,
/// or (v2) a bind of the container's cgroup directory. Binding works with and without a
/// cgroup namespace and in user namespaces, and shows exactly the container's subtree.
fn cgroup_entry(ctx: &MountContext, dest: &Path, opts: &MountOptions) -> Result<()> {
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let flags = opts.flags - MsFlags::MS_RDONLY;
    let target = ctx.root.mkdir_all(dest)?;
    let bind_one = |host: &Path, at: &Path| -> Result<()> {
        let t = ctx.root.mkdir_all(at)?;
        mount(
            Some(host),
            fd_path(&t).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind cgroup {} on {}", host.display(), at.display()))?;
        remount(
            ctx.root,
            at,
            flags
                | if ro {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                },
        )
    };
    if let [(name, host, _)] = ctx.cgroup_sources {
        if name.is_empty() {
            return bind_one(host, dest);
        }
    }
    mount(
        Some("tmpfs"),
        fd_path(&target).as_str(),
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .with_context(|| format!("mount tmpfs on {}", dest.display()))?;
    for (name, host, _) in ctx.cgroup_sources {
        bind_one(host, &dest.join(name))?;
    }
    if ro {
        remount(ctx.root, dest, flags | MsFlags::MS_RDONLY)?;
    }
    apply_propagation(ctx.root, dest, &opts.propagation)
}

/// Change the flags of the mount at `dest`. In a user namespace the flags a mount was
/// created with by a more privileged namespace are locked: keep them, or the kernel says EPERM.
pub fn remount(root: &Root, dest: &Path, flags: MsFlags) -> Result<()> {
    let fd = root.open_path(dest)?;
    remount_fd(&fd, flags).with_context(|| format!("remount {}", dest.display()))
}

pub fn remount_fd(fd: &OwnedFd, flags: MsFlags) -> nix::Result<()> {
    let path = fd_path(fd);
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    let keep = flags & !(MsFlags::MS_BIND | MsFlags::MS_REMOUNT);
    let first = mount(
        None::<&str>,
        path.as_str(),
        None::<&str>,
        base | keep,
        None::<&str>,
    );
    match first {
        Err(Errno::EPERM) => {
            let st = statvfs(path.as_str())?;
            let mut locked = MsFlags::empty();
            for (fs, ms) in [
                (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if st.flags().contains(fs) {
                    locked |= ms;
                }
            }
            mount(
                None::<&str>,
                path.as_str(),
                None::<&str>,
                base | keep | locked,
                None::<&str>,
            )
        }
        other => other,
    }
}

fn apply_propagation(root: &Root, dest: &Path, props: &[MsFlags]) -> Result<()> {
    for p in props {
        let fd = root.open_path(dest)?;
        mount(
            None::<&str>,
            fd_path(&fd).as_str(),
            None::<&str>,
            *p,
            None::<&str>,
        )
        .with_context(|| format!("set propagation of {}", dest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_mount_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn flags_and_data() {
        let o = opts(&[
            "nosuid",
            "noexec",
            "mode=755",
            "size=65536k",
            "rprivate",
            "ro",
        ]);
        assert!(o
            .flags
            .contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY));
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert!(!o.is_bind());
    }

    #[test]
    fn later_options_win() {
        let o = opts(&["ro", "rw", "rbind"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.is_bind() && o.flags.contains(MsFlags::MS_REC));
    }

    #[test]
    fn idmap_is_refused() {
        assert!(parse_mount_options(&["idmap".to_string()]).is_err());
    }
}
