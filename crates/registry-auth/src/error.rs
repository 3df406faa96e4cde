//! Errors of loading the auth configuration.

use std::path::PathBuf;

/// Why the auth configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The htpasswd file is malformed or holds non-bcrypt hashes.
    #[error("htpasswd file {path}: {msg}")]
    Htpasswd {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a hash).
        msg: String,
    },
    /// The `auth` configuration is inconsistent.
    #[error("auth configuration: {0}")]
    Config(String),
    /// The token signing key is unusable.
    #[error("token signing key: {0}")]
    Key(String),
}
