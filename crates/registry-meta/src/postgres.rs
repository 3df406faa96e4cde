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

use std::time::{Duration, SystemTime};

use oci_core::Digest;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::sql::{self, db_size, manifest_columns, now, unix};
use crate::{
    ExternalRegistryRecord, GcBlob, GcManifest, ManifestRecord, MetaError, NewManifest,
    RemovedRepository, ReplicationRuleRecord, RepositoryQuery, RepositorySummary, Result,
    StorageStats, TagQuery, TagSummary, like_contains,
};

/// Connections per process; replicas multiply this, so keep it modest.
const MAX_CONNECTIONS: u32 = 16;
/// How often a transaction aborted by a deadlock or serialization failure is tried.
const ATTEMPTS: usize = 5;

/// PostgreSQL-backed [`MetaStore`](crate::MetaStore).
pub struct PgMeta {
    pool: PgPool,
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
            Some(row) => return Ok(row.try_get(0)?),
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
    .bind(db_size(rec.size)?)
    .bind(&rec.artifact_type)
    .bind(rec.subject.as_ref().map(|s| s.to_string()))
    .bind(&rec.annotations)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    // The references must still be there; FOR KEY SHARE keeps them until commit (an unlink or
    // delete waits for us and happens after).
    let blobs: Vec<String> = manifest.blobs.iter().map(Digest::to_string).collect();
    let linked: Vec<String> = sqlx::query_scalar(
        "SELECT digest FROM repository_blobs WHERE repo_id = $1 AND digest = ANY($2)
         ORDER BY digest FOR KEY SHARE",
    )
    .bind(repo_id)
    .bind(&blobs)
    .fetch_all(&mut **tx)
    .await?;
    if let Some(i) = blobs.iter().position(|d| !linked.contains(d))
        && check_references
    {
        return Err(MetaError::MissingReference(manifest.blobs[i].clone()));
    }
    let children: Vec<String> = manifest.children.iter().map(Digest::to_string).collect();
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT digest FROM manifests WHERE repo_id = $1 AND digest = ANY($2)
         ORDER BY digest FOR KEY SHARE",
    )
    .bind(repo_id)
    .bind(&children)
    .fetch_all(&mut **tx)
    .await?;
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
    let repo_id: i64 = row.try_get(0)?;
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
        .bind(db_size(size)?)
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
    let repo_id: i64 = row.try_get(0)?;
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
    let tags: Vec<String> =
        sqlx::query_scalar("SELECT name FROM tags WHERE repo_id = $1 ORDER BY name")
            .bind(repo_id)
            .fetch_all(&mut **tx)
            .await?;
    let manifests = sqlx::query_as::<_, sql::ManifestRow>(concat!(
        "SELECT ",
        manifest_columns!(),
        " FROM manifests m WHERE m.repo_id = $1 ORDER BY m.digest"
    ))
    .bind(repo_id)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(sql::ManifestRow::record)
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

/// What this engine does its own way (see [`crate::sql`]).
impl PgMeta {
    /// PostgreSQL orders writers itself: nothing to hold.
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }

    async fn put_manifest_engine(
        &self,
        repo: &str,
        manifest: &NewManifest,
        tags: &[String],
        check_references: bool,
    ) -> Result<()> {
        in_transaction!(self, "put_manifest", |tx| put_manifest_tx(
            &mut tx,
            repo,
            manifest,
            tags,
            check_references
        ))
    }

    async fn link_blob_engine(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        let digest = digest.to_string();
        in_transaction!(self, "link_blob", |tx| link_blob_tx(
            &mut tx, repo, &digest, size
        ))
    }

    async fn delete_manifest_engine(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<String>>> {
        let digest = digest.to_string();
        in_transaction!(self, "delete_manifest", |tx| delete_manifest_tx(
            &mut tx, repo, &digest
        ))
    }

    async fn gc_delete_manifest_engine(
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

    async fn gc_unlink_blob_engine(
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

    async fn gc_delete_blob_engine(&self, digest: &Digest, older_than: SystemTime) -> Result<bool> {
        let (digest, older_than) = (digest.to_string(), unix(older_than));
        in_transaction!(self, "gc_delete_blob", |tx| gc_delete_blob_tx(
            &mut tx, &digest, older_than
        ))
    }

    async fn delete_repository_engine(&self, repo: &str) -> Result<Option<RemovedRepository>> {
        in_transaction!(self, "delete_repository", |tx| delete_repository_tx(
            &mut tx, repo
        ))
    }

    async fn close_engine(&self) {
        self.pool.close().await;
    }
}

sql::meta_store!(PgMeta);
