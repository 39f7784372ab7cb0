//! Checks of `linux.resources` that hold whatever the cgroup version: value ranges, list
//! syntax, device rule syntax. Host-specific checks (is the controller there, does the file
//! exist) live in v1.rs and v2.rs.

use std::fs;
use std::path::Path;

use anyhow::{bail, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

/// The kernel keeps memory limits in whole pages; anything smaller than one page rounds down
/// to a limit of 0.
fn page_size() -> i64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten();
    // c_long is i64 here but i32 on 32-bit targets, hence the conversion.
    #[allow(clippy::useless_conversion)]
    page.map(i64::from).unwrap_or(4096)
}

/// CFS bandwidth bounds (kernel/sched/core.c): quota at least 1 ms, period 1 ms to 1 s.
pub const MIN_CFS_US: u64 = 1_000;
pub const MAX_CFS_PERIOD_US: u64 = 1_000_000;
/// cpu.shares bounds (MIN_SHARES/MAX_SHARES in the scheduler); the kernel clamps silently,
/// so out-of-range values are rejected here instead of being changed behind the user's back.
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;

pub fn common(res: &LinuxResources) -> Result<()> {
    if let Some(mem) = res.memory() {
        let page = page_size();
        for (field, value) in [
            ("limit", mem.limit()),
            ("reservation", mem.reservation()),
            ("swap", mem.swap()),
            ("kernelTCP", mem.kernel_tcp()),
        ] {
            if let Some(v) = value {
                if v < -1 {
                    bail!("linux.resources.memory.{field}: {v} is negative (use -1 for no limit)");
                }
            }
        }
        if let Some(limit) = mem.limit() {
            if limit > 0 && limit < page {
                bail!(
                    "linux.resources.memory.limit: {limit} is below the minimum of {page} bytes (the kernel needs at least one page; a smaller limit rounds down to 0)"
                );
            }
        }
        if let Some(swap) = mem.swap().filter(|s| *s != 0 && *s != -1) {
            match mem.limit() {
                None | Some(0) | Some(-1) => bail!(
                    "linux.resources.memory.swap: {swap} needs linux.resources.memory.limit as well (swap is the memory+swap total and must be at least the memory limit)"
                ),
                Some(limit) if swap < limit => bail!(
                    "linux.resources.memory.swap: {swap} is below linux.resources.memory.limit {limit} (swap is the memory+swap total, so it must be at least the memory limit)"
                ),
                _ => {}
            }
        }
        if let Some(s) = mem.swappiness() {
            if s > 100 {
                bail!("linux.resources.memory.swappiness: {s} is out of range (0 to 100)");
            }
        }
    }

    if let Some(cpu) = res.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            if !(MIN_SHARES..=MAX_SHARES).contains(&shares) {
                bail!("linux.resources.cpu.shares: {shares} is out of range (the kernel accepts {MIN_SHARES} to {MAX_SHARES})");
            }
        }
        if let Some(q) = cpu.quota().filter(|q| *q != 0) {
            if q < -1 {
                bail!("linux.resources.cpu.quota: {q} is negative (use -1 for no limit)");
            }
            if q != -1 && (q as u64) < MIN_CFS_US {
                bail!("linux.resources.cpu.quota: {q} is below the kernel's minimum of {MIN_CFS_US} µs");
            }
        }
        if let Some(p) = cpu.period().filter(|p| *p != 0) {
            if !(MIN_CFS_US..=MAX_CFS_PERIOD_US).contains(&p) {
                bail!("linux.resources.cpu.period: {p} is out of range (the kernel accepts {MIN_CFS_US} to {MAX_CFS_PERIOD_US} µs)");
            }
        }
        if let Some(idle) = cpu.idle() {
            if idle != 0 && idle != 1 {
                bail!("linux.resources.cpu.idle: {idle} is invalid (0 or 1)");
            }
        }
        if let Some(rt) = cpu.realtime_runtime() {
            if rt < -1 {
                bail!(
                    "linux.resources.cpu.realtimeRuntime: {rt} is negative (use -1 for no limit)"
                );
            }
            if let Some(period) = cpu.realtime_period().filter(|p| *p != 0) {
                if rt > 0 && rt as u64 > period {
                    bail!("linux.resources.cpu.realtimeRuntime: {rt} exceeds linux.resources.cpu.realtimePeriod {period}");
                }
            }
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.trim().is_empty()) {
            check_list_on_host(
                "linux.resources.cpu.cpus",
                cpus,
                "/sys/devices/system/cpu/online",
                "CPU",
            )?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.trim().is_empty()) {
            check_list_on_host(
                "linux.resources.cpu.mems",
                mems,
                "/sys/devices/system/node/online",
                "memory node",
            )?;
        }
    }

    if let Some(blkio) = res.block_io() {
        let weight_ok = |w: u16| (10..=1000).contains(&w);
        if let Some(w) = blkio.weight().filter(|w| *w != 0) {
            if !weight_ok(w) {
                bail!("linux.resources.blockIO.weight: {w} is out of range (10 to 1000)");
            }
        }
        if let Some(w) = blkio.leaf_weight().filter(|w| *w != 0) {
            if !weight_ok(w) {
                bail!("linux.resources.blockIO.leafWeight: {w} is out of range (10 to 1000)");
            }
        }
        for (i, wd) in blkio.weight_device().iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.weightDevice[{i}]");
            check_dev(&field, wd.major(), wd.minor())?;
            for w in [wd.weight(), wd.leaf_weight()].into_iter().flatten() {
                if w != 0 && !weight_ok(w) {
                    bail!("{field}: weight {w} is out of range (10 to 1000)");
                }
            }
        }
        for (name, list) in [
            ("throttleReadBpsDevice", blkio.throttle_read_bps_device()),
            ("throttleWriteBpsDevice", blkio.throttle_write_bps_device()),
            ("throttleReadIOPSDevice", blkio.throttle_read_iops_device()),
            (
                "throttleWriteIOPSDevice",
                blkio.throttle_write_iops_device(),
            ),
        ] {
            for (i, td) in list.iter().flatten().enumerate() {
                check_dev(
                    &format!("linux.resources.blockIO.{name}[{i}]"),
                    td.major(),
                    td.minor(),
                )?;
            }
        }
    }

    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{i}]");
        let kb = hugepage_size_kb(h.page_size()).ok_or_else(|| {
            anyhow::anyhow!(
                "{field}.pageSize: {:?} is not a size like \"2MB\" or \"1GB\"",
                h.page_size()
            )
        })?;
        if !Path::new(&format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB")).exists() {
            bail!(
                "{field}.pageSize: this host has no {} huge pages (see /sys/kernel/mm/hugepages)",
                h.page_size()
            );
        }
        if h.limit() < 0 {
            bail!("{field}.limit: {} is negative", h.limit());
        }
    }

    for (i, rule) in res.devices().iter().flatten().enumerate() {
        check_device_rule(&format!("linux.resources.devices[{i}]"), rule)?;
    }

    for key in res.unified().iter().flat_map(|m| m.keys()) {
        check_unified_key(key)?;
    }
    Ok(())
}

fn check_dev(field: &str, major: i64, minor: i64) -> Result<()> {
    if major < 0 || minor < 0 {
        bail!("{field}: device {major}:{minor} has a negative number");
    }
    Ok(())
}

pub fn check_device_rule(field: &str, rule: &LinuxDeviceCgroup) -> Result<()> {
    for (name, v) in [("major", rule.major()), ("minor", rule.minor())] {
        if let Some(v) = v {
            // -1 is the Go runtimes' spelling of the '*' wildcard.
            if v < -1 {
                bail!("{field}.{name}: {v} is negative (omit it to match all)");
            }
        }
    }
    if let Some(access) = rule.access() {
        let mut seen = String::new();
        for c in access.chars() {
            if !"rwm".contains(c) || seen.contains(c) {
                bail!("{field}.access: {access:?} is invalid (use a combination of r, w and m)");
            }
            seen.push(c);
        }
    }
    Ok(())
}

/// A unified key names a file in the container's cgroup directory ("memory.high").
pub fn check_unified_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('/') || key.starts_with('.') || !key.contains('.') {
        bail!(
            "linux.resources.unified: key {key:?} is not a cgroup file name like \"memory.high\""
        );
    }
    // Membership is decided by yun (add_pid), not by resource settings.
    if key == "cgroup.procs" || key == "cgroup.threads" {
        bail!("linux.resources.unified: key {key:?} moves processes; it is not a resource setting");
    }
    Ok(())
}

/// "2MB" → 2048 (kB), as used in /sys/kernel/mm/hugepages/hugepages-2048kB.
pub fn hugepage_size_kb(size: &str) -> Option<u64> {
    let (num, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "KB" | "kB" => 1,
        "MB" => 1024,
        "GB" => 1024 * 1024,
        _ => return None,
    };
    Some(n * mult)
}

/// Parse the kernel's list syntax ("0-3,5,7-8") into the listed numbers.
pub fn parse_list(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.trim().split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if a > b {
                return None;
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().ok()?);
        }
    }
    Some(out)
}

fn check_list_on_host(field: &str, list: &str, online_file: &str, what: &str) -> Result<()> {
    let Some(wanted) = parse_list(list) else {
        bail!("{field}: {list:?} is not a list like \"0-3,5\"");
    };
    // Single-node machines without NUMA support have no node directory: node 0 only.
    let online_text = fs::read_to_string(online_file).unwrap_or_else(|_| "0".to_string());
    let online = parse_list(&online_text).unwrap_or_default();
    if let Some(missing) = wanted.iter().find(|n| !online.contains(n)) {
        bail!(
            "{field}: {what} {missing} is not online on this host (online: {})",
            online_text.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder,
    };

    fn mem(limit: i64, swap: Option<i64>) -> LinuxResources {
        let mut m = LinuxMemoryBuilder::default().limit(limit);
        if let Some(s) = swap {
            m = m.swap(s);
        }
        LinuxResourcesBuilder::default()
            .memory(m.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn memory_rules() {
        let e = common(&mem(1, None)).unwrap_err().to_string();
        assert!(
            e.starts_with("linux.resources.memory.limit: 1 is below the minimum"),
            "{e}"
        );
        assert!(common(&mem(64 << 20, None)).is_ok());
        assert!(common(&mem(-1, None)).is_ok());
        let e = common(&mem(-2, None)).unwrap_err().to_string();
        assert!(
            e.starts_with("linux.resources.memory.limit: -2 is negative"),
            "{e}"
        );
        let e = common(&mem(64 << 20, Some(32 << 20)))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("linux.resources.memory.swap:"), "{e}");
        assert!(common(&mem(64 << 20, Some(128 << 20))).is_ok());
        assert!(common(&mem(64 << 20, Some(-1))).is_ok());
        assert!(common(&mem(-1, Some(128 << 20))).is_err());
    }

    #[test]
    fn cpu_rules() {
        let cpu = |b: LinuxCpuBuilder| {
            common(
                &LinuxResourcesBuilder::default()
                    .cpu(b.build().unwrap())
                    .build()
                    .unwrap(),
            )
        };
        assert!(cpu(LinuxCpuBuilder::default().shares(1024u64)).is_ok());
        assert!(cpu(LinuxCpuBuilder::default().shares(1u64)).is_err());
        assert!(cpu(LinuxCpuBuilder::default().shares(300_000u64)).is_err());
        assert!(cpu(LinuxCpuBuilder::default().quota(500i64)).is_err());
        assert!(cpu(LinuxCpuBuilder::default().quota(-1i64)).is_ok());
        assert!(cpu(LinuxCpuBuilder::default().period(100u64)).is_err());
        let e = cpu(LinuxCpuBuilder::default().cpus("0-x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.cpu.cpus: \"0-x\" is not a list like \"0-3,5\""
        );
        let e = cpu(LinuxCpuBuilder::default().cpus("0,4095")).unwrap_err();
        assert!(e.to_string().contains("CPU 4095 is not online"), "{e}");
        assert!(cpu(LinuxCpuBuilder::default().cpus("0").mems("0")).is_ok());
    }

    #[test]
    fn list_syntax() {
        assert_eq!(parse_list("0-3,5"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_list("7\n"), Some(vec![7]));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list(""), None);
        assert_eq!(parse_list("1,,2"), None);
    }

    #[test]
    fn device_rule_syntax() {
        let ok = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        assert!(check_device_rule("d", &ok).is_ok());
        let bad = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rx")
            .build()
            .unwrap();
        assert!(check_device_rule("d", &bad).is_err());
        let neg = LinuxDeviceCgroupBuilder::default()
            .major(-5i64)
            .build()
            .unwrap();
        assert!(check_device_rule("d", &neg).is_err());
    }

    #[test]
    fn unified_keys_and_hugepage_sizes() {
        assert!(check_unified_key("memory.high").is_ok());
        assert!(check_unified_key("../x.y").is_err());
        assert!(check_unified_key("cgroup.procs").is_err());
        assert!(check_unified_key("nodot").is_err());
        assert_eq!(hugepage_size_kb("2MB"), Some(2048));
        assert_eq!(hugepage_size_kb("1GB"), Some(1 << 20));
        assert_eq!(hugepage_size_kb("64KB"), Some(64));
        assert_eq!(hugepage_size_kb("2M"), None);
        assert_eq!(hugepage_size_kb("MB"), None);
    }
}
