//! The engine's record of a container: `DATA/containers/ID/container.json`, plus the name
//! index `DATA/containers/names/NAME` (a symlink to the id: creating it is the atomic claim
//! of the name) and the files the monitor writes (`exit`, `error`, `ctr.log`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// The image reference as the user gave it, and the image id it resolved to.
    pub image: String,
    pub image_id: String,
    pub command: Vec<String>,
    /// RFC 3339.
    pub created: String,
    pub detached: bool,
    pub auto_remove: bool,
    pub tty: bool,
    /// A detached container whose stdin stays open for attach (a pod's `stdin: true`), and
    /// closed after the first attach ends (`stdinOnce`).
    #[serde(default)]
    pub stdin_open: bool,
    #[serde(default)]
    pub stdin_once: bool,
    /// Caller's labels (the node agent finds a pod's containers by them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// How big its log may grow (records from before this field get the default).
    #[serde(default)]
    pub log_rotation: crate::logfile::Rotation,
}

/// Where everything of the engine lives under the data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    pub containers: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Layout {
        Layout {
            containers: data_dir.join("containers"),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.containers.join(id)
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir(id).join("bundle")
    }

    /// The socket attach writes a detached container's stdin to (see `attach`).
    pub fn attach_socket(&self, id: &str) -> PathBuf {
        self.dir(id).join("attach.sock")
    }

    pub fn log(&self, id: &str) -> PathBuf {
        self.dir(id).join("ctr.log")
    }

    pub fn exit_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("exit")
    }

    pub fn error_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("error")
    }

    fn names(&self) -> PathBuf {
        self.containers.join("names")
    }

    /// Claim `name` for `id`; fails if another container has it. A claim older than
    /// `stale_after` whose container was never recorded was left by a process killed between
    /// claiming and saving (`yun up` SIGKILLed mid-create): it is taken over, and the id it
    /// named is returned so the caller can remove what that attempt left.
    pub fn claim_name(
        &self,
        name: &str,
        id: &str,
        stale_after: Duration,
    ) -> Result<Option<String>> {
        fs::create_dir_all(self.names())?;
        let link = self.names().join(name);
        match std::os::unix::fs::symlink(id, &link) {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = self.id_of_name(name).unwrap_or_default();
                let unrecorded = !self.dir(&holder).join("container.json").exists();
                let age = fs::symlink_metadata(&link)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                if !holder.is_empty() && unrecorded && age >= stale_after {
                    fs::remove_file(&link).context("remove a stale container name")?;
                    std::os::unix::fs::symlink(id, &link).context("claim container name")?;
                    return Ok(Some(holder));
                }
                bail!("the container name \"{name}\" is already in use by {holder}")
            }
            Err(e) => Err(e).context("claim container name"),
        }
    }

    pub fn release_name(&self, name: &str) {
        let _ = fs::remove_file(self.names().join(name));
    }

    fn id_of_name(&self, name: &str) -> Option<String> {
        fs::read_link(self.names().join(name))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    pub fn save(&self, c: &Container) -> Result<()> {
        let dir = self.dir(&c.id);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(".container.json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(c)?)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join("container.json"))?;
        Ok(())
    }

    pub fn load(&self, id: &str) -> Result<Container> {
        let path = self.dir(id).join("container.json");
        let data = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("{}: corrupt", path.display()))
    }

    /// All containers, oldest first.
    pub fn all(&self) -> Vec<Container> {
        let Ok(entries) = fs::read_dir(&self.containers) else {
            return Vec::new();
        };
        let mut out: Vec<Container> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != "names")
            .filter_map(|id| self.load(&id).ok())
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created));
        out
    }

    /// The containers whose names start with `prefix`, oldest first: found through the
    /// name links, so only those records are read (not every container's).
    pub fn with_name_prefix(&self, prefix: &str) -> Vec<Container> {
        let Ok(entries) = fs::read_dir(self.names()) else {
            return Vec::new();
        };
        let mut out: Vec<Container> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .filter_map(|n| self.id_of_name(&n))
            .filter_map(|id| self.load(&id).ok())
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created));
        out
    }

    /// A container by name, full id, or unique id prefix (like docker).
    pub fn find(&self, key: &str) -> Result<Container> {
        if let Some(id) = self.id_of_name(key) {
            return self.load(&id);
        }
        let matches: Vec<Container> = self
            .all()
            .into_iter()
            .filter(|c| c.id.starts_with(key))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(anyhow!("no such container: {key}")),
            _ => bail!("container id prefix {key:?} is ambiguous"),
        }
    }

    pub fn exit_code(&self, id: &str) -> Option<i32> {
        fs::read_to_string(self.exit_file(id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the container's end was the OOM killer's doing.
    pub fn oom_killed(&self, id: &str) -> bool {
        self.dir(id).join("oom-killed").exists()
    }

    /// Record the end: the OOM mark first, as the exit file is what readers wait for.
    pub fn write_exit(&self, id: &str, code: i32, oom_killed: bool) -> Result<()> {
        if oom_killed {
            fs::write(self.dir(id).join("oom-killed"), "")?;
        }
        let tmp = self.dir(id).join(".exit.tmp");
        fs::write(&tmp, code.to_string())?;
        fs::rename(&tmp, self.exit_file(id))?;
        Ok(())
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    #[test]
    fn a_claim_left_by_a_killed_create_is_taken_over_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        // Claimed, never recorded (the process died before saving).
        assert_eq!(
            layout
                .claim_name("yunpod_x_c_0", "dead", Duration::ZERO)
                .unwrap(),
            None
        );
        // Fresh claims are left alone (a create may be under way)...
        let e = layout
            .claim_name("yunpod_x_c_0", "new", Duration::from_secs(3600))
            .unwrap_err();
        assert!(e.to_string().contains("already in use by dead"), "{e}");
        // ...stale ones are taken over.
        assert_eq!(
            layout
                .claim_name("yunpod_x_c_0", "new", Duration::ZERO)
                .unwrap(),
            Some("dead".to_string())
        );
        // A recorded container's name is never taken.
        fs::create_dir_all(layout.dir("new")).unwrap();
        fs::write(layout.dir("new").join("container.json"), "{}").unwrap();
        let e = layout
            .claim_name("yunpod_x_c_0", "third", Duration::ZERO)
            .unwrap_err();
        assert!(e.to_string().contains("already in use by new"), "{e}");
    }

    #[test]
    fn containers_are_found_by_name_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        for (id, name) in [
            ("1", "yunpod_a_c_0"),
            ("2", "yunpod_b_c_0"),
            ("3", "yunpod_a_POD_0"),
        ] {
            layout.claim_name(name, id, Duration::from_secs(5)).unwrap();
            let c: Container = serde_json::from_value(serde_json::json!({
                "id": id, "name": name, "image": "busybox", "image_id": "x", "command": [],
                "created": format!("2026-01-01T00:00:0{id}Z"), "detached": true,
                "auto_remove": false, "tty": false}))
            .unwrap();
            layout.save(&c).unwrap();
        }
        let ids: Vec<String> = layout
            .with_name_prefix("yunpod_a_")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["1", "3"]);
    }
}
