//! yun's in-guest agent: listens on vsock port 1024 and, per connection, runs one line with
//! `sh -c` (inside the VM's root disk when `YUN_ROOT` names it), streams the command's output
//! back and ends with `yun-exit: <status>`. Built static (std only) by build.rs and put in the
//! initramfs as /bin/yun-guest; /init starts it when the VM has a vsock device.
//!
//! `yun-guest connect PORT` is the other direction, a vsock `nc`: it connects to the host's
//! port PORT and copies stdin to it and it to stdout.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SOCK_CLOEXEC: i32 = 0o2_000_000;
const VMADDR_CID_ANY: u32 = u32::MAX;
const PORT: u32 = 1024;
const MAX_LINE: usize = 64 * 1024;

/// struct sockaddr_vm.
#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved: u16,
    port: u32,
    cid: u32,
    zero: [u8; 4],
}

extern "C" {
    fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept4(fd: i32, addr: *mut u8, len: *mut u32, flags: i32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
}

const HOST_CID: u32 = 2;

fn fail(what: &str) -> ! {
    eprintln!("yun-guest: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn vsock_socket() -> i32 {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) };
    if fd < 0 {
        fail("socket");
    }
    fd
}

fn addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved: 0,
        port,
        cid,
        zero: [0; 4],
    }
}

/// `connect PORT`: stdin → host port, host port → stdout, until the host closes.
fn connect_host(port: &str) -> ! {
    let Ok(port) = port.parse::<u32>() else {
        eprintln!("yun-guest: connect: {port:?} is not a port");
        std::process::exit(2);
    };
    let fd = vsock_socket();
    let a = addr(HOST_CID, port);
    // SAFETY: `a` is a valid sockaddr_vm of the size given, alive for the call.
    if unsafe { connect(fd, &a, std::mem::size_of::<SockaddrVm>() as u32) } < 0 {
        fail("connect");
    }
    // SAFETY: `fd` is ours and owned from here on.
    let sock = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut up = sock.try_clone().unwrap_or_else(|_| fail("dup"));
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut up);
    });
    let mut down = sock;
    let _ = std::io::copy(&mut down, &mut std::io::stdout());
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("connect") {
        connect_host(args.get(2).map_or("", String::as_str));
    }
    let root = std::env::var("YUN_ROOT").ok().filter(|r| !r.is_empty());
    let fd = vsock_socket();
    let any = addr(VMADDR_CID_ANY, PORT);
    // SAFETY: `any` is a valid sockaddr_vm of the size given, alive for the call.
    if unsafe { bind(fd, &any, std::mem::size_of::<SockaddrVm>() as u32) } < 0 {
        fail("bind");
    }
    // SAFETY: listen(2) on the socket made above.
    if unsafe { listen(fd, 16) } < 0 {
        fail("listen");
    }
    loop {
        // SAFETY: accept4(2) without a peer address (null pointers are allowed).
        let c = unsafe { accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), SOCK_CLOEXEC) };
        if c < 0 {
            continue;
        }
        // SAFETY: `c` is a new descriptor that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(c) };
        let root = root.clone();
        std::thread::spawn(move || serve(std::fs::File::from(conn), root.as_deref()));
    }
}

fn serve(mut conn: std::fs::File, root: Option<&str>) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        match conn.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
            Ok(1) => break,
            _ => return,
        }
    }
    let script = String::from_utf8_lossy(&line).into_owned();
    let mut cmd = match root {
        Some(r) => {
            let mut c = Command::new("/bin/chroot");
            c.args([r, "/bin/sh", "-c", &format!("cd /; {script}")]);
            c
        }
        None => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", &script]).current_dir("/root");
            c
        }
    };
    let (Ok(out), Ok(err)) = (conn.try_clone(), conn.try_clone()) else {
        return;
    };
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .status();
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 127,
    };
    let _ = writeln!(conn, "yun-exit: {code}");
}
