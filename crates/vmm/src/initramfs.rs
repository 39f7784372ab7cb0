//! The guest's initramfs: static busybox, the kernel's virtio modules and an /init that runs one
//! command from the kernel command line and reports its exit status on the console.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cpio::Cpio;
use crate::kernel::{tempdir_in, write_synced, Kernel};

/// Static busybox from Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";

/// The guest's kernel modules in groups, by the name `yun.dev=` gives them on the kernel command
/// line: /init loads only the groups of the devices the VM has (each insmod costs under TCG), in
/// this order. Dependencies are added from `.modinfo`; missing modules are skipped (they may be
/// built in).
pub(crate) const DEVICE_MODULES: &[(&str, &[&str])] = &[
    // With ACPI: the power button (QMP system_powerdown) as an input device, so /init can
    // power off when `yun vm stop` presses it; pvpanic-mmio finds the ISA pvpanic device and
    // turns a guest panic into a GUEST_PANICKED event instead of a silent reboot.
    ("acpi", &["button", "evdev", "pvpanic", "pvpanic_mmio"]),
    // The virtio PCI transport, for any virtio device (the groups below, vsock).
    (
        "virtio",
        &[
            "virtio",
            "virtio_ring",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio_pci",
        ],
    ),
    ("blk", &["virtio_blk"]),
    ("net", &["virtio_net"]),
    ("balloon", &["virtio_balloon"]),
];

type Modules = Vec<(String, Vec<u8>)>;

/// [`DEVICE_MODULES`] resolved against `kernel`: each group with the modules (and their
/// dependencies) that an earlier group did not bring.
fn module_groups(kernel: &Kernel) -> Result<Vec<(&'static str, Modules)>> {
    let mut loaded = HashSet::new();
    let mut groups = Vec::new();
    for (group, wanted) in DEVICE_MODULES {
        let mods = resolve_modules(&kernel.modules_dir, wanted, &loaded)?;
        loaded.extend(mods.iter().map(|(n, _)| n.clone()));
        groups.push((*group, mods));
    }
    Ok(groups)
}

/// What a vsock VM adds to the initramfs (see [`ensure_initramfs_vsock`]): virtio vsock (the
/// host side is yun's vhost-user device, see vsock/) and the agent.
const VSOCK_MODULES: &[&str] = &[
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// yun's in-guest agent (guest/yun-guest.rs, built static by build.rs).
const GUEST_AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/yun-guest"));

/// Prefix of the line /init prints after the command: `yun-exit-<nonce>: <status>`.
pub const EXIT_MARKER: &str = "yun-exit-";

const INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
cmd= nonce= root= ro= addr= gw= devs=
read -r cmdline </proc/cmdline
for a in $cmdline; do
  case "$a" in
    yun.cmd=*) cmd=${a#yun.cmd=} ;;
    yun.dev=*) devs=${a#yun.dev=} ;;
    yun.nonce=*) nonce=${a#yun.nonce=} ;;
    yun.ip=*) addr=${a#yun.ip=} ;;
    yun.gw=*) gw=${a#yun.gw=} ;;
    root=/dev/*) root=${a#root=} ;;
    ro) ro=1 ;;
  esac
done
lists=
IFS=,
for d in $devs; do lists="$lists /etc/yun-modules-$d"; done
unset IFS
cat $lists /etc/yun-modules-extra 2>/dev/null | while read -r m; do insmod /lib/modules/$m.ko 2>/dev/null; done
echo "$cmd" | base64 -d > /tmp/yun-cmd
# yun vm exec: the agent serves vsock port 1024 when the VM has a vsock device.
start_agent() {
  ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport 2>/dev/null | grep -q virtio &&
    YUN_ROOT="$1" /bin/yun-guest &
}
ip link set lo up
if [ -n "$addr" ]; then
  # virtio_net was loaded above; its eth0 may take a moment to register.
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  ip addr add "$addr" dev eth0 && ip link set eth0 up && { [ -z "$gw" ] || ip route add default via "$gw"; } || echo "yun: cannot configure eth0 as $addr"
fi
for ev in /sys/class/input/event*; do
  case "$(cat $ev/device/name 2>/dev/null)" in
    "Power Button") (head -c 1 /dev/${ev#/sys/class/} >/dev/null && sync && echo "yun: power button" && poweroff -f) & ;;
  esac
done
if [ -n "$root" ]; then
  i=0
  while [ ! -b "$root" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  if mount -t ext4 ${ro:+-o ro} "$root" /newroot; then
    for d in proc sys dev tmp; do mkdir -p /newroot/$d 2>/dev/null; done
    mount -t proc proc /newroot/proc
    mount -t sysfs sys /newroot/sys
    mount -t devtmpfs dev /newroot/dev
    start_agent /newroot
    chroot /newroot /bin/sh -c "cd /; $(cat /tmp/yun-cmd)" </dev/console
    rc=$?
    umount /newroot/proc /newroot/sys /newroot/dev
    umount /newroot || mount -o remount,ro /newroot
  else
    echo "yun: cannot mount root $root"
    rc=125
  fi
else
  start_agent ""
  cd /root
  sh /tmp/yun-cmd </dev/console
  rc=$?
  cd /
fi
sync
echo "yun-exit-$nonce: $rc"
poweroff -f
"#;

/// Build (once, cached by content hash) the initramfs for `kernel` under `data_dir/vm/initramfs/`.
pub fn ensure_initramfs(data_dir: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("{BUSYBOX}: cannot read (install busybox-static)"))?;
    let groups = module_groups(kernel)?;
    let applets = applets()?;

    let mut hash = Sha256::new();
    hash.update(INIT);
    hash.update(&busybox);
    hash.update(applets.join(" "));
    // Which group a module is in matters too (/init loads a group only for its devices).
    for (group, list) in &groups {
        hash.update(group);
        for (name, data) in list {
            hash.update(name);
            hash.update(data);
        }
    }
    let digest = hex::encode(&hash.finalize()[..16]);
    let dir = data_dir.join("vm").join("initramfs");
    let path = dir.join(format!("{digest}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;

    let mut c = Cpio::default();
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "mnt",
        "newroot",
        "proc",
        "root",
        "sys",
        "tmp",
    ] {
        c.dir(d);
    }
    // The kernel opens /dev/console for init before /init can mount devtmpfs.
    c.char_dev("dev/console", 0o600, 5, 1);
    c.file("bin/busybox", 0o755, &busybox);
    // Applet links made here, not by `busybox --install` at boot: one process less per VM.
    for applet in &applets {
        c.symlink(&format!("bin/{applet}"), "busybox");
    }
    c.file("init", 0o755, INIT.as_bytes());
    for (dev, mods) in &groups {
        let order: Vec<&str> = mods.iter().map(|(n, _)| n.as_str()).collect();
        c.file(
            &format!("etc/yun-modules-{dev}"),
            0o644,
            format!("{}\n", order.join("\n")).as_bytes(),
        );
        for (name, data) in mods {
            c.file(&format!("lib/modules/{name}.ko"), 0o644, data);
        }
    }

    let tmp = tempdir_in(&dir, ".tmp-initramfs")?;
    let staged = tmp.join("initramfs.cpio");
    let result = write_synced(&staged, &c.finish())
        .and_then(|()| fs::rename(&staged, &path).context("rename initramfs into place"));
    let _ = fs::remove_dir_all(&tmp);
    result.with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The applets of the host's static busybox (`busybox --list`), `sh` among them.
fn applets() -> Result<Vec<String>> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("{BUSYBOX} --list"))?;
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect();
    if !list.iter().any(|a| a == "sh") {
        list.push("sh".into());
    }
    Ok(list)
}

/// The initramfs for VMs with vsock: the base one of [`ensure_initramfs`] with a second cpio
/// archive appended (the kernel unpacks concatenated archives in turn) that adds the vsock
/// modules and the agent, /bin/yun-guest. Other VMs boot without their weight.
pub fn ensure_initramfs_vsock(data_dir: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let base = ensure_initramfs(data_dir, kernel)?;
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let agent = hex::encode(&Sha256::digest(GUEST_AGENT)[..8]);
    let path = base.with_file_name(format!("{stem}-vsock-{agent}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    let in_base: HashSet<String> = module_groups(kernel)?
        .into_iter()
        .flat_map(|(_, mods)| mods.into_iter().map(|(n, _)| n))
        .collect();
    let extra = resolve_modules(&kernel.modules_dir, VSOCK_MODULES, &in_base)?;
    let mut c = Cpio::default();
    c.file("bin/yun-guest", 0o755, GUEST_AGENT);
    let order: Vec<&str> = extra.iter().map(|(n, _)| n.as_str()).collect();
    c.file(
        "etc/yun-modules-extra",
        0o644,
        format!("{}\n", order.join("\n")).as_bytes(),
    );
    for (name, data) in &extra {
        c.file(&format!("lib/modules/{name}.ko"), 0o644, data);
    }
    let mut bytes = fs::read(&base).with_context(|| format!("read {}", base.display()))?;
    bytes.extend_from_slice(&c.finish());
    let dir = base.parent().unwrap_or(Path::new("."));
    let tmp = tempdir_in(dir, ".tmp-initramfs")?;
    let staged = tmp.join("initramfs.cpio");
    let result = write_synced(&staged, &bytes)
        .and_then(|()| fs::rename(&staged, &path).context("rename initramfs into place"));
    let _ = fs::remove_dir_all(&tmp);
    result.with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// `wanted` modules plus their `depends=`, ordered so each comes after what it depends on;
/// those in `skip` (already loaded from elsewhere) left out.
fn resolve_modules(
    modules_dir: &Path,
    wanted: &[&str],
    skip: &HashSet<String>,
) -> Result<Vec<(String, Vec<u8>)>> {
    if !modules_dir.is_dir() {
        bail!(
            "{}: kernel modules directory missing",
            modules_dir.display()
        );
    }
    let mut index = BTreeMap::new();
    index_modules(&modules_dir.join("kernel"), &mut index)?;
    let mut order = Vec::new();
    let mut seen = skip.clone();
    for name in wanted {
        visit(name, &index, &mut seen, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    seen: &mut HashSet<String>,
    order: &mut Vec<(String, Vec<u8>)>,
    depth: usize,
) -> Result<()> {
    if depth > 32 {
        bail!("module dependency loop at {name}");
    }
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(path) = index.get(name) else {
        return Ok(()); // built in, or not shipped
    };
    let data = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let info = modinfo(&data).with_context(|| format!("{}: bad module", path.display()))?;
    for dep in info.iter().filter_map(|kv| kv.strip_prefix("depends=")) {
        for d in dep.split(',').filter(|d| !d.is_empty()) {
            visit(&d.replace('-', "_"), index, seen, order, depth + 1)?;
        }
    }
    order.push((name.to_string(), data));
    Ok(())
}

/// Map module name (dashes as underscores) to its uncompressed `.ko` file.
fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            index.insert(stem.replace('-', "_"), path);
        }
    }
    Ok(())
}

/// The NUL-separated `key=value` strings of an ELF64 module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>> {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let short = || anyhow!("truncated ELF");
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        bail!("not a little-endian ELF64 file");
    }
    let shoff = u64_at(0x28).ok_or_else(short)?;
    let shentsize = u16_at(0x3a).ok_or_else(short)?;
    let shnum = u16_at(0x3c).ok_or_else(short)?;
    let shstrndx = u16_at(0x3e).ok_or_else(short)?;
    let section = |i: usize| -> Result<(usize, usize, usize)> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(h).ok_or_else(short)?,
            u64_at(h + 24).ok_or_else(short)?,
            u64_at(h + 32).ok_or_else(short)?,
        ))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = elf.get(stroff..stroff + strsize).ok_or_else(short)?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name = strtab.get(name..).unwrap_or(b"");
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if name == b".modinfo" {
            let data = elf.get(off..off + size).ok_or_else(short)?;
            return Ok(data
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }
    bail!("no .modinfo section")
}
