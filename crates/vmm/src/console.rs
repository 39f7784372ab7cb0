//! Attaching a terminal to a VM's serial console socket.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result};

/// Ctrl-] ends the session, as in telnet and virsh.
pub const DETACH_KEY: u8 = 0x1d;

/// Restores the terminal mode on drop.
struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: i32) -> Option<RawMode> {
        // SAFETY: termios is plain data, filled by tcgetattr before use.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes into the termios we own.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None; // not a terminal: pass bytes through as they are
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct we own; tcsetattr reads it.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved in enter() on the same fd.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Copy the console to stdout and stdin to the console until the VM ends or Ctrl-] is typed.
pub fn attach_console(socket: &Path) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("console {}: cannot connect", socket.display()))?;
    let mut from_vm = stream.try_clone()?;
    let out = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        while let Ok(n) = from_vm.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    });
    let stdin = std::io::stdin();
    let _raw = RawMode::enter(stdin.as_raw_fd());
    let mut to_vm = stream;
    let mut buf = [0u8; 1024];
    let mut input = stdin.lock();
    loop {
        if out.is_finished() {
            break;
        }
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = buf[..n].iter().position(|&b| b == DETACH_KEY) {
            let _ = to_vm.write_all(&buf[..at]);
            break;
        }
        if to_vm.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to_vm.shutdown(std::net::Shutdown::Both);
    let _ = out.join();
    Ok(())
}
