//! Server-side apply through kube-rs (`Patch::Apply`) against an in-process `yun_apiserver`:
//! create-on-apply, a no-op re-apply, a conflict with another manager (409 naming the field),
//! force, dry runs on apply and the scale subresource, and the 422s Kubernetes gives a missing
//! `fieldManager`, an unknown `dryRun` value and `force` on a non-apply patch.

use axum::http::Request;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

mod common;
use common::{connect, start};

fn deployment(replicas: i32, labels: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}}
    }))
    .unwrap()
}

fn managers(d: &Deployment) -> Vec<(String, String)> {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// PATCH `path` with a raw body; returns (status code, body).
async fn raw_patch(client: &Client, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let req = Request::patch(path)
        .header("content-type", ct)
        .body(body.as_bytes().to_vec())
        .unwrap();
    match client.request_text(req).await {
        Ok(text) => (200, serde_json::from_str(&text).unwrap()),
        Err(kube::Error::Api(s)) => (s.code, json!({"message": s.message})),
        Err(e) => panic!("request failed: {e}"),
    }
}

#[tokio::test]
async fn kube_rs_server_side_apply() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mine = PatchParams::apply("yun-test");

    // The object does not exist: the applied configuration creates it.
    let d = deployment(2, json!({"app": "web", "tier": "fe"}));
    let created = deploys
        .patch("web", &mine, &Patch::Apply(&d))
        .await
        .unwrap();
    assert_eq!(managers(&created), [("yun-test".into(), "Apply".into())]);
    let entry = &created.metadata.managed_fields.as_ref().unwrap()[0];
    assert_eq!(entry.fields_type.as_deref(), Some("FieldsV1"));
    let fields = serde_json::to_value(&entry.fields_v1).unwrap();
    assert_eq!(fields.pointer("/f:spec/f:replicas"), Some(&json!({})));

    // Applying the same again changes nothing and conflicts with nothing.
    let again = deploys
        .patch("web", &mine, &Patch::Apply(&d))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(managers(&again), managers(&created));

    // Another manager changing replicas conflicts with us, naming the field.
    let other = PatchParams::apply("yun-other");
    let d3 = deployment(3, json!({"app": "web"}));
    let err = deploys
        .patch("web", &other, &Patch::Apply(&d3))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a Status, got {err}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"yun-test\": .spec.replicas"
    );

    // A dry run of the forced apply answers with the result and stores nothing.
    let dry = PatchParams::apply("yun-other").force().dry_run();
    let preview = deploys
        .patch("web", &dry, &Patch::Apply(&d3))
        .await
        .unwrap();
    assert_eq!(preview.spec.as_ref().unwrap().replicas, Some(3));
    let live = deploys.get("web").await.unwrap();
    assert_eq!(live.spec.as_ref().unwrap().replicas, Some(2));

    // Forced, the other manager takes replicas over.
    let forced = deploys
        .patch("web", &other.clone().force(), &Patch::Apply(&d3))
        .await
        .unwrap();
    assert_eq!(forced.spec.as_ref().unwrap().replicas, Some(3));

    // We drop the `tier` label from our configuration: it goes (nobody else owns it).
    let slim = deployment(2, json!({"app": "web"}));
    let slim_json = {
        let mut v = serde_json::to_value(&slim).unwrap();
        v["spec"].as_object_mut().unwrap().remove("replicas");
        v
    };
    let out = deploys
        .patch("web", &mine, &Patch::Apply(&slim_json))
        .await
        .unwrap();
    let labels = out.metadata.labels.unwrap();
    assert!(!labels.contains_key("tier"), "{labels:?}");
    assert_eq!(out.spec.unwrap().replicas, Some(3), "still the other's");

    // A status write records its manager with `subresource: status`, owning only status.
    let st = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();
    let entry = st
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.subresource.as_deref() == Some("status"))
        .expect("a status entry");
    assert_eq!(entry.operation.as_deref(), Some("Update"));
    assert_eq!(
        serde_json::to_value(&entry.fields_v1).unwrap(),
        json!({"f:status": {"f:observedGeneration": {}}})
    );

    // An ordinary write records an Update entry for its manager.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})).unwrap();
    let pp = PostParams {
        field_manager: Some("yun-creator".into()),
        ..Default::default()
    };
    let made = cms.create(&pp, &cm).await.unwrap();
    let e = &made.metadata.managed_fields.unwrap()[0];
    assert_eq!(e.manager.as_deref(), Some("yun-creator"));
    assert_eq!(e.operation.as_deref(), Some("Update"));
}

#[tokio::test]
async fn apply_and_dry_run_refuse_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = connect(&server).await;
    let path = "/api/v1/namespaces/default/configmaps/x";
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#;
    let (code, v) = raw_patch(&client, path, "application/apply-patch+yaml", body).await;
    // Kubernetes answers 422 Invalid on the PatchOptions (ValidatePatchOptions).
    assert_eq!(code, 422);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager: Required value: is required for apply patch"),
        "{v}"
    );
    let bogus = format!("{path}?fieldManager=m&dryRun=Bogus");
    let (code, v) = raw_patch(&client, &bogus, "application/apply-patch+yaml", body).await;
    assert_eq!(code, 422);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("dryRun: Unsupported value: \"Bogus\""),
        "{v}"
    );
    let merge = "/api/v1/namespaces/default/configmaps/x?force=true";
    let (code, _) = raw_patch(&client, merge, "application/merge-patch+json", "{}").await;
    assert_eq!(code, 422, "force is for apply patches only");
    // YAML bodies are accepted too; `managedFields` in an applied configuration are not.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: v}\n";
    let ok = format!("{path}?fieldManager=m");
    let (code, v) = raw_patch(&client, &ok, "application/apply-patch+yaml", yaml).await;
    assert_eq!((code, &v["data"]["k"]), (200, &json!("v")), "{v}");
    let with_mf = r#"{"metadata":{"name":"x","managedFields":[{"manager":"m"}]}}"#;
    let (code, _) = raw_patch(&client, &ok, "application/apply-patch+yaml", with_mf).await;
    assert_eq!(code, 400);

    // So does a DeleteOptions body with another dryRun value (it used to mean a dry run).
    let req = Request::delete(path)
        .header("content-type", "application/json")
        .body(br#"{"dryRun":["Bogus"]}"#.to_vec())
        .unwrap();
    match client.request_text(req).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.starts_with("DeleteOptions.meta.k8s.io"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.get("x").await.expect("still there");

    // The scale subresource honours dryRun.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(
            &PostParams::default(),
            &deployment(1, json!({"app": "web"})),
        )
        .await
        .unwrap();
    let scale = "/apis/apps/v1/namespaces/default/deployments/web/scale?dryRun=All";
    let (code, v) = raw_patch(
        &client,
        scale,
        "application/merge-patch+json",
        r#"{"spec":{"replicas":7}}"#,
    )
    .await;
    assert_eq!((code, &v["spec"]["replicas"]), (200, &json!(7)), "{v}");
    let live = deploys.get("web").await.unwrap();
    assert_eq!(live.spec.unwrap().replicas, Some(1));
}
