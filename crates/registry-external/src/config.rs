//! Configuration blocks hyperregistry reads: `external`, `replication.rules` and `proxies`.

use serde::{Deserialize, Serialize};

/// `external.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExternalConfig {
    /// Base64 of the 32-byte AES-256-GCM key for secrets; generated in the data dir when unset.
    pub secretkey: Option<String>,
}

/// `replication.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReplicationConfig {
    /// Rules run on push.
    pub rules: Vec<RuleSpec>,
}

/// A replication rule: pushes matching `repositories` and `tags` are copied to a registry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(default)]
pub struct RuleSpec {
    /// Identifier (assigned for API-managed rules; `config:<name>` for configured ones).
    #[schema(read_only)]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The target external registry, by id or name.
    pub registry_id: String,
    /// Repository globs (`*` within a segment, `**` across); empty = every repository.
    pub repositories: Vec<String>,
    /// Tag globs; empty = every tag (and pushes by digest).
    pub tags: Vec<String>,
    /// Prefix put before the repository name on the target (`mirror` → `mirror/app`).
    pub target_prefix: Option<String>,
}

/// Inline credentials of a proxy upstream (or of an API request).
#[derive(Clone, Default, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(default)]
pub struct AuthSpec {
    /// `none`, `basic` or `bearer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Basic user name.
    pub username: Option<String>,
    /// Basic password (write-only: stored encrypted, never returned).
    #[schema(write_only)]
    pub password: Option<String>,
    /// Bearer token (write-only: stored encrypted, never returned).
    #[schema(write_only)]
    pub token: Option<String>,
}

impl std::fmt::Debug for AuthSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSpec")
            .field("type", &self.kind)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `proxies[]`: a repository prefix served as a pull-through cache of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProxySpec {
    /// Local prefix: `hub` serves `hub/library/busybox` from upstream `library/busybox`.
    pub prefix: String,
    /// The upstream as a stored external registry (id or name)...
    pub registry_id: Option<String>,
    /// ...or inline: endpoint URL,
    pub endpoint: Option<String>,
    /// registry type (`dockerhub` adds `library/`),
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// credentials,
    pub auth: Option<AuthSpec>,
    /// and the insecure flag.
    pub insecure: bool,
    /// How long a fetched tag is served without asking upstream (`30s`, `10m`, `1h`).
    pub ttl: String,
}

impl Default for ProxySpec {
    fn default() -> Self {
        ProxySpec {
            prefix: String::new(),
            registry_id: None,
            endpoint: None,
            kind: None,
            auth: None,
            insecure: false,
            ttl: "10m".into(),
        }
    }
}
