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
    /// `http.timeouts.*`
    pub timeouts: TimeoutsConfig,
    /// Connections from one client address at once (0 = no cap); beyond it, new ones are
    /// closed at accept.
    pub maxconnsperip: usize,
    /// Manifest bytes being received across all requests (0 = unlimited); beyond it, 429
    /// TOOMANYREQUESTS with Retry-After.
    pub maxmanifestbytesinflight: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "0.0.0.0:5000".into(),
            maxconcurrentuploads: 0,
            timeouts: TimeoutsConfig::default(),
            maxconnsperip: 0,
            maxmanifestbytesinflight: registry_api::DEFAULT_MANIFEST_BYTES_IN_FLIGHT,
        }
    }
}

/// `http.timeouts.*`, in seconds (0 turns one off).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TimeoutsConfig {
    /// A request head must arrive whole within this time of its first byte.
    pub header: u64,
    /// A connection with no request in progress is closed after this long without a byte.
    pub idle: u64,
    /// An upload body must bring `bodyminbytes` in every window of this length.
    pub body: u64,
    /// Bytes an upload body must bring per `body` window.
    pub bodyminbytes: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            header: 10,
            idle: 60,
            body: 30,
            bodyminbytes: 1024,
        }
    }
}

impl TimeoutsConfig {
    /// Seconds as a duration, `None` for 0 (off).
    fn secs(s: u64) -> Option<std::time::Duration> {
        (s > 0).then(|| std::time::Duration::from_secs(s))
    }

    /// The header timeout, if on.
    pub fn header(&self) -> Option<std::time::Duration> {
        Self::secs(self.header)
    }

    /// The idle timeout, if on.
    pub fn idle(&self) -> Option<std::time::Duration> {
        Self::secs(self.idle)
    }

    /// The body-stall window, if on.
    pub fn body(&self) -> Option<std::time::Duration> {
        Self::secs(self.body)
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
    /// `storage.s3.*`
    pub s3: S3StorageConfig,
    /// The blob backend, `filesystem` or `s3` (`REGISTRY_STORAGE`); when unset, `s3` if
    /// `storage.s3.bucket` is set, else `filesystem`.
    pub driver: Option<String>,
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

/// `storage.s3.*` (Distribution's names): an S3-compatible bucket for blobs.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct S3StorageConfig {
    /// Bucket name.
    pub bucket: Option<String>,
    /// Endpoint URL for S3-compatible servers (`http://minio:9000`); AWS when unset.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Access key id (else `AWS_*` variables or the instance's role).
    pub accesskey: Option<String>,
    /// Secret access key.
    pub secretkey: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    pub forcepathstyle: bool,
    /// Redirect blob reads to presigned URLs.
    pub redirect: bool,
    /// Key prefix in the bucket.
    pub rootdirectory: String,
    /// Upload part size in bytes (at least 5 MiB).
    pub chunksize: u64,
    /// Upload parts of one request sent at once.
    pub partsinflight: usize,
    /// A first body of known length goes as one streaming PUT (see
    /// `registry_storage::S3Config::single_put`).
    pub singleput: bool,
}

impl Default for S3StorageConfig {
    fn default() -> Self {
        S3StorageConfig {
            bucket: None,
            endpoint: None,
            region: "us-east-1".into(),
            accesskey: None,
            secretkey: None,
            forcepathstyle: false,
            redirect: false,
            rootdirectory: String::new(),
            chunksize: registry_storage::S3Config::new("").part_size,
            partsinflight: registry_storage::S3Config::new("").parts_in_flight,
            singleput: registry_storage::S3Config::new("").single_put,
        }
    }
}

impl std::fmt::Debug for S3StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3StorageConfig")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("accesskey", &self.accesskey)
            .field("secretkey", &self.secretkey.as_ref().map(|_| "<redacted>"))
            .field("forcepathstyle", &self.forcepathstyle)
            .field("redirect", &self.redirect)
            .field("rootdirectory", &self.rootdirectory)
            .field("chunksize", &self.chunksize)
            .finish()
    }
}

/// Which blob backend the configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Files under `storage.filesystem.rootdirectory`.
    Filesystem,
    /// An S3-compatible bucket (`storage.s3.*`).
    S3,
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
    /// GC purges upload sessions started longer ago than this (`168h`, as Distribution's
    /// upload purging); `off` keeps them.
    pub uploadage: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            graceperiod: "1h".into(),
            interval: None,
            deleteuntagged: false,
            uploadage: "168h".into(),
        }
    }
}

/// An age setting: `None` for `off` (or `0`, or empty).
pub fn parse_age(what: &str, s: &str) -> anyhow::Result<Option<std::time::Duration>> {
    oci_core::duration::parse_optional(s).with_context(|| format!("{what} {s:?}"))
}

impl GcConfig {
    /// The grace period.
    pub fn grace(&self) -> anyhow::Result<std::time::Duration> {
        oci_core::duration::parse(&self.graceperiod)
            .with_context(|| format!("gc.graceperiod {:?}", self.graceperiod))
    }

    /// The periodic GC interval, `None` when off.
    pub fn interval(&self) -> anyhow::Result<Option<std::time::Duration>> {
        parse_age("gc.interval", self.interval.as_deref().unwrap_or(""))
    }

    /// Age after which GC purges an upload session, `None` when off.
    pub fn upload_age(&self) -> anyhow::Result<Option<std::time::Duration>> {
        parse_age("gc.uploadage", &self.uploadage)
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
        // `REGISTRY_STORAGE` names the backend; as a key it would clash with the `storage`
        // table, so it is read on its own.
        let mut env: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("REGISTRY_"))
            .collect();
        let driver = env.remove("REGISTRY_STORAGE");
        builder = builder.add_source(
            config::Environment::with_prefix("REGISTRY")
                .separator("_")
                .try_parsing(true)
                .source(Some(env)),
        );
        if let Some(driver) = driver {
            builder = builder
                .set_override("storage.driver", driver)
                .context("REGISTRY_STORAGE")?;
        }
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
            upload_stall: self
                .http
                .timeouts
                .body()
                .map(|window| registry_api::stall::StallLimit {
                    window,
                    min_bytes: self.http.timeouts.bodyminbytes,
                }),
            max_manifest_bytes_in_flight: self.http.maxmanifestbytesinflight,
        }
    }

    /// The blob backend these settings select.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        match self
            .storage
            .driver
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("filesystem") => Ok(Backend::Filesystem),
            Some("s3") => Ok(Backend::S3),
            Some(other) => anyhow::bail!(
                "unknown storage backend {other:?} (REGISTRY_STORAGE): use filesystem or s3"
            ),
            None if self.storage.s3.bucket.is_some() => Ok(Backend::S3),
            None => Ok(Backend::Filesystem),
        }
    }

    /// The S3 store's settings (`storage.s3.*`, `storage.maxblobsize`).
    pub fn s3(&self) -> anyhow::Result<registry_storage::S3Config> {
        let s3 = &self.storage.s3;
        let bucket =
            s3.bucket.clone().filter(|b| !b.is_empty()).context(
                "storage.s3.bucket (REGISTRY_STORAGE_S3_BUCKET) is required for S3 storage",
            )?;
        let mut cfg = registry_storage::S3Config::new(bucket);
        cfg.endpoint = s3.endpoint.clone().filter(|e| !e.is_empty());
        cfg.region = s3.region.clone();
        cfg.access_key = s3.accesskey.clone().filter(|k| !k.is_empty());
        cfg.secret_key = s3.secretkey.clone().filter(|k| !k.is_empty());
        cfg.path_style = s3.forcepathstyle;
        // An http:// endpoint written in the configuration is the operator's consent.
        cfg.allow_http = cfg
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        cfg.prefix = s3.rootdirectory.clone();
        cfg.redirect = s3.redirect;
        cfg.part_size = s3.chunksize;
        cfg.parts_in_flight = s3.partsinflight;
        cfg.single_put = s3.singleput;
        cfg.max_upload = self.storage.maxblobsize;
        Ok(cfg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_settings_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(
            &path,
            "storage:\n  s3:\n    bucket: images\n    endpoint: http://127.0.0.1:9000\n    accesskey: AK\n    secretkey: SK\n    forcepathstyle: true\n    redirect: true\n    rootdirectory: /team/registry\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        // A bucket selects S3 unless REGISTRY_STORAGE says otherwise.
        assert_eq!(cfg.backend().unwrap(), Backend::S3);
        let s3 = cfg.s3().unwrap();
        assert_eq!(s3.bucket, "images");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.allow_http && s3.path_style && s3.redirect);
        assert_eq!(s3.prefix, "/team/registry");
        assert_eq!(s3.region, "us-east-1");
        assert!(!format!("{:?}", cfg.storage.s3).contains("SK"));

        let mut cfg = Config::default();
        assert_eq!(cfg.backend().unwrap(), Backend::Filesystem);
        cfg.storage.driver = Some("s3".into());
        assert!(cfg.s3().is_err(), "S3 without a bucket");
        cfg.storage.driver = Some("azure".into());
        assert!(cfg.backend().is_err());
    }

    #[test]
    fn gc_ages() {
        let mut gc = GcConfig::default();
        assert_eq!(
            gc.upload_age().unwrap(),
            Some(std::time::Duration::from_secs(168 * 3600))
        );
        assert_eq!(gc.interval().unwrap(), None);
        for off in ["off", "0", " "] {
            gc.uploadage = off.into();
            assert_eq!(gc.upload_age().unwrap(), None, "{off:?}");
        }
        gc.uploadage = "90m".into();
        assert_eq!(
            gc.upload_age().unwrap(),
            Some(std::time::Duration::from_secs(5400))
        );
        gc.uploadage = "a week".into();
        let err = gc.upload_age().unwrap_err();
        assert!(format!("{err:#}").contains("gc.uploadage"), "{err:#}");
        gc.interval = Some("24h".into());
        assert_eq!(
            gc.interval().unwrap(),
            Some(std::time::Duration::from_secs(86400))
        );
    }
}
