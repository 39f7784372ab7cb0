//! Repository names, tags and digests as the distribution spec's grammar defines them. Parsed by
//! hand (no regex crate): each checker mirrors one regular expression of the spec.

use std::fmt;

use crate::error::{ApiError, Code};

/// Longest repository name distribution accepts (its `RepositoryNameTotalLengthMax`).
const NAME_MAX: usize = 255;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= NAME_MAX && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of [a-z0-9]+ ...
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // ... then one separator: '.', '_', '__' or '-+'.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

/// Digest algorithms this registry stores and verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated `algorithm:hex` digest (lower-case hex of the right length).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, ApiError> {
        let invalid = || {
            ApiError::new(Code::DigestInvalid, format!("invalid digest {s:?}"))
                .detail(serde_json::json!({ "digest": s }))
        };
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                return Err(ApiError::new(
                    Code::DigestInvalid,
                    format!("unsupported digest algorithm {alg:?} (sha256 and sha512 are)"),
                ))
            }
        };
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if !ok {
            return Err(invalid());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        use sha2::Digest as _;
        let hex = match algorithm {
            Algorithm::Sha256 => hex::encode(sha2::Sha256::digest(data)),
            Algorithm::Sha512 => hex::encode(sha2::Sha512::digest(data)),
        };
        Digest { algorithm, hex }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ApiError> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else if valid_tag(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(ApiError::new(
                Code::ManifestInvalid,
                format!("invalid tag {s:?}"),
            ))
        }
    }
}

/// Checks a repository name, answering NAME_INVALID as the spec asks.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NameInvalid,
            format!("invalid repository name {name:?}"),
        )
        .detail(serde_json::json!({ "name": name })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/busybox",
            "a.b_c__d---e/f0",
            "x/y/z/w",
            "my-app",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a___b",
            "a..b",
            "-a",
            "a-",
            "a_",
            "a b",
            "a/_b",
            "UPPER/case",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(256)));
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_v1.0-rc.1"));
        assert!(!valid_tag(".hidden"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag("a/b"));
    }

    #[test]
    fn digests() {
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha256:E3B0").is_err());
        assert!(Digest::parse("md5:00").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "g".repeat(64))).is_err());
        assert!(Digest::parse("nocolon").is_err());
    }
}
