//! The QEMU and kernel command lines shared by throwaway and managed VMs.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use base64::Engine;

use crate::disk::Disk;

/// x86 COMMAND_LINE_SIZE, including the terminating NUL.
const MAX_CMDLINE: usize = 2047;

/// Kernel parameters that shorten a TCG boot without changing what the guest can do
/// (measured one by one in bench/vm.sh; see docs/vm.md):
/// - `quiet loglevel=0`: no kernel messages on the 8250 console (each byte is a trapped PIO write);
/// - `i8042.noaux i8042.nokbd i8042.nopnp`: no PS/2 probing (there is no keyboard to find);
/// - `tsc=reliable`: no clocksource watchdog against a TSC that TCG emulates steadily;
/// - `no_timer_check`: skip the IO-APIC timer sanity check (slow under emulation);
/// - `cryptomgr.notests`: skip the crypto self-tests at boot;
/// - `8250.nr_uarts=1`: register one serial port, not four probed ones;
/// - `lsm= audit=0`: no in-guest security modules or audit (AppArmor, TOMOYO… cost ~0.3 s of a
///   TCG boot and guard nothing in a one-command guest; the VM boundary is the isolation).
///   Appending `lsm=…` with `--cmdline` brings them back (the last value wins).
pub const GUEST_TUNING: &str = "quiet loglevel=0 i8042.noaux i8042.nokbd i8042.nopnp tsc=reliable \
                                no_timer_check cryptomgr.notests 8250.nr_uarts=1 lsm= audit=0";

/// Under TCG there is no speculative execution to leak through, so the guest's Spectre-class
/// mitigations only cost time (retpolines, RSB filling, text patching at boot).
const TCG_TUNING: &str = "mitigations=off";

/// QEMU's minimal firmware: boots Linux from fw_cfg faster than SeaBIOS (Debian's
/// qemu-system-data ships it); SeaBIOS, QEMU's default, when it is missing.
const QBOOT: &str = "/usr/share/qemu/qboot.rom";

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

/// The device groups of a VM whose drivers /init loads (see `initramfs::DEVICE_MODULES`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Devices {
    /// ACPI tables: the power button (`yun vm stop`), pvpanic (a panic recorded as such) and
    /// the CPUs of an SMP guest (qboot writes no MP table). See [`MachineArgs::acpi`].
    pub acpi: bool,
    pub blk: bool,
    pub net: bool,
    pub balloon: bool,
    pub vsock: bool,
}

impl Devices {
    /// `yun.dev=…` on the kernel command line, for the groups the VM has.
    pub fn kernel_param(&self) -> String {
        let groups: Vec<&str> = [
            (self.acpi, "acpi"),
            (self.blk || self.net || self.balloon || self.vsock, "virtio"),
            (self.blk, "blk"),
            (self.net, "net"),
            (self.balloon, "balloon"),
        ]
        .into_iter()
        .filter_map(|(on, g)| on.then_some(g))
        .collect();
        if groups.is_empty() {
            String::new()
        } else {
            format!("yun.dev={}", groups.join(","))
        }
    }
}

/// `console=… yun.nonce=… yun.cmd=<base64 script> [root=/dev/vda [ro]] EXTRA`.
pub(crate) fn kernel_cmdline(
    script: &str,
    nonce: &str,
    root: Option<(&str, bool)>,
    accel: &str,
    extra: &str,
) -> Result<String> {
    let script = base64::engine::general_purpose::STANDARD.encode(script);
    // panic=-1 + reboot=t + -no-reboot turn a guest panic without pvpanic into QEMU exiting.
    let mut line = format!("console=ttyS0 {GUEST_TUNING} panic=-1 reboot=t");
    if accel.starts_with("tcg") {
        line.push(' ');
        line.push_str(TCG_TUNING);
    }
    line.push_str(&format!(" yun.nonce={nonce} yun.cmd={script}"));
    if let Some((dev, ro)) = root {
        line.push_str(&format!(" root={dev}"));
        if ro {
            line.push_str(" ro");
        }
    }
    if !extra.trim().is_empty() {
        line.push(' ');
        line.push_str(extra.trim());
    }
    if line.len() > MAX_CMDLINE {
        bail!(
            "cmd: too long for the kernel command line ({} of {MAX_CMDLINE} bytes)",
            line.len()
        );
    }
    Ok(line)
}

/// The machine as QEMU should build it; the console (serial) is added by the caller.
pub(crate) struct MachineArgs<'a> {
    pub cpus: u32,
    pub memory_mib: u32,
    pub accel: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: &'a str,
    pub disks: &'a [Disk],
    /// Existing tap devices, one virtio-net NIC each (`eth0`, `eth1`, …).
    pub taps: &'a [String],
    /// A memory balloon (`yun vm balloon`), for managed VMs: the host can take memory back
    /// from an idle guest. Throwaway runs go without: the PCI device and its interrupt link
    /// cost ~0.15 s of a TCG boot.
    pub balloon: bool,
    /// ACPI tables. Managed VMs need them (the power button for `stop`, pvpanic for the end
    /// reason), and so does an SMP guest. A throwaway single-vCPU run does not: its end is the
    /// exit marker, and without ACPI the guest skips the interpreter, the ACPI device scan and
    /// the local APIC setup, ~0.3 s of a TCG boot (docs/vm.md).
    pub acpi: bool,
}

pub(crate) fn machine_args(m: &MachineArgs) -> Result<Vec<String>> {
    let utf8 = |p: &Path| {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: path is not UTF-8", p.display()))
    };
    let mut a: Vec<String> = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-sandbox",
        super::confine::SANDBOX,
        // pc: boots reliably under TCG here (microvm+ACPI hung ~1 in 10). No PS/2 controller,
        // no HPET (the kernel uses the TSC), no SATA/SMBus/USB: fewer devices to emulate and probe.
        // mem-merge: guest RAM is madvise(MERGEABLE), so host KSM can share identical pages.
        "-M",
        "pc,i8042=off,hpet=off,smbus=off,sata=off,usb=off,vmport=off,mem-merge=on",
    ]
    .map(String::from)
    .to_vec();
    if m.acpi {
        // A guest panic ends the VM (the supervisor records the GUEST_PANICKED event); the
        // pvpanic device is found through ACPI.
        a.extend(["-action", "panic=shutdown", "-device", "pvpanic"].map(String::from));
    } else {
        // Without ACPI a panic reboots the guest (panic=-1), and -no-reboot ends QEMU.
        a.extend(["-M".into(), "acpi=off".into()]);
    }
    if std::path::Path::new(QBOOT).is_file() {
        a.extend(["-bios".into(), QBOOT.into()]);
    }
    a.extend(["-accel".into(), m.accel.into()]);
    if m.accel.starts_with("kvm") {
        a.extend(["-cpu".into(), "host".into()]);
    }
    a.extend([
        "-smp".into(),
        m.cpus.to_string(),
        "-m".into(),
        format!("{}M", m.memory_mib),
        "-kernel".into(),
        utf8(m.kernel)?,
        "-initrd".into(),
        utf8(m.initrd)?,
        "-append".into(),
        m.append.into(),
    ]);
    if m.balloon {
        a.extend(["-device".into(), "virtio-balloon-pci,id=balloon0".into()]);
    }
    for (i, d) in m.disks.iter().enumerate() {
        if d.scratch {
            bail!(
                "disk {}: a scratch disk needs its overlay",
                d.path.display()
            );
        }
        let id = format!("disk{i}");
        a.extend(["-blockdev".into(), d.blockdev_arg(&id)?]);
        a.extend(["-device".into(), format!("virtio-blk-pci,drive={id}")]);
    }
    for (i, tap) in m.taps.iter().enumerate() {
        let id = format!("net{i}");
        // QEMU has no capability to attach to a tap: whoever starts it opens the taps, in this
        // order, and hands them over as these fds (see confine.rs).
        let fd = super::confine::TAP_FD_BASE + i as i32;
        a.extend(["-netdev".into(), format!("tap,id={id},fd={fd}")]);
        a.extend([
            "-device".into(),
            format!("virtio-net-pci,netdev={id},mac={}", mac(tap, i)),
        ]);
    }
    Ok(a)
}

/// A stable locally administered MAC (QEMU's 52:54:00 prefix) from the tap's name.
fn mac(tap: &str, i: usize) -> String {
    let mut h: u32 = 2166136261;
    for b in tap.bytes().chain([i as u8]) {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (h >> 16) as u8,
        (h >> 8) as u8,
        h as u8
    )
}

/// A tap must exist before QEMU opens it: one clear line instead of QEMU's.
pub(crate) fn check_tap(tap: &str) -> Result<()> {
    let ok = !tap.is_empty()
        && tap.len() < 16
        && tap
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("tap {tap:?}: not an interface name");
    }
    if !std::path::Path::new("/sys/class/net")
        .join(tap)
        .join("tun_flags")
        .exists()
    {
        bail!("tap {tap}: no such tap device");
    }
    Ok(())
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
    fn device_groups_in_load_order() {
        assert_eq!(Devices::default().kernel_param(), "");
        let managed = Devices {
            acpi: true,
            blk: true,
            balloon: true,
            ..Devices::default()
        };
        assert_eq!(managed.kernel_param(), "yun.dev=acpi,virtio,blk,balloon");
        let vsock_only = Devices {
            vsock: true,
            ..Devices::default()
        };
        assert_eq!(vsock_only.kernel_param(), "yun.dev=virtio");
    }

    #[test]
    fn root_and_extra_on_the_cmdline() {
        let l = kernel_cmdline("true", "n1", Some(("/dev/vda", true)), "kvm", " foo=1 ").unwrap();
        assert!(
            l.ends_with("yun.cmd=dHJ1ZQ== root=/dev/vda ro foo=1"),
            "{l}"
        );
        assert!(!l.contains("mitigations"));
        let l = kernel_cmdline("true", "n1", None, super::super::TCG, "").unwrap();
        assert!(l.contains(" mitigations=off "), "{l}");
        assert!(kernel_cmdline(&"x".repeat(3000), "n", None, "tcg", "").is_err());
    }
}
