//! The embedded filesystem backend.
//!
//! Layout under the root directory:
//! - `blobs/<algorithm>/<first two hex>/<hex>`: committed blobs, immutable.
//! - `uploads/<session id>`: bytes of an upload session, appended in order.
//! - `tmp/`: temporary files of small writes; emptied at start.
//!
//! Every blob appears under `blobs/` only by `rename` of a fully written, fsynced file whose
//! digest was verified, so a crash never leaves a partial blob visible.

use std::collections::HashMap;
use std::io::{Read, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use oci_core::{Algorithm, Digest, Hasher};
use tokio::io::AsyncSeekExt;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::sequential::SequentialWriter;
use crate::{BlobInfo, BlobInfoStream, BlobStore, ByteStream, Result, StorageError};

/// Chunks in flight between the request body and the writer / hasher threads (hyper hands
/// over up to ~400 KiB per chunk, so this bounds a session's queued bytes to a few MiB).
const PIPELINE_DEPTH: usize = 4;
/// Reads at least this long are served from a memory map (no copy into user space).
const MMAP_MIN: u64 = 1 << 20;
/// Bytes handed to the HTTP layer per step of a mapped read.
const MMAP_CHUNK: usize = 16 << 20;
/// How far ahead of the chunk being sent a mapped read asks for readahead.
const READ_AHEAD: usize = 64 << 20;
/// Read buffer for serving small blobs.
const READ_CHUNK: usize = 1 << 20;
/// Listed blobs queued between the directory walk and its consumer.
const LIST_DEPTH: usize = 256;

/// Incremental hash state of one upload session, valid while `hashed` equals the file size.
struct SessionState {
    hasher: Option<Hasher>,
    hashed: u64,
}

/// Filesystem blob store rooted at one directory.
pub struct FsBlobStore {
    root: PathBuf,
    sessions: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<SessionState>>>>,
    max_upload: Option<u64>,
}

impl FsBlobStore {
    /// Open (creating if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore> {
        let root = root.into();
        for dir in ["blobs", "uploads", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Temporary files belong to writes that never finished.
        for entry in std::fs::read_dir(root.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(FsBlobStore {
            root,
            sessions: parking_lot::Mutex::new(HashMap::new()),
            max_upload: None,
        })
    }

    /// Ids of the upload sessions that have data on disk.
    pub fn upload_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(self.root.join("uploads"))? {
            if let Some(name) = entry?.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Refuse uploads larger than `max` bytes.
    pub fn with_max_upload(mut self, max: Option<u64>) -> FsBlobStore {
        self.max_upload = max;
        self
    }

    /// The path of a committed blob.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        Ok(self.root.join("uploads").join(id))
    }

    fn session(&self, id: &str) -> Arc<tokio::sync::Mutex<SessionState>> {
        self.sessions
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(SessionState {
                    hasher: Some(Algorithm::Sha256.hasher()),
                    hashed: 0,
                }))
            })
            .clone()
    }

    fn forget_session(&self, id: &str) {
        self.sessions.lock().remove(id);
    }
}

fn not_found_as<T>(e: std::io::Error, err: impl FnOnce() -> StorageError) -> Result<T> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Err(err())
    } else {
        Err(StorageError::Io(e))
    }
}

/// Hash a file from the start with `algorithm`.
fn hash_file(path: &Path, algorithm: Algorithm) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// Map `len` bytes of a committed blob from `offset`.
///
/// Safe because committed blobs are immutable: they are only ever replaced by `rename` or
/// unlinked, neither of which changes the mapped inode, and never truncated.
fn map_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    // SAFETY: see above; the file is never modified in place while mapped.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len as usize)
            .map(&file)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Bytes::from_owner(map))
}

/// Stream a mapped range in chunks, faulting each chunk's pages in on a blocking thread so
/// that disk reads never stall the async workers.
fn mapped_stream(bytes: Bytes) -> ByteStream {
    Box::pin(futures::stream::unfold(0usize, move |pos| {
        let bytes = bytes.clone();
        async move {
            if pos >= bytes.len() {
                return None;
            }
            let end = (pos + MMAP_CHUNK).min(bytes.len());
            let chunk = bytes.slice(pos..end);
            let faulted = chunk.clone();
            // Keep the disk reading READ_AHEAD bytes past this chunk while it is sent: the
            // whole window on the first step, then only the part that just came into it.
            let ahead_from = if pos == 0 {
                end
            } else {
                end + READ_AHEAD - MMAP_CHUNK
            };
            let ahead_to = (end + READ_AHEAD).min(bytes.len());
            let ahead = bytes.slice(ahead_from.min(ahead_to)..ahead_to);
            // Pages already in memory are cheapest faulted in by the socket copy itself; pages
            // that need the disk are read here, off the async workers.
            let (need_ahead, need_now) = (!resident(&ahead), !resident(&faulted));
            if need_ahead || need_now {
                let _ = tokio::task::spawn_blocking(move || {
                    if need_ahead {
                        advise(&ahead, libc::MADV_WILLNEED);
                    }
                    if need_now {
                        populate(&faulted);
                    }
                })
                .await;
            }
            Some((Ok(chunk), end))
        }
    }))
}

/// `madvise` a mapped slice (widened to page boundaries). Returns whether the kernel agreed.
fn advise(data: &[u8], advice: libc::c_int) -> bool {
    const PAGE: usize = 4096;
    if data.is_empty() {
        return true;
    }
    let start = data.as_ptr() as usize;
    let aligned = start & !(PAGE - 1);
    let len = data.len() + (start - aligned);
    // SAFETY: the range lies within a live mapping owned by `data`'s Bytes; these advices do
    // not change its contents.
    unsafe { libc::madvise(aligned as *mut libc::c_void, len, advice) == 0 }
}

/// Whether every page of a mapped slice is in the page cache (`mincore`).
fn resident(data: &[u8]) -> bool {
    const PAGE: usize = 4096;
    if data.is_empty() {
        return true;
    }
    let start = data.as_ptr() as usize;
    let aligned = start & !(PAGE - 1);
    let len = data.len() + (start - aligned);
    let mut vec = vec![0u8; len.div_ceil(PAGE)];
    // SAFETY: the range lies within a live mapping; vec has one byte per page of it.
    let rc = unsafe { libc::mincore(aligned as *mut libc::c_void, len, vec.as_mut_ptr()) };
    rc == 0 && vec.iter().all(|b| b & 1 == 1)
}

/// Bring a mapped slice's pages into memory (`MADV_POPULATE_READ`, else touch each page).
fn populate(data: &[u8]) {
    const PAGE: usize = 4096;
    if !advise(data, libc::MADV_POPULATE_READ) {
        let mut sum = 0u8;
        for i in (0..data.len()).step_by(PAGE) {
            // SAFETY: i is in bounds; a volatile read keeps the access.
            sum ^= unsafe { std::ptr::read_volatile(data.as_ptr().add(i)) };
        }
        std::hint::black_box(sum);
    }
}

/// fsync a directory so a rename inside it is durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Write a file atomically: temp file in `tmp`, fsync, rename, fsync the directory.
fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_dir.join(uuid::Uuid::new_v4().to_string());
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        let parent = dest.parent().expect("blob paths have parents");
        std::fs::create_dir_all(parent)?;
        std::fs::rename(&tmp, dest)?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Walk `blobs/<algorithm>/<xx>/<hex>` and send every well-named file. Stops early when
/// the receiver is gone.
fn walk_blobs(blobs: &Path, tx: &mpsc::Sender<Result<BlobInfo>>) -> std::io::Result<()> {
    fn read(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
        match std::fs::read_dir(dir) {
            Ok(rd) => rd.collect(),
            // A prefix directory may be empty and gone; nothing to list.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    // Subdirectories only (stray files at the upper levels are not blobs).
    let read_dirs = |dir: &Path| -> std::io::Result<Vec<std::fs::DirEntry>> {
        Ok(read(dir)?
            .into_iter()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .collect())
    };
    for alg_dir in read_dirs(blobs)? {
        let Some(alg) = alg_dir.file_name().to_str().map(str::to_string) else {
            continue;
        };
        for prefix in read_dirs(&alg_dir.path())? {
            for file in read(&prefix.path())? {
                let Some(hex) = file.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
                    continue;
                };
                // Only where `blob_path` puts it (anything else is not this store's).
                if prefix.file_name().to_str() != hex.get(..2) {
                    continue;
                }
                let meta = match file.metadata() {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    // Deleted since the directory was read.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let info = BlobInfo {
                    digest,
                    size: meta.len(),
                    modified: meta.modified()?,
                };
                if tx.blocking_send(Ok(info)).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// A stream over a channel's items.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking storage task panicked")
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, digest: &Digest, offset: u64, len: u64) -> Result<ByteStream> {
        if len >= MMAP_MIN {
            let path = self.blob_path(digest);
            return match blocking(move || map_range(&path, offset, len)).await {
                Ok(bytes) => Ok(mapped_stream(bytes)),
                Err(e) => not_found_as(e, || StorageError::BlobUnknown(digest.clone())),
            };
        }
        let mut file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(f) => f,
            Err(e) => return not_found_as(e, || StorageError::BlobUnknown(digest.clone())),
        };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).await?;
        }
        let reader = tokio::io::AsyncReadExt::take(file, len);
        Ok(Box::pin(ReaderStream::with_capacity(reader, READ_CHUNK)))
    }

    async fn put_bytes(&self, digest: &Digest, data: Bytes) -> Result<()> {
        let dest = self.blob_path(digest);
        let tmp = self.root.join("tmp");
        blocking(move || write_atomic(&tmp, &dest, &data)).await?;
        Ok(())
    }

    async fn get_bytes(&self, digest: &Digest) -> Result<Bytes> {
        match tokio::fs::read(self.blob_path(digest)).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) => not_found_as(e, || StorageError::BlobUnknown(digest.clone())),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(()),
            Err(e) => not_found_as(e, || StorageError::BlobUnknown(digest.clone())),
        }
    }

    async fn create_upload(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        let uploads = self.root.join("uploads");
        blocking(move || {
            std::fs::File::create_new(&path)?.sync_all()?;
            sync_dir(&uploads)
        })
        .await?;
        Ok(())
    }

    async fn upload_size(&self, id: &str) -> Result<Option<u64>> {
        let path = self.upload_path(id)?;
        match tokio::fs::metadata(path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn append_upload(&self, id: &str, at: Option<u64>, mut body: ByteStream) -> Result<u64> {
        let path = self.upload_path(id)?;
        let session = self.session(id);
        let mut state = session.lock().await;
        let start = match tokio::fs::metadata(&path).await.map(|m| m.len()) {
            Ok(v) => v,
            Err(e) => {
                drop(state);
                self.forget_session(id);
                return not_found_as(e, || StorageError::UploadUnknown(id.to_string()));
            }
        };
        if let Some(at) = at
            && at != start
        {
            return Err(StorageError::OutOfOrder {
                have: start,
                got: at,
            });
        }
        // The incremental hash continues only if it covers exactly the bytes on disk
        // (after a restart it does not; the commit then hashes the file again).
        let hasher = match state.hasher.take() {
            Some(h) if state.hashed == start => Some(h),
            _ => None,
        };

        let (wtx, mut wrx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut out = SequentialWriter::open(&path, start)?;
            while let Some(chunk) = wrx.blocking_recv() {
                out.write(&chunk)?;
            }
            Ok(out.finish()? - start)
        });
        let (htx, hash_task) = match hasher {
            Some(mut h) => {
                let (htx, mut hrx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
                let task = tokio::task::spawn_blocking(move || {
                    while let Some(chunk) = hrx.blocking_recv() {
                        h.update(&chunk);
                    }
                    h
                });
                (Some(htx), Some(task))
            }
            None => (None, None),
        };

        let mut received = 0u64;
        let mut failure: Option<StorageError> = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if let Some(max) = self.max_upload
                        && start + received > max
                    {
                        failure = Some(StorageError::TooLarge(max));
                        break;
                    }
                    if let Some(htx) = &htx
                        && htx.send(chunk.clone()).await.is_err()
                    {
                        break;
                    }
                    if wtx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    failure = Some(StorageError::Body(e));
                    break;
                }
            }
        }
        drop(wtx);
        drop(htx);
        let written = writer.await.expect("writer task panicked");
        let hasher = match hash_task {
            Some(t) => Some(t.await.expect("hasher task panicked")),
            None => None,
        };
        match written {
            Ok(n) => {
                if hasher.is_some() && failure.is_none() {
                    state.hashed = start + n;
                    state.hasher = hasher;
                } else if hasher.is_some() && matches!(failure, Some(StorageError::Body(_))) {
                    // Every received chunk reached both the writer and the hasher.
                    state.hashed = start + n;
                    state.hasher = hasher;
                }
                match failure {
                    Some(e) => Err(e),
                    None => Ok(start + n),
                }
            }
            Err(e) => Err(StorageError::Io(e)),
        }
    }

    async fn commit_upload(&self, id: &str, digest: &Digest) -> Result<u64> {
        let path = self.upload_path(id)?;
        let session = self.session(id);
        let state = session.lock().await;
        let len = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) => {
                drop(state);
                self.forget_session(id);
                return not_found_as(e, || StorageError::UploadUnknown(id.to_string()));
            }
        };
        let computed = match &state.hasher {
            Some(h) if state.hashed == len && h.algorithm() == digest.algorithm() => {
                h.clone().finish()
            }
            _ => {
                let p = path.clone();
                let alg = digest.algorithm();
                blocking(move || hash_file(&p, alg)).await?
            }
        };
        if &computed != digest {
            let _ = tokio::fs::remove_file(&path).await;
            drop(state);
            self.forget_session(id);
            return Err(StorageError::DigestMismatch {
                expected: digest.clone(),
                computed,
            });
        }
        let dest = self.blob_path(digest);
        blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&path)?.sync_all()?;
            let parent = dest.parent().expect("blob paths have parents");
            std::fs::create_dir_all(parent)?;
            std::fs::rename(&path, &dest)?;
            sync_dir(parent)
        })
        .await?;
        drop(state);
        self.forget_session(id);
        Ok(len)
    }

    async fn cancel_upload(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        let session = self.session(id);
        let state = session.lock().await;
        let removed = tokio::fs::remove_file(&path).await;
        drop(state);
        self.forget_session(id);
        match removed {
            Ok(()) => Ok(()),
            Err(e) => not_found_as(e, || StorageError::UploadUnknown(id.to_string())),
        }
    }

    fn list_blobs(&self) -> BlobInfoStream {
        let blobs = self.root.join("blobs");
        let (tx, rx) = mpsc::channel::<Result<BlobInfo>>(LIST_DEPTH);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = walk_blobs(&blobs, &tx) {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        Box::pin(tokio_stream_from(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures::stream::iter(
            parts.into_iter().map(|p| Ok(Bytes::from_static(p))),
        ))
    }

    #[tokio::test]
    async fn chunked_upload_commits_verified_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        store.create_upload("u1").await.unwrap();
        assert_eq!(
            store
                .append_upload("u1", Some(0), body(vec![b"hel", b"lo"]))
                .await
                .unwrap(),
            5
        );
        assert!(matches!(
            store.append_upload("u1", Some(3), body(vec![b"x"])).await,
            Err(StorageError::OutOfOrder { have: 5, got: 3 })
        ));
        assert_eq!(
            store
                .append_upload("u1", None, body(vec![b" world"]))
                .await
                .unwrap(),
            11
        );
        let digest = Digest::sha256_of(b"hello world");
        assert_eq!(store.commit_upload("u1", &digest).await.unwrap(), 11);
        assert_eq!(store.stat(&digest).await.unwrap(), Some(11));
        assert_eq!(&store.get_bytes(&digest).await.unwrap()[..], b"hello world");
        assert_eq!(store.upload_size("u1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn wrong_digest_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        store.create_upload("u2").await.unwrap();
        store
            .append_upload("u2", None, body(vec![b"abc"]))
            .await
            .unwrap();
        let claimed = Digest::sha256_of(b"abd");
        assert!(matches!(
            store.commit_upload("u2", &claimed).await,
            Err(StorageError::DigestMismatch { .. })
        ));
        assert_eq!(store.stat(&claimed).await.unwrap(), None);
        assert_eq!(store.upload_size("u2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn resumes_after_restart_and_verifies_sha512() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FsBlobStore::open(dir.path()).unwrap();
            store.create_upload("u3").await.unwrap();
            store
                .append_upload("u3", None, body(vec![b"first-"]))
                .await
                .unwrap();
        }
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.upload_size("u3").await.unwrap(), Some(6));
        store
            .append_upload("u3", Some(6), body(vec![b"second"]))
            .await
            .unwrap();
        let digest = Digest::of(Algorithm::Sha512, b"first-second");
        assert_eq!(store.commit_upload("u3", &digest).await.unwrap(), 12);
        let mut s = store.read(&digest, 6, 3).await.unwrap();
        let mut got = Vec::new();
        while let Some(b) = s.next().await {
            got.extend_from_slice(&b.unwrap());
        }
        assert_eq!(got, b"sec");
    }

    #[tokio::test]
    async fn lists_committed_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let a = Digest::sha256_of(b"manifest");
        store
            .put_bytes(&a, Bytes::from_static(b"manifest"))
            .await
            .unwrap();
        store.create_upload("u4").await.unwrap();
        store
            .append_upload("u4", None, body(vec![b"layer!"]))
            .await
            .unwrap();
        let b = Digest::of(Algorithm::Sha512, b"layer!");
        store.commit_upload("u4", &b).await.unwrap();
        store.create_upload("u5").await.unwrap(); // in progress: not a blob
        std::fs::write(dir.path().join("blobs/sha256/stray"), b"x").unwrap();
        std::fs::write(
            dir.path()
                .join(format!("blobs/sha256/{}/junk", &a.hex()[..2])),
            b"x",
        )
        .unwrap();
        let mut listed: Vec<(Digest, u64)> = store
            .list_blobs()
            .map(|r| {
                let info = r.unwrap();
                assert!(info.modified <= std::time::SystemTime::now());
                (info.digest, info.size)
            })
            .collect()
            .await;
        listed.sort();
        let mut want = vec![(a, 8), (b, 6)];
        want.sort();
        assert_eq!(listed, want);
    }

    #[tokio::test]
    async fn hostile_session_ids_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        for id in ["../x", "a/b", "", "..", "a.b"] {
            assert!(matches!(
                store.create_upload(id).await,
                Err(StorageError::UploadUnknown(_))
            ));
        }
    }
}
