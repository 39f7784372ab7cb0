//! PriorityClasses and preemption through `yun up` with real containers, driven by kubectl
//! 1.33: the system classes exist, Priority admission resolves a pod's class (or the global
//! default) into its priority and refuses what kube refuses, a pod of higher priority that
//! fits nowhere preempts a lower one (Preempted event, the victim's replacement left
//! Pending), and a class with `preemptionPolicy: Never` waits instead.

mod common;

use std::time::{Duration, Instant};

use common::kubectl::{text, Kubectl133};
use common::up::Up;
use serde_json::Value;

const CLASSES: &str = r#"apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: yun-low}
value: 100
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: yun-high}
value: 1000
description: preempts
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: yun-polite}
value: 1000
preemptionPolicy: Never
"#;

/// Two pods of 800m on the node's 2 CPUs: 400m left. They ignore SIGTERM, so a victim
/// terminates for its whole grace period (8 s): long enough to see it doing so.
const FILLER: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: filler}
spec:
  replicas: 2
  selector: {matchLabels: {app: filler}}
  template:
    metadata: {labels: {app: filler}}
    spec:
      priorityClassName: yun-low
      terminationGracePeriodSeconds: 8
      containers:
      - {name: c, image: busybox, command: [sh, -c, "trap '' TERM; sleep 3600"], resources: {requests: {cpu: 800m}}}
"#;

fn pod(name: &str, class: &str, cpu: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  priorityClassName: {class}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: busybox, command: [sleep, \"3600\"], resources: {{requests: {{cpu: {cpu}}}}}}}\n"
    )
}

struct K<'a> {
    up: &'a Up,
    k: Kubectl133,
}

/// The test's kubectl 1.33, with the helpers below.
impl std::ops::Deref for K<'_> {
    type Target = Kubectl133;
    fn deref(&self) -> &Kubectl133 {
        &self.k
    }
}

impl K<'_> {
    /// `kubectl apply` of `yaml`: its output and whether it succeeded.
    fn apply(&self, yaml: &str) -> (bool, String) {
        let file = self.up.data.join("apply.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = self.run(&["apply", "-f", file.to_str().unwrap()]);
        (out.status.success(), text(&out))
    }

    /// The filler pods: (name, uid, phase, terminating).
    fn fillers(&self) -> Vec<(String, String, String, bool)> {
        let list = self.json(&["get", "pods", "-l", "app=filler"]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let s = |ptr: &str| {
                    p.pointer(ptr)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                (
                    s("/metadata/name"),
                    s("/metadata/uid"),
                    s("/status/phase"),
                    p.pointer("/metadata/deletionTimestamp").is_some(),
                )
            })
            .collect()
    }

    fn wait(&self, what: &str, secs: u64, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s: {:?}",
                self.fillers()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn a_higher_priority_pod_preempts_and_admission_resolves_classes() {
    let up = Up::start("prio");
    let k = K {
        up: &up,
        k: Kubectl133::new(&up.data.join("kubeconfig"), &up.data),
    };
    up.until(&["get", "priorityclasses"], 20, |out| {
        out.contains("system-node-critical") && out.contains("system-cluster-critical")
    });
    let (ok, out) = k.apply(CLASSES);
    assert!(ok, "{out}");
    let table = k.ok(&["get", "priorityclass", "yun-polite"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2]),
        ("yun-polite", "1000", "false"),
        "{table}"
    );
    assert_eq!(row.last(), Some(&"Never"), "{table}");

    let (ok, out) = k.apply(FILLER);
    assert!(ok, "{out}");
    k.wait("two fillers running", 60, |k| {
        let f = k.fillers();
        f.len() == 2 && f.iter().all(|p| p.2 == "Running")
    });
    let before = k.fillers();
    let spec = k.json(&["get", "pod", &before[0].0]);
    assert_eq!(spec["spec"]["priority"], 100);
    assert_eq!(spec["spec"]["preemptionPolicy"], "PreemptLowerPriority");

    // Polite: as important, but may not preempt: it waits, and nothing is evicted.
    let (ok, out) = k.apply(&pod("polite", "yun-polite", "1"));
    assert!(ok, "{out}");
    let polite = k.json(&["get", "pod", "polite"]);
    assert_eq!(polite["spec"]["priority"], 1000);
    assert_eq!(polite["spec"]["preemptionPolicy"], "Never");
    up.until(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=polite",
        ],
        30,
        |out| out.contains("FailedScheduling"),
    );
    assert_eq!(
        k.fillers(),
        before,
        "a pod with preemptionPolicy Never evicted something"
    );
    k.ok(&["delete", "pod", "polite", "--wait=false"]);

    // Urgent preempts one filler (not both): the victim is marked DisruptionTarget and
    // deleted, urgent waits nominated until it is gone, then runs; the filler's replacement
    // waits. A watch records every version of the pods, in order.
    let watch_file = up.data.join("pods.watch");
    let mut watch = std::process::Command::new(common::kubectl::KUBECTL_1_33)
        .arg("--kubeconfig")
        .arg(up.data.join("kubeconfig"))
        .args(["get", "pods", "-w", "--output-watch-events", "-o", "json"])
        .stdout(std::fs::File::create(&watch_file).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out) = k.apply(&pod("urgent", "yun-high", "1"));
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let phase = k.ok(&["get", "pod", "urgent", "-o", "jsonpath={.status.phase}"]);
        if phase == "Running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "urgent never ran: {phase}; {:?}",
            k.fillers()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let watched = std::fs::read_to_string(&watch_file).unwrap();
    let events: Vec<Value> = serde_json::Deserializer::from_str(&watched)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect();
    let victim = before
        .iter()
        .find(|b| {
            events
                .iter()
                .any(|e| e["type"] == "DELETED" && e["object"]["metadata"]["uid"] == b.1.as_str())
        })
        .unwrap_or_else(|| panic!("no filler was deleted: {watched}"));
    let marked = events.iter().any(|e| {
        e["object"]["metadata"]["uid"] == victim.1.as_str()
            && e["object"]["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == "DisruptionTarget" && c["reason"] == "PreemptionByScheduler"
                    })
                })
    });
    assert!(
        marked,
        "the victim was never marked DisruptionTarget: {watched}"
    );
    let position = |f: &dyn Fn(&Value) -> bool| events.iter().position(f);
    let gone = position(&|e| {
        e["type"] == "DELETED" && e["object"]["metadata"]["uid"] == victim.1.as_str()
    })
    .unwrap();
    let bound = position(&|e| {
        e["object"]["metadata"]["name"] == "urgent" && e["object"]["spec"]["nodeName"].is_string()
    })
    .unwrap();
    assert!(bound > gone, "urgent was bound before its victim was gone");
    let nominated = events.iter().any(|e| {
        e["object"]["metadata"]["name"] == "urgent"
            && e["object"]["status"]["nominatedNodeName"] == "node-1"
    });
    assert!(nominated, "urgent was never nominated");
    let urgent_uid = k.ok(&["get", "pod", "urgent", "-o", "jsonpath={.metadata.uid}"]);
    let survivors: Vec<_> = k
        .fillers()
        .into_iter()
        .filter(|p| before.iter().any(|b| b.1 == p.1))
        .collect();
    assert_eq!(
        survivors.len(),
        1,
        "exactly one filler preempted: {:?}",
        k.fillers()
    );
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={},reason=Preempted", victim.0),
    ]);
    assert!(
        events.contains(&format!("Preempted by pod {urgent_uid} on node node-1")),
        "{events}"
    );
    k.wait("the replacement filler waiting", 30, |k| {
        let f = k.fillers();
        f.len() == 2 && f.iter().filter(|p| p.2 == "Pending" && !p.3).count() == 1
    });
    let pending = k.fillers().into_iter().find(|p| p.2 == "Pending").unwrap();
    up.until(
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={}", pending.0),
        ],
        30,
        |out| out.contains("Insufficient cpu"),
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "urgent",
            "-o",
            "jsonpath={.status.nominatedNodeName}"
        ]),
        "node-1"
    );

    // Admission refuses what kube refuses, and changes nothing.
    let (ok, out) = k.apply(&pod("lost", "nope", "10m"));
    assert!(
        !ok && out.contains("no PriorityClass with name nope was found"),
        "{out}"
    );
    let (ok, out) = k.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: sneaky}\nspec:\n  priority: 5\n  containers: [{name: c, image: busybox}]\n");
    assert!(!ok && out.contains("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 0"), "{out}");
    let (ok, out) = k.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: huge}\nvalue: 2000000000\n");
    assert!(
        !ok && out.contains("maximum allowed value of a user defined priority is 1000000000"),
        "{out}"
    );
    let (ok, out) = k.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: system-mine}\nvalue: 1\n");
    assert!(!ok && out.contains("reserved for system use only"), "{out}");
    let out = k.run(&["patch", "priorityclass", "yun-low", "-p", r#"{"value": 5}"#]);
    assert!(
        !out.status.success() && text(&out).contains("may not be changed in an update"),
        "{}",
        text(&out)
    );
    for name in ["lost", "sneaky"] {
        assert!(
            !k.run(&["get", "pod", name]).status.success(),
            "{name} was stored"
        );
    }

    // A global default class gives pods without a class its priority; only one may exist.
    let (ok, out) = k.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: yun-everyday}\nvalue: 50\nglobalDefault: true\n");
    assert!(ok, "{out}");
    let (ok, out) = k.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: yun-other}\nvalue: 60\nglobalDefault: true\n");
    assert!(
        !ok && out.contains(
            "PriorityClass yun-everyday is already marked as default. Only one default can exist"
        ),
        "{out}"
    );
    let (ok, out) = k.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{name: c, image: busybox, command: [sleep, \"3600\"]}]\n");
    assert!(ok, "{out}");
    let plain = k.json(&["get", "pod", "plain"]);
    assert_eq!(plain["spec"]["priority"], 50);
    assert_eq!(plain["spec"]["priorityClassName"], "yun-everyday");
}
