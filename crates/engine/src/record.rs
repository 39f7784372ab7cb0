//! The engine's record of a container: `DATA/containers/ID/container.json`, plus the name
//! index `DATA/containers/names/NAME` (a symlink to the id: creating it is the atomic claim
//! of the name) and the files the monitor writes (`exit`, `error`, `ctr.log`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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

    /// Claim `name` for `id`; fails if another container has it.
    pub fn claim_name(&self, name: &str, id: &str) -> Result<()> {
        fs::create_dir_all(self.names())?;
        match std::os::unix::fs::symlink(id, self.names().join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "the container name \"{name}\" is already in use by {}",
                self.id_of_name(name).unwrap_or_default()
            ),
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
