//! The events the scheduler and the node agent post about pods, with the kube-scheduler's and
//! the kubelet's reasons and wording, as kubectl 1.20 shows them (`describe pod`, `get
//! events`) against `yun up` with real containers. One `yun up` runs every case at once, so
//! the test stays well under a minute.

mod common;

use std::time::{Duration, Instant};

use common::up::Up;
use serde_json::Value;

const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: runner}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: web, image: busybox, command: [sleep, "1000"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - {name: boom, image: busybox, command: [sh, -c, "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: sick}
spec:
  containers:
  - name: app
    image: busybox
    command: [sleep, "1000"]
    livenessProbe:
      exec: {command: [cat, /tmp/yun-no-such-file]}
      periodSeconds: 1
      failureThreshold: 2
    readinessProbe:
      exec: {command: [sh, -c, "echo not ready yet; exit 1"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: nosecret}
spec:
  containers:
  - {name: app, image: busybox, command: [sleep, "1000"], volumeMounts: [{name: creds, mountPath: /creds}]}
  volumes:
  - {name: creds, secret: {secretName: yun-missing}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: oddkeys}
data: {GOOD: "1", 1bad: x}
---
apiVersion: v1
kind: Pod
metadata: {name: badenv}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: busybox
    command: [sleep, "1000"]
    envFrom: [{configMapRef: {name: oddkeys}}]
"#;

/// One row of `kubectl describe pod`'s Events table: type, reason, from, message.
#[derive(Debug)]
struct Row {
    type_: String,
    reason: String,
    from: String,
    message: String,
}

/// The Events table of `kubectl describe pod NAME`.
fn described(up: &Up, pod: &str) -> Vec<Row> {
    let out = up.ok(&["describe", "pod", pod]);
    let Some((_, table)) = out.split_once("\nEvents:") else {
        panic!("no Events in describe of {pod}:\n{out}");
    };
    table
        .lines()
        .filter_map(|line| {
            // Columns are separated by two spaces or more; the age may hold single spaces.
            let cols: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            match cols.as_slice() {
                [t, reason, _age, from, message @ ..] if *t == "Normal" || *t == "Warning" => {
                    Some(Row {
                        type_: t.to_string(),
                        reason: reason.to_string(),
                        from: from.to_string(),
                        message: message.join("  "),
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// The Event objects about pod `pod` (any incarnation), as JSON.
fn events_of(up: &Up, pod: &str) -> Vec<Value> {
    let out = up.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn with_reason<'a>(events: &'a [Value], reason: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["reason"] == reason).collect()
}

/// Wait up to `secs` for the pod's events to satisfy `done`; the last list either way.
fn wait_events(up: &Up, pod: &str, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let events = events_of(up, pod);
        if done(&events) || Instant::now() >= deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn pods_get_the_kubelets_and_the_schedulers_events() {
    let up = Up::start("events");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    let manifest = up.data.join("events.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    up.ok(&["apply", "-f", manifest.to_str().unwrap()]);

    // A running pod: Scheduled, Pulled (the image is here), Created, Started, each once, in
    // that order, from the scheduler and then the kubelet on node-1.
    up.until(&["get", "pod", "runner"], 30, |o| o.contains("Running"));
    let events = wait_events(&up, "runner", 10, |e| !with_reason(e, "Started").is_empty());
    let rows = described(&up, "runner");
    let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["Scheduled", "Pulled", "Created", "Started"],
        "{rows:#?}"
    );
    assert!(rows.iter().all(|r| r.type_ == "Normal"), "{rows:#?}");
    assert_eq!(rows[0].from, "default-scheduler");
    assert_eq!(
        rows[0].message,
        "Successfully assigned default/runner to node-1"
    );
    assert!(
        rows[1..].iter().all(|r| r.from.starts_with("kubelet")),
        "{rows:#?}"
    );
    assert_eq!(
        rows[1].message,
        "Container image \"busybox\" already present on machine"
    );
    assert_eq!(rows[2].message, "Created container web");
    assert_eq!(rows[3].message, "Started container web");
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        let once = with_reason(&events, reason);
        assert!(
            once.len() == 1 && once[0]["count"] == 1,
            "{reason}: {events:#?}"
        );
    }
    let started = with_reason(&events, "Started")[0];
    assert_eq!(
        started["involvedObject"]["fieldPath"],
        "spec.containers{web}"
    );
    assert_eq!(started["source"]["component"], "kubelet");
    assert_eq!(started["source"]["host"], "node-1");
    assert_eq!(started["reportingComponent"], "kubelet");
    let scheduled = with_reason(&events, "Scheduled")[0];
    assert_eq!(scheduled["source"]["component"], "default-scheduler");
    assert!(scheduled["involvedObject"]["fieldPath"].is_null());

    // A volume whose Secret does not exist: FailedMount on the pod.
    let events = wait_events(&up, "nosecret", 20, |e| {
        !with_reason(e, "FailedMount").is_empty()
    });
    let failed = with_reason(&events, "FailedMount");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["type"], "Warning");
    assert_eq!(
        failed[0]["message"],
        "MountVolume.SetUp failed for volume \"creds\" : secret \"yun-missing\" not found"
    );

    // envFrom with a key that is no variable name: the pod runs, with a warning.
    let events = wait_events(&up, "badenv", 20, |e| {
        !with_reason(e, "InvalidEnvironmentVariableNames").is_empty()
    });
    let invalid = with_reason(&events, "InvalidEnvironmentVariableNames");
    assert_eq!(invalid.len(), 1, "{events:#?}");
    assert_eq!(invalid[0]["type"], "Warning");
    assert!(
        invalid[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[1bad]") && m.contains("oddkeys")),
        "{invalid:#?}"
    );

    // Failing probes: Unhealthy with the probe's output, and a Killing for the liveness
    // restart.
    let events = wait_events(&up, "sick", 20, |e| {
        let unhealthy = with_reason(e, "Unhealthy");
        let has = |p: &str| {
            unhealthy
                .iter()
                .any(|u| u["message"].as_str().is_some_and(|m| m.starts_with(p)))
        };
        has("Liveness probe failed: ")
            && has("Readiness probe failed: ")
            && !with_reason(e, "Killing").is_empty()
    });
    let unhealthy = with_reason(&events, "Unhealthy");
    let messages: Vec<&str> = unhealthy
        .iter()
        .filter_map(|u| u["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Liveness probe failed: ") && m.contains("yun-no-such-file")),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"Readiness probe failed: not ready yet"),
        "{messages:?}"
    );
    assert!(unhealthy
        .iter()
        .all(|u| u["type"] == "Warning"
            && u["involvedObject"]["fieldPath"] == "spec.containers{app}"));
    let killing = with_reason(&events, "Killing");
    assert_eq!(
        killing[0]["message"],
        "Container app failed liveness probe, will be restarted"
    );

    // A crashing container: BackOff, one Event whose count grows with each restart.
    let events = wait_events(&up, "crasher", 40, |e| {
        with_reason(e, "BackOff")
            .iter()
            .any(|b| b["count"].as_i64().unwrap_or(0) >= 2)
    });
    let backoff = with_reason(&events, "BackOff");
    assert_eq!(backoff.len(), 1, "one BackOff Event: {events:#?}");
    assert!(
        backoff[0]["count"].as_i64().unwrap_or(0) >= 2,
        "{backoff:#?}"
    );
    assert_eq!(backoff[0]["type"], "Warning");
    let uid = up.ok(&["get", "pod", "crasher", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(
        backoff[0]["message"].as_str().unwrap(),
        format!("Back-off restarting failed container boom in pod crasher_default({uid})")
    );
    let rows = described(&up, "crasher");
    assert!(
        rows.iter().any(|r| r.reason == "BackOff"
            && r.type_ == "Warning"
            && r.from.starts_with("kubelet")),
        "{rows:#?}"
    );
    // Every restart started the container again: Started counts the attempts.
    let started = with_reason(&events, "Started");
    assert_eq!(started.len(), 1, "{events:#?}");
    assert!(started[0]["count"].as_i64().unwrap_or(0) >= 2);

    // A deleted pod's containers are stopped with Killing.
    up.ok(&["delete", "pod", "runner", "--wait=true"]);
    let events = wait_events(&up, "runner", 10, |e| !with_reason(e, "Killing").is_empty());
    let killing = with_reason(&events, "Killing");
    assert_eq!(killing.len(), 1, "{events:#?}");
    assert_eq!(killing[0]["message"], "Stopping container web");
    assert_eq!(killing[0]["type"], "Normal");
    assert_eq!(
        killing[0]["involvedObject"]["fieldPath"],
        "spec.containers{web}"
    );
}
