//! PodDisruptionBudgets and the eviction subresource through `yun up` with real pods, driven
//! by kubectl 1.33: a budget's status follows its Deployment's pods, `kubectl drain` evicts
//! what the budget allows and is refused the rest (429), uncordoning lets the replacement run
//! and the budget allow again; evictions by the API (no budget, a broken budget, a body naming
//! another pod, a user without `pods/eviction`, a pod two budgets select, two evictions racing
//! for the last disruption), and invalid budgets (422 naming the field).

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Instant;

use common::kubectl::{run_bin, text, KUBECTL_1_33};
use common::up::Up;

struct Cluster {
    up: Up,
    cache: PathBuf,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Output {
        run_bin(
            KUBECTL_1_33,
            &self.up.data.join("kubeconfig"),
            &self.cache,
            args,
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must fail; returns stdout and stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} passed: {}",
            text(&out)
        );
        text(&out)
    }

    fn until(&self, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let out = self.kubectl(args);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && done(&stdout) {
                return stdout;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?} never as expected; last: {}",
                text(&out)
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// Write `content` to a file in the data dir (removed with it) and return its path.
    fn file(&self, name: &str, content: &str) -> String {
        let path = self.up.data.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    /// POST a policy/v1 Eviction of `pod` (named `body_name` in the body) as `as_user` (or
    /// the admin).
    fn evict(&self, pod: &str, body_name: &str, as_user: Option<&str>) -> Output {
        self.evict_as_version("policy/v1", pod, body_name, as_user)
    }

    fn evict_as_version(
        &self,
        version: &str,
        pod: &str,
        body_name: &str,
        as_user: Option<&str>,
    ) -> Output {
        let body = format!(
            r#"{{"apiVersion": "{version}", "kind": "Eviction", "metadata": {{"name": "{body_name}", "namespace": "default"}}}}"#
        );
        let file = self.file(&format!("eviction-{pod}.json"), &body);
        let path = format!("/api/v1/namespaces/default/pods/{pod}/eviction");
        let mut args = vec!["create", "--raw", &path, "-f", &file, "-v=8"];
        let who = as_user.map(|u| format!("--as={u}"));
        if let Some(w) = &who {
            args.push(w);
        }
        self.kubectl(&args)
    }

    /// The budget's status as "currentHealthy/desiredHealthy/disruptionsAllowed".
    fn budget(&self) -> String {
        self.ok(&[
            "get",
            "pdb",
            "yun-web",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}",
        ])
    }

    /// Names of the Deployment's pods that run and are not being deleted.
    fn running_web_pods(&self) -> Vec<String> {
        let out = self.ok(&[
            "get",
            "pods",
            "-l",
            "app=yun-web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [name, "Running"] => Some(name.to_string()),
                _ => None,
            })
            .collect()
    }
}

const DEPLOYMENT: &str = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
 "metadata": {"name": "yun-web"},
 "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "yun-web"}},
  "template": {"metadata": {"labels": {"app": "yun-web"}},
   "spec": {"terminationGracePeriodSeconds": 1,
    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}}"#;

const LONE: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "yun-lone"},
 "spec": {"terminationGracePeriodSeconds": 1,
  "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}"#;

/// (the budget's spec, the field its 422 must name, what the message says).
const INVALID: [(&str, &str, &str); 4] = [
    (
        r#"{"minAvailable": 1, "maxUnavailable": 1}"#,
        "spec: Invalid value",
        "minAvailable and maxUnavailable cannot be both set",
    ),
    (
        r#"{"minAvailable": -1}"#,
        "spec.minAvailable: Invalid value: -1",
        "must be greater than or equal to 0",
    ),
    (
        r#"{"maxUnavailable": "lots%"}"#,
        "spec.maxUnavailable: Invalid value: \"lots%\"",
        "must be an integer or percentage",
    ),
    (
        r#"{"minAvailable": 1, "selector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}}"#,
        "spec.selector.matchExpressions[0].operator",
        "not a valid selector operator",
    ),
];

#[test]
fn budgets_guard_drain_and_evictions() {
    let started = Instant::now();
    let up = Up::start("pdb");
    let cache = up.data.join("kube-cache");
    let c = Cluster { up, cache };
    c.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    let node = "node-1";
    let file = c.file("web.json", DEPLOYMENT);
    c.ok(&["apply", "-f", &file]);
    let file = c.file("lone.json", LONE);
    c.ok(&["apply", "-f", &file]);

    // kubectl 1.33 creates the budget with its typed client: the body goes as protobuf.
    let out = c.kubectl(&[
        "create",
        "pdb",
        "yun-web",
        "--selector=app=yun-web",
        "--min-available=1",
        "-v=8",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "{log}"
    );
    c.until(
        &[
            "get",
            "pdb",
            "yun-web",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
        ],
        40,
        |o| o == "2/1",
    );
    let table = c.ok(&["get", "pdb"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["yun-web", "1", "N/A", "1"], "{table}");
    let condition = c.ok(&[
        "get",
        "pdb",
        "yun-web",
        "-o",
        "jsonpath={.status.conditions[0].type}={.status.conditions[0].status}/{.status.conditions[0].reason} expected={.status.expectedPods}",
    ]);
    assert_eq!(
        condition,
        "DisruptionAllowed=True/SufficientPods expected=2"
    );
    let describe = c.ok(&["describe", "pdb", "yun-web"]);
    for want in [
        "Min available:  1",
        "Allowed disruptions:  1",
        "app=yun-web",
    ] {
        assert!(describe.contains(want), "{want}: {describe}");
    }
    let explain = c.ok(&["explain", "pdb.spec.unhealthyPodEvictionPolicy"]);
    assert!(explain.contains("IfHealthyBudget"), "{explain}");

    // Invalid budgets: 422 naming the field, nothing stored.
    for (i, (spec, field, why)) in INVALID.iter().enumerate() {
        let body = format!(
            r#"{{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {{"name": "yun-bad-{i}"}}, "spec": {spec}}}"#
        );
        let file = c.file(&format!("bad-{i}.json"), &body);
        let err = c.fails(&["create", "-f", &file]);
        assert!(
            err.contains("is invalid") && err.contains(field) && err.contains(why),
            "{spec}: {err}"
        );
    }
    let names = c.ok(&["get", "pdb", "-o", "name"]);
    assert_eq!(names.trim(), "poddisruptionbudget.policy/yun-web");

    // Authorization: the eviction is `create` on pods/eviction, which edit grants and a
    // role with only pod reads does not.
    let file = c.file(
        "narrow.json",
        r#"{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "yun-narrow"},
  "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]}]},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "yun-narrow"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "yun-narrow"},
  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "yun-narrow"}]},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "yun-editor"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "yun-editor"}]},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "yun-owner"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "yun-owner"}]}]}"#,
    );
    c.ok(&["apply", "-f", &file]);
    let can = |user: &str| {
        let out = c.kubectl(&[
            "auth",
            "can-i",
            "create",
            "pods",
            "--subresource=eviction",
            &format!("--as={user}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let answers = [can("yun-editor"), can("yun-owner"), can("yun-narrow")];
    assert_eq!(answers, ["yes", "yes", "no"]);
    let denied = c.evict("yun-lone", "yun-lone", Some("yun-narrow"));
    let err = text(&denied);
    assert!(!denied.status.success(), "{err}");
    assert!(
        err.contains("Forbidden") && err.contains("pods/eviction"),
        "{err}"
    );

    // A body naming another pod is a 400; a pod no budget selects is simply deleted.
    c.until(
        &["get", "pod", "yun-lone", "-o", "jsonpath={.status.phase}"],
        30,
        |o| o == "Running",
    );
    let wrong = c.evict("yun-lone", "yun-other", None);
    let err = text(&wrong);
    assert!(!wrong.status.success(), "{err}");
    assert!(
        err.contains("name in URL does not match name in Eviction object"),
        "{err}"
    );
    // (as kubectl before 1.22 sends it: policy/v1beta1)
    let lone = c.evict_as_version("policy/v1beta1", "yun-lone", "yun-lone", None);
    assert!(lone.status.success(), "{}", text(&lone));
    c.ok(&["wait", "--for=delete", "pod/yun-lone", "--timeout=30s"]);

    // Drain: one pod may go; the other is refused (429) until drain's timeout. On one node
    // the evicted pod's replacement has nowhere to run while the node is cordoned.
    let before = c.running_web_pods();
    assert_eq!(before.len(), 2, "{before:?}");
    let drain = c.kubectl(&[
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=20s",
    ]);
    let log = text(&drain);
    assert!(!drain.status.success(), "drain passed: {log}");
    assert!(
        log.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{log}"
    );
    let evicted: Vec<&str> = log.lines().filter(|l| l.ends_with(" evicted")).collect();
    assert_eq!(evicted.len(), 1, "{log}");
    let left = c.running_web_pods();
    assert_eq!(left.len(), 1, "{left:?}\n{log}");
    assert!(before.contains(&left[0]), "{left:?} {before:?}");
    assert!(evicted[0].contains(before.iter().find(|p| **p != left[0]).unwrap()));
    assert_eq!(c.budget(), "1/1/0");

    // The same refusal through the API: 429 with a DisruptionBudget cause naming the budget.
    let refused = c.evict(&left[0], &left[0], None);
    let err = text(&refused);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("429")
            && err.contains("Cannot evict pod as it would violate the pod's disruption budget.")
            && err.contains("DisruptionBudget")
            && err
                .contains("The disruption budget yun-web needs 1 healthy pods and has 1 currently"),
        "{err}"
    );
    assert_eq!(c.running_web_pods(), left);

    // Uncordoned, the replacement runs and becomes ready, and the budget allows one again.
    c.ok(&["uncordon", node]);
    c.until(&["get", "pdb", "yun-web", "-o", "jsonpath={.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}"], 30, |o| o == "2/1/1");
    let pods = c.running_web_pods();
    assert_eq!(pods.len(), 2, "{pods:?}");

    // A pod two budgets select cannot be evicted (kube's 500), and stays.
    c.ok(&[
        "create",
        "pdb",
        "yun-web-2",
        "--selector=app=yun-web",
        "--max-unavailable=50%",
    ]);
    let twice = c.evict(&pods[0], &pods[0], None);
    let err = text(&twice);
    assert!(!twice.status.success(), "{err}");
    assert!(
        err.contains("500") && err.contains("This pod has more than one PodDisruptionBudget"),
        "{err}"
    );
    assert_eq!(c.running_web_pods(), pods);

    // Two evictions at once against a budget that allows one: exactly one passes.
    c.ok(&["delete", "pdb", "yun-web-2"]);
    assert_eq!(c.budget(), "2/1/1");
    let results: Vec<Output> = std::thread::scope(|s| {
        let racers: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| c.evict(p, p, None)))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let passed = results.iter().filter(|o| o.status.success()).count();
    let refused: Vec<String> = results
        .iter()
        .filter(|o| !o.status.success())
        .map(text)
        .collect();
    assert_eq!(passed, 1, "{refused:?}");
    assert!(refused[0].contains("429"), "{}", refused[0]);
    eprintln!("disruption test took {:?}", started.elapsed());
}
