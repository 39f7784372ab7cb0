//! `yun up` on a data dir, bridge and pod CIDR of its own, driven by Debian's kubectl 1.20;
//! stopped, taken down and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Up {
    pub child: Child,
    pub data: PathBuf,
    pub node_flags: Vec<String>,
    /// Flags of `yun up` itself (not for `yun down`).
    pub up_flags: Vec<String>,
    pub addr: String,
}

impl Up {
    pub fn start(name: &str) -> Up {
        Self::start_with(name, &[])
    }

    pub fn start_with(name: &str, up_flags: &[&str]) -> Up {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n = std::process::id();
        let data = PathBuf::from(format!("/tmp/yun-test-up-{name}-{n}"));
        let _ = std::fs::remove_dir_all(&data);
        let addr = format!("127.0.0.1:{}", super::free_port());
        let node_flags = vec![
            "--bridge".to_string(),
            format!("yunbt{:x}u{seq}", n & 0xffff),
            "--pod-cidr".to_string(),
            format!("10.236.{}.0/24", (n * 3 + seq) % 250),
            "--name".to_string(),
            "node-1".to_string(),
        ];
        let up_flags: Vec<String> = up_flags.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(&data, &addr, &node_flags, &up_flags);
        let up = Up {
            child,
            data,
            node_flags,
            up_flags,
            addr,
        };
        super::wait_for_port(&up.addr, "yun up");
        up
    }

    fn spawn(data: &Path, addr: &str, node_flags: &[String], up_flags: &[String]) -> Child {
        Command::new(super::YUN)
            .arg("--data-dir")
            .arg(data)
            .args(["up", "--addr", addr])
            .args(node_flags)
            .args(up_flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Stop `yun up` (SIGTERM) and start it again on the same data dir and address.
    pub fn restart(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        self.child = Self::spawn(&self.data, &self.addr, &self.node_flags, &self.up_flags);
        super::wait_for_port(&self.addr, "yun up after a restart");
    }

    /// Kill `yun up` outright (SIGKILL: no clean shutdown, as a crash) and start it again on
    /// the same data dir and address.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.data, &self.addr, &self.node_flags, &self.up_flags);
        super::wait_for_port(&self.addr, "yun up after a kill");
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        super::kubectl::run(&self.data.join("kubeconfig"), args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        super::kubectl::ok(&self.data.join("kubeconfig"), args)
    }

    pub fn until(&self, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
        super::kubectl::until(&self.data.join("kubeconfig"), args, secs, done)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        // Pods outlive `yun up` (the next one adopts them): take them down.
        let _ = Command::new(super::YUN)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("down")
            .args(&self.node_flags)
            .output();
        super::unmount_under(&[&self.data]);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// GET / from a pod (retrying while its server starts: Running is not listening yet).
pub fn http_get(ip: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match std::net::TcpStream::connect((ip, port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{ip}:{port}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}
