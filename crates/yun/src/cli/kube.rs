//! kubectl-like verbs over the API server: apply, get, describe, delete, scale.
//! Thin: discovery maps a kind to its REST path, everything else is plain HTTP + JSON.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Conn {
    /// kubeconfig to use (default: DATA_DIR/kubeconfig, written by `yun server`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace (default: the object's own, else "default").
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create or update the objects in FILE (multi-document YAML or JSON; "-" for stdin).
    Apply {
        #[command(flatten)]
        conn: Conn,
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List objects of a kind, or show one.
    Get {
        #[command(flatten)]
        conn: Conn,
        /// Kind, plural or short name (pods, po, deploy, ...).
        kind: String,
        name: Option<String>,
        /// Label selector (app=web, tier in (a,b), ...).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// json, yaml or wide.
        #[arg(short = 'o', long)]
        output: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show one object in detail.
    Describe {
        #[command(flatten)]
        conn: Conn,
        kind: String,
        name: String,
    },
    /// Delete objects by kind and name, or those in FILE.
    Delete {
        #[command(flatten)]
        conn: Conn,
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// KIND NAME...
        args: Vec<String>,
    },
    /// Set the replicas of a deployment or replicaset.
    Scale {
        #[command(flatten)]
        conn: Conn,
        /// KIND/NAME, e.g. deployment/web.
        target: String,
        #[arg(long)]
        replicas: i64,
    },
}

/// A served resource as discovery describes it.
#[derive(Clone, Debug)]
struct ApiRes {
    group_version: String,
    plural: String,
    singular: String,
    kind: String,
    short: Vec<String>,
    namespaced: bool,
}

struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
    default_ns: Option<String>,
    resources: Vec<ApiRes>,
}

pub fn run(data_dir: &Path, cmd: Cmd) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(data_dir, cmd))
}

async fn run_async(data_dir: &Path, cmd: Cmd) -> Result<i32> {
    let conn = match &cmd {
        Cmd::Apply { conn, .. }
        | Cmd::Get { conn, .. }
        | Cmd::Describe { conn, .. }
        | Cmd::Delete { conn, .. }
        | Cmd::Scale { conn, .. } => conn,
    };
    let path = conn
        .kubeconfig
        .clone()
        .unwrap_or_else(|| data_dir.join("kubeconfig"));
    let mut client = Client::connect(&path).await?;
    client.default_ns = conn.namespace.clone();
    match cmd {
        Cmd::Apply { files, .. } => {
            for doc in read_docs(&files)? {
                client.apply(doc).await?;
            }
            Ok(0)
        }
        Cmd::Get {
            kind,
            name,
            selector,
            output,
            all_namespaces,
            ..
        } => {
            client
                .get(
                    &kind,
                    name.as_deref(),
                    selector.as_deref(),
                    output.as_deref(),
                    all_namespaces,
                )
                .await?;
            Ok(0)
        }
        Cmd::Describe { kind, name, .. } => {
            client.describe(&kind, &name).await?;
            Ok(0)
        }
        Cmd::Delete { files, args, .. } => {
            if !files.is_empty() {
                for doc in read_docs(&files)? {
                    let res = client.by_kind(&doc)?;
                    let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let ns = client.ns_of(&res, &doc);
                    client.delete(&res, ns.as_deref(), &name).await?;
                }
                return Ok(0);
            }
            let [kind, names @ ..] = args.as_slice() else {
                bail!("delete: give KIND NAME... or -f FILE");
            };
            if names.is_empty() {
                bail!("delete: give at least one NAME after {kind}");
            }
            let res = client.resolve(kind)?;
            let ns = client.ns_for(&res);
            for name in names {
                client.delete(&res, ns.as_deref(), name).await?;
            }
            Ok(0)
        }
        Cmd::Scale {
            target, replicas, ..
        } => {
            let (kind, name) = target
                .split_once('/')
                .ok_or_else(|| anyhow!("scale: expected KIND/NAME, got {target:?}"))?;
            let res = client.resolve(kind)?;
            let ns = client.ns_for(&res);
            let url = format!("{}/scale", client.url(&res, ns.as_deref(), Some(name)));
            client
                .send(
                    reqwest::Method::PATCH,
                    &url,
                    Some((
                        "application/merge-patch+json",
                        json!({"spec": {"replicas": replicas}}),
                    )),
                )
                .await?;
            println!("{}/{name} scaled", singular_ref(&res));
            Ok(0)
        }
    }
}

fn read_docs(files: &[PathBuf]) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for f in files {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let v: Value = serde::Deserialize::deserialize(de)
                .with_context(|| format!("{}: document {}: invalid YAML", f.display(), i + 1))?;
            match v {
                Value::Null => {}
                Value::Object(_) if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
                    docs.extend(v["items"].as_array().cloned().unwrap_or_default());
                }
                Value::Object(_) => docs.push(v),
                _ => bail!("{}: document {}: not an object", f.display(), i + 1),
            }
        }
    }
    Ok(docs)
}

fn singular_ref(res: &ApiRes) -> String {
    let group = res.group_version.rsplit_once('/').map(|(g, _)| g);
    match group {
        Some(g) => format!("{}.{g}", res.singular),
        None => res.singular.clone(),
    }
}

impl Client {
    async fn connect(path: &Path) -> Result<Client> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let kc: Value = serde_yaml::from_str(&text)
            .with_context(|| format!("kubeconfig {}: invalid YAML", path.display()))?;
        let current = kc["current-context"].as_str().unwrap_or("");
        let find = |list: &str, name: &str| -> Value {
            kc[list]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|e| e["name"].as_str() == Some(name))
                        .or_else(|| a.first())
                })
                .cloned()
                .unwrap_or(Value::Null)
        };
        let ctx = find("contexts", current);
        let cluster = find("clusters", ctx["context"]["cluster"].as_str().unwrap_or(""));
        let user = find("users", ctx["context"]["user"].as_str().unwrap_or(""));
        let server = cluster["cluster"]["server"]
            .as_str()
            .ok_or_else(|| anyhow!("kubeconfig {}: no cluster server", path.display()))?
            .trim_end_matches('/')
            .to_string();
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(ca) = cluster["cluster"]["certificate-authority-data"].as_str() {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca)
                .context("kubeconfig: certificate-authority-data is not base64")?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        // A client certificate (what `yun up` and `yun kubeconfig` write) is the identity; a
        // token, when there is one, goes along as the server checks certificates first.
        let b64 = |field: &str| -> Result<Option<Vec<u8>>> {
            user["user"][field]
                .as_str()
                .map(|d| base64::engine::general_purpose::STANDARD.decode(d))
                .transpose()
                .with_context(|| format!("kubeconfig: {field} is not base64"))
        };
        if let (Some(mut cert), Some(key)) =
            (b64("client-certificate-data")?, b64("client-key-data")?)
        {
            cert.extend_from_slice(&key);
            builder = builder.identity(
                reqwest::Identity::from_pem(&cert).context("kubeconfig: client certificate")?,
            );
        }
        let token = user["user"]["token"].as_str().unwrap_or("").to_string();
        let mut client = Client {
            http: builder.build()?,
            server,
            token,
            default_ns: None,
            resources: Vec::new(),
        };
        client.discover().await?;
        Ok(client)
    }

    /// One request; returns the HTTP status and the JSON body (Null if not JSON).
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<(&str, Value)>,
        accept: &str,
    ) -> Result<(reqwest::StatusCode, Value)> {
        let mut req = self.http.request(method, url).header("accept", accept);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some((ct, v)) = body {
            req = req.header("content-type", ct).body(serde_json::to_vec(&v)?);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<(&str, Value)>,
    ) -> Result<Value> {
        let (status, v) = self.request(method, url, body, "application/json").await?;
        check(status, v)
    }

    /// GET that maps 404 to None.
    async fn send_opt(&self, url: &str) -> Result<Option<Value>> {
        let (status, v) = self
            .request(reqwest::Method::GET, url, None, "application/json")
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check(status, v).map(Some)
    }

    async fn discover(&mut self) -> Result<()> {
        let mut gvs = vec!["/api/v1".to_string()];
        let groups = self
            .send(reqwest::Method::GET, &format!("{}/apis", self.server), None)
            .await?;
        for g in groups["groups"].as_array().into_iter().flatten() {
            if let Some(gv) = g["preferredVersion"]["groupVersion"].as_str() {
                gvs.push(format!("/apis/{gv}"));
            }
        }
        for path in gvs {
            let list = self
                .send(
                    reqwest::Method::GET,
                    &format!("{}{path}", self.server),
                    None,
                )
                .await?;
            let gv = list["groupVersion"].as_str().unwrap_or("").to_string();
            for r in list["resources"].as_array().into_iter().flatten() {
                let plural = r["name"].as_str().unwrap_or("");
                if plural.contains('/') {
                    continue;
                }
                self.resources.push(ApiRes {
                    group_version: gv.clone(),
                    plural: plural.to_string(),
                    singular: r["singularName"].as_str().unwrap_or("").to_string(),
                    kind: r["kind"].as_str().unwrap_or("").to_string(),
                    short: r["shortNames"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    namespaced: r["namespaced"].as_bool().unwrap_or(false),
                });
            }
        }
        Ok(())
    }

    /// A name as a user types it: plural, singular, short name or kind, optionally `.group`.
    fn resolve(&self, name: &str) -> Result<ApiRes> {
        let lower = name.to_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (lower.clone(), None),
        };
        self.resources
            .iter()
            .find(|r| {
                let in_group = group
                    .as_deref()
                    .is_none_or(|g| r.group_version.rsplit_once('/').map(|(rg, _)| rg) == Some(g));
                in_group
                    && (r.plural == base
                        || r.singular == base
                        || r.kind.to_lowercase() == base
                        || r.short.contains(&base))
            })
            .cloned()
            .ok_or_else(|| anyhow!("the server doesn't have a resource type {name:?}"))
    }

    fn by_kind(&self, doc: &Value) -> Result<ApiRes> {
        let av = doc["apiVersion"].as_str().unwrap_or("");
        let kind = doc["kind"].as_str().unwrap_or("");
        if av.is_empty() || kind.is_empty() {
            bail!(
                "object {:?}: apiVersion and kind are required",
                doc["metadata"]["name"]
            );
        }
        self.resources
            .iter()
            .find(|r| r.group_version == av && r.kind == kind)
            .cloned()
            .ok_or_else(|| anyhow!("no matches for kind {kind:?} in version {av:?}"))
    }

    fn ns_for(&self, res: &ApiRes) -> Option<String> {
        res.namespaced
            .then(|| self.default_ns.clone().unwrap_or_else(|| "default".into()))
    }

    fn ns_of(&self, res: &ApiRes, doc: &Value) -> Option<String> {
        if !res.namespaced {
            return None;
        }
        self.default_ns
            .clone()
            .or_else(|| doc["metadata"]["namespace"].as_str().map(str::to_string))
            .or_else(|| Some("default".into()))
    }

    fn url(&self, res: &ApiRes, ns: Option<&str>, name: Option<&str>) -> String {
        let base = if res.group_version.contains('/') {
            format!("{}/apis/{}", self.server, res.group_version)
        } else {
            format!("{}/api/{}", self.server, res.group_version)
        };
        let mut u = match ns {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", res.plural),
            None => format!("{base}/{}", res.plural),
        };
        if let Some(n) = name {
            u.push('/');
            u.push_str(n);
        }
        u
    }

    async fn apply(&self, mut doc: Value) -> Result<()> {
        let res = self.by_kind(&doc)?;
        let name = doc["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("a {} without metadata.name", res.kind))?
            .to_string();
        let ns = self.ns_of(&res, &doc);
        if let Some(ns) = &ns {
            doc["metadata"]["namespace"] = Value::String(ns.clone());
        }
        let what = format!("{}/{name}", singular_ref(&res));
        let url = self.url(&res, ns.as_deref(), Some(&name));
        match self.send_opt(&url).await? {
            None => {
                let coll = self.url(&res, ns.as_deref(), None);
                self.send(
                    reqwest::Method::POST,
                    &coll,
                    Some(("application/json", doc)),
                )
                .await?;
                println!("{what} created");
            }
            Some(current) if is_subset(&doc, &current) => println!("{what} unchanged"),
            Some(_) => {
                self.send(
                    reqwest::Method::PATCH,
                    &url,
                    Some(("application/merge-patch+json", doc)),
                )
                .await?;
                println!("{what} configured");
            }
        }
        Ok(())
    }

    async fn delete(&self, res: &ApiRes, ns: Option<&str>, name: &str) -> Result<()> {
        let url = self.url(res, ns, Some(name));
        self.send(
            reqwest::Method::DELETE,
            &url,
            Some((
                "application/json",
                json!({"propagationPolicy": "Background"}),
            )),
        )
        .await?;
        println!("{} \"{name}\" deleted", singular_ref(res));
        Ok(())
    }

    async fn get(
        &self,
        kind: &str,
        name: Option<&str>,
        selector: Option<&str>,
        output: Option<&str>,
        all_ns: bool,
    ) -> Result<()> {
        let res = self.resolve(kind)?;
        let ns = if all_ns { None } else { self.ns_for(&res) };
        let mut url = self.url(&res, ns.as_deref(), name);
        if let Some(sel) = selector {
            url = reqwest::Url::parse_with_params(&url, &[("labelSelector", sel)])?.to_string();
        }
        match output {
            Some("json") | Some("yaml") => {
                let v = self.send(reqwest::Method::GET, &url, None).await?;
                if output == Some("json") {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print!("{}", serde_yaml::to_string(&v)?);
                }
            }
            None | Some("wide") => {
                let (status, table) = self
                    .request(
                        reqwest::Method::GET,
                        &url,
                        None,
                        "application/json;as=Table;v=v1;g=meta.k8s.io",
                    )
                    .await?;
                let table = check(status, table)?;
                print_table(&table, output == Some("wide"), all_ns && res.namespaced);
            }
            Some(other) => bail!("unknown output format {other:?} (json, yaml, wide)"),
        }
        Ok(())
    }

    async fn describe(&self, kind: &str, name: &str) -> Result<()> {
        let res = self.resolve(kind)?;
        let ns = self.ns_for(&res);
        let v = self
            .send(
                reqwest::Method::GET,
                &self.url(&res, ns.as_deref(), Some(name)),
                None,
            )
            .await?;
        let m = &v["metadata"];
        println!("Name:         {}", m["name"].as_str().unwrap_or(""));
        if let Some(ns) = m["namespace"].as_str() {
            println!("Namespace:    {ns}");
        }
        println!("Kind:         {} ({})", res.kind, res.group_version);
        for (title, field) in [("Labels:", "labels"), ("Annotations:", "annotations")] {
            let pairs: Vec<String> = m[field]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/"))
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            let shown = if pairs.is_empty() {
                "<none>".to_string()
            } else {
                pairs.join("\n              ")
            };
            println!("{title:<14}{shown}");
        }
        println!(
            "Created:      {}",
            m["creationTimestamp"].as_str().unwrap_or("")
        );
        println!("UID:          {}", m["uid"].as_str().unwrap_or(""));
        for part in ["spec", "data", "status"] {
            if let Some(p) = v.get(part).filter(|p| !p.is_null()) {
                println!("{}{}:", part[..1].to_uppercase(), &part[1..]);
                for line in serde_yaml::to_string(p)?.lines() {
                    println!("  {line}");
                }
            }
        }
        Ok(())
    }
}

/// The body of a successful response, or the server's Status message as the error.
fn check(status: reqwest::StatusCode, v: Value) -> Result<Value> {
    if !status.is_success() {
        let msg = v["message"].as_str().unwrap_or("request failed");
        let reason = v["reason"].as_str().unwrap_or("");
        bail!("{msg} ({} {reason})", status.as_u16());
    }
    Ok(v)
}

/// Every field of `want` is present with the same value in `have` (so applying is a no-op).
fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        _ => want == have,
    }
}

fn print_table(table: &Value, wide: bool, with_ns: bool) {
    let cols = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let rows = table["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        eprintln!("No resources found.");
        return;
    }
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = shown
        .iter()
        .map(|i| cols[*i]["name"].as_str().unwrap_or("").to_uppercase())
        .collect();
    if with_ns {
        header.insert(0, "NAMESPACE".into());
    }
    lines.push(header);
    for r in &rows {
        let mut line: Vec<String> = shown
            .iter()
            .map(|i| match &r["cells"][*i] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        if with_ns {
            let ns = r["object"]["metadata"]["namespace"].as_str().unwrap_or("");
            line.insert(0, ns.to_string());
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", cells.join("   ").trim_end());
    }
}
