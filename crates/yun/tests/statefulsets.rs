//! StatefulSets through `yun up` with real containers, driven by kubectl 1.33 (and 1.20 for
//! the reads): pods start in ordinal order with stable names and hostnames, a deleted pod
//! returns under its name, a partitioned rollout updates only the ordinals at or above the
//! partition, `kubectl rollout history/undo` work from ControllerRevisions, scale-down
//! removes the highest ordinal first, and bad specs get kube's 422s.

mod common;

use std::time::{Duration, Instant};

use common::kubectl::{text, Kubectl133};
use common::up::Up;
use serde_json::Value;

const MANIFEST: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sleep, "3600"]
"#;

struct Kubectl {
    k: Kubectl133,
}

/// The test's kubectl 1.33, with the helpers below.
impl std::ops::Deref for Kubectl {
    type Target = Kubectl133;
    fn deref(&self) -> &Kubectl133 {
        &self.k
    }
}

impl Kubectl {
    /// The set's pods by name: (uid, revision label, terminating).
    fn pods(&self) -> Vec<(String, String, String, bool)> {
        let list = self.json(&["get", "pods", "-l", "app=web"]);
        let mut out: Vec<_> = list["items"]
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
                    s("/metadata/labels/controller-revision-hash"),
                    p.pointer("/metadata/deletionTimestamp").is_some(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn wait(&self, what: &str, secs: u64, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s: {:?}",
                self.pods()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn time_at(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[test]
fn statefulset_orders_names_rolls_out_by_partition_and_undoes() {
    let up = Up::start("sts");
    let k = Kubectl {
        k: Kubectl133::new(&up.data.join("kubeconfig"), &up.data),
    };
    let file = up.data.join("sts.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    up.until(&["apply", "-f", file.to_str().unwrap()], 20, |_| true);
    k.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);

    // In order: each pod was created only once the one before it was ready.
    let pods = k.json(&["get", "pods", "-l", "app=web"]);
    let by_name = |n: &str| -> Value {
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no pod {n}: {pods}"))
    };
    for i in 1..3 {
        let prev = by_name(&format!("web-{}", i - 1));
        let ready = prev["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .map(|c| time_at(c, "/lastTransitionTime"))
            .unwrap();
        let created = time_at(&by_name(&format!("web-{i}")), "/metadata/creationTimestamp");
        assert!(
            created >= ready,
            "web-{i} created {created} before web-{} was ready at {ready}",
            i - 1
        );
        let pod = by_name(&format!("web-{i}"));
        assert_eq!(pod["spec"]["hostname"], format!("web-{i}"));
        assert_eq!(pod["spec"]["subdomain"], "web");
        assert_eq!(
            pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            i.to_string()
        );
    }
    assert_eq!(k.ok(&["exec", "web-1", "--", "hostname"]).trim(), "web-1");
    let table = k.ok(&["get", "statefulset", "web"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web") && l.contains("3/3")),
        "{table}"
    );
    // Debian's kubectl 1.20 reads the same set.
    let old = up.ok(&["get", "sts", "web", "-o", "json"]);
    let old: Value = serde_json::from_str(&old).unwrap();
    assert_eq!(old["status"]["readyReplicas"], 3);
    let first_revision = old["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(old["status"]["currentRevision"], first_revision.as_str());

    // A deleted pod comes back under its own name.
    let before = k.pods();
    k.ok(&["delete", "pod", "web-1", "--wait=false"]);
    k.wait("web-1 back", 60, |k| {
        k.pods()
            .iter()
            .any(|p| p.0 == "web-1" && p.1 != before[1].1 && !p.3)
    });
    k.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);

    // A partitioned rollout: only web-2 (ordinal ≥ 2) takes the new template.
    k.ok(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    k.ok(&["set", "env", "statefulset/web", "ROUND=2"]);
    let status = k.ok(&["rollout", "status", "statefulset/web", "--timeout=90s"]);
    assert!(
        status.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{status}"
    );
    let set = k.json(&["get", "sts", "web"]);
    let second_revision = set["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second_revision, first_revision);
    assert_eq!(set["status"]["currentRevision"], first_revision.as_str());
    assert_eq!(set["status"]["updatedReplicas"], 1);
    let pods = k.pods();
    assert_eq!(
        pods.iter().map(|p| p.2.as_str()).collect::<Vec<_>>(),
        vec![
            first_revision.as_str(),
            first_revision.as_str(),
            second_revision.as_str()
        ],
        "{pods:?}"
    );
    let env = k.ok(&["exec", "web-2", "--", "sh", "-c", "echo $ROUND"]);
    assert_eq!(env.trim(), "2");

    // History from ControllerRevisions; undo brings the first template back as revision 3.
    let history = k.ok(&["rollout", "history", "statefulset/web"]);
    let numbers: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, vec!["1", "2"], "{history}");
    let revs = k.ok(&["get", "controllerrevisions"]);
    assert!(revs.contains("statefulset.apps/web"), "{revs}");
    k.ok(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    k.ok(&["rollout", "undo", "statefulset/web"]);
    k.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    let set = k.json(&["get", "sts", "web"]);
    assert_eq!(
        set["status"]["updateRevision"],
        first_revision.as_str(),
        "{set}"
    );
    assert_eq!(
        set["status"]["currentRevision"],
        first_revision.as_str(),
        "{set}"
    );
    assert!(
        set.pointer("/spec/template/spec/containers/0/env")
            .is_none(),
        "{set}"
    );
    k.wait("every pod back at the first revision", 90, |k| {
        k.pods().iter().all(|p| p.2 == first_revision && !p.3) && k.pods().len() == 3
    });
    let history = k.ok(&["rollout", "history", "statefulset/web"]);
    let numbers: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, vec!["2", "3"], "{history}");
    // Debian's kubectl 1.20 reads the same history from the ControllerRevisions.
    let old_history = up.ok(&["rollout", "history", "statefulset/web"]);
    let old_numbers: Vec<&str> = old_history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(old_numbers, vec!["2", "3"], "{old_history}");

    // Scale down: the highest ordinal goes first, one at a time.
    k.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = k.pods();
        let gone_or_going = |n: &str| pods.iter().find(|p| p.0 == n).is_none_or(|p| p.3);
        let present = |n: &str| pods.iter().any(|p| p.0 == n && !p.3);
        assert!(
            !(gone_or_going("web-1") && present("web-2")),
            "web-1 went before web-2: {pods:?}"
        );
        if pods.len() == 1 && pods[0].0 == "web-0" {
            break;
        }
        assert!(Instant::now() < deadline, "scale-down stalled: {pods:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Bad input gets kube's 422s and changes nothing.
    let out = k.run(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"serviceName":"other"}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("updates to statefulset spec for fields other than"),
        "{}",
        text(&out)
    );
    let bad = up.data.join("bad.yaml");
    std::fs::write(
        &bad,
        MANIFEST.replace("replicas: 3", "replicas: -1").replace(
            "name: web}\nspec:\n  serviceName",
            "name: bad}\nspec:\n  serviceName",
        ),
    )
    .unwrap();
    let out = k.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("spec.replicas: Invalid value: -1"),
        "{}",
        text(&out)
    );
    let out = k.run(&["get", "sts", "bad"]);
    assert!(!out.status.success(), "a refused set was stored");

    // Deleting the set takes its pods and revisions with it.
    k.ok(&["delete", "statefulset", "web"]);
    k.wait("pods gone", 60, |k| k.pods().is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !k
        .ok(&["get", "controllerrevisions", "-o", "name"])
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "revisions outlived their set");
        std::thread::sleep(Duration::from_millis(300));
    }
}
