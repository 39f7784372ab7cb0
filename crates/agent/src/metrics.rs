//! The agent's resource metrics, the kubelet's `GET /metrics/resource` that metrics-server
//! scrapes: cumulative CPU time and the memory working set of the node, of each pod and of
//! each running container, in the Prometheus text format 0.0.4, with the cluster's bearer
//! token like `/containerLogs`.
//!
//! Figures come from the cgroups the runtime made for each container (`cpuacct.usage`; the
//! working set is the memory usage minus the inactive file cache, floored at 0, as cadvisor
//! computes it) and, for the node, from the root cgroup (or /proc when there is none to read).
//! A pod's figures are the sum of its running containers, its sandbox included, since the
//! sandbox is charged to the pod on a kubelet too. One scrape reads one entry per running
//! container; exited ones are skipped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use yun_runtime::cgroups::Stats;

use crate::pods::{LABEL_CONTAINER, SANDBOX};
use crate::PodRuntime;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// CPU time in nanoseconds and working set in bytes, read at `at_ms` (milliseconds since the
/// epoch). Each reading keeps its own time, as cadvisor's do: the CPU rate is taken between two
/// of them, and a scrape of many containers takes a while.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub working_set: u64,
    pub at_ms: u128,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.cpu_ns += o.cpu_ns;
        self.working_set += o.working_set;
        self.at_ms = self.at_ms.max(o.at_ms);
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// One running container as read now.
#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub pod_uid: String,
    /// The pod's container name ([`SANDBOX`] for the sandbox).
    pub container: String,
    pub usage: Usage,
    /// Seconds since the epoch.
    pub started: f64,
}

/// The memory a cgroup cannot give back without swapping: usage minus the inactive file
/// cache (`total_inactive_file` on v1, which counts child cgroups; `inactive_file` on v2).
pub fn working_set(stats: &Stats) -> u64 {
    let raw = &stats.memory.raw;
    let inactive = raw
        .get("total_inactive_file")
        .or_else(|| raw.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    stats.memory.usage.usage.saturating_sub(inactive)
}

/// The running containers of the pods `uids` with their usage, and whether reading any of
/// them failed (a container that stopped meanwhile is left out, not an error). Only these
/// pods' records are read: a node keeps the exited containers of every finished pod.
pub fn read_containers(rt: &PodRuntime, uids: &[&str]) -> (Vec<ContainerSample>, bool) {
    let engine = rt.engine();
    let mut out = Vec::new();
    let mut failed = false;
    for (uid, c) in uids
        .iter()
        .flat_map(|uid| rt.records(uid).into_iter().map(move |c| (*uid, c)))
    {
        let Some(name) = c.labels.get(LABEL_CONTAINER) else {
            continue;
        };
        if engine.status(&c).state != "running" {
            continue;
        }
        let stats = match engine.stats(&c) {
            Ok(s) => s,
            Err(e) => {
                if engine.status(&c).state == "running" {
                    tracing::warn!("metrics of container {}: {e:#}", c.id);
                    failed = true;
                }
                continue;
            }
        };
        let started = humantime::parse_rfc3339_weak(&c.created)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        out.push(ContainerSample {
            pod_uid: uid.to_string(),
            container: name.clone(),
            usage: Usage {
                cpu_ns: stats.cpu.usage.total,
                working_set: working_set(&stats),
                at_ms: now_ms(),
            },
            started,
        });
    }
    (out, failed)
}

/// The node's usage: the root cgroup's on v1 (`cpuacct.usage`, memory usage minus
/// `total_inactive_file`), else /proc/stat's busy time and /proc/meminfo's
/// MemTotal − MemAvailable.
pub fn read_node() -> anyhow::Result<Usage> {
    let root = Path::new("/sys/fs/cgroup");
    let v1 = yun_runtime::cgroups::detect_mode() == yun_runtime::cgroups::Mode::V1;
    let cpu_ns = match v1.then(|| read_number(&root.join("cpuacct/cpuacct.usage"))) {
        Some(Some(ns)) => ns,
        _ => proc_stat_cpu_ns(&std::fs::read_to_string("/proc/stat")?)
            .ok_or_else(|| anyhow::anyhow!("/proc/stat: no cpu line"))?,
    };
    let at_ms = now_ms();
    let cgroup_memory = v1
        .then(|| {
            let usage = read_number(&root.join("memory/memory.usage_in_bytes"))?;
            let stat = std::fs::read_to_string(root.join("memory/memory.stat")).ok()?;
            let inactive = keyed(&stat, "total_inactive_file").unwrap_or(0);
            Some(usage.saturating_sub(inactive))
        })
        .flatten();
    let working_set = match cgroup_memory {
        Some(m) => m,
        None => meminfo_used(&std::fs::read_to_string("/proc/meminfo")?)
            .ok_or_else(|| anyhow::anyhow!("/proc/meminfo: no MemTotal/MemAvailable"))?,
    };
    Ok(Usage {
        cpu_ns,
        working_set,
        at_ms,
    })
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in "key value" lines.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Busy CPU time from /proc/stat's `cpu` line (user, nice, system, irq, softirq, steal; the
/// guest times are inside user and nice already), in nanoseconds.
fn proc_stat_cpu_ns(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(busy * (1_000_000_000 / hz))
}

/// MemTotal − MemAvailable from /proc/meminfo, in bytes.
fn meminfo_used(text: &str) -> Option<u64> {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) * 1024)
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything one scrape found, ready to be written out.
pub struct Scrape {
    pub node: Option<Usage>,
    pub containers: Vec<ContainerSample>,
    /// Pod uid → (namespace, name); containers of pods not in here are left out.
    pub pods: HashMap<String, (String, String)>,
    pub error: bool,
    /// When the scrape was made (the time of `scrape_error`), ms since the epoch.
    pub timestamp_ms: u128,
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    /// Labels, value, timestamp.
    samples: Vec<(String, String, u128)>,
}

impl Scrape {
    /// The scrape in the text format: every family with its `# HELP` and `# TYPE` lines,
    /// sorted by name as the kubelet's registry writes them.
    pub fn render(&self) -> String {
        let mut pods: std::collections::BTreeMap<&(String, String), Usage> = Default::default();
        let mut containers: Vec<(String, &ContainerSample)> = Vec::new();
        for c in &self.containers {
            let Some(pod) = self.pods.get(&c.pod_uid) else {
                continue;
            };
            *pods.entry(pod).or_default() += c.usage;
            if c.container != SANDBOX {
                let labels = format!(
                    "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
                    escape(&c.container),
                    escape(&pod.0),
                    escape(&pod.1)
                );
                containers.push((labels, c));
            }
        }
        containers.sort_by(|a, b| a.0.cmp(&b.0));
        let pod_labels = |p: &(String, String)| {
            format!("namespace=\"{}\",pod=\"{}\"", escape(&p.0), escape(&p.1))
        };
        let node = |f: fn(&Usage) -> String| -> Vec<(String, String, u128)> {
            self.node
                .iter()
                .map(|u| (String::new(), f(u), u.at_ms))
                .collect()
        };
        let families = [
            Family {
                name: "container_cpu_usage_seconds_total",
                kind: "counter",
                help: "CPU time the container has used, in core-seconds.",
                samples: containers
                    .iter()
                    .map(|(l, c)| {
                        (
                            l.clone(),
                            seconds(c.usage.cpu_ns).to_string(),
                            c.usage.at_ms,
                        )
                    })
                    .collect(),
            },
            Family {
                name: "container_memory_working_set_bytes",
                kind: "gauge",
                help: "The container's memory working set, in bytes.",
                samples: containers
                    .iter()
                    .map(|(l, c)| (l.clone(), c.usage.working_set.to_string(), c.usage.at_ms))
                    .collect(),
            },
            Family {
                name: "container_start_time_seconds",
                kind: "gauge",
                help: "When the container started, in seconds since the Unix epoch.",
                samples: containers
                    .iter()
                    .map(|(l, c)| (l.clone(), c.started.to_string(), c.usage.at_ms))
                    .collect(),
            },
            Family {
                name: "node_cpu_usage_seconds_total",
                kind: "counter",
                help: "CPU time the node has used, in core-seconds.",
                samples: node(|u| seconds(u.cpu_ns).to_string()),
            },
            Family {
                name: "node_memory_working_set_bytes",
                kind: "gauge",
                help: "The node's memory working set, in bytes.",
                samples: node(|u| u.working_set.to_string()),
            },
            Family {
                name: "pod_cpu_usage_seconds_total",
                kind: "counter",
                help: "CPU time the pod has used, in core-seconds.",
                samples: pods
                    .iter()
                    .map(|(p, u)| (pod_labels(p), seconds(u.cpu_ns).to_string(), u.at_ms))
                    .collect(),
            },
            Family {
                name: "pod_memory_working_set_bytes",
                kind: "gauge",
                help: "The pod's memory working set, in bytes.",
                samples: pods
                    .iter()
                    .map(|(p, u)| (pod_labels(p), u.working_set.to_string(), u.at_ms))
                    .collect(),
            },
            Family {
                name: "scrape_error",
                kind: "gauge",
                help: "1 if reading some of the metrics failed, 0 otherwise.",
                samples: vec![(
                    String::new(),
                    u8::from(self.error).to_string(),
                    self.timestamp_ms,
                )],
            },
        ];
        let mut out = String::new();
        for f in families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for (labels, value, ts) in f.samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{} {value} {ts}", f.name);
                } else {
                    let _ = writeln!(out, "{}{{{labels}}} {value} {ts}", f.name);
                }
            }
        }
        out
    }
}

struct MetricsState {
    rt: Arc<PodRuntime>,
    client: Client,
    token: String,
    node_name: String,
}

/// The `/metrics/resource` route, for the agent's HTTP server.
pub fn router(rt: Arc<PodRuntime>, client: Client, token: String, node_name: String) -> Router {
    let state = Arc::new(MetricsState {
        rt,
        client,
        token,
        node_name,
    });
    Router::new()
        .route("/metrics/resource", get(resource))
        .with_state(state)
}

async fn resource(State(state): State<Arc<MetricsState>>, headers: HeaderMap) -> Response {
    if !crate::auth::authorized(&headers, &state.token) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    }
    // Which pod each container belongs to: this node's pods that may run containers, by uid.
    let params = ListParams::default().fields(&format!(
        "spec.nodeName={},status.phase!=Succeeded,status.phase!=Failed",
        state.node_name
    ));
    let mut error = false;
    let pods: HashMap<String, (String, String)> =
        match Api::<Pod>::all(state.client.clone()).list(&params).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter_map(|p| {
                    let m = p.metadata;
                    Some((m.uid?, (m.namespace.unwrap_or_default(), m.name?)))
                })
                .collect(),
            Err(e) => {
                tracing::warn!("metrics: listing the node's pods: {e}");
                error = true;
                HashMap::new()
            }
        };
    let rt = state.rt.clone();
    let uids: Vec<String> = pods.keys().cloned().collect();
    let read = tokio::task::spawn_blocking(move || {
        let node = read_node();
        let uids: Vec<&str> = uids.iter().map(String::as_str).collect();
        let (containers, failed) = read_containers(&rt, &uids);
        (node, containers, failed, now_ms())
    })
    .await;
    let Ok((node, containers, failed, timestamp_ms)) = read else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading metrics failed\n",
        )
            .into_response();
    };
    let node = match node {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!("metrics of the node: {e:#}");
            error = true;
            None
        }
    };
    let scrape = Scrape {
        node,
        containers,
        pods,
        error: error || failed,
        timestamp_ms,
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], scrape.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_floors_at_zero() {
        let mut s = Stats::default();
        s.memory.usage.usage = 1000;
        s.memory.raw.insert("total_inactive_file".into(), 300);
        assert_eq!(working_set(&s), 700);
        s.memory.raw.insert("total_inactive_file".into(), 3000);
        assert_eq!(working_set(&s), 0);
    }

    #[test]
    fn proc_figures() {
        let stat = "cpu  100 20 30 4000 50 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(
            proc_stat_cpu_ns(stat),
            Some((100 + 20 + 30 + 6 + 7 + 8) * (1_000_000_000 / hz))
        );
        let meminfo = "MemTotal:       1000 kB\nMemFree: 10 kB\nMemAvailable:    400 kB\n";
        assert_eq!(meminfo_used(meminfo), Some(600 * 1024));
    }

    #[test]
    fn render_names_labels_and_timestamps() {
        let sample = |container: &str, cpu_ns| ContainerSample {
            pod_uid: "u1".into(),
            container: container.into(),
            usage: Usage {
                cpu_ns,
                working_set: 1024,
                at_ms: 1_700_000_001_234,
            },
            started: 1_700_000_000.5,
        };
        let scrape = Scrape {
            node: Some(Usage {
                cpu_ns: 2_500_000_000,
                working_set: 4096,
                at_ms: 1_700_000_001_234,
            }),
            containers: vec![
                sample("app", 1_500_000_000),
                sample(SANDBOX, 10_000_000),
                ContainerSample {
                    pod_uid: "gone".into(),
                    ..sample("x", 1)
                },
            ],
            pods: [("u1".to_string(), ("ns".to_string(), "p\"1".to_string()))].into(),
            error: false,
            timestamp_ms: 1_700_000_001_300,
        };
        let text = scrape.render();
        for line in [
            "# TYPE container_cpu_usage_seconds_total counter",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"ns\",pod=\"p\\\"1\"} 1.5 1700000001234",
            "container_memory_working_set_bytes{container=\"app\",namespace=\"ns\",pod=\"p\\\"1\"} 1024 1700000001234",
            "container_start_time_seconds{container=\"app\",namespace=\"ns\",pod=\"p\\\"1\"} 1700000000.5 1700000001234",
            "node_cpu_usage_seconds_total 2.5 1700000001234",
            "node_memory_working_set_bytes 4096 1700000001234",
            "pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"p\\\"1\"} 1.51 1700000001234",
            "pod_memory_working_set_bytes{namespace=\"ns\",pod=\"p\\\"1\"} 2048 1700000001234",
            "# TYPE scrape_error gauge",
            "scrape_error 0 1700000001300",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\nnot in\n{text}");
        }
        assert!(!text.contains("container=\"POD\""), "{text}");
        assert!(!text.contains("container=\"x\""), "{text}");
        assert_eq!(text.matches("# HELP").count(), 8);
    }
}
