//! What two VMs' guest RAM has in common, page by page: the split of VM A's resident guest RAM
//! into pages identical to some page of VM B (what KSM can merge), zero-filled pages and pages
//! that differ. `bench/vm-pages.sh` boots the two VMs and runs this.
//!
//! Usage (root, to read another process's memory): guest_pages QEMU_PID_A QEMU_PID_B MEMORY_MIB
use std::collections::HashSet;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};

use anyhow::{anyhow, bail, Context, Result};

const PAGE: usize = 4096;

/// Start address of the mapping exactly `size` bytes long (QEMU's guest RAM block), and the
/// `Rss:` and `AnonHugePages:` KiB of its smaps entry.
fn guest_mapping(pid: u32, size: u64) -> Result<(u64, u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("process {pid}"))?;
    let mut start = None;
    let (mut rss, mut huge) = (0, 0);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                if start.is_some() {
                    break;
                }
                if b - a == size {
                    start = Some(a);
                }
                continue;
            }
        }
        if start.is_some() {
            let kib = |key: &str| {
                line.strip_prefix(key)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            };
            rss = kib("Rss:").unwrap_or(rss);
            huge = kib("AnonHugePages:").unwrap_or(huge);
        }
    }
    let start = start.ok_or_else(|| anyhow!("process {pid}: no mapping of {size} bytes"))?;
    Ok((start, rss, huge))
}

/// Calls `each` with every page of the guest RAM mapping (untouched pages read as zeros).
fn for_each_page(pid: u32, start: u64, size: u64, mut each: impl FnMut(&[u8])) -> Result<()> {
    let mut mem = File::open(format!("/proc/{pid}/mem")).context("open /proc/PID/mem")?;
    mem.seek(SeekFrom::Start(start))?;
    let mut chunk = vec![0u8; 256 * PAGE];
    let mut left = size as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        mem.read_exact(&mut chunk[..n]).context("read guest RAM")?;
        chunk[..n].chunks(PAGE).for_each(&mut each);
        left -= n;
    }
    Ok(())
}

fn digest(page: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    page.hash(&mut h);
    h.finish()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b, mib] = args.as_slice() else {
        bail!("usage: guest_pages QEMU_PID_A QEMU_PID_B MEMORY_MIB");
    };
    let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
    let size = mib.parse::<u64>()? << 20;
    let (start_a, rss_kib, huge_kib) = guest_mapping(a, size)?;
    let (start_b, _, _) = guest_mapping(b, size)?;

    let mut in_b = HashSet::new();
    for_each_page(b, start_b, size, |p| {
        in_b.insert(digest(p));
    })?;
    let (mut nonzero, mut same) = (0u64, 0u64);
    for_each_page(a, start_a, size, |p| {
        if p.iter().any(|&x| x != 0) {
            nonzero += 1;
            same += u64::from(in_b.contains(&digest(p)));
        }
    })?;
    let mib = |pages: u64| (pages * PAGE as u64) >> 20;
    let resident = rss_kib / 4;
    println!(
        "VM A guest RAM: {} MiB resident ({} MiB in transparent huge pages)",
        rss_kib >> 10,
        huge_kib >> 10
    );
    println!("  identical to a page of VM B: {} MiB", mib(same));
    println!(
        "  zero-filled:                 {} MiB",
        mib(resident.saturating_sub(nonzero))
    );
    println!("  different:                   {} MiB", mib(nonzero - same));
    Ok(())
}
