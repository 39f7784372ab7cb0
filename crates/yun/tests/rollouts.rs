//! A Deployment's ReplicaSets against `yun up` with real pods, through Debian's kubectl 1.20,
//! in the cases where Kubernetes' Deployment controller decides more than "roll forward":
//! - `kubectl scale rs --all --replicas=0` after a few revisions: only the newest ReplicaSet
//!   is brought back to spec.replicas, the old ones stay at 0 with no pods;
//! - `kubectl rollout undo`: the previous template's ReplicaSet is the one restored;
//! - `kubectl scale deploy` during a rollout that cannot finish: the change is shared out
//!   proportionally between the old and the new ReplicaSet (kube's numbers), not all given to
//!   the new, broken one.
//!
//! One `yun up` runs the whole sequence (four rollouts of real pods): ~45–60 s on this 2-core
//! machine under load.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::up::Up;
use serde_json::Value;

const REVISION: &str = "deployment.kubernetes.io/revision";

/// Two pods, one extra during a rollout and none missing (so the shares below are exact).
const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: roll}
spec:
  replicas: 2
  revisionHistoryLimit: 10
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: roll}
  template:
    metadata:
      labels: {app: roll}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sleep, "3600"]
        env: [{name: REV, value: "1"}]
"#;

/// One ReplicaSet as the test sees it.
#[derive(Debug, Clone, PartialEq)]
struct Set {
    revision: i64,
    hash: String,
    replicas: i64,
}

/// The Deployment's ReplicaSets by revision, and its live pods per pod-template-hash.
fn family(up: &Up) -> (Vec<Set>, BTreeMap<String, usize>) {
    let get = |kind: &str| -> Vec<Value> {
        let out = up.ok(&["get", kind, "-l", "app=roll", "-o", "json"]);
        serde_json::from_str::<Value>(&out).unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut sets: Vec<Set> = get("rs")
        .iter()
        .map(|rs| Set {
            revision: rs["metadata"]["annotations"][REVISION]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            hash: rs["metadata"]["labels"]["pod-template-hash"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            replicas: rs["spec"]["replicas"].as_i64().unwrap_or(-1),
        })
        .collect();
    sets.sort_by_key(|s| s.revision);
    let mut pods = BTreeMap::new();
    for p in get("pods") {
        if p["metadata"]["deletionTimestamp"].is_null() {
            let hash = p["metadata"]["labels"]["pod-template-hash"]
                .as_str()
                .unwrap_or_default();
            *pods.entry(hash.to_string()).or_insert(0) += 1;
        }
    }
    (sets, pods)
}

/// Repeat `check` on the family until it passes or `secs` pass.
fn within(
    up: &Up,
    what: &str,
    secs: u64,
    check: impl Fn(&[Set], &BTreeMap<String, usize>) -> bool,
) -> (Vec<Set>, BTreeMap<String, usize>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (sets, pods) = family(up);
        if check(&sets, &pods) {
            return (sets, pods);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: ReplicaSets {sets:?}, pods by hash {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Only `hash` has replicas (`n`) and pods (`n`); every other ReplicaSet is at 0 with none.
fn only(sets: &[Set], pods: &BTreeMap<String, usize>, hash: &str, n: i64) -> bool {
    sets.iter().all(|s| {
        let want = if s.hash == hash { n } else { 0 };
        s.replicas == want && pods.get(&s.hash).copied().unwrap_or(0) as i64 == want
    })
}

fn replicas_of(sets: &[Set], hash: &str) -> i64 {
    sets.iter()
        .find(|s| s.hash == hash)
        .map_or(-1, |s| s.replicas)
}

#[test]
fn deployment_scaling_restores_only_the_newest_and_shares_a_resize_during_a_rollout() {
    let up = Up::start("rollouts");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    let file = up.data.join("roll.yaml");
    std::fs::write(&file, DEPLOYMENT).unwrap();
    up.ok(&["apply", "-f", file.to_str().unwrap()]);
    let rolled = || {
        let out = up.ok(&["rollout", "status", "deployment/roll", "--timeout=40s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
    };
    rolled();
    // Two more revisions: three ReplicaSets, the old two at 0.
    for rev in ["2", "3"] {
        up.ok(&["set", "env", "deployment/roll", &format!("REV={rev}")]);
        rolled();
    }
    let (sets, _) = within(&up, "three revisions", 20, |s, p| {
        s.len() == 3 && s[2].revision == 3 && only(s, p, &s[2].hash, 2)
    });
    let (second, newest) = (sets[1].hash.clone(), sets[2].hash.clone());

    // Every ReplicaSet to 0: the Deployment brings back only the newest one.
    up.ok(&["scale", "rs", "--all", "--replicas=0"]);
    within(
        &up,
        "the newest ReplicaSet back at 2, the old at 0",
        30,
        |s, p| only(s, p, &newest, 2),
    );
    // … and nothing changes a while later (no old ReplicaSet scaled up after the fact).
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        let (s, p) = family(&up);
        assert!(only(&s, &p, &newest, 2), "{s:?} {p:?}");
    }

    // Undo: revision 2's ReplicaSet is restored (as revision 4), the others go to 0.
    up.ok(&["rollout", "undo", "deployment/roll"]);
    rolled();
    within(&up, "revision 2's ReplicaSet restored", 30, |s, p| {
        only(s, p, &second, 2) && s.iter().any(|x| x.hash == second && x.revision == 4)
    });

    // A rollout that cannot finish (the new pods never get ready): with maxSurge 1 and
    // maxUnavailable 0 it stops at 2 old + 1 new.
    let never_ready = r#"{"spec":{"template":{"spec":{"containers":[{"name":"c",
        "readinessProbe":{"exec":{"command":["false"]},"periodSeconds":1}}]}}}}"#;
    up.ok(&["patch", "deployment/roll", "-p", never_ready]);
    let (sets, _) = within(&up, "a stuck rollout at 2 old + 1 new", 30, |s, p| {
        s.len() == 4
            && replicas_of(s, &second) == 2
            && s.iter().any(|x| x.revision == 5 && x.replicas == 1)
            && p.values().sum::<usize>() == 3
    });
    let broken = sets.iter().find(|s| s.revision == 5).unwrap().hash.clone();
    // Scale to 4 (5 pods at most): kube's proportional shares give the old ReplicaSet
    // round(2·5/3) = 3 and the new one round(1·5/3) = 2.
    up.ok(&["scale", "deployment/roll", "--replicas=4"]);
    within(&up, "4 replicas shared 3 old / 2 new", 30, |s, p| {
        replicas_of(s, &second) == 3
            && replicas_of(s, &broken) == 2
            && p.get(&second) == Some(&3)
            && p.get(&broken) == Some(&2)
    });
    // The broken version got no more than its share, also a while later.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        let (s, _) = family(&up);
        assert_eq!(
            (replicas_of(&s, &second), replicas_of(&s, &broken)),
            (3, 2),
            "{s:?}"
        );
    }
    // Down to 1 (2 pods at most): one each.
    up.ok(&["scale", "deployment/roll", "--replicas=1"]);
    within(&up, "1 replica shared 1 old / 1 new", 30, |s, p| {
        replicas_of(s, &second) == 1
            && replicas_of(s, &broken) == 1
            && p.values().sum::<usize>() == 2
    });
    up.ok(&["delete", "deployment/roll", "--wait=false"]);
}
