//! API defaulting as kubectl users see it, against `yun up` with real containers: the fields
//! kube-apiserver fills read the same in `get -o yaml` (kubectl 1.20 and 1.33), `describe`
//! shows the QoS class, and a rollout of a defaulted Deployment completes without looping.

mod common;

use std::path::Path;
use std::process::Command;

use common::up::Up;
use serde_json::{json, Value};

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sleep, "1000"]
        ports: [{containerPort: 8080}]
        livenessProbe: {exec: {command: ["true"]}, timeoutSeconds: 20}
---
apiVersion: v1
kind: Pod
metadata: {name: sized}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sleep, "1000"]
    resources: {limits: {cpu: 100m, memory: 32Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

fn kubectl_133(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(KUBECTL_133)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl 1.33");
    assert!(
        out.status.success(),
        "kubectl 1.33 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("kubectl printed YAML")
}

/// The pod-spec defaults every pod template gets.
fn assert_template_defaults(spec: &Value) {
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["securityContext"], json!({}));
    let c = &spec["containers"][0];
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["resources"], json!({}));
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    let probe = &c["livenessProbe"];
    for (k, v) in [
        ("timeoutSeconds", 20),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        assert_eq!(probe[k], v, "livenessProbe.{k}");
    }
}

#[test]
fn kubectl_reads_kubes_defaults_and_rollouts_settle() {
    let up = Up::start("defaults");
    let kubeconfig = up.data.join("kubeconfig");
    let file = up.data.join("manifest.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    up.until(&["apply", "-f", file.to_str().unwrap()], 20, |_| true);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    for deployment in [
        yaml(&up.ok(&["get", "deployment", "web", "-o", "yaml"])),
        yaml(&kubectl_133(
            &kubeconfig,
            &["get", "deployment", "web", "-o", "yaml"],
        )),
    ] {
        let spec = &deployment["spec"];
        assert_eq!(spec["strategy"]["type"], "RollingUpdate");
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_template_defaults(&spec["template"]["spec"]);
    }

    let pods = yaml(&up.ok(&["get", "pods", "-l", "app=web", "-o", "yaml"]));
    let pod = &pods["items"][0];
    assert_template_defaults(&pod["spec"]);
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["spec"]["enableServiceLinks"], true);
    assert_eq!(pod["spec"]["priority"], 0);
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    let name = pod["metadata"]["name"].as_str().unwrap();
    let described = up.ok(&["describe", "pod", name]);
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("QoS Class:") && l.ends_with("BestEffort")),
        "{described}"
    );

    up.until(&["get", "pod", "sized"], 60, |out| out.contains("Running"));
    let sized = yaml(&kubectl_133(
        &kubeconfig,
        &["get", "pod", "sized", "-o", "yaml"],
    ));
    assert_eq!(sized["status"]["qosClass"], "Guaranteed", "{sized:?}");
    assert_eq!(
        sized["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "100m", "memory": "32Mi"})
    );
    for described in [
        up.ok(&["describe", "pod", "sized"]),
        kubectl_133(&kubeconfig, &["describe", "pod", "sized"]),
    ] {
        assert!(
            described
                .lines()
                .any(|l| l.starts_with("QoS Class:") && l.ends_with("Guaranteed")),
            "{described}"
        );
    }

    let svc = yaml(&up.ok(&["get", "service", "web", "-o", "yaml"]));
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");

    // A rollout of the defaulted Deployment: one new ReplicaSet, no more, and it completes.
    up.ok(&["set", "env", "deployment/web", "ROUND=2"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let d = yaml(&up.ok(&["get", "deployment", "web", "-o", "yaml"]));
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(d["status"]["observedGeneration"], 2);
    let sets = yaml(&up.ok(&["get", "rs", "-l", "app=web", "-o", "yaml"]));
    let sets = sets["items"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{sets:?}");
    let replicas: Vec<i64> = sets
        .iter()
        .map(|rs| rs["spec"]["replicas"].as_i64().unwrap())
        .collect();
    assert!(
        replicas.contains(&2) && replicas.contains(&0),
        "{replicas:?}"
    );
    // Undoing it takes the first ReplicaSet's (defaulted) template back into the Deployment:
    // it hashes the same, so that ReplicaSet is reused rather than a third one made.
    up.ok(&["rollout", "undo", "deployment/web"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let sets = yaml(&up.ok(&["get", "rs", "-l", "app=web", "-o", "yaml"]));
    assert_eq!(sets["items"].as_array().unwrap().len(), 2, "{sets:?}");
}
