//! Authentication: who sent a request. Tried in order, as kube-apiserver does: the TLS client
//! certificate (signed by yun's CA: CN = user, O = groups), then bearer tokens (the admin token
//! from `DATA_DIR/pki/token`; service-account tokens plug in beside it). A request with no
//! credentials is `system:anonymous`; one with credentials that do not check out is 401.

pub mod impersonate;
pub mod serviceaccount;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::http::HeaderMap;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

/// The identity every layer of the server sees (kube's `user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const ANONYMOUS: &str = "system:anonymous";
/// The user the admin token and `yun up`'s kubeconfig certificate stand for.
pub const ADMIN: &str = "yun-admin";

impl UserInfo {
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    pub fn admin() -> Self {
        UserInfo {
            name: ADMIN.into(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// A user inside the server itself (loops that write through the REST code).
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Every authenticated user is in `system:authenticated`, as kube adds it.
    pub fn authenticated(mut self) -> Self {
        if !self.in_group(AUTHENTICATED) && self.name != ANONYMOUS {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }
}

/// The client certificate chain of a connection (request extension), with the identity it
/// proved, worked out on the connection's first request: a chain verifies the same way for
/// every request on it, and a signature check per request would be the costliest part of one.
#[derive(Clone)]
pub struct PeerCerts {
    chain: Arc<Vec<CertificateDer<'static>>>,
    identity: Arc<OnceLock<Option<UserInfo>>>,
}

impl PeerCerts {
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        PeerCerts {
            chain: Arc::new(chain),
            identity: Default::default(),
        }
    }

    /// Whether the connection presented no certificate.
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }
}

/// What checks credentials: the CA's verifier for client certificates and the admin token.
pub struct Authenticator {
    pub token: String,
    pub client_ca: Arc<dyn ClientCertVerifier>,
}

impl Authenticator {
    /// The user the request's credentials prove; None when it carries none that check out.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<&PeerCerts>) -> Option<UserInfo> {
        if let Some(p) = peer.filter(|p| !p.chain.is_empty()) {
            // A certificate presented is the identity, or the request is rejected (kube does
            // not fall back to the token when a certificate fails).
            return p
                .identity
                .get_or_init(|| self.certificate(&p.chain))
                .clone();
        }
        match bearer(headers)? {
            t if constant_time_eq(t.as_bytes(), self.token.as_bytes()) => Some(UserInfo::admin()),
            // Service-account tokens need the store (is the account still there?): see
            // `serviceaccount::authenticate`, which the router tries next.
            _ => None,
        }
    }

    fn certificate(&self, chain: &[CertificateDer<'static>]) -> Option<UserInfo> {
        let (leaf, intermediates) = chain.split_first()?;
        if let Err(e) = self
            .client_ca
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            tracing::debug!("client certificate rejected: {e}");
            return None;
        }
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(
            UserInfo {
                name,
                groups,
                ..Default::default()
            }
            .authenticated(),
        )
    }
}

/// Whether the request carries credentials at all (a certificate or an Authorization header):
/// such a request that does not authenticate is 401, one without is anonymous.
pub fn has_credentials(headers: &HeaderMap, peer: Option<&PeerCerts>) -> bool {
    peer.is_some_and(|p| !p.chain.is_empty())
        || headers.contains_key(axum::http::header::AUTHORIZATION)
}

/// Whether `given` is the admin token.
pub fn authorized_token(given: &str, token: &str) -> bool {
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// The token of `Authorization: Bearer TOKEN`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let given = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(given.trim())
}

/// Compare without an early exit, so response timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authn() -> Authenticator {
        let creds = crate::tls::Credentials::load_or_create(
            tempfile::tempdir().unwrap().path(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        Authenticator {
            token: "abc".into(),
            client_ca: creds.client_verifier().unwrap(),
        }
    }

    #[test]
    fn bearer_token() {
        let a = authn();
        let mut h = HeaderMap::new();
        assert_eq!(a.authenticate(&h, None), None);
        assert!(!has_credentials(&h, None));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(a.authenticate(&h, None), Some(UserInfo::admin()));
        h.insert("authorization", "Bearer abd".parse().unwrap());
        assert_eq!(a.authenticate(&h, None), None);
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(a.authenticate(&h, None), None);
        assert!(has_credentials(&h, None));
    }
}
