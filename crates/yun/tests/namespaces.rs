//! Namespace finalization as on Kubernetes, through kubectl 1.20 against `yun up` with real
//! containers: `kubectl delete ns` marks the namespace Terminating and waits while the
//! namespace controller deletes its content (a Deployment with running pods, which get their
//! grace period, a ConfigMap, custom resources), refuses new content meanwhile, reports what
//! is left in the namespace's conditions, and the namespace is gone once the last finalizer
//! of its content is removed.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::up::Up;
use serde_json::Value;

const NS: &str = "yun-ending";

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.yun.test}
spec:
  group: yun.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

/// `sleep` as PID 1 ignores SIGTERM, so each pod takes its whole grace period to end.
const CONTENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 4
      containers:
      - {name: c, image: busybox, command: [sleep, "1000"]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: yun.test/v1
kind: Widget
metadata: {name: plain}
---
apiVersion: yun.test/v1
kind: Widget
metadata: {name: kept, finalizers: [yun.test/keep]}
"#;

fn json(up: &Up, args: &[&str]) -> Value {
    serde_json::from_str(&up.ok(args)).unwrap()
}

fn condition<'a>(ns: &'a Value, ty: &str) -> Option<&'a Value> {
    ns["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

#[test]
fn a_deleted_namespace_terminates_through_the_controller() {
    let up = Up::start("nsend");
    let crd = up.data.join("crd.yaml");
    std::fs::write(&crd, CRD).unwrap();
    up.ok(&["apply", "-f", crd.to_str().unwrap()]);
    up.ok(&["create", "namespace", NS]);
    let content = up.data.join("content.yaml");
    std::fs::write(&content, CONTENT).unwrap();
    up.until(
        &["apply", "-n", NS, "-f", content.to_str().unwrap()],
        20,
        |_| true,
    );
    up.ok(&[
        "rollout",
        "status",
        "-n",
        NS,
        "deployment/web",
        "--timeout=60s",
    ]);

    // `kubectl delete ns` waits until the namespace is gone.
    let kubeconfig = up.data.join("kubeconfig");
    let mut delete = std::process::Command::new(common::kubectl::KUBECTL)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["delete", "namespace", NS])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let delete = Reap(&mut delete);

    up.until(&["get", "namespace", NS], 10, |out| {
        out.contains("Terminating")
    });
    let refused = up.kubectl(&["create", "configmap", "late", "-n", NS]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains(&format!(
            "configmaps \"late\" is forbidden: unable to create new content in namespace {NS} because it is being terminated"
        )),
        "{err}"
    );

    // The pods end through their node agent, each with its grace period.
    let mut terminating_since: Option<Instant> = None;
    let mut graced = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = json(&up, &["get", "pods", "-n", NS, "-o", "json"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for p in &items {
            if p["metadata"]["deletionTimestamp"].is_string() {
                assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 4, "{p}");
                let since = *terminating_since.get_or_insert_with(Instant::now);
                graced |= since.elapsed() >= Duration::from_secs(2);
            }
        }
        assert!(Instant::now() < deadline, "pods never ended: {pods}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        graced,
        "the pods were never seen terminating for 2 s of their 4 s grace"
    );

    // What is left is the custom resource whose finalizer nobody removes; the namespace
    // stays Terminating and says so.
    let ns = up.until(&["get", "namespace", NS, "-o", "json"], 20, |out| {
        let v: Value = serde_json::from_str(out).unwrap_or(Value::Null);
        condition(&v, "NamespaceFinalizersRemaining").is_some_and(|c| c["status"] == "True")
            && condition(&v, "NamespaceContentRemaining").is_some_and(|c| {
                c["message"]
                    == "Some resources are remaining: widgets.yun.test has 1 resource instances"
            })
    });
    let ns: Value = serde_json::from_str(&ns).unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining").unwrap()["message"],
        "Some content in the namespace has finalizers remaining: yun.test/keep in 1 resource instances"
    );
    for kind in ["deployments", "replicasets", "configmaps"] {
        let left = json(&up, &["get", kind, "-n", NS, "-o", "json"]);
        assert_eq!(left["items"], Value::Array(vec![]), "{kind} left: {left}");
    }
    let widgets = json(&up, &["get", "widgets", "-n", NS, "-o", "json"]);
    let names: Vec<&str> = widgets["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["kept"]);
    assert!(
        delete.0.try_wait().unwrap().is_none(),
        "kubectl delete returned while the namespace was still there"
    );

    // Its finalizer removed, the widget goes, then the namespace, and kubectl returns.
    up.ok(&[
        "patch",
        "widget",
        "kept",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = delete.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl delete namespace never returned"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success());
    let gone = up.kubectl(&["get", "namespace", NS]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
}
