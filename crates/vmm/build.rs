//! Builds the in-guest agent (guest/yun-guest.rs) as a static binary for the initramfs.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "guest/yun-guest.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("yun-guest");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run rustc for the guest agent");
    assert!(status.success(), "building {src} failed");
}
