//! Pausing a container: the v1 freezer controller or the v2 core cgroup.freeze file.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::{read_trimmed, v2, write_file, Manager, Mode};

/// How long freeze/thaw wait for the kernel to settle before giving up.
const TIMEOUT: Duration = Duration::from_secs(5);

pub fn set(m: &Manager, frozen: bool) -> Result<()> {
    match m.mode() {
        Mode::V1 => set_v1(m, if frozen { "FROZEN" } else { "THAWED" }),
        Mode::V2 => set_v2(m, frozen),
    }
}

pub fn is_frozen(m: &Manager) -> Result<bool> {
    match m.mode() {
        Mode::V1 => match freezer_state(m) {
            Ok(file) => Ok(read_trimmed(&file)? == "FROZEN"),
            // Without a freezer nothing can have been paused.
            Err(_) => Ok(false),
        },
        Mode::V2 => frozen_event(&v2::unified_dir(m)?.dir),
    }
}

fn freezer_state(m: &Manager) -> Result<PathBuf> {
    m.hierarchy("freezer")
        .map(|h| h.dir.join("freezer.state"))
        .ok_or_else(|| anyhow!("the freezer controller is not available on this host"))
}

/// Poll `done` with a growing pause until it holds or the timeout passes.
fn wait(mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Write `target` to freezer.state and wait until it reads back.
fn set_v1(m: &Manager, target: &str) -> Result<()> {
    let file = freezer_state(m)?;
    let mut last = String::new();
    let reached = wait(|| {
        // Rewriting is deliberate: a freeze racing with a fork can stall in FREEZING, and a
        // fresh write makes the kernel try the stragglers again.
        write_file(&file, target)?;
        last = read_trimmed(&file)?;
        Ok(last == target)
    })?;
    if !reached {
        if target == "FROZEN" {
            // Do not leave the container half-frozen.
            let _ = write_file(&file, "THAWED");
        }
        bail!(
            "{}: still {last} after {TIMEOUT:?} waiting for {target}",
            file.display()
        );
    }
    Ok(())
}

fn frozen_event(dir: &Path) -> Result<bool> {
    let text = read_trimmed(&dir.join("cgroup.events"))?;
    Ok(text.lines().any(|l| l.trim() == "frozen 1"))
}

/// Write cgroup.freeze and wait for cgroup.events to report the new state.
fn set_v2(m: &Manager, frozen: bool) -> Result<()> {
    let dir = v2::unified_dir(m)?.dir.as_path();
    let file = dir.join("cgroup.freeze");
    write_file(&file, if frozen { "1" } else { "0" })?;
    if !wait(|| Ok(frozen_event(dir)? == frozen))? {
        if frozen {
            // Do not leave the container half-frozen.
            let _ = write_file(&file, "0");
        }
        bail!(
            "{}: cgroup.events did not report frozen {} within {TIMEOUT:?}",
            dir.display(),
            u8::from(frozen)
        );
    }
    Ok(())
}
