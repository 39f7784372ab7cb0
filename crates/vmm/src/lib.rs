//! Virtual machines: a driver interface and the QEMU driver over QMP; guest kernel, initramfs and disks.
