//! `kubectl top` against `yun up` (kubectl 1.33 and 1.27): the `metrics.k8s.io` API in
//! discovery, node and pod figures computed from the agent's `/metrics/resource` (a pod
//! burning a CPU shows it, an idle one does not), `--containers`, label selectors, kube's 404
//! and RBAC's 403 (a namespaced Role without metrics rights; `view` has them through
//! aggregation), and the agent's endpoint read with and without the cluster's token.
//!
//! The test prints what kubectl showed, so a run with `--nocapture` gives the figures.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::kubectl::{self, text, KUBECTL_1_27 as KUBECTL_127, KUBECTL_1_33 as KUBECTL_133};
use common::up::Up;

/// Burn a CPU, holding 4 MiB in a shell variable so the working set is more than the
/// shell's few hundred KiB (which `top` would show as 0Mi).
const BURN: &str = "x=$(head -c 4194304 /dev/zero | tr '\\0' a); while :; do :; done";

fn kubectl(bin: &str, up: &Up, args: &[&str]) -> Output {
    let version = bin.rsplit('.').next().unwrap_or("x");
    let cache = up.data.join(format!("kubectl-cache-{version}"));
    kubectl::run_bin(bin, &up.data.join("kubeconfig"), &cache, args)
}

/// Repeat kubectl until it succeeds with output that satisfies `done` (at most `secs`).
fn until(bin: &str, up: &Up, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = kubectl(bin, up, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?}: never as expected within {secs} s; last: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// kubectl that must fail with `needle` in what it prints.
fn fails(bin: &str, up: &Up, args: &[&str], needle: &str) {
    let out = kubectl(bin, up, args);
    assert!(!out.status.success(), "kubectl {args:?}: {}", text(&out));
    assert!(
        text(&out).contains(needle),
        "kubectl {args:?}: want {needle:?}, got {}",
        text(&out)
    );
}

/// The fields of the row of `top` output whose first column is `name`.
fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name} in\n{out}"))
}

/// `123m` → 123; `2` (cores) → 2000.
fn millicores(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<u64>().unwrap() * 1000,
    }
}

/// `12Mi` → 12.
fn mebibytes(q: &str) -> u64 {
    q.strip_suffix("Mi").unwrap().parse().unwrap()
}

/// The rows of `top pods` for the burning and the idle pod: (cpu m, memory Mi) each.
fn check_top_pods(bin: &str, up: &Up) -> String {
    // The burning pod has to show its CPU: while its first window is still short, or the
    // machine is busy, it may read lower for a moment.
    let out = until(bin, up, &["top", "pods"], 90, |o| {
        o.contains("burn")
            && o.contains("idle")
            && millicores(row(o, "burn")[1]) >= 200
            && millicores(row(o, "idle")[1]) < 50
    });
    eprintln!("{bin} top pods:\n{out}");
    let (burn, idle) = (row(&out, "burn"), row(&out, "idle"));
    assert!(mebibytes(burn[2]) < 100_000, "{out}");
    assert!(mebibytes(idle[2]) < 100_000, "{out}");
    out
}

#[test]
fn kubectl_top_and_the_agent_resource_metrics() {
    for bin in [KUBECTL_133, KUBECTL_127] {
        assert!(Path::new(bin).exists(), "{bin} is missing");
    }
    let up = Up::start("metrics");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&[
        "run",
        "burn",
        "--image=busybox",
        "--labels=app=burn",
        "--",
        "sh",
        "-c",
        BURN,
    ]);
    up.ok(&[
        "run",
        "idle",
        "--image=busybox",
        "--labels=app=idle",
        "--",
        "sleep",
        "3600",
    ]);
    up.until(&["get", "pods"], 60, |o| {
        o.lines().filter(|l| l.contains("Running")).count() == 2
    });

    // Discovery: kubectl top looks for the group; api-resources lists both kinds.
    let resources = until(
        KUBECTL_133,
        &up,
        &["api-resources", "--api-group=metrics.k8s.io"],
        10,
        |o| o.contains("NodeMetrics") && o.contains("PodMetrics"),
    );
    eprintln!("api-resources:\n{resources}");
    let pods_line = row(&resources, "pods");
    assert!(pods_line.contains(&"true"), "{resources}");

    // Nodes: the first request already answers (two scrapes a second apart).
    let nodes = until(KUBECTL_133, &up, &["top", "nodes"], 30, |o| {
        o.contains("node-1")
    });
    eprintln!("top nodes:\n{nodes}");
    let node = row(&nodes, "node-1");
    assert!(millicores(node[1]) > 0, "{nodes}");
    assert!(mebibytes(node[3]) > 0, "{nodes}");

    let top = check_top_pods(KUBECTL_133, &up);
    assert!(mebibytes(row(&top, "burn")[2]) >= 4, "{top}");
    let top_127 = check_top_pods(KUBECTL_127, &up);
    assert!(mebibytes(row(&top_127, "burn")[2]) >= 4, "{top_127}");

    let containers = until(
        KUBECTL_133,
        &up,
        &["top", "pod", "burn", "--containers"],
        30,
        |o| o.contains("burn"),
    );
    eprintln!("top pod burn --containers:\n{containers}");
    let c = row(&containers, "burn");
    assert_eq!(c[1], "burn", "{containers}");
    assert!(millicores(c[2]) >= 200, "{containers}");

    // The label selector applies to the pods' labels.
    let selected = until(
        KUBECTL_133,
        &up,
        &["top", "pods", "-l", "app=idle"],
        30,
        |o| o.contains("idle"),
    );
    assert!(!selected.contains("burn"), "{selected}");

    // The API's own answer: nanocores, KiB, timestamp and window.
    let raw = until(
        KUBECTL_133,
        &up,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/idle",
        ],
        30,
        |o| o.contains("PodMetrics"),
    );
    eprintln!("PodMetrics of idle: {raw}");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let memory = v["containers"][0]["usage"]["memory"].as_str().unwrap();
    let ki: u64 = memory.strip_suffix("Ki").unwrap().parse().unwrap();
    assert!(ki > 0, "{raw}");
    assert!(v["window"].as_str().unwrap().ends_with('s'), "{raw}");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{raw}");

    // `kubectl get` prints the kinds through the server's Table (metrics-server's columns).
    let table = until(KUBECTL_133, &up, &["get", "podmetrics"], 30, |o| {
        o.contains("idle")
    });
    eprintln!("get podmetrics:\n{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CPU", "MEMORY", "WINDOW"], "{table}");
    let idle = row(&table, "idle");
    assert!(idle[1].ends_with('n') && idle[2].ends_with("Ki"), "{table}");
    let nodes_table = until(KUBECTL_133, &up, &["get", "nodemetrics"], 30, |o| {
        o.lines().count() >= 2
    });
    assert!(nodes_table.starts_with("NAME"), "{nodes_table}");
    assert!(nodes_table.contains("WINDOW"), "{nodes_table}");

    // A pod without metrics: kube's 404.
    fails(
        KUBECTL_133,
        &up,
        &["top", "pod", "nosuch"],
        r#"podmetrics.metrics.k8s.io "nosuch" not found"#,
    );

    // RBAC: a namespaced Role that reads pods but not their metrics gets 403; `view` (which
    // system:aggregated-metrics-reader aggregates into) reads them.
    up.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "carol-reads",
        "--role=pod-reader",
        "--user=carol",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "dave-views",
        "--clusterrole=view",
        "--user=dave",
    ]);
    until(KUBECTL_133, &up, &["get", "pods", "--as=carol"], 10, |o| {
        o.contains("burn")
    });
    fails(
        KUBECTL_133,
        &up,
        &["top", "pods", "--as=carol"],
        r#"User "carol" cannot list resource "pods" in API group "metrics.k8s.io" in the namespace "default""#,
    );
    until(KUBECTL_133, &up, &["top", "pods", "--as=dave"], 20, |o| {
        o.contains("burn")
    });

    // After a pause longer than a window is reused (5 s), the next answer is over the time
    // since the previous scrape, not over a new 1 s pair.
    std::thread::sleep(Duration::from_secs(7));
    let raw = until(
        KUBECTL_133,
        &up,
        &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"],
        10,
        |o| o.contains("NodeMetricsList"),
    );
    eprintln!("NodeMetricsList after 7 s: {raw}");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let window = v["items"][0]["window"].as_str().unwrap();
    let seconds: f64 = window.strip_suffix('s').unwrap().parse().unwrap();
    assert!((7.0..60.0).contains(&seconds), "{raw}");

    // The agent's endpoint: with the cluster's token the kubelet's metric names with the
    // pod's labels; without it, 401.
    let address = up.ok(&[
        "get",
        "node",
        "node-1",
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}:{.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let url = format!("http://{address}/metrics/resource");
    let kubeconfig = std::fs::read_to_string(up.data.join("kubeconfig")).unwrap();
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token in the kubeconfig")
        .to_string();
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .arg(&url)
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl {url}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metrics = curl(&["-H", &format!("Authorization: Bearer {token}")]);
    eprintln!("{url}:\n{metrics}");
    for needle in [
        "# TYPE node_cpu_usage_seconds_total counter",
        "\nnode_cpu_usage_seconds_total ",
        "\nnode_memory_working_set_bytes ",
        "\npod_cpu_usage_seconds_total{namespace=\"default\",pod=\"burn\"} ",
        "\npod_memory_working_set_bytes{namespace=\"default\",pod=\"idle\"} ",
        "\ncontainer_cpu_usage_seconds_total{container=\"burn\",namespace=\"default\",pod=\"burn\"} ",
        "\ncontainer_memory_working_set_bytes{container=\"idle\",namespace=\"default\",pod=\"idle\"} ",
        "\ncontainer_start_time_seconds{container=\"burn\",namespace=\"default\",pod=\"burn\"} ",
        "\nscrape_error 0 ",
    ] {
        assert!(metrics.contains(needle), "{needle:?} not in\n{metrics}");
    }
    // Every sample carries a millisecond timestamp.
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let ts = line.rsplit(' ').next().unwrap();
        assert!(ts.len() == 13 && ts.parse::<u64>().is_ok(), "{line}");
    }
    let code = curl(&["-o", "/dev/null", "-w", "%{http_code}"]);
    assert_eq!(code, "401");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Authorization: Bearer wrong",
    ]);
    assert_eq!(code, "401");
}
