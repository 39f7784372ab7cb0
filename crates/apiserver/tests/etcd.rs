//! The API server on a real etcd (Debian's etcd-server, started on free loopback ports).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

struct Etcd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd() -> Etcd {
    let dir = tempfile::Builder::new()
        .prefix("yun-test-apiserver-etcd-")
        .tempdir()
        .unwrap();
    let (port, peer) = (free_port(), free_port());
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "yun-test", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("yun-test={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd (Debian package etcd-server)");
    Etcd {
        child,
        port,
        _dir: dir,
    }
}

#[tokio::test]
async fn crud_and_watch_on_etcd() {
    let etcd = etcd();
    let dir = tempfile::tempdir().unwrap();
    let config = yun_apiserver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        store: format!("etcd://127.0.0.1:{}", etcd.port),
        compaction_interval: yun_apiserver::DEFAULT_COMPACTION_INTERVAL,
        service_cidr: Default::default(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let server = loop {
        match yun_apiserver::start(config.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "server on etcd: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let kconfig = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(kconfig).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"k": name}}})).unwrap()
    };
    let a = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = a.metadata.resource_version.unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("b")),
        other => panic!("unexpected {other:?}"),
    }
    let only_b = cms
        .list(&ListParams::default().labels("k=b"))
        .await
        .unwrap();
    assert_eq!(only_b.items.len(), 1);
    let mut stale = cms.get("a").await.unwrap();
    stale.metadata.resource_version = Some(rv.clone());
    cms.replace("a", &PostParams::default(), &stale)
        .await
        .unwrap();
    let e = cms
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(s) if s.code == 409));
    drop(events);
    drop((cms, client));
    server.shutdown().await;
}
