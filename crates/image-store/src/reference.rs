//! Reference-name helpers: Docker-style normalization (`app:1` → `docker.io/library/app:1`)
//! and the short form Docker writes in `RepoTags`.

use oci_core::Reference;

use crate::error::StoreError;

/// Normalize a Docker reference ([`oci_core::Reference`]): add `docker.io/` (and `library/`
/// for Docker Hub names of one component) when no registry is named, and `:latest` when
/// neither tag nor digest is given.
pub fn normalize_docker_ref(s: &str) -> Result<String, StoreError> {
    s.parse::<Reference>()
        .map(|r| r.to_string())
        .map_err(|_| StoreError::InvalidName(s.to_string()))
}

/// The `RepoTags` form of a stored name: `docker.io/library/` or `docker.io/` stripped;
/// `None` when the name has no tag (digest references cannot be Docker tags).
pub fn docker_repo_tag(name: &str) -> Option<String> {
    let r: Reference = name.parse().ok()?;
    let tagged = name
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'));
    (tagged && r.digest.is_none()).then(|| r.familiar())
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
            ("docker.io/app:1", "docker.io/library/app:1"),
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
