//! `~/.stargz-get/config.yaml`: defaults and per-registry settings.
//!
//! ```yaml
//! concurrency: 8
//! max_retries: 5
//! registries:
//!   registry.example.com:
//!     insecure: false
//!     username: me
//!     password: secret
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::StargetError;

/// Per-registry settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegistrySettings {
    /// Use plain HTTP.
    pub insecure: bool,
    /// User name.
    pub username: Option<String>,
    /// Password or token.
    pub password: Option<String>,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    /// Default `--concurrency`.
    pub concurrency: Option<usize>,
    /// Default `--max-retries`.
    pub max_retries: Option<u32>,
    /// Settings by registry host.
    pub registries: BTreeMap<String, RegistrySettings>,
}

/// The default config path.
pub fn default_path() -> PathBuf {
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".stargz-get/config.yaml")
}

/// Load `path` if it exists (an explicit path must exist).
pub fn load(path: Option<&Path>) -> Result<FileConfig, StargetError> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (default_path(), false),
    };
    if !path.exists() {
        if explicit {
            return Err(StargetError::Usage(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        return Ok(FileConfig::default());
    }
    config::Config::builder()
        .add_source(config::File::from(path.as_path()).format(config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| StargetError::Usage(format!("{}: {e}", path.display())))
}
