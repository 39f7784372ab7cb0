//! cgroups v1 ("legacy" and "hybrid" hosts) and v2 ("unified" hosts).
//!
//! A [`Manager`] owns one container's cgroup: the directory `PATH` (from `linux.cgroupsPath`)
//! inside every mounted hierarchy. Everything the later commands (`kill`, `pause`, `events`,
//! `delete`) need is in the serializable [`CgroupState`], so they rebuild the manager from the
//! container's state file instead of re-reading config.json.
//!
//! Layout: `path` resolves paths and does the directory work, `validate` holds the checks that
//! do not depend on the cgroup version, `v1`/`v2` validate against the host and write limits,
//! `stats` reads usage in runc's `events --stats` layout.

mod devices;
mod entry;
mod freezer;
mod path;
mod stats;
mod v1;
mod v2;
mod validate;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use entry::Born;
pub use stats::{
    Blkio, BlkioEntry, Cpu, CpuSet, CpuUsage, Hugetlb, IntelRdt, Memory, MemoryEntry, Pids, Stats,
    Throttling,
};
pub use v2::shares_to_weight;

/// Which cgroup interface the host offers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One hierarchy per controller (possibly with an extra, mostly empty cgroup2 mount).
    V1,
    /// A single cgroup2 hierarchy mounted at /sys/fs/cgroup.
    V2,
}

/// v1 or v2, decided once per process: the layout cannot change under a running runtime.
pub fn detect_mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(st) if st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => Mode::V2,
        _ => Mode::V1,
    })
}

/// What kind of hierarchy a [`HierarchyState`] describes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A cgroup v1 hierarchy (controllers and/or a `name=`).
    V1,
    /// A cgroup2 hierarchy: the only one on v2 hosts, the extra "unified" one on hybrid hosts.
    Unified,
}

/// One hierarchy the container's cgroup lives in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HierarchyState {
    /// Mount directory name ("memory", "cpu,cpuacct", "systemd"), "unified" for the hybrid
    /// cgroup2 mount, "" on a pure v2 host.
    pub name: String,
    pub kind: Kind,
    /// v1 controllers of this hierarchy ("cpu", "cpuacct"); empty for named and cgroup2 ones.
    pub controllers: Vec<String>,
    /// v1 super options identifying the hierarchy ("memory", "name=systemd").
    pub options: String,
    /// Where the hierarchy root is mounted.
    pub mountpoint: PathBuf,
    /// The container's cgroup directory in this hierarchy.
    pub dir: PathBuf,
    /// Directories `create` made, top-down; `destroy` removes only these.
    #[serde(default)]
    pub created: Vec<PathBuf>,
}

/// Everything needed to manage the cgroup again later, stored in the container's state file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CgroupState {
    pub mode: Mode,
    /// The cgroup path inside every hierarchy, e.g. "/yun/abc".
    pub path: PathBuf,
    pub hierarchies: Vec<HierarchyState>,
}

/// One container's cgroup in every hierarchy.
#[derive(Clone, Debug)]
pub struct Manager {
    state: CgroupState,
}

impl Manager {
    /// Resolve paths for container `id`. `cgroups_path` is config.json's `linux.cgroupsPath`:
    /// absolute → that path in every hierarchy; relative → under "/yun/"; None → "/yun/<id>".
    /// ".." components and systemd's "slice:prefix:name" form are rejected. Reads
    /// /proc/self/mountinfo; creates nothing.
    pub fn new(cgroups_path: Option<&Path>, id: &str) -> Result<Manager> {
        let path = path::resolve(cgroups_path, id)?;
        let mode = detect_mode();
        let hierarchies = path::discover(mode, &path::mounts()?, &path)?;
        Ok(Manager {
            state: CgroupState {
                mode,
                path,
                hierarchies,
            },
        })
    }

    pub fn from_state(state: &CgroupState) -> Manager {
        Manager {
            state: state.clone(),
        }
    }

    pub fn state(&self) -> CgroupState {
        self.state.clone()
    }

    /// The cgroup path inside each hierarchy, e.g. "/yun/abc".
    pub fn cgroup_path(&self) -> &Path {
        &self.state.path
    }

    pub fn mode(&self) -> Mode {
        self.state.mode
    }

    /// The v1 hierarchy carrying `controller`, or on v2 the single hierarchy.
    fn hierarchy(&self, controller: &str) -> Option<&HierarchyState> {
        match self.state.mode {
            Mode::V1 => self
                .state
                .hierarchies
                .iter()
                .find(|h| h.kind == Kind::V1 && h.controllers.iter().any(|c| c == controller)),
            Mode::V2 => self.unified(),
        }
    }

    /// The cgroup2 hierarchy: the only one on v2, the hybrid "unified" mount on v1 (if any).
    fn unified(&self) -> Option<&HierarchyState> {
        self.state
            .hierarchies
            .iter()
            .find(|h| h.kind == Kind::Unified)
    }

    /// Check a resources block against this host without touching anything.
    pub fn validate(&self, res: &LinuxResources) -> Result<()> {
        validate::common(res)?;
        match self.state.mode {
            Mode::V1 => v1::validate(self, res),
            Mode::V2 => v2::validate(self, res),
        }
    }

    /// mkdir the cgroup in every hierarchy and record what was made. On failure nothing that
    /// this call made is left behind.
    pub fn create(&mut self) -> Result<()> {
        let mode = self.state.mode;
        let mut done = 0;
        let mut result = Ok(());
        for h in self.state.hierarchies.iter_mut() {
            let r = match (mode, h.kind) {
                (_, Kind::V1) => v1::create(h),
                (Mode::V2, Kind::Unified) => v2::create(h),
                // The hybrid cgroup2 mount: controllers get enabled only when a unified key
                // asks for one (see v1::apply_unified).
                (Mode::V1, Kind::Unified) => path::make_dirs(h, |_, _| Ok(())),
            };
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            done += 1;
        }
        if let Err(e) = result {
            for h in &mut self.state.hierarchies[..done] {
                let _ = path::remove_dirs(h);
                h.created.clear();
            }
            return Err(e);
        }
        Ok(())
    }

    /// Write the limits of `res` into the container's cgroup.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        match self.state.mode {
            Mode::V1 => v1::apply(self, res),
            Mode::V2 => v2::apply(self, res),
        }
    }

    /// Write every limit of `res` but the device rules. `create` writes those with
    /// [`Manager::apply_devices`] once the init has made the device nodes, as runc orders it:
    /// under a deny-all rule, mknod of a `linux.devices` node fails with EPERM.
    pub fn apply_without_devices(&self, res: &LinuxResources) -> Result<()> {
        let mut rest = res.clone();
        rest.set_devices(None);
        self.apply(&rest)
    }

    /// Write the device rules of `res` (see [`Manager::apply_without_devices`]).
    pub fn apply_devices(&self, res: &LinuxResources) -> Result<()> {
        let rules = res.devices().as_deref().unwrap_or_default();
        match self.state.mode {
            Mode::V1 => devices::apply_v1(self, rules),
            Mode::V2 => {
                let mut only = LinuxResources::default();
                only.set_devices(Some(rules.to_vec()));
                v2::apply(self, &only)
            }
        }
    }

    /// Move `pid` into the container's cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for h in &self.state.hierarchies {
            write_file(&h.dir.join("cgroup.procs"), &pid.to_string())
                .map_err(|e| anyhow!("add pid {pid} to cgroup: {e}"))?;
        }
        Ok(())
    }

    /// The directory whose cgroup.procs lists the container's processes most reliably.
    fn procs_dir(&self) -> Result<&Path> {
        let preferred = ["pids", "freezer", "memory", "cpu", "devices"];
        let found = preferred
            .iter()
            .find_map(|c| self.hierarchy(c))
            .or_else(|| self.state.hierarchies.first());
        found
            .map(|h| h.dir.as_path())
            .ok_or_else(|| anyhow!("cgroup {}: no hierarchy", self.state.path.display()))
    }

    /// Every process in the container's cgroup, including nested child cgroups.
    pub fn pids(&self) -> Result<Vec<i32>> {
        path::procs_recursive(self.procs_dir()?)
    }

    /// Freeze every process of the container and wait until the kernel reports it frozen
    /// (error after a timeout, leaving the container thawed).
    pub fn freeze(&self) -> Result<()> {
        freezer::set(self, true)
    }

    pub fn thaw(&self) -> Result<()> {
        freezer::set(self, false)
    }

    pub fn is_frozen(&self) -> Result<bool> {
        freezer::is_frozen(self)
    }

    /// How many processes the OOM killer has killed in this cgroup.
    pub fn oom_kill_count(&self) -> Result<u64> {
        let file = match self.state.mode {
            Mode::V1 => "memory.oom_control",
            Mode::V2 => "memory.events",
        };
        let Some(h) = self.hierarchy("memory") else {
            return Ok(0);
        };
        let path = h.dir.join(file);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(stats::keyed_value(&text, "oom_kill").unwrap_or(0)),
            // No memory accounting for this cgroup (v2 without +memory): nothing was counted.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => bail!("read {}: {e}", path.display()),
        }
    }

    pub fn stats(&self) -> Result<Stats> {
        match self.state.mode {
            Mode::V1 => stats::collect_v1(self),
            Mode::V2 => stats::collect_v2(self),
        }
    }

    /// Remove the directories this container created, deepest first. Idempotent.
    pub fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for h in &self.state.hierarchies {
            if let Err(e) = path::remove_dirs(h) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What to mount at the container's /sys/fs/cgroup. v1: one entry per v1 hierarchy,
    /// `(mount name, host dir of this cgroup, super options)`, e.g. `("memory",
    /// "/sys/fs/cgroup/memory/yun/abc", "memory")` or `("systemd", .., "name=systemd")`; the
    /// hybrid cgroup2 mount is left out, as runc does. v2: one entry `("", dir, "")`, the name
    /// "" meaning /sys/fs/cgroup itself.
    pub fn mount_sources(&self) -> Vec<(String, PathBuf, String)> {
        match self.state.mode {
            Mode::V1 => self
                .state
                .hierarchies
                .iter()
                .filter(|h| h.kind == Kind::V1)
                .map(|h| (h.name.clone(), h.dir.clone(), h.options.clone()))
                .collect(),
            Mode::V2 => self
                .unified()
                .map(|h| (String::new(), h.dir.clone(), String::new()))
                .into_iter()
                .collect(),
        }
    }
}

/// Write `value` to a cgroup file in a single write(2) (the kernel parses each write alone).
fn write_file(path: &Path, value: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| anyhow!("open {}: {e}", path.display()))?;
    f.write_all(value.as_bytes())
        .map_err(|e| anyhow!("write {value:?} to {}: {e}", path.display()))
}

/// Write a setting for config field `field`: errors name the field first.
fn set(dir: &Path, file: &str, value: &str, field: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        bail!(
            "{field}: {} does not exist (this kernel lacks the setting)",
            path.display()
        );
    }
    write_file(&path, value).map_err(|e| anyhow!("{field}: {e}"))
}

/// Read a small cgroup file, trimmed.
fn read_trimmed(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| anyhow!("read {}: {e}", path.display()))
}
