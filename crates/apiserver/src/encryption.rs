//! Encryption at rest for Secrets, as kube-apiserver's `aesgcm` provider: the store sees
//! `k8s:enc:aesgcm:v1:KEYNAME:` + a random 12-byte nonce + AES-256-GCM ciphertext and tag, with
//! the object's key as associated data (a value copied under another key does not decrypt).
//!
//! It wraps the store, so every path that reads or writes objects (get, list, watch, the
//! garbage collector) sees plaintext and nothing else needs to know. Values without the prefix
//! are read as they are: Secrets written before a key was configured stay readable and are
//! encrypted by their next write.

use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{bail, Context};
use base64::Engine;
use futures::StreamExt;
use sha2::Digest;
use yun_store::{
    Deleted, Error, Event, KeyValue, Outcome, RangeRequest, RangeResponse, Result, Store,
    WatchStream,
};

/// What marks an encrypted value (kube-apiserver's prefix for this provider).
const PREFIX: &str = "k8s:enc:aesgcm:v1:";
/// Where Secrets live in the store: the kinds whose values are encrypted.
pub const SECRETS: &str = "/registry/core/secrets/";
const NONCE: usize = 12;

/// An AES-256 key and its name (the start of its SHA-256, so a value names the key it needs
/// without revealing it).
pub struct Encryption {
    cipher: Aes256Gcm,
    name: String,
}

impl Encryption {
    /// Read a key file: 32 bytes, base64-encoded (as `head -c 32 /dev/urandom | base64`).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--encryption-key-file {}", path.display()))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32);
        let Some(key) = key else {
            bail!(
                "--encryption-key-file {}: expected 32 bytes in base64 (head -c 32 /dev/urandom | base64)",
                path.display()
            );
        };
        Ok(Self::new(&key))
    }

    fn new(key: &[u8]) -> Self {
        let digest = sha2::Sha256::digest(key);
        let name: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Encryption {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
            name,
        }
    }

    fn prefix(&self) -> String {
        format!("{PREFIX}{}:", self.name)
    }

    pub fn encrypt(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| Error::Backend(format!("encrypting {key}")))?;
        let mut out = self.prefix().into_bytes();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }
}

/// The plaintext of a stored value: encrypted ones are decrypted with `enc`, others returned
/// as they are. One line naming the key and the cause when that cannot be done.
pub fn decrypt(enc: Option<&Encryption>, key: &str, stored: &[u8]) -> Result<Vec<u8>> {
    let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
        return Ok(stored.to_vec());
    };
    let colon = rest.iter().position(|b| *b == b':');
    let Some(colon) = colon.filter(|c| rest.len() >= c + 1 + NONCE) else {
        return Err(Error::Backend(format!("{key}: malformed encrypted value")));
    };
    let name = String::from_utf8_lossy(&rest[..colon]);
    let Some(enc) = enc else {
        return Err(Error::Backend(format!(
            "{key} is encrypted with key {name} and no --encryption-key-file was given"
        )));
    };
    if name != enc.name {
        return Err(Error::Backend(format!(
            "{key} is encrypted with key {name}, but --encryption-key-file holds key {}",
            enc.name
        )));
    }
    let (nonce, sealed) = rest[colon + 1..].split_at(NONCE);
    enc.cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: key.as_bytes(),
            },
        )
        .map_err(|_| {
            Error::Backend(format!(
                "{key}: cannot decrypt with key {name} (wrong key or corrupt value)"
            ))
        })
}

/// The store as the API server sees it: Secrets encrypted on the way in (when a key is
/// configured) and decrypted on the way out.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    enc: Option<Arc<Encryption>>,
}

impl EncryptedStore {
    pub fn wrap(inner: Arc<dyn Store>, enc: Option<Encryption>) -> Arc<dyn Store> {
        Arc::new(EncryptedStore {
            inner,
            enc: enc.map(Arc::new),
        })
    }
}

fn open_kv(enc: Option<&Encryption>, mut kv: KeyValue) -> Result<KeyValue> {
    if kv.key.starts_with(SECRETS) && !kv.value.is_empty() {
        kv.value = decrypt(enc, &kv.key, &kv.value)?;
    }
    Ok(kv)
}

fn open_event(enc: Option<&Encryption>, ev: Event) -> Result<Event> {
    Ok(Event {
        kind: ev.kind,
        kv: open_kv(enc, ev.kv)?,
        prev_kv: ev.prev_kv.map(|p| open_kv(enc, p)).transpose()?,
    })
}

#[async_trait::async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let kv = self.inner.get(key).await?;
        kv.map(|kv| open_kv(self.enc.as_deref(), kv)).transpose()
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let mut resp = self.inner.range(req).await?;
        let enc = self.enc.as_deref();
        resp.kvs = resp
            .kvs
            .into_iter()
            .map(|kv| open_kv(enc, kv))
            .collect::<Result<_>>()?;
        Ok(resp)
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<Outcome<KeyValue>> {
        let stored = match &self.enc {
            Some(enc) if key.starts_with(SECRETS) => enc.encrypt(key, &value)?,
            _ => value.clone(),
        };
        let enc = self.enc.as_deref();
        Ok(
            match self.inner.put(key, stored, expected_mod_revision).await? {
                Outcome::Done(mut kv) => {
                    kv.value = value;
                    Outcome::Done(kv)
                }
                Outcome::Conflict { current } => Outcome::Conflict {
                    current: current.map(|kv| open_kv(enc, kv)).transpose()?,
                },
            },
        )
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<Outcome<Deleted>> {
        let enc = self.enc.as_deref();
        Ok(match self.inner.delete(key, expected).await? {
            Outcome::Done(d) => Outcome::Done(Deleted {
                prev_kv: open_kv(enc, d.prev_kv)?,
                revision: d.revision,
            }),
            Outcome::Conflict { current } => Outcome::Conflict {
                current: current.map(|kv| open_kv(enc, kv)).transpose()?,
            },
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let events = self.inner.watch(prefix, from_revision).await?;
        let enc = self.enc.clone();
        Ok(Box::pin(events.map(move |ev| {
            ev.and_then(|ev| open_event(enc.as_deref(), ev))
        })))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }
}

/// Refuse to start with a key that cannot read the Secrets already stored (or without a key
/// when some are encrypted): one line, before anything is served.
pub async fn check_key(store: &dyn Store, enc: Option<&Encryption>) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: SECRETS.into(),
                limit: 500,
                continue_after: after,
                revision: 0,
            })
            .await?;
        for kv in &page.kvs {
            decrypt(enc, &kv.key, &kv.value).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        after = page.continue_token;
        if after.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_names_the_key_and_binds_the_path() {
        let enc = Encryption::new(&[7; 32]);
        let key = "/registry/core/secrets/default/s";
        let a = enc.encrypt(key, b"hunter2").unwrap();
        let b = enc.encrypt(key, b"hunter2").unwrap();
        assert!(a.starts_with(enc.prefix().as_bytes()));
        assert_ne!(a, b, "a fresh nonce per write");
        assert_eq!(decrypt(Some(&enc), key, &a).unwrap(), b"hunter2");
        // Plaintext from before encryption was enabled reads as is.
        assert_eq!(decrypt(Some(&enc), key, b"{}").unwrap(), b"{}");
        // Another path, another key, no key: one line each.
        let moved = decrypt(Some(&enc), "/registry/core/secrets/default/t", &a);
        assert!(moved.unwrap_err().to_string().contains("cannot decrypt"));
        let other = Encryption::new(&[8; 32]);
        let wrong = decrypt(Some(&other), key, &a).unwrap_err().to_string();
        assert!(
            wrong.contains(&enc.name) && wrong.contains(&other.name),
            "{wrong}"
        );
        assert!(decrypt(None, key, &a)
            .unwrap_err()
            .to_string()
            .contains("no --encryption-key-file"));
    }
}
