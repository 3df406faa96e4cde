//! Registry metadata: repositories, blob membership, manifests and the references between
//! them, tags, and upload sessions.
//!
//! [`MetaStore`] is the interface the HTTP API uses; [`sqlite::SqliteMeta`] is the embedded
//! default. Blob *content* lives in `registry-storage`; this crate only records facts about it.

pub mod sqlite;

use async_trait::async_trait;
use oci_core::Digest;

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

/// One repository as the management API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositorySummary {
    /// Repository name.
    pub name: String,
    /// Number of tags.
    pub tag_count: u64,
    /// Bytes of its manifests plus the distinct blobs they reference.
    pub total_size: u64,
    /// Latest of: repository creation, manifest push, tag update (Unix seconds).
    pub last_update: i64,
}

/// One tag as the management API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSummary {
    /// Repository name.
    pub repository: String,
    /// Tag name.
    pub tag: String,
    /// Digest of the manifest it points to.
    pub digest: Digest,
    /// Media type of that manifest.
    pub media_type: String,
    /// Size of that manifest in bytes.
    pub size: u64,
    /// When the tag was last pointed (Unix seconds).
    pub updated_at: i64,
}

/// Filter and page of a repository listing.
#[derive(Debug, Clone, Default)]
pub struct RepositoryQuery<'a> {
    /// Only the repository of this exact name.
    pub name: Option<&'a str>,
    /// Only repositories whose name contains this string (a plain substring, not a pattern).
    pub contains: Option<&'a str>,
    /// Start after this name.
    pub after: Option<&'a str>,
    /// At most this many.
    pub limit: usize,
}

/// Filter and page of a tag listing across repositories.
#[derive(Debug, Clone, Default)]
pub struct TagQuery<'a> {
    /// Only this repository.
    pub repository: Option<&'a str>,
    /// Only the tag of this exact name.
    pub tag: Option<&'a str>,
    /// Only tags whose `repository:tag` contains this string (a plain substring).
    pub contains: Option<&'a str>,
    /// Start after this (repository, tag) in (repository, tag) order.
    pub after: Option<(&'a str, &'a str)>,
    /// At most this many.
    pub limit: usize,
}

/// What deleting a repository removed.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedRepository {
    /// Its tags.
    pub tags: Vec<String>,
    /// Its manifests, with their media types and sizes.
    pub manifests: Vec<ManifestRecord>,
    /// Number of blob links removed (the content stays for garbage collection).
    pub blob_links: u64,
}

/// Registry-wide storage figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageStats {
    /// Distinct committed blobs.
    pub blobs: u64,
    /// Bytes of those blobs plus distinct manifests.
    pub bytes: u64,
    /// Upload sessions not yet finished or cancelled.
    pub upload_sessions: u64,
}

/// The `contains` pattern of a LIKE query: `%text%` with `\`, `%`, `_` escaped by `\`.
pub fn like_contains(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
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

    /// Repositories with their figures in name order, filtered and paginated.
    async fn repository_summaries(
        &self,
        query: &RepositoryQuery<'_>,
    ) -> Result<Vec<RepositorySummary>>;
    /// Tags across repositories in (repository, tag) order, filtered and paginated.
    async fn tag_summaries(&self, query: &TagQuery<'_>) -> Result<Vec<TagSummary>>;
    /// Delete a repository: its tags, manifests, references and blob links, in one
    /// transaction (blob content stays for garbage collection). `None` when unknown.
    async fn delete_repository(&self, repo: &str) -> Result<Option<RemovedRepository>>;
    /// Registry-wide storage figures.
    async fn storage_stats(&self) -> Result<StorageStats>;
}
