//! Test harness: an embedded store in a temp dir, or a real etcd started on free loopback
//! ports, both removed by a drop guard.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use yun_store::Store;

pub struct Harness {
    pub store: Arc<dyn Store>,
    _etcd: Option<EtcdGuard>,
    pub dir: tempfile::TempDir,
}

pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("yun-test-{what}-"))
        .tempdir()
        .expect("create temp dir")
}

pub async fn embedded() -> Harness {
    let dir = temp_dir("store");
    let store = yun_store::open("embedded", dir.path())
        .await
        .expect("open embedded");
    Harness {
        store,
        _etcd: None,
        dir,
    }
}

pub async fn etcd() -> Harness {
    let guard = EtcdGuard::start();
    let spec = format!("etcd://127.0.0.1:{}", guard.client_port);
    let dir = temp_dir("store");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(store) = yun_store::open(&spec, dir.path()).await {
            if store.current_revision().await.is_ok() {
                return Harness {
                    store,
                    _etcd: Some(guard),
                    dir,
                };
            }
        }
        assert!(Instant::now() < deadline, "etcd did not come up on {spec}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A private etcd: killed and its data dir removed on drop.
pub struct EtcdGuard {
    child: Child,
    pub client_port: u16,
    _dir: tempfile::TempDir,
}

impl EtcdGuard {
    pub fn start() -> Self {
        let dir = temp_dir("etcd");
        let client_port = free_port();
        let peer_port = free_port();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("yun-test")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("yun-test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        EtcdGuard {
            child,
            client_port,
            _dir: dir,
        }
    }
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
