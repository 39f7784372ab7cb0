//! The QEMU driver: the command line every VM gets, the throwaway foreground VM ([`run`]), managed
//! VMs under a supervisor ([`QemuDriver`]).

mod cmdline;
pub(crate) mod confine;
mod driver;
mod monitor;
mod run;
pub(crate) mod supervisor;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

pub use cmdline::{guest_script, GUEST_TUNING};
pub(crate) use cmdline::{kernel_cmdline, machine_args, Devices, MachineArgs};
pub use driver::QemuDriver;
pub use run::{run, run_with, RunOptions, RunSpec};

use crate::initramfs::{ensure_initramfs, ensure_initramfs_vsock};
use crate::kernel::ensure_kernel;

/// QEMU binary used for every VM.
pub const QEMU: &str = "qemu-system-x86_64";
/// Smallest guest the cloud kernel plus initramfs boots in reliably.
pub const MIN_MEMORY_MIB: u32 = 64;
/// QEMU's limit for x86 guests without extra options.
pub const MAX_CPUS: u32 = 255;

/// The QEMU binary on PATH, or one clear line saying it is missing.
pub fn find_qemu() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(QEMU);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{QEMU}: not found in PATH (install qemu-system-x86)")
}

/// cpus and memory within bounds, and memory the host can actually give.
pub(crate) fn check_size(cpus: u32, memory_mib: u32) -> Result<()> {
    if cpus == 0 || cpus > MAX_CPUS {
        bail!("cpus {cpus}: must be between 1 and {MAX_CPUS}");
    }
    if memory_mib < MIN_MEMORY_MIB {
        bail!("memory {memory_mib} MiB: must be at least {MIN_MEMORY_MIB} MiB");
    }
    let avail = mem_available_mib()?;
    if u64::from(memory_mib) > avail {
        bail!("memory {memory_mib} MiB: more than the host's available {avail} MiB");
    }
    Ok(())
}

pub(crate) fn check_boot_file(what: &str, p: &Option<PathBuf>) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    let meta = fs::metadata(p).map_err(|_| anyhow!("{what} {}: no such file", p.display()))?;
    if !meta.is_file() {
        bail!("{what} {}: not a regular file", p.display());
    }
    let mut head = [0u8; 4];
    use std::io::Read;
    let n = fs::File::open(p)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("{what} {}", p.display()))?;
    let ok = match what {
        // ELF (PVH vmlinux) or a bzImage (boot sector signature checked by QEMU; "MZ" on EFI stubs)
        "kernel" => n == 4 && (&head == b"\x7fELF" || head[..2] == *b"MZ" || bzimage_hdr(p)),
        // newc cpio ("0707"), gzip, zstd, xz, lz4 legacy
        _ => {
            n >= 2
                && (head[..n.min(4)] == b"0707"[..n.min(4)]
                    || head[..2] == [0x1f, 0x8b]
                    || head == [0x28, 0xb5, 0x2f, 0xfd]
                    || head == [0xfd, 0x37, 0x7a, 0x58]
                    || head == [0x02, 0x21, 0x4c, 0x18])
        }
    };
    if !ok {
        bail!(
            "{what} {}: not a kernel/initramfs image (corrupt?)",
            p.display()
        );
    }
    Ok(())
}

/// A bzImage carries "HdrS" at offset 0x202.
fn bzimage_hdr(p: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut m = [0u8; 4];
    fs::File::open(p)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(0x202))?;
            f.read_exact(&mut m)
        })
        .is_ok()
        && &m == b"HdrS"
}

pub(crate) fn mem_available_mib() -> Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| crate::machine::kib_field(l, "MemAvailable:"))
        .map(|kb| kb / 1024)
        .ok_or_else(|| anyhow!("/proc/meminfo: no MemAvailable"))
}

/// Kernel and initramfs to boot: the given ones, else Debian's cloud kernel and yun's initramfs
/// (with the vsock modules and agent when `vsock`).
pub(crate) fn boot_files(
    data_dir: &Path,
    kernel: &Option<PathBuf>,
    initrd: &Option<PathBuf>,
    vsock: bool,
) -> Result<(PathBuf, PathBuf)> {
    if let (Some(k), Some(i)) = (kernel, initrd) {
        return Ok((k.clone(), i.clone()));
    }
    let k = ensure_kernel(data_dir)?;
    let initrd = match initrd {
        Some(i) => i.clone(),
        None if vsock => ensure_initramfs_vsock(data_dir, &k)?,
        None => ensure_initramfs(data_dir, &k)?,
    };
    let image = match kernel {
        Some(p) => p.clone(),
        None => k.vmlinux.clone().unwrap_or(k.vmlinuz.clone()),
    };
    Ok((image, initrd))
}

pub(crate) fn nonce() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        t.subsec_nanos() ^ (t.as_secs() as u32),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// TCG with every vCPU on one host thread (round robin), not QEMU's multi-threaded TCG. With a
/// thread per vCPU, QEMU 7.2 (Debian 12's) can keep running a translated block after another
/// vCPU rewrote the guest code under it: a store whose TLB entry was filled just before the
/// other vCPU translated the page misses the invalidation. The Linux guest patches its own
/// text at run time (static keys, through an int3 at each site, `text_poke_bp`); one vCPU
/// kept executing the int3 its stale block holds while memory already had the new bytes, the
/// kernel's int3 handler found no breakpoint there and sent it back to the same address, and
/// the guest spun forever (about 1 boot in 300 with 2 vCPUs hung at `sched_clock: Marking
/// stable`; evidence in docs/vm.md). One thread cannot race with itself.
pub const TCG: &str = "tcg,thread=single";

/// `kvm` only where the CPU has hardware virtualization and /dev/kvm answers; else [`TCG`].
/// (A PVM-backed /dev/kvm without vmx/svm cannot run stock kernels.)
pub fn choose_accel() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw && kvm_works() {
        "kvm".to_string()
    } else {
        TCG.to_string()
    }
}

fn kvm_works() -> bool {
    use std::os::fd::AsRawFd;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return false;
    };
    // SAFETY: both ioctls take no argument pointer; the fd is open for the duration of the call.
    let api = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if api != 12 {
        return false;
    }
    // SAFETY: as above; a returned VM fd is closed right away.
    let vm = unsafe { libc::ioctl(f.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return false;
    }
    // SAFETY: vm is a fd we own and close once.
    unsafe { libc::close(vm) };
    true
}
