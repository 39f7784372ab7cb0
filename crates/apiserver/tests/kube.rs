//! kube-rs against an in-process `yun_apiserver` on a free loopback port.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::json;

mod common;
use common::{connect, start};
use kube::config::{KubeConfigOptions, Kubeconfig};

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn crud_selectors_patch_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let created = pods
        .create(&PostParams::default(), &pod("web-1", json!({"app": "web"})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.generation, Some(1));
    pods.create(&PostParams::default(), &pod("db-1", json!({"app": "db"})))
        .await
        .unwrap();
    let mut generated = pod("", json!({"app": "web"}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("web-".into());
    let generated = pods
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let gname = generated.metadata.name.clone().unwrap();
    assert!(gname.starts_with("web-") && gname.len() == 9, "{gname}");

    // Same name again: 409 AlreadyExists.
    let e = pods
        .create(&PostParams::default(), &pod("web-1", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 409);

    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 2);
    let not_web = pods
        .list(&ListParams::default().labels("app notin (web)"))
        .await
        .unwrap();
    assert_eq!(not_web.items.len(), 1);
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=db-1"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let pending = pods
        .list(&ListParams::default().fields("status.phase=Pending"))
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 3);
    // A field label pods do not have: kube's 400, not an empty list.
    let err = pods
        .list(&ListParams::default().fields("spec.nodename=n1"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(
            (s.code, s.message.as_str()),
            (400, "field label not supported: spec.nodename")
        ),
        other => panic!("expected a 400, got {other}"),
    }

    // Paging.
    let page = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);

    // Merge patch.
    let patched = pods
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "fe"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["tier"], "fe");

    // Update with a stale resourceVersion: 409 Conflict.
    let mut stale = created.clone();
    stale.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    let e = pods
        .replace("web-1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 409);

    // Invalid: pod without containers, 422 naming the field.
    let bad: Pod =
        serde_json::from_value(json!({"metadata": {"name": "bad"}, "spec": {"containers": []}}))
            .unwrap();
    match pods.create(&PostParams::default(), &bad).await.unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            let causes = s.details.unwrap().causes;
            assert_eq!(causes[0].field, "spec.containers");
        }
        other => panic!("{other}"),
    }

    // A Secret's stringData lands base64-encoded in data.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}),
    )
    .unwrap();
    let secret = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"hunter2");
    assert!(secret.string_data.is_none());
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    pods.delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(pods.get("web-1").await.unwrap_err()), 404);
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn unauthorized_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    for u in &mut kc.auth_infos {
        if let Some(a) = u.auth_info.as_mut() {
            // A token that is not the admin's, and no client certificate to fall back on.
            a.client_certificate_data = None;
            a.client_key_data = None;
            a.token = Some("wrong".to_string().into());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    assert_eq!(
        api_code(pods.list(&ListParams::default()).await.unwrap_err()),
        401
    );
    server.shutdown().await;
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> (String, String) {
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event ok");
    match ev {
        WatchEvent::Added(o) => ("ADDED".into(), o.metadata.name.unwrap()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.metadata.name.unwrap()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.metadata.name.unwrap()),
        WatchEvent::Bookmark(_) => ("BOOKMARK".into(), String::new()),
        WatchEvent::Error(s) => (format!("ERROR {}", s.code), String::new()),
    }
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn watch_resumes_across_restart_and_410_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let a = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = a.metadata.resource_version.clone().unwrap();

    // A live watch sees changes.
    let mut live = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    assert_eq!(next_event(&mut live).await, ("ADDED".into(), "b".into()));
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut live).await, ("MODIFIED".into(), "a".into()));
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(next_event(&mut live).await, ("DELETED".into(), "b".into()));
    drop(live);
    drop(cms);
    drop(client);
    server.shutdown().await;

    // After a restart, a watch from the old resourceVersion replays everything since.
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut resumed = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_event(&mut resumed).await, ("ADDED".into(), "b".into()));
    assert_eq!(
        next_event(&mut resumed).await,
        ("MODIFIED".into(), "a".into())
    );
    assert_eq!(
        next_event(&mut resumed).await,
        ("DELETED".into(), "b".into())
    );
    cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    assert_eq!(next_event(&mut resumed).await, ("ADDED".into(), "c".into()));
    drop(resumed);

    // Compact past rv: a watch from there ends with 410 Expired, and so does continuing a
    // paged list started before the compaction.
    let first_page = cms.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first_page.metadata.continue_.expect("a second page");
    cms.create(&PostParams::default(), &cm("d")).await.unwrap();
    let latest = cms
        .get("d")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    server
        .compact(latest.parse().unwrap())
        .await
        .expect("compaction");
    let e = cms
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 410);
    let mut old = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_event(&mut old).await.0, "ERROR 410");
    drop(old);
    drop(cms);
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn custom_resources() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "gadgets.yun.test"},
        "spec": {
            "group": "yun.test", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"],
                             "properties": {"size": {"type": "integer"}}}}}}}]
        }
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("yun.test", "v1", "Gadget"),
        "gadgets",
    );
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let obj = |name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "yun.test/v1", "kind": "Gadget",
            "metadata": {"name": name}, "spec": spec}))
        .unwrap()
    };
    gadgets
        .create(&PostParams::default(), &obj("g1", json!({"size": 3})))
        .await
        .unwrap();
    let e = gadgets
        .create(&PostParams::default(), &obj("g2", json!({"size": "big"})))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 422);
    let e = gadgets
        .create(&PostParams::default(), &obj("g3", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 422);
    let got = gadgets.get("g1").await.unwrap();
    assert_eq!(got.data["spec"]["size"], 3);
    gadgets
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    let all: Vec<_> = gadgets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].data["spec"]["size"], 4);

    // Deleting the CRD removes its objects and its endpoint.
    crds.delete("gadgets.yun.test", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_code(gadgets.list(&ListParams::default()).await.unwrap_err()),
        404
    );
    drop((gadgets, crds));
    let _ = client;
    server.shutdown().await;
}

#[tokio::test]
async fn cascading_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = cms
        .create(&PostParams::default(), &cm("owner"))
        .await
        .unwrap();
    let uid = owner.metadata.uid.clone().unwrap();
    for name in ["dep-1", "dep-2"] {
        let mut d = cm(name);
        d.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid
        }))
        .unwrap()]);
        cms.create(&PostParams::default(), &d).await.unwrap();
    }
    // The server turns the policy into a finalizer and collects nothing itself (the
    // controller manager's garbage collector does): a foreground delete marks the owner and
    // leaves the dependents; a later orphan delete swaps the finalizer.
    cms.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = cms.get("owner").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );
    cms.delete("owner", &DeleteParams::orphan()).await.unwrap();
    let marked = cms.get("owner").await.unwrap();
    assert_eq!(marked.metadata.finalizers, Some(vec!["orphan".to_string()]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["dep-1", "dep-2"] {
        cms.get(name).await.unwrap();
    }
    // Removing the last finalizer completes the delete.
    cms.patch(
        "owner",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(cms.get("owner").await.unwrap_err()), 404);
    for name in ["dep-1", "dep-2"] {
        cms.delete(name, &DeleteParams::default()).await.unwrap();
    }
    // A finalizer holds an object until it is removed.
    let mut f = cm("held");
    f.metadata.finalizers = Some(vec!["yun.test/hold".into()]);
    cms.create(&PostParams::default(), &f).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let held = cms.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(cms.get("held").await.unwrap_err()), 404);
    drop(cms);
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn subresources_and_deletecollection() {
    use k8s_openapi::api::apps::v1::Deployment;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["s-1", "s-2", "s-3"] {
        pods.create(&PostParams::default(), &pod(name, json!({"batch": "x"})))
            .await
            .unwrap();
    }

    // binding: once, then 409.
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "s-1"}, "target": {"kind": "Node", "name": "node-a"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", "s-1", &PostParams::default(), &binding)
        .await
        .unwrap();
    let again: kube::Result<serde_json::Value> = pods
        .create_subresource("binding", "s-1", &PostParams::default(), &binding)
        .await;
    assert_eq!(api_code(again.unwrap_err()), 409);
    let on_node = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(on_node.items.len(), 1);

    // status: the status subresource changes status only; the main resource ignores status.
    pods.patch_status(
        "s-1",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running"}, "metadata": {"labels": {"no": "no"}}}),
        ),
    )
    .await
    .unwrap();
    let p = pods.get("s-1").await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    assert!(!p.metadata.labels.unwrap().contains_key("no"));
    pods.patch(
        "s-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 1);

    // scale on a deployment.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let scale = deploys
        .patch_scale(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=d"));
    let d = deploys.get("d").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(4));
    assert_eq!(d.metadata.generation, Some(2));
    let mismatched: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "y"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    let e = deploys
        .create(&PostParams::default(), &mismatched)
        .await
        .unwrap_err();
    assert_eq!(api_code(e), 422);

    // deletecollection with a selector: unbound pods go at once; the one bound to node-a is
    // marked for graceful deletion (its node agent finishes it), until a grace-0 delete.
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("batch=x"),
    )
    .await
    .unwrap();
    let left = pods.list(&ListParams::default()).await.unwrap().items;
    let names: Vec<_> = left
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["s-1"]);
    assert!(left[0].metadata.deletion_timestamp.is_some());
    assert_eq!(left[0].metadata.deletion_grace_period_seconds, Some(30));
    pods.delete(
        "s-1",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    drop((pods, deploys));
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_watcher_sees_changes() {
    use kube::runtime::watcher::{self, Event};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("before"))
        .await
        .unwrap();
    let mut events = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut created = false;
    while !seen.contains(&"after".to_string()) {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("watcher events in time")
            .expect("stream open")
            .expect("no watcher error");
        match ev {
            Event::InitApply(o) | Event::Apply(o) => seen.push(o.metadata.name.unwrap()),
            Event::InitDone if !created => {
                created = true;
                cms.create(&PostParams::default(), &cm("after"))
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    assert!(seen.contains(&"before".to_string()), "{seen:?}");
    drop(events);
    drop((cms, client));
    server.shutdown().await;
}

/// Watch-list (`sendInitialEvents=true`, kube-rs' streaming lists): the selected objects as
/// ADDED, a bookmark annotated as the end of the initial events at the snapshot's revision,
/// then changes; kube-rs' watcher builds its initial state from it without a list.
#[tokio::test]
async fn watch_list_streams_the_initial_state_then_changes() {
    use kube::runtime::watcher::{self, Event};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let labelled = |name: &str, app: &str| {
        let mut c = cm(name);
        c.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        c
    };
    for (name, app) in [("wl-a", "x"), ("wl-b", "y"), ("wl-c", "x")] {
        cms.create(&PostParams::default(), &labelled(name, app))
            .await
            .unwrap();
    }
    let params = WatchParams::streaming_lists().labels("app=x");
    let mut stream = cms.watch(&params, "0").await.unwrap().boxed();
    let mut initial = Vec::new();
    let end_rv = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event ok");
        match ev {
            WatchEvent::Added(o) => initial.push(o.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata.annotations.get("k8s.io/initial-events-end"),
                    Some(&"true".to_string()),
                    "the first bookmark ends the initial events"
                );
                break b.metadata.resource_version;
            }
            other => panic!("unexpected event before the end bookmark: {other:?}"),
        }
    };
    assert_eq!(
        initial,
        ["wl-a", "wl-c"],
        "only the selected objects, once each"
    );
    let listed = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        Some(end_rv),
        listed.metadata.resource_version,
        "the end bookmark names the snapshot's revision"
    );
    cms.create(&PostParams::default(), &labelled("wl-d", "x"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &labelled("wl-e", "y"))
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event ok");
        match ev {
            WatchEvent::Added(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("wl-d"));
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected event: {other:?}"),
        }
    }
    drop(stream);

    // kube-rs' watcher in streaming-list mode: its whole initial state, then a change.
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher::watcher(cms.clone(), config).boxed();
    let mut init = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("watcher events in time")
            .expect("stream open")
            .expect("no watcher error");
        match ev {
            Event::InitApply(o) => init.push(o.metadata.name.unwrap()),
            Event::InitDone => break,
            _ => {}
        }
    }
    init.sort();
    assert_eq!(init, ["wl-a", "wl-b", "wl-c", "wl-d", "wl-e"]);
    cms.create(&PostParams::default(), &cm("wl-f"))
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("watcher events in time")
            .expect("stream open")
            .expect("no watcher error");
        if let Event::Apply(o) = ev {
            assert_eq!(o.metadata.name.as_deref(), Some("wl-f"));
            break;
        }
    }
    drop(events);
    drop((cms, client));
    server.shutdown().await;
}

fn service(name: &str, ip: Option<&str>) -> Service {
    let mut spec = json!({"selector": {"app": name}, "ports": [{"port": 80}]});
    if let Some(ip) = ip {
        spec["clusterIP"] = ip.into();
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn cluster_ip(s: &Service) -> String {
    s.spec.as_ref().unwrap().cluster_ip.clone().unwrap()
}

#[tokio::test]
async fn services_get_unique_immutable_virtual_ips() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let svcs: Api<Service> = Api::namespaced(connect(&server).await, "default");
    let pp = PostParams::default();

    let a = svcs.create(&pp, &service("a", None)).await.unwrap();
    let b = svcs.create(&pp, &service("b", None)).await.unwrap();
    let (ip_a, ip_b) = (cluster_ip(&a), cluster_ip(&b));
    assert!(
        ip_a.starts_with("10.43.") && ip_b.starts_with("10.43."),
        "{ip_a} {ip_b}"
    );
    assert_ne!(ip_a, ip_b);
    let spec = a.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.cluster_ips.as_deref(), Some(&[ip_a.clone()][..]));
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );

    // Asking for a taken IP, one outside the range, or a malformed one: 422.
    for bad in [ip_a.as_str(), "10.99.0.5", "10.43.0.1", "nope"] {
        let e = svcs
            .create(&pp, &service("c", Some(bad)))
            .await
            .unwrap_err();
        assert_eq!(api_code(e), 422, "{bad}");
    }
    // Headless: no IP at all.
    let h = svcs
        .create(&pp, &service("headless", Some("None")))
        .await
        .unwrap();
    assert_eq!(cluster_ip(&h), "None");

    // A replace without the IP keeps it; changing it is refused.
    let mut again = service("a", None);
    again.metadata.resource_version = a.metadata.resource_version.clone();
    let replaced = svcs.replace("a", &pp, &again).await.unwrap();
    assert_eq!(cluster_ip(&replaced), ip_a);
    let mut moved = service("a", Some("10.43.200.200"));
    moved.metadata.resource_version = replaced.metadata.resource_version.clone();
    assert_eq!(
        api_code(svcs.replace("a", &pp, &moved).await.unwrap_err()),
        422
    );

    // Once a Service is gone its IP can be had again.
    svcs.delete("a", &DeleteParams::default()).await.unwrap();
    let c = svcs.create(&pp, &service("c", Some(&ip_a))).await.unwrap();
    assert_eq!(cluster_ip(&c), ip_a);
}
