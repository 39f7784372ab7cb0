//! A control plane without a node: `yun server` on a private data dir, plus any number of
//! `yun controller-manager`s, driven by Debian's kubectl 1.20; every process is killed and the
//! data dir removed on drop. Without a node pods stay Pending and go at once when deleted,
//! which keeps controller tests fast.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub struct Plane {
    pub data: PathBuf,
    pub addr: String,
    /// The server first, then the controller managers in the order they started.
    children: Vec<Child>,
}

impl Plane {
    /// `yun server` alone.
    pub fn server(name: &str) -> Plane {
        Self::server_with(name, &[])
    }

    /// `yun server` alone, with more flags.
    pub fn server_with(name: &str, flags: &[&str]) -> Plane {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let data = PathBuf::from(format!("/tmp/yun-test-{name}-{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let addr = format!("127.0.0.1:{}", super::free_port());
        let server = Command::new(super::YUN)
            .arg("--data-dir")
            .arg(&data)
            .args(["server", "--addr", &addr])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let p = Plane {
            data,
            addr,
            children: vec![server],
        };
        super::wait_for_port(&p.addr, "yun server");
        super::wait_for_file(&p.kubeconfig(), "yun server");
        p
    }

    /// `yun server` and one controller manager.
    pub fn with_controller_manager(name: &str) -> Plane {
        let mut p = Self::server(name);
        p.controller_manager();
        p
    }

    /// Start one more controller manager; returns its pid.
    pub fn controller_manager(&mut self) -> u32 {
        let cm = Command::new(super::YUN)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = cm.id();
        self.children.push(cm);
        pid
    }

    /// SIGKILL the process `pid` (a controller manager or the server) and reap it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        super::kubectl::run(&self.kubeconfig(), args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        super::kubectl::ok(&self.kubeconfig(), args)
    }

    pub fn until(&self, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
        super::kubectl::until(&self.kubeconfig(), args, secs, done)
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        // Controller managers first, the server last.
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
