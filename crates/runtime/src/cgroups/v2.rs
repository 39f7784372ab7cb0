//! cgroup v2: one hierarchy; controllers are handed down through cgroup.subtree_control.
//! Also used on hybrid v1 hosts for their extra cgroup2 mount (`linux.resources.unified`).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxRdma, LinuxResources};

use super::{path, read_trimmed, write_file, HierarchyState, Manager};

/// cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), the mapping runc and crun
/// use so the same config gives the same relative weights on both versions.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000), linearly, as runc does.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// Controllers listed in `dir/cgroup.controllers`.
fn controllers_of(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Is `ctrl` offered by this cgroup2 hierarchy at all (listed at its root)?
pub fn available(h: &HierarchyState, ctrl: &str) -> bool {
    controllers_of(&h.mountpoint).iter().any(|c| c == ctrl)
}

/// Enable `wanted` controllers in cgroup.subtree_control of every ancestor of `h.dir`,
/// top-down, so they appear in the container's cgroup. Each is written alone so that one the
/// kernel refuses does not block the others; the first failure is returned.
pub fn enable_controllers(h: &HierarchyState, wanted: &[String]) -> Result<()> {
    let mut ancestors = vec![h.mountpoint.clone()];
    ancestors.extend(path::chain(&h.mountpoint, &h.dir));
    ancestors.pop(); // the leaf's own subtree_control stays empty: it holds processes
    let mut first_err = None;
    for dir in ancestors {
        let file = dir.join("cgroup.subtree_control");
        let enabled = read_trimmed(&file)?;
        let offered = controllers_of(&dir);
        for c in wanted {
            if enabled.split_whitespace().any(|e| e == c) || !offered.contains(c) {
                continue;
            }
            if let Err(e) = write_file(&file, &format!("+{c}")) {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// mkdir the cgroup and hand every available controller down to it.
pub fn create(h: &mut HierarchyState) -> Result<()> {
    path::make_dirs(h, |_, _| Ok(()))?;
    let all = controllers_of(&h.mountpoint);
    if let Err(e) = enable_controllers(h, &all) {
        // Typically EBUSY from an ancestor that holds processes itself (the v2 "no internal
        // processes" rule). Settings that need the missing controller fail later, by name.
        tracing::warn!(
            "cgroup {}: not every controller could be enabled: {e:#}",
            h.dir.display()
        );
    }
    Ok(())
}

pub fn unified_dir(m: &Manager) -> Result<&HierarchyState> {
    m.unified()
        .ok_or_else(|| anyhow!("no cgroup2 hierarchy is mounted"))
}

pub fn validate(m: &Manager, res: &LinuxResources) -> Result<()> {
    let h = unified_dir(m)?;
    let need = |field: &str, ctrl: &str| -> Result<()> {
        if available(h, ctrl) {
            Ok(())
        } else {
            bail!("linux.resources.{field}: the {ctrl} controller is not available on this host")
        }
    };
    let nonzero = |v: Option<i64>| v.is_some_and(|v| v != 0);
    if let Some(mem) = res.memory() {
        if nonzero(mem.limit()) || nonzero(mem.reservation()) || nonzero(mem.swap()) {
            need("memory", "memory")?;
        }
    }
    if let Some(cpu) = res.cpu() {
        if cpu.shares().is_some_and(|v| v != 0)
            || nonzero(cpu.quota())
            || cpu.period().is_some_and(|v| v != 0)
            || cpu.burst().is_some()
            || cpu.idle().is_some()
        {
            need("cpu", "cpu")?;
        }
        if nonzero(cpu.realtime_runtime()) || cpu.realtime_period().is_some_and(|v| v != 0) {
            bail!("linux.resources.cpu.realtimeRuntime: real-time CPU limits do not exist on cgroup v2");
        }
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
        if set(cpu.cpus()) || set(cpu.mems()) {
            need("cpu.cpus", "cpuset")?;
        }
    }
    if res.pids().is_some() {
        need("pids.limit", "pids")?;
    }
    if let Some(b) = res.block_io() {
        if b.leaf_weight().is_some_and(|v| v != 0)
            || b.weight_device()
                .iter()
                .flatten()
                .any(|w| w.leaf_weight().is_some())
        {
            bail!("linux.resources.blockIO.leafWeight: leaf weights do not exist on cgroup v2");
        }
        if *b != LinuxBlockIo::default() {
            need("blockIO", "io")?;
        }
    }
    if res
        .hugepage_limits()
        .as_ref()
        .is_some_and(|l| !l.is_empty())
    {
        need("hugepageLimits", "hugetlb")?;
    }
    if let Some(n) = res.network() {
        if n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            bail!("linux.resources.network: net_cls and net_prio are cgroup v1 controllers; cgroup v2 has neither");
        }
    }
    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        need("rdma", "rdma")?;
    }
    for key in res.unified().iter().flat_map(|u| u.keys()) {
        let ctrl = key.split('.').next().unwrap_or_default();
        if ctrl != "cgroup" && !available(h, ctrl) {
            bail!("linux.resources.unified: key {key:?}: the {ctrl} controller is not available on this host");
        }
    }
    Ok(())
}

/// Write a v2 setting; a missing file usually means the controller is not enabled for this
/// cgroup, which says more than "no such file".
fn set(dir: &Path, file: &str, value: &str, field: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        let ctrl = file.split('.').next().unwrap_or_default();
        if !controllers_of(dir).iter().any(|c| c == ctrl) {
            bail!(
                "{field}: the {ctrl} controller is not enabled for cgroup {} (see its parent's cgroup.subtree_control)",
                dir.display()
            );
        }
    }
    super::set(dir, file, value, field)
}

pub fn apply(m: &Manager, res: &LinuxResources) -> Result<()> {
    let dir = unified_dir(m)?.dir.as_path();
    if let Some(mem) = res.memory() {
        apply_memory(dir, mem)?;
    }
    if let Some(cpu) = res.cpu() {
        apply_cpu(dir, cpu)?;
    }
    if let Some(p) = res.pids() {
        let value = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        set(dir, "pids.max", &value, "linux.resources.pids.limit")?;
    }
    if let Some(b) = res.block_io() {
        apply_io(dir, b)?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{i}]");
        let limit = h.limit().to_string();
        set(
            dir,
            &format!("hugetlb.{}.max", h.page_size()),
            &limit,
            &field,
        )?;
        let rsvd = format!("hugetlb.{}.rsvd.max", h.page_size());
        if dir.join(&rsvd).exists() {
            set(dir, &rsvd, &limit, &field)?;
        }
    }
    if let Some(rdma) = res.rdma() {
        for (dev, limits) in rdma {
            let field = format!("linux.resources.rdma.{dev}");
            set(dir, "rdma.max", &rdma_line(dev, limits), &field)?;
        }
    }
    if res.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        // cgroup v2 controls devices with an eBPF program attached to the cgroup; yun does not
        // build one yet, so device rules are not enforced here (the mount namespace still only
        // shows the config's devices).
        tracing::warn!("linux.resources.devices: device rules are not enforced on cgroup v2 yet");
    }
    if let Some(unified) = res.unified().as_ref().filter(|u| !u.is_empty()) {
        apply_unified(unified_dir(m)?, unified)?;
    }
    Ok(())
}

fn limit_or_max(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

fn apply_memory(dir: &Path, mem: &LinuxMemory) -> Result<()> {
    let nonzero = |v: Option<i64>| v.filter(|v| *v != 0);
    let limit = nonzero(mem.limit());
    if let Some(l) = limit {
        set(
            dir,
            "memory.max",
            &limit_or_max(l),
            "linux.resources.memory.limit",
        )?;
    }
    if let Some(s) = nonzero(mem.swap()) {
        // OCI swap is the v1 memory+swap total; v2 limits swap alone.
        let value = match (s, limit) {
            (-1, _) => "max".to_string(),
            (s, Some(l)) if l > 0 => (s - l).to_string(),
            _ => bail!("linux.resources.memory.swap: {s} needs a memory limit as well"),
        };
        set(
            dir,
            "memory.swap.max",
            &value,
            "linux.resources.memory.swap",
        )?;
    }
    if let Some(r) = nonzero(mem.reservation()) {
        set(
            dir,
            "memory.low",
            &limit_or_max(r),
            "linux.resources.memory.reservation",
        )?;
    }
    if mem.swappiness().is_some() {
        tracing::warn!(
            "linux.resources.memory.swappiness is ignored: cgroup v2 has no per-cgroup swappiness"
        );
    }
    if mem.disable_oom_killer() == Some(true) {
        tracing::warn!("linux.resources.memory.disableOOMKiller is ignored: cgroup v2 cannot disable the OOM killer");
    }
    #[allow(deprecated)]
    if nonzero(mem.kernel()).is_some() || nonzero(mem.kernel_tcp()).is_some() {
        tracing::warn!("linux.resources.memory.kernel/kernelTCP are ignored: cgroup v2 accounts kernel memory in memory.max");
    }
    Ok(())
}

fn apply_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    if let Some(s) = cpu.shares().filter(|v| *v != 0) {
        let weight = shares_to_weight(s).to_string();
        set(dir, "cpu.weight", &weight, "linux.resources.cpu.shares")?;
    }
    let quota = cpu.quota().filter(|v| *v != 0);
    let period = cpu.period().filter(|v| *v != 0);
    if quota.is_some() || period.is_some() {
        let mut value = match quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        if let Some(p) = period {
            value.push_str(&format!(" {p}"));
        }
        set(dir, "cpu.max", &value, "linux.resources.cpu.quota")?;
    }
    if let Some(b) = cpu.burst() {
        set(
            dir,
            "cpu.max.burst",
            &b.to_string(),
            "linux.resources.cpu.burst",
        )?;
    }
    if let Some(i) = cpu.idle() {
        set(dir, "cpu.idle", &i.to_string(), "linux.resources.cpu.idle")?;
    }
    for (name, file, value) in [
        ("cpus", "cpuset.cpus", cpu.cpus()),
        ("mems", "cpuset.mems", cpu.mems()),
    ] {
        if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            set(dir, file, v, &format!("linux.resources.cpu.{name}"))?;
        }
    }
    Ok(())
}

fn apply_io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    // BFQ takes blkio-style weights as they are; the generic io.weight has a wider range.
    let bfq = dir.join("io.bfq.weight").exists();
    let weight = |w: u16| {
        if bfq {
            ("io.bfq.weight", u64::from(w))
        } else {
            ("io.weight", blkio_weight_to_io_weight(w))
        }
    };
    if let Some(w) = b.weight().filter(|v| *v != 0) {
        let (file, value) = weight(w);
        set(
            dir,
            file,
            &value.to_string(),
            "linux.resources.blockIO.weight",
        )?;
    }
    for (i, wd) in b.weight_device().iter().flatten().enumerate() {
        if let Some(w) = wd.weight() {
            let (file, value) = weight(w);
            let line = format!("{}:{} {value}", wd.major(), wd.minor());
            set(
                dir,
                file,
                &line,
                &format!("linux.resources.blockIO.weightDevice[{i}]"),
            )?;
        }
    }
    for (name, key, list) in [
        (
            "throttleReadBpsDevice",
            "rbps",
            b.throttle_read_bps_device(),
        ),
        (
            "throttleWriteBpsDevice",
            "wbps",
            b.throttle_write_bps_device(),
        ),
        (
            "throttleReadIOPSDevice",
            "riops",
            b.throttle_read_iops_device(),
        ),
        (
            "throttleWriteIOPSDevice",
            "wiops",
            b.throttle_write_iops_device(),
        ),
    ] {
        for (i, td) in list.iter().flatten().enumerate() {
            let line = format!("{}:{} {key}={}", td.major(), td.minor(), td.rate());
            set(
                dir,
                "io.max",
                &line,
                &format!("linux.resources.blockIO.{name}[{i}]"),
            )?;
        }
    }
    Ok(())
}

/// One rdma.max line: "mlx4_0 hca_handle=2 hca_object=2000".
pub fn rdma_line(dev: &str, limits: &LinuxRdma) -> String {
    let mut line = dev.to_string();
    if let Some(h) = limits.hca_handles() {
        line.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = limits.hca_objects() {
        line.push_str(&format!(" hca_object={o}"));
    }
    line
}

/// Write `linux.resources.unified` keys into the cgroup2 directory of `h`, enabling each key's
/// controller on the way down first. Sorted, so the outcome does not depend on map order.
pub fn apply_unified(h: &HierarchyState, unified: &HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<&String> = unified.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("linux.resources.unified.{key:?}");
        let ctrl = key.split('.').next().unwrap_or_default();
        if ctrl != "cgroup" && !controllers_of(&h.dir).iter().any(|c| c == ctrl) {
            enable_controllers(h, &[ctrl.to_string()]).map_err(|e| anyhow!("{field}: {e}"))?;
        }
        set(&h.dir, key, &unified[key], &field)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out-of-range input is clamped instead of underflowing.
        assert_eq!(shares_to_weight(1), 1);
    }

    #[test]
    fn blkio_weight_conversion() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 1 + 490 * 9999 / 990);
    }

    #[test]
    fn rdma_formatting() {
        let r = oci_spec::runtime::LinuxRdmaBuilder::default()
            .hca_handles(2u32)
            .hca_objects(2000u32)
            .build()
            .unwrap();
        assert_eq!(
            rdma_line("mlx4_0", &r),
            "mlx4_0 hca_handle=2 hca_object=2000"
        );
    }
}
