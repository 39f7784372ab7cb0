//! Service accounts end to end on a real `yun up` with its agent: the `default` account and
//! `kube-root-ca.crt` in a new namespace, `kubectl create token` (1.33) giving a JWT that
//! authenticates and that PyJWT (Debian's python3-jwt) verifies against the served JWKS, the
//! tokens that must not authenticate (deleted account or pod, another audience, tampered,
//! expired), and pods: the projected credentials, the service variables, the API reached
//! from inside through the `kubernetes` Service, a missing account refused, automount off;
//! and an operator in a pod (the Python `kubernetes` client, in-cluster) bound by its Role.
//!
//! Inside the pod the test calls the API with the host's curl, run through the host's dynamic
//! loader from a read-only hostPath mount of /usr: busybox's wget has no TLS, and no other
//! image is available offline.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::plane::Plane;
use common::up::Up;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
/// Debian's python3 with python3-jwt and python3-cryptography (not a pyenv shim).
const PYTHON: &str = "/usr/bin/python3";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run133(up: &Up, args: &[&str]) -> Output {
    Command::new(KUBECTL_133)
        .arg("--kubeconfig")
        .arg(up.data.join("kubeconfig"))
        .args(args)
        .output()
        .expect("run kubectl 1.33")
}

fn ok133(up: &Up, args: &[&str]) -> String {
    let out = run133(up, args);
    assert!(
        out.status.success(),
        "kubectl 1.33 {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// curl the API server from the host, verifying it with the cluster CA; returns (status, body).
fn curl(
    up: &Up,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(up.data.join("pki/ca.crt"))
    .arg(format!("https://{}{path}", up.addr));
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    let out = c.output().expect("run curl");
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn admin_token(up: &Up) -> String {
    std::fs::read_to_string(up.data.join("pki/token"))
        .unwrap()
        .trim()
        .to_string()
}

fn status_with(up: &Up, token: &str) -> u16 {
    curl(
        up,
        "GET",
        // Discovery: open to every authenticated user, so 200 means "authenticated" and 401
        // "not", whatever RBAC grants the account.
        "/api",
        Some(token),
        None,
    )
    .0
}

/// Run a Python snippet (argv[1..] = `args`) with Debian's PyJWT.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

#[test]
fn tokens_authenticate_verify_with_the_jwks_and_stop_when_they_should() {
    assert!(Path::new(KUBECTL_133).exists(), "kubectl 1.33 is missing");
    let up = Up::start("satokens");
    up.ok(&["create", "namespace", "team"]);
    // A new namespace gets its account and the cluster CA.
    up.until(
        &["get", "serviceaccount", "default", "-n", "team"],
        20,
        |_| true,
    );
    let ca = up.until(
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
        20,
        |o| o.contains("BEGIN CERTIFICATE"),
    );
    assert_eq!(
        ca.trim(),
        std::fs::read_to_string(up.data.join("pki/ca.crt"))
            .unwrap()
            .trim()
    );

    up.ok(&["create", "serviceaccount", "robot", "-n", "team"]);
    let token = ok133(&up, &["create", "token", "robot", "-n", "team"]);
    assert_eq!(status_with(&up, &token), 200, "a fresh token authenticates");
    assert_eq!(status_with(&up, "not-a-token"), 401);

    // OIDC discovery is open to every service account (kube's
    // system:service-account-issuer-discovery), not to anonymous users; PyJWT verifies the
    // token with the JWKS alone.
    let (code, _) = curl(&up, "GET", "/openid/v1/jwks", None, None);
    assert_eq!(code, 403, "anonymous");
    let (code, discovery) = curl(
        &up,
        "GET",
        "/.well-known/openid-configuration",
        Some(&token),
        None,
    );
    assert_eq!(code, 200, "{discovery}");
    assert!(discovery.contains("/openid/v1/jwks"), "{discovery}");
    let (code, jwks) = curl(&up, "GET", "/openid/v1/jwks", Some(&token), None);
    assert_eq!(code, 200, "{jwks}");
    let verified = python(
        "import jwt, json, sys\n\
         key = jwt.PyJWK(json.loads(sys.argv[1])['keys'][0])\n\
         c = jwt.decode(sys.argv[2], key.key, algorithms=['ES256'], audience=sys.argv[3], issuer=sys.argv[3])\n\
         print(c['sub'], c['kubernetes.io']['namespace'], c['exp'] - c['iat'])",
        &[&jwks, &token, ISSUER],
    );
    assert_eq!(verified, "system:serviceaccount:team:robot team 3600");

    // TokenReview answers for a token (asked with the admin token).
    let review = |t: &str| {
        let body = format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{t}"}}}}"#
        );
        let admin = admin_token(&up);
        let path = "/apis/authentication.k8s.io/v1/tokenreviews";
        let (code, out) = curl(&up, "POST", path, Some(&admin), Some(&body));
        assert_eq!(code, 201, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"].clone()
    };
    let st = review(&token);
    assert_eq!(st["authenticated"], true, "{st}");
    assert_eq!(st["user"]["username"], "system:serviceaccount:team:robot");
    assert!(st["user"]["groups"]
        .to_string()
        .contains("system:serviceaccounts:team"));

    // Another audience, tampered bytes, too short a life.
    let vault = ok133(
        &up,
        &[
            "create",
            "token",
            "robot",
            "-n",
            "team",
            "--audience",
            "vault",
        ],
    );
    assert_eq!(
        status_with(&up, &vault),
        401,
        "a token for another audience"
    );
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let forged_payload = python(
        "import base64, json, sys\n\
         p = sys.argv[1] + '=' * (-len(sys.argv[1]) % 4)\n\
         c = json.loads(base64.urlsafe_b64decode(p))\n\
         c['kubernetes.io']['serviceaccount']['name'] = 'default'\n\
         c['sub'] = 'system:serviceaccount:team:default'\n\
         print(base64.urlsafe_b64encode(json.dumps(c).encode()).decode().rstrip('='))",
        &[&parts[1]],
    );
    parts[1] = forged_payload;
    assert_eq!(status_with(&up, &parts.join(".")), 401, "a tampered token");
    let short = run133(
        &up,
        &["create", "token", "robot", "-n", "team", "--duration", "1m"],
    );
    assert!(!short.status.success());
    assert!(
        text(&short.stderr).contains("expirationSeconds"),
        "{}",
        text(&short.stderr)
    );

    // An expired token signed with the real key (read from the data dir) is refused, while the
    // same claims still in their window pass: only the expiry differs.
    let sign = |exp_offset: &str| {
        python(
            "import jwt, json, sys, time\n\
             c = json.loads(sys.argv[2])\n\
             now = int(time.time())\n\
             c['iat'] = c['nbf'] = now - 7200\n\
             c['exp'] = now + int(sys.argv[3])\n\
             print(jwt.encode(c, open(sys.argv[1]).read(), algorithm='ES256', headers={'kid': sys.argv[4]}))",
            &[
                up.data.join("pki/sa.key").to_str().unwrap(),
                &python(
                    "import base64, sys\np = sys.argv[1] + '=' * (-len(sys.argv[1]) % 4)\nprint(base64.urlsafe_b64decode(p).decode())",
                    &[token.split('.').nth(1).unwrap()],
                ),
                exp_offset,
                &python("import json, sys\nprint(json.loads(sys.argv[1])['keys'][0]['kid'])", &[&jwks]),
            ],
        )
    };
    assert_eq!(
        status_with(&up, &sign("600")),
        200,
        "the re-signed token, in its window"
    );
    assert_eq!(status_with(&up, &sign("-60")), 401, "an expired token");

    // Deleting the account ends its tokens at once.
    up.ok(&["delete", "serviceaccount", "robot", "-n", "team"]);
    assert_eq!(status_with(&up, &token), 401, "a deleted account's token");
    assert_eq!(review(&token)["authenticated"], false);
    // Recreated under the same name it is another account (another uid): still refused.
    up.ok(&["create", "serviceaccount", "robot", "-n", "team"]);
    assert_eq!(
        status_with(&up, &token),
        401,
        "a recreated account's old token"
    );

    // The default account comes back when deleted.
    up.ok(&["delete", "serviceaccount", "default", "-n", "team"]);
    up.until(
        &["get", "serviceaccount", "default", "-n", "team"],
        20,
        |_| true,
    );
}

#[test]
fn pods_get_credentials_reach_the_api_and_are_admitted_by_their_account() {
    let up = Up::start("sapods");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&["create", "namespace", "apps"]);
    up.until(
        &["get", "configmap", "kube-root-ca.crt", "-n", "apps"],
        20,
        |_| true,
    );
    let manifest = |name: &str, extra_spec: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "apps"}},
               "spec": {{{extra_spec}
                 "terminationGracePeriodSeconds": 0,
                 "containers": [{{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                   "volumeMounts": [{{"name": "hostusr", "mountPath": "/host/usr", "readOnly": true}}]}}],
                 "volumes": [{{"name": "hostusr", "hostPath": {{"path": "/usr"}}}}]}}}}"#
        )
    };
    let apply = |m: String| {
        let f = up.data.join("pod.json");
        std::fs::write(&f, m).unwrap();
        up.kubectl(&["create", "-f", f.to_str().unwrap()])
    };
    let out = apply(manifest("caller", ""));
    assert!(out.status.success(), "{}", text(&out.stderr));
    up.until(&["get", "pod", "caller", "-n", "apps"], 40, |o| {
        o.contains("Running")
    });
    let sh = |pod: &str, script: &str| {
        up.kubectl(&["exec", "-n", "apps", pod, "--", "sh", "-c", script])
    };

    // The projected files and the variables.
    let listing = sh("caller", &format!("cat {SA_DIR}/namespace; echo; head -1 {SA_DIR}/ca.crt; stat -c %a {SA_DIR}/..data/token; env | sort"));
    let listing = text(&listing.stdout);
    assert!(
        listing.starts_with("apps\n-----BEGIN CERTIFICATE-----\n644\n"),
        "{listing}"
    );
    for var in [
        "KUBERNETES_SERVICE_HOST=10.43.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_SERVICE_PORT_HTTPS=443",
        "KUBERNETES_PORT_443_TCP=tcp://10.43.0.1:443",
    ] {
        assert!(listing.contains(var), "{var} missing: {listing}");
    }
    let write = sh("caller", &format!("touch {SA_DIR}/x"));
    assert!(
        !write.status.success(),
        "the credentials are mounted read-only"
    );

    // Another cluster on the same host, with the same default Service CIDR, programs the same
    // kubernetes Service address for its own pods: ours must still reach our API server (its
    // answer below is our RBAC's, verified with our CA).
    let other = Up::start("saother");
    other.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    let other_table = format!("yunproxy_{}", other.node_flags[1]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rules = Command::new("nft")
            .args(["list", "table", "ip", &other_table])
            .output()
            .unwrap();
        if text(&rules.stdout).contains("10.43.0.1 tcp dport 443") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other cluster never programmed its kubernetes Service"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // From inside: the API through the kubernetes Service, TLS checked with ca.crt.
    let call = format!(
        "L=/host/usr/lib/x86_64-linux-gnu; $L/ld-linux-x86-64.so.2 --library-path $L /host/usr/bin/curl \
         -sS --max-time 10 --cacert {SA_DIR}/ca.crt -H \"Authorization: Bearer $(cat {SA_DIR}/token)\" \
         https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$(cat {SA_DIR}/namespace)/pods"
    );
    // Without a grant the account may not list pods: kube's 403 naming it. The node programs
    // the kubernetes Service's address asynchronously (as kube-proxy does): the first calls
    // of a loaded machine may find no route yet, so the call is repeated until it is answered.
    let mut body = String::new();
    let mut said = String::new();
    for _ in 0..10 {
        let got = sh("caller", &call);
        body = text(&got.stdout);
        said = text(&got.stderr);
        if !body.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        body.contains("\"code\":403")
            && body.contains(
                "User \\\"system:serviceaccount:apps:default\\\" cannot list resource \\\"pods\\\""
            ),
        "{body}{said}"
    );
    // A Role and a RoleBinding to the account allow it.
    up.ok(&[
        "create",
        "role",
        "pod-reader",
        "-n",
        "apps",
        "--verb=get,list",
        "--resource=pods",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "pod-reader",
        "-n",
        "apps",
        "--role=pod-reader",
        "--serviceaccount=apps:default",
    ]);
    let mut body = String::new();
    for _ in 0..50 {
        let got = sh("caller", &call);
        body = text(&got.stdout) + &text(&got.stderr);
        if body.contains("\"kind\":\"PodList\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        body.contains("\"kind\":\"PodList\"") && body.contains("\"caller\""),
        "{body}"
    );

    // The pod's token is bound to the pod: it authenticates, and stops when the pod goes.
    let token = text(&sh("caller", &format!("cat {SA_DIR}/token")).stdout);
    assert_eq!(status_with(&up, &token), 200);
    let claims = python(
        "import base64, json, sys\np = sys.argv[1] + '=' * (-len(sys.argv[1]) % 4)\nc = json.loads(base64.urlsafe_b64decode(p))\nprint(c['kubernetes.io']['pod']['name'], c['exp'] - c['iat'])",
        &[token.split('.').nth(1).unwrap()],
    );
    assert_eq!(claims, "caller 3607");
    up.ok(&["delete", "pod", "caller", "-n", "apps", "--wait=false"]);
    up.until(&["get", "pods", "-n", "apps", "-o", "name"], 30, |o| {
        !o.contains("caller")
    });
    assert_eq!(status_with(&up, &token), 401, "a deleted pod's token");

    // A pod naming a missing account is refused; nothing is stored.
    let out = apply(manifest("ghosted", r#""serviceAccountName": "ghost","#));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("Forbidden") && err.contains("error looking up service account apps/ghost"),
        "{err}"
    );
    assert!(
        up.kubectl(&["get", "pod", "ghosted", "-n", "apps"])
            .status
            .code()
            != Some(0)
    );

    // automountServiceAccountToken: false on the pod, or on its account: no credentials.
    let out = apply(manifest(
        "plain",
        r#""automountServiceAccountToken": false,"#,
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    up.ok(&["create", "serviceaccount", "quiet", "-n", "apps"]);
    up.ok(&[
        "patch",
        "serviceaccount",
        "quiet",
        "-n",
        "apps",
        "-p",
        r#"{"automountServiceAccountToken": false}"#,
    ]);
    let out = apply(manifest("quiet", r#""serviceAccountName": "quiet","#));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for pod in ["plain", "quiet"] {
        let vols = up.ok(&[
            "get",
            "pod",
            pod,
            "-n",
            "apps",
            "-o",
            "jsonpath={.spec.volumes[*].name}",
        ]);
        assert_eq!(vols.trim(), "hostusr", "{pod}");
        up.until(&["get", "pod", pod, "-n", "apps"], 40, |o| {
            o.contains("Running")
        });
        let seen = sh(
            pod,
            "test -e /var/run/secrets/kubernetes.io && echo present || echo absent",
        );
        assert_eq!(text(&seen.stdout).trim(), "absent", "{pod}");
    }
}

#[test]
fn the_kubernetes_service_is_kept_and_points_at_the_advertised_address() {
    let plane = Plane::server_with("saadv", &["--advertise-address", "192.0.2.10:6443"]);
    let ep = plane.json(&["get", "endpoints", "kubernetes"]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.0.2.10", "{ep}");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443, "{ep}");
    let svc = plane.json(&["get", "service", "kubernetes"]);
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1", "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443, "{svc}");
    // The serving certificate names what pods dial.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(plane.data.join("pki/server.crt"))
        .output()
        .unwrap();
    let sans = text(&out.stdout);
    for san in [
        "IP Address:10.43.0.1",
        "DNS:kubernetes.default.svc",
        "IP Address:192.0.2.10",
    ] {
        assert!(sans.contains(san), "{san} missing: {sans}");
    }
    // The server keeps it: deleted, it comes back.
    plane.ok(&["delete", "service", "kubernetes"]);
    plane.until(&["get", "service", "kubernetes", "-o", "name"], 25, |o| {
        o.contains("service/kubernetes")
    });
}

/// The operator of [`an_operator_in_a_pod_is_bound_by_its_role`]: Debian's Python `kubernetes`
/// client (`python3-kubernetes`), configured in-cluster (service variables, the projected token
/// and CA), copies each ConfigMap labelled `yun-op=src` to `NAME-copy` with its values
/// upper-cased; API errors are printed and retried with backoff.
const OPERATOR_PY: &str = r#"
import time
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_incluster_config()
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
v1 = client.CoreV1Api()
print("operator started in", ns, flush=True)
delay = 0.5
while True:
    try:
        for ev in watch.Watch().stream(v1.list_namespaced_config_map, ns,
                                       label_selector="yun-op=src", timeout_seconds=30):
            if ev["type"] == "DELETED":
                continue
            src = ev["object"]
            name = src.metadata.name + "-copy"
            body = {"metadata": {"name": name, "labels": {"yun-op": "copy"}},
                    "data": {k: v.upper() for k, v in (src.data or {}).items()}}
            try:
                v1.create_namespaced_config_map(ns, body)
            except ApiException as e:
                if e.status != 409:
                    raise
                v1.patch_namespaced_config_map(name, ns, body)
            print("copied", src.metadata.name, flush=True)
        delay = 0.5
    except ApiException as e:
        print("api error", e.status, e.reason, flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 2)
"#;

/// A small operator runs *inside* a pod with its ServiceAccount's token, through the Python
/// `kubernetes` client's in-cluster configuration: refused (403) until a Role grants it
/// ConfigMaps, then doing its work, and refused again the moment the grant is removed.
#[test]
fn an_operator_in_a_pod_is_bound_by_its_role() {
    let up = Up::start("saop");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&["create", "namespace", "ops"]);
    up.ok(&["create", "serviceaccount", "copier", "-n", "ops"]);
    let script = up.data.join("op.py");
    std::fs::write(&script, OPERATOR_PY).unwrap();
    up.ok(&[
        "create",
        "configmap",
        "operator-code",
        "-n",
        "ops",
        &format!("--from-file=op.py={}", script.display()),
    ]);
    // The image is busybox: the operator runs the host's Debian Python from a read-only
    // hostPath of /usr, through the host's dynamic loader (as the curl above).
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator", "namespace": "ops"},
      "spec": {"serviceAccountName": "copier", "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "op", "image": "busybox",
          "command": ["sh", "-c", "L=/host/usr/lib/x86_64-linux-gnu; PYTHONHOME=/host/usr exec $L/ld-linux-x86-64.so.2 --library-path $L /host/usr/bin/python3 -s -W ignore /op/op.py"],
          "volumeMounts": [{"name": "hostusr", "mountPath": "/host/usr", "readOnly": true},
                           {"name": "code", "mountPath": "/op"}]}],
        "volumes": [{"name": "hostusr", "hostPath": {"path": "/usr"}},
                    {"name": "code", "configMap": {"name": "operator-code"}}]}}"#;
    let f = up.data.join("operator.json");
    std::fs::write(&f, pod).unwrap();
    up.ok(&["create", "-f", f.to_str().unwrap()]);
    let source = |name: &str, greeting: &str| {
        let f = up.data.join(format!("{name}.json"));
        let cm = format!(
            r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{name}",
                 "namespace": "ops", "labels": {{"yun-op": "src"}}}}, "data": {{"greeting": "{greeting}"}}}}"#
        );
        std::fs::write(&f, cm).unwrap();
        up.ok(&["create", "-f", f.to_str().unwrap()]);
    };
    let logs = |secs: u64, want: &str| {
        up.until(&["logs", "operator", "-n", "ops"], secs, |o| {
            o.contains(want)
        })
    };
    // No grant: the client's list is refused with 403, and the operator keeps retrying.
    let out = logs(60, "api error 403 Forbidden");
    assert!(out.contains("operator started in ops"), "{out}");
    source("src", "hello");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        up.kubectl(&["get", "configmap", "src-copy", "-n", "ops"])
            .status
            .code()
            != Some(0),
        "nothing copied without a grant"
    );
    // A Role for ConfigMaps bound to the account: the operator does its work.
    up.ok(&[
        "create",
        "role",
        "copier",
        "-n",
        "ops",
        "--verb=get,list,watch,create,patch",
        "--resource=configmaps",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "copier",
        "-n",
        "ops",
        "--role=copier",
        "--serviceaccount=ops:copier",
    ]);
    logs(30, "copied src");
    let copied = up.until(
        &[
            "get",
            "configmap",
            "src-copy",
            "-n",
            "ops",
            "-o",
            "jsonpath={.data.greeting}",
        ],
        10,
        |o| !o.is_empty(),
    );
    assert_eq!(copied.trim(), "HELLO");
    // The grant withdrawn: its next write is refused although its watch still runs.
    up.ok(&["delete", "rolebinding", "copier", "-n", "ops"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    source("src2", "again");
    let out = up.until(&["logs", "operator", "-n", "ops"], 30, |o| {
        o.matches("api error 403").count() >= 2 || o.contains("copied src2")
    });
    assert!(
        !out.contains("copied src2"),
        "copied without a grant: {out}"
    );
    assert!(
        up.kubectl(&["get", "configmap", "src2-copy", "-n", "ops"])
            .status
            .code()
            != Some(0)
    );
}
