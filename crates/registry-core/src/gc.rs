//! The deletions garbage collection makes (`registry-gc` plans them): each one re-checks
//! its condition where it happens (one conditional statement), and content goes only under
//! the digest's lock after checking again that nothing uses it, so pushes running meanwhile
//! are safe.

use std::time::{Duration, SystemTime};

use oci_core::Digest;
use registry_coord::{CoordError, LockGuard, keys};
use registry_storage::StorageError;

use crate::Registry;
use crate::error::{Result, lock_failed};

/// The GC lock expires after this if its holder dies.
const GC_LOCK_TTL: Duration = Duration::from_secs(3600);
/// A digest's lock expires after this if its holder dies.
const BLOB_LOCK_TTL: Duration = Duration::from_secs(60);
/// How long GC waits for a digest's lock (a commit may be re-hashing a large blob).
const BLOB_LOCK_WAIT: Duration = Duration::from_secs(600);

impl Registry {
    /// Take the GC lock (`keys::GC`), so that one replica at a time collects; `None` when
    /// another collection holds it.
    pub async fn lock_gc(&self) -> Result<Option<LockGuard>> {
        match self
            .inner
            .coord
            .lock(keys::GC, GC_LOCK_TTL, Duration::ZERO)
            .await
        {
            Ok(guard) => Ok(Some(guard)),
            Err(CoordError::LockBusy(_)) => Ok(None),
            Err(e) => Err(lock_failed(e, "garbage collection")),
        }
    }

    /// Purge upload session `id` unless a request holds it (then `false`): its bytes first,
    /// so a crash in between leaves a row whose next purge finds no bytes, then its row.
    pub async fn purge_upload(&self, id: &str) -> Result<bool> {
        let inner = &self.inner;
        let _guard = match inner
            .coord
            .lock(
                &keys::upload(id),
                registry_coord::locks::UPLOAD_TTL,
                Duration::ZERO,
            )
            .await
        {
            Ok(guard) => guard,
            Err(CoordError::LockBusy(_)) => return Ok(false),
            Err(e) => return Err(lock_failed(e, "the upload session")),
        };
        match inner.blobs.cancel_upload(id).await {
            Ok(()) | Err(StorageError::UploadUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        inner.meta.delete_upload(id).await?;
        tracing::info!(upload = %id, "purged an abandoned upload session");
        Ok(true)
    }

    /// Delete manifest `digest` of `repo` if it is still unreferenced, untagged and older
    /// than `cutoff`; whether it did. This process's cache forgets it at once.
    pub async fn sweep_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool> {
        if !self
            .inner
            .meta
            .gc_delete_manifest(repo, digest, cutoff)
            .await?
        {
            return Ok(false);
        }
        self.inner
            .cache
            .invalidate(repo, [digest.to_string().as_str()]);
        tracing::debug!(repository = %repo, %digest, "gc: manifest deleted");
        Ok(true)
    }

    /// Remove `repo`'s link to blob `digest` if no manifest of it references the blob and
    /// the link is older than `cutoff`; whether it did.
    pub async fn sweep_link(
        &self,
        repo: &str,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool> {
        Ok(self.inner.meta.gc_unlink_blob(repo, digest, cutoff).await?)
    }

    /// After sweeping manifests or links of `repos`: every replica drops what it cached
    /// about them (manifests in process caches, lookups shared through the coordinator).
    pub async fn swept<'a>(&self, repos: impl IntoIterator<Item = &'a str>) {
        for repo in repos {
            registry_coord::lookups::repository_changed(&*self.inner.coord, repo, true).await;
        }
    }

    /// Under `digest`'s lock: delete its blob row if no repository links it (`row`), then
    /// its content of `size` bytes (`Some`) if nothing uses the digest any more. Whether the
    /// content was deleted.
    pub async fn sweep_blob(
        &self,
        digest: &Digest,
        row: bool,
        size: Option<u64>,
        cutoff: SystemTime,
    ) -> Result<bool> {
        let inner = &self.inner;
        let _lock = inner
            .coord
            .lock(
                &keys::blob(&digest.to_string()),
                BLOB_LOCK_TTL,
                BLOB_LOCK_WAIT,
            )
            .await
            .map_err(|e| lock_failed(e, "this blob"))?;
        if row {
            inner.meta.gc_delete_blob(digest, cutoff).await?;
        }
        let Some(size) = size else { return Ok(false) };
        if inner.meta.digest_in_use(digest).await? {
            return Ok(false);
        }
        match inner.blobs.delete(digest).await {
            Ok(()) => {
                tracing::debug!(%digest, size, "gc: content deleted");
                Ok(true)
            }
            Err(StorageError::BlobUnknown(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete (or, in a dry run, count) what only the blob store can tell is unused and
    /// older than `before`: objects and bytes.
    pub async fn sweep_unreferenced(
        &self,
        before: SystemTime,
        dry_run: bool,
    ) -> Result<(u64, u64)> {
        Ok(self.inner.blobs.sweep_unreferenced(before, dry_run).await?)
    }
}
