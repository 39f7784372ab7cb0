//! What a node was started with (`DATA_DIR/node.json`): its name, bridge and pod CIDR.
//!
//! `yun up` and `yun agent` write it; `yun down` reads it, so taking a node down acts on
//! the bridge and service rules that node really made, not on the defaults (a data dir
//! started with `--bridge yun7` is taken down with a plain `yun --data-dir D down`).
//! Flags given on the command line still override what is recorded.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

const FILE: &str = "node.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    pub bridge: String,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
}

impl NodeRecord {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// The record in `data_dir`, or None if the node was never started there.
    pub fn load(data_dir: &Path) -> Result<Option<NodeRecord>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let record = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a node record", path.display()))?;
        Ok(Some(record))
    }

    /// Write the record atomically (temp file, fsync, rename), readable by root only.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!(".{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(data_dir)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("plain struct serializes"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()
        };
        write().with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent() {
        let dir = tempfile::Builder::new()
            .prefix("yun-record")
            .tempdir()
            .unwrap();
        assert_eq!(NodeRecord::load(dir.path()).unwrap(), None);
        let r = NodeRecord {
            name: "n1".into(),
            bridge: "yun7".into(),
            pod_cidr: "10.42.7.0/24".into(),
        };
        r.save(dir.path()).unwrap();
        assert_eq!(NodeRecord::load(dir.path()).unwrap(), Some(r));
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        let err = NodeRecord::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a node record"), "{err}");
    }
}
