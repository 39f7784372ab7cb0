//! Discovery and OpenAPI as today's kubectl (1.33, 1.27) and Debian's 1.20 use them: aggregated
//! discovery, api-resources, CRDs appearing and going live, explain from /openapi/v3, server-side
//! field validation, diff (a dry-run patch) and the caching headers.
//!
//! Each test runs `yun server` on a free loopback port with its own data dir; a guard kills
//! the server and removes the dir on drop, also when an assertion fails.

mod common;

use common::plane::Plane;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const KUBECTL_1_20: &str = "/var/cache/yun-kubectl/usr/bin/kubectl";
const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `yun server` (the shared harness) with a scratch dir for kubectl caches and files.
struct Server {
    plane: Plane,
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn start(name: &str) -> Server {
        let plane = Plane::server(&format!("disco-{name}"));
        let dir = plane.data.join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        let port = plane.port();
        Server { plane, dir, port }
    }

    /// kubectl `bin` with its own discovery cache (one per binary, kept between calls as a
    /// user's would be).
    fn run(&self, bin: &str, args: &[&str]) -> Output {
        let cache = self.dir.join(format!(
            "cache-{}",
            bin.rsplit('/').next().unwrap_or("kubectl")
        ));
        Command::new(bin)
            .env("KUBECONFIG", self.plane.kubeconfig())
            .env("HOME", &self.dir)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn ok(&self, bin: &str, args: &[&str]) -> String {
        let out = self.run(bin, args);
        assert!(
            out.status.success(),
            "{bin} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, bin: &str, args: &[&str]) -> String {
        let out = self.run(bin, args);
        assert!(
            !out.status.success(),
            "{bin} {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// GET `path` with curl and the admin token; returns (code, headers, body).
    fn get(&self, path: &str, headers: &[&str]) -> (u16, String, String) {
        let token = std::fs::read_to_string(self.plane.data.join("pki/token")).unwrap();
        let mut c = Command::new("curl");
        c.args(["-s", "-D", "-", "--cacert"])
            .arg(self.plane.data.join("pki/ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())]);
        for h in headers {
            c.args(["-H", h]);
        }
        let out = c
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, head.to_string(), body.to_string())
    }
}

/// A response header's value (names compare case-insensitively).
fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
        .unwrap_or("")
        .trim()
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd], categories: [all]}
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
            description: What the gadget should be.
            properties:
              size: {type: integer, description: How big the gadget is.}
"#;

const GADGET: &str =
    "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 3}\n";

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
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
"#;

/// api-resources works with every kubectl (1.33 failed on an advertised group with no
/// resources), its columns match Kubernetes' for core kinds, and kubectl 1.27+ get it from
/// aggregated discovery, whose Content-Type echoes the aggregated type asked for.
#[test]
fn api_resources_from_aggregated_discovery() {
    let srv = Server::start("resources");
    for bin in [KUBECTL_1_33, KUBECTL_1_27, KUBECTL_1_20] {
        let out = srv.ok(bin, &["api-resources"]);
        let pods = out
            .lines()
            .find(|l| l.starts_with("pods "))
            .unwrap_or_else(|| panic!("{bin}: no pods in {out}"));
        let cols: Vec<&str> = pods.split_whitespace().collect();
        assert_eq!(cols, ["pods", "po", "v1", "true", "Pod"], "{bin}");
        assert!(
            out.contains("deployments") && out.contains("deploy"),
            "{out}"
        );
        let versions = srv.ok(bin, &["api-versions"]);
        assert!(versions.lines().any(|l| l == "apps/v1"), "{versions}");
        // autoscaling is served at v2 only (HorizontalPodAutoscaler): never an empty v1.
        assert!(
            versions.lines().any(|l| l == "autoscaling/v2"),
            "{versions}"
        );
        assert!(!versions.contains("autoscaling/v1"), "{bin}: {versions}");
        assert!(out.contains("horizontalpodautoscalers"), "{bin}: {out}");
    }
    let wide = srv.ok(KUBECTL_1_33, &["api-resources", "-o", "wide"]);
    let deploy = wide.lines().find(|l| l.starts_with("deployments")).unwrap();
    assert!(deploy.ends_with("all"), "{deploy}");

    let accept = format!("Accept: {AGGREGATED_V2},application/json");
    let (code, head, body) = srv.get("/apis", &[&accept]);
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-type"), AGGREGATED_V2);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "APIGroupDiscoveryList");
    let apps = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .unwrap();
    let deployments = apps["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "deployments")
        .unwrap();
    assert_eq!(deployments["scope"], "Namespaced");
    assert_eq!(deployments["singularResource"], "deployment");
    assert_eq!(deployments["categories"], serde_json::json!(["all"]));
    let scale = &deployments["subresources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subresource"] == "scale")
        .unwrap()["responseKind"];
    assert_eq!(scale["group"], "autoscaling");
    // The same answer again is a 304 once the client has its ETag.
    let etag = format!("If-None-Match: {}", header(&head, "etag"));
    assert_eq!(srv.get("/apis", &[&accept, &etag]).0, 304);
    // v2beta1 (kubectl 1.26–1.29's first choice) is answered in kind; /api holds the core group.
    let beta = AGGREGATED_V2.replace("v=v2", "v=v2beta1");
    let (_, head, body) = srv.get("/api", &[&format!("Accept: {beta}")]);
    assert_eq!(header(&head, "content-type"), beta);
    let core: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let pods = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "pods")
        .unwrap()
        .clone();
    let subs: Vec<&str> = pods["subresources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subresource"].as_str().unwrap())
        .collect();
    assert_eq!(
        subs,
        [
            "status",
            "binding",
            "eviction",
            "log",
            "attach",
            "exec",
            "portforward",
            "proxy"
        ]
    );
    for bin in [KUBECTL_1_33, KUBECTL_1_27, KUBECTL_1_20] {
        srv.ok(bin, &["get", "all", "-A"]);
    }
}

/// The create-only reviews are discovered (group, version, create verb, cluster scope), so
/// `kubectl create -f` of one answers with its status, and ServiceAccounts list their `token`
/// subresource (TokenRequest) as kube-apiserver lists it.
#[test]
fn reviews_and_token_requests_are_discovered() {
    let srv = Server::start("reviews");
    let review = srv.write(
        "ssar.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\n\
         spec:\n  resourceAttributes:\n    verb: list\n    resource: pods\n    namespace: default\n",
    );
    for bin in [KUBECTL_1_33, KUBECTL_1_27, KUBECTL_1_20] {
        let out = srv.ok(bin, &["api-resources", "-o", "wide"]);
        for (name, gv, kind) in [
            (
                "selfsubjectaccessreviews",
                "authorization.k8s.io/v1",
                "SelfSubjectAccessReview",
            ),
            (
                "subjectaccessreviews",
                "authorization.k8s.io/v1",
                "SubjectAccessReview",
            ),
            (
                "selfsubjectrulesreviews",
                "authorization.k8s.io/v1",
                "SelfSubjectRulesReview",
            ),
            ("tokenreviews", "authentication.k8s.io/v1", "TokenReview"),
            (
                "selfsubjectreviews",
                "authentication.k8s.io/v1",
                "SelfSubjectReview",
            ),
        ] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{bin}: no {name} in {out}"));
            let cols: Vec<&str> = line.split_whitespace().collect();
            // 1.20 prints the verbs as `[create]`, later ones as `create`.
            let verbs = cols.get(4).map(|v| v.trim_matches(['[', ']']));
            assert_eq!(cols[..4], [name, gv, "false", kind], "{bin}: {line}");
            assert_eq!(verbs, Some("create"), "{bin}: {line}");
        }
        let created = srv.ok(bin, &["create", "-f", &review, "-o", "yaml"]);
        assert!(created.contains("allowed: true"), "{bin}: {created}");
    }
    let (code, _, body) = srv.get("/api/v1", &[]);
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let token = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .unwrap_or_else(|| panic!("no serviceaccounts/token in {body}"));
    assert_eq!(token["kind"], "TokenRequest");
    assert_eq!(token["group"], "authentication.k8s.io");
    assert_eq!(token["verbs"], serde_json::json!(["create"]));
    let accept = format!("Accept: {AGGREGATED_V2}");
    let (_, _, body) = srv.get("/apis", &[&accept]);
    let groups: Value = serde_json::from_str(&body).unwrap();
    let authz = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "authorization.k8s.io")
        .unwrap_or_else(|| panic!("no authorization.k8s.io in {body}"));
    let ssar = authz["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "selfsubjectaccessreviews")
        .unwrap();
    assert_eq!(ssar["scope"], "Cluster");
    assert_eq!(ssar["verbs"], serde_json::json!(["create"]));
}

/// Field selectors are checked against the labels each kind has, as kube-apiserver checks
/// them: kubectl reports a misspelt one instead of printing an empty list.
#[test]
fn field_selectors_are_checked_per_kind() {
    let srv = Server::start("fields");
    for bin in [KUBECTL_1_33, KUBECTL_1_20] {
        srv.ok(
            bin,
            &[
                "get",
                "pods",
                "--field-selector",
                "status.phase=Running,spec.nodeName=n",
            ],
        );
        srv.ok(
            bin,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=Pod,reason=x",
            ],
        );
        srv.ok(
            bin,
            &[
                "get",
                "nodes",
                "--field-selector",
                "spec.unschedulable=false",
            ],
        );
        let err = srv.fails(bin, &["get", "pods", "--field-selector", "spec.nodename=n"]);
        assert!(
            err.contains("field label not supported: spec.nodename"),
            "{bin}: {err}"
        );
        let err = srv.fails(bin, &["get", "configmaps", "--field-selector", "data.a=b"]);
        assert!(
            err.contains(r#""data.a" is not a known field selector: only "metadata.name", "metadata.namespace""#),
            "{bin}: {err}"
        );
    }
}

/// A CRD shows in discovery and OpenAPI as soon as it is created (kubectl finds its short name
/// without a cache flush, explain reads its schema) and is gone once deleted.
#[test]
fn crd_appears_and_disappears_live() {
    let srv = Server::start("crd");
    for bin in [KUBECTL_1_33, KUBECTL_1_27, KUBECTL_1_20] {
        srv.ok(bin, &["api-resources"]); // fill each client's discovery cache first
    }
    srv.ok(KUBECTL_1_33, &["apply", "-f", &srv.write("crd.yaml", CRD)]);
    srv.ok(KUBECTL_1_33, &["apply", "-f", &srv.write("g.yaml", GADGET)]);
    for bin in [KUBECTL_1_33, KUBECTL_1_27] {
        assert!(srv.ok(bin, &["get", "gd"]).contains("g1"), "{bin}");
    }
    // kubectl 1.20 expands short names from its cache before it refreshes discovery (as it
    // does against Kubernetes); the plural finds the new kind.
    for bin in [KUBECTL_1_33, KUBECTL_1_27, KUBECTL_1_20] {
        assert!(srv.ok(bin, &["get", "gadgets"]).contains("g1"), "{bin}");
    }
    assert!(srv
        .ok(KUBECTL_1_33, &["get", "all"])
        .contains("gadget.example.com/g1"));
    let explained = srv.ok(KUBECTL_1_33, &["explain", "gadget.spec"]);
    assert!(
        explained.contains("What the gadget should be."),
        "{explained}"
    );
    assert!(explained.contains("size\t<integer>"), "{explained}");
    let (_, _, index) = srv.get("/openapi/v3", &[]);
    assert!(index.contains("apis/example.com/v1"), "{index}");

    srv.ok(KUBECTL_1_33, &["delete", "crd", "gadgets.example.com"]);
    let err = srv.fails(KUBECTL_1_33, &["get", "gadgets"]);
    assert!(
        err.contains("NotFound") || err.contains("doesn't have a resource type"),
        "{err}"
    );
    let (_, _, index) = srv.get("/openapi/v3", &[]);
    assert!(!index.contains("example.com"), "{index}");
    let (_, _, apis) = srv.get("/apis", &[&format!("Accept: {AGGREGATED_V2}")]);
    assert!(!apis.contains("example.com"), "{apis}");
    assert!(!srv
        .ok(KUBECTL_1_33, &["api-versions"])
        .contains("example.com"));
}

/// explain reads /openapi/v3: descriptions, `required`, nested fields; the documents carry
/// the hash URLs and cache headers kubectl's cache relies on.
#[test]
fn explain_from_openapi_v3() {
    let srv = Server::start("explain");
    let out = srv.ok(KUBECTL_1_33, &["explain", "pods.spec.containers"]);
    assert!(out.contains("FIELD: containers <[]Container>"), "{out}");
    assert!(out.contains("name\t<string> -required-"), "{out}");
    assert!(
        out.contains("List of containers belonging to the pod."),
        "{out}"
    );
    let out = srv.ok(KUBECTL_1_27, &["explain", "deployment"]);
    assert!(
        out.contains("Deployment enables declarative updates"),
        "{out}"
    );
    let out = srv.ok(KUBECTL_1_27, &["explain", "deployment.spec.strategy.type"]);
    assert!(out.contains("Recreate"), "{out}");

    let (code, head, index) = srv.get("/openapi/v3", &[]);
    assert_eq!(code, 200);
    assert!(header(&head, "etag").starts_with('"'));
    let index: Value = serde_json::from_str(&index).unwrap();
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    let (code, head, doc) = srv.get(&url, &[]);
    assert_eq!(code, 200);
    assert_eq!(
        header(&head, "cache-control"),
        "public, immutable, max-age=31536000"
    );
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"],
        "Deployment"
    );
    let ports = &schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        serde_json::json!(["containerPort", "protocol"])
    );
    let etag = format!("If-None-Match: {}", header(&head, "etag"));
    assert_eq!(srv.get(&url, &[&etag]).0, 304);
    let (code, head, _) = srv.get("/openapi/v3/apis/apps/v1?hash=stale", &[]);
    assert_eq!(code, 301);
    assert_eq!(header(&head, "location"), url);
    let (code, _, v1) = srv.get("/openapi/v3/api/v1", &[]);
    assert_eq!(code, 200);
    assert!(v1.contains("io.k8s.api.core.v1.PodSpec"));
    // kubectl 1.20 explains from /openapi/v2 in protobuf.
    let out = srv.ok(KUBECTL_1_20, &["explain", "deploy.spec.strategy"]);
    assert!(out.contains("RESOURCE: strategy <Object>"), "{out}");
    assert!(out.contains("rollingUpdate\t<Object>"), "{out}");
    let (code, _, v2) = srv.get("/openapi/v2", &[]);
    assert_eq!(code, 200);
    assert!(v2.contains("\"#/definitions/io.k8s.api.core.v1.PodSpec\""));
    assert_eq!(srv.get("/openapi/v3/apis/nope/v1", &[]).0, 404);
}

/// `--validate=strict` (kubectl's default) is left to the server once /openapi/v3 advertises
/// fieldValidation: an unknown field is refused naming its path; warn reports it; diff runs a
/// dry-run patch that changes nothing; a dry-run delete deletes nothing.
#[test]
fn field_validation_diff_and_dry_run() {
    let srv = Server::start("validate");
    let bad = srv.write(
        "bad.yaml",
        &DEPLOYMENT.replace(
            "image: nginx:1.25",
            "image: nginx:1.25\n        imagePullPolicyy: Always",
        ),
    );
    // kubectl 1.20 validates client-side against /openapi/v2's definitions.
    let err = srv.fails(KUBECTL_1_20, &["apply", "-f", &bad]);
    assert!(
        err.contains(r#"unknown field "imagePullPolicyy" in io.k8s.api.core.v1.Container"#),
        "{err}"
    );
    for bin in [KUBECTL_1_33, KUBECTL_1_27] {
        let err = srv.fails(bin, &["apply", "--validate=true", "-f", &bad]);
        assert!(
            err.contains(r#"unknown field "spec.template.spec.containers[0].imagePullPolicyy""#),
            "{bin}: {err}"
        );
    }
    let out = srv.run(KUBECTL_1_33, &["create", "--validate=warn", "-f", &bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Warning: unknown field"), "{err}");
    srv.ok(KUBECTL_1_33, &["delete", "deployment", "web"]);

    let file = srv.write("d.yaml", DEPLOYMENT);
    srv.ok(KUBECTL_1_33, &["apply", "-f", &file]);
    let changed = srv.write(
        "d2.yaml",
        &DEPLOYMENT
            .replace("replicas: 2", "replicas: 3")
            .replace("nginx:1.25", "nginx:1.26"),
    );
    for bin in [KUBECTL_1_33, KUBECTL_1_27] {
        let out = srv.run(bin, &["diff", "-f", &changed]);
        assert_eq!(out.status.code(), Some(1), "{bin}: {:?}", out);
        let diff = String::from_utf8_lossy(&out.stdout);
        assert!(
            diff.contains("-  replicas: 2") && diff.contains("+  replicas: 3"),
            "{diff}"
        );
        assert!(diff.contains("+      - image: nginx:1.26"), "{diff}");
    }
    let live = srv.ok(
        KUBECTL_1_33,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(live, "2 nginx:1.25");
    assert_eq!(
        srv.run(KUBECTL_1_33, &["diff", "-f", &file]).status.code(),
        Some(0)
    );
    let out = srv.ok(
        KUBECTL_1_33,
        &["delete", "deploy", "web", "--dry-run=server"],
    );
    assert!(out.contains("(server dry run)"), "{out}");
    srv.ok(KUBECTL_1_33, &["get", "deploy", "web"]);
}

/// kubectl ≥1.27 computes apply's strategic merge patch from the /openapi/v3 schemas: lists
/// merge by their key, so a container added by someone else survives a changed manifest, and
/// an env var is added beside the existing one (with no merge key the list would be replaced).
#[test]
fn apply_merges_lists_by_the_v3_merge_keys() {
    let srv = Server::start("smp");
    for (i, bin) in [KUBECTL_1_33, KUBECTL_1_27].into_iter().enumerate() {
        let name = format!("web{i}");
        let manifest = DEPLOYMENT
            .replace("name: web,", &format!("name: {name},"))
            .replace(
                "        ports: [{containerPort: 80}]\n",
                "        env: [{name: A, value: \"1\"}]\n",
            );
        srv.ok(bin, &["apply", "-f", &srv.write("one.yaml", &manifest)]);
        let extra =
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"extra","image":"busybox"}]}}}}"#;
        srv.ok(bin, &["patch", "deploy", &name, "-p", extra]);
        let changed = manifest.replace("nginx:1.25", "nginx:1.26").replace(
            "env: [{name: A, value: \"1\"}]",
            "env: [{name: A, value: \"1\"}, {name: B, value: \"2\"}]",
        );
        let out = srv.run(
            bin,
            &["apply", "-v=8", "-f", &srv.write("two.yaml", &changed)],
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert!(
            !log.contains("error calculating patch from openapi v3"),
            "{log}"
        );
        assert!(
            log.contains("$setElementOrder/containers"),
            "{bin}: not a strategic merge"
        );
        let got = srv.ok(
            bin,
            &[
                "get",
                "deploy",
                &name,
                "-o",
                "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image}:{range .env[*]}{.name}{end};{end}",
            ],
        );
        assert_eq!(got, "nginx=nginx:1.26:AB;extra=busybox:;", "{bin}");
    }
}
