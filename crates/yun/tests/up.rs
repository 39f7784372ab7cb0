//! `yun up` driven by Debian's kubectl 1.20, with real containers: a Deployment rolls out,
//! serves HTTP on its pod IPs, scales, rolls to a new template and back, and goes away; bad
//! pods report why.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kubectl::KUBECTL;
use common::up::{http_get, Up};

#[test]
fn kubectl_runs_a_deployment_on_yun_up() {
    assert!(
        Path::new(KUBECTL).exists(),
        "run scripts/deps.sh: Debian's kubectl is missing"
    );
    let mut up = Up::start("deploy");
    up.until(&["get", "nodes"], 30, |o| {
        o.contains("node-1") && o.contains(" Ready")
    });

    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/web.yaml");
    let out = up.ok(&["apply", "-f", manifest]);
    assert!(
        out.contains("deployment.apps/web created") && out.contains("service/web created"),
        "{out}"
    );
    let status = up.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    // Each pod serves HTTP on its own IP; the Service's endpoints list them.
    let ips = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    for ip in &ips {
        let body = http_get(ip, 8080);
        assert!(body.contains("hello from web-"), "{body}");
    }
    let endpoints = up.until(
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        30,
        |o| o.split_whitespace().count() == 2,
    );
    for ip in &ips {
        assert!(endpoints.contains(ip), "{endpoints}");
    }

    // The Service's virtual IP answers from the host (nftables DNAT on the node).
    let vip = up.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(vip.starts_with("10.43."), "{vip}");
    let body = http_get(&vip, 80);
    assert!(body.contains("hello from web-"), "{body}");

    // A pod answers another pod over the bridge, by pod IP and through the Service.
    let script = format!(
        "wget -q -O- http://{}:8080/ && wget -q -O- http://{vip}/",
        ips[1]
    );
    up.ok(&[
        "run",
        "client",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    up.until(&["logs", "client"], 60, |o| {
        o.matches("hello from web-").count() == 2
    });
    up.ok(&["delete", "pod", "client"]);

    // A container killed on the host comes back (restartCount 1); a deleted pod is replaced.
    let victim = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let id = up.ok(&[
        "get",
        "pod",
        &victim,
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    let id = id.trim_start_matches("yun://");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(up.data.join("runtime").join(id).join("state.json")).unwrap(),
    )
    .unwrap();
    let pid = state["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    up.until(
        &[
            "get",
            "pod",
            &victim,
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        60,
        |o| o == "1",
    );
    up.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    up.ok(&["delete", "pod", &victim]);
    up.until(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        60,
        |o| o.split_whitespace().count() == 2 && !o.contains(victim.as_str()),
    );

    // Scale 3 → 10 → 2.
    for n in ["3", "10", "2"] {
        up.ok(&["scale", "deployment/web", &format!("--replicas={n}")]);
        up.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
        up.until(&["get", "pods", "-l", "app=web", "--no-headers"], 60, |o| {
            o.lines().count().to_string() == n && o.lines().all(|l| l.contains("Running"))
        });
    }
    up.ok(&["scale", "deployment/web", "--replicas=3"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    // A rolling update with maxUnavailable 0 never drops below 3 ready pods.
    up.ok(&[
        "patch",
        "deployment/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxUnavailable":0,"maxSurge":1}}}}"#,
    ]);
    up.ok(&["set", "env", "deployment/web", "GREETING=v2"]);
    let watching = std::sync::atomic::AtomicBool::new(true);
    let lowest = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut lowest = i32::MAX;
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let ready = up.ok(&[
                    "get",
                    "deployment",
                    "web",
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ]);
                lowest = lowest.min(ready.trim().parse().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            lowest
        });
        up.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
        watching.store(false, std::sync::atomic::Ordering::SeqCst);
        sampler.join().unwrap()
    });
    assert!(lowest >= 3, "only {lowest} ready during the rollout");
    let revision = up.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(revision, "2");
    up.ok(&["rollout", "undo", "deployment/web"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let env = up.until(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].env}",
        ],
        60,
        |o| !o.contains("GREETING"),
    );
    assert!(!env.contains("v2"), "{env}");

    // kubectl logs goes through the API server to the node agent.
    let pod = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let logs = up.kubectl(&["logs", &pod]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );

    // Restarting yun up leaves the containers running: the agent adopts them.
    let ids = |up: &Up| {
        up.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].containerID}",
        ])
    };
    let before = ids(&up);
    up.restart();
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ids(&up),
        before,
        "containers were replaced across a restart"
    );

    up.ok(&["delete", "-f", manifest]);
    up.until(&["get", "pods", "--no-headers"], 60, |o| {
        o.trim().is_empty()
    });
}

/// A container's exit syncs its pod at once: with the periodic pass an hour away, a pod whose
/// only container exits still ends Failed with its exit code (the agent waits on each
/// container's process; before, only the periodic pass noticed an exit).
#[test]
fn a_container_exit_is_reported_without_the_periodic_pass() {
    let up = Up::start_with("exit", &["--sync-frequency", "1h"]);
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    // Long enough for the status echo of its start to have been synced first.
    up.ok(&[
        "run",
        "brief",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "sleep 3; exit 7",
    ]);
    let state = up.until(
        &[
            "get",
            "pod",
            "brief",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        40,
        |o| o.starts_with("Failed"),
    );
    assert_eq!(state.trim(), "Failed 7");
}

#[test]
fn bad_pods_say_why() {
    let up = Up::start("bad");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&[
        "run",
        "crash",
        "--image=busybox",
        "--restart=Always",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    up.ok(&[
        "run",
        "missing",
        "--image=yun-test/none:1",
        "--image-pull-policy=Never",
    ]);
    up.ok(&[
        "run",
        "huge",
        "--image=busybox",
        "--requests=cpu=500",
        "--",
        "sleep",
        "1000",
    ]);
    up.until(
        &[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        60,
        |o| o.trim().parse::<i32>().unwrap_or(0) >= 1,
    );
    let logs = up.ok(&["logs", "crash", "--previous"]);
    assert_eq!(logs, "");
    up.ok(&[
        "run",
        "talker",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo one; echo two",
    ]);
    up.until(&["logs", "talker"], 60, |o| o == "one\ntwo\n");
    up.until(&["logs", "talker", "--tail=1"], 10, |o| o == "two\n");
    up.until(&["get", "pod", "crash", "--no-headers"], 60, |o| {
        o.contains("CrashLoopBackOff")
    });
    up.until(&["get", "pod", "missing", "--no-headers"], 60, |o| {
        o.contains("ErrImageNeverPull")
    });
    let pending = up.until(&["get", "pod", "huge", "--no-headers"], 30, |o| {
        o.contains("Pending")
    });
    assert!(pending.contains("Pending"));
    up.until(
        &[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
        ],
        30,
        |o| o.contains("Insufficient cpu"),
    );
    up.ok(&["delete", "pod", "crash", "missing", "huge", "talker"]);
}

/// `yun down` without flags takes down what `yun up` made on this data dir (its recorded
/// bridge, pods and service table), not the default bridge yun0.
#[test]
fn down_without_flags_acts_on_the_recorded_node() {
    let mut up = Up::start("down");
    let bridge = up.node_flags[1].clone();
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&["run", "idle", "--image=busybox", "--", "sleep", "1000"]);
    up.until(&["get", "pod", "idle", "--no-headers"], 60, |o| {
        o.contains("Running")
    });
    let table = format!("yunproxy_{bridge}");
    let nft_has_table = || {
        let out = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&table)
    };
    let link_exists = || Path::new("/sys/class/net").join(&bridge).exists();
    assert!(
        link_exists() && nft_has_table(),
        "up made {bridge} and {table}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = up.child.wait();
    let out = Command::new(common::YUN)
        .arg("--data-dir")
        .arg(&up.data)
        .arg("down")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "down: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("removed 1 pod(s)") && stdout.contains(&bridge),
        "{stdout}"
    );
    assert!(!link_exists(), "{bridge} left behind");
    assert!(!nft_has_table(), "{table} left behind");
    // The guard's own down reads the record too.
    up.node_flags.clear();
}

/// A `kubectl get -w` in the background, killed when dropped; what it printed so far.
struct Watch {
    child: Child,
}

impl Watch {
    fn start(kubeconfig: &Path, args: &[&str]) -> Watch {
        let child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Watch { child }
    }

    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The FailedScheduling Events of pod `name`: (count, lastTimestamp) of each.
fn failed_scheduling(up: &Up, name: &str) -> Vec<(i64, String)> {
    let out = up.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name},reason=FailedScheduling"),
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["count"].as_i64().unwrap_or(0),
                e["lastTimestamp"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A pod that fits nowhere (its only node is cordoned) is retried with back-off: over 25 s
/// it makes one Event whose count grows slowly and hardly any status writes (before, each try
/// posted a new Event and its own status write queued the next try at once: thousands a
/// second). Uncordoning the node moves it back to the active queue: it is bound at once.
/// Events expire after `--event-ttl`.
#[test]
fn an_unschedulable_pod_waits_quietly_and_goes_when_a_node_fits() {
    let up = Up::start_with("unsched", &["--event-ttl", "15s"]);
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&["cordon", "node-1"]);
    let store = up.data.join("store.redb");
    let size_before = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0);
    up.ok(&[
        "run",
        "stuck",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "1000",
    ]);
    let kubeconfig = up.data.join("kubeconfig");
    let watch = Watch::start(
        &kubeconfig,
        &[
            "get",
            "pod",
            "stuck",
            "--watch",
            "-o",
            "jsonpath={.metadata.resourceVersion}{\"\\n\"}",
        ],
    );
    up.until(
        &[
            "get",
            "pod",
            "stuck",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ],
        10,
        |o| o == "Unschedulable",
    );
    std::thread::sleep(Duration::from_secs(25));
    let versions = watch.finish();
    let mut versions: Vec<&str> = versions.lines().collect();
    versions.dedup();
    // The first line is the pod as it was when the watch began; each further one a write.
    assert!(
        versions.len() <= 3,
        "{} writes to an unschedulable pod in 25 s",
        versions.len()
    );
    let events = failed_scheduling(&up, "stuck");
    assert_eq!(events.len(), 1, "one aggregated Event expected: {events:?}");
    let count = events[0].0;
    // Tries at 0, 1, 3, 7, 15, 25 s (back-off 1 s doubling to 10 s).
    assert!(
        (2..=10).contains(&count),
        "count {count} after 25 s: the back-off is off"
    );
    let size_after = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0);
    assert!(
        size_after.saturating_sub(size_before) < 10 << 20,
        "the store grew from {size_before} to {size_after} bytes"
    );

    // The node fits again: the pod is moved to the active queue and bound promptly.
    up.ok(&["uncordon", "node-1"]);
    let start = Instant::now();
    loop {
        let node = up.ok(&["get", "pod", "stuck", "-o", "jsonpath={.spec.nodeName}"]);
        if node == "node-1" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the pod was not scheduled within 2 s of the uncordon"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    up.ok(&["delete", "pod", "stuck", "--wait=false"]);

    // Nothing writes the Event any more: it expires after the TTL (15 s, swept every 1.5 s).
    up.until(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=stuck,reason=FailedScheduling",
            "-o",
            "name",
        ],
        25,
        |o| o.trim().is_empty(),
    );
}
