//! What SQLite and PostgreSQL share: every statement that means the same on both, written
//! once (`$1`…`$n` placeholders, which both engines accept; `CAST` rather than `::`), the
//! row mappers and value conversions, and the trait impls around them.
//!
//! [`meta_store!`] stamps the impls of every metadata trait out for one engine's store; the
//! two invocations at the end of this file are the whole difference between the engines:
//! - the store's `write_lock`: SQLite's single-writer mutex, held around every write and
//!   transaction; none on PostgreSQL, which relies on the database;
//! - the lock clauses (`FOR KEY SHARE`, `FOR UPDATE`, `FOR UPDATE OF m|rb` on PostgreSQL,
//!   nothing on SQLite, whose writers are serialized);
//! - how a list of digests is bound: `= ANY($n)` of an array on PostgreSQL, `json_each($n)`
//!   of a JSON array on SQLite.
//!
//! Every transaction is retried when PostgreSQL aborts it as a deadlock victim or for a
//! serialization failure ([`crate::postgres::retryable`]; SQLite never reports those).
//!
//! Every multi-statement write is written in PostgreSQL's shape (rows it depends on locked
//! until commit, GC's deletes as lock-then-delete; see [`crate::postgres`]), which on SQLite
//! is the same transaction without the lock clauses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_core::Digest;

use crate::{
    ExternalRegistryRecord, GcBlob, GcManifest, ManifestRecord, MetaError, NewManifest,
    RemovedRepository, ReplicationRuleRecord, RepositoryQuery, RepositorySummary, Result,
    StorageStats, TagQuery, TagSummary, like_contains,
};

/// Now, in whole seconds since the epoch.
pub(crate) fn now() -> i64 {
    unix(SystemTime::now())
}

/// Whole seconds since the epoch (0 before it).
pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time a stored timestamp stands for.
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// A stored digest.
pub(crate) fn parse_digest(s: String) -> Result<Digest> {
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// A stored size or count (never negative).
pub(crate) fn size_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| MetaError::Corrupt(format!("negative size {v}")))
}

/// A size as stored (sizes beyond `i64::MAX` cannot be).
pub(crate) fn db_size(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| MetaError::Corrupt(format!("size {v} is beyond what is stored")))
}

/// A `LIMIT`: `usize::MAX` and anything beyond `i64::MAX` mean "all".
pub(crate) fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Columns of a manifest row, as [`ManifestRow`] reads them.
macro_rules! manifest_columns {
    () => {
        "m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations"
    };
}

/// A `manifests` row ([`manifest_columns!`]).
#[derive(sqlx::FromRow)]
pub(crate) struct ManifestRow {
    digest: String,
    media_type: String,
    size: i64,
    artifact_type: Option<String>,
    subject: Option<String>,
    annotations: Option<String>,
}

impl ManifestRow {
    /// The record it stores.
    pub(crate) fn record(self) -> Result<ManifestRecord> {
        Ok(ManifestRecord {
            digest: parse_digest(self.digest)?,
            media_type: self.media_type,
            size: size_of(self.size)?,
            artifact_type: self.artifact_type,
            subject: self.subject.map(parse_digest).transpose()?,
            annotations: self.annotations,
        })
    }
}

/// How often a transaction aborted by a deadlock or serialization failure is tried.
pub(crate) const ATTEMPTS: u32 = 5;

/// How long such a transaction waits before it is tried again.
pub(crate) const TRANSACTION_BACKOFF: oci_core::retry::Backoff =
    oci_core::retry::Backoff::new(Duration::from_millis(10), Duration::from_millis(80));

/// Run `$body` (an async expression using the transaction `$tx`) in a transaction, under
/// the store's write lock if it has one, again when PostgreSQL aborts it as a deadlock
/// victim or for a serialization failure.
macro_rules! in_transaction {
    ($self:ident, $what:literal, |$tx:ident| $body:expr) => {{
        let _w = $self.write_guard().await;
        let mut attempt = 1;
        loop {
            let mut $tx = $self.pool.begin().await?;
            let result = match $body.await {
                Ok(v) => $tx.commit().await.map(|()| v).map_err(MetaError::from),
                Err(e) => {
                    // Roll back now rather than on drop, freeing the locks before a retry.
                    let _ = $tx.rollback().await;
                    Err(e)
                }
            };
            match result {
                Err(e) if attempt < ATTEMPTS && crate::postgres::retryable(&e) => {
                    tracing::debug!(operation = $what, attempt, error = %e, "retrying metadata transaction");
                    attempt += 1;
                    tokio::time::sleep(TRANSACTION_BACKOFF.delay(attempt)).await;
                }
                other => break other,
            }
        }
    }};
}

/// The impls of every metadata trait for `$store` (see the module documentation).
macro_rules! meta_store {
    (
        $store:ty,
        db = $db:ty,
        list = $list:path,
        key_share = $key_share:literal,
        for_update = $for_update:literal,
        for_update_of_m = $for_update_of_m:literal,
        for_update_of_rb = $for_update_of_rb:literal,
        in_list = $in_list:literal,
        refs_from = $refs_from:literal $(,)?
    ) => {
        /// The transactional writes, in one shape for both engines.
        impl $store {
            /// Held around each write when the engine has one writer at a time.
            async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
                match &self.write_lock {
                    Some(lock) => Some(lock.lock().await),
                    None => None,
                }
            }

            /// A list of digests (or kinds) as the engine binds it.
            fn text_list(items: &[String]) -> impl sqlx::Encode<'static, $db> + sqlx::Type<$db> + Send + use<> {
                $list(items)
            }

            /// The repository's id, created if needed, held (`FOR KEY SHARE`) until commit.
            async fn ensure_repo(tx: &mut sqlx::Transaction<'static, $db>, repo: &str, t: i64) -> Result<i64> {
                loop {
                    sqlx::query(
                        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(repo)
                    .bind(t)
                    .execute(&mut **tx)
                    .await?;
                    let id: Option<i64> =
                        sqlx::query_scalar(concat!("SELECT id FROM repositories WHERE name = $1", $key_share))
                            .bind(repo)
                            .fetch_optional(&mut **tx)
                            .await?;
                    match id {
                        Some(id) => return Ok(id),
                        None => tracing::debug!(repo, "repository deleted concurrently; creating it again"),
                    }
                }
            }

            async fn link_blob_tx(
                tx: &mut sqlx::Transaction<'static, $db>,
                repo: &str,
                digest: &str,
                size: u64,
            ) -> Result<()> {
                let t = now();
                let repo_id = Self::ensure_repo(tx, repo, t).await?;
                // The blob row, held until commit: `gc_delete_blob` (which locks it FOR
                // UPDATE) then waits for us and sees our link, or has already deleted the
                // row, which we then insert again.
                loop {
                    sqlx::query(
                        "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
                    )
                    .bind(digest)
                    .bind(db_size(size)?)
                    .bind(t)
                    .execute(&mut **tx)
                    .await?;
                    let present: Option<i64> =
                        sqlx::query_scalar(concat!("SELECT size FROM blobs WHERE digest = $1", $key_share))
                            .bind(digest)
                            .fetch_optional(&mut **tx)
                            .await?;
                    if present.is_some() {
                        break;
                    }
                    tracing::debug!(digest, "blob row deleted concurrently; recording it again");
                }
                // Re-linking refreshes the link's timestamp: garbage collection's grace counts
                // from the last time a client asserted the blob.
                sqlx::query(
                    "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
                )
                .bind(repo_id)
                .bind(digest)
                .bind(t)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn put_manifest_tx(
                tx: &mut sqlx::Transaction<'static, $db>,
                repo: &str,
                manifest: &NewManifest,
                tags: &[String],
                check_references: bool,
            ) -> Result<()> {
                let t = now();
                let rec = &manifest.record;
                let digest = rec.digest.to_string();
                let repo_id = Self::ensure_repo(tx, repo, t).await?;
                // An upsert: it locks the row (or inserts it) so a concurrent delete of the
                // same manifest (client or GC) cannot remove it before the tags below point at
                // it. Pushing a manifest again refreshes its timestamp (garbage collection's
                // grace) and keeps the first push's other values.
                sqlx::query(
                    "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
                )
                .bind(repo_id)
                .bind(&digest)
                .bind(&rec.media_type)
                .bind(db_size(rec.size)?)
                .bind(&rec.artifact_type)
                .bind(rec.subject.as_ref().map(|s| s.to_string()))
                .bind(&rec.annotations)
                .bind(t)
                .execute(&mut **tx)
                .await?;
                // The references must still be there; the lock keeps them until commit (an
                // unlink or delete waits for us and happens after).
                let blobs: Vec<String> = manifest.blobs.iter().map(Digest::to_string).collect();
                let linked: Vec<String> = sqlx::query_scalar(concat!(
                    "SELECT digest FROM repository_blobs WHERE repo_id = $1 AND digest ",
                    $in_list,
                    " ORDER BY digest",
                    $key_share
                ))
                .bind(repo_id)
                .bind(Self::text_list(&blobs))
                .fetch_all(&mut **tx)
                .await?;
                if let Some(i) = blobs.iter().position(|d| !linked.contains(d))
                    && check_references
                {
                    return Err(MetaError::MissingReference(manifest.blobs[i].clone()));
                }
                let children: Vec<String> = manifest.children.iter().map(Digest::to_string).collect();
                let present: Vec<String> = sqlx::query_scalar(concat!(
                    "SELECT digest FROM manifests WHERE repo_id = $1 AND digest ",
                    $in_list,
                    " ORDER BY digest",
                    $key_share
                ))
                .bind(repo_id)
                .bind(Self::text_list(&children))
                .fetch_all(&mut **tx)
                .await?;
                if let Some(i) = children.iter().position(|d| !present.contains(d))
                    && check_references
                {
                    return Err(MetaError::MissingReference(manifest.children[i].clone()));
                }
                let kinds: Vec<String> = blobs
                    .iter()
                    .map(|_| "blob".to_string())
                    .chain(children.iter().map(|_| "manifest".to_string()))
                    .collect();
                let refs: Vec<String> = blobs.iter().chain(children.iter()).cloned().collect();
                sqlx::query(concat!(
                    "INSERT INTO manifest_references (repo_id, parent, child, kind)
                     SELECT $1, $2, r.child, r.kind FROM ",
                    $refs_from,
                    " WHERE true ON CONFLICT DO NOTHING"
                ))
                .bind(repo_id)
                .bind(&digest)
                .bind(Self::text_list(&refs))
                .bind(Self::text_list(&kinds))
                .execute(&mut **tx)
                .await?;
                // Tags in one order in every transaction, so two pushes moving the same tags
                // cannot deadlock on them.
                let mut tags: Vec<&String> = tags.iter().collect();
                tags.sort();
                tags.dedup();
                for tag in tags {
                    sqlx::query(
                        "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                    )
                    .bind(repo_id)
                    .bind(tag)
                    .bind(&digest)
                    .bind(t)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            async fn delete_manifest_tx(
                tx: &mut sqlx::Transaction<'static, $db>,
                repo: &str,
                digest: &str,
            ) -> Result<Option<Vec<String>>> {
                // Lock the manifest first: a concurrent push pointing a tag at it waits until
                // we are done.
                let repo_id: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id
                     WHERE r.name = $1 AND m.digest = $2",
                    $for_update_of_m
                ))
                .bind(repo)
                .bind(digest)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(repo_id) = repo_id else { return Ok(None) };
                let mut tags: Vec<String> =
                    sqlx::query_scalar("DELETE FROM tags WHERE repo_id = $1 AND digest = $2 RETURNING name")
                        .bind(repo_id)
                        .bind(digest)
                        .fetch_all(&mut **tx)
                        .await?;
                tags.sort();
                // References go with the manifest (ON DELETE CASCADE).
                let done = sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
                    .bind(repo_id)
                    .bind(digest)
                    .execute(&mut **tx)
                    .await?;
                Ok((done.rows_affected() > 0).then_some(tags))
            }

            /// GC's conditional delete: lock the row (`lock` finds its repository id), then
            /// `delete` it in a second statement whose fresh snapshot re-checks the condition.
            async fn lock_then_delete(
                tx: &mut sqlx::Transaction<'static, $db>,
                lock: &'static str,
                delete: &'static str,
                repo: &str,
                digest: &str,
                older_than: i64,
            ) -> Result<bool> {
                let repo_id: Option<i64> = sqlx::query_scalar(lock)
                    .bind(repo)
                    .bind(digest)
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(repo_id) = repo_id else { return Ok(false) };
                let done = sqlx::query(delete)
                    .bind(repo_id)
                    .bind(digest)
                    .bind(older_than)
                    .execute(&mut **tx)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn gc_delete_blob_tx(
                tx: &mut sqlx::Transaction<'static, $db>,
                digest: &str,
                older_than: i64,
            ) -> Result<bool> {
                let locked: Option<i64> =
                    sqlx::query_scalar(concat!("SELECT size FROM blobs WHERE digest = $1", $for_update))
                        .bind(digest)
                        .fetch_optional(&mut **tx)
                        .await?;
                if locked.is_none() {
                    return Ok(false);
                }
                let done = sqlx::query(
                    "DELETE FROM blobs AS b
                     WHERE b.digest = $1 AND b.created_at < $2
                       AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                )
                .bind(digest)
                .bind(older_than)
                .execute(&mut **tx)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_repository_tx(
                tx: &mut sqlx::Transaction<'static, $db>,
                repo: &str,
            ) -> Result<Option<RemovedRepository>> {
                let repo_id: Option<i64> =
                    sqlx::query_scalar(concat!("SELECT id FROM repositories WHERE name = $1", $for_update))
                        .bind(repo)
                        .fetch_optional(&mut **tx)
                        .await?;
                let Some(repo_id) = repo_id else { return Ok(None) };
                let tags: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM tags WHERE repo_id = $1 ORDER BY name")
                        .bind(repo_id)
                        .fetch_all(&mut **tx)
                        .await?;
                let manifests = sqlx::query_as::<_, ManifestRow>(concat!(
                    "SELECT ",
                    manifest_columns!(),
                    " FROM manifests m WHERE m.repo_id = $1 ORDER BY m.digest"
                ))
                .bind(repo_id)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(ManifestRow::record)
                .collect::<Result<Vec<_>>>()?;
                for statement in [
                    "DELETE FROM tags WHERE repo_id = $1",
                    "DELETE FROM manifest_references WHERE repo_id = $1",
                    "DELETE FROM manifests WHERE repo_id = $1",
                ] {
                    sqlx::query(statement)
                        .bind(repo_id)
                        .execute(&mut **tx)
                        .await?;
                }
                let blob_links = sqlx::query("DELETE FROM repository_blobs WHERE repo_id = $1")
                    .bind(repo_id)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM repositories WHERE id = $1")
                    .bind(repo_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(Some(RemovedRepository {
                    tags,
                    manifests,
                    blob_links,
                }))
            }
        }

        #[async_trait::async_trait]
        impl $crate::BlobMeta for $store {
            async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
                let digest = digest.to_string();
                in_transaction!(self, "link_blob", |tx| Self::link_blob_tx(&mut tx, repo, &digest, size))
            }

            async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
                let size: Option<i64> = sqlx::query_scalar(
                    "SELECT b.size FROM repository_blobs rb
                     JOIN repositories r ON r.id = rb.repo_id
                     JOIN blobs b ON b.digest = rb.digest
                     WHERE r.name = $1 AND rb.digest = $2",
                )
                .bind(repo)
                .bind(digest.to_string())
                .fetch_optional(&self.pool)
                .await?;
                size.map(size_of).transpose()
            }

            async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
                let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
                    .bind(digest.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                size.map(size_of).transpose()
            }

            async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
                let _w = self.write_guard().await;
                let done = sqlx::query(
                    "DELETE FROM repository_blobs
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND digest = $2",
                )
                .bind(repo)
                .bind(digest.to_string())
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_blob(
                &self,
                repo: &str,
                digest: &Digest,
                stale_before: SystemTime,
            ) -> Result<Option<u64>> {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT b.size, rb.created_at FROM repository_blobs rb
                     JOIN repositories r ON r.id = rb.repo_id
                     JOIN blobs b ON b.digest = rb.digest
                     WHERE r.name = $1 AND rb.digest = $2",
                )
                .bind(repo)
                .bind(digest.to_string())
                .fetch_optional(&self.pool)
                .await?;
                let Some((size, linked)) = row else { return Ok(None) };
                if linked < unix(stale_before) {
                    let _w = self.write_guard().await;
                    // If GC removed the link since the read above, nothing is refreshed
                    // and the blob is not there any more.
                    let done = sqlx::query(
                        "UPDATE repository_blobs SET created_at = $1
                         WHERE repo_id = (SELECT id FROM repositories WHERE name = $2) AND digest = $3",
                    )
                    .bind(now())
                    .bind(repo)
                    .bind(digest.to_string())
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Ok(None);
                    }
                }
                Ok(Some(size_of(size)?))
            }
        }

        #[async_trait::async_trait]
        impl $crate::ManifestMeta for $store {
            async fn repository_exists(&self, repo: &str) -> Result<bool> {
                let row: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
                    .bind(repo)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn put_manifest(
                &self,
                repo: &str,
                manifest: &NewManifest,
                tags: &[String],
            ) -> Result<()> {
                in_transaction!(self, "put_manifest", |tx| Self::put_manifest_tx(&mut tx, repo, manifest, tags, true))
            }

            async fn put_cached_manifest(
                &self,
                repo: &str,
                manifest: &NewManifest,
                tags: &[String],
            ) -> Result<()> {
                in_transaction!(self, "put_cached_manifest", |tx| Self::put_manifest_tx(&mut tx, repo, manifest, tags, false))
            }

            async fn get_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<ManifestRecord>> {
                let row: Option<ManifestRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    manifest_columns!(),
                    " FROM manifests m JOIN repositories r ON r.id = m.repo_id
                     WHERE r.name = $1 AND m.digest = $2"
                ))
                .bind(repo)
                .bind(digest.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(ManifestRow::record).transpose()
            }

            async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<ManifestRecord>> {
                let row: Option<ManifestRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    manifest_columns!(),
                    " FROM tags t
                     JOIN repositories r ON r.id = t.repo_id
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                     WHERE r.name = $1 AND t.name = $2"
                ))
                .bind(repo)
                .bind(tag)
                .fetch_optional(&self.pool)
                .await?;
                row.map(ManifestRow::record).transpose()
            }

            async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<String>>> {
                let digest = digest.to_string();
                in_transaction!(self, "delete_manifest", |tx| Self::delete_manifest_tx(&mut tx, repo, &digest))
            }

            async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
                let _w = self.write_guard().await;
                let done = sqlx::query(
                    "DELETE FROM tags
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND name = $2",
                )
                .bind(repo)
                .bind(tag)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_tags(&self, repo: &str, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id
                     WHERE r.name = $1 AND t.name > $2 ORDER BY t.name LIMIT $3",
                )
                .bind(repo)
                .bind(last.unwrap_or(""))
                .bind(limit_of(limit))
                .fetch_all(&self.pool)
                .await?)
            }

            async fn list_repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
                    .bind(last.unwrap_or(""))
                    .bind(limit_of(limit))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<ManifestRecord>> {
                let rows: Vec<ManifestRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    manifest_columns!(),
                    " FROM manifests m JOIN repositories r ON r.id = m.repo_id
                     WHERE r.name = $1 AND m.subject = $2 ORDER BY m.digest"
                ))
                .bind(repo)
                .bind(subject.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(ManifestRow::record).collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::UploadMeta for $store {
            async fn create_upload(&self, id: &str, repo: &str) -> Result<()> {
                let _w = self.write_guard().await;
                sqlx::query("INSERT INTO uploads (id, repo, created_at) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(repo)
                    .bind(now())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn upload_repo(&self, id: &str) -> Result<Option<String>> {
                Ok(sqlx::query_scalar("SELECT repo FROM uploads WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn delete_upload(&self, id: &str) -> Result<()> {
                let _w = self.write_guard().await;
                sqlx::query("DELETE FROM uploads WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn uploads_created_before(
                &self,
                before: SystemTime,
                limit: usize,
            ) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM uploads WHERE created_at < $1 ORDER BY created_at, id LIMIT $2",
                )
                .bind(unix(before))
                .bind(limit_of(limit))
                .fetch_all(&self.pool)
                .await?)
            }

            async fn upload_state(&self, id: &str) -> Result<Option<Vec<u8>>> {
                let state: Option<Option<Vec<u8>>> =
                    sqlx::query_scalar("SELECT state FROM uploads WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(state.flatten())
            }

            async fn set_upload_state(&self, id: &str, state: &[u8]) -> Result<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("UPDATE uploads SET state = $1 WHERE id = $2")
                    .bind(state)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(MetaError::UnknownUpload(id.to_string()));
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::GcMeta for $store {
            async fn gc_manifests(
                &self,
                after: Option<(&str, &Digest)>,
                limit: usize,
            ) -> Result<Vec<GcManifest>> {
                let (after_repo, after_digest) = after
                    .map(|(r, d)| (r.to_string(), d.to_string()))
                    .unwrap_or_default();
                let rows: Vec<(String, String, i64, Option<String>, i64, bool)> = sqlx::query_as(
                    "SELECT r.name, m.digest, m.size, m.subject, m.created_at,
                            EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
                     FROM manifests m JOIN repositories r ON r.id = m.repo_id
                     WHERE (r.name, m.digest) > ($1, $2)
                     ORDER BY r.name, m.digest LIMIT $3",
                )
                .bind(&after_repo)
                .bind(&after_digest)
                .bind(limit_of(limit))
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for (repo, digest, size, subject, created_at, tagged) in rows {
                    out.push(GcManifest {
                        repo,
                        digest: parse_digest(digest)?,
                        size: size_of(size)?,
                        subject: subject.map(parse_digest).transpose()?,
                        created_at: from_unix(created_at),
                        tagged,
                        children: Vec::new(),
                        blobs: Vec::new(),
                    });
                }
                let Some(last) = out.last() else {
                    return Ok(out);
                };
                // The references of exactly this page's manifests, in one query.
                let refs: Vec<(String, String, String, String)> = sqlx::query_as(
                    "SELECT r.name, mr.parent, mr.child, mr.kind
                     FROM manifest_references mr JOIN repositories r ON r.id = mr.repo_id
                     WHERE (r.name, mr.parent) > ($1, $2) AND (r.name, mr.parent) <= ($3, $4)",
                )
                .bind(&after_repo)
                .bind(&after_digest)
                .bind(&last.repo)
                .bind(last.digest.to_string())
                .fetch_all(&self.pool)
                .await?;
                let index: std::collections::HashMap<(String, String), usize> = out
                    .iter()
                    .enumerate()
                    .map(|(i, m)| ((m.repo.clone(), m.digest.to_string()), i))
                    .collect();
                for (repo, parent, child, kind) in refs {
                    let Some(&i) = index.get(&(repo, parent)) else { continue };
                    let child = parse_digest(child)?;
                    match kind.as_str() {
                        "manifest" => out[i].children.push(child),
                        _ => out[i].blobs.push(child),
                    }
                }
                Ok(out)
            }

            async fn gc_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<GcBlob>> {
                let rows: Vec<(String, i64, i64, Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT b.digest, b.size, b.created_at, r.name, rb.created_at
                     FROM (SELECT * FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2) b
                     LEFT JOIN repository_blobs rb ON rb.digest = b.digest
                     LEFT JOIN repositories r ON r.id = rb.repo_id
                     ORDER BY b.digest",
                )
                .bind(after.map(|d| d.to_string()).unwrap_or_default())
                .bind(limit_of(limit))
                .fetch_all(&self.pool)
                .await?;
                let mut out: Vec<GcBlob> = Vec::new();
                for (digest, size, created_at, repo, linked) in rows {
                    let digest = parse_digest(digest)?;
                    if out.last().is_none_or(|b| b.digest != digest) {
                        out.push(GcBlob {
                            digest,
                            size: size_of(size)?,
                            created_at: from_unix(created_at),
                            links: Vec::new(),
                        });
                    }
                    if let (Some(repo), Some(linked)) = (repo, linked) {
                        let blob = out.last_mut().expect("pushed above");
                        blob.links.push((repo, from_unix(linked)));
                    }
                }
                Ok(out)
            }

            async fn gc_delete_manifest(
                &self,
                repo: &str,
                digest: &Digest,
                older_than: SystemTime,
            ) -> Result<bool> {
                let (digest, older_than) = (digest.to_string(), unix(older_than));
                // A referrer whose subject is pushed concurrently may still go: that is the
                // order "GC, then push".
                in_transaction!(self, "gc_delete_manifest", |tx| Self::lock_then_delete(
                    &mut tx,
                    concat!(
                        "SELECT m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id
                         WHERE r.name = $1 AND m.digest = $2",
                        $for_update_of_m
                    ),
                    "DELETE FROM manifests AS m
                     WHERE m.repo_id = $1 AND m.digest = $2
                       AND m.created_at < $3
                       AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
                       AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                                       WHERE mr.repo_id = m.repo_id AND mr.child = m.digest)
                       AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s
                                                             WHERE s.repo_id = m.repo_id AND s.digest = m.subject))",
                    repo,
                    &digest,
                    older_than,
                ))
            }

            async fn gc_unlink_blob(
                &self,
                repo: &str,
                digest: &Digest,
                older_than: SystemTime,
            ) -> Result<bool> {
                let (digest, older_than) = (digest.to_string(), unix(older_than));
                in_transaction!(self, "gc_unlink_blob", |tx| Self::lock_then_delete(
                    &mut tx,
                    concat!(
                        "SELECT rb.repo_id FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
                         WHERE r.name = $1 AND rb.digest = $2",
                        $for_update_of_rb
                    ),
                    "DELETE FROM repository_blobs AS rb
                     WHERE rb.repo_id = $1 AND rb.digest = $2
                       AND rb.created_at < $3
                       AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                                       WHERE mr.repo_id = rb.repo_id AND mr.child = rb.digest)",
                    repo,
                    &digest,
                    older_than,
                ))
            }

            async fn gc_delete_blob(&self, digest: &Digest, older_than: SystemTime) -> Result<bool> {
                let (digest, older_than) = (digest.to_string(), unix(older_than));
                in_transaction!(self, "gc_delete_blob", |tx| Self::gc_delete_blob_tx(&mut tx, &digest, older_than))
            }

            async fn digest_in_use(&self, digest: &Digest) -> Result<bool> {
                Ok(sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)
                         OR EXISTS (SELECT 1 FROM manifests WHERE digest = $1)",
                )
                .bind(digest.to_string())
                .fetch_one(&self.pool)
                .await?)
            }
        }

        #[async_trait::async_trait]
        impl $crate::AdminMeta for $store {
            async fn put_token_key(&self, kid: &str, algorithm: &str, public_key: &[u8]) -> Result<()> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO token_keys (kid, algorithm, public_key, created_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING",
                )
                .bind(kid)
                .bind(algorithm)
                .bind(public_key)
                .bind(now())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_key(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>> {
                Ok(sqlx::query_as("SELECT algorithm, public_key FROM token_keys WHERE kid = $1")
                    .bind(kid)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn agree_key_fingerprint(&self, name: &str, fingerprint: &str) -> Result<String> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO key_fingerprints (name, fingerprint, created_at)
                     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(fingerprint)
                .bind(now())
                .execute(&self.pool)
                .await?;
                Ok(sqlx::query_scalar("SELECT fingerprint FROM key_fingerprints WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn put_external_registry(&self, rec: &ExternalRegistryRecord) -> Result<()> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO external_registries
                       (id, name, kind, endpoint, auth_kind, username, secret, insecure, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                       endpoint = excluded.endpoint, auth_kind = excluded.auth_kind,
                       username = excluded.username, secret = excluded.secret,
                       insecure = excluded.insecure, updated_at = excluded.updated_at",
                )
                .bind(&rec.id)
                .bind(&rec.name)
                .bind(&rec.kind)
                .bind(&rec.endpoint)
                .bind(&rec.auth_kind)
                .bind(&rec.username)
                .bind(&rec.secret)
                .bind(rec.insecure)
                .bind(rec.created_at)
                .bind(rec.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn external_registries(&self) -> Result<Vec<ExternalRegistryRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, name, kind, endpoint, auth_kind, username, secret, insecure, created_at, updated_at
                     FROM external_registries ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_external_registry(&self, id: &str) -> Result<bool> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM external_registries WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn put_replication_rule(&self, rule: &ReplicationRuleRecord) -> Result<()> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO replication_rules (id, name, body, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                )
                .bind(&rule.id)
                .bind(&rule.name)
                .bind(&rule.body)
                .bind(rule.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn replication_rules(&self) -> Result<Vec<ReplicationRuleRecord>> {
                Ok(sqlx::query_as("SELECT id, name, body, created_at FROM replication_rules ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn delete_replication_rule(&self, id: &str) -> Result<bool> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM replication_rules WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn proxy_tag_checked(&self, repo: &str, tag: &str) -> Result<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT checked_at FROM proxy_tags WHERE repository = $1 AND tag = $2")
                    .bind(repo)
                    .bind(tag)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_proxy_tag_checked(&self, repo: &str, tag: &str, at: i64) -> Result<()> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO proxy_tags (repository, tag, checked_at) VALUES ($1, $2, $3)
                     ON CONFLICT (repository, tag) DO UPDATE SET checked_at = excluded.checked_at",
                )
                .bind(repo)
                .bind(tag)
                .bind(at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::ListingMeta for $store {
            async fn repository_summaries(
                &self,
                query: &RepositoryQuery<'_>,
            ) -> Result<Vec<RepositorySummary>> {
                let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT r.name,
                       (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id),
                       CAST((SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repo_id = r.id)
                         + (SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN
                             (SELECT mr.child FROM manifest_references mr
                              WHERE mr.repo_id = r.id AND mr.kind = 'blob')) AS BIGINT),
                       r.created_at,
                       COALESCE((SELECT MAX(m.created_at) FROM manifests m WHERE m.repo_id = r.id), 0),
                       COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repo_id = r.id), 0)
                     FROM repositories r
                     WHERE r.name > $1 AND (CAST($2 AS TEXT) IS NULL OR r.name = $2)
                       AND (CAST($3 AS TEXT) IS NULL OR r.name LIKE $3 ESCAPE '\\')
                     ORDER BY r.name LIMIT $4",
                )
                .bind(query.after.unwrap_or(""))
                .bind(query.name)
                .bind(query.contains.map(like_contains))
                .bind(limit_of(query.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(name, tags, size, created, manifested, tagged)| {
                        Ok(RepositorySummary {
                            name,
                            tag_count: size_of(tags)?,
                            total_size: size_of(size)?,
                            last_update: created.max(manifested).max(tagged),
                        })
                    })
                    .collect()
            }

            async fn tag_summaries(&self, query: &TagQuery<'_>) -> Result<Vec<TagSummary>> {
                let (after_repo, after_tag) = query.after.unwrap_or(("", ""));
                let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT r.name, t.name, t.digest, m.media_type, m.size, t.updated_at
                     FROM tags t
                     JOIN repositories r ON r.id = t.repo_id
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                     WHERE (CAST($1 AS TEXT) IS NULL OR r.name = $1)
                       AND (CAST($2 AS TEXT) IS NULL OR t.name = $2)
                       AND (CAST($3 AS TEXT) IS NULL OR (r.name || ':' || t.name) LIKE $3 ESCAPE '\\')
                       AND (r.name > $4 OR (r.name = $4 AND t.name > $5))
                     ORDER BY r.name, t.name LIMIT $6",
                )
                .bind(query.repository)
                .bind(query.tag)
                .bind(query.contains.map(like_contains))
                .bind(after_repo)
                .bind(after_tag)
                .bind(limit_of(query.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(repository, tag, digest, media_type, size, updated_at)| {
                        Ok(TagSummary {
                            repository,
                            tag,
                            digest: parse_digest(digest)?,
                            media_type,
                            size: size_of(size)?,
                            updated_at,
                        })
                    })
                    .collect()
            }

            async fn delete_repository(&self, repo: &str) -> Result<Option<RemovedRepository>> {
                in_transaction!(self, "delete_repository", |tx| Self::delete_repository_tx(&mut tx, repo))
            }

            async fn storage_stats(&self) -> Result<StorageStats> {
                let (blobs, bytes, uploads): (i64, i64, i64) = sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM blobs),
                            CAST((SELECT COALESCE(SUM(size), 0) FROM blobs)
                              + (SELECT COALESCE(SUM(size), 0) FROM
                                  (SELECT DISTINCT digest, size FROM manifests) AS d) AS BIGINT),
                            (SELECT COUNT(*) FROM uploads)",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(StorageStats {
                    blobs: size_of(blobs)?,
                    bytes: size_of(bytes)?,
                    upload_sessions: size_of(uploads)?,
                })
            }
        }

        #[async_trait::async_trait]
        impl $crate::MetaStore for $store {
            async fn close(&self) {
                // SQLite: flushes the WAL.
                self.pool.close().await;
            }
        }
    };
}

meta_store!(
    crate::sqlite::SqliteMeta,
    db = sqlx::Sqlite,
    list = crate::sqlite::json_list,
    key_share = "",
    for_update = "",
    for_update_of_m = "",
    for_update_of_rb = "",
    in_list = "IN (SELECT value FROM json_each($2))",
    refs_from = "(SELECT c.value AS child, k.value AS kind FROM json_each($3) c JOIN json_each($4) k ON k.key = c.key) AS r",
);

meta_store!(
    crate::postgres::PgMeta,
    db = sqlx::Postgres,
    list = crate::postgres::array_list,
    key_share = " FOR KEY SHARE",
    for_update = " FOR UPDATE",
    for_update_of_m = " FOR UPDATE OF m",
    for_update_of_rb = " FOR UPDATE OF rb",
    in_list = "= ANY($2)",
    refs_from = "UNNEST(CAST($3 AS TEXT[]), CAST($4 AS TEXT[])) AS r(child, kind)",
);
