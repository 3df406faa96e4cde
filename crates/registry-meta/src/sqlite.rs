//! The embedded SQLite metadata store (WAL mode, one writer at a time).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use oci_core::Digest;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::sql::{self, db_size, manifest_columns, now, unix};
use crate::{
    ExternalRegistryRecord, GcBlob, GcManifest, ManifestRecord, MetaError, NewManifest,
    RemovedRepository, ReplicationRuleRecord, RepositoryQuery, RepositorySummary, Result,
    StorageStats, TagQuery, TagSummary, like_contains,
};

/// SQLite-backed [`MetaStore`](crate::MetaStore).
pub struct SqliteMeta {
    pool: SqlitePool,
    /// SQLite allows one writer; queueing here avoids busy errors under concurrent pushes.
    write_lock: tokio::sync::Mutex<()>,
}

impl SqliteMeta {
    /// Open a database by URL (`sqlite:PATH`) and apply migrations.
    pub async fn connect(url: &str) -> Result<SqliteMeta> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteMeta {
            pool,
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Open the database file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteMeta> {
        SqliteMeta::connect(&format!("sqlite://{}", path.display())).await
    }

    /// Store a manifest and point `tags` at it in one transaction; with `check_references`,
    /// every referenced blob and child manifest must already be in the repository.
    async fn put_manifest_engine(
        &self,
        repo: &str,
        manifest: &NewManifest,
        tags: &[String],
        check_references: bool,
    ) -> Result<()> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let t = now();
        let rec = &manifest.record;
        let digest = rec.digest.to_string();
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(repo)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        let repo_id: i64 = sqlx::query("SELECT id FROM repositories WHERE name = ?")
            .bind(repo)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        // References are checked here, inside the transaction, so that garbage collection
        // (which deletes links and manifests only when nothing references them) cannot
        // remove one between the check and the commit.
        for d in manifest.blobs.iter().filter(|_| check_references) {
            let linked =
                sqlx::query("SELECT 1 FROM repository_blobs WHERE repo_id = ? AND digest = ?")
                    .bind(repo_id)
                    .bind(d.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if linked.is_none() {
                return Err(MetaError::MissingReference(d.clone()));
            }
        }
        for d in manifest.children.iter().filter(|_| check_references) {
            let present = sqlx::query("SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?")
                .bind(repo_id)
                .bind(d.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if present.is_none() {
                return Err(MetaError::MissingReference(d.clone()));
            }
        }
        // Pushing a manifest again refreshes its timestamp (garbage collection's grace).
        sqlx::query(
            "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo_id)
        .bind(&digest)
        .bind(&rec.media_type)
        .bind(db_size(rec.size)?)
        .bind(&rec.artifact_type)
        .bind(rec.subject.as_ref().map(|s| s.to_string()))
        .bind(&rec.annotations)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        let refs = manifest
            .blobs
            .iter()
            .map(|d| (d, "blob"))
            .chain(manifest.children.iter().map(|d| (d, "manifest")));
        for (child, kind) in refs {
            sqlx::query(
                "INSERT INTO manifest_references (repo_id, parent, child, kind) VALUES (?, ?, ?, ?)
                 ON CONFLICT DO NOTHING",
            )
            .bind(repo_id)
            .bind(&digest)
            .bind(child.to_string())
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        }
        for tag in tags {
            sqlx::query(
                "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT(repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(&digest)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What this engine does its own way (see [`crate::sql`]).
impl SqliteMeta {
    /// Held around each write: SQLite has one writer at a time.
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.write_lock.lock().await)
    }

    async fn link_blob_engine(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let t = now();
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(repo)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT(digest) DO NOTHING")
            .bind(digest.to_string())
            .bind(db_size(size)?)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        // Re-linking refreshes the link's timestamp: garbage collection's grace counts from
        // the last time a client asserted the blob.
        sqlx::query(
            "INSERT INTO repository_blobs (repo_id, digest, created_at)
             SELECT id, ?, ? FROM repositories WHERE name = ?
             ON CONFLICT(repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(digest.to_string())
        .bind(t)
        .bind(repo)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_manifest_engine(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<String>>> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let tags: Vec<String> = sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id
             WHERE r.name = ? AND t.digest = ? ORDER BY t.name",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_all(&mut *tx)
        .await?;
        // Tags and references go with the manifest (ON DELETE CASCADE).
        let done = sqlx::query(
            "DELETE FROM manifests WHERE repo_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ?",
        )
        .bind(repo)
        .bind(digest.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0).then_some(tags))
    }

    async fn gc_delete_manifest_engine(
        &self,
        repo: &str,
        digest: &Digest,
        older_than: SystemTime,
    ) -> Result<bool> {
        let _w = self.write_lock.lock().await;
        let done = sqlx::query(
            "DELETE FROM manifests AS m
             WHERE m.repo_id = (SELECT id FROM repositories WHERE name = ?) AND m.digest = ?
               AND m.created_at < ?
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
               AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                               WHERE mr.repo_id = m.repo_id AND mr.child = m.digest)
               AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s
                                                     WHERE s.repo_id = m.repo_id AND s.digest = m.subject))",
        )
        .bind(repo)
        .bind(digest.to_string())
        .bind(unix(older_than))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn gc_unlink_blob_engine(
        &self,
        repo: &str,
        digest: &Digest,
        older_than: SystemTime,
    ) -> Result<bool> {
        let _w = self.write_lock.lock().await;
        let done = sqlx::query(
            "DELETE FROM repository_blobs AS rb
             WHERE rb.repo_id = (SELECT id FROM repositories WHERE name = ?) AND rb.digest = ?
               AND rb.created_at < ?
               AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                               WHERE mr.repo_id = rb.repo_id AND mr.child = rb.digest)",
        )
        .bind(repo)
        .bind(digest.to_string())
        .bind(unix(older_than))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn gc_delete_blob_engine(&self, digest: &Digest, older_than: SystemTime) -> Result<bool> {
        let _w = self.write_lock.lock().await;
        let done = sqlx::query(
            "DELETE FROM blobs AS b
             WHERE b.digest = ? AND b.created_at < ?
               AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
        )
        .bind(digest.to_string())
        .bind(unix(older_than))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_repository_engine(&self, repo: &str) -> Result<Option<RemovedRepository>> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT id FROM repositories WHERE name = ?")
            .bind(repo)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let repo_id: i64 = row.try_get(0)?;
        let tags: Vec<String> =
            sqlx::query_scalar("SELECT name FROM tags WHERE repo_id = ? ORDER BY name")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await?;
        let manifests = sqlx::query_as::<_, sql::ManifestRow>(concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests m WHERE m.repo_id = ? ORDER BY m.digest"
        ))
        .bind(repo_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(sql::ManifestRow::record)
        .collect::<Result<Vec<_>>>()?;
        for statement in [
            "DELETE FROM tags WHERE repo_id = ?",
            "DELETE FROM manifest_references WHERE repo_id = ?",
            "DELETE FROM manifests WHERE repo_id = ?",
        ] {
            sqlx::query(statement)
                .bind(repo_id)
                .execute(&mut *tx)
                .await?;
        }
        let links = sqlx::query("DELETE FROM repository_blobs WHERE repo_id = ?")
            .bind(repo_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM repositories WHERE id = ?")
            .bind(repo_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(RemovedRepository {
            tags,
            manifests,
            blob_links: links,
        }))
    }

    /// Close the pool, flushing the WAL.
    async fn close_engine(&self) {
        self.pool.close().await;
    }
}

sql::meta_store!(SqliteMeta);
