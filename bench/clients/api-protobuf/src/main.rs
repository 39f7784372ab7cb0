//! Creates, gets and lists of the same Pods through the API server in JSON and in protobuf,
//! as a typed client does them: every request body is encoded from a typed Pod and every answer
//! decoded into one (k8s-openapi + serde_json for JSON; k8s-pb + prost, inside the `k8s\0`
//! runtime.Unknown envelope, for protobuf), over CLIENTS concurrent keep-alive HTTPS connections.
//!
//!   bench-api-protobuf URL TOKEN_FILE CA_FILE PODS CLIENTS LISTS ROUNDS
//!
//! The formats alternate over ROUNDS (JSON first in even rounds, protobuf first in odd ones),
//! each round in fresh namespaces, so neither format always meets the larger store. Prints each
//! round on stderr and, on stdout, one line per format with the medians:
//! `FORMAT creates/s gets/s lists/s get-bytes list-bytes`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use prost::Message;

use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const JSON: &str = "application/json";
/// The four bytes before every protobuf object Kubernetes sends or accepts.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Format {
    Json,
    Protobuf,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Protobuf => "protobuf",
        }
    }
    fn media_type(self) -> &'static str {
        match self {
            Format::Json => JSON,
            Format::Protobuf => PROTOBUF,
        }
    }

    /// The body of a create: the typed Pod, encoded as this format's client encodes it.
    fn encode(self, ns: &str, i: usize) -> Result<Vec<u8>> {
        match self {
            Format::Json => Ok(serde_json::to_vec(&json_pod(ns, i))?),
            Format::Protobuf => {
                let unknown = Unknown {
                    type_meta: Some(TypeMeta {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                    }),
                    raw: Some(proto_pod(ns, i).encode_to_vec()),
                    content_encoding: Some(String::new()),
                    content_type: Some(String::new()),
                };
                let mut out = MAGIC.to_vec();
                unknown.encode(&mut out)?;
                Ok(out)
            }
        }
    }

    /// Decode an answer into a typed Pod (`list` false) or PodList, returning its item count.
    fn decode(self, body: &[u8], list: bool) -> Result<usize> {
        match self {
            Format::Json if list => {
                let l: k8s_openapi::List<k8s_openapi::api::core::v1::Pod> =
                    serde_json::from_slice(body)?;
                Ok(l.items.len())
            }
            Format::Json => {
                let p: k8s_openapi::api::core::v1::Pod = serde_json::from_slice(body)?;
                ensure!(p.metadata.name.is_some(), "a Pod without a name");
                Ok(1)
            }
            Format::Protobuf => {
                let rest = body
                    .strip_prefix(MAGIC)
                    .context("a protobuf answer without the k8s\\0 prefix")?;
                let unknown = Unknown::decode(rest)?;
                let raw = unknown.raw.unwrap_or_default();
                let kind = unknown.type_meta.and_then(|t| t.kind).unwrap_or_default();
                if list {
                    ensure!(kind == "PodList", "answered a {kind}, not a PodList");
                    Ok(pb::PodList::decode(raw.as_slice())?.items.len())
                } else {
                    ensure!(kind == "Pod", "answered a {kind}, not a Pod");
                    let p = pb::Pod::decode(raw.as_slice())?;
                    ensure!(
                        p.metadata.and_then(|m| m.name).is_some(),
                        "a Pod without a name"
                    );
                    Ok(1)
                }
            }
        }
    }
}

fn json_pod(ns: &str, i: usize) -> k8s_openapi::api::core::v1::Pod {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "namespace": ns,
            "labels": {"app": "bench", "tier": "web", "index": i.to_string()},
            "annotations": {"example.com/owner": "bench", "example.com/build": "2024-05-01"}},
        "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1.2.3",
            "command": ["/bin/web", "--port=8080", "--verbose"],
            "env": [{"name": "MODE", "value": "production"}, {"name": "LEVEL", "value": "info"}],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"cpu": "500m", "memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 10}});
    serde_json::from_value(v).expect("a valid Pod")
}

/// The same Pod as [`json_pod`], as k8s-pb's message.
fn proto_pod(ns: &str, i: usize) -> pb::Pod {
    let s = |v: &str| Some(v.to_string());
    let map = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let qty = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), Quantity { string: s(v) }))
            .collect()
    };
    pb::Pod {
        metadata: Some(ObjectMeta {
            name: Some(format!("bench-{i}")),
            namespace: s(ns),
            labels: map(&[("app", "bench"), ("tier", "web"), ("index", &i.to_string())]),
            annotations: map(&[
                ("example.com/owner", "bench"),
                ("example.com/build", "2024-05-01"),
            ]),
            ..Default::default()
        }),
        spec: Some(pb::PodSpec {
            containers: vec![pb::Container {
                name: s("web"),
                image: s("registry.example.com/web:1.2.3"),
                command: vec!["/bin/web".into(), "--port=8080".into(), "--verbose".into()],
                env: vec![
                    pb::EnvVar {
                        name: s("MODE"),
                        value: s("production"),
                        value_from: None,
                    },
                    pb::EnvVar {
                        name: s("LEVEL"),
                        value: s("info"),
                        value_from: None,
                    },
                ],
                ports: vec![pb::ContainerPort {
                    name: s("http"),
                    container_port: Some(8080),
                    protocol: s("TCP"),
                    ..Default::default()
                }],
                resources: Some(pb::ResourceRequirements {
                    requests: qty(&[("cpu", "100m"), ("memory", "64Mi")]),
                    limits: qty(&[("cpu", "500m"), ("memory", "128Mi")]),
                    ..Default::default()
                }),
                readiness_probe: Some(pb::Probe {
                    handler: Some(pb::ProbeHandler {
                        http_get: Some(pb::HttpGetAction {
                            path: s("/healthz"),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: None,
                                str_val: s("http"),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            restart_policy: s("Always"),
            termination_grace_period_seconds: Some(10),
            ..Default::default()
        }),
        status: None,
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
    url: String,
}

impl Client {
    /// One request in `format`; the answer is decoded and its size returned.
    async fn call(
        &self,
        format: Format,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        list: bool,
    ) -> Result<usize> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("accept", format.media_type());
        if let Some(b) = body {
            r = r.header("content-type", format.media_type()).body(b);
        }
        let resp = r.send().await?;
        let status = resp.status();
        let got = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        ensure!(
            got.starts_with(format.media_type()),
            "answered in {got}, not {}",
            format.media_type()
        );
        format.decode(&bytes, list)?;
        Ok(bytes.len())
    }
}

/// `n` calls of `f`, spread over `clients` concurrent tasks; calls per second and the size of
/// the last answer.
async fn timed<F, Fut>(clients: usize, n: usize, f: F) -> Result<(f64, usize)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<usize>> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let (mut i, mut size) = (c, 0);
            while i < n {
                size = f(i).await?;
                i += clients;
            }
            anyhow::Ok(size)
        }));
    }
    let mut size = 0;
    for t in tasks {
        size = size.max(t.await??);
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), size))
}

struct Figures {
    creates: f64,
    gets: f64,
    lists: f64,
    get_bytes: usize,
    list_bytes: usize,
}

async fn round(
    client: &Arc<Client>,
    format: Format,
    ns: &str,
    pods: usize,
    clients: usize,
    lists: usize,
) -> Result<Figures> {
    let ns_body = serde_json::to_vec(
        &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )?;
    let resp = client
        .http
        .post(format!("{}/api/v1/namespaces", client.url))
        .bearer_auth(&client.token)
        .header("content-type", JSON)
        .body(ns_body)
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "create namespace {ns}: {}",
        resp.status()
    );
    let base = format!("/api/v1/namespaces/{ns}/pods");

    let (c, b, ns2) = (client.clone(), base.clone(), ns.to_string());
    let (creates, _) = timed(clients, pods, move |i| {
        let (c, b, ns) = (c.clone(), b.clone(), ns2.clone());
        async move {
            let body = format.encode(&ns, i)?;
            c.call(format, reqwest::Method::POST, &b, Some(body), false)
                .await
        }
    })
    .await?;
    let (c, b) = (client.clone(), base.clone());
    let (gets, get_bytes) = timed(clients, pods, move |i| {
        let (c, path) = (c.clone(), format!("{b}/bench-{i}"));
        async move {
            c.call(format, reqwest::Method::GET, &path, None, false)
                .await
        }
    })
    .await?;
    let (c, b) = (client.clone(), base.clone());
    let (lists, list_bytes) = timed(clients, lists, move |_| {
        let (c, b) = (c.clone(), b.clone());
        async move { c.call(format, reqwest::Method::GET, &b, None, true).await }
    })
    .await?;
    Ok(Figures {
        creates,
        gets,
        lists,
        get_bytes,
        list_bytes,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token, ca, pods, clients, lists, rounds] = args.as_slice() else {
        bail!("usage: bench-api-protobuf URL TOKEN_FILE CA_FILE PODS CLIENTS LISTS ROUNDS");
    };
    let (pods, clients, lists, rounds): (usize, usize, usize, usize) = (
        pods.parse()?,
        clients.parse()?,
        lists.parse()?,
        rounds.parse()?,
    );
    ensure!(
        rounds > 0 && pods > 0 && clients > 0 && lists > 0,
        "counts must be positive"
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()?,
        token: std::fs::read_to_string(token)?.trim().to_string(),
        url: url.clone(),
    });
    let run = std::process::id();
    let mut all: Vec<(Format, Figures)> = Vec::new();
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [Format::Json, Format::Protobuf]
        } else {
            [Format::Protobuf, Format::Json]
        };
        for format in order {
            let ns = format!("bench-{}-{run}-{r}", format.name());
            let f = round(&client, format, &ns, pods, clients, lists).await?;
            eprintln!(
                "round {r} {:8} creates/s {:7.0} gets/s {:7.0} lists/s {:6.1} (get {} B, list {} B)",
                format.name(),
                f.creates,
                f.gets,
                f.lists,
                f.get_bytes,
                f.list_bytes
            );
            all.push((format, f));
        }
    }
    for format in [Format::Json, Format::Protobuf] {
        let of = |pick: fn(&Figures) -> f64| {
            median(
                all.iter()
                    .filter(|(f, _)| *f == format)
                    .map(|(_, x)| pick(x))
                    .collect(),
            )
        };
        let last = &all.iter().rev().find(|(f, _)| *f == format).expect("ran").1;
        println!(
            "{} {:.0} {:.0} {:.1} {} {}",
            format.name(),
            of(|x| x.creates),
            of(|x| x.gets),
            of(|x| x.lists),
            last.get_bytes,
            last.list_bytes
        );
    }
    Ok(())
}
