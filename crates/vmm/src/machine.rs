//! Managed VMs on disk, one directory each under `DATA/vm/machines/NAME/`:
//!
//! ```text
//! config.json     the definition (VmConfig), written once by define; owner: the CLI
//! state.json      state, reason, pids (StateRecord); owner: the VM's supervisor
//! launch.json     the QEMU argv of the current start, handed to the supervisor
//! lock            flock held by the supervisor for its whole life: "is it live?"
//! qmp.sock        QMP for yun commands;  sup.sock: QMP for the supervisor's events
//! console.sock    serial console to attach to;  console.log: everything it printed
//! qemu.log        QEMU's stderr;  supervisor.log: the supervisor's
//! root.ext4       root disk built from --image;  snapshots/TAG.state: saved VM state
//! ```

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::driver::{State, VmConfig};
use crate::net::VmNet;

/// `struct sockaddr_un.sun_path` is 108 bytes with the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// What the supervisor records about the VM it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateRecord {
    pub state: State,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    #[serde(default)]
    pub qemu_pid: Option<u32>,
}

/// One start of a VM, as the supervisor executes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Launch {
    pub qemu: PathBuf,
    /// Machine arguments; the supervisor adds sockets, console and `-incoming`.
    pub args: Vec<String>,
    /// Restore from this saved state instead of booting.
    pub incoming: Option<PathBuf>,
    /// For naming the disk in QEMU's errors.
    pub disks: Vec<Disk>,
    pub nonce: String,
    /// The tap to create before QEMU starts and remove after it ends.
    #[serde(default)]
    pub net: Option<VmNet>,
    /// The taps the supervisor opens and hands to QEMU (`-netdev tap,fd=`), in order.
    #[serde(default)]
    pub taps: Vec<String>,
    /// Run the vsock device (in the supervisor) for this QEMU.
    #[serde(default)]
    pub vsock: bool,
}

/// The machines directory of a data dir.
#[derive(Debug, Clone)]
pub(crate) struct Machines {
    pub root: PathBuf,
}

pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("name {name:?}: use 1-48 letters, digits, '_', '.', '-', starting with a letter or digit");
    }
    Ok(())
}

impl Machines {
    pub fn new(data_dir: &Path) -> Machines {
        let data_dir = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        Machines {
            root: data_dir.join("vm").join("machines"),
        }
    }

    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        let dir = self.root.join(name);
        let longest = dir.join("console.sock");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "{}: too long for a Unix socket path; use a shorter data dir or name",
                longest.display()
            );
        }
        Ok(dir)
    }

    /// The directory of an existing VM.
    pub fn existing(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir(name)?;
        if !dir.join("config.json").is_file() {
            bail!("vm {name}: no such VM");
        }
        Ok(dir)
    }

    pub fn config(&self, name: &str) -> Result<VmConfig> {
        let path = self.existing(name)?.join("config.json");
        let data = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("{}: bad record", path.display()))
    }

    pub fn names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.root.display())),
        };
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && self.root.join(&name).join("config.json").is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

pub(crate) fn read_state(dir: &Path) -> Option<StateRecord> {
    serde_json::from_slice(&fs::read(dir.join("state.json")).ok()?).ok()
}

pub(crate) fn write_state(dir: &Path, rec: &StateRecord) -> Result<()> {
    atomic_write(&dir.join("state.json"), &serde_json::to_vec_pretty(rec)?)
}

/// Write temp + fsync + rename, so readers see the old or the new file, never half of one.
pub(crate) fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("write {}", path.display()))
}

/// Try to take the VM's lock; `None` when a live supervisor holds it.
pub(crate) fn try_lock(dir: &Path) -> Result<Option<fs::File>> {
    let path = dir.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a fd we own; non-blocking, no memory passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(Some(f));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(None);
    }
    Err(e).with_context(|| format!("lock {}", path.display()))
}

/// Whether a supervisor runs this VM now.
pub(crate) fn is_live(dir: &Path) -> bool {
    matches!(try_lock(dir), Ok(None))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// VmRSS of a process, KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| anyhow!("process {pid}: gone"))?;
    status
        .lines()
        .find_map(|l| kib_field(l, "VmRSS:"))
        .ok_or_else(|| anyhow!("process {pid}: no VmRSS"))
}

/// The value of a `Key:   123 kB` line of /proc (status, smaps, meminfo), when `line` is `key`'s.
pub(crate) fn kib_field(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Where the guest's RAM stands on the host, KiB: how much of it is resident and how much of that
/// is KSM-merged (the `Rss:` and `KSM:` lines of one smaps entry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GuestRam {
    pub rss_kib: u64,
    pub ksm_kib: u64,
}

/// The hypervisor's mapping of guest RAM: the one mapping exactly the guest's size (QEMU maps a
/// pc guest below 3.5 GiB as one block). None when there is no such mapping.
pub(crate) fn guest_ram(pid: u32, memory_mib: u32) -> Option<GuestRam> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    guest_ram_in(&smaps, u64::from(memory_mib) * 1024)
}

fn guest_ram_in(smaps: &str, size_kib: u64) -> Option<GuestRam> {
    let mut found: Option<GuestRam> = None;
    for l in smaps.lines() {
        if let Some(size) = kib_field(l, "Size:") {
            if found.is_some() {
                break; // the next mapping begins
            }
            if size == size_kib {
                found = Some(GuestRam::default());
            }
        } else if let Some(ram) = found.as_mut() {
            if let Some(rss) = kib_field(l, "Rss:") {
                ram.rss_kib = rss;
            } else if let Some(ksm) = kib_field(l, "KSM:") {
                // Older kernels have no KSM line: 0 then.
                ram.ksm_kib = ksm;
            }
        }
    }
    found
}

/// utime + stime of a process, milliseconds.
pub(crate) fn cpu_ms(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| anyhow!("process {pid}: gone"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                1024 kB
KSM:                   0 kB
7f4e33e00000-7f4e43e00000 rw-p 00000000 00:00 0
Size:             262144 kB
KernelPageSize:        4 kB
Rss:               64936 kB
Anonymous:         64936 kB
KSM:               49312 kB
AnonHugePages:     14336 kB
7f4e43e00000-7f4e44000000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                2048 kB
KSM:                 512 kB
";

    #[test]
    fn guest_ram_is_the_mapping_of_the_guests_size() {
        let ram = guest_ram_in(SMAPS, 256 * 1024).unwrap();
        assert_eq!(
            ram,
            GuestRam {
                rss_kib: 64936,
                ksm_kib: 49312
            }
        );
        assert_eq!(guest_ram_in(SMAPS, 512 * 1024), None);
    }
}
