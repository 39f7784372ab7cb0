//! Create, get and list throughput through the API server in JSON and in protobuf, on the same
//! Pods, with concurrent HTTPS clients (reqwest, keep-alive, bearer token).
//!
//!   cargo run --release -p yun-apiserver --example bench_protobuf -- URL TOKEN_FILE CA_FILE PODS CLIENTS LISTS
//!
//! Prints one line per codec: `CODEC creates/s gets/s lists/s`. Protobuf bodies are encoded
//! before the clock starts (as a Go client holds typed objects); responses are read whole but
//! not decoded, so the figures are the server's.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn pod(ns: &str, i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
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
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 10}})
}

async fn timed<F, Fut>(clients: usize, n: usize, f: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                f(i).await?;
                i += clients;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token, ca, pods, clients, lists] = args.as_slice() else {
        anyhow::bail!("usage: bench_protobuf URL TOKEN_FILE CA_FILE PODS CLIENTS LISTS");
    };
    let (pods, clients, lists): (usize, usize, usize) =
        (pods.parse()?, clients.parse()?, lists.parse()?);
    let token = std::fs::read_to_string(token)?.trim().to_string();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()?;
    let run = std::process::id();
    for codec in ["json", "protobuf"] {
        let ns = format!("bench-{codec}-{run}");
        let body = serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )?;
        http.post(format!("{url}/api/v1/namespaces"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        let (ctype, accept) = match codec {
            "json" => ("application/json", "application/json"),
            _ => (
                PROTOBUF,
                "application/vnd.kubernetes.protobuf, application/json",
            ),
        };
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..pods)
                .map(|i| {
                    let p = pod(&ns, i);
                    match codec {
                        "json" => Ok(serde_json::to_vec(&p)?),
                        _ => yun_apiserver::encode_protobuf(&p)
                            .expect("Pod has a message")
                            .map_err(anyhow::Error::msg),
                    }
                })
                .collect::<anyhow::Result<_>>()?,
        );
        let base = Arc::new(format!("{url}/api/v1/namespaces/{ns}/pods"));
        let req = {
            let (http, token, base) = (http.clone(), token.clone(), base.clone());
            move |method: reqwest::Method, path: String, body: Option<Vec<u8>>| {
                let mut r = http
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(&token)
                    .header("accept", accept);
                if let Some(b) = body {
                    r = r.header("content-type", ctype).body(b);
                }
                async move {
                    let resp = r.send().await?.error_for_status()?;
                    let got = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    anyhow::ensure!(got.starts_with(ctype), "answered in {got}, not {ctype}");
                    resp.bytes().await?;
                    anyhow::Ok(())
                }
            }
        };
        let (r, b) = (req.clone(), bodies.clone());
        let creates = timed(clients, pods, move |i| {
            r(reqwest::Method::POST, String::new(), Some(b[i].clone()))
        })
        .await?;
        let r = req.clone();
        let gets = timed(clients, pods, move |i| {
            r(reqwest::Method::GET, format!("/bench-{i}"), None)
        })
        .await?;
        let r = req.clone();
        let lists = timed(clients, lists, move |_| {
            r(reqwest::Method::GET, String::new(), None)
        })
        .await?;
        println!("{codec} {creates:.0} {gets:.0} {lists:.1}");
    }
    Ok(())
}
