//! Automatic compaction (`Config::compaction_interval`) against an in-process server.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::json;

/// With a short interval, history older than one interval is compacted on its own: a watch
/// from before gets 410 Expired, while the objects themselves stay as they are.
#[tokio::test]
async fn old_revisions_are_compacted_current_objects_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = yun_apiserver::start(yun_apiserver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        store: "embedded".into(),
        compaction_interval: Duration::from_millis(200),
        service_cidr: Default::default(),
        ..Default::default()
    })
    .await
    .expect("server starts");
    let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "a"}, "data": {"k": "1"}})).unwrap();
    let first = cms.create(&PostParams::default(), &cm).await.unwrap();
    let old_rv = first.metadata.resource_version.unwrap();
    // Two writes after the create: once the second is compacted to, the first (where a
    // watch from the create starts) is gone.
    for k in ["2", "3"] {
        cms.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": k}})),
        )
        .await
        .unwrap();
    }

    // Within a few intervals the revision of the create is behind the compaction.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut watch = cms
            .watch(&WatchParams::default(), &old_rv)
            .await
            .unwrap()
            .boxed();
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("event ok");
        match ev {
            WatchEvent::Error(status) => {
                assert_eq!(status.code, 410);
                break;
            }
            // Not compacted yet: the watch replays the patches.
            WatchEvent::Modified(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
        assert!(Instant::now() < deadline, "history never compacted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The current state is untouched, and stays so across further ticks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = cms.get("a").await.unwrap();
    assert_eq!(a.data.unwrap()["k"], "3");
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    // A watch from the current revision still works.
    let rv = list.metadata.resource_version.unwrap();
    let mut watch = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "4"}})),
    )
    .await
    .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("event ok");
    assert!(matches!(ev, WatchEvent::Modified(_)), "{ev:?}");
    drop(watch);
    server.shutdown().await;
}
