//! The protobuf codec against real clients: kubectl 1.33 and 1.27 (which send and accept
//! `application/vnd.kubernetes.protobuf` for built-in kinds) and curl for protobuf lists,
//! watches, custom resources and content negotiation, against `yun server`.
//!
//! Each test runs the built binary on a free loopback port with its own data dir; a guard
//! kills the server and removes the dir on drop, also when an assertion fails.

mod common;

use common::plane::Plane;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Scratch file names for curl.
static N: AtomicUsize = AtomicUsize::new(0);

/// `yun server` (the shared harness) with a scratch dir for kubectl caches and files.
struct Server {
    plane: Plane,
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn start(name: &str) -> Server {
        let plane = Plane::server(&format!("pb-{name}"));
        let dir = plane.data.join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        let port = plane.port();
        Server { plane, dir, port }
    }

    fn kubectl_cmd(&self, kubectl: &str, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl);
        c.env("KUBECONFIG", self.plane.kubeconfig())
            .env("HOME", &self.dir)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args);
        c
    }

    fn kubectl(&self, kubectl: &str, args: &[&str]) -> Output {
        self.kubectl_cmd(kubectl, args)
            .output()
            .expect("run kubectl")
    }

    fn ok(&self, kubectl: &str, args: &[&str]) -> String {
        let out = self.kubectl(kubectl, args);
        assert!(
            out.status.success(),
            "{kubectl} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// curl with the admin token: (HTTP code, content type, body bytes).
    fn curl(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let body_file = self.dir.join(format!("body-{n}"));
        let head_file = self.dir.join(format!("head-{n}"));
        std::fs::write(&body_file, body).unwrap();
        let token = std::fs::read_to_string(self.plane.data.join("pki/token")).unwrap();
        let mut c = Command::new("curl");
        c.args(["-sk", "--max-time", "5", "-X", method, "-D"])
            .arg(&head_file)
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())]);
        for h in headers {
            c.args(["-H", h]);
        }
        if !body.is_empty() {
            c.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        let out = c
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("run curl");
        let head = std::fs::read_to_string(&head_file).unwrap_or_default();
        let code = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let ctype = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        (code, ctype, out.stdout)
    }
}

/// The request and response content types kubectl logged at -v=8.
fn logged_types(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once("Content-Type: ")
                .map(|(_, t)| t.trim().to_string())
        })
        .collect()
}

/// The same steps with each kubectl. 1.33's typed clients (create, describe's events) send
/// and accept protobuf; 1.27's kubectl is JSON throughout, and must keep working.
fn workflow(kubectl: &str, protobuf: bool) {
    let srv = Server::start("wf");
    let k = |args: &[&str]| srv.ok(kubectl, args);
    let out = srv.kubectl(kubectl, &["create", "namespace", "yunpb", "-v=8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    if protobuf {
        // The body went as protobuf (the Content-Type line logged for the request).
        let types = logged_types(&err);
        assert!(
            types.iter().any(|t| t.starts_with(PROTOBUF)),
            "kubectl did not talk protobuf: {types:?}"
        );
        assert!(err.contains(&format!("Accept: {PROTOBUF}")), "{err}");
    }
    k(&[
        "-n",
        "yunpb",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
    ]);
    k(&[
        "-n",
        "yunpb",
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=pw=s3cr3t",
    ]);
    k(&[
        "-n",
        "yunpb",
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=0",
    ]);
    k(&[
        "-n",
        "yunpb",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
    ]);
    // What was stored is what was sent: read back as JSON.
    let cm: serde_json::Value = serde_json::from_str(&k(&[
        "-n",
        "yunpb",
        "get",
        "configmap",
        "cfg",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(cm["data"]["a"], "1");
    assert!(cm["metadata"]["creationTimestamp"].is_string(), "{cm}");
    let sec: serde_json::Value =
        serde_json::from_str(&k(&["-n", "yunpb", "get", "secret", "sec", "-o", "json"])).unwrap();
    assert_eq!(sec["data"]["pw"], "czNjcjN0");
    let dep: serde_json::Value = serde_json::from_str(&k(&[
        "-n",
        "yunpb",
        "get",
        "deployment",
        "web",
        "-o",
        "json",
    ]))
    .unwrap();
    // A zero that matters (a pointer in Go) survives the protobuf request.
    assert_eq!(dep["spec"]["replicas"], 0, "{dep}");
    let svc: serde_json::Value =
        serde_json::from_str(&k(&["-n", "yunpb", "get", "service", "web", "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    // Lists, tables and describe.
    let names = k(&[
        "-n",
        "yunpb",
        "get",
        "configmaps,secrets,deployments,services",
        "-o",
        "name",
    ]);
    for n in [
        "configmap/cfg",
        "secret/sec",
        "deployment.apps/web",
        "service/web",
    ] {
        assert!(names.contains(n), "{n} missing from {names}");
    }
    assert!(k(&["-n", "yunpb", "get", "deployments"]).contains("web"));
    assert!(k(&["-n", "yunpb", "describe", "configmap", "cfg"]).contains("Name:"));
    // Edit by patch (a JSON patch body; kubectl reads the answer as JSON).
    k(&[
        "-n",
        "yunpb",
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    assert_eq!(
        k(&[
            "-n",
            "yunpb",
            "get",
            "configmap",
            "cfg",
            "-o",
            "jsonpath={.data.b}"
        ]),
        "2"
    );
    // Delete sends DeleteOptions. With no controller manager here the namespace stays
    // Terminating (its content is the namespace loop's to delete), so kubectl does not wait.
    k(&["-n", "yunpb", "delete", "configmap", "cfg"]);
    k(&["delete", "namespace", "yunpb", "--wait=false"]);
    assert_eq!(
        k(&[
            "get",
            "namespace",
            "yunpb",
            "-o",
            "jsonpath={.status.phase}"
        ]),
        "Terminating"
    );
    let out = srv.kubectl(kubectl, &["-n", "yunpb", "get", "configmap", "cfg"]);
    assert!(!out.status.success());
    // A Status error in protobuf is still read as one by kubectl.
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn kubectl_1_33_talks_protobuf() {
    workflow(KUBECTL_133, true);
}

#[test]
fn kubectl_1_27_workflow() {
    workflow(KUBECTL_127, false);
}

#[test]
fn kubectl_1_33_get_watch() {
    let srv = Server::start("watch");
    let mut watch = srv
        .kubectl_cmd(KUBECTL_133, &["get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    srv.ok(
        KUBECTL_133,
        &["create", "configmap", "late", "--from-literal=a=1"],
    );
    std::thread::sleep(Duration::from_millis(800));
    let _ = watch.kill();
    let mut text = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = watch.wait();
    assert!(
        text.contains("configmap/late"),
        "kubectl get -w saw {text:?}"
    );
}

/// The protobuf fields of one message: (tag, bytes) for length-delimited ones.
fn fields(mut b: &[u8]) -> Vec<(u64, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        match key & 7 {
            0 => {
                varint(&mut b);
            }
            2 => {
                let n = varint(&mut b) as usize;
                out.push((key >> 3, b[..n].to_vec()));
                b = &b[n..];
            }
            other => panic!("unexpected wire type {other}"),
        }
    }
    out
}

/// The typeMeta kind and raw message of an enveloped object.
fn unwrap_envelope(b: &[u8]) -> (String, Vec<u8>) {
    assert_eq!(
        &b[..4],
        b"k8s\0",
        "no magic: {:?}",
        String::from_utf8_lossy(b)
    );
    let f = fields(&b[4..]);
    let type_meta = fields(&f.iter().find(|(t, _)| *t == 1).unwrap().1);
    let kind =
        String::from_utf8(type_meta.iter().find(|(t, _)| *t == 2).unwrap().1.clone()).unwrap();
    let raw = f
        .iter()
        .find(|(t, _)| *t == 2)
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    (kind, raw)
}

#[test]
fn curl_protobuf_lists_watches_and_negotiation() {
    let srv = Server::start("curl");
    srv.ok(
        KUBECTL_133,
        &["create", "configmap", "one", "--from-literal=a=1"],
    );
    let accept = format!("Accept: {PROTOBUF}, application/json");
    // A list in protobuf: ConfigMapList whose items (field 2) hold the object.
    let (code, ctype, body) = srv.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[&accept],
        b"",
    );
    assert_eq!((code, ctype.as_str()), (200, PROTOBUF));
    let (kind, raw) = unwrap_envelope(&body);
    assert_eq!(kind, "ConfigMapList");
    let items: Vec<_> = fields(&raw).into_iter().filter(|(t, _)| *t == 2).collect();
    assert_eq!(items.len(), 1);
    assert!(String::from_utf8_lossy(&items[0].1).contains("one"));
    // One object in protobuf, transcoded from the stored text with its resourceVersion.
    let (code, ctype, body) = srv.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps/one",
        &[&accept],
        b"",
    );
    assert_eq!((code, ctype.as_str()), (200, PROTOBUF));
    let (kind, raw) = unwrap_envelope(&body);
    assert_eq!(kind, "ConfigMap");
    let meta = fields(&fields(&raw).into_iter().find(|(t, _)| *t == 1).unwrap().1);
    assert_eq!(meta.iter().find(|(t, _)| *t == 1).unwrap().1, b"one");
    let rv = &meta
        .iter()
        .find(|(t, _)| *t == 6)
        .expect("a resourceVersion")
        .1;
    assert!(String::from_utf8_lossy(rv).parse::<u64>().is_ok(), "{rv:?}");
    // A watch in protobuf: 4-byte length frames of WatchEvent{type, object{raw: envelope}}.
    let (code, ctype, body) = srv.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1",
        &[&accept],
        b"",
    );
    assert_eq!(code, 200);
    assert!(
        ctype.starts_with(PROTOBUF) && ctype.contains("stream=watch"),
        "{ctype}"
    );
    let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    let ev = fields(&body[4..4 + len]);
    assert_eq!(ev[0].1, b"ADDED");
    let ext = fields(&ev[1].1);
    let (kind, _) = unwrap_envelope(&ext[0].1);
    assert_eq!(kind, "ConfigMap");
    // Metadata clients get PartialObjectMetadataList.
    let meta = "Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (code, _, body) = srv.curl("GET", "/api/v1/namespaces/default/configmaps", &[meta], b"");
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (code, list["kind"].as_str()),
        (200, Some("PartialObjectMetadataList"))
    );
    assert_eq!(list["items"][0]["metadata"]["name"], "one");
    assert!(list["items"][0].get("data").is_none(), "{list}");
    // A protobuf body for a custom resource is 415 (custom resources are JSON only) …
    let crd = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},"spec":{"group":"example.com","scope":"Namespaced","names":{"plural":"widgets","kind":"Widget"},"versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#;
    let (code, _, _) = srv.curl(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &["Content-Type: application/json"],
        crd.as_bytes(),
    );
    assert_eq!(code, 201);
    let field = |tag: u8, b: &[u8]| [&[tag << 3 | 2, b.len() as u8][..], b].concat();
    let type_meta = [field(1, b"example.com/v1"), field(2, b"Widget")].concat();
    let pb_cr = [b"k8s\0".to_vec(), field(1, &type_meta)].concat();
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let (code, _, body) = srv.curl(
            "POST",
            widgets,
            &[&format!("Content-Type: {PROTOBUF}")],
            &pb_cr,
        );
        if code != 404 || Instant::now() > deadline {
            let text = String::from_utf8_lossy(&body).into_owned();
            assert!(code != 415 || text.contains("Widget"), "{text}");
            break code;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 415);
    // … and a protobuf Accept with a JSON fallback gets JSON for one.
    let (code, ctype, _) = srv.curl("GET", widgets, &[&accept], b"");
    assert_eq!((code, ctype.as_str()), (200, "application/json"));
    let (code, _, _) = srv.curl("GET", widgets, &[&format!("Accept: {PROTOBUF}")], b"");
    assert_eq!(code, 406);
    // Unknown media types: 406 for Accept, 415 for Content-Type, each naming the type.
    let (code, _, body) = srv.curl("GET", "/api/v1/namespaces", &["Accept: text/html"], b"");
    assert_eq!(code, 406);
    assert!(String::from_utf8_lossy(&body).contains("text/html"));
    let (code, _, body) = srv.curl(
        "POST",
        "/api/v1/namespaces",
        &["Content-Type: text/csv"],
        b"a,b",
    );
    assert_eq!(code, 415);
    assert!(String::from_utf8_lossy(&body).contains("text/csv"));
}
