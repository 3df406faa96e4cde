//! The error type of every store and archive operation.

use std::io;
use std::path::{Path, PathBuf};

use oci_core::{Digest, ManifestError};

/// Why a store or archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// Content did not have the size it was announced with.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being read or written.
        what: String,
        /// The announced size.
        expected: u64,
        /// The size received.
        actual: u64,
    },
    /// Content is larger than the limit for its kind.
    #[error("{what} is larger than the {max}-byte limit")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit in bytes.
        max: u64,
    },
    /// A reference name that cannot be stored.
    #[error("invalid reference name {0:?}")]
    InvalidName(String),
    /// No image is stored under this reference.
    #[error("reference {0:?} not found")]
    RefNotFound(String),
    /// The store's own files are not what this crate writes.
    #[error("corrupt store at {}: {reason}", root.display())]
    Corrupt {
        /// The store root.
        root: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest or index that does not parse.
    #[error("invalid manifest {digest}: {source}")]
    Manifest {
        /// Digest of the manifest.
        digest: Digest,
        /// Why it was refused.
        #[source]
        source: ManifestError,
    },
    /// A JSON document (config, archive metadata) that does not parse.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An archive that breaks its format's rules.
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    /// An archive entry or reference whose path could escape the archive.
    #[error("unsafe path in archive: {0:?}")]
    UnsafePath(String),
    /// Content this crate does not handle (compression, media type, platform).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl StoreError {
    /// Wrap an I/O error with the path it happened on.
    pub(crate) fn io(path: impl AsRef<Path>, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// Attach a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Map the error to [`StoreError::Io`] on `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(path, e))
    }
}
