//! What a pod's spec asks of its node, through kubectl 1.20 against `yun up` with real
//! containers: envFrom, Secret volumes in memory, /etc/hosts, OOM kills, log times.

mod common;

use std::time::{Duration, Instant};

use common::up::Up;

/// envFrom through kubectl: ConfigMap and Secret sources with a prefix, env over envFrom, a
/// later source over an earlier one, an optional missing source ignored, and a missing
/// required one keeping the container from starting.
#[test]
fn env_from_fills_the_environment() {
    let up = Up::start("envfrom");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    let manifest = up.data.join("envfrom.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {A: from-cm, B: from-cm, 1bad: x}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm2}
data: {B: from-cm2}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {TOKEN: sekrit}
---
apiVersion: v1
kind: Pod
metadata: {name: envy}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: [sh, -c, 'echo "A=$A B=$B T=$S_TOKEN N=$(env | grep -c 1bad)"']
    envFrom:
    - configMapRef: {name: cm}
    - secretRef: {name: s}
      prefix: S_
    - configMapRef: {name: cm2}
    - configMapRef: {name: absent, optional: true}
    env:
    - {name: A, value: "env-$(B)"}
---
apiVersion: v1
kind: Pod
metadata: {name: needy}
spec:
  containers:
  - name: c
    image: busybox
    command: [sleep, "1000"]
    envFrom:
    - secretRef: {name: nope}
"#,
    )
    .unwrap();
    up.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    up.until(&["logs", "envy"], 60, |o| {
        o == "A=env-from-cm2 B=from-cm2 T=sekrit N=0\n"
    });
    let waiting = up.until(
        &[
            "get",
            "pod",
            "needy",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}:{.status.containerStatuses[0].state.waiting.message}",
        ],
        60,
        |o| o.starts_with("CreateContainerConfigError:"),
    );
    assert!(waiting.contains("secret \"nope\" not found"), "{waiting}");
}

/// A Secret volume is a tmpfs (never on the node's disk) and goes away with its pod;
/// /etc/hosts maps the pod's IP to its hostname (and FQDN with a subdomain) and has its
/// hostAliases.
#[test]
fn secret_volumes_in_memory_and_pod_hosts() {
    let up = Up::start("hosts");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    let manifest = up.data.join("hosts.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {key: sekrit}
---
apiVersion: v1
kind: Pod
metadata: {name: hosty}
spec:
  hostname: h1
  subdomain: sub
  hostAliases:
  - {ip: 10.9.9.9, hostnames: [alias.example]}
  containers:
  - name: c
    image: busybox
    command: [sh, -c, 'cat /etc/hosts; hostname; grep " /sec " /proc/mounts; cat /sec/key; echo; sleep 1000']
    volumeMounts:
    - {name: sec, mountPath: /sec}
  volumes:
  - name: sec
    secret: {secretName: s}
"#,
    )
    .unwrap();
    up.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let logs = up.until(&["logs", "hosty"], 60, |o| o.contains("sekrit"));
    let ip = up.ok(&["get", "pod", "hosty", "-o", "jsonpath={.status.podIP}"]);
    assert!(
        logs.contains(&format!("{ip}\th1.sub.default.svc.cluster.local\th1\n")),
        "{logs}"
    );
    assert!(logs.contains("10.9.9.9\talias.example\n"), "{logs}");
    assert!(!logs.contains("127.0.1.1"), "{logs}");
    assert!(logs.contains("\nh1\n"), "hostname: {logs}");
    assert!(
        logs.contains(" /sec tmpfs "),
        "the secret is on a tmpfs: {logs}"
    );
    // On the host: a tmpfs under the data dir, gone with the pod.
    let data = up.data.to_string_lossy().into_owned();
    let host_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&data) && l.contains("/volumes/sec ") && l.contains(" - tmpfs "))
            .count()
    };
    assert_eq!(host_mounts(), 1);
    up.ok(&["delete", "pod", "hosty", "--grace-period=1"]);
    up.until(&["get", "pods", "--no-headers"], 60, |o| {
        o.trim().is_empty()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while host_mounts() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(host_mounts(), 0, "the secret's tmpfs outlived its pod");
}

/// A container that outgrows its memory limit is reported as OOMKilled, not Error.
#[test]
fn oom_kill_is_reported_as_oomkilled() {
    let up = Up::start("oom");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&[
        "run",
        "hog",
        "--image=busybox",
        "--restart=Never",
        "--limits=memory=16Mi",
        "--",
        "tail",
        "/dev/zero",
    ]);
    let st = up.until(
        &[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason}:{.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        60,
        |o| !o.starts_with(':'),
    );
    assert_eq!(st, "OOMKilled:137");
}

/// kubectl logs --timestamps, --since, --since-time and --limit-bytes: every line keeps the
/// time it was written (the CRI log format).
#[test]
fn logs_keep_their_times() {
    let up = Up::start("logs");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&[
        "run",
        "clock",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo early; sleep 2; echo late >&2; sleep 1000",
    ]);
    up.until(&["logs", "clock"], 60, |o| o == "early\nlate\n");
    let stamped = up.ok(&["logs", "clock", "--timestamps"]);
    let lines: Vec<(&str, &str)> = stamped
        .lines()
        .map(|l| l.split_once(' ').expect("TIME TEXT"))
        .collect();
    assert_eq!(lines.len(), 2, "{stamped}");
    assert_eq!((lines[0].1, lines[1].1), ("early", "late"), "{stamped}");
    for (t, _) in &lines {
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.contains('T'),
            "{stamped}"
        );
    }
    let late = lines[1].0;
    assert_eq!(
        up.ok(&["logs", "clock", &format!("--since-time={late}")]),
        "late\n"
    );
    assert_eq!(up.ok(&["logs", "clock", "--since=1h"]), "early\nlate\n");
    assert_eq!(up.ok(&["logs", "clock", "--limit-bytes=3"]), "ear");
    assert_eq!(
        up.ok(&["logs", "clock", "--tail=1", "--timestamps"]),
        format!("{late} late\n")
    );
}
