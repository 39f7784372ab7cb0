//! Where a container's cgroup lives: `linux.cgroupsPath` resolution, hierarchy discovery from
//! /proc/self/mountinfo, and the directory work (mkdir with a record, rmdir with retries,
//! recursive process listing).

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{HierarchyState, Kind, Mode};

/// Parent of every cgroup yun names itself (default and relative `linux.cgroupsPath`).
pub const YUN_PARENT: &str = "/yun";

/// How long `destroy` keeps retrying `rmdir` on EBUSY: the last processes of a killed container
/// may still be leaving the cgroup when the caller has already reaped init.
const RMDIR_RETRY: Duration = Duration::from_secs(1);

/// Turn `linux.cgroupsPath` (or its absence) into the cgroup path inside every hierarchy.
pub fn resolve(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let Some(raw) = cgroups_path else {
        if id.is_empty() || id == "." || id == ".." || id.contains('/') {
            bail!("container id {id:?} cannot name a cgroup (it must be one path component)");
        }
        return Ok(Path::new(YUN_PARENT).join(id));
    };
    let text = raw.to_string_lossy();
    // runc's systemd driver takes "slice:prefix:name"; a relative path with exactly three
    // ':'-separated parts is that form, which only a systemd cgroup driver can interpret.
    if !text.starts_with('/') && text.split(':').count() == 3 {
        bail!("linux.cgroupsPath: systemd-style paths need --systemd-cgroup, which yunc does not support (got {text:?})");
    }
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            // ".." could climb out of the hierarchy (or into another container's cgroup).
            Component::ParentDir => {
                bail!(
                    "linux.cgroupsPath: {text:?} contains a \"..\" component, which is not allowed"
                )
            }
            Component::Prefix(_) => bail!("linux.cgroupsPath: {text:?} is not a Linux path"),
        }
    }
    if clean.as_os_str().is_empty() {
        bail!("linux.cgroupsPath: {text:?} names the root cgroup; a container needs a cgroup of its own");
    }
    if raw.is_absolute() {
        Ok(Path::new("/").join(clean))
    } else {
        Ok(Path::new(YUN_PARENT).join(clean))
    }
}

/// One line of /proc/self/mountinfo, the parts we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Parse mountinfo text (see proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] -
/// FSTYPE SOURCE SUPER_OPTS`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mountpoint = before.split(' ').nth(4)?;
            let mut rest = after.split(' ');
            let fstype = rest.next()?.to_string();
            let _source = rest.next()?;
            let super_options = rest
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect();
            Some(MountEntry {
                mountpoint: crate::rootfs::mountinfo::unescape(mountpoint),
                fstype,
                super_options,
            })
        })
        .collect()
}

/// Controllers the kernel knows (first column of /proc/cgroups), to tell controller names apart
/// from generic super options such as `xattr` or `clone_children`.
fn known_controllers() -> Vec<String> {
    let from_kernel: Vec<String> = fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    if !from_kernel.is_empty() {
        return from_kernel;
    }
    [
        "cpuset",
        "cpu",
        "cpuacct",
        "blkio",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "perf_event",
        "net_prio",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The hierarchies a container joins in `mode`, each with the cgroup directory for `path`.
pub fn discover(mode: Mode, mounts: &[MountEntry], path: &Path) -> Result<Vec<HierarchyState>> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let mut out: Vec<HierarchyState> = Vec::new();
    match mode {
        Mode::V2 => {
            let mount = mounts
                .iter()
                .filter(|m| m.fstype == "cgroup2")
                .find(|m| m.mountpoint == Path::new("/sys/fs/cgroup"))
                .or_else(|| mounts.iter().find(|m| m.fstype == "cgroup2"))
                .map(|m| m.mountpoint.clone())
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
            out.push(HierarchyState {
                name: String::new(),
                kind: Kind::Unified,
                controllers: Vec::new(),
                options: String::new(),
                dir: mount.join(rel),
                mountpoint: mount,
                created: Vec::new(),
            });
        }
        Mode::V1 => {
            let known = known_controllers();
            for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
                let mut controllers = Vec::new();
                let mut name = None;
                for opt in &m.super_options {
                    if let Some(n) = opt.strip_prefix("name=") {
                        name = Some(n.to_string());
                    } else if known.iter().any(|k| k == opt) {
                        controllers.push(opt.clone());
                    }
                }
                let mut options: Vec<String> = controllers.clone();
                if let Some(n) = &name {
                    options.push(format!("name={n}"));
                }
                if options.is_empty() {
                    continue;
                }
                let options = options.join(",");
                // The same hierarchy can be mounted twice (bind mounts); the first one wins.
                if out.iter().any(|h| h.options == options) {
                    continue;
                }
                let mount_name = m
                    .mountpoint
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| options.clone());
                out.push(HierarchyState {
                    name: mount_name,
                    kind: Kind::V1,
                    controllers,
                    options,
                    dir: m.mountpoint.join(rel),
                    mountpoint: m.mountpoint.clone(),
                    created: Vec::new(),
                });
            }
            if out.is_empty() {
                bail!("no cgroup v1 hierarchy is mounted (nothing of type \"cgroup\" in /proc/self/mountinfo)");
            }
            // Hybrid hosts also mount a cgroup2 hierarchy; joining it keeps the container
            // visible there and lets `linux.resources.unified` reach controllers bound to it.
            if let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") {
                out.push(HierarchyState {
                    name: "unified".to_string(),
                    kind: Kind::Unified,
                    controllers: Vec::new(),
                    options: String::new(),
                    dir: m.mountpoint.join(rel),
                    mountpoint: m.mountpoint.clone(),
                    created: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

/// Read /proc/self/mountinfo.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// The directories from the hierarchy root (exclusive) down to `dir` (inclusive), top-down.
pub fn chain(mountpoint: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut current = mountpoint.to_path_buf();
    if let Ok(rel) = dir.strip_prefix(mountpoint) {
        for c in rel.components() {
            current.push(c);
            out.push(current.clone());
        }
    }
    out
}

/// mkdir every missing directory of `h.dir`, top-down, recording the ones made here.
/// `on_new(parent, new_dir)` runs right after each mkdir (cpuset needs values copied in before
/// a child can be made or a task can join). On failure, what was made is removed again.
pub fn make_dirs(
    h: &mut HierarchyState,
    mut on_new: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    let mut parent = h.mountpoint.clone();
    let mut dirs = chain(&h.mountpoint, &h.dir);
    let mut retries = 0;
    let mut i = 0;
    while i < dirs.len() {
        let dir = dirs[i].clone();
        let result = match fs::create_dir(&dir) {
            Ok(()) => {
                h.created.push(dir.clone());
                on_new(&parent, &dir)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(anyhow!("create cgroup {}: {e}", dir.display())),
        };
        // Another container's delete removed a shared parent (/yun) under us: either before
        // our mkdir of its child, or right after we made it empty and before we filled it in
        // (an empty /yun is removed with the last container). Start the chain again.
        if result.is_err() && retries < MAKE_DIRS_RETRIES && !parent_chain_intact(&dirs[..=i]) {
            retries += 1;
            h.created.retain(|made| made.is_dir());
            parent = h.mountpoint.clone();
            dirs = chain(&h.mountpoint, &h.dir);
            i = 0;
            continue;
        }
        if let Err(e) = result {
            for made in h.created.drain(..).rev() {
                let _ = fs::remove_dir(&made);
            }
            return Err(e);
        }
        parent = dir;
        i += 1;
    }
    Ok(())
}

/// How often `make_dirs` starts again after a concurrent delete took a directory of its chain.
const MAKE_DIRS_RETRIES: u32 = 20;

/// Do all of `dirs` (a prefix of the chain, the last one just handled) still exist?
fn parent_chain_intact(dirs: &[PathBuf]) -> bool {
    dirs.iter().all(|d| d.is_dir())
}

/// Child cgroup directories of `dir`, deepest first (so they can be removed in order).
fn subdirs_deepest_first(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let p = entry.path();
            subdirs_deepest_first(&p, out);
            out.push(p);
        }
    }
}

fn has_subdirs(dir: &Path) -> bool {
    let mut v = Vec::new();
    subdirs_deepest_first(dir, &mut v);
    !v.is_empty()
}

/// rmdir, retrying EBUSY (processes still leaving) until the deadline. Missing is fine.
fn rmdir_retry(dir: &Path, deadline: Instant) -> Result<()> {
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let pids = procs_recursive(dir).unwrap_or_default();
                if pids.is_empty() {
                    bail!("remove cgroup {}: {e}", dir.display());
                }
                bail!(
                    "remove cgroup {}: {e} (processes still inside: {pids:?})",
                    dir.display()
                );
            }
        }
    }
}

/// Remove what `h` recorded as created: the container's own directory with any cgroups the
/// container made inside it, then the created ancestors that nobody else uses now.
pub fn remove_dirs(h: &HierarchyState) -> Result<()> {
    let deadline = Instant::now() + RMDIR_RETRY;
    for dir in h.created.iter().rev() {
        if *dir == h.dir {
            let mut inner = Vec::new();
            subdirs_deepest_first(dir, &mut inner);
            for sub in inner {
                rmdir_retry(&sub, deadline)?;
            }
            rmdir_retry(dir, deadline)?;
        } else {
            // A shared parent (such as /yun) may hold other containers' cgroups by now: those
            // are not ours to wait for, so leave the parent in place.
            if !dir.exists() || has_subdirs(dir) {
                continue;
            }
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                // Someone created a child between the check and the rmdir: theirs now.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => bail!("remove cgroup {}: {e}", dir.display()),
            }
        }
    }
    // The runtime's own parent (/yun) goes with its last container, whoever created it.
    let own_parent = h.mountpoint.join(YUN_PARENT.trim_start_matches('/'));
    if h.dir.starts_with(&own_parent) && own_parent.exists() && !has_subdirs(&own_parent) {
        let _ = fs::remove_dir(&own_parent);
    }
    Ok(())
}

/// Every pid in `dir` and the cgroups below it.
pub fn procs_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut dirs = vec![dir.to_path_buf()];
    subdirs_deepest_first(dir, &mut dirs);
    let mut pids = Vec::new();
    for d in dirs {
        let file = d.join("cgroup.procs");
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            // A child cgroup removed while we walk is simply empty now.
            Err(e) if e.kind() == ErrorKind::NotFound && d != dir => continue,
            Err(e) => bail!("read {}: {e}", file.display()),
        };
        for line in text.lines() {
            let pid = line
                .trim()
                .parse::<i32>()
                .with_context(|| format!("{}: bad pid {line:?}", file.display()))?;
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_under_yun() {
        assert_eq!(resolve(None, "abc").unwrap(), PathBuf::from("/yun/abc"));
        assert!(resolve(None, "a/b").is_err());
        assert!(resolve(None, "..").is_err());
    }

    #[test]
    fn absolute_path_is_taken_as_is() {
        let p = resolve(Some(Path::new("/libpod_parent/libpod-abc")), "x").unwrap();
        assert_eq!(p, PathBuf::from("/libpod_parent/libpod-abc"));
        let p = resolve(Some(Path::new("//a/./b/")), "x").unwrap();
        assert_eq!(p, PathBuf::from("/a/b"));
    }

    #[test]
    fn relative_path_goes_under_yun() {
        let p = resolve(Some(Path::new("pod1/ctr")), "x").unwrap();
        assert_eq!(p, PathBuf::from("/yun/pod1/ctr"));
    }

    #[test]
    fn dotdot_and_root_are_rejected() {
        let e = resolve(Some(Path::new("/a/../b")), "x").unwrap_err();
        assert!(e.to_string().starts_with("linux.cgroupsPath:"), "{e}");
        assert!(e.to_string().contains(".."), "{e}");
        assert!(resolve(Some(Path::new("../x")), "x").is_err());
        assert!(resolve(Some(Path::new("/")), "x").is_err());
    }

    #[test]
    fn systemd_form_is_rejected() {
        let e = resolve(Some(Path::new("system.slice:docker:abc")), "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.cgroupsPath: systemd-style paths need --systemd-cgroup, which yunc does not support (got \"system.slice:docker:abc\")"
        );
        // An absolute path may contain ':' in a directory name.
        assert!(resolve(Some(Path::new("/a:b:c")), "x").is_ok());
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:32 / /mnt/memory\\040copy rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_parsing_and_v1_discovery() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[3].mountpoint, PathBuf::from("/mnt/memory copy"));
        let hs = discover(Mode::V1, &mounts, Path::new("/yun/c1")).unwrap();
        let names: Vec<_> = hs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["cpu,cpuacct", "memory", "systemd", "unified"]);
        assert_eq!(hs[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(hs[0].options, "cpu,cpuacct");
        assert_eq!(hs[2].options, "name=systemd");
        assert_eq!(hs[1].dir, PathBuf::from("/sys/fs/cgroup/memory/yun/c1"));
        assert_eq!(hs[3].kind, Kind::Unified);
    }

    #[test]
    fn v2_discovery() {
        let text = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let hs = discover(Mode::V2, &parse_mountinfo(text), Path::new("/yun/c1")).unwrap();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].dir, PathBuf::from("/sys/fs/cgroup/yun/c1"));
    }

    #[test]
    fn chain_lists_each_level() {
        let c = chain(Path::new("/m"), Path::new("/m/a/b"));
        assert_eq!(c, [PathBuf::from("/m/a"), PathBuf::from("/m/a/b")]);
    }

    /// A concurrent delete that removes the shared parent right after this create made it
    /// (empty, before its child exists) must not fail the create: it starts the chain again.
    #[test]
    fn make_dirs_survives_its_new_parent_being_removed_under_it() {
        let root = std::env::temp_dir().join(format!("yun-test-make-dirs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).unwrap();
        let mut h = HierarchyState {
            name: "cpuset".into(),
            kind: super::super::Kind::V1,
            controllers: vec!["cpuset".into()],
            options: "cpuset".into(),
            mountpoint: root.clone(),
            dir: root.join("yun/c1"),
            created: Vec::new(),
        };
        let mut removed_once = false;
        let result = make_dirs(&mut h, |_parent, dir| {
            if dir.ends_with("yun") && !removed_once {
                removed_once = true;
                // The other container's delete: its last child is gone, so /yun goes too.
                fs::remove_dir(dir).unwrap();
                fs::write(dir.join("cpuset.cpus"), "0")?;
            }
            Ok(())
        });
        let made = h.created.clone();
        let _ = fs::remove_dir_all(&root);
        result.unwrap();
        assert!(removed_once);
        assert_eq!(made, [root.join("yun"), root.join("yun/c1")]);
    }
}
