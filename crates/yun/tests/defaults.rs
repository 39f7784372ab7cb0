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

/// LimitRange (kubectl 1.33, `yun server`): the item's own defaults, a pod's missing requests
/// and limits filled at admission with kube's annotation and QoS class, a pod over the max
/// refused with kube's 403 message, an invalid range refused with the field named.
#[test]
fn limit_ranges_default_and_bound_pods_at_admission() {
    use common::kubectl::{run_bin, text, KUBECTL_1_33};
    let plane = common::plane::Plane::server("limitrange");
    let cache = plane.data.join("kubectl-cache");
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        if let Some(body) = stdin {
            let file = plane.data.join("stdin.yaml");
            std::fs::write(&file, body).unwrap();
            let mut a = args.to_vec();
            a.extend(["-f", file.to_str().unwrap()]);
            return run_bin(KUBECTL_1_33, &plane.kubeconfig(), &cache, &a);
        }
        run_bin(KUBECTL_1_33, &plane.kubeconfig(), &cache, args)
    };
    let ok = |args: &[&str], stdin: Option<&str>| {
        let out = kubectl(args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["create", "namespace", "lr"], None);
    ok(
        &["apply", "-n", "lr"],
        Some(
            "apiVersion: v1\nkind: LimitRange\nmetadata: {name: sizes}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 128Mi}\n    defaultRequest: {cpu: 100m}\n    max: {cpu: \"1\", memory: 256Mi}\n",
        ),
    );
    let range: Value = serde_json::from_str(&ok(
        &["get", "limits", "sizes", "-n", "lr", "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(
        range["spec"]["limits"][0]["defaultRequest"],
        json!({"cpu": "100m", "memory": "128Mi"}),
        "the default request of memory is the default limit"
    );
    let table = ok(&["get", "limitranges", "-n", "lr"], None);
    assert!(table.starts_with("NAME    CREATED AT"), "{table}");

    let pod = |name: &str, resources: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {resources}\n")
    };
    let admitted: Value = serde_json::from_str(&ok(
        &["create", "-n", "lr", "--dry-run=server", "-o", "json"],
        Some(&pod("plain", "{}")),
    ))
    .unwrap();
    assert_eq!(
        admitted["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m", "memory": "128Mi"},
               "limits": {"cpu": "500m", "memory": "128Mi"}})
    );
    assert_eq!(
        admitted["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    assert_eq!(admitted["status"]["qosClass"], "Burstable");

    let out = kubectl(
        &["create", "-n", "lr", "--dry-run=server"],
        Some(&pod("big", "{limits: {cpu: \"2\"}}")),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            r#"pods "big" is forbidden: [maximum cpu usage per Container is 1, but limit is 2"#
        ),
        "{}",
        text(&out)
    );

    let out = kubectl(
        &["apply", "-n", "lr"],
        Some("apiVersion: v1\nkind: LimitRange\nmetadata: {name: bad}\nspec:\n  limits:\n  - type: Container\n    min: {cpu: \"2\"}\n    max: {cpu: \"1\"}\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            r#"spec.limits[0].min[cpu]: Invalid value: "2": min value 2 is greater than max value 1"#
        ),
        "{}",
        text(&out)
    );
}
