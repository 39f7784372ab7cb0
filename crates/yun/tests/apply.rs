//! Server-side apply and managed fields with today's clients against `yun server`: kubectl
//! 1.33 and 1.27 (`apply --server-side`, conflicts with another manager and with `kubectl
//! scale`, `--force-conflicts`, pruning, `--show-managed-fields`, the client-side to
//! server-side migration, clearing with `[{}]`) and the Python `kubernetes` client.
//!
//! Each test runs its own `yun server` (common::plane); the guard kills it and removes its data
//! dir, kubectl caches included, on drop.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::plane::Plane;
use serde_json::Value;

const KUBECTL_1_20: &str = common::kubectl::KUBECTL;
const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  labels: {app: web, tier: fe}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
";

/// kubectl `bin` against the plane, with its caches and HOME inside the plane's data dir.
fn run(p: &Plane, bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .env("KUBECONFIG", p.kubeconfig())
        .env("HOME", &p.data)
        .arg("--cache-dir")
        .arg(
            p.data
                .join(format!("cache-{}", bin.rsplit('/').next().unwrap())),
        )
        .args(args)
        .output()
        .expect("run kubectl")
}

fn ok(p: &Plane, bin: &str, args: &[&str]) -> String {
    let out = run(p, bin, args);
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(p: &Plane, bin: &str, args: &[&str]) -> String {
    let out = run(p, bin, args);
    assert!(
        !out.status.success(),
        "{bin} {args:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(p: &Plane, name: &str, text: &str) -> String {
    let path = p.data.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The (manager, operation, subresource) of each managedFields entry.
fn managers(p: &Plane, bin: &str, name: &str) -> Vec<String> {
    let out = ok(
        p,
        bin,
        &["get", "deploy", name, "--show-managed-fields", "-o", "json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}/{}{}",
                        e["manager"].as_str().unwrap(),
                        e["operation"].as_str().unwrap(),
                        e["subresource"]
                            .as_str()
                            .map(|s| format!("/{s}"))
                            .unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kubectl_server_side_apply_conflicts_and_force() {
    let p = Plane::server("ssa-kubectl");
    for (i, bin) in [KUBECTL_1_33, KUBECTL_1_27].into_iter().enumerate() {
        let name = format!("web{i}");
        let manifest = DEPLOYMENT.replace("NAME", &name);
        let file = write(&p, "d.yaml", &manifest);
        // Twice: created, then a no-op without conflict.
        for _ in 0..2 {
            let out = ok(&p, bin, &["apply", "--server-side", "-f", &file]);
            assert!(out.contains("serverside-applied"), "{out}");
        }
        assert_eq!(managers(&p, bin, &name), ["kubectl/Apply"], "{bin}");

        // Another manager wanting other replicas conflicts with kubectl's.
        let three = write(
            &p,
            "d3.yaml",
            &manifest.replace("replicas: 2", "replicas: 3"),
        );
        let err = fails(
            &p,
            bin,
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "-f",
                &three,
            ],
        );
        assert!(
            err.contains(
                r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#
            ),
            "{bin}: {err}"
        );

        // `kubectl scale` (an Update through the scale subresource) takes replicas silently;
        // kubectl's next apply of the old value then conflicts with it.
        ok(&p, bin, &["scale", "deploy", &name, "--replicas=5"]);
        let scaler = bin.rsplit('/').next().unwrap();
        assert!(
            managers(&p, bin, &name).contains(&format!("{scaler}/Update/scale")),
            "{bin}: {:?}",
            managers(&p, bin, &name)
        );
        let err = fails(&p, bin, &["apply", "--server-side", "-f", &file]);
        assert!(
            err.contains(&format!(
                r#"conflict with "{scaler}" with subresource "scale" using apps/v1: .spec.replicas"#
            )),
            "{bin}: {err}"
        );
        let out = ok(
            &p,
            bin,
            &["apply", "--server-side", "--force-conflicts", "-f", &file],
        );
        assert!(out.contains("serverside-applied"), "{out}");
        let replicas = ok(
            &p,
            bin,
            &["get", "deploy", &name, "-o", "jsonpath={.spec.replicas}"],
        );
        assert_eq!(replicas, "2", "{bin}");
        assert_eq!(managers(&p, bin, &name), ["kubectl/Apply"], "{bin}");

        // A label dropped from the applied file goes from the object.
        let slim = write(
            &p,
            "slim.yaml",
            &manifest.replace("labels: {app: web, tier: fe}", "labels: {app: web}"),
        );
        ok(&p, bin, &["apply", "--server-side", "-f", &slim]);
        let labels = ok(
            &p,
            bin,
            &["get", "deploy", &name, "-o", "jsonpath={.metadata.labels}"],
        );
        assert_eq!(labels, r#"{"app":"web"}"#, "{bin}");

        // The entries show with --show-managed-fields only, in FieldsV1.
        let shown = ok(
            &p,
            bin,
            &[
                "get",
                "deploy",
                &name,
                "-o",
                "yaml",
                "--show-managed-fields",
            ],
        );
        for want in [
            "managedFields:",
            "fieldsType: FieldsV1",
            "manager: kubectl",
            "operation: Apply",
            "f:replicas: {}",
            r#"k:{"name":"nginx"}:"#,
        ] {
            assert!(shown.contains(want), "{bin}: no {want:?} in\n{shown}");
        }
        let hidden = ok(&p, bin, &["get", "deploy", &name, "-o", "yaml"]);
        assert!(!hidden.contains("managedFields"), "{bin}: {hidden}");

        // `diff --server-side` is a dry-run apply: it shows the change and stores nothing.
        let out = run(
            &p,
            bin,
            &["diff", "--server-side", "--force-conflicts", "-f", &three],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{bin}: {text}");
        assert!(text.contains("+  replicas: 3"), "{bin}: {text}");

        // A server-side dry run reports the change and stores nothing.
        let out = ok(
            &p,
            bin,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-f",
                &three,
                "--force-conflicts",
            ],
        );
        assert!(out.contains("server dry run"), "{out}");
        let replicas = ok(
            &p,
            bin,
            &["get", "deploy", &name, "-o", "jsonpath={.spec.replicas}"],
        );
        assert_eq!(replicas, "2", "{bin}");
    }
}

/// Debian's kubectl 1.20 speaks the same apply protocol (it has no --show-managed-fields).
#[test]
fn kubectl_1_20_server_side_apply() {
    let p = Plane::server("ssa-1-20");
    let manifest = DEPLOYMENT.replace("NAME", "old");
    let file = write(&p, "d.yaml", &manifest);
    for _ in 0..2 {
        let out = ok(&p, KUBECTL_1_20, &["apply", "--server-side", "-f", &file]);
        assert!(out.contains("serverside-applied"), "{out}");
    }
    let three = write(
        &p,
        "d3.yaml",
        &manifest.replace("replicas: 2", "replicas: 3"),
    );
    let args = [
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &three,
    ];
    let err = fails(&p, KUBECTL_1_20, &args);
    assert!(
        err.contains(r#"conflict with "kubectl": .spec.replicas"#),
        "{err}"
    );
    let forced = [&args[..], &["--force-conflicts"]].concat();
    ok(&p, KUBECTL_1_20, &forced);
    let v: Value = serde_json::from_str(&ok(
        &p,
        KUBECTL_1_20,
        &["get", "deploy", "old", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(v["spec"]["replicas"], 3);
    let owners: Vec<&str> = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fieldsV1"].pointer("/f:spec/f:replicas").is_some())
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["other"]);
}

#[test]
fn client_side_apply_migrates_to_server_side() {
    let p = Plane::server("ssa-migrate");
    let bin = KUBECTL_1_33;
    let manifest = DEPLOYMENT.replace("NAME", "csa");
    let file = write(&p, "csa.yaml", &manifest);
    ok(&p, bin, &["apply", "-f", &file]);
    assert_eq!(
        managers(&p, bin, "csa"),
        ["kubectl-client-side-apply/Update"]
    );
    // The first server-side apply of the same file migrates kubectl's client-side ownership
    // (kubectl patches managedFields with a JSON patch, which the server takes as sent).
    ok(&p, bin, &["apply", "--server-side", "-f", &file]);
    let after = managers(&p, bin, "csa");
    assert!(after.contains(&"kubectl/Apply".to_string()), "{after:?}");
    assert!(
        !after
            .iter()
            .any(|m| m.starts_with("kubectl-client-side-apply")),
        "{after:?}"
    );
    // So a changed value now applies without a conflict.
    let changed = write(
        &p,
        "csa4.yaml",
        &manifest.replace("replicas: 2", "replicas: 4"),
    );
    ok(&p, bin, &["apply", "--server-side", "-f", &changed]);
    let replicas = ok(
        &p,
        bin,
        &["get", "deploy", "csa", "-o", "jsonpath={.spec.replicas}"],
    );
    assert_eq!(replicas, "4");

    // `[{}]` clears the managed fields, as on Kubernetes.
    ok(
        &p,
        bin,
        &[
            "patch",
            "deploy",
            "csa",
            "--type=merge",
            "-p",
            r#"{"metadata":{"managedFields":[{}]}}"#,
        ],
    );
    assert!(managers(&p, bin, "csa").is_empty());
    // Later writes record their manager again: kubectl label sends ?fieldManager=kubectl-label.
    ok(&p, bin, &["label", "deploy", "csa", "extra=1"]);
    assert_eq!(managers(&p, bin, "csa"), ["kubectl-label/Update"]);
}

/// A directory for PYTHONPATH from which the Python `kubernetes` client (PyPI) imports: when
/// Python cannot import it already, it is installed once into cargo's test scratch dir, so
/// the host's Python stays as it was.
fn python_client() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-kubernetes");
    let importable = || {
        Command::new("python3")
            .env("PYTHONPATH", &dir)
            .args(["-c", "import kubernetes"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable() {
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&dir)
            .arg("kubernetes")
            .output()
            .expect("run pip");
        assert!(
            out.status.success(),
            "pip install kubernetes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

const PYTHON_APPLY: &str = r#"
import json, sys
from kubernetes import client, config, dynamic
config.load_kube_config(sys.argv[1])
dyn = dynamic.DynamicClient(client.ApiClient())
cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
body = {"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "py", "namespace": "default"}, "data": {"a": "1"}}
r = cms.server_side_apply(body=body, name="py", namespace="default", field_manager="python")
e = r.metadata.managedFields[0]
print("created", e.manager, e.operation, json.dumps(r.to_dict()["metadata"]["managedFields"][0]["fieldsV1"], sort_keys=True))
body["data"]["a"] = "2"
try:
    cms.server_side_apply(body=body, name="py", namespace="default", field_manager="other")
    print("no conflict")
except client.exceptions.ApiException as err:
    s = json.loads(err.body)
    print("conflict", err.status, s["reason"], json.dumps(s["details"]["causes"], sort_keys=True))
r = cms.server_side_apply(body=body, name="py", namespace="default",
                          field_manager="other", force_conflicts=True)
print("forced", r.data["a"])
"#;

#[test]
fn python_client_server_side_apply() {
    let lib = python_client();
    let p = Plane::server("ssa-python");
    let script = write(&p, "apply.py", PYTHON_APPLY);
    let out = Command::new("python3")
        .env("PYTHONPATH", &lib)
        .arg(&script)
        .arg(p.kubeconfig())
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            r#"created python Apply {"f:data": {"f:a": {}}}"#,
            r#"conflict 409 Conflict [{"field": ".data.a", "message": "conflict with \"python\"", "reason": "FieldManagerConflict"}]"#,
            "forced 2",
        ]
    );
}

/// yun's own clients name themselves in their User-Agent, so their writes are recorded under
/// a manager of their own (as `kube-controller-manager`'s are on Kubernetes).
#[test]
fn controller_writes_are_recorded_under_the_controller_manager() {
    let p = Plane::with_controller_manager("ssa-cm");
    let file = write(&p, "d.yaml", &DEPLOYMENT.replace("NAME", "ctl"));
    ok(&p, KUBECTL_1_33, &["apply", "--server-side", "-f", &file]);
    let rs = p.until(&["get", "rs", "-l", "app=web", "-o", "json"], 30, |out| {
        serde_json::from_str::<Value>(out)
            .is_ok_and(|v| v["items"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let v: Value = serde_json::from_str(&rs).unwrap();
    let managers: Vec<&str> = v["items"][0]["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"yun-controller-manager"), "{managers:?}");
}
