//! Image references, parsed and normalised as Docker parses them.
//!
//! `app` is `docker.io/library/app:latest`; `user/app:1` is `docker.io/user/app:1`; a first
//! component with a `.` or `:` or equal to `localhost` names a registry
//! (`localhost:5000/team/app:1`); `@sha256:...` pins a digest.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, validate_repository, validate_tag};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API lives.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// Why a reference did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Empty or otherwise unusable.
    #[error("invalid reference {0:?}: {1}")]
    Invalid(String, String),
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with port), `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path inside the registry.
    pub repository: String,
    /// Tag, if given (`latest` is filled in when neither tag nor digest is).
    pub tag: Option<String>,
    /// Digest, if given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// The tag or digest to ask the registry for (the digest wins).
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Host to connect to (Docker Hub's API host for `docker.io`).
    pub fn endpoint(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to a digest.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The short form Docker shows: `app:1` for `docker.io/library/app:1`.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        full.strip_prefix("docker.io/library/")
            .or_else(|| full.strip_prefix("docker.io/"))
            .unwrap_or(&full)
            .to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens, or an IPv6
/// address in brackets; a numeric port.
fn valid_host(domain: &str) -> bool {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(v6) = domain.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else {
            return false;
        };
        let addr_ok = !addr.is_empty()
            && addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return addr_ok && (rest.is_empty() || rest.strip_prefix(':').is_some_and(port_ok));
    }
    let (host, port) = match domain.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    host.split('.').all(label_ok) && port.is_none_or(port_ok)
}

fn looks_like_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ReferenceError::Invalid(s.to_string(), why.to_string());
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            validate_tag(t).map_err(|e| bad(&e.to_string()))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder)) if looks_like_registry(first) => {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|e| bad(&e.to_string()))?;
        if !valid_host(&registry) {
            return Err(bad("invalid registry host"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn parses_like_docker() {
        assert_eq!(p("app").to_string(), "docker.io/library/app:latest");
        assert_eq!(p("app").familiar(), "app:latest");
        assert_eq!(p("user/app:1").to_string(), "docker.io/user/app:1");
        assert_eq!(
            p("localhost:5000/app:1").to_string(),
            "localhost:5000/app:1"
        );
        assert_eq!(p("localhost/app").registry, "localhost");
        assert_eq!(p("localhost:5000/a/b/c").repository, "a/b/c");
        assert_eq!(p("localhost:5000/a/b/c").tag.as_deref(), Some("latest"));
        assert_eq!(p("ghcr.io/org/app:v1.2").endpoint(), "ghcr.io");
        assert_eq!(p("debian:bookworm").endpoint(), DOCKER_HUB_ENDPOINT);
        assert_eq!(p("index.docker.io/library/app").registry, "docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("127.0.0.1:5000/app@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), d);
        let r = p(&format!("127.0.0.1:5000/app:1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.reference(), d);
        assert_eq!(
            p("docker.io/app").to_string(),
            "docker.io/library/app:latest"
        );
        assert_eq!(p("[::1]:5000/app:1").registry, "[::1]:5000");
        assert_eq!(p("[::1]/app").registry, "[::1]");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER",
            "app:",
            "app:-x",
            "a//b",
            "app@sha256:12",
            "localhost:5000/",
            "x/../y",
            "h..x/a:1",
            "h:port/a",
            "a b",
            "[zz]:5000/a",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
