//! One throwaway VM in the foreground: console on a pipe, exit status from a marker.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::confine::{MONITOR_FD, TAP_FD_BASE};
use super::monitor::{self, End, Note, Seen};
use super::{
    boot_files, check_boot_file, check_size, choose_accel, find_qemu, guest_script, kernel_cmdline,
    machine_args, nonce, Devices, MachineArgs,
};
use crate::disk::{self, Disk, Overlays};
use crate::initramfs::EXIT_MARKER;
use crate::net::{NetRequest, VmNet};

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
    /// virtio-blk disks (`/dev/vda`, …).
    pub disks: Vec<Disk>,
    /// Boot this yun image: its ext4 root disk (writes discarded) becomes `/dev/vda` and root.
    pub image: Option<String>,
    /// Existing tap devices, attached as virtio-net NICs.
    pub taps: Vec<String>,
    /// Join this bridge network with a tap and address of the run's own (the first NIC).
    pub net: Option<NetRequest>,
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
            disks: Vec::new(),
            image: None,
            taps: Vec::new(),
            net: None,
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
    let qemu = find_qemu()?;
    let mut disks = spec.disks.clone();
    let mut script = guest_script(&spec.cmd);
    let mut root = None;
    if let Some(image) = &spec.image {
        let built = crate::rootfs::image_disk(data_dir, image)?;
        if spec.cmd.is_empty() {
            script = built.script;
        } else {
            script = format!("{}{script}", built.env_prefix);
        }
        disks.insert(
            0,
            Disk {
                path: built.path,
                readonly: false,
                format: crate::disk::DiskFormat::Raw,
                scratch: true,
                backing_allowed: false,
            },
        );
        root = Some(("/dev/vda", false));
    }
    if script.is_empty() {
        bail!("cmd: no command to run in the guest");
    }
    disk::check_conflicts(&disks, &super::driver::live_disks(data_dir, None))?;
    // Scratch disks become qcow2 overlays over them (removed when the run ends, or as soon as
    // QEMU has them open).
    let mut overlays = Overlays::default();
    let disks = disks
        .into_iter()
        .map(|d| overlays.over(d))
        .collect::<Result<Vec<_>>>()?;
    let nonce = nonce();
    let accel = match &spec.accel {
        Some(a) => a.clone(),
        None => choose_accel(),
    };
    // Declared before the VM, so it is dropped (tap removed, address released) after QEMU.
    let mut taps = spec.taps.clone();
    let mut extra = spec.extra_cmdline.clone();
    let _joined = match &spec.net {
        Some(req) => {
            let joined = Joined::new(data_dir, req, &nonce)?;
            taps.insert(0, joined.net.tap.clone());
            extra = format!("{} {extra}", crate::net::guest_params(&joined.net));
            Some(joined)
        }
        None => None,
    };
    let devices = Devices {
        // A throwaway VM ends at its exit marker: it needs ACPI only to bring up several vCPUs.
        acpi: spec.cpus > 1,
        blk: !disks.is_empty(),
        net: !taps.is_empty(),
        balloon: false,
        vsock: false,
    };
    let extra = format!("{} {extra}", devices.kernel_param());
    let cmdline = kernel_cmdline(&script, &nonce, root, &accel, &extra)?;
    let (kernel, initrd) = boot_files(data_dir, &spec.kernel, &spec.initrd, false)?;
    let args = machine_args(&MachineArgs {
        cpus: spec.cpus,
        memory_mib: spec.memory_mib,
        accel: &accel,
        kernel: &kernel,
        initrd: &initrd,
        append: &cmdline,
        disks: &disks,
        taps: &taps,
        balloon: devices.balloon,
        acpi: devices.acpi,
    })?;

    // Taps are opened here and handed to QEMU, which has no capability to attach to them.
    let tap_fds = taps
        .iter()
        .map(|t| super::confine::open_tap(t))
        .collect::<Result<Vec<_>>>()?;
    let (monitor, monitor_qemu) = UnixStream::pair().context("socketpair for the VM's monitor")?;
    let mut cmd = Command::new(qemu);
    cmd.args(&args).args(["-serial", "stdio"]);
    cmd.arg("-chardev")
        .arg(format!("socket,id=yunmon,fd={MONITOR_FD}"))
        .args(["-mon", "chardev=yunmon,mode=control"]);
    if let Some(sock) = &opts.qmp_socket {
        let _ = fs::remove_file(sock);
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut fds = vec![(monitor_qemu.as_raw_fd(), MONITOR_FD)];
    for (i, fd) in tap_fds.iter().enumerate() {
        fds.push((fd.as_raw_fd(), TAP_FD_BASE + i as i32));
    }
    super::confine::confine(&mut cmd, fds);
    let child = cmd
        .spawn()
        .with_context(|| format!("{}: cannot start", super::QEMU))?;
    drop((monitor_qemu, tap_fds));
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
    let (tx, rx) = mpsc::channel::<Event>();
    let console_tx = tx.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || console_tx.send(Event::Console(buf[..n].to_vec())).is_err() {
                break;
            }
        }
        let _ = console_tx.send(Event::ConsoleClosed);
    });
    let t0 = Instant::now();
    let last_output = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = monitor::watch(monitor, t0, last_output.clone(), seen.clone(), move |n| {
        tx.send(Event::Monitor(n)).is_ok()
    });

    let marker = format!("{EXIT_MARKER}{nonce}: ");
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let mut line = Vec::new();
    let status = loop {
        let event = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "VM timed out after {:?} without the guest reporting{}",
                        opts.timeout.unwrap(),
                        seen.lock().map(|s| timeout_detail(&s)).unwrap_or_default()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            },
            None => match rx.recv() {
                Ok(e) => e,
                Err(_) => break None,
            },
        };
        match event {
            Event::Console(chunk) => {
                last_output.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                if let Some(status) = consume(&chunk, &mut line, &marker, out)? {
                    break Some(status);
                }
            }
            Event::ConsoleClosed => break None,
            // QEMU has opened its disks: the scratch overlays need no name any more.
            Event::Monitor(Note::Up) => overlays.unlink(),
            // Powered off without ACPI: the kernel halted every vCPU for good.
            Event::Monitor(Note::Halted) => {
                out.write_all(&line)?;
                out.flush()?;
                break Some(0);
            }
        }
    };
    if let Some(s) = status {
        return Ok(s);
    }
    // Output of a guest that ended without a newline and without a marker.
    out.write_all(&line)?;
    let exit = vm.child.wait()?;
    let end = watch.join().unwrap_or(None);
    let stderr = err_reader.join().unwrap_or_default();
    if let Some(line) = disk::explain_qemu_error(&stderr, &disks) {
        bail!("{line}");
    }
    // A guest that powered off without reporting (its own init, or a command that ran
    // poweroff) ended cleanly.
    if end == Some(End::Poweroff) {
        return Ok(0);
    }
    let why = match end {
        Some(End::Reset) => "guest reset (reboot or panic)".to_string(),
        Some(End::Panic) => "guest panic".to_string(),
        Some(End::Other(r)) => r,
        Some(End::Poweroff) | None => exit.to_string(),
    };
    let last = stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    Err(anyhow!(
        "VM ended ({why}) before the guest reported an exit status{}",
        if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        }
    ))
}

/// What the monitor knew when the run timed out: ` (QEMU got SHUTDOWN …; vCPUs: …)`.
fn timeout_detail(seen: &Seen) -> String {
    let mut parts = Vec::new();
    if let Some(end) = &seen.shutdown {
        parts.push(format!("QEMU got SHUTDOWN ({end:?}) but did not exit"));
    }
    if !seen.cpus.is_empty() {
        parts.push(format!("vCPUs: {}", seen.cpus));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// What the run waits for: console bytes, and notes from the VM's monitor.
enum Event {
    Console(Vec<u8>),
    ConsoleClosed,
    Monitor(Note),
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
        // The marker (it holds a random nonce) ends a line of output that had no newline of
        // its own when the command's last output did not end with one.
        let found = line
            .windows(marker.len())
            .position(|w| w == marker.as_bytes());
        if let Some(at) = found {
            out.write_all(&line[..at])?;
            let rest = &line[at + marker.len()..];
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

/// A throwaway VM's place on a bridge network: its address and tap, for the run's length.
struct Joined {
    data_dir: PathBuf,
    net: VmNet,
}

impl Joined {
    fn new(data_dir: &Path, req: &NetRequest, nonce: &str) -> Result<Joined> {
        let key = format!("run:{}:{nonce}", std::process::id());
        let net = crate::net::reserve(data_dir, req, &key, &crate::net::tap_name(&key))?;
        let joined = Joined {
            data_dir: data_dir.to_path_buf(),
            net,
        };
        crate::net::plug(&joined.net)?;
        Ok(joined)
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        crate::net::unplug(&self.net);
        let _ = crate::net::release(&self.data_dir, &self.net);
    }
}

fn validate(spec: &RunSpec) -> Result<()> {
    check_size(spec.cpus, spec.memory_mib)?;
    if spec.cmd.is_empty() && spec.image.is_none() {
        bail!("cmd: no command to run in the guest");
    }
    check_boot_file("kernel", &spec.kernel)?;
    check_boot_file("initrd", &spec.initrd)?;
    for d in &spec.disks {
        d.validate()?;
    }
    for t in &spec.taps {
        super::cmdline::check_tap(t)?;
    }
    if let Some(a) = &spec.accel {
        if a.is_empty() || a.contains(char::is_whitespace) {
            bail!("accel {a:?}: not a QEMU accelerator");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn marker_after_output_without_a_newline() {
        let mut out = Vec::new();
        let mut line = Vec::new();
        assert_eq!(
            consume(
                b"a b cyun-exit-ab: 0\r\n",
                &mut line,
                "yun-exit-ab: ",
                &mut out
            )
            .unwrap(),
            Some(0)
        );
        assert_eq!(out, b"a b c");
    }
}
