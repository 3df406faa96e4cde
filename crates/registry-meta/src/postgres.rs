//! The PostgreSQL metadata store, for several registry replicas sharing one database.
//!
//! Semantics are those of [`crate::sqlite::SqliteMeta`]. Where SQLite serializes writers with
//! one process-local mutex, this store relies on the database: every multi-statement write
//! is one transaction (READ COMMITTED), inserts use `ON CONFLICT`, and rows a write depends
//! on are locked (`FOR KEY SHARE` on the blobs and child manifests a manifest references,
//! `FOR UPDATE` on a manifest being deleted, an upsert on the manifest being stored).
//! Transactions that PostgreSQL aborts as deadlocked or unserializable are retried.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oci_core::Digest;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::{ManifestRecord, MetaError, MetaStore, NewManifest, Result};

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

/// Create `repo` if needed and return its id (repositories are never deleted, so the id
/// read after the insert stays valid).
async fn ensure_repo(tx: &mut Transaction<'static, Postgres>, repo: &str, t: i64) -> Result<i64> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(repo)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(sqlx::query("SELECT id FROM repositories WHERE name = $1")
        .bind(repo)
        .fetch_one(&mut **tx)
        .await?
        .get(0))
}

async fn put_manifest_tx(
    tx: &mut Transaction<'static, Postgres>,
    repo: &str,
    manifest: &NewManifest,
    tags: &[String],
) -> Result<()> {
    let t = now();
    let rec = &manifest.record;
    let digest = rec.digest.to_string();
    let repo_id = ensure_repo(tx, repo, t).await?;
    // An upsert rather than DO NOTHING: it locks the row (or inserts it) so a concurrent
    // delete of the same manifest cannot remove it before the tags below point at it. The
    // update keeps the first push's values, as SQLite's DO NOTHING does.
    sqlx::query(
        "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (repo_id, digest) DO UPDATE SET media_type = manifests.media_type",
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
    if let Some(i) = blobs.iter().position(|d| !linked.contains(d)) {
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
    if let Some(i) = children.iter().position(|d| !present.contains(d)) {
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
    sqlx::query(
        "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(digest)
    .bind(size as i64)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (repo_id, digest) DO NOTHING",
    )
    .bind(repo_id)
    .bind(digest)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl MetaStore for PgMeta {
    async fn repository_exists(&self, repo: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

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
            &mut tx, repo, manifest, tags
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

    async fn close(&self) {
        self.pool.close().await;
    }
}
