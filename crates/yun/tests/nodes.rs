//! Two nodes: `yun up --disable-agent` as the control plane, and two `yun agent`s, each in a
//! network namespace of its own (a "machine" on a LAN bridge the test creates), with its own
//! data dir, pod bridge and pod CIDR. Pods spread over both; a node that stops renewing its
//! Lease is marked unreachable and its pods come back on the other; an agent restart keeps its
//! containers. Driven by Debian's kubectl 1.20.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kubectl::KUBECTL;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A LAN: a host bridge with the control plane's address, and one network namespace per node
/// plugged into it by a veth pair. Dropping it removes the namespaces (and with them
/// everything inside) and the bridge.
struct Lan {
    bridge: String,
    netns: Vec<String>,
    /// Second and third octets of the LAN's /24: 10.B.N.0/24.
    net: u32,
    /// The second octet (one per test of this file, so tests running at once do not meet).
    b: u32,
}

impl Lan {
    fn new(tag: &str, nodes: usize, b: u32) -> Lan {
        let net = std::process::id() % 60 * 4;
        let lan = Lan {
            bridge: format!("yun{tag}"),
            netns: (1..=nodes).map(|i| format!("yun-{tag}-n{i}")).collect(),
            net,
            b,
        };
        ip(&["link", "add", &lan.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lan.gateway()),
            "dev",
            &lan.bridge,
        ]);
        ip(&["link", "set", &lan.bridge, "up"]);
        for (i, ns) in lan.netns.iter().enumerate() {
            let host_end = format!("yun{tag}v{i}");
            ip(&["netns", "add", ns]);
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["link", "set", &host_end, "master", &lan.bridge, "up"]);
            let addr = format!("10.{b}.{net}.{}/24", 11 + i);
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    fn gateway(&self) -> String {
        format!("10.{}.{}.1", self.b, self.net)
    }

    /// The pod CIDR of node `i` (0-based): the LAN's next /24s.
    fn pod_cidr(&self, i: usize) -> String {
        format!("10.{}.{}.0/24", self.b, self.net + 1 + i as u32)
    }

    /// A command that runs in node `i`'s network namespace (only: mounts, cgroups and the rest
    /// stay the host's, as on a machine of its own they would be its own).
    fn nsenter(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns[i]))
            .arg("--")
            .arg(program);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting the host ends takes the pairs down now (a namespace's own links go when
        // the kernel gets round to freeing it).
        for i in 0..self.netns.len() {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}v{i}", self.bridge)])
                .output();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A `yun agent` in node `index`'s namespace, with its own data dir.
struct Agent {
    child: Option<Child>,
    data: PathBuf,
    name: String,
    flags: Vec<String>,
    index: usize,
}

impl Agent {
    fn flags(lan: &Lan, index: usize, name: &str) -> Vec<String> {
        [
            "--name",
            name,
            "--bridge",
            "yun0",
            "--pod-cidr",
            &lan.pod_cidr(index),
            "--node-lease-duration",
            "2s",
        ]
        .map(String::from)
        .to_vec()
    }

    fn start(lan: &Lan, index: usize, kubeconfig: &Path) -> Agent {
        let name = format!("{}-n{}", lan.bridge, index + 1);
        let data = PathBuf::from(format!("/tmp/yun-test-nodes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut agent = Agent {
            child: None,
            flags: Agent::flags(lan, index, &name),
            data,
            name,
            index,
        };
        agent.spawn(lan, kubeconfig);
        agent
    }

    fn spawn(&mut self, lan: &Lan, kubeconfig: &Path) {
        let child = lan
            .nsenter(self.index, common::YUN)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("agent")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn stop(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
            let _ = child.wait();
        }
    }

    /// Stop the agent and take its pods and pod bridge down (as `yun down` on that machine).
    fn clean(&mut self, lan: &Lan) {
        self.stop(nix::sys::signal::Signal::SIGTERM);
        let _ = lan
            .nsenter(self.index, common::YUN)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("down")
            .args(&self.flags)
            .output();
        common::unmount_under(&[&self.data]);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The control plane alone (`yun up --disable-agent`), listening on the LAN.
struct ControlPlane {
    child: Child,
    data: PathBuf,
}

impl ControlPlane {
    fn start(lan: &Lan) -> ControlPlane {
        let data = PathBuf::from(format!(
            "/tmp/yun-test-nodes-cp-{}-{}",
            lan.bridge,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&data);
        let addr = format!("{}:{}", lan.gateway(), common::free_port());
        let child = Command::new(common::YUN)
            .arg("--data-dir")
            .arg(&data)
            .args(["up", "--disable-agent", "--addr", &addr])
            .args(["--node-monitor-grace-period", "3s"])
            .args(["--pod-eviction-timeout", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        common::wait_for_port(&addr, "yun up --disable-agent");
        common::wait_for_file(&data.join("kubeconfig"), "yun up --disable-agent");
        ControlPlane { child, data }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }

    fn ok(&self, args: &[&str]) -> String {
        common::kubectl::ok(&self.kubeconfig(), args)
    }

    fn until(&self, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
        common::kubectl::until(&self.kubeconfig(), args, secs, done)
    }

    /// "pod-name node-name pod-ip ready" for each web pod.
    fn web_pods(&self) -> Vec<(String, String, String, String)> {
        let out = self.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.status.containerStatuses[0].ready}{"\n"}{end}"#,
        ]);
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4).then(|| (f[0].into(), f[1].into(), f[2].into(), f[3].into()))
            })
            .collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Everything of the test, torn down in order: agents (and their pods), control plane, LAN.
struct Cluster {
    agents: Vec<Agent>,
    plane: ControlPlane,
    lan: Lan,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.clean(&self.lan);
        }
    }
}

#[test]
fn pods_spread_over_two_nodes_and_move_when_one_is_lost() {
    assert!(
        Path::new(KUBECTL).exists(),
        "run scripts/deps.sh: Debian's kubectl is missing"
    );
    let tag = format!("nd{:x}", std::process::id() & 0xffff);
    let lan = Lan::new(&tag, 2, 237);
    let plane = ControlPlane::start(&lan);
    let agents = (0..2)
        .map(|i| Agent::start(&lan, i, &plane.kubeconfig()))
        .collect();
    let mut c = Cluster { agents, plane, lan };
    let (n1, n2) = (c.agents[0].name.clone(), c.agents[1].name.clone());
    c.plane.until(&["get", "nodes"], 30, |o| {
        o.lines()
            .filter(|l| l.contains(&tag) && l.contains(" Ready"))
            .count()
            == 2
    });

    // Four replicas spread over both nodes; each pod answers on its IP inside its node.
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/web.yaml");
    c.plane.ok(&["apply", "-f", manifest]);
    c.plane.ok(&["scale", "deployment/web", "--replicas=4"]);
    c.plane
        .ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pods = c.plane.web_pods();
    assert_eq!(pods.len(), 4, "{pods:?}");
    for node in [&n1, &n2] {
        assert_eq!(
            pods.iter().filter(|p| &p.1 == node).count(),
            2,
            "pods not spread: {pods:?}"
        );
    }
    for (name, node, pod_ip, _) in &pods {
        let i = if node == &n1 { 0 } else { 1 };
        let cidr = c.lan.pod_cidr(i);
        assert!(
            pod_ip.starts_with(cidr.trim_end_matches("0/24")),
            "{name} on {node} has {pod_ip}, outside {cidr}"
        );
        let body = curl_in(&c.lan, i, &format!("http://{pod_ip}:8080/"));
        assert!(body.contains("hello from web-"), "{name}: {body}");
    }

    // Restarting node 2's agent keeps its containers: same container IDs, no restarts.
    let ids_of = |c: &Cluster, node: &str| {
        c.plane
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "--field-selector",
                &format!("spec.nodeName={node}"),
                "-o",
                "jsonpath={.items[*].status.containerStatuses[0].containerID}",
            ])
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let before = ids_of(&c, &n2);
    c.agents[1].stop(nix::sys::signal::Signal::SIGTERM);
    c.agents[1].spawn(&c.lan, &c.plane.kubeconfig());
    std::thread::sleep(Duration::from_secs(3));
    c.plane
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(ids_of(&c, &n2), before, "containers replaced on restart");
    let restarts = c.plane.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ]);
    assert!(restarts.split_whitespace().all(|r| r == "0"), "{restarts}");

    // Node 1 stops renewing its Lease (the agent dies): after the grace period it is
    // NotReady, after the eviction timeout its pods are replaced on node 2.
    c.agents[0].stop(nix::sys::signal::Signal::SIGKILL);
    c.plane
        .until(&["get", "node", &n1], 30, |o| o.contains("NotReady"));
    c.plane
        .until(&["get", "pods", "-l", "app=web", "-o", "name"], 60, |_| {
            let pods = c.plane.web_pods();
            pods.len() == 4 && pods.iter().all(|p| p.1 == n2 && p.3 == "true")
        });
    let taints = c
        .plane
        .ok(&["get", "node", &n1, "-o", "jsonpath={.spec.taints}"]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    // The lost node lost no API objects but its pods: the Deployment and node are still there.
    c.plane.ok(&["get", "deployment", "web"]);
    // Its agent comes back: the node is Ready and schedulable again (the taint is lifted),
    // and the containers of its evicted pods are removed.
    c.agents[0].spawn(&c.lan, &c.plane.kubeconfig());
    c.plane.until(
        &["get", "node", &n1, "-o", "jsonpath={.spec.taints}"],
        30,
        |o| !o.contains("unreachable"),
    );
    c.plane.until(&["get", "node", &n1], 30, |o| {
        o.contains(" Ready") && !o.contains("NotReady")
    });
    let runtime = c.agents[0].data.join("runtime");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&runtime).is_ok_and(|d| d.count() > 0) {
        assert!(
            Instant::now() < deadline,
            "the evicted pods' containers are still on node 1"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    c.plane.ok(&["delete", "-f", manifest]);
}

/// The node's Ready condition status and its taint keys, as one line.
fn ready_and_taints(plane: &ControlPlane, node: &str) -> String {
    plane.ok(&[
        "get",
        "node",
        node,
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints[*].key}"#,
    ])
}

/// A node that missed its Lease (its agent paused past the grace period) is marked Unknown and
/// tainted unreachable; once the agent resumes, the node is Ready and untainted again within
/// one lease period (before, it stayed Unknown until the agent was restarted).
#[test]
fn a_paused_agent_gets_its_node_ready_again_when_it_resumes() {
    assert!(
        Path::new(KUBECTL).exists(),
        "run scripts/deps.sh: Debian's kubectl is missing"
    );
    let tag = format!("np{:x}", std::process::id() & 0xffff);
    let lan = Lan::new(&tag, 1, 238);
    let plane = ControlPlane::start(&lan);
    let agents = vec![Agent::start(&lan, 0, &plane.kubeconfig())];
    let c = Cluster { agents, plane, lan };
    let node = c.agents[0].name.clone();
    c.plane.until(&["get", "node", &node], 30, |o| {
        o.contains(" Ready") && !o.contains("NotReady")
    });
    let pid = nix::unistd::Pid::from_raw(c.agents[0].child.as_ref().unwrap().id() as i32);
    // Resumed even if an assertion below fails, so the guard can stop it.
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let resume = Resume(pid);
    // Past the grace period (3 s): Unknown, tainted unreachable.
    c.plane
        .until(&["get", "node", &node], 20, |o| o.contains("NotReady"));
    let state = ready_and_taints(&c.plane, &node);
    assert_eq!(state, "Unknown node.kubernetes.io/unreachable", "{state}");
    drop(resume);
    let resumed = Instant::now();
    // One lease period (2 s; the agent renews every 0.5 s).
    let lease = Duration::from_secs(2);
    loop {
        let state = ready_and_taints(&c.plane, &node);
        if state.trim() == "True" {
            break;
        }
        assert!(
            resumed.elapsed() < lease,
            "the node is not Ready and untainted one lease period after its agent resumed: {state}"
        );
    }
    // And it stays so.
    std::thread::sleep(lease);
    assert_eq!(ready_and_taints(&c.plane, &node).trim(), "True");
}

/// A node whose agent stopped after registering but before its first Lease (here: a Node
/// posted Ready with no agent at all) still goes Unknown and tainted once its Ready heartbeat
/// is older than the grace period. Before, a node without a Lease was skipped and stayed
/// Ready forever, which is how an agent paused at the wrong moment kept its node Ready.
#[test]
fn a_node_that_never_renewed_a_lease_goes_unknown() {
    let tag = format!("nl{:x}", std::process::id() & 0xffff);
    let lan = Lan::new(&tag, 0, 236);
    let plane = ControlPlane::start(&lan);
    let name = format!("{}-ghost", lan.bridge);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stamp = k8s_openapi::jiff::Timestamp::from_second(now as i64).unwrap();
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": stamp.to_string(), "lastTransitionTime": stamp.to_string(),
        }]},
    });
    let file = plane.data.join("ghost-node.json");
    std::fs::write(&file, node.to_string()).unwrap();
    plane.ok(&["create", "-f", file.to_str().unwrap()]);
    // Grace 3 s, checked every 1.5 s.
    plane.until(&["get", "node", &name], 20, |o| o.contains("NotReady"));
    let state = ready_and_taints(&plane, &name);
    assert_eq!(state, "Unknown node.kubernetes.io/unreachable", "{state}");
    plane.ok(&["delete", "node", &name, "--wait=false"]);
}

/// GET a URL from inside node `i`'s namespace with curl (retrying while the server starts).
fn curl_in(lan: &Lan, i: usize, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = lan
            .nsenter(i, "curl")
            .args(["-sS", "--max-time", "5", url])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The daemon pods of `ds` as (name, node, ready, template hash), sorted by node.
fn daemon_pods(plane: &ControlPlane, app: &str) -> Vec<(String, String, String, String)> {
    let out = plane.ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.containerStatuses[0].ready} {.metadata.labels.controller-revision-hash} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]);
    let mut pods: Vec<_> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Pods being deleted carry a fifth field: not counted.
            (f.len() == 4).then(|| (f[0].into(), f[1].into(), f[2].into(), f[3].into()))
        })
        .collect();
    pods.sort_by(|a: &(String, String, String, String), b| a.1.cmp(&b.1));
    pods
}

/// A DaemonSet covers every node, a node that joins later gets its pod within seconds, a
/// cordoned node keeps (and gets back) its daemon, an image change rolls node by node, and
/// deleting the DaemonSet takes its pods. Two agents in network namespaces, kubectl 1.20.
#[test]
fn a_daemonset_covers_every_node_and_a_node_that_joins_later() {
    assert!(
        Path::new(KUBECTL).exists(),
        "run scripts/deps.sh: Debian's kubectl is missing"
    );
    let tag = format!("ds{:x}", std::process::id() & 0xffff);
    let lan = Lan::new(&tag, 2, 235);
    let plane = ControlPlane::start(&lan);
    let agents = vec![Agent::start(&lan, 0, &plane.kubeconfig())];
    let mut c = Cluster { agents, plane, lan };
    let n1 = c.agents[0].name.clone();
    c.plane.until(&["get", "node", &n1], 30, |o| {
        o.contains(" Ready") && !o.contains("NotReady")
    });
    let manifest = c.plane.data.join("ds.yaml");
    let write = |image_tag: &str| {
        std::fs::write(
            &manifest,
            format!(
                r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: logger}}
spec:
  selector: {{matchLabels: {{app: logger}}}}
  template:
    metadata: {{labels: {{app: logger}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: logger
        image: busybox
        command: ["sh", "-c", "trap 'exit 0' TERM; echo {image_tag}; while :; do sleep 1; done"]
"#
            ),
        )
        .unwrap()
    };
    write("v1");
    c.plane.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    c.plane
        .ok(&["rollout", "status", "daemonset/logger", "--timeout=60s"]);
    let pods = daemon_pods(&c.plane, "logger");
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(
        (pods[0].1.as_str(), pods[0].2.as_str()),
        (n1.as_str(), "true")
    );
    let table = c.plane.ok(&["get", "daemonset", "logger"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..7],
        ["logger", "1", "1", "1", "1", "1", "<none>"],
        "{table}"
    );

    // A second node joins: its daemon pod runs there within seconds of the node being Ready.
    c.agents
        .push(Agent::start(&c.lan, 1, &c.plane.kubeconfig()));
    let n2 = c.agents[1].name.clone();
    c.plane.until(&["get", "node", &n2], 30, |o| {
        o.contains(" Ready") && !o.contains("NotReady")
    });
    let joined = Instant::now();
    c.plane.until(
        &["get", "pods", "-l", "app=logger", "-o", "name"],
        60,
        |_| {
            let pods = daemon_pods(&c.plane, "logger");
            pods.len() == 2 && pods.iter().all(|p| p.2 == "true")
        },
    );
    let pods = daemon_pods(&c.plane, "logger");
    let nodes: Vec<&str> = pods.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(nodes, [n1.as_str(), n2.as_str()]);
    eprintln!(
        "the joining node's daemon pod ran {:?} after the node was Ready",
        joined.elapsed()
    );
    assert!(
        joined.elapsed() < Duration::from_secs(20),
        "{:?}",
        joined.elapsed()
    );

    // Cordoned: the daemon stays, and a deleted one comes back on the cordoned node.
    c.plane.ok(&["cordon", &n1]);
    let on_n1 = pods.iter().find(|p| p.1 == n1).unwrap().0.clone();
    c.plane.ok(&["delete", "pod", &on_n1, "--wait=false"]);
    c.plane.until(
        &["get", "pods", "-l", "app=logger", "-o", "name"],
        60,
        |_| {
            let pods = daemon_pods(&c.plane, "logger");
            pods.len() == 2
                && pods.iter().all(|p| p.2 == "true")
                && !pods.iter().any(|p| p.0 == on_n1)
        },
    );
    assert!(daemon_pods(&c.plane, "logger").iter().any(|p| p.1 == n1));
    c.plane.ok(&["uncordon", &n1]);

    // A template change rolls out node by node (maxUnavailable 1) to every node.
    let before: Vec<String> = daemon_pods(&c.plane, "logger")
        .into_iter()
        .map(|p| p.3)
        .collect();
    write("v2");
    c.plane.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    c.plane
        .ok(&["rollout", "status", "daemonset/logger", "--timeout=90s"]);
    let after = daemon_pods(&c.plane, "logger");
    if after.len() != 2 {
        eprintln!("{}", c.plane.ok(&["get", "ds", "logger", "-o", "yaml"]));
        eprintln!(
            "{}",
            c.plane.ok(&["get", "pods", "-o", "wide", "--show-labels"])
        );
    }
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|p| p.2 == "true" && p.3 != before[0]),
        "{before:?} -> {after:?}"
    );
    let status = c.plane.ok(&[
        "get",
        "daemonset",
        "logger",
        "-o",
        "jsonpath={.status.desiredNumberScheduled} {.status.updatedNumberScheduled} {.status.numberAvailable} {.status.observedGeneration}",
    ]);
    assert_eq!(status, "2 2 2 2");
    // Today's kubectl reads the same rollout and the wide columns.
    let k133 = |args: &[&str]| {
        let cache = c.plane.data.join("kubectl-1.33-cache");
        let out = common::kubectl::run_bin(
            common::kubectl::KUBECTL_1_33,
            &c.plane.kubeconfig(),
            &cache,
            args,
        );
        let text = common::kubectl::text(&out);
        assert!(out.status.success(), "kubectl 1.33 {args:?}: {text}");
        text
    };
    let rolled = k133(&["rollout", "status", "daemonset/logger", "--timeout=30s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let wide = k133(&["get", "daemonset", "logger", "-o", "wide"]);
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..7],
        ["logger", "2", "2", "2", "2", "2", "<none>"],
        "{wide}"
    );
    assert!(
        row.contains(&"busybox") && row.contains(&"app=logger"),
        "{wide}"
    );
    // The two templates are its history (ControllerRevisions); undo rolls the first back out.
    let history = k133(&["rollout", "history", "daemonset/logger"]);
    let numbers: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["1", "2"], "{history}");
    k133(&["rollout", "undo", "daemonset/logger"]);
    k133(&["rollout", "status", "daemonset/logger", "--timeout=90s"]);
    c.plane.until(
        &["get", "pods", "-l", "app=logger", "-o", "name"],
        60,
        |_| {
            let pods = daemon_pods(&c.plane, "logger");
            pods.len() == 2 && pods.iter().all(|p| p.2 == "true" && p.3 == before[0])
        },
    );
    let history = k133(&["rollout", "history", "daemonset/logger"]);
    assert!(history.lines().any(|l| l.starts_with("3 ")), "{history}");

    // Invalid: a DaemonSet whose pods may not restart.
    let bad = c.plane.data.join("bad-ds.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {app: bad}}\n  template:\n    metadata: {labels: {app: bad}}\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n",
    )
    .unwrap();
    let out = common::kubectl::run(
        &c.plane.kubeconfig(),
        &["apply", "-f", bad.to_str().unwrap()],
    );
    let text = common::kubectl::text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("spec.template.spec.restartPolicy: Unsupported value: \"Never\""),
        "{text}"
    );

    // Deleting the DaemonSet takes its pods.
    c.plane.ok(&["delete", "-f", manifest.to_str().unwrap()]);
    c.plane.until(
        &["get", "pods", "-l", "app=logger", "-o", "name"],
        60,
        |o| o.trim().is_empty(),
    );
}
