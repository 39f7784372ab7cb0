//! ResourceQuota through `yun up` with kubectl 1.33: usage in `get` and `describe`, kube's 403
//! for a pod over the quota and for one that leaves out what the quota constrains, usage
//! given back when a pod is deleted, LimitRange defaults that make a bare pod admissible, a
//! server-side dry run that checks without charging, object counts, and a 422 for a bad quota.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::kubectl::{run_bin, text, KUBECTL_1_33};
use common::up::Up;
use serde_json::Value;

const QUOTA: &str = r#"apiVersion: v1
kind: ResourceQuota
metadata: {name: compute}
spec:
  hard: {pods: "2", requests.cpu: "1", limits.memory: 256Mi, count/configmaps: "3"}
"#;

fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, \"1000\"]\n    resources: {resources}\n"
    )
}

const SIZED: &str = "{requests: {cpu: 100m}, limits: {memory: 64Mi}}";

struct Kubectl<'a> {
    up: &'a Up,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubeconfig = self.up.data.join("kubeconfig");
        let cache = self.up.data.join("kubectl-1.33-cache");
        let mut args: Vec<&str> = args.to_vec();
        let file = self.up.data.join("stdin.yaml");
        if let Some(body) = stdin {
            std::fs::write(&file, body).unwrap();
            args.extend(["-f", file.to_str().unwrap()]);
        }
        args.extend(["-n", "q"]);
        run_bin(KUBECTL_1_33, &kubeconfig, &cache, &args)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The refusal of a request that must fail.
    fn refused(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "kubectl {args:?} succeeded");
        text(&out)
    }

    fn quota(&self) -> Value {
        serde_json::from_str(&self.ok(&["get", "quota", "compute", "-o", "json"], None)).unwrap()
    }

    /// Wait (up to 20 s) until the quota's `status.used[resource]` reads `want`.
    fn until_used(&self, resource: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let q = self.quota();
            if q["status"]["used"][resource] == want {
                return q;
            }
            assert!(
                Instant::now() < deadline,
                "used {resource} never {want}: {q}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn quotas_count_refuse_and_free_pods_and_objects() {
    let up = Up::start("quota");
    let k = Kubectl { up: &up };
    up.until(&["get", "namespaces"], 20, |_| true);
    up.ok(&["create", "namespace", "q"]);
    // The namespace's own ConfigMap is there first, so the count below starts at 1.
    up.until(
        &["get", "configmap", "kube-root-ca.crt", "-n", "q"],
        20,
        |_| true,
    );

    let bad = k.refused(
        &["apply"],
        Some("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: bad}\nspec:\n  hard: {pods: \"1.5\"}\n"),
    );
    assert!(
        bad.contains(r#"spec.hard[pods]: Invalid value: "1500m": must be an integer"#),
        "{bad}"
    );

    k.ok(&["apply"], Some(QUOTA));
    let q = k.until_used("pods", "0");
    assert_eq!(q["status"]["hard"]["requests.cpu"], "1");
    assert_eq!(q["status"]["used"]["count/configmaps"], "1", "{q}");

    k.ok(&["create"], Some(&pod("p1", SIZED)));
    k.ok(&["create"], Some(&pod("p2", SIZED)));
    let table = k.ok(&["get", "quota"], None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE", "REQUEST", "LIMIT"], "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.contains("count/configmaps: 1/3, pods: 2/2, requests.cpu: 200m/1")
            && row.ends_with("limits.memory: 128Mi/256Mi"),
        "{table}"
    );
    let described = k.ok(&["describe", "quota", "compute"], None);
    for (resource, used, hard) in [("pods", "2", "2"), ("requests.cpu", "200m", "1")] {
        assert!(
            described
                .lines()
                .any(|l| { l.split_whitespace().collect::<Vec<_>>() == [resource, used, hard] }),
            "{described}"
        );
    }

    // A third pod is over the count, named with the figures.
    let over = k.refused(&["create"], Some(&pod("p3", SIZED)));
    assert!(
        over.contains(r#"pods "p3" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"#),
        "{over}"
    );
    // A pod that declares nothing the quota constrains is refused before it is counted.
    let bare = k.refused(&["create"], Some(&pod("bare", "{}")));
    assert!(
        bare.contains(r#"pods "bare" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c"#),
        "{bare}"
    );

    // A deleted pod gives its share back.
    k.ok(&["delete", "pod", "p1", "--wait=true"], None);
    k.until_used("pods", "1");

    // LimitRange defaults count: the bare pod is admitted once a range fills them in; a
    // dry run checks it and charges nothing.
    k.ok(
        &["apply"],
        Some("apiVersion: v1\nkind: LimitRange\nmetadata: {name: sizes}\nspec:\n  limits:\n  - type: Container\n    default: {memory: 64Mi}\n    defaultRequest: {cpu: 100m}\n"),
    );
    let dry: Value = serde_json::from_str(&k.ok(
        &["create", "--dry-run=server", "-o", "json"],
        Some(&pod("bare", "{}")),
    ))
    .unwrap();
    assert_eq!(
        dry["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "64Mi"
    );
    let q = k.quota();
    assert_eq!(
        q["status"]["used"]["pods"], "1",
        "a dry run charges nothing: {q}"
    );
    k.ok(&["create"], Some(&pod("bare", "{}")));
    let q = k.quota();
    assert_eq!(q["status"]["used"]["pods"], "2", "{q}");
    assert_eq!(q["status"]["used"]["requests.cpu"], "200m", "{q}");

    // Object counts: two more ConfigMaps fit, the fourth is over.
    k.ok(&["create", "configmap", "a"], None);
    k.ok(&["create", "configmap", "b"], None);
    let cm = k.refused(&["create", "configmap", "c"], None);
    assert!(
        cm.contains(r#"configmaps "c" is forbidden: exceeded quota: compute, requested: count/configmaps=1, used: count/configmaps=3, limited: count/configmaps=3"#),
        "{cm}"
    );
    k.ok(&["delete", "configmap", "a"], None);
    k.until_used("count/configmaps", "2");
    k.ok(&["create", "configmap", "c"], None);

    // Three creates racing for the last pod: the charge is a compare-and-swap, one passes.
    k.ok(&["delete", "pod", "bare", "--wait=true"], None);
    k.until_used("pods", "1");
    let outcomes: Vec<Output> = std::thread::scope(|s| {
        let racers: Vec<_> = ["r1", "r2", "r3"]
            .into_iter()
            .map(|name| {
                let manifest = pod(name, SIZED);
                let up = &up;
                s.spawn(move || {
                    // Each racer its own file (the shared stdin.yaml would be overwritten), and
                    // the warm discovery cache, so the creates go out together.
                    let file = up.data.join(format!("{name}.yaml"));
                    std::fs::write(&file, manifest).unwrap();
                    run_bin(
                        KUBECTL_1_33,
                        &up.data.join("kubeconfig"),
                        &up.data.join("kubectl-1.33-cache"),
                        &["create", "-n", "q", "-f", file.to_str().unwrap()],
                    )
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let passed = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        passed,
        1,
        "{:?}",
        outcomes.iter().map(text).collect::<Vec<_>>()
    );
    for refused in outcomes.iter().filter(|o| !o.status.success()) {
        assert!(
            text(refused).contains("exceeded quota: compute"),
            "{}",
            text(refused)
        );
    }
    assert_eq!(k.quota()["status"]["used"]["pods"], "2");
}
