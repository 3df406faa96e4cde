//! Moving images between registries and the local image store.
//!
//! - [`pull`]: manifest (an index resolved to one platform), then config and layers in
//!   parallel, each streamed into the store with its digest verified, resumed with `Range`
//!   after a dropped connection, retried with backoff.
//! - [`push`]: blobs in parallel (skipped when the registry has them, mounted across
//!   repositories when a source is known, monolithic when small, chunked and resumable when
//!   large), manifest last.
//! - [`progress`]: how transfers report progress.

pub mod progress;
pub mod pull;
pub mod push;

use oci_client::ClientError;
use oci_core::Digest;

pub use progress::{Progress, Silent, Task};
pub use pull::{PullOptions, Pulled, pull};
pub use push::{PushOptions, Pushed, push};

/// Errors from pulls and pushes.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The registry or the connection.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The local store.
    #[error(transparent)]
    Store(#[from] image_store::StoreError),
    /// A manifest that cannot be used.
    #[error("{0}")]
    Manifest(String),
    /// Nothing local under that name.
    #[error("no image {0:?} in the local store")]
    NotFound(String),
    /// A blob the manifest needs is not in the local store.
    #[error("blob {0} is missing from the local store")]
    MissingBlob(Digest),
    /// Local I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What failed.
        source: std::io::Error,
    },
}

impl TransferError {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransferError::Client(e) => e.is_retryable(),
            TransferError::Io { .. } => true,
            // Corrupted in transit: a fresh download may be fine.
            TransferError::Store(
                image_store::StoreError::DigestMismatch { .. }
                | image_store::StoreError::SizeMismatch { .. },
            ) => true,
            _ => false,
        }
    }
}

/// Result alias for transfers.
pub type Result<T> = std::result::Result<T, TransferError>;

/// `sha256:0123456789ab`: how transfers label a blob.
pub fn short(d: &Digest) -> String {
    let s = d.to_string();
    s[..s.len().min(19)].to_string()
}
