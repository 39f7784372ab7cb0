//! Authentication and RBAC as kubectl (1.33, 1.27 and Debian's 1.20) meets them: the admin
//! kubeconfig's client certificate, `yun kubeconfig --user` minting a scoped one, kube's 403
//! text, Roles and bindings, `auth can-i` / `auth whoami`, impersonation, escalation
//! prevention, ClusterRole aggregation and rejected certificates.
//!
//! Each test runs `yun server` on a free loopback port with its own data dir; the harness kills
//! the server and removes the dir on drop, also when an assertion fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kubectl::{self, text, KUBECTL as KUBECTL_1_20, KUBECTL_1_27, KUBECTL_1_33};
use common::plane::Plane;

fn kubectl(bin: &str, kubeconfig: &Path, args: &[&str]) -> Output {
    kubectl::run_bin(bin, kubeconfig, &kubeconfig.with_extension("cache"), args)
}

/// kubectl that must succeed; its stdout.
fn ok(bin: &str, kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(bin, kubeconfig, args);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl that must fail with `needle` in what it prints.
fn fails(bin: &str, kubeconfig: &Path, args: &[&str], needle: &str) {
    let out = kubectl(bin, kubeconfig, args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(needle),
        "kubectl {args:?}: want {needle:?}, got {}",
        text(&out)
    );
}

/// `yun kubeconfig` for `user` in `groups`, written into the plane's data dir.
fn mint(p: &Plane, user: &str, groups: &[&str], extra: &[&str]) -> PathBuf {
    let path = p.data.join(format!("{user}.kubeconfig"));
    let mut c = Command::new(common::YUN);
    c.arg("--data-dir")
        .arg(&p.data)
        .args(["kubeconfig", "--user", user]);
    for g in groups {
        c.args(["--group", g]);
    }
    let out = c.args(extra).arg("-o").arg(&path).output().unwrap();
    assert!(out.status.success(), "yun kubeconfig: {}", text(&out));
    path
}

/// kubectl waits for nothing: an RBAC change reaches the authorizer through a watch, so a
/// check right after a write may see the old rules for a moment.
fn until_ok(bin: &str, kubeconfig: &Path, args: &[&str]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = kubectl(bin, kubeconfig, args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl {args:?}: {}",
            text(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn roles_bindings_reviews_and_impersonation() {
    let p = Plane::server("rbac");
    let admin = p.kubeconfig();
    let kc = std::fs::read_to_string(&admin).unwrap();
    assert!(
        kc.contains("client-certificate-data:") && kc.contains("client-key-data:"),
        "{kc}"
    );
    ok(KUBECTL_1_33, &admin, &["create", "namespace", "yun-other"]);
    ok(KUBECTL_1_33, &admin, &["get", "pods", "-n", "yun-other"]);
    let who = ok(
        KUBECTL_1_33,
        &admin,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    assert!(
        who.starts_with("yun-admin ") && who.contains("system:masters"),
        "{who}"
    );

    let alice = mint(&p, "alice", &[], &[]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&alice).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    for bin in [KUBECTL_1_33, KUBECTL_1_27, KUBECTL_1_20] {
        fails(
            bin,
            &alice,
            &["get", "pods", "-n", "default"],
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#,
        );
    }
    // yun's own client presents the certificate too.
    let yun_get = Command::new(common::YUN)
        .arg("--data-dir")
        .arg(&p.data)
        .args(["get", "pods", "--kubeconfig"])
        .arg(&alice)
        .output()
        .unwrap();
    assert!(!yun_get.status.success());
    assert!(
        text(&yun_get).contains(r#"User "alice" cannot list resource "pods""#),
        "{}",
        text(&yun_get)
    );
    for bin in [KUBECTL_1_33, KUBECTL_1_27] {
        let who = ok(bin, &alice, &["auth", "whoami"]);
        assert!(
            who.contains("alice") && who.contains("system:authenticated"),
            "{who}"
        );
    }

    ok(
        KUBECTL_1_33,
        &admin,
        &[
            "create",
            "role",
            "pod-reader",
            "-n",
            "default",
            "--verb=get,list,watch",
            "--resource=pods",
        ],
    );
    ok(
        KUBECTL_1_33,
        &admin,
        &[
            "create",
            "rolebinding",
            "alice-reads",
            "-n",
            "default",
            "--role=pod-reader",
            "--user=alice",
        ],
    );
    until_ok(KUBECTL_1_33, &alice, &["get", "pods", "-n", "default"]);
    ok(KUBECTL_1_20, &alice, &["get", "pods", "-n", "default"]);
    fails(
        KUBECTL_1_33,
        &alice,
        &["get", "pods", "-n", "yun-other"],
        r#"cannot list resource "pods" in API group "" in the namespace "yun-other""#,
    );
    for bin in [KUBECTL_1_33, KUBECTL_1_27] {
        assert_eq!(
            ok(
                bin,
                &alice,
                &["auth", "can-i", "list", "pods", "-n", "default"]
            )
            .trim(),
            "yes"
        );
        let no = kubectl(
            bin,
            &alice,
            &["auth", "can-i", "delete", "pods", "-n", "default"],
        );
        assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
        assert_eq!(
            ok(bin, &admin, &["auth", "can-i", "delete", "nodes"]).trim(),
            "yes"
        );
    }
    let list = ok(
        KUBECTL_1_33,
        &alice,
        &["auth", "can-i", "--list", "-n", "default"],
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
        "{list}"
    );
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );

    // Streams are checked as kube does: reading pods does not open exec (the pod stays
    // Pending: there is no node).
    ok(
        KUBECTL_1_33,
        &admin,
        &[
            "run",
            "web",
            "-n",
            "default",
            "--image=busybox",
            "--restart=Never",
        ],
    );
    fails(
        KUBECTL_1_33,
        &alice,
        &["exec", "-n", "default", "web", "--", "true"],
        r#"resource "pods/exec""#,
    );
    // A SubjectAccessReview asks about someone else (the admin may; alice may not).
    let sar = p.data.join("sar.json");
    std::fs::write(&sar, r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview",
        "spec":{"user":"alice","resourceAttributes":{"namespace":"default","verb":"list","resource":"pods"}}}"#).unwrap();
    let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let answer = ok(
        KUBECTL_1_33,
        &admin,
        &["create", "--raw", path, "-f", sar.to_str().unwrap()],
    );
    assert!(answer.contains(r#""allowed":true"#), "{answer}");
    fails(
        KUBECTL_1_33,
        &alice,
        &["create", "--raw", path, "-f", sar.to_str().unwrap()],
        "Forbidden",
    );

    // Impersonation: the admin may act as alice (and gets alice's answers); alice may not act
    // as anyone.
    ok(
        KUBECTL_1_33,
        &admin,
        &["get", "pods", "-n", "default", "--as=alice"],
    );
    fails(
        KUBECTL_1_33,
        &admin,
        &["get", "pods", "-n", "yun-other", "--as=alice"],
        r#"User "alice" cannot list resource "pods""#,
    );
    let who = ok(
        KUBECTL_1_33,
        &admin,
        &["auth", "whoami", "--as=bob", "--as-group=team"],
    );
    assert!(who.contains("bob") && who.contains("team"), "{who}");
    fails(
        KUBECTL_1_33,
        &alice,
        &["get", "pods", "-n", "default", "--as=yun-admin"],
        r#"users "yun-admin" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#,
    );

    // Escalation: an admin of one namespace may bind what they hold, not cluster-admin.
    ok(
        KUBECTL_1_33,
        &admin,
        &[
            "create",
            "rolebinding",
            "alice-admin",
            "-n",
            "yun-other",
            "--clusterrole=admin",
            "--user=alice",
        ],
    );
    until_ok(
        KUBECTL_1_33,
        &alice,
        &["get", "rolebindings", "-n", "yun-other"],
    );
    fails(
        KUBECTL_1_33,
        &alice,
        &[
            "create",
            "rolebinding",
            "grab",
            "-n",
            "yun-other",
            "--clusterrole=cluster-admin",
            "--user=alice",
        ],
        "is attempting to grant RBAC permissions not currently held",
    );
    ok(
        KUBECTL_1_33,
        &alice,
        &[
            "create",
            "rolebinding",
            "share",
            "-n",
            "yun-other",
            "--clusterrole=view",
            "--user=bob",
        ],
    );
    fails(
        KUBECTL_1_33,
        &alice,
        &[
            "create",
            "role",
            "everything",
            "-n",
            "yun-other",
            "--verb=*",
            "--resource=*.*",
        ],
        "is attempting to grant RBAC permissions not currently held",
    );
    // roleRef is immutable.
    fails(
        KUBECTL_1_33,
        &admin,
        &[
            "patch",
            "rolebinding",
            "share",
            "-n",
            "yun-other",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"edit"}}"#,
        ],
        "cannot change roleRef",
    );
}

#[test]
fn aggregated_cluster_role_gains_rules_live() {
    let p = Plane::server("rbac-agg");
    let admin = p.kubeconfig();
    let role = p.data.join("widgets.yaml");
    std::fs::write(
        &role,
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: yun-widget-viewer
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: ["example.com"]
  resources: ["widgets"]
  verbs: ["get", "list"]
"#,
    )
    .unwrap();
    let rules = |name: &str| {
        ok(
            KUBECTL_1_33,
            &admin,
            &["get", "clusterrole", name, "-o", "jsonpath={.rules}"],
        )
    };
    assert!(!rules("view").contains("widgets"));
    ok(
        KUBECTL_1_33,
        &admin,
        &["apply", "-f", role.to_str().unwrap()],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // view aggregates into edit, edit into admin: the rule travels up the chain.
    while !rules("admin").contains("widgets") {
        assert!(
            std::time::Instant::now() < deadline,
            "admin never got the rule: {}",
            rules("admin")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(rules("view").contains("widgets") && rules("edit").contains("widgets"));
    ok(
        KUBECTL_1_33,
        &admin,
        &["delete", "clusterrole", "yun-widget-viewer"],
    );
    while rules("view").contains("widgets") {
        assert!(std::time::Instant::now() < deadline, "view kept the rule");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn expired_and_foreign_certificates_get_401() {
    let p = Plane::server("rbac-certs");
    let expired = mint(&p, "alice", &[], &["--expiration", "1s"]);
    // A foreign CA: a key of its own, beside a copy of the server's kubeconfig.
    let foreign = p.data.join("foreign");
    std::fs::create_dir_all(foreign.join("pki")).unwrap();
    let key = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(foreign.join("pki/ca.key"))
        .output()
        .unwrap();
    assert!(key.status.success(), "{}", text(&key));
    std::fs::copy(p.kubeconfig(), foreign.join("kubeconfig")).unwrap();
    let out = Command::new(common::YUN)
        .arg("--data-dir")
        .arg(&foreign)
        .args([
            "kubeconfig",
            "--user",
            "mallory",
            "--group",
            "system:masters",
            "-o",
        ])
        .arg(p.data.join("mallory.kubeconfig"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for kc in [expired, p.data.join("mallory.kubeconfig")] {
        for bin in [KUBECTL_1_33, KUBECTL_1_20] {
            // 1.20 prints the Status reason; later kubectl its own words for a 401.
            let out = kubectl(bin, &kc, &["get", "pods"]);
            let t = text(&out);
            assert!(!out.status.success(), "{t}");
            assert!(
                t.contains("Unauthorized")
                    || t.contains("asked for the client to provide credentials"),
                "{bin}: {t}"
            );
        }
    }
    // Bad input: one line naming the cause, nothing written.
    let out = Command::new(common::YUN)
        .arg("--data-dir")
        .arg(p.data.join("nowhere"))
        .args(["kubeconfig", "--user", "bob", "-o"])
        .arg(p.data.join("bob.kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("pki/ca.key"), "{}", text(&out));
    assert!(!p.data.join("bob.kubeconfig").exists());
}
