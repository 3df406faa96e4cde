//! Blobs and upload sessions of a [`Repository`].
//!
//! Every commit verifies the digest in the blob store, then links the blob into the
//! repository under the digest's lock ([`crate::Registry::blob_lock`]). An upload session
//! is driven by one request at a time, across replicas (the session lock).

use oci_core::Digest;
use registry_storage::{ByteStream, StorageError};

use crate::error::{CoreError, Result, lock_failed};
use crate::events::{Action, Event, Target};
use crate::{Repository, lookups};

/// How a blob read will use the body (what a pull-through miss must provide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobWant {
    /// The whole body from its first byte: it may be streamed while it is stored.
    Stream,
    /// Its size only, or a range of it: it must be stored first.
    Stored,
}

/// A blob ready to be read.
pub enum BlobRead {
    /// Stored here: read it with [`Repository::read_blob`].
    Local {
        /// Its size.
        size: u64,
    },
    /// Arriving from a pull-through repository's upstream, stored as it streams.
    Streaming {
        /// Its size, when the upstream said.
        size: Option<u64>,
        /// The body; it fails rather than end if the stored bytes do not verify.
        body: ByteStream,
    },
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobRead::Local { size } => f.debug_struct("Local").field("size", size).finish(),
            BlobRead::Streaming { size, .. } => f
                .debug_struct("Streaming")
                .field("size", size)
                .finish_non_exhaustive(),
        }
    }
}

/// A chunk to append to an upload session.
pub struct Chunk {
    /// Where the chunk starts and ends (`Content-Range`), when the client said.
    pub range: Option<(u64, u64)>,
    /// Its length (`Content-Length`), when the client said.
    pub length: Option<u64>,
    /// The bytes.
    pub body: ByteStream,
}

impl Repository {
    /// The size of `digest` if the repository may serve it. A client told that the blob
    /// exists may skip uploading it and reference it in a manifest soon, so an old link is
    /// refreshed for GC's grace. A pull-through repository links the blob from another
    /// repository, or fetches it from its upstream ([`crate::Upstream::fetch_blob`]).
    pub async fn stat_blob(&self, digest: &Digest, want: BlobWant) -> Result<BlobRead> {
        if let Some(up) = &self.upstream
            && lookups::repo_blob(&self.reg, &self.name, digest)
                .await?
                .is_none()
            && !self.link_stored_blob(digest).await?
            && let Some(read) = up.fetch_blob(self, digest, want).await
        {
            return Ok(read);
        }
        match lookups::touch_blob(&self.reg, &self.name, digest).await? {
            Some(size) => Ok(BlobRead::Local { size }),
            None => Err(CoreError::BlobUnknown(digest.clone())),
        }
    }

    /// Size of `digest` if the repository may serve it (no refresh, no upstream).
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        lookups::repo_blob(&self.reg, &self.name, digest).await
    }

    /// `len` bytes of the blob from `start` (check [`Repository::stat_blob`] first).
    pub async fn read_blob(&self, digest: &Digest, start: u64, len: u64) -> Result<ByteStream> {
        Ok(self.inner().blobs.read(digest, start, len).await?)
    }

    /// A URL the blob store signs for reading the blob directly, when it offers one.
    pub async fn presigned_url(&self, digest: &Digest, head: bool) -> Result<Option<String>> {
        Ok(self.inner().blobs.presigned_url(digest, head).await?)
    }

    /// Unlink a blob from the repository (the content stays until garbage collection).
    pub async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        let inner = self.inner();
        if !inner.meta.unlink_blob(&self.name, digest).await? {
            return Err(CoreError::BlobUnknown(digest.clone()));
        }
        inner.events.emit(Event::new(
            Action::Delete,
            Target {
                repository: self.name.clone(),
                media_type: Some("application/octet-stream".into()),
                digest: Some(digest.clone()),
                ..Default::default()
            },
        ));
        self.changed().await;
        Ok(())
    }

    /// Link a blob the registry already has, from repository `from` (any repository when
    /// `None`), without moving bytes. `None` when it is not there to mount.
    pub async fn mount_blob(&self, digest: &Digest, from: Option<&str>) -> Result<Option<u64>> {
        self.writable()?;
        self.link_existing(digest, from).await
    }

    /// Link `digest` if any repository has it stored (what replication and pull-through do
    /// before fetching); whether it did.
    pub async fn link_stored_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.link_existing(digest, None).await?.is_some())
    }

    /// Under the digest's lock: link `digest` if `from` (any repository when `None`) has it
    /// and its content is stored; its size, `None` when it is not there.
    async fn link_existing(&self, digest: &Digest, from: Option<&str>) -> Result<Option<u64>> {
        let inner = self.inner();
        let _lock = self.reg.blob_lock(digest).await?;
        let known = match from {
            Some(from) if oci_core::validate_repository(from).is_ok() => {
                inner.meta.repo_blob(from, digest).await?
            }
            Some(_) => None,
            None => inner.meta.any_blob(digest).await?,
        };
        let Some(size) = known else { return Ok(None) };
        if inner.blobs.stat(digest).await?.is_none() {
            return Ok(None);
        }
        inner.meta.link_blob(&self.name, digest, size).await?;
        Ok(Some(size))
    }

    /// A client's whole blob in one request (`POST ?digest=`): verified, stored, linked.
    pub async fn upload_blob(
        &self,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        self.writable()?;
        self.ingest_blob(digest, length, body).await
    }

    /// Store a blob from a stream (a monolithic upload, replication, a pull-through fetch):
    /// written to a fresh session, verified and committed under the digest's lock, linked.
    /// Nothing is kept on failure.
    pub async fn ingest_blob(
        &self,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        let blobs = &self.inner().blobs;
        let id = uuid::Uuid::new_v4().to_string();
        blobs.create_upload(&id).await?;
        let mut lock = None;
        let committed = async {
            blobs.append_upload_sized(&id, None, length, body).await?;
            lock = Some(self.reg.blob_lock(digest).await?);
            Ok::<_, CoreError>(blobs.commit_upload(&id, digest).await?)
        }
        .await;
        let size = match committed {
            Ok(size) => size,
            Err(e) => {
                let _ = blobs.cancel_upload(&id).await;
                return Err(e);
            }
        };
        self.inner()
            .meta
            .link_blob(&self.name, digest, size)
            .await?;
        drop(lock);
        Ok(size)
    }

    /// Open an upload session; returns its id.
    pub async fn start_upload(&self) -> Result<String> {
        self.writable()?;
        let id = uuid::Uuid::new_v4().to_string();
        // The session row first: a blob store may keep the session's state in it (S3).
        self.inner().meta.create_upload(&id, &self.name).await?;
        self.inner().blobs.create_upload(&id).await?;
        Ok(id)
    }

    /// `UploadUnknown` unless session `id` is open in this repository.
    pub async fn check_session(&self, id: &str) -> Result<()> {
        self.writable()?;
        match self.inner().meta.upload_repo(id).await? {
            Some(repo) if repo == self.name => Ok(()),
            _ => Err(CoreError::UploadUnknown(id.to_string())),
        }
    }

    /// Hold the session's lock (one request at a time per session, across replicas).
    async fn lock_session(&self, id: &str) -> Result<registry_coord::LockGuard> {
        match registry_coord::locks::upload(&*self.inner().coord, id).await {
            Ok(g) => Ok(g),
            Err(registry_coord::CoordError::LockBusy(_)) => Err(CoreError::UploadBusy {
                id: id.to_string(),
                size: self.inner().blobs.upload_size(id).await.ok().flatten(),
            }),
            Err(e) => Err(lock_failed(e, "the upload session")),
        }
    }

    /// Append `chunk` to a session that is locked and checked.
    async fn append_locked(&self, id: &str, chunk: Chunk) -> Result<u64> {
        let blobs = &self.inner().blobs;
        if chunk.length == Some(0) && chunk.range.is_none() {
            return blobs
                .upload_size(id)
                .await?
                .ok_or_else(|| CoreError::UploadUnknown(id.to_string()));
        }
        let size = blobs
            .append_upload_sized(id, chunk.range.map(|r| r.0), chunk.length, chunk.body)
            .await?;
        if let Some((start, end)) = chunk.range
            && size != end + 1
        {
            return Err(CoreError::ChunkMismatch { start, end, size });
        }
        Ok(size)
    }

    /// Append a chunk to session `id`; returns the session's size after it.
    pub async fn append(&self, id: &str, chunk: Chunk) -> Result<u64> {
        self.check_session(id).await?;
        let _session = self.lock_session(id).await?;
        self.append_locked(id, chunk).await
    }

    /// Finish session `id`: append the last chunk, verify `digest`, commit, link. A digest
    /// mismatch ends the session (nothing is kept).
    pub async fn commit_blob(&self, id: &str, digest: &Digest, last: Chunk) -> Result<u64> {
        self.check_session(id).await?;
        let _session = self.lock_session(id).await?;
        // Another request may have finished or cancelled the session while we waited.
        self.check_session(id).await?;
        self.append_locked(id, last).await?;
        let inner = self.inner();
        let lock = self.reg.blob_lock(digest).await?;
        let size = match inner.blobs.commit_upload(id, digest).await {
            Ok(size) => size,
            Err(e @ (StorageError::DigestMismatch { .. } | StorageError::UploadUnknown(_))) => {
                inner.meta.delete_upload(id).await?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        inner.meta.link_blob(&self.name, digest, size).await?;
        drop(lock);
        inner.meta.delete_upload(id).await?;
        Ok(size)
    }

    /// How many bytes session `id` holds.
    pub async fn upload_status(&self, id: &str) -> Result<u64> {
        self.check_session(id).await?;
        let inner = self.inner();
        match inner.blobs.upload_size(id).await? {
            Some(size) => Ok(size),
            None => {
                inner.meta.delete_upload(id).await?;
                Err(CoreError::UploadUnknown(id.to_string()))
            }
        }
    }

    /// Cancel session `id`, dropping what it holds.
    pub async fn cancel_upload(&self, id: &str) -> Result<()> {
        self.check_session(id).await?;
        let _session = self.lock_session(id).await?;
        let inner = self.inner();
        match inner.blobs.cancel_upload(id).await {
            Ok(()) | Err(StorageError::UploadUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        inner.meta.delete_upload(id).await?;
        Ok(())
    }
}
