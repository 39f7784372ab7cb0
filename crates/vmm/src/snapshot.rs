//! VM snapshots for fast start: QEMU's migration stream (RAM + device state) written to a file
//! and loaded by a fresh QEMU with `-incoming`. Disks are not part of it: a restored guest sees
//! its disks as they are now, so snapshot VMs whose disks it may rely on only while unchanged.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::qmp::Qmp;

/// Longest a migration to file may take (a few hundred MiB at TCG speeds).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);

/// `DIR/snapshots/TAG.state`, with the tag checked.
pub(crate) fn path(dir: &Path, tag: &str) -> Result<PathBuf> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && !tag.starts_with('.')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("tag {tag:?}: use letters, digits, '_', '.', '-' (not leading '.')");
    }
    Ok(dir.join("snapshots").join(format!("{tag}.state")))
}

/// Pause the VM, stream its state to `path` (via a temp file, renamed when complete), and
/// resume it if it was running.
pub(crate) fn save(q: &mut Qmp, path: &Path) -> Result<()> {
    let was_running = q.query_status()?.running;
    let dir = path.parent().expect("snapshot path has a parent");
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = path.with_extension("state.tmp");
    let _ = fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        if was_running {
            // Paused first, so the file holds one consistent instant and no dirty-page rounds.
            q.stop()?;
        }
        // QEMU writes straight into our file (not through a helper process that might still
        // be flushing when QEMU reports "completed").
        let file = fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        q.send_fd("yun-snapshot", file.as_fd())?;
        drop(file);
        q.execute("migrate", Some(json!({ "uri": "fd:yun-snapshot" })))?;
        let deadline = Instant::now() + SAVE_TIMEOUT;
        loop {
            let info = q.execute("query-migrate", None)?;
            match info.get("status").and_then(Value::as_str).unwrap_or("") {
                "completed" => break,
                "failed" | "cancelled" => {
                    let why = info
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("migration failed");
                    bail!("{why}");
                }
                _ => {}
            }
            if Instant::now() > deadline {
                let _ = q.execute("migrate_cancel", None);
                bail!("saving took longer than {SAVE_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    if was_running {
        q.cont()?;
    }
    result
}
