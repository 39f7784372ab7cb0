//! Virtual machines: a driver interface and the QEMU driver over QMP; guest kernel, initramfs and disks.
//!
//! First step: boot Debian's stock cloud kernel under QEMU with a busybox initramfs, run one command
//! in the guest and hand back its exit status ([`run`]). [`qmp`] is a small QMP client.

mod cpio;
mod initramfs;
mod kernel;
mod lz4;
mod qemu;
pub mod qmp;

pub use initramfs::ensure_initramfs;
pub use kernel::{ensure_kernel, Kernel};
pub use qemu::{choose_accel, run, run_with, RunOptions, RunSpec};
