//! Reference-name helpers: Docker-style normalization (`app:1` → `docker.io/library/app:1`)
//! and the short form Docker writes in `RepoTags`.

use oci_core::{Digest, validate_repository, validate_tag};

use crate::error::StoreError;

/// Docker Hub's canonical domain.
const DOCKER_HUB: &str = "docker.io";

/// Normalize a Docker reference: add `docker.io/` (and `library/` for one-component names)
/// when no registry is named, and `:latest` when neither tag nor digest is given.
pub fn normalize_docker_ref(s: &str) -> Result<String, StoreError> {
    let bad = || StoreError::InvalidName(s.to_string());
    if s.is_empty() || s.len() > 1024 {
        return Err(bad());
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest.to_string())
        }
        Some(_) => (DOCKER_HUB, name.to_string()),
        None => (DOCKER_HUB, format!("library/{name}")),
    };
    let domain = if domain == "index.docker.io" {
        DOCKER_HUB
    } else {
        domain
    };
    if !valid_domain(domain) || validate_repository(&path).is_err() {
        return Err(bad());
    }
    if let Some(t) = tag {
        validate_tag(t).map_err(|_| bad())?;
    }
    let mut out = format!("{domain}/{path}");
    match (tag, &digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(&d.to_string());
    }
    Ok(out)
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens; a numeric port.
fn valid_domain(domain: &str) -> bool {
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
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host.split('.').all(label_ok) && port_ok
}

/// The `RepoTags` form of a stored name: `docker.io/library/` or `docker.io/` stripped;
/// `None` when the name has no tag (digest references cannot be Docker tags).
pub fn docker_repo_tag(name: &str) -> Option<String> {
    if name.contains('@') || name.parse::<Digest>().is_ok() {
        return None;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if !last.contains(':') {
        return None;
    }
    let short = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    Some(short.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("app:1", "docker.io/library/app:1"),
            ("app", "docker.io/library/app:latest"),
            ("user/app:1", "docker.io/user/app:1"),
            ("host:5000/x:1", "host:5000/x:1"),
            ("localhost/x", "localhost/x:latest"),
            ("index.docker.io/library/a:b", "docker.io/library/a:b"),
            ("quay.io/a/b/c:v1.2", "quay.io/a/b/c:v1.2"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_docker_ref(input).unwrap(), want, "{input}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_docker_ref(&format!("app@{d}")).unwrap(),
            format!("docker.io/library/app@{d}")
        );
        for bad in [
            "",
            "App:1",
            "a:b:c",
            "../x:1",
            "a/../b",
            "x:",
            "a@sha256:zz",
            "a b",
            "h..x/a:1",
            "h:port/a",
        ] {
            assert!(normalize_docker_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_tags() {
        assert_eq!(
            docker_repo_tag("docker.io/library/app:1").as_deref(),
            Some("app:1")
        );
        assert_eq!(
            docker_repo_tag("docker.io/user/app:1").as_deref(),
            Some("user/app:1")
        );
        assert_eq!(
            docker_repo_tag("localhost:5000/app:1").as_deref(),
            Some("localhost:5000/app:1")
        );
        assert_eq!(docker_repo_tag("localhost:5000/app"), None);
        assert_eq!(
            docker_repo_tag(&format!("app@sha256:{}", "a".repeat(64))),
            None
        );
    }
}
