//! Blob storage for hyperregistry.
//!
//! Blobs are content-addressed: one file per digest, whatever the number of repositories
//! that use it (membership lives in the metadata store). Uploads are written to a session
//! file, hashed while they stream, verified, then moved into place atomically.
//!
//! - [`BlobStore`]: the backend-neutral interface the HTTP API uses.
//! - [`fs::FsBlobStore`]: the embedded filesystem backend.
//! - [`s3::S3BlobStore`]: S3-compatible object storage (multipart uploads, presigned reads).
//! - [`state::UploadStateStore`]: where stateless backends keep upload sessions.

pub mod fs;
pub mod s3;
pub mod sequential;
pub mod state;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use oci_core::Digest;

pub use fs::FsBlobStore;
pub use s3::{S3BlobStore, S3Config};
pub use state::{MemoryUploadStateStore, UploadStateStore};

/// A stream of bytes, as read from a request body or from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'static>>;

/// A committed blob as listed by [`BlobStore::list_blobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The digest the content is stored under.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When the content was last written (put or committed).
    pub modified: std::time::SystemTime,
}

/// A stream of listed blobs.
pub type BlobInfoStream = Pin<Box<dyn Stream<Item = Result<BlobInfo>> + Send + 'static>>;

/// Errors from a blob store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No blob with that digest.
    #[error("blob unknown: {0}")]
    BlobUnknown(Digest),
    /// No upload session with that id.
    #[error("upload session unknown: {0}")]
    UploadUnknown(String),
    /// The uploaded bytes do not hash to the digest the client claimed.
    #[error("digest mismatch: expected {expected}, computed {computed}")]
    DigestMismatch {
        /// What the client said.
        expected: Digest,
        /// What the bytes hash to.
        computed: Digest,
    },
    /// A chunk did not start where the session ends.
    #[error("chunk starts at {got}, but the upload has {have} bytes")]
    OutOfOrder {
        /// Bytes stored so far.
        have: u64,
        /// Where the chunk claimed to start.
        got: u64,
    },
    /// A write would exceed the configured limit.
    #[error("upload exceeds the maximum of {0} bytes")]
    TooLarge(u64),
    /// The client's body ended with an error (disconnect).
    #[error("request body: {0}")]
    Body(std::io::Error),
    /// An I/O failure in the backend.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// A content-addressed blob store with resumable upload sessions.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a stored blob, or `None` when absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Stream `len` bytes of a blob from `offset`.
    async fn read(&self, digest: &Digest, offset: u64, len: u64) -> Result<ByteStream>;
    /// Store small content (manifests) whose digest the caller has computed.
    async fn put_bytes(&self, digest: &Digest, data: Bytes) -> Result<()>;
    /// Read a whole small blob (manifests, capped by the caller).
    async fn get_bytes(&self, digest: &Digest) -> Result<Bytes>;
    /// Remove a blob's content.
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// Create an empty upload session.
    async fn create_upload(&self, id: &str) -> Result<()>;
    /// Bytes received so far in a session, or `None` when unknown.
    async fn upload_size(&self, id: &str) -> Result<Option<u64>>;
    /// Append a body to a session; `at`, when given, must equal the current size.
    /// Returns the new size. Durable (fsynced) when it returns.
    async fn append_upload(&self, id: &str, at: Option<u64>, body: ByteStream) -> Result<u64>;
    /// [`append_upload`](Self::append_upload) for a body whose length is known in advance
    /// (`Content-Length`), which lets a backend store it as one object.
    async fn append_upload_sized(
        &self,
        id: &str,
        at: Option<u64>,
        len: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        let _ = len;
        self.append_upload(id, at, body).await
    }
    /// Verify the session's bytes against `digest` and move them into place.
    /// On a mismatch the session is discarded. Returns the blob size.
    async fn commit_upload(&self, id: &str, digest: &Digest) -> Result<u64>;
    /// Discard a session.
    async fn cancel_upload(&self, id: &str) -> Result<()>;

    /// Every committed blob (content written by `put_bytes` or `commit_upload`), each once,
    /// in no particular order, streamed (a backend lists in pages and never holds the whole
    /// listing). Entries whose name is not a digest are skipped. Blobs committed while the
    /// listing runs may or may not appear; garbage collection only deletes blobs older than
    /// its grace period, so that is harmless.
    fn list_blobs(&self) -> BlobInfoStream;
    /// Delete (or, with `dry_run`, count) stored objects written before `before` that no
    /// blob and no upload session uses, which only the backend can see (S3: data objects
    /// whose link is gone). Returns (objects, bytes). Nothing by default.
    async fn sweep_unreferenced(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<(u64, u64)> {
        let _ = (before, dry_run);
        Ok((0, 0))
    }
    /// A URL from which a client may read the blob directly (`head`: for a `HEAD` request),
    /// valid for a limited time, or `None` when the backend serves blobs itself.
    async fn presigned_url(&self, digest: &Digest, head: bool) -> Result<Option<String>> {
        let _ = (digest, head);
        Ok(None)
    }
}
