//! The `auth.*` configuration block (YAML/TOML keys; single-word keys so that
//! `REGISTRY_AUTH_*` environment variables can reach them).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `auth.*`: no `htpasswd` and no `token` block means no authentication at all.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AuthConfig {
    /// `auth.htpasswd`: users and bcrypt hashes; alone, it turns on Basic auth.
    pub htpasswd: Option<HtpasswdConfig>,
    /// `auth.token`: the Docker token service (users still come from `htpasswd`).
    pub token: Option<TokenConfig>,
    /// `auth.groups`: group name → its users.
    pub groups: BTreeMap<String, Vec<String>>,
    /// `auth.access`: what users and groups may do on which repositories (grants add up).
    pub access: Vec<AccessRule>,
    /// `auth.anonymous`: what requests without credentials may do.
    pub anonymous: AnonymousConfig,
    /// `auth.admins`: users and groups allowed everything, including the management API.
    pub admins: AdminsConfig,
    /// `auth.throttle`: failed-login throttling.
    pub throttle: ThrottleConfig,
}

/// `auth.htpasswd.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HtpasswdConfig {
    /// Realm in the `Basic` challenge.
    pub realm: String,
    /// The htpasswd file (`user:$2y$...` lines, bcrypt only).
    pub path: PathBuf,
}

impl Default for HtpasswdConfig {
    fn default() -> Self {
        HtpasswdConfig {
            realm: "hyperregistry".into(),
            path: PathBuf::new(),
        }
    }
}

/// `auth.token.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Token endpoint URL put in challenges; `http://<Host header>/token` when unset.
    pub realm: Option<String>,
    /// The `service` (JWT audience).
    pub service: String,
    /// The JWT issuer.
    pub issuer: String,
    /// PEM private key (PKCS#8 P-256 for ES256; PKCS#1 or PKCS#8 RSA for RS256). Generated
    /// at first start in the data directory when unset.
    pub key: Option<PathBuf>,
    /// `ES256` (default) or `RS256`.
    pub algorithm: String,
    /// Access token lifetime in seconds.
    pub expiration: u64,
    /// Refresh token (Docker's identity token) lifetime in seconds.
    pub refreshexpiration: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            realm: None,
            service: "hyperregistry".into(),
            issuer: "hyperregistry".into(),
            key: None,
            algorithm: "ES256".into(),
            expiration: 300,
            refreshexpiration: 7 * 24 * 3600,
        }
    }
}

/// One grant: these users and groups may do these actions on these repositories.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AccessRule {
    /// Repository patterns: `*` matches one path segment (or part of one, as in `app-*`),
    /// `**` any number of segments.
    pub repositories: Vec<String>,
    /// User names.
    pub users: Vec<String>,
    /// Group names (from `auth.groups`).
    pub groups: Vec<String>,
    /// `pull`, `push`, `delete`, or `*` for all three.
    pub actions: Vec<String>,
}

/// `auth.anonymous.*`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AnonymousConfig {
    /// Repository patterns anyone may pull without credentials.
    pub pull: Vec<String>,
}

/// `auth.admins.*`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AdminsConfig {
    /// Admin users.
    pub users: Vec<String>,
    /// Admin groups.
    pub groups: Vec<String>,
}

/// `auth.throttle.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ThrottleConfig {
    /// Failures within `window` that lock a user name and a client address (0 = off).
    pub maxfailures: u32,
    /// The window, in seconds.
    pub window: u64,
    /// How long a locked name or address gets 429, in seconds.
    pub backoff: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            maxfailures: 5,
            window: 60,
            backoff: 60,
        }
    }
}
