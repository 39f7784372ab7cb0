//! The only persistent state: one directory per container under the runtime root.
//!
//! `ROOT/ID/state.json` is written atomically (temp file, fsync, rename). `ROOT/ID/exec.fifo`
//! exists between `create` and `start`: the waiting init blocks on opening it for writing.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cgroups::{self, CgroupState};
use crate::Error;

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

/// The OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.pad(s)
    }
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Start time of that pid (field 22 of /proc/PID/stat), to tell it from a reused pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup: CgroupState,
    /// The config the container was created from (hooks and exec defaults need it, and the
    /// bundle may change or vanish after create).
    pub config: oci_spec::runtime::Spec,
    /// Where `create` mounted a clone of the container's root on the host
    /// (`linux.rootfsPropagation` shared); `delete` unmounts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_clone: Option<PathBuf>,
}

/// The state JSON given to hooks and printed by `state`, as the runtime spec defines it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// runc's `state` output: the OCI state plus rootfs, created and owner.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// Container ids become directory names: keep them to a safe alphabet, like runc.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()).into())
    }
}

/// The directory of container `id` under `root`.
pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

impl ContainerState {
    pub fn load(root: &Path, id: &str) -> Result<ContainerState> {
        check_id(id)?;
        let path = dir(root, id).join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()).into())
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        serde_json::from_slice(&data).with_context(|| format!("{}: corrupt", path.display()))
    }

    /// Write atomically: a reader sees the old or the new state, never half of one.
    pub fn save(&self, root: &Path) -> Result<()> {
        let d = dir(root, &self.id);
        let tmp = d.join(".state.json.tmp");
        // Root's alone: the state holds the whole config (env, hooks, mounts).
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("create {}", tmp.display()))?
        };
        f.write_all(&serde_json::to_vec(self)?)?;
        f.sync_all()?;
        fs::rename(&tmp, d.join(STATE_FILE)).context("rename state file")?;
        Ok(())
    }

    pub fn status(&self, root: &Path) -> Status {
        if !pid_alive(self.pid, self.pid_start) {
            return Status::Stopped;
        }
        if dir(root, &self.id).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        let cg = cgroups::Manager::from_state(&self.cgroup);
        if cg.is_frozen().unwrap_or(false) {
            return Status::Paused;
        }
        Status::Running
    }

    pub fn oci(&self, status: Status) -> OciState {
        OciState {
            oci_version: self.config.version().clone(),
            id: self.id.clone(),
            status,
            pid: (status != Status::Stopped).then_some(self.pid),
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }

    pub fn report(&self, root: &Path) -> StateReport {
        let status = self.status(root);
        StateReport {
            oci_version: self.config.version().clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Start time of `pid` in clock ticks since boot, or None if it does not exist.
pub fn pid_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn pid_alive(pid: i32, start: u64) -> bool {
    pid > 0 && pid_start_time(pid) == Some(start)
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "abc-1_2.3+x", "0123456789abcdef"] {
            check_id(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", "é"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id() as i32;
        let t = pid_start_time(me).unwrap();
        assert!(pid_alive(me, t));
        assert!(!pid_alive(me, t + 1));
        assert!(!pid_alive(i32::MAX, t));
    }
}
