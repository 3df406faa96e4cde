//! Registry metadata: repositories, blob membership, manifests and the references between
//! them, tags, and upload sessions.
//!
//! [`MetaStore`] is the interface the HTTP API uses; [`sqlite::SqliteMeta`] is the embedded
//! default. Blob *content* lives in `registry-storage`; this crate only records facts about it.
//! [`postgres::PgMeta`] keeps the same facts in PostgreSQL, shared by several replicas;
//! [`connect`] picks the engine from a URL.

pub mod postgres;
mod sql;
pub mod sqlite;

use std::time::SystemTime;

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

/// An external registry as stored (the secret sealed by the caller).
#[derive(Clone, PartialEq, sqlx::FromRow)]
pub struct ExternalRegistryRecord {
    /// Identifier.
    pub id: String,
    /// Unique display name.
    pub name: String,
    /// Registry type (`generic`, `harbor`, `ecr`, `dockerhub`, `gcr`, `acr`).
    pub kind: String,
    /// Base URL.
    pub endpoint: String,
    /// `none`, `basic` or `bearer`.
    pub auth_kind: String,
    /// User name for basic auth.
    pub username: Option<String>,
    /// Encrypted secret (password or token).
    pub secret: Option<Vec<u8>>,
    /// Skip TLS verification / allow plain HTTP.
    pub insecure: bool,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last update, Unix seconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for ExternalRegistryRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalRegistryRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("auth_kind", &self.auth_kind)
            .field("username", &self.username)
            .field("has_secret", &self.secret.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// A replication rule managed through the API, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReplicationRuleRecord {
    /// Identifier.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The rule as JSON (owned by the caller).
    pub body: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
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

/// Blobs and their links to repositories.
#[async_trait]
pub trait BlobMeta: Send + Sync {
    /// Record a committed blob and make it visible in `repo` (creating the repository).
    async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()>;

    /// Size of a blob if `repo` may serve it.
    async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>>;

    /// Size of a blob if any repository has it.
    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Remove a blob from a repository. Returns whether it was there.
    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool>;

    /// Like [`BlobMeta::repo_blob`], and when the link's timestamp is before `stale_before`
    /// it is set to now: a client told that the blob exists may rely on it for a while.
    async fn touch_blob(
        &self,
        repo: &str,
        digest: &Digest,
        stale_before: SystemTime,
    ) -> Result<Option<u64>>;
}

/// Manifests, tags, referrers and the repository catalog.
#[async_trait]
pub trait ManifestMeta: Send + Sync {
    /// Whether a repository has ever received content.
    async fn repository_exists(&self, repo: &str) -> Result<bool>;

    /// Store a manifest (idempotent) and point `tags` at it, in one transaction.
    async fn put_manifest(&self, repo: &str, manifest: &NewManifest, tags: &[String])
    -> Result<()>;

    /// Like [`ManifestMeta::put_manifest`], but the referenced blobs and child manifests need
    /// not be in the repository yet: a pull-through cache stores a manifest first and its
    /// blobs when clients first ask for them.
    async fn put_cached_manifest(
        &self,
        repo: &str,
        manifest: &NewManifest,
        tags: &[String],
    ) -> Result<()>;

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
}

/// Upload sessions, and the opaque per-session state a blob store keeps.
#[async_trait]
pub trait UploadMeta: Send + Sync {
    /// Record a new upload session for `repo`.
    async fn create_upload(&self, id: &str, repo: &str) -> Result<()>;

    /// The repository an upload session belongs to.
    async fn upload_repo(&self, id: &str) -> Result<Option<String>>;

    /// Forget an upload session.
    async fn delete_upload(&self, id: &str) -> Result<()>;

    /// Upload sessions created before `before`, oldest first, at most `limit` (for purging
    /// abandoned uploads).
    async fn uploads_created_before(&self, before: SystemTime, limit: usize)
    -> Result<Vec<String>>;

    /// The opaque state a blob store recorded for an upload session. `None` when the session
    /// is unknown or nothing was recorded yet (tell them apart with [`UploadMeta::upload_repo`]).
    async fn upload_state(&self, id: &str) -> Result<Option<Vec<u8>>>;

    /// Replace the opaque state of an upload session. An unknown session (never created, or
    /// already deleted) is [`MetaError::UnknownUpload`]; nothing is stored then.
    async fn set_upload_state(&self, id: &str, state: &[u8]) -> Result<()>;
}

/// What garbage collection reads and deletes. Timestamps have whole-second resolution;
/// "older than T" means stored before T's second. Every delete re-checks its condition, so
/// it is safe against concurrent pushes (which check their references inside the manifest
/// transaction, see [`ManifestMeta::put_manifest`]).
#[async_trait]
pub trait GcMeta: Send + Sync {
    /// Manifests ordered by (repository, digest), after `after`, at most `limit`.
    async fn gc_manifests(
        &self,
        after: Option<(&str, &Digest)>,
        limit: usize,
    ) -> Result<Vec<GcManifest>>;

    /// Blob rows with their repository links, ordered by digest, after `after`, at most
    /// `limit` blobs.
    async fn gc_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<GcBlob>>;

    /// Delete a manifest of `repo` if it is older than `older_than`, untagged, no child of a
    /// manifest of `repo`, and its subject (if any) is not a manifest of `repo`. Returns
    /// whether it did.
    async fn gc_delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        older_than: SystemTime,
    ) -> Result<bool>;

    /// Remove `repo`'s link to a blob if it is older than `older_than` and no manifest of
    /// `repo` references the digest. Returns whether it did.
    async fn gc_unlink_blob(
        &self,
        repo: &str,
        digest: &Digest,
        older_than: SystemTime,
    ) -> Result<bool>;

    /// Delete a blob row if it is older than `older_than` and no repository links it.
    /// Returns whether it did.
    async fn gc_delete_blob(&self, digest: &Digest, older_than: SystemTime) -> Result<bool>;

    /// Whether content with this digest is still needed: a blob row, or a manifest in any
    /// repository.
    async fn digest_in_use(&self, digest: &Digest) -> Result<bool>;
}

/// Records beside the content: token signing keys, key fingerprints, external
/// registries, replication rules, pull-through tag checks.
#[async_trait]
pub trait AdminMeta: Send + Sync {
    /// Record a token signing key's public half under its key id (kept when present).
    async fn put_token_key(&self, kid: &str, algorithm: &str, public_key: &[u8]) -> Result<()>;

    /// The algorithm and public key recorded under `kid`.
    async fn token_key(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>>;

    /// Record `fingerprint` for the key `name` unless one is recorded; returns the recorded
    /// one (the first writer's).
    async fn agree_key_fingerprint(&self, name: &str, fingerprint: &str) -> Result<String>;

    /// Insert or replace (by id) an external registry.
    async fn put_external_registry(&self, rec: &ExternalRegistryRecord) -> Result<()>;

    /// Every external registry, by name.
    async fn external_registries(&self) -> Result<Vec<ExternalRegistryRecord>>;

    /// Delete an external registry. Returns whether it existed.
    async fn delete_external_registry(&self, id: &str) -> Result<bool>;

    /// Insert or replace (by id) a replication rule.
    async fn put_replication_rule(&self, rule: &ReplicationRuleRecord) -> Result<()>;

    /// Every API-managed replication rule, by name.
    async fn replication_rules(&self) -> Result<Vec<ReplicationRuleRecord>>;

    /// Delete a replication rule. Returns whether it existed.
    async fn delete_replication_rule(&self, id: &str) -> Result<bool>;

    /// When a pull-through cache last checked `repo:tag` upstream (Unix milliseconds).
    async fn proxy_tag_checked(&self, repo: &str, tag: &str) -> Result<Option<i64>>;

    /// Record that a pull-through cache checked `repo:tag` upstream at `at`.
    async fn set_proxy_tag_checked(&self, repo: &str, tag: &str, at: i64) -> Result<()>;
}

/// The management API's listings and deletes, and registry-wide figures.
#[async_trait]
pub trait ListingMeta: Send + Sync {
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

/// Every metadata trait, for code that calls a store through its concrete type.
pub mod prelude {
    pub use crate::{
        AdminMeta, BlobMeta, GcMeta, ListingMeta, ManifestMeta, MetaStore, UploadMeta,
    };
}

/// The metadata operations the registry needs, implemented per database engine, grouped
/// by concern (as Zot splits its user database from its metadata database).
#[async_trait]
pub trait MetaStore:
    BlobMeta + ManifestMeta + UploadMeta + GcMeta + AdminMeta + ListingMeta + Send + Sync + 'static
{
    /// Close the connections (SQLite: flush the WAL). Call once, at shutdown.
    async fn close(&self) {}
}

/// A manifest as garbage collection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GcManifest {
    /// Repository name.
    pub repo: String,
    /// Manifest digest.
    pub digest: Digest,
    /// Size of the manifest bytes.
    pub size: u64,
    /// Whether a tag points at it.
    pub tagged: bool,
    /// Its `subject`, if any.
    pub subject: Option<Digest>,
    /// Child manifests (of an index).
    pub children: Vec<Digest>,
    /// Config and layer blobs.
    pub blobs: Vec<Digest>,
    /// When it was last pushed.
    pub created_at: SystemTime,
}

/// A blob row and the repositories that link it, as garbage collection sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct GcBlob {
    /// Blob digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When the row was created.
    pub created_at: SystemTime,
    /// (repository, time the link was last asserted) for every repository linking it.
    pub links: Vec<(String, SystemTime)>,
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
