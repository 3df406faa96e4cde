//! What a registry operation can refuse or fail with, by cause. The HTTP layer maps each
//! variant to the distribution spec's error code and status; other callers match on them.

use oci_core::Digest;
use registry_meta::MetaError;
use registry_storage::StorageError;

/// The error of every [`crate::Registry`] and [`crate::Repository`] operation.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The repository name breaks the distribution spec's grammar.
    #[error("{0}")]
    NameInvalid(String),
    /// The repository has nothing in it.
    #[error("repository name not known to registry")]
    NameUnknown(String),
    /// A tag breaks the grammar.
    #[error("{0}")]
    TagInvalid(String),
    /// No manifest under this tag or digest.
    #[error("manifest unknown to registry")]
    ManifestUnknown {
        /// Repository.
        name: String,
        /// The tag or digest asked for.
        reference: String,
    },
    /// The manifest does not parse, or breaks a rule of its schema.
    #[error("{0}")]
    ManifestInvalid(String),
    /// A manifest media type the registry does not store.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// A manifest pushed by digest whose bytes have another digest.
    #[error("manifest digest does not match the reference")]
    ManifestDigestMismatch {
        /// The digest of the reference.
        expected: Digest,
        /// The digest of the bytes.
        computed: Digest,
    },
    /// A manifest references a blob or child manifest the repository does not have.
    #[error("manifest references a blob or manifest unknown to registry")]
    ManifestBlobUnknown(Digest),
    /// A descriptor's size differs from the stored content's.
    #[error("descriptor of {digest} declares {declared} bytes, but the registry has {actual}")]
    ReferenceSizeMismatch {
        /// The referenced digest.
        digest: Digest,
        /// The size in the descriptor.
        declared: u64,
        /// The size the registry has.
        actual: u64,
    },
    /// The repository may not serve this blob.
    #[error("blob unknown to registry")]
    BlobUnknown(Digest),
    /// No such upload session in this repository.
    #[error("blob upload unknown to registry")]
    UploadUnknown(String),
    /// Another request holds the upload session; the client should ask its status and
    /// resume from `size`.
    #[error("another request is writing to this upload session; ask its status and resume")]
    UploadBusy {
        /// The session.
        id: String,
        /// Bytes in the session so far, when known.
        size: Option<u64>,
    },
    /// A chunk's declared range does not end where the session now ends.
    #[error("chunk {start}-{end} declared, but the upload now ends at byte {size}")]
    ChunkMismatch {
        /// First byte declared.
        start: u64,
        /// Last byte declared.
        end: u64,
        /// The session's size after the chunk.
        size: u64,
    },
    /// The repository is a pull-through cache: writes come from its upstream only.
    #[error("{0} is a pull-through cache of an upstream registry: pushes are refused")]
    ReadThrough(String),
    /// A lock a write needs is held elsewhere or the coordinator failed; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Blob storage failed or refused.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The metadata database failed or refused.
    #[error("metadata: {0}")]
    Meta(MetaError),
}

impl From<MetaError> for CoreError {
    fn from(e: MetaError) -> CoreError {
        match e {
            // A blob unlinked (or child deleted) after the operation checked it.
            MetaError::MissingReference(d) => CoreError::ManifestBlobUnknown(d),
            other => CoreError::Meta(other),
        }
    }
}

/// Result of a registry operation.
pub type Result<T> = std::result::Result<T, CoreError>;

/// A lock needed for a write could not be taken.
pub(crate) fn lock_failed(e: registry_coord::CoordError, what: &str) -> CoreError {
    CoreError::Unavailable(match e {
        registry_coord::CoordError::LockBusy(_) => {
            format!("{what} is being changed by another request; retry")
        }
        registry_coord::CoordError::Backend(e) => {
            format!("coordination service unavailable ({e}); retry")
        }
    })
}
