//! `yun up` driven by Debian's kubectl 1.20, with real containers: a Deployment rolls out,
//! serves HTTP on its pod IPs, scales, rolls to a new template and back, and goes away; bad
//! pods report why.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::kubectl::KUBECTL;

struct Up {
    child: Child,
    data: PathBuf,
    node_flags: Vec<String>,
    addr: String,
}

impl Up {
    fn start(name: &str) -> Up {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n = std::process::id();
        let data = PathBuf::from(format!("/tmp/yun-test-up-{name}-{n}"));
        let _ = std::fs::remove_dir_all(&data);
        let addr = format!("127.0.0.1:{}", common::free_port());
        let node_flags = vec![
            "--bridge".to_string(),
            format!("yunbt{:x}u{seq}", n & 0xffff),
            "--pod-cidr".to_string(),
            format!("10.236.{}.0/24", (n * 3 + seq) % 250),
            "--name".to_string(),
            "node-1".to_string(),
        ];
        let child = Self::spawn(&data, &addr, &node_flags);
        let up = Up {
            child,
            data,
            node_flags,
            addr,
        };
        common::wait_for_port(&up.addr, "yun up");
        up
    }

    fn spawn(data: &Path, addr: &str, node_flags: &[String]) -> Child {
        Command::new(common::YUN)
            .arg("--data-dir")
            .arg(data)
            .args(["up", "--addr", addr])
            .args(node_flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Stop `yun up` (SIGTERM) and start it again on the same data dir and address.
    fn restart(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        self.child = Self::spawn(&self.data, &self.addr, &self.node_flags);
        common::wait_for_port(&self.addr, "yun up after a restart");
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        common::kubectl::run(&self.data.join("kubeconfig"), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        common::kubectl::ok(&self.data.join("kubeconfig"), args)
    }

    fn until(&self, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
        common::kubectl::until(&self.data.join("kubeconfig"), args, secs, done)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        // Pods outlive `yun up` (the next one adopts them): take them down.
        let _ = Command::new(common::YUN)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("down")
            .args(&self.node_flags)
            .output();
        common::unmount_under(&[&self.data]);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// GET / from a pod (retrying while its server starts: Running is not listening yet).
fn http_get(ip: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match std::net::TcpStream::connect((ip, port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{ip}:{port}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

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
