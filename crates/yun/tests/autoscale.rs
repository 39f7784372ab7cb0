//! HorizontalPodAutoscaler through `yun up` with kubectl 1.33: `kubectl autoscale` (which
//! writes autoscaling/v2) on a Deployment whose container burns a CPU against a 100m request,
//! the HPA's defaults and kube's 422 on a bad spec, the replicas rising (bounded by max) with
//! `kubectl get hpa` showing the utilization, `describe hpa` and `explain hpa`, a
//! SuccessfulRescale event, and, once the load stops (the template's command becomes `sleep`),
//! the count back to the minimum; and a StatefulSet and a custom resource with a scale
//! subresource brought up to an HPA's minimum.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::kubectl::{self, text, KUBECTL_1_33};
use common::up::Up;

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: busybox
        command: [sh, -c, "while :; do :; done"]
        resources: {requests: {cpu: 100m}}
"#;

/// A custom resource with a scale subresource, and an HPA on it whose minimum is above its
/// count: the HPA resolves the kind through discovery and writes the count through the scale.
const WIDGETS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: yunwidgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: yunwidgets, singular: yunwidget, kind: YunWidget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas,
        labelSelectorPath: .status.selector}
"#;

const WIDGET_HPA: &str = r#"apiVersion: example.com/v1
kind: YunWidget
metadata: {name: w}
spec: {replicas: 1}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: w}
spec:
  scaleTargetRef: {apiVersion: example.com/v1, kind: YunWidget, name: w}
  minReplicas: 2
  maxReplicas: 4
"#;

/// A StatefulSet at 1 under an HPA whose minimum is 2.
const SET_HPA: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox, command: [sleep, "3600"]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: db}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: db}
  minReplicas: 2
  maxReplicas: 3
"#;

fn kubectl(up: &Up, args: &[&str]) -> Output {
    let cache = up.data.join("kubectl-cache-1.33");
    kubectl::run_bin(KUBECTL_1_33, &up.data.join("kubeconfig"), &cache, args)
}

fn ok(up: &Up, args: &[&str]) -> String {
    let out = kubectl(up, args);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Repeat kubectl until its output satisfies `done` (at most `secs`).
fn until(up: &Up, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = kubectl(up, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        if Instant::now() >= deadline {
            let hpa = kubectl(up, &["get", "hpa", "web", "-o", "yaml"]);
            panic!(
                "kubectl {args:?}: never as expected within {secs} s; last: {}\nthe HPA: {}",
                text(&out),
                text(&hpa)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn count(o: &str) -> Option<i64> {
    o.trim().parse().ok()
}

#[test]
fn hpa_scales_a_busy_deployment_up_and_back_down() {
    assert!(
        Path::new(KUBECTL_1_33).exists(),
        "{KUBECTL_1_33} is missing"
    );
    let started = Instant::now();
    let up = Up::start("autoscale");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));

    // A custom resource's scale: brought up to the HPA's minimum.
    let widgets = up.data.join("widgets.yaml");
    std::fs::write(&widgets, WIDGETS).unwrap();
    ok(&up, &["apply", "-f", widgets.to_str().unwrap()]);
    let widget = up.data.join("widget.yaml");
    std::fs::write(&widget, WIDGET_HPA).unwrap();
    until(&up, &["apply", "-f", widget.to_str().unwrap()], 10, |_| {
        true
    });
    let scale = "/apis/example.com/v1/namespaces/default/yunwidgets/w/scale";
    until(&up, &["get", "--raw", scale], 30, |o| {
        o.contains(r#""replicas":2"#)
    });
    let events = until(
        &up,
        &["get", "events", "--field-selector", "involvedObject.name=w"],
        10,
        |o| o.contains("SuccessfulRescale"),
    );
    assert!(
        events.contains("New size: 2; reason: Current number of replicas below Spec.MinReplicas"),
        "{events}"
    );
    // A StatefulSet's scale likewise.
    let set = up.data.join("db.yaml");
    std::fs::write(&set, SET_HPA).unwrap();
    ok(&up, &["apply", "-f", set.to_str().unwrap()]);
    until(
        &up,
        &["get", "sts", "db", "-o", "jsonpath={.spec.replicas}"],
        30,
        |o| count(o) == Some(2),
    );

    let manifest = up.data.join("web.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    ok(&up, &["apply", "-f", manifest.to_str().unwrap()]);

    ok(
        &up,
        &[
            "autoscale",
            "deployment",
            "web",
            "--cpu-percent=50",
            "--min=1",
            "--max=3",
        ],
    );
    let hpa: serde_json::Value =
        serde_json::from_str(&ok(&up, &["get", "hpa", "web", "-o", "json"])).unwrap();
    assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{hpa}");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment", "{hpa}");
    assert_eq!(
        hpa.pointer("/spec/metrics/0/resource/target/averageUtilization"),
        Some(&serde_json::json!(50)),
        "{hpa}"
    );

    // kube's 422 with its field path; nothing changes.
    let bad = kubectl(
        &up,
        &[
            "patch",
            "hpa",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"minReplicas":5}}"#,
        ],
    );
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(
        text(&bad).contains(
            "spec.maxReplicas: Invalid value: 3: must be greater than or equal to `minReplicas`"
        ),
        "{}",
        text(&bad)
    );

    // Scale down as soon as the load is gone (the default waits 5 minutes); the rest of the
    // behavior is filled with kube's defaults.
    ok(
        &up,
        &[
            "patch",
            "hpa",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
        ],
    );
    let behavior = ok(
        &up,
        &["get", "hpa", "web", "-o", "jsonpath={.spec.behavior}"],
    );
    assert!(behavior.contains(r#""periodSeconds":15"#), "{behavior}");
    assert!(behavior.contains(r#""selectPolicy":"Max""#), "{behavior}");

    // One pod burning a CPU is ~1000% of its 100m request: up to the maximum of 3.
    until(
        &up,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        120,
        |o| count(o).is_some_and(|r| r > 1),
    );
    let table = until(&up, &["get", "hpa", "web"], 60, |o| {
        o.contains("Deployment/web") && o.contains("%/50%") && !o.contains("<unknown>")
    });
    eprintln!("get hpa while busy:\n{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["web", "Deployment/web", "cpu:"], "{table}");
    let used: i64 = row[3].split('%').next().unwrap().parse().unwrap();
    assert!(used > 50, "{table}");
    assert_eq!(&row[4..6], ["1", "3"], "{table}");
    let explained = ok(&up, &["explain", "hpa.spec.behavior"]);
    assert!(
        explained.contains("autoscaling") && explained.contains("scaleDown"),
        "{explained}"
    );
    let all = ok(&up, &["get", "all"]);
    assert!(
        all.contains("horizontalpodautoscaler.autoscaling/web"),
        "{all}"
    );
    let events = until(
        &up,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=SuccessfulRescale",
        ],
        30,
        |o| o.contains("New size:"),
    );
    assert!(
        events.contains("reason: cpu resource utilization (percentage of request) above target"),
        "{events}"
    );
    let status = ok(
        &up,
        &["get", "hpa", "web", "-o", "jsonpath={.status.conditions}"],
    );
    assert!(status.contains("ValidMetricFound"), "{status}");
    let described = ok(&up, &["describe", "hpa", "web"]);
    eprintln!("describe hpa:\n{described}");
    for needle in [
        "Deployment/web",
        "AbleToScale",
        "ScalingActive",
        "SuccessfulRescale",
    ] {
        assert!(described.contains(needle), "{needle}: {described}");
    }
    eprintln!("scaled up after {:?}", started.elapsed());

    // The custom resource's HPA by now had its next pass: its status follows the count, and
    // without a selector on the scale no metric can be read.
    let status = until(
        &up,
        &["get", "hpa", "w", "-o", "jsonpath={.status}"],
        30,
        |o| o.contains(r#""currentReplicas":2"#),
    );
    assert!(status.contains("InvalidSelector"), "{status}");

    // Stop the load: the rollout's pods sleep; back to the minimum.
    ok(
        &up,
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sleep","3600"]}]"#,
        ],
    );
    until(
        &up,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        150,
        |o| count(o) == Some(1),
    );
    let table = until(&up, &["get", "hpa", "web"], 30, |o| {
        o.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(6) == Some("1"))
    });
    eprintln!("get hpa once idle:\n{table}");
    let events = ok(
        &up,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=SuccessfulRescale",
        ],
    );
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
    eprintln!("back to 1 after {:?}", started.elapsed());
}
