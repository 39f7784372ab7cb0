//! Virtual machines: a driver interface ([`Driver`]) and the QEMU driver over QMP
//! ([`QemuDriver`]); guest kernel, initramfs and disks; snapshots; KSM.
//!
//! Two ways to run a guest: [`run`] boots a throwaway VM in the foreground (console on a
//! writer, the guest command's exit status back); [`QemuDriver`] manages named VMs under
//! `DATA/vm/machines/`, each kept by a small supervisor process ([`supervise`]).

mod console;
mod cpio;
mod disk;
mod driver;
mod initramfs;
mod kernel;
mod ksm;
mod lz4;
mod machine;
mod net;
mod qcow2;
mod qemu;
pub mod qmp;
mod rootfs;
mod snapshot;
pub mod vsock;

pub use console::{attach_console, DETACH_KEY};
pub use disk::{make_ext4, Disk, DiskFormat};
pub use driver::{Console, Driver, State, VmConfig, VmStats, VmStatus};
pub use initramfs::{ensure_initramfs, ensure_initramfs_vsock};
pub use kernel::{ensure_kernel, Kernel};
pub use ksm::{ksm_set, ksm_status, ksm_tune, KsmStatus};
pub use machine::validate_name;
pub use net::{NetRequest, VmNet, DEFAULT_BRIDGE, DEFAULT_SUBNET};
pub use qemu::supervisor::supervise;
pub use qemu::{
    choose_accel, find_qemu, guest_script, run, run_with, QemuDriver, RunOptions, RunSpec,
    GUEST_TUNING, QEMU,
};
pub use rootfs::{image_disk, ImageDisk};
