//! An OCI distribution client: references, the HTTP session with Basic and Bearer (token)
//! auth, and https with an http fallback for insecure registries (loopback by default, like
//! Docker, or `--tls-verify=false`).

use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

/// `host[:port]/repo[/more][:tag|@sha256:…]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag or a digest ("sha256:…").
    pub reference: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        let (registry, rest) = s.split_once('/').ok_or_else(|| {
            anyhow!("{s:?}: name the registry, e.g. 127.0.0.1:5000/{s} (yun has no default registry offline)")
        })?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            bail!("{s:?}: {registry:?} is not a registry host; use HOST[:PORT]/REPO[:TAG]");
        }
        let (repository, reference) = if let Some((r, d)) = rest.split_once('@') {
            (r.to_string(), d.to_string())
        } else {
            match rest.rfind(':') {
                Some(i) if !rest[i..].contains('/') => {
                    (rest[..i].to_string(), rest[i + 1..].to_string())
                }
                _ => (rest.to_string(), "latest".to_string()),
            }
        };
        let valid = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            });
        if !valid {
            bail!("{s:?}: invalid repository name {repository:?} (lowercase letters, digits, '.', '_', '-', '/')");
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            reference,
        })
    }

    /// The name an image pulled by tag is recorded under.
    pub fn name(&self) -> String {
        if self.reference.starts_with("sha256:") {
            format!("{}/{}", self.registry, self.repository)
        } else {
            format!("{}/{}:{}", self.registry, self.repository, self.reference)
        }
    }
}

/// What the caller says about TLS and credentials.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// None: verify, except for loopback registries (as Docker treats them).
    pub tls_verify: Option<bool>,
    /// "user:password" for Basic auth or the token service.
    pub creds: Option<String>,
}

/// One registry: base URL (after the https/http probe) and the current Authorization.
pub struct Session {
    http: reqwest::Client,
    pub base: String,
    creds: Option<(String, String)>,
    auth: Mutex<Option<HeaderValue>>,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

impl Session {
    pub async fn connect(registry: &str, opts: &Options) -> Result<Session> {
        let verify = opts.tls_verify.unwrap_or(!is_loopback(registry));
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(!verify)
            .pool_max_idle_per_host(8)
            .build()?;
        let creds = match &opts.creds {
            Some(c) => {
                let (u, p) = c
                    .split_once(':')
                    .ok_or_else(|| anyhow!("--creds: expected USER:PASSWORD"))?;
                Some((u.to_string(), p.to_string()))
            }
            None => None,
        };
        let mut last_err = None;
        // https first; an insecure registry may only speak http.
        let schemes: &[&str] = if verify {
            &["https"]
        } else {
            &["https", "http"]
        };
        for scheme in schemes {
            let base = format!("{scheme}://{registry}");
            match http.get(format!("{base}/v2/")).send().await {
                Ok(resp) => {
                    let s = Session {
                        http: http.clone(),
                        base,
                        creds: creds.clone(),
                        auth: Mutex::new(None),
                    };
                    if resp.status() == StatusCode::UNAUTHORIZED {
                        s.authenticate(&resp, None).await?;
                    }
                    return Ok(s);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(anyhow!(
            "registry {registry}: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        ))
    }

    /// Answer a 401: Basic with the credentials, or fetch a Bearer token for `scope`.
    async fn authenticate(&self, resp: &Response, scope: Option<&str>) -> Result<()> {
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let lower = challenge.to_ascii_lowercase();
        let value = if lower.starts_with("basic") {
            let (u, p) = self.creds.as_ref().ok_or_else(|| {
                anyhow!(
                    "{}: authentication required (use --creds USER:PASSWORD)",
                    self.base
                )
            })?;
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        } else if lower.starts_with("bearer") {
            let params = parse_challenge(&challenge["bearer".len()..]);
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| anyhow!("bearer challenge without realm"))?;
            let mut req = self.http.get(&realm);
            let mut query: Vec<(String, String)> = params
                .into_iter()
                .filter(|(k, _)| k == "service" || k == "scope")
                .collect();
            if let Some(s) = scope {
                query.retain(|(k, _)| k != "scope");
                query.push(("scope".into(), s.to_string()));
            }
            req = req.query(&query);
            if let Some((u, p)) = &self.creds {
                req = req.basic_auth(u, Some(p));
            }
            let tok: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
            let token = tok["token"]
                .as_str()
                .or_else(|| tok["access_token"].as_str())
                .ok_or_else(|| anyhow!("token response without a token"))?;
            format!("Bearer {token}")
        } else {
            bail!("{}: unsupported authentication {challenge:?}", self.base);
        };
        *self.auth.lock().expect("auth lock") = Some(HeaderValue::from_str(&value)?);
        Ok(())
    }

    pub fn request(&self, method: Method, path_or_url: &str) -> RequestBuilder {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(a) = self.auth.lock().expect("auth lock").clone() {
            req = req.header(AUTHORIZATION, a);
        }
        req
    }

    /// Send, answering one 401 by authenticating for `scope`; errors carry the registry's
    /// error code and message.
    pub async fn send(
        &self,
        build: impl Fn(&Session) -> RequestBuilder,
        scope: &str,
    ) -> Result<Response> {
        let resp = build(self).send().await?;
        let resp = if resp.status() == StatusCode::UNAUTHORIZED {
            self.authenticate(&resp, Some(scope)).await?;
            build(self).send().await?
        } else {
            resp
        };
        Ok(resp)
    }
}

/// Turn a non-success response into an error naming the registry's code.
pub async fn check(resp: Response, what: &str) -> Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = &v["errors"][0];
            Some(format!(
                "{}: {}",
                e["code"].as_str()?,
                e["message"].as_str().unwrap_or("")
            ))
        })
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    Err(anyhow!("{what}: {status} {detail}"))
}

/// `k="v", k2="v2"` from a WWW-Authenticate header.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in s.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            out.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
    }
    out
}

/// Accept every manifest kind we can use.
pub fn manifest_accept() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        ACCEPT,
        HeaderValue::from_static(
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
        ),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("127.0.0.1:5000/library/busybox:1.36").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "library/busybox", "1.36")
        );
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(r.reference, "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("reg.example:443/x@{d}")).unwrap();
        assert_eq!(r.reference, d);
        assert!(Reference::parse("busybox")
            .unwrap_err()
            .to_string()
            .contains("name the registry"));
        assert!(Reference::parse("127.0.0.1:5000/Upper").is_err());
        assert!(
            is_loopback("127.0.0.1:5000")
                && is_loopback("localhost")
                && !is_loopback("10.0.0.1:5000")
        );
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#" realm="https://auth/token",service="reg",scope="repository:a:pull""#,
        );
        assert_eq!(c[0], ("realm".into(), "https://auth/token".into()));
        assert_eq!(c[2].1, "repository:a:pull");
    }
}
