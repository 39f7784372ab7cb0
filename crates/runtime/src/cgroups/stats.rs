//! Usage statistics in the layout of runc's `events --stats` data (runc's types/events.go), so
//! tools that read runc's output read ours. Field names and `omitempty` behaviour follow it;
//! whatever this host lacks is left at zero/empty instead of failing.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::validate::parse_list;
use super::{Manager, Mode};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    /// Keyed by page size ("2MB").
    pub hugetlb: BTreeMap<String, Hugetlb>,
    pub intel_rdt: IntelRdt,
    /// Always null here: runc fills it only for containers it set up networking for.
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Hugetlb {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "ioQueueRecursive"
    )]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Pids {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 means no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// All times in nanoseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuUsage {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuSet {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// runc reports Intel RDT here; yun does not manage resctrl, so it stays `{}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct IntelRdt {}

/// Read a single-number file; absent or unparsable reads as None. "max" is u64::MAX.
fn read_u64(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let t = text.trim();
    if t == "max" {
        return Some(u64::MAX);
    }
    t.parse().ok()
}

fn num(dir: &Path, file: &str) -> u64 {
    read_u64(&dir.join(file)).unwrap_or(0)
}

/// "key value" lines (memory.stat, cpu.stat, memory.events...) into a map.
fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn keyed_file(path: &Path) -> BTreeMap<String, u64> {
    keyed(&fs::read_to_string(path).unwrap_or_default())
}

/// The value of `key` in "key value" lines.
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    keyed(text).get(key).copied()
}

fn numbers(path: &Path) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// USER_HZ, the unit of cpuacct.stat.
fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Hugepage sizes of this host as cgroup file names use them ("2MB", "1GB").
fn hugepage_sizes() -> Vec<String> {
    let mut sizes = Vec::new();
    for entry in fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        sizes.push(if kb >= 1 << 20 && kb % (1 << 20) == 0 {
            format!("{}GB", kb >> 20)
        } else if kb >= 1 << 10 && kb % (1 << 10) == 0 {
            format!("{}MB", kb >> 10)
        } else {
            format!("{kb}KB")
        });
    }
    sizes
}

fn list16(path: &Path) -> Vec<u16> {
    let text = fs::read_to_string(path).unwrap_or_default();
    if text.trim().is_empty() {
        return Vec::new();
    }
    parse_list(&text)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| u16::try_from(n).ok())
        .collect()
}

fn dir_of<'a>(m: &'a Manager, ctrl: &str) -> Option<&'a Path> {
    m.hierarchy(ctrl).map(|h| h.dir.as_path())
}

/// Parse blkio lines "8:0 Read 1234" (or "8:0 1234"), skipping the "Total N" summary.
fn blkio_entries(path: &Path) -> Option<Vec<BlkioEntry>> {
    let text = fs::read_to_string(path).ok()?;
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split([' ', ':']).filter(|f| !f.is_empty()).collect();
        let (major, minor, op, value) = match fields.as_slice() {
            [maj, min, op, v] => (maj, min, op.to_string(), v),
            [maj, min, v] => (maj, min, String::new(), v),
            _ => continue,
        };
        let (Ok(major), Ok(minor), Ok(value)) = (major.parse(), minor.parse(), value.parse())
        else {
            continue;
        };
        out.push(BlkioEntry {
            major,
            minor,
            op,
            value,
        });
    }
    Some(out)
}

pub fn collect_v1(m: &Manager) -> Result<Stats> {
    debug_assert_eq!(m.mode(), Mode::V1);
    let mut s = Stats::default();
    if let Some(d) = dir_of(m, "cpuacct") {
        s.cpu.usage.total = num(d, "cpuacct.usage");
        s.cpu.usage.percpu = numbers(&d.join("cpuacct.usage_percpu"));
        s.cpu.usage.percpu_kernel = numbers(&d.join("cpuacct.usage_percpu_sys"));
        s.cpu.usage.percpu_user = numbers(&d.join("cpuacct.usage_percpu_user"));
        let st = keyed_file(&d.join("cpuacct.stat"));
        let ns_per_tick = 1_000_000_000 / clock_ticks();
        s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * ns_per_tick;
        s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * ns_per_tick;
    }
    if let Some(d) = dir_of(m, "cpu") {
        let st = keyed_file(&d.join("cpu.stat"));
        s.cpu.throttling = Throttling {
            periods: st.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: st.get("throttled_time").copied().unwrap_or(0),
        };
    }
    if let Some(d) = dir_of(m, "cpuset") {
        s.cpuset = CpuSet {
            cpus: list16(&d.join("cpuset.cpus")),
            cpu_exclusive: num(d, "cpuset.cpu_exclusive"),
            mems: list16(&d.join("cpuset.mems")),
            mem_hardwall: num(d, "cpuset.mem_hardwall"),
            mem_exclusive: num(d, "cpuset.mem_exclusive"),
            memory_migrate: num(d, "cpuset.memory_migrate"),
            memory_spread_page: num(d, "cpuset.memory_spread_page"),
            memory_spread_slab: num(d, "cpuset.memory_spread_slab"),
            memory_pressure: num(d, "cpuset.memory_pressure"),
            sched_load_balance: num(d, "cpuset.sched_load_balance"),
            sched_relax_domain_level: fs::read_to_string(d.join("cpuset.sched_relax_domain_level"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
        };
    }
    if let Some(d) = dir_of(m, "memory") {
        let entry = |prefix: &str| MemoryEntry {
            limit: num(d, &format!("{prefix}.limit_in_bytes")),
            usage: num(d, &format!("{prefix}.usage_in_bytes")),
            max: num(d, &format!("{prefix}.max_usage_in_bytes")),
            failcnt: num(d, &format!("{prefix}.failcnt")),
        };
        s.memory.usage = MemoryEntry {
            limit: num(d, "memory.limit_in_bytes"),
            usage: num(d, "memory.usage_in_bytes"),
            max: num(d, "memory.max_usage_in_bytes"),
            failcnt: num(d, "memory.failcnt"),
        };
        s.memory.swap = entry("memory.memsw");
        s.memory.kernel = entry("memory.kmem");
        s.memory.kernel_tcp = entry("memory.kmem.tcp");
        s.memory.raw = keyed_file(&d.join("memory.stat"));
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(d) = dir_of(m, "pids") {
        s.pids = pids(d);
    }
    if let Some(d) = dir_of(m, "blkio") {
        s.blkio = blkio_v1(d);
    }
    if let Some(d) = dir_of(m, "hugetlb") {
        for size in hugepage_sizes() {
            let f = |what: &str| num(d, &format!("hugetlb.{size}.{what}"));
            let entry = Hugetlb {
                usage: f("usage_in_bytes"),
                max: f("max_usage_in_bytes"),
                failcnt: f("failcnt"),
            };
            s.hugetlb.insert(size, entry);
        }
    } else if let Some(u) = m.unified() {
        // On hybrid hosts hugetlb may be bound to the cgroup2 hierarchy instead.
        hugetlb_v2(&u.dir, &mut s.hugetlb);
    }
    Ok(s)
}

fn pids(d: &Path) -> Pids {
    Pids {
        current: num(d, "pids.current"),
        // runc reports "max" (no limit) as 0.
        limit: read_u64(&d.join("pids.max"))
            .filter(|v| *v != u64::MAX)
            .unwrap_or(0),
    }
}

/// The first source that has data wins, in runc's order: BFQ, CFQ, then the throttle layer
/// (which sees I/O to every device).
fn blkio_v1(d: &Path) -> Blkio {
    let mut b = Blkio::default();
    let groups: [[&str; 2]; 4] = [
        [
            "blkio.bfq.io_serviced_recursive",
            "blkio.bfq.io_service_bytes_recursive",
        ],
        [
            "blkio.io_serviced_recursive",
            "blkio.io_service_bytes_recursive",
        ],
        [
            "blkio.throttle.io_serviced_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        ],
        [
            "blkio.throttle.io_serviced",
            "blkio.throttle.io_service_bytes",
        ],
    ];
    for [serviced, bytes] in groups {
        match blkio_entries(&d.join(serviced)) {
            Some(entries) if !entries.is_empty() => {
                b.io_serviced_recursive = entries;
                b.io_service_bytes_recursive = blkio_entries(&d.join(bytes)).unwrap_or_default();
                break;
            }
            _ => continue,
        }
    }
    if !b.io_serviced_recursive.is_empty() {
        // The CFQ-only detail files, when this kernel still has them.
        let extra = [
            ("blkio.io_queued_recursive", &mut b.io_queued_recursive),
            (
                "blkio.io_service_time_recursive",
                &mut b.io_service_time_recursive,
            ),
            (
                "blkio.io_wait_time_recursive",
                &mut b.io_wait_time_recursive,
            ),
            ("blkio.io_merged_recursive", &mut b.io_merged_recursive),
            ("blkio.time_recursive", &mut b.io_time_recursive),
            ("blkio.sectors_recursive", &mut b.sectors_recursive),
        ];
        for (file, slot) in extra {
            *slot = blkio_entries(&d.join(file)).unwrap_or_default();
        }
    }
    b
}

fn hugetlb_v2(d: &Path, out: &mut BTreeMap<String, Hugetlb>) {
    for size in hugepage_sizes() {
        let current = d.join(format!("hugetlb.{size}.current"));
        let Some(usage) = read_u64(&current) else {
            continue;
        };
        let events = keyed_file(&d.join(format!("hugetlb.{size}.events")));
        out.insert(
            size,
            Hugetlb {
                usage,
                max: 0,
                failcnt: events.get("max").copied().unwrap_or(0),
            },
        );
    }
}

pub fn collect_v2(m: &Manager) -> Result<Stats> {
    let mut s = Stats::default();
    let Some(h) = m.unified() else {
        return Ok(s);
    };
    let d = h.dir.as_path();
    // cpu.stat is a core file: it exists even without the cpu controller.
    let st = keyed_file(&d.join("cpu.stat"));
    let us = |k: &str| st.get(k).copied().unwrap_or(0) * 1000;
    s.cpu.usage.total = us("usage_usec");
    s.cpu.usage.user = us("user_usec");
    s.cpu.usage.kernel = us("system_usec");
    s.cpu.throttling = Throttling {
        periods: st.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
        throttled_time: us("throttled_usec"),
    };
    s.cpuset.cpus = list16(&d.join("cpuset.cpus.effective"));
    s.cpuset.mems = list16(&d.join("cpuset.mems.effective"));
    if d.join("memory.current").exists() {
        let events = keyed_file(&d.join("memory.events"));
        s.memory.usage = MemoryEntry {
            limit: read_u64(&d.join("memory.max")).unwrap_or(u64::MAX),
            usage: num(d, "memory.current"),
            max: num(d, "memory.peak"),
            failcnt: events.get("max").copied().unwrap_or(0),
        };
        // v1 reported memory+swap; keep that meaning for readers written against it.
        let swap_limit = read_u64(&d.join("memory.swap.max")).unwrap_or(u64::MAX);
        s.memory.swap = MemoryEntry {
            limit: if swap_limit == u64::MAX || s.memory.usage.limit == u64::MAX {
                u64::MAX
            } else {
                swap_limit + s.memory.usage.limit
            },
            usage: num(d, "memory.swap.current") + s.memory.usage.usage,
            max: 0,
            failcnt: keyed_file(&d.join("memory.swap.events"))
                .get("max")
                .copied()
                .unwrap_or(0),
        };
        s.memory.raw = keyed_file(&d.join("memory.stat"));
        s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
    }
    if d.join("pids.current").exists() {
        s.pids = pids(d);
    }
    for line in fs::read_to_string(d.join("io.stat"))
        .unwrap_or_default()
        .lines()
    {
        io_stat_line(line, &mut s.blkio);
    }
    hugetlb_v2(d, &mut s.hugetlb);
    Ok(s)
}

/// "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" into v1-style Read/Write entries.
fn io_stat_line(line: &str, b: &mut Blkio) {
    let mut parts = line.split_whitespace();
    let Some((major, minor)) = parts.next().and_then(|d| d.split_once(':')) else {
        return;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
        return;
    };
    for kv in parts {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let Ok(value) = v.parse::<u64>() else {
            continue;
        };
        let (list, op) = match k {
            "rbytes" => (&mut b.io_service_bytes_recursive, "Read"),
            "wbytes" => (&mut b.io_service_bytes_recursive, "Write"),
            "rios" => (&mut b.io_serviced_recursive, "Read"),
            "wios" => (&mut b.io_serviced_recursive, "Write"),
            _ => continue,
        };
        list.push(BlkioEntry {
            major,
            minor,
            op: op.to_string(),
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_layout() {
        let mut s = Stats::default();
        s.cpu.usage.total = 5;
        s.memory.usage.limit = 10;
        s.pids.current = 1;
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["cpu"]["usage"]["total"], 5);
        assert_eq!(v["cpu"]["usage"]["kernel"], 0);
        assert!(v["cpu"]["usage"].get("percpu").is_none());
        assert!(v["cpu"]["throttling"].get("throttledPeriods").is_none());
        assert_eq!(v["memory"]["usage"]["limit"], 10);
        assert_eq!(v["memory"]["usage"]["failcnt"], 0);
        assert!(v["memory"].get("kernelTCP").is_some());
        assert!(v["memory"].get("raw").is_none());
        assert_eq!(v["pids"]["current"], 1);
        assert_eq!(v["hugetlb"], serde_json::json!({}));
        assert_eq!(v["blkio"], serde_json::json!({}));
        assert_eq!(v["intel_rdt"], serde_json::json!({}));
        assert!(v["network_interfaces"].is_null());
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn blkio_and_io_stat_parsing() {
        let mut b = Blkio::default();
        io_stat_line(
            "8:16 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0",
            &mut b,
        );
        assert_eq!(b.io_service_bytes_recursive.len(), 2);
        assert_eq!(b.io_service_bytes_recursive[0].value, 4096);
        assert_eq!(b.io_serviced_recursive[0].op, "Read");
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["ioServiceBytesRecursive"][0]["major"], 8);
        assert!(v["ioServiceBytesRecursive"][1].get("value").is_none());
    }

    #[test]
    fn keyed_lines() {
        assert_eq!(
            keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(keyed_value("under_oom 0\n", "oom_kill"), None);
    }
}
