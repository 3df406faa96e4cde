//! The embedded SQLite metadata store (WAL mode, one writer at a time).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oci_core::Digest;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::{
    AdminMeta, BlobMeta, ExternalRegistryRecord, GcBlob, GcManifest, GcMeta, ListingMeta,
    ManifestMeta, ManifestRecord, MetaError, MetaStore, NewManifest, RemovedRepository,
    ReplicationRuleRecord, RepositoryQuery, RepositorySummary, Result, StorageStats, TagQuery,
    TagSummary, UploadMeta, like_contains,
};

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

    /// Store a manifest and point `tags` at it in one transaction; with `check_references`,
    /// every referenced blob and child manifest must already be in the repository.
    async fn store_manifest(
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
        .bind(rec.size as i64)
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

#[async_trait]
impl BlobMeta for SqliteMeta {
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
             WHERE r.name = ? AND rb.digest = ?",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let size = row.get::<i64, _>(0) as u64;
        if row.get::<i64, _>(1) < unix(stale_before) {
            let _w = self.write_lock.lock().await;
            sqlx::query(
                "UPDATE repository_blobs SET created_at = ?
                 WHERE repo_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ?",
            )
            .bind(now())
            .bind(repo)
            .bind(digest.to_string())
            .execute(&self.pool)
            .await?;
        }
        Ok(Some(size))
    }
}

#[async_trait]
impl ManifestMeta for SqliteMeta {
    async fn repository_exists(&self, repo: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = ?")
            .bind(repo)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
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
        self.store_manifest(repo, manifest, tags, true).await
    }

    async fn put_cached_manifest(
        &self,
        repo: &str,
        manifest: &NewManifest,
        tags: &[String],
    ) -> Result<()> {
        self.store_manifest(repo, manifest, tags, false).await
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
}

#[async_trait]
impl UploadMeta for SqliteMeta {
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

    async fn uploads_created_before(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM uploads WHERE created_at < ? ORDER BY created_at, id LIMIT ?",
        )
        .bind(unix(before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
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
}

#[async_trait]
impl GcMeta for SqliteMeta {
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
             WHERE (r.name, m.digest) > (?, ?)
             ORDER BY r.name, m.digest LIMIT ?",
        )
        .bind(&after_repo)
        .bind(&after_digest)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(GcManifest {
                repo: row.try_get(0)?,
                digest: parse_digest(row.try_get(1)?)?,
                size: row.try_get::<i64, _>(2)? as u64,
                subject: row
                    .try_get::<Option<String>, _>(3)?
                    .map(parse_digest)
                    .transpose()?,
                created_at: from_unix(row.try_get(4)?),
                tagged: row.try_get::<i64, _>(5)? != 0,
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
             WHERE (r.name, mr.parent) > (?, ?) AND (r.name, mr.parent) <= (?, ?)",
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
             FROM (SELECT * FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?) b
             LEFT JOIN repository_blobs rb ON rb.digest = b.digest
             LEFT JOIN repositories r ON r.id = rb.repo_id
             ORDER BY b.digest",
        )
        .bind(after.map(|d| d.to_string()).unwrap_or_default())
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<GcBlob> = Vec::new();
        for row in &rows {
            let digest = parse_digest(row.try_get(0)?)?;
            if out.last().is_none_or(|b| b.digest != digest) {
                out.push(GcBlob {
                    digest,
                    size: row.try_get::<i64, _>(1)? as u64,
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

    async fn gc_unlink_blob(
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

    async fn gc_delete_blob(&self, digest: &Digest, older_than: SystemTime) -> Result<bool> {
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

    async fn digest_in_use(&self, digest: &Digest) -> Result<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)
                 OR EXISTS (SELECT 1 FROM manifests WHERE digest = ?1)",
        )
        .bind(digest.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? != 0)
    }
}

#[async_trait]
impl AdminMeta for SqliteMeta {
    async fn put_token_key(&self, kid: &str, algorithm: &str, public_key: &[u8]) -> Result<()> {
        let _w = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO token_keys (kid, algorithm, public_key, created_at) VALUES (?, ?, ?, ?)
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
        let row = sqlx::query("SELECT algorithm, public_key FROM token_keys WHERE kid = ?")
            .bind(kid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn agree_key_fingerprint(&self, name: &str, fingerprint: &str) -> Result<String> {
        let _w = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO key_fingerprints (name, fingerprint, created_at) VALUES (?, ?, ?)
             ON CONFLICT(name) DO NOTHING",
        )
        .bind(name)
        .bind(fingerprint)
        .bind(now())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT fingerprint FROM key_fingerprints WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    async fn put_external_registry(&self, rec: &ExternalRegistryRecord) -> Result<()> {
        let _w = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO external_registries
               (id, name, kind, endpoint, auth_kind, username, secret, insecure, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
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
        let _w = self.write_lock.lock().await;
        let done = sqlx::query("DELETE FROM external_registries WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_replication_rule(&self, rule: &ReplicationRuleRecord) -> Result<()> {
        let _w = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO replication_rules (id, name, body, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, body = excluded.body",
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
        let _w = self.write_lock.lock().await;
        let done = sqlx::query("DELETE FROM replication_rules WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn proxy_tag_checked(&self, repo: &str, tag: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT checked_at FROM proxy_tags WHERE repository = ? AND tag = ?")
            .bind(repo)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_proxy_tag_checked(&self, repo: &str, tag: &str, at: i64) -> Result<()> {
        let _w = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO proxy_tags (repository, tag, checked_at) VALUES (?, ?, ?)
             ON CONFLICT(repository, tag) DO UPDATE SET checked_at = excluded.checked_at",
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
impl ListingMeta for SqliteMeta {
    async fn repository_summaries(
        &self,
        query: &RepositoryQuery<'_>,
    ) -> Result<Vec<RepositorySummary>> {
        let rows = sqlx::query(
            "SELECT r.name,
               (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id),
               (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repo_id = r.id)
                 + (SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN
                     (SELECT mr.child FROM manifest_references mr
                      WHERE mr.repo_id = r.id AND mr.kind = 'blob')),
               MAX(r.created_at,
                   COALESCE((SELECT MAX(m.created_at) FROM manifests m WHERE m.repo_id = r.id), 0),
                   COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repo_id = r.id), 0))
             FROM repositories r
             WHERE r.name > ? AND (? IS NULL OR r.name = ?)
               AND (? IS NULL OR r.name LIKE ? ESCAPE '\\')
             ORDER BY r.name LIMIT ?",
        )
        .bind(query.after.unwrap_or(""))
        .bind(query.name)
        .bind(query.name)
        .bind(query.contains)
        .bind(query.contains.map(like_contains))
        .bind(query.limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RepositorySummary {
                    name: r.try_get(0)?,
                    tag_count: r.try_get::<i64, _>(1)? as u64,
                    total_size: r.try_get::<i64, _>(2)? as u64,
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
             WHERE (? IS NULL OR r.name = ?)
               AND (? IS NULL OR t.name = ?)
               AND (? IS NULL OR (r.name || ':' || t.name) LIKE ? ESCAPE '\\')
               AND (r.name > ? OR (r.name = ? AND t.name > ?))
             ORDER BY r.name, t.name LIMIT ?",
        )
        .bind(query.repository)
        .bind(query.repository)
        .bind(query.tag)
        .bind(query.tag)
        .bind(query.contains)
        .bind(query.contains.map(like_contains))
        .bind(after_repo)
        .bind(after_repo)
        .bind(after_tag)
        .bind(query.limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagSummary {
                    repository: r.try_get(0)?,
                    tag: r.try_get(1)?,
                    digest: parse_digest(r.try_get(2)?)?,
                    media_type: r.try_get(3)?,
                    size: r.try_get::<i64, _>(4)? as u64,
                    updated_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn delete_repository(&self, repo: &str) -> Result<Option<RemovedRepository>> {
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
            sqlx::query("SELECT name FROM tags WHERE repo_id = ? ORDER BY name")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        let manifests = sqlx::query(concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests m WHERE m.repo_id = ? ORDER BY m.digest"
        ))
        .bind(repo_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(manifest_from_row)
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

    async fn storage_stats(&self) -> Result<StorageStats> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM blobs),
                    (SELECT COALESCE(SUM(size), 0) FROM blobs)
                      + (SELECT COALESCE(SUM(size), 0) FROM
                          (SELECT DISTINCT digest, size FROM manifests)),
                    (SELECT COUNT(*) FROM uploads)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(StorageStats {
            blobs: row.try_get::<i64, _>(0)? as u64,
            bytes: row.try_get::<i64, _>(1)? as u64,
            upload_sessions: row.try_get::<i64, _>(2)? as u64,
        })
    }
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn close(&self) {
        self.pool.close().await;
    }
}
