//! AWS Signature Version 4 as S3 checks it: the `Authorization` header, presigned query
//! strings, and the seed signature of `aws-chunked` streaming bodies (whose chunks
//! `body::ChunkDecoder` verifies with [`ChunkSigner`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use hyper::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::{Code, S3Error, S3Result};

pub const UNSIGNED: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// S3 refuses requests whose date is further than this from its clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest validity a presigned URL may ask for (seven days).
const MAX_EXPIRES: u64 = 604_800;

/// How the body of an authenticated request is to be checked.
#[derive(Debug, Clone)]
pub enum Payload {
    Unsigned,
    /// Hex SHA-256 of the body, to compare once it has been read.
    Sha256(String),
    /// `aws-chunked`: each chunk signed (and, with `trailer`, the trailer too).
    Chunked {
        signer: Option<ChunkSigner>,
    },
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub access_key: String,
    pub payload: Payload,
}

/// Signs the chunks of a streaming upload, each chaining on the previous signature.
#[derive(Debug, Clone)]
pub struct ChunkSigner {
    key: [u8; 32],
    amz_date: String,
    scope: String,
    pub prev: String,
}

impl ChunkSigner {
    pub fn chunk_signature(&self, data_sha256: &[u8]) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.amz_date,
            self.scope,
            self.prev,
            hex::encode(data_sha256)
        );
        hex::encode(hmac(&self.key, sts.as_bytes()))
    }

    pub fn trailer_signature(&self, trailer: &[u8]) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            self.prev,
            hex::encode(Sha256::digest(trailer))
        );
        hex::encode(hmac(&self.key, sts.as_bytes()))
    }
}

pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// Constant-time comparison, so a signature cannot be guessed byte by byte from timing.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// SigV4's URI encoding: everything but unreserved characters (and `/` when `keep_slash`).
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = (b[i + 1] as char).to_digit(16);
            let lo = (b[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The raw query's pairs, percent-decoded (`+` stays a plus, as S3 reads it).
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&percent_decode(k)).into_owned(),
                String::from_utf8_lossy(&percent_decode(v)).into_owned(),
            )
        })
        .collect()
}

struct Parsed<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn malformed(msg: &str) -> S3Error {
    S3Error::new(Code::AuthorizationHeaderMalformed, msg.to_string())
}

fn parse_credential(cred: &str) -> S3Result<(&str, &str, &str, &str)> {
    let mut it = cred.rsplitn(5, '/');
    let term = it.next().unwrap_or_default();
    let service = it.next().unwrap_or_default();
    let region = it.next().unwrap_or_default();
    let date = it.next().unwrap_or_default();
    let access_key = it.next().unwrap_or_default();
    if term != "aws4_request" || access_key.is_empty() || date.len() != 8 {
        return Err(malformed(
            "the Credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    }
    Ok((access_key, date, region, service))
}

/// Checks a request's signature (header or presigned query); an unsigned request is refused.
pub fn authenticate(
    parts: &Parts,
    credentials: &HashMap<String, String>,
    now: SystemTime,
) -> S3Result<Auth> {
    let query = query_pairs(parts.uri.query().unwrap_or(""));
    let qget = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());

    let (p, amz_date, payload_hash, presigned) = if let Some(authz) = header("authorization") {
        let rest = match authz.strip_prefix("AWS4-HMAC-SHA256 ") {
            Some(r) => r,
            None if authz.starts_with("AWS ") => {
                return Err(S3Error::new(
                    Code::AccessDenied,
                    "Signature Version 2 is not supported: use Signature Version 4",
                ))
            }
            None => return Err(malformed("unsupported Authorization scheme")),
        };
        let mut cred = None;
        let mut signed = None;
        let mut sig = None;
        for field in rest.split(',') {
            let (k, v) = field.trim().split_once('=').unwrap_or(("", ""));
            match k {
                "Credential" => cred = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => sig = Some(v),
                _ => {}
            }
        }
        let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
            return Err(malformed(
                "the Authorization header needs Credential, SignedHeaders and Signature",
            ));
        };
        let (access_key, date, region, service) = parse_credential(cred)?;
        let amz_date = header("x-amz-date")
            .ok_or_else(|| S3Error::new(Code::AccessDenied, "X-Amz-Date header is missing"))?;
        let payload = header("x-amz-content-sha256").unwrap_or(UNSIGNED);
        let p = Parsed {
            access_key,
            date,
            region,
            service,
            signed_headers: signed.split(';').collect(),
            signature: sig,
        };
        (p, amz_date, payload, false)
    } else if let Some(sig) = qget("X-Amz-Signature") {
        if qget("X-Amz-Algorithm") != Some("AWS4-HMAC-SHA256") {
            return Err(S3Error::new(
                Code::AuthorizationHeaderMalformed,
                "X-Amz-Algorithm must be AWS4-HMAC-SHA256",
            ));
        }
        let cred =
            qget("X-Amz-Credential").ok_or_else(|| malformed("X-Amz-Credential is missing"))?;
        let (access_key, date, region, service) = parse_credential(cred)?;
        let amz_date = qget("X-Amz-Date").ok_or_else(|| malformed("X-Amz-Date is missing"))?;
        let p = Parsed {
            access_key,
            date,
            region,
            service,
            signed_headers: qget("X-Amz-SignedHeaders")
                .unwrap_or("host")
                .split(';')
                .collect(),
            signature: sig,
        };
        (p, amz_date, UNSIGNED, true)
    } else if qget("Signature").is_some() || qget("AWSAccessKeyId").is_some() {
        return Err(S3Error::new(
            Code::AccessDenied,
            "Signature Version 2 is not supported: use Signature Version 4",
        ));
    } else {
        return Err(S3Error::new(Code::AccessDenied, "Access Denied"));
    };

    let secret = credentials.get(p.access_key).ok_or_else(|| {
        S3Error::new(
            Code::InvalidAccessKeyId,
            "The AWS Access Key Id you provided does not exist in our records.",
        )
        .with("AWSAccessKeyId", p.access_key)
    })?;
    let when = crate::time::parse_amz_date(amz_date)
        .ok_or_else(|| S3Error::new(Code::AccessDenied, "X-Amz-Date is not a valid date"))?;
    if !amz_date.starts_with(p.date) {
        return Err(malformed("the Credential's date does not match X-Amz-Date"));
    }
    if presigned {
        let expires: u64 = qget("X-Amz-Expires")
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| {
                S3Error::new(
                    Code::AuthorizationHeaderMalformed,
                    "X-Amz-Expires is missing or invalid",
                )
            })?;
        if expires > MAX_EXPIRES {
            return Err(S3Error::new(
                Code::AuthorizationHeaderMalformed,
                "X-Amz-Expires must be less than a week (in seconds)",
            ));
        }
        if now > when + Duration::from_secs(expires) {
            return Err(S3Error::new(Code::AccessDenied, "Request has expired")
                .with("X-Amz-Expires", expires.to_string()));
        }
        if when > now + MAX_SKEW {
            return Err(S3Error::new(Code::AccessDenied, "Request is not yet valid"));
        }
    } else {
        let skew = now.duration_since(when).unwrap_or_else(|e| e.duration());
        if skew > MAX_SKEW {
            return Err(S3Error::new(
                Code::RequestTimeTooSkewed,
                "The difference between the request time and the current time is too large.",
            )
            .with("RequestTime", amz_date)
            .with("ServerTime", crate::time::iso8601(now)));
        }
    }

    // The canonical request.
    let path = parts.uri.path();
    let canonical_uri = uri_encode(&percent_decode(path), true);
    let mut q: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false),
            )
        })
        .collect();
    q.sort();
    let canonical_query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in &p.signed_headers {
        let values: Vec<String> = parts
            .headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() && *name == "host" {
            // HTTP/2 carries the host as :authority.
            let host = parts.uri.authority().map(|a| a.as_str()).unwrap_or("");
            canonical_headers.push_str(&format!("host:{host}\n"));
            continue;
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{payload_hash}",
        parts.method.as_str(),
        p.signed_headers.join(";")
    );
    let scope = format!("{}/{}/{}/aws4_request", p.date, p.region, p.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(secret, p.date, p.region, p.service);
    let expected = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    if !same(&expected, p.signature) {
        return Err(S3Error::new(
            Code::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
        .with("AWSAccessKeyId", p.access_key));
    }

    let payload = match payload_hash {
        UNSIGNED => Payload::Unsigned,
        STREAMING_SIGNED | STREAMING_SIGNED_TRAILER => Payload::Chunked {
            signer: Some(ChunkSigner {
                key,
                amz_date: amz_date.to_string(),
                scope,
                prev: expected,
            }),
        },
        STREAMING_UNSIGNED_TRAILER => Payload::Chunked { signer: None },
        h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Payload::Sha256(h.to_ascii_lowercase())
        }
        _ => {
            return Err(S3Error::new(
                Code::InvalidArgument,
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a SHA-256",
            ))
        }
    };
    Ok(Auth {
        access_key: p.access_key.to_string(),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example: GET /test.txt with a Range header.
    #[test]
    fn aws_example_get_object() {
        let req = hyper::Request::builder()
            .method("GET")
            .uri("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .header("x-amz-content-sha256", EMPTY_SHA256)
            .header("x-amz-date", "20130524T000000Z")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let creds = HashMap::from([(
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        )]);
        let now = crate::time::parse_amz_date("20130524T000100Z").unwrap();
        let auth = authenticate(&parts, &creds, now).unwrap();
        assert!(matches!(auth.payload, Payload::Sha256(_)));
        let creds = HashMap::from([("AKIAIOSFODNN7EXAMPLE".to_string(), "wrong".to_string())]);
        let err = authenticate(&parts, &creds, now).unwrap_err();
        assert_eq!(err.code, Code::SignatureDoesNotMatch);
        let later = crate::time::parse_amz_date("20130524T010000Z").unwrap();
        let creds = HashMap::from([(
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        )]);
        let err = authenticate(&parts, &creds, later).unwrap_err();
        assert_eq!(err.code, Code::RequestTimeTooSkewed);
    }

    /// AWS's documented presigned URL example (valid for 86400 s).
    #[test]
    fn aws_example_presigned() {
        let uri = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let req = hyper::Request::builder()
            .uri(uri)
            .header("host", "examplebucket.s3.amazonaws.com")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let creds = HashMap::from([(
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        )]);
        let now = crate::time::parse_amz_date("20130524T100000Z").unwrap();
        authenticate(&parts, &creds, now).unwrap();
        let expired = crate::time::parse_amz_date("20130526T000000Z").unwrap();
        let err = authenticate(&parts, &creds, expired).unwrap_err();
        assert_eq!(err.code, Code::AccessDenied);
        assert_eq!(err.message, "Request has expired");
    }
}
