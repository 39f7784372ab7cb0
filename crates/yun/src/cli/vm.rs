//! `yun vm …`: virtual machines (QEMU driver; TCG where the host has no usable KVM).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Boot a throwaway VM, run CMD in it, print its console and exit with its status.
    Run {
        /// Guest kernel (default: Debian's linux-image-cloud-amd64, fetched once).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Initramfs (default: yun's, with busybox and the kernel's virtio modules).
        #[arg(long)]
        initrd: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u32,
        /// Extra kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Accelerator (kvm or tcg; default: kvm only where the host really has it).
        #[arg(long)]
        accel: Option<String>,
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

pub fn run(data_dir: &Path, cmd: VmCmd) -> Result<i32> {
    match cmd {
        VmCmd::Run {
            kernel,
            initrd,
            cpus,
            memory,
            cmdline,
            accel,
            cmd,
        } => {
            let cmd = if cmd.is_empty() {
                vec!["sh".to_string()]
            } else {
                cmd
            };
            let spec = yun_vmm::RunSpec {
                cpus,
                memory_mib: memory,
                cmd,
                kernel,
                initrd,
                extra_cmdline: cmdline,
                accel,
            };
            let mut out = std::io::stdout().lock();
            yun_vmm::run(data_dir, &spec, &mut out)
        }
    }
}
