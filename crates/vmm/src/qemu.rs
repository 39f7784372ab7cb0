//! The QEMU driver: one throwaway VM in the foreground, console on a pipe, exit status from a marker.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;

use crate::initramfs::{ensure_initramfs, EXIT_MARKER};
use crate::kernel::ensure_kernel;

/// QEMU binary used for every VM.
pub const QEMU: &str = "qemu-system-x86_64";
/// Smallest guest the cloud kernel plus initramfs boots in reliably.
pub const MIN_MEMORY_MIB: u32 = 64;
/// QEMU's limit for x86 guests without extra options.
pub const MAX_CPUS: u32 = 255;
/// x86 COMMAND_LINE_SIZE, including the terminating NUL.
const MAX_CMDLINE: usize = 2047;

/// What to run and on how big a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    pub cpus: u32,
    pub memory_mib: u32,
    /// One element: a shell script. More: an argv, shell-quoted and run by `sh`.
    pub cmd: Vec<String>,
    /// Kernel image (bzImage or PVH-capable ELF); default: Debian's cloud kernel, uncompressed.
    pub kernel: Option<PathBuf>,
    /// Initramfs; default: the one [`ensure_initramfs`] builds.
    pub initrd: Option<PathBuf>,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// QEMU `-accel` value; default from [`choose_accel`].
    pub accel: Option<String>,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            cpus: 1,
            memory_mib: 256,
            cmd: Vec::new(),
            kernel: None,
            initrd: None,
            extra_cmdline: String::new(),
            accel: None,
        }
    }
}

/// Knobs of [`run_with`] beyond the machine itself.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Kill the VM and fail when the guest has not reported by then.
    pub timeout: Option<Duration>,
    /// Serve QMP on this Unix socket (removed when the VM is gone).
    pub qmp_socket: Option<PathBuf>,
}

/// Run a throwaway VM; see [`run_with`]. No timeout, no QMP socket.
pub fn run(data_dir: &Path, spec: &RunSpec, out: &mut dyn Write) -> Result<i32> {
    run_with(data_dir, spec, &RunOptions::default(), out)
}

/// Boot the VM, stream the guest console to `out` and return the guest command's exit status.
/// QEMU is killed once the status is in, on error and on timeout; nothing is left behind.
pub fn run_with(
    data_dir: &Path,
    spec: &RunSpec,
    opts: &RunOptions,
    out: &mut dyn Write,
) -> Result<i32> {
    validate(spec)?;
    let nonce = nonce();
    let cmdline = cmdline(spec, &nonce)?;
    let (kernel, initrd) = boot_files(data_dir, spec)?;
    let accel = match &spec.accel {
        Some(a) => a.clone(),
        None => choose_accel(),
    };

    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    // pc: boots reliably under TCG here (microvm+ACPI hung ~1 in 10; microvm without ACPI hung);
    // the console is the legacy 8250 the kernel has built in.
    .args(["-M", "pc", "-serial", "stdio"])
    .args(["-accel", &accel])
    .args([
        "-smp",
        &spec.cpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mib),
    ])
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", &cmdline]);
    if accel.starts_with("kvm") {
        cmd.args(["-cpu", "host"]);
    }
    if let Some(sock) = &opts.qmp_socket {
        let _ = fs::remove_file(sock);
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL QEMU if we die first,
    // so a crashed caller leaves no VM running.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("{QEMU}: cannot start (install qemu-system-x86)"))?;
    let mut vm = VmGuard {
        child,
        qmp_socket: opts.qmp_socket.clone(),
    };

    let mut stdout = vm.child.stdout.take().expect("piped stdout");
    let mut stderr = vm.child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    let marker = format!("{EXIT_MARKER}{nonce}: ");
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let mut line = Vec::new();
    let status = loop {
        let chunk = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "VM timed out after {:?} without the guest reporting",
                        opts.timeout.unwrap()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            },
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => break None,
            },
        };
        if let Some(status) = consume(&chunk, &mut line, &marker, out)? {
            break Some(status);
        }
    };
    match status {
        Some(s) => Ok(s),
        None => {
            if !line.is_empty() {
                out.write_all(&line)?;
            }
            let exit = vm.child.wait()?;
            let stderr = err_reader.join().unwrap_or_default();
            let why = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            Err(anyhow!(
                "VM ended ({exit}) before the guest reported an exit status{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ))
        }
    }
}

/// Feed console bytes; complete lines go to `out` (without `\r`), the marker line ends the run.
fn consume(
    chunk: &[u8],
    line: &mut Vec<u8>,
    marker: &str,
    out: &mut dyn Write,
) -> Result<Option<i32>> {
    for &b in chunk {
        if b != b'\n' {
            line.push(b);
            continue;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if let Some(rest) = line.strip_prefix(marker.as_bytes()) {
            let status = String::from_utf8_lossy(rest)
                .trim()
                .parse::<i32>()
                .context("guest exit marker without a number")?;
            out.flush()?;
            return Ok(Some(status));
        }
        line.push(b'\n');
        out.write_all(line)?;
        out.flush()?;
        line.clear();
    }
    Ok(None)
}

/// QEMU under a guard: killed and reaped on drop, QMP socket removed.
struct VmGuard {
    child: Child,
    qmp_socket: Option<PathBuf>,
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(s) = &self.qmp_socket {
            let _ = fs::remove_file(s);
        }
    }
}

fn validate(spec: &RunSpec) -> Result<()> {
    if spec.cpus == 0 || spec.cpus > MAX_CPUS {
        bail!("cpus {}: must be between 1 and {MAX_CPUS}", spec.cpus);
    }
    if spec.memory_mib < MIN_MEMORY_MIB {
        bail!(
            "memory {} MiB: must be at least {MIN_MEMORY_MIB} MiB",
            spec.memory_mib
        );
    }
    let avail = mem_available_mib()?;
    if u64::from(spec.memory_mib) > avail {
        bail!(
            "memory {} MiB: more than the host's available {avail} MiB",
            spec.memory_mib
        );
    }
    if spec.cmd.is_empty() {
        bail!("cmd: no command to run in the guest");
    }
    for (what, p) in [("kernel", &spec.kernel), ("initrd", &spec.initrd)] {
        if let Some(p) = p {
            if !p.is_file() {
                bail!("{what} {}: no such file", p.display());
            }
        }
    }
    if let Some(a) = &spec.accel {
        if a.is_empty() || a.contains(char::is_whitespace) {
            bail!("accel {a:?}: not a QEMU accelerator");
        }
    }
    Ok(())
}

fn mem_available_mib() -> Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .ok_or_else(|| anyhow!("/proc/meminfo: no MemAvailable"))
}

fn boot_files(data_dir: &Path, spec: &RunSpec) -> Result<(PathBuf, PathBuf)> {
    if let (Some(k), Some(i)) = (&spec.kernel, &spec.initrd) {
        return Ok((k.clone(), i.clone()));
    }
    let kernel = ensure_kernel(data_dir)?;
    let initrd = match &spec.initrd {
        Some(i) => i.clone(),
        None => ensure_initramfs(data_dir, &kernel)?,
    };
    let image = match &spec.kernel {
        Some(k) => k.clone(),
        None => kernel.vmlinux.clone().unwrap_or(kernel.vmlinuz.clone()),
    };
    Ok((image, initrd))
}

/// The guest script: one element verbatim, several shell-quoted into one command.
pub fn guest_script(cmd: &[String]) -> String {
    if cmd.len() == 1 {
        return cmd[0].clone();
    }
    cmd.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cmdline(spec: &RunSpec, nonce: &str) -> Result<String> {
    let script = base64::engine::general_purpose::STANDARD.encode(guest_script(&spec.cmd));
    // quiet + loglevel=0 keep kernel messages off the console, so it carries only guest output;
    // panic=-1 + reboot=t + -no-reboot turn a guest panic into QEMU exiting.
    let mut line = format!(
        "console=ttyS0 quiet loglevel=0 panic=-1 reboot=t yun.nonce={nonce} yun.cmd={script}"
    );
    if !spec.extra_cmdline.trim().is_empty() {
        line.push(' ');
        line.push_str(spec.extra_cmdline.trim());
    }
    if line.len() > MAX_CMDLINE {
        bail!(
            "cmd: too long for the kernel command line ({} of {MAX_CMDLINE} bytes)",
            line.len()
        );
    }
    Ok(line)
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}{:x}",
        std::process::id(),
        t.subsec_nanos() ^ (t.as_secs() as u32)
    )
}

/// `kvm` only where the CPU has hardware virtualization and /dev/kvm answers; else multi-threaded TCG.
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
        "tcg,thread=multi".to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_argv() {
        assert_eq!(guest_script(&["exit 3".into()]), "exit 3");
        assert_eq!(
            guest_script(&["echo".into(), "it's".into()]),
            r"'echo' 'it'\''s'"
        );
    }

    #[test]
    fn marker_ends_run_and_is_not_printed() {
        let mut out = Vec::new();
        let mut line = Vec::new();
        assert_eq!(
            consume(b"hi\r\nyun-exit-ab: ", &mut line, "yun-exit-ab: ", &mut out).unwrap(),
            None
        );
        assert_eq!(
            consume(b"3\r\n", &mut line, "yun-exit-ab: ", &mut out).unwrap(),
            Some(3)
        );
        assert_eq!(out, b"hi\n");
    }
}
