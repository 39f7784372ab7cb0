//! The control plane end to end, in one process as `yun up` runs it: the API server on the
//! embedded store, the controllers and scheduler, and a node agent running real containers on
//! a bridge this test creates. Driven through kube-rs like any Kubernetes client.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use yun_agent::{NodeConfig, PodRuntime};

struct Cluster {
    data: PathBuf,
    bridge: String,
    rt: Option<Arc<PodRuntime>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Dropped inside the async test: the blocking clean-up runs on a thread of its own.
        let rt = self.rt.take();
        let (data, bridge) = (self.data.clone(), self.bridge.clone());
        std::thread::spawn(move || clean_up(rt, &data, &bridge))
            .join()
            .unwrap();
    }
}

fn clean_up(rt: Option<Arc<PodRuntime>>, data: &std::path::Path, bridge: &str) {
    {
        if let Some(rt) = rt {
            for uid in rt.pod_uids() {
                let _ = rt.remove(&uid, Duration::ZERO);
            }
        }
        if let Ok(nl) = yun_net::Netlink::open() {
            let _ = nl.delete_link(bridge);
        }
        // After the bridge: the agent (still running) cannot write its rules without it.
        if let Ok(p) = yun_net::proxy::ServiceProxy::new(bridge) {
            let _ = p.remove();
        }
        common::unmount_under(&[data]);
        let _ = std::fs::remove_dir_all(data);
    }
}

async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_runs_scales_rolls_and_goes() {
    let data = PathBuf::from(format!("/tmp/yun-test-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut cluster = Cluster {
        data: data.clone(),
        bridge: format!("yunbt{:x}c", std::process::id() & 0xffff),
        rt: None,
    };
    let server = yun_apiserver::start(yun_apiserver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.join("server"),
        store: "embedded".into(),
        compaction_interval: yun_apiserver::DEFAULT_COMPACTION_INTERVAL,
        service_cidr: Default::default(),
        ..Default::default()
    })
    .await
    .unwrap();
    let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();

    let mut cfg = NodeConfig::new(&data.join("node"), std::path::Path::new(common::YUN));
    cfg.bridge = cluster.bridge.clone();
    cfg.pod_cidr = format!("10.234.{}.0/24", std::process::id() % 250)
        .parse()
        .unwrap();
    let rt = Arc::new(
        tokio::task::spawn_blocking(move || PodRuntime::open(cfg))
            .await
            .unwrap()
            .unwrap(),
    );
    cluster.rt = Some(rt.clone());
    tokio::spawn(yun_controllers::manager::run(
        client.clone(),
        "test".into(),
        Default::default(),
        std::fs::read_to_string(data.join("server/pki/ca.crt")).unwrap(),
    ));
    tokio::spawn(yun_agent::node::run(
        client.clone(),
        yun_agent::node::AgentConfig::new("node-1"),
        rt.clone(),
    ));

    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("the node to register", 30, || async {
        nodes.get_opt("node-1").await.ok().flatten()
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"terminationGracePeriodSeconds": 2,
                                       "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000"]}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();

    let available = |n: i32| {
        let deployments = deployments.clone();
        move || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("web").await.ok()?;
                let s = d.status?;
                (s.available_replicas == Some(n)
                    && s.updated_replicas == Some(n)
                    && s.replicas == Some(n))
                .then_some(())
            }
        }
    };
    wait_for("2 available replicas", 90, available(2)).await;
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    for p in &list.items {
        let s = p.status.clone().unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(s.pod_ip.is_some());
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-1")
        );
    }

    // Scale up.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_for("3 available replicas", 90, available(3)).await;

    // Roll to a new template: a new ReplicaSet takes over, the old one ends at 0.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "2000"]}]}}}})),
        )
        .await
        .unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    wait_for("the rollout", 120, || {
        let (deployments, sets) = (deployments.clone(), sets.clone());
        async move {
            let d = deployments.get("web").await.ok()?;
            let s = d.status?;
            let rss = sets.list(&ListParams::default()).await.ok()?;
            let old_empty = rss
                .items
                .iter()
                .filter(|r| r.spec.as_ref().and_then(|s| s.replicas) == Some(0))
                .count()
                == 1;
            (d.metadata
                .annotations?
                .get("deployment.kubernetes.io/revision")
                .map(String::as_str)
                == Some("2")
                && s.updated_replicas == Some(3)
                && s.available_replicas == Some(3)
                && s.replicas == Some(3)
                && old_empty)
                .then_some(())
        }
    })
    .await;

    // Deleting the deployment removes its ReplicaSets, pods and containers.
    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for("the pods to go", 90, || {
        let pods = pods.clone();
        let rt = rt.clone();
        async move {
            let left = pods.list(&ListParams::default()).await.ok()?.items.len();
            let uids = tokio::task::spawn_blocking(move || rt.pod_uids())
                .await
                .ok()?;
            (left == 0 && uids.is_empty()).then_some(())
        }
    })
    .await;
    server.shutdown().await;
}
