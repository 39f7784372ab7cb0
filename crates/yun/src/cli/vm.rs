//! `yun vm …`: virtual machines (QEMU driver; TCG where the host has no usable KVM).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use yun_vmm::{Disk, Driver, NetRequest, QemuDriver, VmConfig};

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Boot a throwaway VM, run CMD in it, print its console and exit with its status.
    Run {
        #[command(flatten)]
        machine: MachineArgs,
        /// Accelerator (kvm or tcg; default: kvm only where the host really has it).
        #[arg(long)]
        accel: Option<String>,
        /// An existing tap device to attach as a virtio-net NIC (repeatable; eth0, eth1, …).
        #[arg(long = "tap")]
        taps: Vec<String>,
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Define a managed VM (started with `yun vm start`).
    Create {
        name: String,
        #[command(flatten)]
        machine: MachineArgs,
        #[arg(long)]
        accel: Option<String>,
        /// Start it right away.
        #[arg(long)]
        start: bool,
        /// A vsock device, for `yun vm exec` and host↔guest sockets (its memory is then shared
        /// with yun's device model, which KSM cannot merge).
        #[arg(long)]
        vsock: bool,
        /// Guest command (default: the image's, or an interactive sh on the console).
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Boot a defined or ended VM.
    Start { name: String },
    /// Power a VM off (ACPI, then quit after --timeout seconds); --force quits at once.
    Stop {
        name: String,
        #[arg(long, short)]
        force: bool,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Pause a running VM's vCPUs.
    Pause { name: String },
    /// Resume a paused VM.
    Resume { name: String },
    /// Remove a VM and its files (-f: even while it runs).
    Rm {
        name: String,
        #[arg(long, short)]
        force: bool,
    },
    /// List VMs: NAME STATE CPUS MEMORY UPTIME ADDRESS REASON.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Attach to a VM's serial console (Ctrl-] detaches); prints the log when stdout is no terminal.
    Console { name: String },
    /// Save a live VM's memory and device state.
    Snapshot {
        name: String,
        #[arg(long, default_value = "default")]
        tag: String,
    },
    /// Start an ended VM from a snapshot.
    Restore {
        name: String,
        #[arg(long, default_value = "default")]
        tag: String,
    },
    /// Memory and CPU use of a running VM and its supervisor.
    Stats { name: String },
    /// Run CMD in a running VM (created with --vsock) and exit with its status.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Give a running VM MiB of memory: the balloon takes the rest back for the host.
    Balloon { name: String, mib: u64 },
    /// Host kernel samepage merging: share identical guest pages.
    Ksm {
        #[arg(value_enum, default_value_t = KsmAction::Status)]
        action: KsmAction,
    },
    /// Internal: keep one VM (run by `yun vm start`).
    #[command(hide = true)]
    Supervise { dir: PathBuf },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KsmAction {
    On,
    Off,
    Status,
}

#[derive(clap::Args, Debug)]
pub struct MachineArgs {
    /// Guest kernel (default: Debian's linux-image-cloud-amd64, fetched once).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs (default: yun's, with busybox and the kernel's virtio modules).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Root disk built from this yun image (the image's command runs unless CMD is given).
    #[arg(long)]
    image: Option<String>,
    /// virtio-blk disk: FILE[,ro][,format=raw|qcow2][,backing=allow] (repeatable). Raw unless
    /// format= says otherwise (never guessed from the content); a qcow2 backing file only with
    /// backing=allow, and only inside the disk's own directory.
    #[arg(long = "disk")]
    disks: Vec<String>,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Join a bridge network: a tap on --bridge and an address from --subnet (the same pool the
    /// node agent's pods on that bridge use); the guest's eth0 gets it, with a default route.
    #[arg(long)]
    net: bool,
    #[arg(long, default_value = yun_vmm::DEFAULT_BRIDGE, requires = "net")]
    bridge: String,
    #[arg(long, default_value = yun_vmm::DEFAULT_SUBNET, requires = "net")]
    subnet: String,
}

impl MachineArgs {
    fn network(&self) -> Result<Option<NetRequest>> {
        if !self.net {
            return Ok(None);
        }
        yun_net::check_ifname(&self.bridge).map_err(|e| anyhow::anyhow!("bridge: {e}"))?;
        let subnet = self
            .subnet
            .parse()
            .map_err(|e| anyhow::anyhow!("subnet: {e}"))?;
        Ok(Some(NetRequest {
            bridge: self.bridge.clone(),
            subnet,
        }))
    }
}

fn disks(specs: &[String]) -> Result<Vec<Disk>> {
    specs.iter().map(|s| s.parse()).collect()
}

fn driver(data_dir: &Path) -> Result<QemuDriver> {
    let exe = std::env::current_exe().context("locate the yun binary")?;
    // The supervisor is yun itself, whose allocator (mimalloc) by default commits its first
    // 8 MiB arena eagerly: most of a supervisor's resident memory for nothing. Lazy commit
    // keeps it at ~2.5 MiB; `env` execs yun in place, so no process is added.
    Ok(QemuDriver::new(
        data_dir,
        vec![
            OsString::from("/usr/bin/env"),
            OsString::from("MIMALLOC_ARENA_EAGER_COMMIT=0"),
            exe.into(),
            OsString::from("vm"),
            OsString::from("supervise"),
        ],
    ))
}

pub fn run(data_dir: &Path, cmd: VmCmd) -> Result<i32> {
    match cmd {
        VmCmd::Run {
            machine: m,
            accel,
            taps,
            cmd,
        } => {
            let cmd = if cmd.is_empty() && m.image.is_none() {
                vec!["sh".to_string()]
            } else {
                cmd
            };
            let net = m.network()?;
            let spec = yun_vmm::RunSpec {
                cpus: m.cpus,
                memory_mib: m.memory,
                cmd,
                kernel: m.kernel,
                initrd: m.initrd,
                extra_cmdline: m.cmdline,
                accel,
                disks: disks(&m.disks)?,
                net,
                image: m.image,
                taps,
            };
            let mut out = std::io::stdout().lock();
            yun_vmm::run(data_dir, &spec, &mut out)
        }
        VmCmd::Create {
            name,
            machine: m,
            accel,
            start,
            vsock,
            cmd,
        } => {
            let d = driver(data_dir)?;
            let join = m.network()?;
            let cfg = VmConfig {
                cpus: m.cpus,
                memory_mib: m.memory,
                kernel: m.kernel,
                initrd: m.initrd,
                cmdline: m.cmdline,
                cmd,
                disks: disks(&m.disks)?,
                join,
                vsock,
                image: m.image,
                accel,
                ..VmConfig::new(&name)
            };
            d.define(&cfg)?;
            if start {
                d.start(&name)?;
            }
            println!("{name}");
            Ok(0)
        }
        VmCmd::Start { name } => driver(data_dir)?.start(&name).map(|()| 0),
        VmCmd::Stop {
            name,
            force,
            timeout,
        } => {
            let mut d = driver(data_dir)?;
            d.stop_grace = Duration::from_secs(timeout);
            d.stop(&name, force).map(|()| 0)
        }
        VmCmd::Pause { name } => driver(data_dir)?.pause(&name).map(|()| 0),
        VmCmd::Resume { name } => driver(data_dir)?.resume(&name).map(|()| 0),
        VmCmd::Rm { name, force } => driver(data_dir)?.undefine(&name, force).map(|()| 0),
        VmCmd::List { json } => {
            let vms = driver(data_dir)?.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                print_table(&vms);
            }
            Ok(0)
        }
        VmCmd::Console { name } => {
            let c = driver(data_dir)?.console(&name)?;
            let stdout_tty = std::io::stdout().is_terminal();
            match (&c.socket, stdout_tty) {
                (Some(sock), true) => {
                    eprintln!("yun: console of {name}; Ctrl-] detaches");
                    yun_vmm::attach_console(sock)?;
                }
                _ => {
                    let log = std::fs::read(&c.log).unwrap_or_default();
                    use std::io::Write;
                    std::io::stdout().write_all(&log)?;
                }
            }
            Ok(0)
        }
        VmCmd::Snapshot { name, tag } => {
            driver(data_dir)?.snapshot(&name, &tag)?;
            println!("{name} {tag}");
            Ok(0)
        }
        VmCmd::Restore { name, tag } => driver(data_dir)?.restore(&name, &tag).map(|()| 0),
        VmCmd::Stats { name } => {
            let s = driver(data_dir)?.stats(&name)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(0)
        }
        VmCmd::Exec { name, cmd } => {
            let script = yun_vmm::guest_script(&cmd);
            let mut out = std::io::stdout().lock();
            driver(data_dir)?.exec(&name, &script, &mut out)
        }
        VmCmd::Balloon { name, mib } => {
            driver(data_dir)?.balloon(&name, mib)?;
            println!("{name}: {mib} MiB");
            Ok(0)
        }
        VmCmd::Ksm { action } => {
            match action {
                KsmAction::On => yun_vmm::ksm_set(true)?,
                KsmAction::Off => yun_vmm::ksm_set(false)?,
                KsmAction::Status => {}
            }
            let s = yun_vmm::ksm_status()?;
            let run = match s.run {
                0 => "off",
                1 => "on",
                _ => "unmerging",
            };
            println!(
                "ksm {run}: pages_shared {} pages_sharing {} (saved {} MiB), full_scans {}",
                s.pages_shared,
                s.pages_sharing,
                s.saved_mib(),
                s.full_scans
            );
            Ok(0)
        }
        VmCmd::Supervise { dir } => {
            if !dir.is_absolute() {
                bail!("supervise {}: not an absolute path", dir.display());
            }
            Ok(yun_vmm::supervise(&dir))
        }
    }
}

fn print_table(vms: &[yun_vmm::VmStatus]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rows: Vec<[String; 7]> = vms
        .iter()
        .map(|v| {
            let uptime = match (v.state.is_live(), v.started_at) {
                (true, Some(t)) => format_duration(now.saturating_sub(t)),
                _ => "-".to_string(),
            };
            [
                v.config.name.clone(),
                v.state.as_str().to_string(),
                v.config.cpus.to_string(),
                format!("{}M", v.config.memory_mib),
                uptime,
                v.config
                    .network
                    .as_ref()
                    .map_or_else(|| "-".into(), |n| n.address.addr.to_string()),
                v.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = [
        "NAME", "STATE", "CPUS", "MEMORY", "UPTIME", "ADDRESS", "REASON",
    ];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in &rows {
        line(r.each_ref().map(String::as_str));
    }
}

fn format_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
