//! Service-account tokens: the signing key, the claims Kubernetes puts in a token, and their
//! verification. A token is an ES256 JWT signed with one P-256 key kept in
//! `DATA_DIR/pki/sa.key` (0600, created once, like the CA key); its public half is served as
//! a JWKS for OIDC discovery. [`verify`] checks what the token alone can tell (signature,
//! issuer, audience, validity window); [`authenticate`] adds what only the store can (the
//! ServiceAccount, and the Pod or Secret the token is bound to, still exist with the same uid).

use std::path::Path;

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The issuer (and the API server's own audience) kube-apiserver uses when told nothing else.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The shortest lifetime a TokenRequest may ask for (kube's validation).
pub const MIN_EXPIRATION: i64 = 600;
/// The longest lifetime issued (kube's `--service-account-max-token-expiration` is unset by
/// default; a cap keeps a leaked token's life bounded).
pub const MAX_EXPIRATION: i64 = 48 * 3600;
/// The lifetime when a TokenRequest names none (kube's default).
pub const DEFAULT_EXPIRATION: i64 = 3600;

/// The signing key and what is published of it.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwk: Value,
    pub issuer: String,
}

impl Keys {
    /// Load `PKI/sa.key`, or generate and persist it (mode 0600) on first start.
    pub fn load_or_create(pki: &Path) -> Result<Keys> {
        let path = pki.join("sa.key");
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => {
                KeyPair::from_pem(&pem).with_context(|| format!("reading {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // rcgen's default algorithm is ECDSA P-256 with SHA-256: ES256.
                let key = KeyPair::generate()?;
                crate::tls::write_private(&path, key.serialize_pem().as_bytes())?;
                key
            }
            Err(e) => return Err(e).context(format!("reading {}", path.display())),
        };
        Self::from_key(&key, ISSUER)
    }

    fn from_key(key: &KeyPair, issuer: &str) -> Result<Keys> {
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            anyhow::bail!("the service-account key must be an ECDSA P-256 key");
        }
        let point = key.public_key_raw();
        anyhow::ensure!(point.len() == 65 && point[0] == 4, "unexpected EC point");
        // kube names a key by the hash of its public key (PKIX DER), so rotations get new ids.
        let kid = B64URL.encode(Sha256::digest(key.public_key_der()));
        let jwk = json!({
            "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65]),
        });
        Ok(Keys {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(point),
            kid,
            jwk,
            issuer: issuer.to_string(),
        })
    }

    /// `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// `/.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// Sign `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// An object a token names (its ServiceAccount, and the Pod or Secret it is bound to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    /// When a client should start warning that it uses an old token (kubelet refreshes first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// The claims of a service-account token, as kube-apiserver issues them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaims,
}

impl Claims {
    /// Claims for `sa` in `ns`, valid from `now` for `seconds`, for `audiences`.
    pub fn new(
        issuer: &str,
        ns: &str,
        sa: Ref,
        audiences: Vec<String>,
        now: i64,
        seconds: i64,
    ) -> Claims {
        Claims {
            iss: issuer.to_string(),
            sub: username(ns, &sa.name),
            aud: audiences,
            exp: now + seconds,
            iat: now,
            nbf: now,
            jti: crate::meta::new_uid(),
            kubernetes: KubeClaims {
                namespace: ns.to_string(),
                serviceaccount: sa,
                pod: None,
                secret: None,
                warnafter: None,
            },
        }
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn username(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// The groups a service account is in.
pub fn groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".into(),
    ]
}

/// A service account a token authenticated: (user name, the SA's uid, groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub claims: Claims,
}

impl Identity {
    /// The identity RBAC sees: `system:serviceaccount:NS:NAME` in `system:serviceaccounts`,
    /// `system:serviceaccounts:NS` and `system:authenticated`, with the bound pod (if any) in
    /// `extra` as kube puts it.
    pub fn user_info(&self) -> super::UserInfo {
        let mut extra = std::collections::BTreeMap::new();
        if let Some(p) = &self.claims.kubernetes.pod {
            extra.insert(
                "authentication.kubernetes.io/pod-name".to_string(),
                vec![p.name.clone()],
            );
            extra.insert(
                "authentication.kubernetes.io/pod-uid".to_string(),
                vec![p.uid.clone()],
            );
        }
        super::UserInfo {
            name: self.name.clone(),
            uid: self.uid.clone(),
            groups: self.groups.clone(),
            extra,
        }
        .authenticated()
    }
}

/// Check a token's signature, issuer, that `audience` is one of its audiences, and that `now`
/// (unix seconds) lies in [nbf, exp); None for anything else, including tokens not meant
/// for service accounts (another issuer, an opaque string).
pub fn verify(keys: &Keys, token: &str, audience: &str, now: i64) -> Option<Identity> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref().is_some_and(|k| k != keys.kid) {
        return None;
    }
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[&keys.issuer]);
    v.set_audience(&[audience]);
    // The window is checked here against `now`, not the library's clock, and without leeway.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v)
        .ok()?
        .claims;
    if now < claims.nbf || now >= claims.exp {
        return None;
    }
    let k = &claims.kubernetes;
    if claims.sub != username(&k.namespace, &k.serviceaccount.name) {
        return None;
    }
    Some(Identity {
        name: claims.sub.clone(),
        uid: k.serviceaccount.uid.clone(),
        groups: groups(&k.namespace),
        claims,
    })
}

/// The unix time now.
pub fn now() -> i64 {
    crate::meta::unix_now()
}

/// Authenticate a bearer token as a service account: [`verify`] for the API server's own
/// audience, then the ServiceAccount and the bound Pod or Secret must still exist with the
/// uids the token names (a deleted account's or pod's token stops working at once).
pub async fn authenticate(api: &crate::Api, token: &str) -> Option<Identity> {
    authenticate_for(api, token, &api.sa_keys.issuer).await
}

/// [`authenticate`] for another audience (a TokenReview's).
pub async fn authenticate_for(api: &crate::Api, token: &str, audience: &str) -> Option<Identity> {
    let id = verify(&api.sa_keys, token, audience, now())?;
    let k = &id.claims.kubernetes;
    let alive = |plural: &'static str, r: Ref| async move {
        let res = api.registry.find("", "v1", plural)?;
        let kv = api
            .store
            .get(&res.key(Some(&k.namespace), &r.name))
            .await
            .ok()??;
        let obj = crate::meta::decode(&kv)?;
        (crate::meta::str_at(&obj, "/metadata/uid") == Some(r.uid.as_str())).then_some(())
    };
    alive("serviceaccounts", k.serviceaccount.clone()).await?;
    if let Some(p) = &k.pod {
        alive("pods", p.clone()).await?;
    }
    if let Some(s) = &k.secret {
        alive("secrets", s.clone()).await?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_key(&KeyPair::generate().unwrap(), ISSUER).unwrap()
    }

    fn sa() -> Ref {
        Ref {
            name: "robot".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn claims_have_kube_shape() {
        let c = Claims::new(ISSUER, "ns1", sa(), vec![ISSUER.into()], 1000, 600);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["sub"], "system:serviceaccount:ns1:robot");
        assert_eq!(v["exp"], 1600);
        assert_eq!(v["nbf"], 1000);
        assert_eq!(v["kubernetes.io"]["namespace"], "ns1");
        assert_eq!(v["kubernetes.io"]["serviceaccount"]["uid"], "u-1");
        assert!(v["kubernetes.io"].get("pod").is_none());
    }

    #[test]
    fn a_signed_token_verifies_within_its_window_only() {
        let k = keys();
        let t = k
            .sign(&Claims::new(
                ISSUER,
                "ns1",
                sa(),
                vec![ISSUER.into()],
                1000,
                600,
            ))
            .unwrap();
        let id = verify(&k, &t, ISSUER, 1000).expect("valid at nbf");
        assert_eq!(id.name, "system:serviceaccount:ns1:robot");
        assert_eq!(id.uid, "u-1");
        assert_eq!(id.groups[1], "system:serviceaccounts:ns1");
        assert!(verify(&k, &t, ISSUER, 1599).is_some());
        assert!(verify(&k, &t, ISSUER, 1600).is_none(), "expired");
        assert!(verify(&k, &t, ISSUER, 999).is_none(), "not yet valid");
    }

    #[test]
    fn wrong_audience_issuer_key_or_bytes_are_refused() {
        let k = keys();
        let claims = Claims::new(ISSUER, "ns1", sa(), vec!["vault".into()], 1000, 600);
        let t = k.sign(&claims).unwrap();
        assert!(verify(&k, &t, ISSUER, 1000).is_none(), "audience");
        assert!(verify(&k, &t, "vault", 1000).is_some());
        let other = Claims::new(
            "https://elsewhere",
            "ns1",
            sa(),
            vec![ISSUER.into()],
            1000,
            600,
        );
        assert!(
            verify(&k, &k.sign(&other).unwrap(), ISSUER, 1000).is_none(),
            "issuer"
        );
        let good = k
            .sign(&Claims::new(
                ISSUER,
                "ns1",
                sa(),
                vec![ISSUER.into()],
                1000,
                600,
            ))
            .unwrap();
        assert!(
            verify(&keys(), &good, ISSUER, 1000).is_none(),
            "another key"
        );
        // Change the payload (another namespace) and keep the signature.
        let parts: Vec<&str> = good.split('.').collect();
        let mut payload: Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
        payload["kubernetes.io"]["namespace"] = json!("kube-system");
        payload["sub"] = json!("system:serviceaccount:kube-system:robot");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(serde_json::to_vec(&payload).unwrap()),
            parts[2]
        );
        assert!(verify(&k, &forged, ISSUER, 1000).is_none(), "tampered");
        assert!(verify(&k, "not-a-jwt", ISSUER, 1000).is_none());
        // A token whose sub disagrees with its kubernetes.io claim is not a service account's.
        let mut odd = Claims::new(ISSUER, "ns1", sa(), vec![ISSUER.into()], 1000, 600);
        odd.sub = "admin".into();
        assert!(verify(&k, &k.sign(&odd).unwrap(), ISSUER, 1000).is_none());
    }

    #[test]
    fn the_key_persists_and_the_jwks_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load_or_create(dir.path()).unwrap();
        let b = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(a.kid, b.kid, "the key is created once");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sa.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The published JWK alone verifies a token (what an OIDC client does).
        let jwk = &a.jwks()["keys"][0];
        let dk =
            DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
                .unwrap();
        let t = a
            .sign(&Claims::new(
                ISSUER,
                "n",
                sa(),
                vec![ISSUER.into()],
                now(),
                600,
            ))
            .unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[ISSUER]);
        assert!(jsonwebtoken::decode::<Claims>(&t, &dk, &v).is_ok());
        assert_eq!(
            a.discovery()["jwks_uri"],
            format!("{ISSUER}/openid/v1/jwks")
        );
    }
}
