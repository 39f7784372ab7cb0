//! Defaulting and the namespace lifecycle through kube-rs against an in-process
//! `yun_apiserver` (no controller manager: the `finalize` call the namespace controller makes
//! is made here by hand).

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::{json, Value};

async fn start(dir: &Path) -> (yun_apiserver::Running, Client) {
    let running = yun_apiserver::start(yun_apiserver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("server starts");
    let kc = Kubeconfig::read_from(&running.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    (running, client)
}

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"a": "1"}})).unwrap()
}

#[tokio::test]
async fn a_deleted_namespace_terminates_until_finalized() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = start(dir.path()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(
        created.spec.unwrap().finalizers.unwrap(),
        vec!["kubernetes".to_string()]
    );
    let labels = created.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/metadata.name"], "team");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    cms.create(&PostParams::default(), &cm("settings"))
        .await
        .unwrap();

    // DELETE marks it Terminating and leaves its content to the namespace controller.
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let marked = namespaces.get("team").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.status.unwrap().phase.as_deref(), Some("Terminating"));
    cms.get("settings")
        .await
        .expect("content stays until the controller deletes it");

    // No new content while it terminates: kube's NamespaceLifecycle answer.
    let e = status_of(
        cms.create(&PostParams::default(), &cm("late"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated"
    );
    let causes = e.details.unwrap().causes;
    assert_eq!(causes[0].reason, "NamespaceTerminating");
    assert_eq!(causes[0].message, "namespace team is being terminated");

    // A plain update cannot drop the controller's finalizer; a second DELETE changes nothing.
    let mut edited = namespaces.get("team").await.unwrap();
    edited.spec.as_mut().unwrap().finalizers = Some(vec![]);
    let kept = namespaces
        .replace("team", &PostParams::default(), &edited)
        .await
        .unwrap();
    assert_eq!(kept.spec.unwrap().finalizers.unwrap(), vec!["kubernetes"]);
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    namespaces.get("team").await.unwrap();

    // The finalize subresource removes the finalizer; with none left the namespace goes.
    cms.delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    let body = json!({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "team"}, "spec": {"finalizers": []}});
    namespaces
        .replace_subresource::<Value>("finalize", "team", &PostParams::default(), &body)
        .await
        .unwrap();
    let e = status_of(namespaces.get("team").await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn a_namespace_with_metadata_finalizers_waits_for_them_too() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = start(dir.path()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    namespaces
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    let body = json!({"metadata": {"name": "held"}, "spec": {"finalizers": []}});
    namespaces
        .replace_subresource::<Value>("finalize", "held", &PostParams::default(), &body)
        .await
        .unwrap();
    let mut left = namespaces
        .get("held")
        .await
        .expect("metadata.finalizers hold it");
    assert!(left.spec.unwrap().finalizers.unwrap_or_default().is_empty());
    left.metadata.finalizers = None;
    left.spec = None;
    namespaces
        .replace("held", &PostParams::default(), &left)
        .await
        .unwrap();
    let e = status_of(namespaces.get("held").await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn the_system_namespaces_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = start(dir.path()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let e = status_of(
            namespaces
                .delete(name, &DeleteParams::default())
                .await
                .unwrap_err(),
        );
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{name}");
        assert_eq!(
            e.message,
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
        );
        let live = namespaces.get(name).await.unwrap();
        assert!(live.metadata.deletion_timestamp.is_none());
    }
}

#[tokio::test]
async fn objects_get_kubes_defaults_on_create_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = start(dir.path()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25",
            "ports": [{"containerPort": 80}],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            "livenessProbe": {"httpGet": {"port": 80}}}]}
    }))
    .unwrap();
    let p = pods.create(&PostParams::default(), &pod).await.unwrap();
    let v = serde_json::to_value(&p).unwrap();
    let spec = &v["spec"];
    for (field, want) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("schedulerName", json!("default-scheduler")),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
        ("priority", json!(0)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
    ] {
        assert_eq!(spec[field], want, "spec.{field}");
    }
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "64Mi"})
    );
    let probe = &c["livenessProbe"];
    assert_eq!(
        (
            &probe["timeoutSeconds"],
            &probe["periodSeconds"],
            &probe["successThreshold"],
            &probe["failureThreshold"]
        ),
        (&json!(1), &json!(10), &json!(1), &json!(3))
    );
    assert_eq!(probe["httpGet"]["scheme"], "HTTP");
    assert_eq!(probe["httpGet"]["path"], "/");
    assert_eq!(v["status"]["qosClass"], "Guaranteed");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let manifest = json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    });
    let d: Deployment = serde_json::from_value(manifest.clone()).unwrap();
    let d = deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(
        v["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(v["spec"]["progressDeadlineSeconds"], 600);
    let t = &v["spec"]["template"]["spec"];
    assert_eq!(t["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(t["restartPolicy"], "Always");
    assert!(
        t.get("serviceAccountName").is_none(),
        "only pods get admission's fields"
    );
    // Replacing it with the same manifest (defaults left out) is no change: no new generation.
    let mut again: Deployment = serde_json::from_value(manifest).unwrap();
    again.metadata.resource_version = d.metadata.resource_version.clone();
    let replaced = deployments
        .replace("web", &PostParams::default(), &again)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(1));
    assert_eq!(replaced.spec, d.spec);

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let s: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    .unwrap();
    let s =
        serde_json::to_value(services.create(&PostParams::default(), &s).await.unwrap()).unwrap();
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["sessionAffinity"], "None");
    assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let sec: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    let sec = secrets.create(&PostParams::default(), &sec).await.unwrap();
    assert_eq!(sec.type_.as_deref(), Some("Opaque"));
}
