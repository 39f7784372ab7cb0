//! The host's kernel samepage merging (/sys/kernel/mm/ksm): guest RAM is registered mergeable
//! (QEMU `mem-merge=on`), KSM hashes and compares pages and shares identical ones copy-on-write.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

const KSM: &str = "/sys/kernel/mm/ksm";

/// What KSM does and has shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KsmStatus {
    /// `run`: 0 stopped, 1 running, 2 unmerge all.
    pub run: u32,
    /// Distinct shared pages kept.
    pub pages_shared: u64,
    /// Page mappings that use a shared page (pages saved = pages_sharing).
    pub pages_sharing: u64,
    pub pages_to_scan: u64,
    pub sleep_millisecs: u64,
    pub full_scans: u64,
}

impl KsmStatus {
    /// Memory saved by sharing, MiB.
    pub fn saved_mib(&self) -> u64 {
        self.pages_sharing * page_size() / (1024 * 1024)
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64
}

fn read(name: &str) -> Result<u64> {
    let p = Path::new(KSM).join(name);
    let s = fs::read_to_string(&p)
        .with_context(|| format!("{}: cannot read (kernel without KSM?)", p.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("{}: not a number", p.display()))
}

fn write(name: &str, value: u64) -> Result<()> {
    let p = Path::new(KSM).join(name);
    fs::write(&p, value.to_string()).with_context(|| format!("write {}", p.display()))
}

pub fn ksm_status() -> Result<KsmStatus> {
    Ok(KsmStatus {
        run: read("run")? as u32,
        pages_shared: read("pages_shared")?,
        pages_sharing: read("pages_sharing")?,
        pages_to_scan: read("pages_to_scan")?,
        sleep_millisecs: read("sleep_millisecs")?,
        full_scans: read("full_scans")?,
    })
}

/// Start (`true`) or stop KSM. Stopping keeps pages already merged (`run=0`), as the kernel does.
pub fn ksm_set(on: bool) -> Result<()> {
    write("run", u64::from(on))
}

/// Scan speed: pages per wake-up and the sleep between wake-ups.
pub fn ksm_tune(pages_to_scan: u64, sleep_millisecs: u64) -> Result<()> {
    write("pages_to_scan", pages_to_scan)?;
    write("sleep_millisecs", sleep_millisecs)
}
