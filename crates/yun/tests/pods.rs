//! The node agent's pod runtime against the real kernel: pods from Kubernetes Pod objects run
//! as real containers on a bridge this test creates, with init containers, volumes, env,
//! restarts with back-off, status, logs, re-adoption and clean removal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::json;
use yun_agent::{NodeConfig, PodInputs, PodRuntime};

static N: AtomicU32 = AtomicU32::new(0);

/// A node of its own per test: data dir, bridge `yunbt…` and a /24 of 10.233.0.0/16. The guard
/// removes every pod, the bridge and the data dir, also when the test fails.
struct Node {
    rt: Option<PodRuntime>,
    cfg: NodeConfig,
}

impl Node {
    fn new(name: &str) -> Node {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let data = PathBuf::from(format!(
            "/tmp/yun-test-pods-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&data);
        let mut cfg = NodeConfig::new(&data, std::path::Path::new(common::YUN));
        cfg.bridge = format!("yunbt{:x}p{n}", std::process::id() & 0xffff);
        cfg.pod_cidr = format!("10.233.{}.0/24", (std::process::id() as u32 * 7 + n) % 250)
            .parse()
            .unwrap();
        cfg.backoff_base = Duration::from_millis(500);
        cfg.backoff_max = Duration::from_secs(4);
        let rt = PodRuntime::open(cfg.clone()).unwrap();
        Node { rt: Some(rt), cfg }
    }

    fn rt(&self) -> &PodRuntime {
        self.rt.as_ref().unwrap()
    }

    /// Sync `pod` until `done(status)` holds (or panic after `secs`); returns that status.
    fn sync_until(
        &self,
        pod: &Pod,
        inputs: &PodInputs,
        secs: u64,
        done: impl Fn(&PodStatus) -> bool,
    ) -> PodStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let status = self.rt().sync(pod, inputs).unwrap();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pod never reached the expected state; last status: {}",
                serde_json::to_string_pretty(&status).unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            for uid in rt.pod_uids() {
                let _ = rt.remove(&uid, Duration::ZERO);
            }
            let _ = rt.network().remove();
        }
        if let Ok(nl) = yun_net::Netlink::open() {
            let _ = nl.delete_link(&self.cfg.bridge);
        }
        common::unmount_under(&[&self.cfg.data_dir]);
        let _ = std::fs::remove_dir_all(&self.cfg.data_dir);
    }
}

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let n = N.fetch_add(1, Ordering::SeqCst);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id()), "labels": {"app": name}},
        "spec": spec,
    }))
    .unwrap()
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

fn container<'a>(s: &'a PodStatus, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    s.container_statuses
        .iter()
        .chain(s.init_container_statuses.iter())
        .flatten()
        .find(|c| c.name == name)
        .unwrap()
}

/// A container's log as `kubectl logs` shows it (the file holds CRI records).
fn log(node: &Node, p: &Pod, name: &str, previous: bool) -> String {
    let data =
        std::fs::read(node.rt().log_path(&uid(p), name, previous).unwrap()).unwrap_or_default();
    let mut decoder = yun_engine::ctrlog::Decoder::new(Default::default());
    String::from_utf8(decoder.first(&data, true)).unwrap()
}

fn phase(s: &PodStatus) -> &str {
    s.phase.as_deref().unwrap_or("")
}

#[test]
fn init_containers_volumes_env_and_status() {
    let node = Node::new("basic");
    let p = pod(
        "web",
        json!({
            "restartPolicy": "Always",
            "initContainers": [{"name": "prepare", "image": "busybox",
                "command": ["sh", "-c", "echo prepared > /work/state"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "containers": [{"name": "app", "image": "busybox",
                "command": ["sh", "-c"],
                "args": ["cat /work/state; echo \"$GREETING $(POD_NAME) ip=$POD_IP\"; cat /config/mode; hostname; echo ready; exec sleep 1000"],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}}],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "config", "mountPath": "/config"}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}}],
            "volumes": [{"name": "work", "emptyDir": {}}, {"name": "config", "configMap": {"name": "settings"}}],
        }),
    );
    let mut inputs = PodInputs::default();
    inputs.config_maps.insert(
        "settings".into(),
        [
            ("greeting".to_string(), b"hello".to_vec()),
            ("mode".to_string(), b"fast\n".to_vec()),
        ]
        .into_iter()
        .collect(),
    );
    let status = node.sync_until(&p, &inputs, 60, |s| {
        phase(s) == "Running" && log(&node, &p, "app", false).contains("ready")
    });
    let ip = status.pod_ip.clone().unwrap();
    assert!(node.cfg.pod_cidr.contains(ip.parse().unwrap()), "{ip}");
    assert_eq!(
        log(&node, &p, "app", false),
        format!("prepared\nhello web ip={ip}\nfast\nweb\nready\n")
    );
    let init = container(&status, "prepare");
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );
    let app = container(&status, "app").clone();
    assert!(app.ready && app.state.as_ref().unwrap().running.is_some());
    assert_eq!(app.restart_count, 0);
    let conditions: Vec<(String, String)> = status
        .conditions
        .clone()
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert!(
        conditions.contains(&("Ready".into(), "True".into())),
        "{conditions:?}"
    );

    // The host reaches the pod on the node's bridge.
    let ping = Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "3", &ip])
        .output()
        .unwrap();
    assert!(ping.status.success(), "host cannot reach pod {ip}");

    // The memory limit reached the container's cgroup.
    let app_id = app
        .container_id
        .clone()
        .unwrap()
        .trim_start_matches("yun://")
        .to_string();
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/yun/{app_id}/memory.limit_in_bytes"
    ))
    .unwrap_or_default();
    assert_eq!(limit.trim(), (64 << 20).to_string());
    // The CPU limit, which also stands for the request it leaves out, weighs it: 0.5 CPU is
    // 512 shares.
    let shares = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/yun/{app_id}/cpu.shares"))
        .unwrap_or_default();
    assert_eq!(shares.trim(), "512");

    // A new runtime on the same node (an agent restart) adopts the running pod.
    let again = PodRuntime::open(node.cfg.clone()).unwrap();
    let status = again.sync(&p, &inputs).unwrap();
    let app = container(&status, "app");
    assert_eq!(app.restart_count, 0);
    assert_eq!(app.container_id.clone().unwrap(), format!("yun://{app_id}"));
    assert_eq!(status.pod_ip.unwrap(), ip);

    // Removal leaves nothing of the pod: no containers, no veth, no address, no volumes.
    node.rt().remove(&uid(&p), Duration::from_secs(2)).unwrap();
    assert!(node.rt().pod_uids().is_empty());
    let veth = yun_net::host_veth_name(&uid(&p));
    assert_eq!(
        yun_net::Netlink::open().unwrap().link_index(&veth).unwrap(),
        None
    );
    assert_eq!(node.rt().network().address_of(&uid(&p)).unwrap(), None);
    assert!(!node.cfg.data_dir.join("pods").join(uid(&p)).exists());
    // The image store's own nosuid,nodev mount of DATA/snapshots stays; nothing of the pod.
    let store_mount = node.cfg.data_dir.join("snapshots");
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(node.cfg.data_dir.to_str().unwrap()))
        .filter(|m| Path::new(m) != store_mount)
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}

#[test]
fn crashing_container_backs_off_and_keeps_the_previous_log() {
    let node = Node::new("crash");
    let p = pod(
        "crasher",
        json!({"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo run; exit 3"]}]}),
    );
    let inputs = PodInputs::default();
    let status = node.sync_until(&p, &inputs, 60, |s| {
        let c = container(s, "c");
        c.restart_count >= 2
            && c.state
                .as_ref()
                .and_then(|st| st.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("CrashLoopBackOff")
    });
    let c = container(&status, "c");
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(phase(&status), "Running", "a restarting pod is Running");
    assert_eq!(log(&node, &p, "c", true), "run\n");
    // Only the latest two attempts are kept.
    let attempts = std::fs::read_dir(node.cfg.data_dir.join("containers"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "names")
        .count();
    assert!(
        attempts <= 3,
        "{attempts} containers kept (sandbox + 2 attempts)"
    );
}

#[test]
fn restart_policy_never_ends_in_succeeded_or_failed() {
    let node = Node::new("never");
    let ok = pod(
        "job-ok",
        json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}),
    );
    let bad = pod(
        "job-bad",
        json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["false"]}]}),
    );
    let inputs = PodInputs::default();
    let s = node.sync_until(&ok, &inputs, 60, |s| phase(s) == "Succeeded");
    let term = container(&s, "c")
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (0, Some("Completed"))
    );
    let s = node.sync_until(&bad, &inputs, 60, |s| phase(s) == "Failed");
    assert_eq!(container(&s, "c").restart_count, 0);
}

#[test]
fn pods_reach_each_other_by_pod_ip() {
    let node = Node::new("net");
    let inputs = PodInputs::default();
    let server = pod(
        "server",
        json!({"containers": [{"name": "s", "image": "busybox", "command": ["sleep", "1000"]}]}),
    );
    let s = node.sync_until(&server, &inputs, 60, |s| phase(s) == "Running");
    let server_ip = s.pod_ip.unwrap();
    let client = pod(
        "client",
        json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "ping -c 1 -W 3 $TARGET && echo reached"],
            "env": [{"name": "TARGET", "value": server_ip}]}]}),
    );
    let s = node.sync_until(&client, &inputs, 60, |s| {
        matches!(phase(s), "Succeeded" | "Failed")
    });
    assert_eq!(
        phase(&s),
        "Succeeded",
        "log: {}",
        log(&node, &client, "c", false)
    );
    assert!(log(&node, &client, "c", false).ends_with("reached\n"));
}

#[test]
fn bad_pods_report_reasons_instead_of_failing_the_agent() {
    let node = Node::new("bad");
    let inputs = PodInputs::default();
    let missing = pod(
        "missing-image",
        json!({"containers": [{"name": "c", "image": "yun-test/no-such-image:1", "imagePullPolicy": "Never"}]}),
    );
    let s = node.sync_until(&missing, &inputs, 30, |s| {
        container(s, "c")
            .state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .is_some()
    });
    let w = container(&s, "c").state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.reason.as_deref(), Some("ErrImageNeverPull"));
    assert!(w.message.unwrap().contains("yun-test/no-such-image"));
    assert_eq!(phase(&s), "Pending");

    let unpullable = pod(
        "unpullable",
        json!({"containers": [{"name": "c", "image": "127.0.0.1:1/yun-test/none:1"}]}),
    );
    let s = node.sync_until(&unpullable, &inputs, 30, |s| {
        container(s, "c")
            .state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .is_some()
    });
    let reason = container(&s, "c")
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap()
        .reason
        .unwrap();
    assert!(
        reason == "ErrImagePull" || reason == "ImagePullBackOff",
        "{reason}"
    );

    let no_config = pod(
        "no-config",
        json!({"containers": [{"name": "c", "image": "busybox", "command": ["true"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}]}),
    );
    let s = node.sync_until(&no_config, &inputs, 30, |s| {
        container(s, "c")
            .state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .is_some()
    });
    let w = container(&s, "c").state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
    assert!(w.message.unwrap().contains("secret \"absent\""));
}

#[test]
fn probes_gate_readiness_and_restart_dead_containers() {
    let node = Node::new("probes");
    let inputs = PodInputs::default();
    // Readiness over HTTP and TCP: not ready until /www/ready exists, ~2 s after start.
    let web = pod(
        "web",
        json!({"containers": [{"name": "httpd", "image": "busybox",
            "command": ["sh", "-c", "mkdir -p /www; (sleep 2; echo ok > /www/ready) & exec httpd -f -p 8080 -h /www"],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}),
    );
    let s = node.sync_until(&web, &inputs, 30, |s| {
        container(s, "httpd")
            .state
            .as_ref()
            .is_some_and(|st| st.running.is_some())
    });
    assert!(
        !container(&s, "httpd").ready,
        "ready before the probe passed"
    );
    let s = node.sync_until(&web, &inputs, 30, |s| container(s, "httpd").ready);
    let ready = s
        .conditions
        .clone()
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(container(&s, "httpd").restart_count, 0);

    // Liveness by exec: the container stops being alive after ~2 s and is restarted.
    let dying = pod(
        "dying",
        json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 1000"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}}]}),
    );
    let s = node.sync_until(&dying, &inputs, 60, |s| {
        container(s, "c").restart_count >= 1
    });
    let last = container(&s, "c")
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_ne!(last.exit_code, 0, "killed by the agent");
}
