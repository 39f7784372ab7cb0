//! `yun server` driven by Debian's kubectl 1.20, curl, and yun's own client verbs.
//!
//! Each test runs the built binary on a free loopback port with its own data dir; a guard
//! kills the server and removes the dir on drop, also when an assertion fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const YUN: &str = env!("CARGO_BIN_EXE_yun");
/// Debian's kubectl 1.20 (scripts/deps.sh extracts it); /usr/bin/kubectl is another version.
const KUBECTL: &str = "/var/cache/yun-kubectl/usr/bin/kubectl";

static N: AtomicUsize = AtomicUsize::new(0);

struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// `yun controller-manager`, for tests that need the control loops.
    controllers: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.controllers.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Server {
    fn start(name: &str) -> Server {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!(
            "/tmp/yun-test-server-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let child = Command::new(YUN)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["server", "--addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn yun server");
        let server = Server {
            child,
            dir,
            port,
            controllers: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(server.kubeconfig().exists()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        {
            assert!(Instant::now() < deadline, "yun server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Run the controller manager against this server (a namespace ends only through the
    /// namespace controller, as on Kubernetes).
    fn start_controllers(&mut self) {
        let child = Command::new(YUN)
            .args(["controller-manager", "--kubeconfig"])
            .arg(self.kubeconfig())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn yun controller-manager");
        self.controllers = Some(child);
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("data/kubeconfig")
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/pki/token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        c.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", &self.dir)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args);
        c
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Run kubectl, assert success, return stdout.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_cmd(args).output().expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl expecting failure; return stderr.
    fn kubectl_fails(&self, args: &[&str]) -> String {
        let out = self.kubectl_cmd(args).output().expect("run kubectl");
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// curl with the admin token (or none); returns (HTTP code, body).
    fn curl(&self, method: &str, path: &str, ctype: &str, body: &[u8], auth: bool) -> (u16, Value) {
        let body_file = self
            .dir
            .join(format!("body-{}", N.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&body_file, body).unwrap();
        let mut c = Command::new("curl");
        c.args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(self.dir.join("data/pki/ca.crt"))
            .args(["-H", &format!("Content-Type: {ctype}")]);
        if auth {
            c.args(["-H", &format!("Authorization: Bearer {}", self.token())]);
        }
        if !body.is_empty() {
            c.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        let out = c.arg(self.url(path)).output().expect("run curl");
        let _ = std::fs::remove_file(&body_file);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        (code.trim().parse().unwrap_or(0), value)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn yun(&self, args: &[&str]) -> Output {
        Command::new(YUN)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .expect("run yun")
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  mode: fast
"#;

#[test]
fn kubectl_workflow() {
    let mut srv = Server::start("kubectl");
    let version = srv.kubectl(&["version"]);
    assert!(
        version.contains("Server Version") && version.contains("Minor:\"33\""),
        "{version}"
    );

    assert!(srv
        .kubectl(&["create", "namespace", "team"])
        .contains("namespace/team created"));
    let ns = srv.kubectl(&["get", "namespaces"]);
    assert!(
        ns.contains("team") && ns.contains("Active") && ns.contains("default"),
        "{ns}"
    );

    let file = srv.write("app.yaml", DEPLOYMENT);
    let first = srv.kubectl(&["apply", "-n", "team", "-f", s(&file)]);
    assert!(first.contains("deployment.apps/web created"), "{first}");
    assert!(first.contains("configmap/settings created"), "{first}");
    let second = srv.kubectl(&["apply", "-n", "team", "-f", s(&file)]);
    assert!(second.contains("deployment.apps/web unchanged"), "{second}");
    assert!(second.contains("configmap/settings unchanged"), "{second}");

    let listed = srv.kubectl(&["get", "deploy,cm", "-n", "team", "-l", "app=web"]);
    assert!(
        listed.contains("web") && listed.contains("settings"),
        "{listed}"
    );
    assert!(srv
        .kubectl(&["get", "cm", "-n", "team", "-l", "app!=web"])
        .is_empty());

    let json: Value =
        serde_json::from_str(&srv.kubectl(&["get", "deploy", "web", "-n", "team", "-o", "json"]))
            .unwrap();
    assert_eq!(json["spec"]["replicas"], 2);
    assert_eq!(json["metadata"]["generation"], 1);
    let image = srv.kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "team",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "nginx:1.25");
    let wide = srv.kubectl(&["get", "deploy", "-n", "team", "-o", "wide"]);
    assert!(
        wide.contains("SELECTOR") && wide.contains("app=web") && wide.contains("nginx:1.25"),
        "{wide}"
    );

    assert!(srv
        .kubectl(&["scale", "-n", "team", "deployment/web", "--replicas=5"])
        .contains("scaled"));
    let replicas = srv.kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "team",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "5");

    let patched = srv.kubectl(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "team",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    assert!(patched.contains("patched"), "{patched}");
    let stale = srv.kubectl(&["get", "cm", "settings", "-n", "team", "-o", "yaml"]);
    let stale_file = srv.write("stale.yaml", &stale);
    srv.kubectl(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "team",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mode":"x"}}"#,
    ]);
    let err = srv.kubectl_fails(&["replace", "-f", s(&stale_file)]);
    assert!(
        err.contains("Conflict") || err.contains("the object has been modified"),
        "{err}"
    );

    let resources = srv.kubectl(&["api-resources"]);
    for want in [
        "pods",
        "po",
        "deployments",
        "deploy",
        "leases",
        "runtimeclasses",
        "customresourcedefinitions",
    ] {
        assert!(
            resources.contains(want),
            "api-resources lacks {want}: {resources}"
        );
    }

    assert!(srv
        .kubectl(&["delete", "-n", "team", "deployment", "web"])
        .contains("deleted"));
    let err = srv.kubectl_fails(&["get", "-n", "team", "deployment", "web"]);
    assert!(err.contains("NotFound"), "{err}");
    // `kubectl delete namespace` waits until the namespace controller has emptied it.
    srv.start_controllers();
    srv.kubectl(&["delete", "namespace", "team"]);
    let err = srv.kubectl_fails(&["get", "namespace", "team"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn kubectl_get_watch_sees_new_object() {
    let srv = Server::start("watch");
    let mut watch = srv
        .kubectl_cmd(&["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch is up once kubectl has listed (nothing yet); give it a moment to connect.
    std::thread::sleep(Duration::from_millis(800));
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"late"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let out = srv.kubectl_stdin(&["create", "-f", "-"], pod);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("late") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        found,
        "kubectl get -w did not show the new pod; saw {seen:?}"
    );
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer}
"#;

#[test]
fn kubectl_custom_resources() {
    let srv = Server::start("crd");
    let crd = srv.write("crd.yaml", CRD);
    assert!(srv.kubectl(&["apply", "-f", s(&crd)]).contains("created"));
    let w = srv.write(
        "w.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 5}\n",
    );
    assert!(srv
        .kubectl(&["apply", "-f", s(&w)])
        .contains("widget.example.com/w1 created"));
    let listed = srv.kubectl(&["get", "widgets"]);
    assert!(listed.contains("w1") && listed.contains("w2"), "{listed}");
    let short = srv.kubectl(&["get", "wd", "w2", "-o", "jsonpath={.spec.size}"]);
    assert_eq!(short, "5");
    // kubectl now validates client-side too (the CRD's schema is in /openapi/v2); without
    // that, the server's own check answers.
    let bad = srv.kubectl_stdin(
        &["create", "--validate=false", "-f", "-"],
        r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w3"},"spec":{}}"#,
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("spec.size"), "{err}");
    assert!(srv
        .kubectl(&["delete", "crd", "widgets.example.com"])
        .contains("deleted"));
    let (code, _) = srv.curl(
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets",
        "application/json",
        b"",
        true,
    );
    assert_eq!(code, 404);
}

#[test]
fn anonymous_curl_is_forbidden() {
    // As kube-apiserver: no credentials is system:anonymous, which RBAC's defaults let see
    // /healthz and /version only.
    let srv = Server::start("anon");
    let (code, body) = srv.curl("GET", "/api/v1/namespaces", "application/json", b"", false);
    assert_eq!(code, 403);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    let (code, _) = srv.curl("GET", "/version", "application/json", b"", false);
    assert_eq!(code, 200);
    let (code, _) = srv.curl("GET", "/api/v1/namespaces", "application/json", b"", true);
    assert_eq!(code, 200);
}

#[test]
fn bad_input_gets_status_errors() {
    let srv = Server::start("bad");
    let pods = "/api/v1/namespaces/default/pods";
    let (code, body) = srv.curl("POST", pods, "application/json", b"{\"metadata\": ", true);
    assert_eq!(
        (code, body["reason"].as_str()),
        (400, Some("BadRequest")),
        "{body}"
    );
    let (code, _) = srv.curl(
        "POST",
        pods,
        "application/yaml",
        b"metadata: [unclosed",
        true,
    );
    assert_eq!(code, 400);
    let (code, _) = srv.curl(
        "GET",
        "/api/v1/namespaces/default/gizmos",
        "application/json",
        b"",
        true,
    );
    assert_eq!(code, 404);
    let (code, _) = srv.curl(
        "GET",
        "/apis/nope.example/v9/things",
        "application/json",
        b"",
        true,
    );
    assert_eq!(code, 404);

    let pod = |name: &str, spec: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{spec}}}"#
        )
    };
    let ok_spec = r#"{"containers":[{"name":"c","image":"busybox"}]}"#;
    let (code, body) = srv.curl(
        "POST",
        pods,
        "application/json",
        pod("Not_Valid", ok_spec).as_bytes(),
        true,
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    let (code, body) = srv.curl(
        "POST",
        pods,
        "application/json",
        pod("empty", "{}").as_bytes(),
        true,
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.containers");
    let (code, body) = srv.curl(
        "POST",
        pods,
        "application/json",
        pod("typed", r#"{"containers":"no"}"#).as_bytes(),
        true,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = srv.curl(
        "POST",
        pods,
        "application/json",
        br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}"#,
        true,
    );
    assert_eq!(code, 400, "{body}");

    let (code, created) = srv.curl(
        "POST",
        pods,
        "application/json",
        pod("good", ok_spec).as_bytes(),
        true,
    );
    assert_eq!(code, 201, "{created}");
    let (code, _) = srv.curl("PATCH", &format!("{pods}/good"), "text/plain", b"{}", true);
    assert_eq!(code, 415);
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = "1".into();
    let (code, body) = srv.curl(
        "PUT",
        &format!("{pods}/good"),
        "application/json",
        stale.to_string().as_bytes(),
        true,
    );
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );

    let big = "x".repeat(1600 * 1024);
    let cm = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{big}"}}}}"#
    );
    let (code, body) = srv.curl(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        cm.as_bytes(),
        true,
    );
    assert_eq!(code, 413, "{body}");
    let (code, _) = srv.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps/big",
        "application/json",
        b"",
        true,
    );
    assert_eq!(code, 404, "nothing half-written");
    let (code, body) = srv.curl(
        "GET",
        "/api/v1/pods?watch=1&resourceVersion=abc",
        "application/json",
        b"",
        true,
    );
    assert_eq!(code, 400, "{body}");
    let (code, _) = srv.curl(
        "GET",
        "/api/v1/pods?labelSelector=a%20in%20b",
        "application/json",
        b"",
        true,
    );
    assert_eq!(code, 400);
}

#[test]
fn yun_client_verbs() {
    let srv = Server::start("verbs");
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let file = srv.write("app.yaml", DEPLOYMENT);
    let out = srv.yun(&["apply", "-f", s(&file)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("deployment.apps/web created"),
        "{}",
        text(&out)
    );
    let out = srv.yun(&["apply", "-f", s(&file)]);
    assert!(
        text(&out).contains("deployment.apps/web unchanged"),
        "{}",
        text(&out)
    );
    let changed = srv.write(
        "changed.yaml",
        &DEPLOYMENT.replace("mode: fast", "mode: slow"),
    );
    let out = srv.yun(&["apply", "-f", s(&changed)]);
    assert!(
        text(&out).contains("configmap/settings configured"),
        "{}",
        text(&out)
    );

    let out = srv.yun(&["get", "deploy"]);
    let table = text(&out);
    assert!(
        table.contains("NAME") && table.contains("READY") && table.contains("web"),
        "{table}"
    );
    let out = srv.yun(&["get", "cm", "-l", "app=web", "-o", "wide"]);
    assert!(text(&out).contains("settings"), "{}", text(&out));
    let out = srv.yun(&["get", "cm", "settings", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["mode"], "slow");
    let out = srv.yun(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(text(&out).contains("replicas: 2"), "{}", text(&out));

    let out = srv.yun(&["scale", "deployment/web", "--replicas", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = srv.yun(&["describe", "deploy", "web"]);
    let d = text(&out);
    assert!(
        d.contains("Name:         web") && d.contains("replicas: 4"),
        "{d}"
    );

    let out = srv.yun(&["delete", "cm", "settings"]);
    assert!(
        text(&out).contains("configmap \"settings\" deleted"),
        "{}",
        text(&out)
    );
    let out = srv.yun(&["delete", "-f", s(&file)]);
    assert!(
        !out.status.success(),
        "deleting an already deleted configmap fails"
    );
    let out = srv.yun(&["get", "deploy", "web"]);
    assert!(!out.status.success());
    let out = srv.yun(&["get", "gizmos"]);
    assert!(
        !out.status.success() && text(&out).contains("gizmos"),
        "{}",
        text(&out)
    );
    let bad = srv.write("bad.yaml", "kind: [");
    let out = srv.yun(&["apply", "-f", s(&bad)]);
    assert!(
        !out.status.success() && text(&out).contains("bad.yaml"),
        "{}",
        text(&out)
    );
}

#[test]
fn kubectl_apply_changed_manifest_merges_lists() {
    let srv = Server::start("smp");
    let two = DEPLOYMENT
        .split("---")
        .next()
        .unwrap()
        .replace(
            "        ports:\n        - containerPort: 80\n",
            "        env:\n        - {name: A, value: \"1\"}\n      - name: side\n        image: busybox\n",
        );
    let f = srv.write("two.yaml", &two);
    srv.kubectl(&["apply", "-f", s(&f)]);
    // Drop the sidecar and bump the image: kubectl sends a strategic merge patch.
    let one = two
        .replace("nginx:1.25", "nginx:1.26")
        .replace("      - name: side\n        image: busybox\n", "");
    let f = srv.write("one.yaml", &one);
    assert!(srv.kubectl(&["apply", "-f", s(&f)]).contains("configured"));
    let got = srv.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image};{end}",
    ]);
    assert_eq!(got, "nginx=nginx:1.26;");
    let generation = srv.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, "2");
}
