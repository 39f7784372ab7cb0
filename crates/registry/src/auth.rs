//! HTTP Basic authentication against an htpasswd file of bcrypt entries (`htpasswd -B`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context};
use axum::http::HeaderValue;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// How many verified credentials are remembered. bcrypt is deliberately slow (milliseconds
/// per check); clients send credentials on every request, so a verified pair is cached by
/// its SHA-256 instead of re-running bcrypt each time.
const CACHE_MAX: usize = 1024;

pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Verified credentials (by SHA-256 of user and password) and their user.
    verified: Mutex<HashMap<[u8; 32], String>>,
}

impl Htpasswd {
    pub fn load(path: &Path) -> anyhow::Result<Htpasswd> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read htpasswd file {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow!("htpasswd file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Htpasswd> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("line {}: expected user:hash", i + 1))?;
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                return Err(anyhow!(
                    "line {}: user {user:?} has no bcrypt hash (create entries with htpasswd -B)",
                    i + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(anyhow!("no users"));
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The user whose valid Basic credentials an `Authorization` header holds, if any. Runs
    /// bcrypt on the blocking pool: it takes milliseconds of CPU.
    pub async fn check(self: std::sync::Arc<Self>, header: Option<&HeaderValue>) -> Option<String> {
        let (user, password) = header.and_then(basic_credentials)?;
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if let Some(u) = self.verified.lock().unwrap().get(&key) {
            return Some(u.clone());
        }
        let hash = self.users.get(&user).cloned()?;
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok {
            let mut cache = self.verified.lock().unwrap();
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, user.clone());
        }
        ok.then_some(user)
    }
}

fn basic_credentials(v: &HeaderValue) -> Option<(String, String)> {
    let v = v.to_str().ok()?.trim();
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn basic() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let h = std::sync::Arc::new(Htpasswd::parse(&format!("alice:{hash}\n")).unwrap());
        let header = |u: &str, p: &str| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            HeaderValue::from_str(&format!("Basic {token}")).unwrap()
        };
        let alice = Some("alice".to_string());
        assert_eq!(
            h.clone().check(Some(&header("alice", "secret"))).await,
            alice
        );
        // Second time from the cache.
        assert_eq!(
            h.clone().check(Some(&header("alice", "secret"))).await,
            alice
        );
        assert_eq!(h.clone().check(Some(&header("alice", "wrong"))).await, None);
        assert_eq!(h.clone().check(Some(&header("bob", "secret"))).await, None);
        assert_eq!(h.clone().check(None).await, None);
        assert!(Htpasswd::parse("alice:{SHA}abc").is_err());
        assert!(Htpasswd::parse("").is_err());
    }
}
