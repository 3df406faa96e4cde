//! The PostgreSQL metadata store, for several registry replicas sharing one database.
//!
//! Semantics are those of [`crate::sqlite::SqliteMeta`]. Where SQLite serializes writers with
//! one process-local mutex, this store relies on the database: every multi-statement write
//! is one transaction (READ COMMITTED), inserts use `ON CONFLICT`, and rows a write depends
//! on are locked (`FOR KEY SHARE` on the blobs and child manifests a manifest references,
//! `FOR UPDATE` on a manifest being deleted, an upsert on the manifest being stored).
//! Transactions that PostgreSQL aborts as deadlocked or unserializable are retried.
//!
//! Garbage collection's conditional deletes ("delete this row if nothing references it")
//! cannot be one `DELETE ... WHERE NOT EXISTS` here: under READ COMMITTED that statement's
//! subqueries see the snapshot taken when it started, even after waiting for a row lock, so a
//! reference committed meanwhile would go unseen. Each one therefore first locks its row
//! `FOR UPDATE` and then deletes in a second statement, whose fresh snapshot sees every
//! reference committed before the lock was granted; writers that add references hold
//! `FOR KEY SHARE` on the referenced row until they commit, so none can slip in after.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oci_core::Digest;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::{
    AdminMeta, BlobMeta, ExternalRegistryRecord, GcBlob, GcManifest, GcMeta, ListingMeta,
    ManifestMeta, ManifestRecord, MetaError, MetaStore, NewManifest, RemovedRepository,
    ReplicationRuleRecord, RepositoryQuery, RepositorySummary, Result, StorageStats, TagQuery,
    TagSummary, UploadMeta, like_contains,
};

/// Connections per process; replicas multiply this, so keep it modest.
const MAX_CONNECTIONS: u32 = 16;
/// How often a transaction aborted by a deadlock or serialization failure is tried.
const ATTEMPTS: usize = 5;

/// PostgreSQL-backed [`MetaStore`].
pub struct PgMeta {
    pool: PgPool,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whole seconds since the epoch (0 before it).
fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The time a stored timestamp stands for.
fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

fn parse_digest(s: String) -> Result<Digest> {
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

fn size_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| MetaError::Corrupt(format!("negative size {v}")))
}

/// Columns of a manifest row, in the order [`manifest_from_row`] reads them.
macro_rules! manifest_columns {
    () => {
        "m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations"
    };
}

fn manifest_from_row(row: &PgRow) -> Result<ManifestRecord> {
    Ok(ManifestRecord {
        digest: parse_digest(row.try_get(0)?)?,
        media_type: row.try_get(1)?,
        size: size_of(row.try_get(2)?)?,
        artifact_type: row.try_get(3)?,
        subject: row
            .try_get::<Option<String>, _>(4)?
            .map(parse_digest)
            .transpose()?,
        annotations: row.try_get(5)?,
    })
}

/// Whether PostgreSQL aborted the transaction for a deadlock (40P01) or a serialization
/// failure (40001): trying again is the prescribed answer.
fn retryable(e: &MetaError) -> bool {
    match e {
        MetaError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01") | Some("40001"))
        }
        _ => false,
    }
}

/// Run `$body` (an async expression using the transaction `$tx`) in a transaction, again
/// when PostgreSQL aborts it as a deadlock victim or for a serialization failure.
macro_rules! in_transaction {
    ($self:ident, $what:literal, |$tx:ident| $body:expr) => {{
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
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(operation = $what, attempt, error = %e, "retrying metadata transaction");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 * attempt as u64)).await;
                }
                other => break other,
            }
        }
    }};
}

fn limit_of(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

impl PgMeta {
    /// Connect by URL (`postgres://user:password@host:port/db`) and apply migrations
    /// (several replicas starting at once are serialized by sqlx's advisory lock).
    pub async fn connect(url: &str) -> Result<PgMeta> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgMeta { pool })
    }
}

/// Create `repo` if needed and return its id, the row locked `FOR KEY SHARE` until the
/// transaction ends: a concurrent [`MetaStore::delete_repository`] (which locks it
/// `FOR UPDATE`) waits for us, or has already removed it, and then we create it again.
async fn ensure_repo(tx: &mut Transaction<'static, Postgres>, repo: &str, t: i64) -> Result<i64> {
    loop {
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(repo)
        .bind(t)
        .execute(&mut **tx)
        .await?;
        let row = sqlx::query("SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE")
            .bind(repo)
            .fetch_optional(&mut **tx)
            .await?;
        match row {
            Some(row) => return Ok(row.get(0)),
            None => tracing::debug!(repo, "repository deleted concurrently; creating it again"),
        }
    }
}

async fn put_manifest_tx(
    tx: &mut Transaction<'static, Postgres>,
    repo: &str,
    manifest: &NewManifest,
    tags: &[String],
    check_references: bool,
) -> Result<()> {
    let t = now();
    let rec = &manifest.record;
    let digest = rec.digest.to_string();
    let repo_id = ensure_repo(tx, repo, t).await?;
    // An upsert: it locks the row (or inserts it) so a concurrent delete of the same manifest
    // (client or GC) cannot remove it before the tags below point at it. Pushing a manifest
    // again refreshes its timestamp (garbage collection's grace) and keeps the first push's
    // other values, as in SQLite.
    sqlx::query(
        "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = EXCLUDED.created_at",
    )
    .bind(repo_id)
    .bind(&digest)
    .bind(&rec.media_type)
    .bind(rec.size as i64)
    .bind(&rec.artifact_type)
    .bind(rec.subject.as_ref().map(|s| s.to_string()))
    .bind(&rec.annotations)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    // The references must still be there; FOR KEY SHARE keeps them until commit (an unlink or
    // delete waits for us and happens after).
    let blobs: Vec<String> = manifest.blobs.iter().map(Digest::to_string).collect();
    let linked: Vec<String> = sqlx::query(
        "SELECT digest FROM repository_blobs WHERE repo_id = $1 AND digest = ANY($2)
         ORDER BY digest FOR KEY SHARE",
    )
    .bind(repo_id)
    .bind(&blobs)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| r.get(0))
    .collect();
    if let Some(i) = blobs.iter().position(|d| !linked.contains(d))
        && check_references
    {
        return Err(MetaError::MissingReference(manifest.blobs[i].clone()));
    }
    let children: Vec<String> = manifest.children.iter().map(Digest::to_string).collect();
    let present: Vec<String> = sqlx::query(
        "SELECT digest FROM manifests WHERE repo_id = $1 AND digest = ANY($2)
         ORDER BY digest FOR KEY SHARE",
    )
    .bind(repo_id)
    .bind(&children)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| r.get(0))
    .collect();
    if let Some(i) = children.iter().position(|d| !present.contains(d))
        && check_references
    {
        return Err(MetaError::MissingReference(manifest.children[i].clone()));
    }
    let kinds: Vec<&str> = blobs
        .iter()
        .map(|_| "blob")
        .chain(children.iter().map(|_| "manifest"))
        .collect();
    let refs: Vec<String> = blobs.iter().chain(children.iter()).cloned().collect();
    sqlx::query(
        "INSERT INTO manifest_references (repo_id, parent, child, kind)
         SELECT $1, $2, r.child, r.kind FROM UNNEST($3::text[], $4::text[]) AS r(child, kind)
         ON CONFLICT DO NOTHING",
    )
    .bind(repo_id)
    .bind(&digest)
    .bind(&refs)
    .bind(&kinds)
    .execute(&mut **tx)
    .await?;
    // Tags in one order in every transaction, so two pushes moving the same tags cannot
    // deadlock on them.
    let mut tags: Vec<&String> = tags.iter().collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        sqlx::query(
            "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = EXCLUDED.digest, updated_at = EXCLUDED.updated_at",
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
    tx: &mut Transaction<'static, Postgres>,
    repo: &str,
    digest: &str,
) -> Result<Option<Vec<String>>> {
    // Lock the manifest first: a concurrent push pointing a tag at it waits until we are done.
    let Some(row) = sqlx::query(
        "SELECT m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id
         WHERE r.name = $1 AND m.digest = $2 FOR UPDATE OF m",
    )
    .bind(repo)
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let repo_id: i64 = row.get(0);
    let mut tags: Vec<String> =
        sqlx::query("DELETE FROM tags WHERE repo_id = $1 AND digest = $2 RETURNING name")
            .bind(repo_id)
            .bind(digest)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
    tags.sort();
    // References go with the manifest (ON DELETE CASCADE).
    let done = sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
        .bind(repo_id)
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    Ok((done.rows_affected() > 0).then_some(tags))
}

async fn link_blob_tx(
    tx: &mut Transaction<'static, Postgres>,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<()> {
    let t = now();
    let repo_id = ensure_repo(tx, repo, t).await?;
    // The blob row, locked FOR KEY SHARE until commit: `gc_delete_blob` (which locks it FOR
    // UPDATE) then waits for us and sees our link, or has already deleted the row, which we
    // then insert again.
    loop {
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(size as i64)
        .bind(t)
        .execute(&mut **tx)
        .await?;
        let row = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR KEY SHARE")
            .bind(digest)
            .fetch_optional(&mut **tx)
            .await?;
        if row.is_some() {
            break;
        }
        tracing::debug!(digest, "blob row deleted concurrently; recording it again");
    }
    // Re-linking refreshes the link's timestamp: garbage collection's grace counts from the
    // last time a client asserted the blob.
    sqlx::query(
        "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = EXCLUDED.created_at",
    )
    .bind(repo_id)
    .bind(digest)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `gc_delete_manifest` in a transaction. The manifest row is locked first: a push that
/// references it as a child (FOR KEY SHARE) or tags it (an upsert of the row, or the tag's
/// foreign key) either committed before the lock, and the DELETE's fresh snapshot sees its
/// reference, tag or refreshed timestamp, or waits until we are done and then finds the
/// manifest gone (a child: `MissingReference`; the manifest itself: stored again).
async fn gc_delete_manifest_tx(
    tx: &mut Transaction<'static, Postgres>,
    repo: &str,
    digest: &str,
    older_than: i64,
) -> Result<bool> {
    // A referrer whose subject is pushed concurrently may still go: that is the order
    // "GC, then push", as with SQLite's single writer.
    lock_then_delete(
        tx,
        "SELECT m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id
         WHERE r.name = $1 AND m.digest = $2 FOR UPDATE OF m",
        "DELETE FROM manifests AS m
         WHERE m.repo_id = $1 AND m.digest = $2
           AND m.created_at < $3
           AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
           AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                           WHERE mr.repo_id = m.repo_id AND mr.child = m.digest)
           AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s
                                                 WHERE s.repo_id = m.repo_id AND s.digest = m.subject))",
        repo,
        digest,
        older_than,
    )
    .await
}

/// `gc_unlink_blob` in a transaction. The link row is locked first: a manifest push that
/// references the blob holds the link FOR KEY SHARE from its check to its commit, so either
/// its references are committed (and seen by the DELETE's fresh snapshot) or it waits and
/// then finds the link gone (`MissingReference`). A re-link or touch refreshes the timestamp
/// under the row lock, which the DELETE re-checks.
async fn gc_unlink_blob_tx(
    tx: &mut Transaction<'static, Postgres>,
    repo: &str,
    digest: &str,
    older_than: i64,
) -> Result<bool> {
    lock_then_delete(
        tx,
        "SELECT rb.repo_id FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
         WHERE r.name = $1 AND rb.digest = $2 FOR UPDATE OF rb",
        "DELETE FROM repository_blobs AS rb
         WHERE rb.repo_id = $1 AND rb.digest = $2
           AND rb.created_at < $3
           AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                           WHERE mr.repo_id = rb.repo_id AND mr.child = rb.digest)",
        repo,
        digest,
        older_than,
    )
    .await
}

/// GC's conditional delete of one row of a repository: `lock` (binding the repository name
/// and digest) locks the row FOR UPDATE and returns its `repo_id`; then `delete` (binding
/// repo_id, digest, cutoff) re-checks the condition in a statement of its own, whose fresh
/// snapshot sees every reference committed before the lock was granted. A single
/// `DELETE ... WHERE NOT EXISTS` would read its subqueries from the snapshot taken before it
/// waited for the row. Returns whether the row was deleted.
async fn lock_then_delete(
    tx: &mut Transaction<'static, Postgres>,
    lock: &'static str,
    delete: &'static str,
    repo: &str,
    digest: &str,
    older_than: i64,
) -> Result<bool> {
    let Some(row) = sqlx::query(lock)
        .bind(repo)
        .bind(digest)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(false);
    };
    let repo_id: i64 = row.get(0);
    let done = sqlx::query(delete)
        .bind(repo_id)
        .bind(digest)
        .bind(older_than)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// `gc_delete_blob` in a transaction. The blob row is locked first: `link_blob` holds it
/// FOR KEY SHARE until it commits its link, so the DELETE's fresh snapshot sees that link,
/// or `link_blob` waits and then records the blob again.
async fn gc_delete_blob_tx(
    tx: &mut Transaction<'static, Postgres>,
    digest: &str,
    older_than: i64,
) -> Result<bool> {
    let locked = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE")
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

/// `delete_repository` in a transaction. The repository row is locked FOR UPDATE: writers
/// into the repository hold it FOR KEY SHARE (`ensure_repo`, and the foreign keys of every
/// row they insert), so they finish first or wait and then create the repository anew.
async fn delete_repository_tx(
    tx: &mut Transaction<'static, Postgres>,
    repo: &str,
) -> Result<Option<RemovedRepository>> {
    let Some(row) = sqlx::query("SELECT id FROM repositories WHERE name = $1 FOR UPDATE")
        .bind(repo)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let repo_id: i64 = row.try_get(0)?;
    let tags: Vec<String> = sqlx::query("SELECT name FROM tags WHERE repo_id = $1 ORDER BY name")
        .bind(repo_id)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let manifests = sqlx::query(concat!(
        "SELECT ",
        manifest_columns!(),
        " FROM manifests m WHERE m.repo_id = $1 ORDER BY m.digest"
    ))
    .bind(repo_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(manifest_from_row)
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

#[async_trait]
impl BlobMeta for PgMeta {
    async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        let digest = digest.to_string();
        in_transaction!(self, "link_blob", |tx| link_blob_tx(
            &mut tx, repo, &digest, size
        ))
    }

    async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repo_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| size_of(r.get(0))).transpose()
    }

    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| size_of(r.get(0))).transpose()
    }

    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
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

    async fn missing_blobs(&self, repo: &str, digests: &[Digest]) -> Result<Vec<Digest>> {
        let wanted: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let present: Vec<String> = sqlx::query(
            "SELECT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
             WHERE r.name = $1 AND rb.digest = ANY($2)",
        )
        .bind(repo)
        .bind(&wanted)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
        Ok(digests
            .iter()
            .zip(&wanted)
            .filter(|(_, s)| !present.contains(s))
            .map(|(d, _)| d.clone())
            .collect())
    }

    async fn touch_blob(
        &self,
        repo: &str,
        digest: &Digest,
        stale_before: SystemTime,
    ) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size, rb.created_at FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repo_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let size = size_of(row.try_get(0)?)?;
        if row.try_get::<i64, _>(1)? < unix(stale_before) {
            // Under the row lock the UPDATE takes: if GC removed the link since the read
            // above, nothing is refreshed and the blob is not there any more.
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
        Ok(Some(size))
    }
}

#[async_trait]
impl ManifestMeta for PgMeta {
    async fn repository_exists(&self, repo: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn missing_manifests(&self, repo: &str, digests: &[Digest]) -> Result<Vec<Digest>> {
        let wanted: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let present: Vec<String> = sqlx::query(
            "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = $1 AND m.digest = ANY($2)",
        )
        .bind(repo)
        .bind(&wanted)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
        Ok(digests
            .iter()
            .zip(&wanted)
            .filter(|(_, s)| !present.contains(s))
            .map(|(d, _)| d.clone())
            .collect())
    }

    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &NewManifest,
        tags: &[String],
    ) -> Result<()> {
        in_transaction!(self, "put_manifest", |tx| put_manifest_tx(
            &mut tx, repo, manifest, tags, true
        ))
    }

    async fn put_cached_manifest(
        &self,
        repo: &str,
        manifest: &NewManifest,
        tags: &[String],
    ) -> Result<()> {
        in_transaction!(self, "put_cached_manifest", |tx| put_manifest_tx(
            &mut tx, repo, manifest, tags, false
        ))
    }

    async fn get_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = $1 AND m.digest = $2"
        ))
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(manifest_from_row).transpose()
    }

    async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(concat!(
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
        row.as_ref().map(manifest_from_row).transpose()
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<String>>> {
        let digest = digest.to_string();
        in_transaction!(self, "delete_manifest", |tx| delete_manifest_tx(
            &mut tx, repo, &digest
        ))
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM tags WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND name = $2",
        )
        .bind(repo)
        .bind(tag)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tags(&self, repo: &str, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id
             WHERE r.name = $1 AND t.name > $2 ORDER BY t.name LIMIT $3",
        )
        .bind(repo)
        .bind(last.unwrap_or(""))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn list_repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
                .bind(last.unwrap_or(""))
                .bind(limit_of(limit))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<ManifestRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = $1 AND m.subject = $2 ORDER BY m.digest"
        ))
        .bind(repo)
        .bind(subject.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(manifest_from_row).collect()
    }
}

#[async_trait]
impl UploadMeta for PgMeta {
    async fn create_upload(&self, id: &str, repo: &str) -> Result<()> {
        sqlx::query("INSERT INTO uploads (id, repo, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(repo)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upload_repo(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT repo FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
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
        let rows = sqlx::query(
            "SELECT id FROM uploads WHERE created_at < $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(unix(before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn upload_state(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT state FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get::<Option<Vec<u8>>, _>(0)))
    }

    async fn set_upload_state(&self, id: &str, state: &[u8]) -> Result<()> {
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

#[async_trait]
impl GcMeta for PgMeta {
    async fn gc_manifests(
        &self,
        after: Option<(&str, &Digest)>,
        limit: usize,
    ) -> Result<Vec<GcManifest>> {
        let (after_repo, after_digest) = after
            .map(|(r, d)| (r.to_string(), d.to_string()))
            .unwrap_or_default();
        let rows = sqlx::query(
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
        for row in &rows {
            out.push(GcManifest {
                repo: row.try_get(0)?,
                digest: parse_digest(row.try_get(1)?)?,
                size: size_of(row.try_get(2)?)?,
                subject: row
                    .try_get::<Option<String>, _>(3)?
                    .map(parse_digest)
                    .transpose()?,
                created_at: from_unix(row.try_get(4)?),
                tagged: row.try_get(5)?,
                children: Vec::new(),
                blobs: Vec::new(),
            });
        }
        let Some(last) = out.last() else {
            return Ok(out);
        };
        // The references of exactly this page's manifests, in one query.
        let refs = sqlx::query(
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
        let index: HashMap<(String, String), usize> = out
            .iter()
            .enumerate()
            .map(|(i, m)| ((m.repo.clone(), m.digest.to_string()), i))
            .collect();
        for row in &refs {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let Some(&i) = index.get(&key) else { continue };
            let child = parse_digest(row.try_get(2)?)?;
            match row.try_get::<String, _>(3)?.as_str() {
                "manifest" => out[i].children.push(child),
                _ => out[i].blobs.push(child),
            }
        }
        Ok(out)
    }

    async fn gc_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<GcBlob>> {
        let rows = sqlx::query(
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
        for row in &rows {
            let digest = parse_digest(row.try_get(0)?)?;
            if out.last().is_none_or(|b| b.digest != digest) {
                out.push(GcBlob {
                    digest,
                    size: size_of(row.try_get(1)?)?,
                    created_at: from_unix(row.try_get(2)?),
                    links: Vec::new(),
                });
            }
            if let Some(repo) = row.try_get::<Option<String>, _>(3)? {
                let linked: i64 = row.try_get(4)?;
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
        in_transaction!(self, "gc_delete_manifest", |tx| gc_delete_manifest_tx(
            &mut tx, repo, &digest, older_than
        ))
    }

    async fn gc_unlink_blob(
        &self,
        repo: &str,
        digest: &Digest,
        older_than: SystemTime,
    ) -> Result<bool> {
        let (digest, older_than) = (digest.to_string(), unix(older_than));
        in_transaction!(self, "gc_unlink_blob", |tx| gc_unlink_blob_tx(
            &mut tx, repo, &digest, older_than
        ))
    }

    async fn gc_delete_blob(&self, digest: &Digest, older_than: SystemTime) -> Result<bool> {
        let (digest, older_than) = (digest.to_string(), unix(older_than));
        in_transaction!(self, "gc_delete_blob", |tx| gc_delete_blob_tx(
            &mut tx, &digest, older_than
        ))
    }

    async fn digest_in_use(&self, digest: &Digest) -> Result<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)
                 OR EXISTS (SELECT 1 FROM manifests WHERE digest = $1)",
        )
        .bind(digest.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }
}

#[async_trait]
impl AdminMeta for PgMeta {
    async fn put_token_key(&self, kid: &str, algorithm: &str, public_key: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO token_keys (kid, algorithm, public_key, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT(kid) DO NOTHING",
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
        let row = sqlx::query("SELECT algorithm, public_key FROM token_keys WHERE kid = $1")
            .bind(kid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn agree_key_fingerprint(&self, name: &str, fingerprint: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO key_fingerprints (name, fingerprint, created_at) VALUES ($1, $2, $3)
             ON CONFLICT(name) DO NOTHING",
        )
        .bind(name)
        .bind(fingerprint)
        .bind(now())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT fingerprint FROM key_fingerprints WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    async fn put_external_registry(&self, rec: &ExternalRegistryRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO external_registries
               (id, name, kind, endpoint, auth_kind, username, secret, insecure, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
               endpoint = EXCLUDED.endpoint, auth_kind = EXCLUDED.auth_kind,
               username = EXCLUDED.username, secret = EXCLUDED.secret,
               insecure = EXCLUDED.insecure, updated_at = EXCLUDED.updated_at",
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
        let rows = sqlx::query(
            "SELECT id, name, kind, endpoint, auth_kind, username, secret, insecure, created_at, updated_at
             FROM external_registries ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ExternalRegistryRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    endpoint: r.try_get(3)?,
                    auth_kind: r.try_get(4)?,
                    username: r.try_get(5)?,
                    secret: r.try_get(6)?,
                    insecure: r.try_get(7)?,
                    created_at: r.try_get(8)?,
                    updated_at: r.try_get(9)?,
                })
            })
            .collect()
    }

    async fn delete_external_registry(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM external_registries WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_replication_rule(&self, rule: &ReplicationRuleRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO replication_rules (id, name, body, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, body = EXCLUDED.body",
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
        let rows =
            sqlx::query("SELECT id, name, body, created_at FROM replication_rules ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicationRuleRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    body: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn delete_replication_rule(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM replication_rules WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn proxy_tag_checked(&self, repo: &str, tag: &str) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT checked_at FROM proxy_tags WHERE repository = $1 AND tag = $2")
                .bind(repo)
                .bind(tag)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_proxy_tag_checked(&self, repo: &str, tag: &str, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO proxy_tags (repository, tag, checked_at) VALUES ($1, $2, $3)
             ON CONFLICT (repository, tag) DO UPDATE SET checked_at = EXCLUDED.checked_at",
        )
        .bind(repo)
        .bind(tag)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl ListingMeta for PgMeta {
    async fn repository_summaries(
        &self,
        query: &RepositoryQuery<'_>,
    ) -> Result<Vec<RepositorySummary>> {
        let rows = sqlx::query(
            "SELECT r.name,
               (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id),
               ((SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repo_id = r.id)
                 + (SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN
                     (SELECT mr.child FROM manifest_references mr
                      WHERE mr.repo_id = r.id AND mr.kind = 'blob')))::BIGINT,
               GREATEST(r.created_at,
                   COALESCE((SELECT MAX(m.created_at) FROM manifests m WHERE m.repo_id = r.id), 0),
                   COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repo_id = r.id), 0))
             FROM repositories r
             WHERE r.name > $1 AND ($2::TEXT IS NULL OR r.name = $2)
               AND ($3::TEXT IS NULL OR r.name LIKE $3 ESCAPE '\\')
             ORDER BY r.name LIMIT $4",
        )
        .bind(query.after.unwrap_or(""))
        .bind(query.name)
        .bind(query.contains.map(like_contains))
        .bind(limit_of(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RepositorySummary {
                    name: r.try_get(0)?,
                    tag_count: size_of(r.try_get(1)?)?,
                    total_size: size_of(r.try_get(2)?)?,
                    last_update: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn tag_summaries(&self, query: &TagQuery<'_>) -> Result<Vec<TagSummary>> {
        let (after_repo, after_tag) = query.after.unwrap_or(("", ""));
        let rows = sqlx::query(
            "SELECT r.name, t.name, t.digest, m.media_type, m.size, t.updated_at
             FROM tags t
             JOIN repositories r ON r.id = t.repo_id
             JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             WHERE ($1::TEXT IS NULL OR r.name = $1)
               AND ($2::TEXT IS NULL OR t.name = $2)
               AND ($3::TEXT IS NULL OR (r.name || ':' || t.name) LIKE $3 ESCAPE '\\')
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
        rows.iter()
            .map(|r| {
                Ok(TagSummary {
                    repository: r.try_get(0)?,
                    tag: r.try_get(1)?,
                    digest: parse_digest(r.try_get(2)?)?,
                    media_type: r.try_get(3)?,
                    size: size_of(r.try_get(4)?)?,
                    updated_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn delete_repository(&self, repo: &str) -> Result<Option<RemovedRepository>> {
        in_transaction!(self, "delete_repository", |tx| delete_repository_tx(
            &mut tx, repo
        ))
    }

    async fn storage_stats(&self) -> Result<StorageStats> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM blobs),
                    ((SELECT COALESCE(SUM(size), 0) FROM blobs)
                      + (SELECT COALESCE(SUM(size), 0) FROM
                          (SELECT DISTINCT digest, size FROM manifests) AS d))::BIGINT,
                    (SELECT COUNT(*) FROM uploads)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(StorageStats {
            blobs: size_of(row.try_get(0)?)?,
            bytes: size_of(row.try_get(1)?)?,
            upload_sessions: size_of(row.try_get(2)?)?,
        })
    }
}

#[async_trait]
impl MetaStore for PgMeta {
    async fn close(&self) {
        self.pool.close().await;
    }
}
