//! The embedded SQLite metadata store (WAL mode, one writer at a time).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oci_core::Digest;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::{ManifestRecord, MetaError, MetaStore, NewManifest, Result};

/// SQLite-backed [`MetaStore`].
pub struct SqliteMeta {
    pool: SqlitePool,
    /// SQLite allows one writer; queueing here avoids busy errors under concurrent pushes.
    write_lock: tokio::sync::Mutex<()>,
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

/// Columns of a manifest row, in the order [`manifest_from_row`] reads them.
macro_rules! manifest_columns {
    () => {
        "m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations"
    };
}

fn manifest_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ManifestRecord> {
    Ok(ManifestRecord {
        digest: parse_digest(row.try_get(0)?)?,
        media_type: row.try_get(1)?,
        size: row.try_get::<i64, _>(2)? as u64,
        artifact_type: row.try_get(3)?,
        subject: row
            .try_get::<Option<String>, _>(4)?
            .map(parse_digest)
            .transpose()?,
        annotations: row.try_get(5)?,
    })
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

    /// Close the pool, flushing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn repository_exists(&self, repo: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = ?")
            .bind(repo)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
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
            .bind(size as i64)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repo_id, digest, created_at)
             SELECT id, ?, ? FROM repositories WHERE name = ?
             ON CONFLICT(repo_id, digest) DO NOTHING",
        )
        .bind(digest.to_string())
        .bind(t)
        .bind(repo)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repo_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ? AND rb.digest = ?",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = ?")
            .bind(digest.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let _w = self.write_lock.lock().await;
        let done = sqlx::query(
            "DELETE FROM repository_blobs
             WHERE repo_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ?",
        )
        .bind(repo)
        .bind(digest.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn missing_blobs(&self, repo: &str, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        for d in digests {
            if self.repo_blob(repo, d).await?.is_none() {
                missing.push(d.clone());
            }
        }
        Ok(missing)
    }

    async fn missing_manifests(&self, repo: &str, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        for d in digests {
            if self.get_manifest(repo, d).await?.is_none() {
                missing.push(d.clone());
            }
        }
        Ok(missing)
    }

    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &NewManifest,
        tags: &[String],
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
        sqlx::query(
            "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo_id, digest) DO NOTHING",
        )
        .bind(repo_id)
        .bind(&digest)
        .bind(&rec.media_type)
        .bind(rec.size as i64)
        .bind(&rec.artifact_type)
        .bind(rec.subject.as_ref().map(|s| s.to_string()))
        .bind(&rec.annotations)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        // The API checked the references before; checked again here, under the write lock,
        // so a concurrent unlink or delete cannot slip in between.
        for d in &manifest.blobs {
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
        for d in &manifest.children {
            let present = sqlx::query("SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?")
                .bind(repo_id)
                .bind(d.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if present.is_none() {
                return Err(MetaError::MissingReference(d.clone()));
            }
        }
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

    async fn get_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = ? AND m.digest = ?"
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
             WHERE r.name = ? AND t.name = ?"
        ))
        .bind(repo)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(manifest_from_row).transpose()
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<String>>> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let tags: Vec<String> = sqlx::query(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id
             WHERE r.name = ? AND t.digest = ? ORDER BY t.name",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
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

    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        let _w = self.write_lock.lock().await;
        let done = sqlx::query(
            "DELETE FROM tags WHERE repo_id = (SELECT id FROM repositories WHERE name = ?) AND name = ?",
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
             WHERE r.name = ? AND t.name > ? ORDER BY t.name LIMIT ?",
        )
        .bind(repo)
        .bind(last.unwrap_or(""))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn list_repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?")
                .bind(last.unwrap_or(""))
                .bind(limit.min(i64::MAX as usize) as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<ManifestRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = ? AND m.subject = ? ORDER BY m.digest"
        ))
        .bind(repo)
        .bind(subject.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(manifest_from_row).collect()
    }

    async fn create_upload(&self, id: &str, repo: &str) -> Result<()> {
        let _w = self.write_lock.lock().await;
        sqlx::query("INSERT INTO uploads (id, repo, created_at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(repo)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upload_repo(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT repo FROM uploads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        let _w = self.write_lock.lock().await;
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upload_state(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT state FROM uploads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get::<Option<Vec<u8>>, _>(0)))
    }

    async fn set_upload_state(&self, id: &str, state: &[u8]) -> Result<()> {
        let _w = self.write_lock.lock().await;
        let done = sqlx::query("UPDATE uploads SET state = ? WHERE id = ?")
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
