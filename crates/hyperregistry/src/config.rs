//! Configuration: defaults, then an optional YAML or TOML file, then `REGISTRY_*` env vars
//! (Distribution-style names: `REGISTRY_HTTP_ADDR` is `http.addr`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// HTTP listener.
    pub http: HttpConfig,
    /// Blob storage.
    pub storage: StorageConfig,
    /// Metadata database.
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// Coordination between replicas.
    pub redis: RedisConfig,
    /// `external.*`: the key for external registry secrets.
    pub external: registry_external::config::ExternalConfig,
    /// `replication.*`: rules run on push.
    pub replication: registry_external::config::ReplicationConfig,
    /// `proxies[]`: pull-through caches.
    pub proxies: Vec<registry_external::config::ProxySpec>,
    /// Garbage collection.
    pub gc: GcConfig,
    /// Webhook notifications (`notifications.endpoints`).
    pub notifications: registry_mgmt::notify::NotificationsConfig,
    /// Authentication and access rules (off when neither `auth.htpasswd` nor `auth.token`).
    pub auth: registry_auth::AuthConfig,
}

/// `http.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Listen address, `0.0.0.0:5000` by default.
    pub addr: String,
    /// Requests writing blob data at once (0 = unlimited); beyond it, 429 TOOMANYREQUESTS.
    pub maxconcurrentuploads: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "0.0.0.0:5000".into(),
            maxconcurrentuploads: 0,
        }
    }
}

/// `storage.*`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct StorageConfig {
    /// `storage.filesystem.*`
    pub filesystem: FilesystemConfig,
    /// Largest blob accepted, in bytes (unlimited when unset).
    pub maxblobsize: Option<u64>,
    /// `storage.delete.*`
    pub delete: EnabledFlag,
    /// `storage.maintenance.*`
    pub maintenance: MaintenanceConfig,
}

/// A `{ enabled: bool }` block, as Distribution writes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EnabledFlag {
    /// Whether the feature is on.
    pub enabled: bool,
}

impl Default for EnabledFlag {
    fn default() -> Self {
        EnabledFlag { enabled: true }
    }
}

/// `storage.maintenance.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    /// `storage.maintenance.readonly.enabled`: refuse every write.
    pub readonly: EnabledFlag,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            readonly: EnabledFlag { enabled: false },
        }
    }
}

/// `storage.filesystem.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FilesystemConfig {
    /// The data directory: blobs, uploads and (by default) the SQLite database.
    pub rootdirectory: PathBuf,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig {
            rootdirectory: PathBuf::from("registry-data"),
        }
    }
}

/// `database.*`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Database URL; `sqlite://<rootdirectory>/metadata.db` when unset.
    pub url: Option<String>,
}

/// `log.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `debug`, `registry_api=debug`); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// `gc.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GcConfig {
    /// Nothing written or asserted more recently than this is collected (`1h`).
    pub graceperiod: String,
    /// Run GC inside the server this often (`24h`); off when unset.
    pub interval: Option<String>,
    /// Whether the server's periodic GC also sweeps manifests no tag reaches.
    pub deleteuntagged: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            graceperiod: "1h".into(),
            interval: None,
            deleteuntagged: false,
        }
    }
}

impl GcConfig {
    /// The grace period.
    pub fn grace(&self) -> anyhow::Result<std::time::Duration> {
        humantime::parse_duration(&self.graceperiod)
            .with_context(|| format!("gc.graceperiod {:?}", self.graceperiod))
    }

    /// The periodic GC interval, `None` when off.
    pub fn interval(&self) -> anyhow::Result<Option<std::time::Duration>> {
        match self.interval.as_deref().map(str::trim) {
            None | Some("" | "0" | "off") => Ok(None),
            Some(s) => {
                let d =
                    humantime::parse_duration(s).with_context(|| format!("gc.interval {s:?}"))?;
                Ok((!d.is_zero()).then_some(d))
            }
        }
    }
}

/// `redis.*`: coordination between replicas (locks, cache invalidation, shared lookups).
/// Without a URL the registry coordinates within its own process only.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` (or `rediss://`); `REGISTRY_REDIS_URL`.
    pub url: Option<String>,
    /// Prefix of every key and channel, so that registries can share one Redis.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            prefix: registry_coord::redis::DEFAULT_PREFIX.into(),
        }
    }
}

impl Config {
    /// Load from an optional file and the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            builder = builder.add_source(config::File::from(path));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("REGISTRY")
                .separator("_")
                .try_parsing(true),
        );
        let cfg: Config = builder
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        Ok(cfg)
    }

    /// The API policy these settings describe.
    pub fn policy(&self) -> registry_api::Policy {
        registry_api::Policy {
            delete_enabled: self.storage.delete.enabled,
            read_only: self.storage.maintenance.readonly.enabled,
            max_concurrent_uploads: self.http.maxconcurrentuploads,
        }
    }

    /// The metadata database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.storage
                    .filesystem
                    .rootdirectory
                    .join("metadata.db")
                    .display()
            )
        })
    }
}
