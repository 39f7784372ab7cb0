//! `yun vm run`: Debian's cloud kernel + yun's initramfs under QEMU, the guest command's
//! output on stdout and its exit status as ours.

mod common;

use std::process::{Command, Stdio};

#[test]
fn vm_run_returns_the_guest_status() {
    // The same kernel cache as yun-vmm's tests: fetched once per machine, reused after.
    let out = Command::new(common::YUN)
        .args([
            "--data-dir",
            "/var/cache/yun-test-kernel",
            "vm",
            "run",
            "--cpus",
            "2",
            "--memory",
            "192",
            "--",
            "sh",
            "-c",
            "echo in-guest; nproc; exit 7",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("in-guest\n2\n"), "{text:?}");
    let bad = Command::new(common::YUN)
        .args([
            "--data-dir",
            "/var/cache/yun-test-kernel",
            "vm",
            "run",
            "--memory",
            "0",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1
    );
}
