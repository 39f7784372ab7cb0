//! Image names, normalized the way podman does for local images: a name without a tag or
//! digest gets `:latest`; `x` and `localhost/x` (and `docker.io/library/x`) find each other.

use anyhow::{bail, Result};

/// A parsed reference `[host[:port]/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `[host[:port]/]path`, as written.
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        let what = || format!("image name {s:?}");
        if s.is_empty() || s.len() > 4096 {
            bail!("{}: empty or too long", what());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                d.parse::<crate::Digest>()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // The tag is after the last ':' only when no '/' follows it (host:port/repo).
        let (repo, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                bail!("{}: invalid tag {t:?}", what());
            }
        }
        if repo.is_empty() || repo.starts_with('/') || repo.ends_with('/') || repo.contains("//") {
            bail!("{}: invalid repository {repo:?}", what());
        }
        let (host, path) = split_host(repo);
        if let Some(h) = host {
            let ok = h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !ok {
                bail!("{}: invalid registry host {h:?}", what());
            }
        }
        for comp in path.split('/') {
            let ok = !comp.is_empty()
                && comp
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && comp.as_bytes()[0].is_ascii_alphanumeric();
            if !ok {
                bail!(
                    "{}: invalid repository component {comp:?} (lowercase letters, digits, '.', '_', '-')",
                    what()
                );
            }
        }
        Ok(Reference {
            repo: repo.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry host, when the first component names one (has '.' or ':' or is localhost).
    pub fn host(&self) -> Option<&str> {
        split_host(&self.repo).0
    }

    /// The canonical form recorded in the store: `repo:tag` (`:latest` by default), or
    /// `repo@digest`.
    pub fn normalized(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => format!("{}:{t}@{d}", self.repo),
            (None, Some(d)) => format!("{}@{d}", self.repo),
            (Some(t), None) => format!("{}:{t}", self.repo),
            (None, None) => format!("{}:latest", self.repo),
        }
    }

    /// Names that mean the same local image, best first: the normalized name, then with or
    /// without `localhost/`, and `docker.io/library/x` for a bare `x` (images loaded from
    /// docker archives carry those names).
    pub fn candidates(&self) -> Vec<String> {
        let n = self.normalized();
        let mut out = vec![n.clone()];
        match self.host() {
            Some("localhost") => out.push(n["localhost/".len()..].to_string()),
            Some("docker.io") => {
                let rest = &n["docker.io/".len()..];
                out.push(rest.strip_prefix("library/").unwrap_or(rest).to_string());
            }
            Some(_) => {}
            None => {
                out.push(format!("localhost/{n}"));
                if self.repo.contains('/') {
                    out.push(format!("docker.io/{n}"));
                } else {
                    out.push(format!("docker.io/library/{n}"));
                }
            }
        }
        out
    }
}

fn split_host(repo: &str) -> (Option<&str>, &str) {
    match repo.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, repo),
    }
}

/// The canonical form of a name given by a user or an archive.
pub fn normalize(name: &str) -> Result<String> {
    Ok(Reference::parse(name)?.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_podman() {
        assert_eq!(normalize("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(
            normalize("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            normalize("127.0.0.1:5000/a:v1").unwrap(),
            "127.0.0.1:5000/a:v1"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(normalize(&format!("x@{d}")).unwrap(), format!("x@{d}"));
        for bad in ["", "Upper", "a:", "/x", "x/", "a//b", "x:-t", "x@sha256:1"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn candidates() {
        let r = Reference::parse("x").unwrap();
        assert_eq!(
            r.candidates(),
            [
                "x:latest",
                "localhost/x:latest",
                "docker.io/library/x:latest"
            ]
        );
        let r = Reference::parse("localhost/x:t").unwrap();
        assert_eq!(r.candidates(), ["localhost/x:t", "x:t"]);
        let r = Reference::parse("docker.io/library/x").unwrap();
        assert_eq!(r.candidates(), ["docker.io/library/x:latest", "x:latest"]);
        let r = Reference::parse("reg.example:5000/x").unwrap();
        assert_eq!(r.candidates(), ["reg.example:5000/x:latest"]);
    }
}
