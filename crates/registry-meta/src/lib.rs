//! Registry metadata: repositories, blob membership, manifests and the references between
//! them, tags, and upload sessions.
//!
//! [`MetaStore`] is the interface the HTTP API uses; [`sqlite::SqliteMeta`] is the embedded
//! default. Blob *content* lives in `registry-storage`; this crate only records facts about it.
//! [`postgres::PgMeta`] keeps the same facts in PostgreSQL, shared by several replicas;
//! [`connect`] picks the engine from a URL.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use oci_core::Digest;

pub use postgres::PgMeta;
pub use sqlite::SqliteMeta;

/// Errors from a metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database failed.
    #[error("metadata database: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("metadata migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data is not what this code wrote.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// The database URL names an engine this build does not know.
    #[error("unsupported database URL scheme in {0:?} (expected sqlite: or postgres:)")]
    UnsupportedUrl(String),
    /// A manifest references a blob or child manifest the repository does not have (checked
    /// inside the transaction that stores the manifest).
    #[error("manifest references {0}, which the repository does not have")]
    MissingReference(Digest),
    /// No upload session has this id.
    #[error("upload session {0} unknown")]
    UnknownUpload(String),
}

/// Result alias for metadata operations.
pub type Result<T> = std::result::Result<T, MetaError>;

/// What the registry knows about one stored manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRecord {
    /// Digest of the manifest bytes.
    pub digest: Digest,
    /// Media type it was pushed with.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Artifact type reported in referrers listings.
    pub artifact_type: Option<String>,
    /// Digest of the manifest's `subject`, if any.
    pub subject: Option<Digest>,
    /// Top-level annotations as a JSON object, if any.
    pub annotations: Option<String>,
}

/// A manifest to store, with what it references.
#[derive(Debug, Clone)]
pub struct NewManifest {
    /// The manifest's own facts.
    pub record: ManifestRecord,
    /// Config and layer blobs it references.
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index).
    pub children: Vec<Digest>,
}

/// The metadata operations the registry needs, implemented per database engine.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Whether a repository has ever received content.
    async fn repository_exists(&self, repo: &str) -> Result<bool>;
    /// Record a committed blob and make it visible in `repo` (creating the repository).
    async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()>;
    /// Size of a blob if `repo` may serve it.
    async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>>;
    /// Size of a blob if any repository has it.
    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Remove a blob from a repository. Returns whether it was there.
    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool>;
    /// Those of `digests` that `repo` may not serve as blobs.
    async fn missing_blobs(&self, repo: &str, digests: &[Digest]) -> Result<Vec<Digest>>;
    /// Those of `digests` that are not manifests in `repo`.
    async fn missing_manifests(&self, repo: &str, digests: &[Digest]) -> Result<Vec<Digest>>;
    /// Store a manifest (idempotent) and point `tags` at it, in one transaction.
    async fn put_manifest(&self, repo: &str, manifest: &NewManifest, tags: &[String])
    -> Result<()>;
    /// A manifest by digest.
    async fn get_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<ManifestRecord>>;
    /// The manifest a tag points to.
    async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<ManifestRecord>>;
    /// Delete a manifest and every tag pointing to it. Returns the removed tags, or `None`
    /// when the manifest was not there.
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<String>>>;
    /// Delete one tag. Returns whether it existed.
    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool>;
    /// Tags of a repository in lexical order, after `last`, at most `limit`.
    async fn list_tags(&self, repo: &str, last: Option<&str>, limit: usize) -> Result<Vec<String>>;
    /// Repository names in lexical order, after `last`, at most `limit`.
    async fn list_repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>>;
    /// Manifests in `repo` whose subject is `subject`.
    async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<ManifestRecord>>;
    /// Record a new upload session for `repo`.
    async fn create_upload(&self, id: &str, repo: &str) -> Result<()>;
    /// The repository an upload session belongs to.
    async fn upload_repo(&self, id: &str) -> Result<Option<String>>;
    /// Forget an upload session.
    async fn delete_upload(&self, id: &str) -> Result<()>;
    /// The opaque state a blob store recorded for an upload session. `None` when the session
    /// is unknown or nothing was recorded yet (tell them apart with [`MetaStore::upload_repo`]).
    async fn upload_state(&self, id: &str) -> Result<Option<Vec<u8>>>;
    /// Replace the opaque state of an upload session. An unknown session (never created, or
    /// already deleted) is [`MetaError::UnknownUpload`]; nothing is stored then.
    async fn set_upload_state(&self, id: &str, state: &[u8]) -> Result<()>;
    /// Close the connections (SQLite: flush the WAL). Call once, at shutdown.
    async fn close(&self) {}
}

/// Open the metadata store a URL names: `sqlite:` (embedded) or `postgres:`/`postgresql:`,
/// applying the engine's migrations.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn MetaStore>> {
    let scheme = url
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "sqlite" => Ok(std::sync::Arc::new(SqliteMeta::connect(url).await?)),
        "postgres" | "postgresql" => Ok(std::sync::Arc::new(PgMeta::connect(url).await?)),
        _ => Err(MetaError::UnsupportedUrl(redact(url))),
    }
}

/// A URL with any password replaced by `***`, fit for errors and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
