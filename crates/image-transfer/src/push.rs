//! Push: local store → registry.

use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use image_store::ImageStore;
use oci_client::{Reference, RegistryClient};
use oci_core::{Descriptor, Digest, ParsedManifest};
use tokio_util::io::ReaderStream;

use crate::progress::{Progress, Task};
use crate::{Result, TransferError, short};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs uploaded at once.
    pub concurrency: usize,
    /// Retries per blob after the first attempt.
    pub max_retries: u32,
    /// Blobs up to this size go in one request; larger ones in chunks.
    pub monolithic_max: u64,
    /// Chunk size of chunked uploads.
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            concurrency: 4,
            max_retries: 3,
            monolithic_max: 32 << 20,
            chunk_size: 64 << 20,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// Digest of the top-level manifest pushed.
    pub digest: Option<Digest>,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Blobs the registry already had.
    pub existing: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
}

enum Outcome {
    Uploaded(u64),
    Existed,
    Mounted,
}

/// Push the local image `local` (a store name or digest) to `target`.
pub async fn push(
    client: &RegistryClient,
    store: &Arc<ImageStore>,
    local: &str,
    target: &Reference,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Pushed> {
    let desc = store
        .resolve(local)?
        .ok_or_else(|| TransferError::NotFound(local.to_string()))?;
    let body = store.read_blob(&desc.digest, oci_client::client::MAX_MANIFEST_BYTES)?;
    let parsed = ParsedManifest::parse(&body, Some(&desc.media_type))
        .map_err(|e| TransferError::Manifest(format!("{local}: {e}")))?;
    let sources = mount_sources(store, target);
    let mut totals = Pushed::default();
    if parsed.is_index() {
        for child in &parsed.manifests {
            if !store.has_blob(&child.digest) {
                return Err(TransferError::MissingBlob(child.digest.clone()));
            }
            let child_body =
                store.read_blob(&child.digest, oci_client::client::MAX_MANIFEST_BYTES)?;
            let child_parsed = ParsedManifest::parse(&child_body, Some(&child.media_type))
                .map_err(|e| TransferError::Manifest(format!("{}: {e}", child.digest)))?;
            push_blobs(
                client,
                store,
                &child_parsed,
                target,
                &sources,
                opts,
                progress,
                &mut totals,
            )
            .await?;
            client
                .put_manifest(
                    &target.with_digest(child.digest.clone()),
                    &child.media_type,
                    Bytes::from(child_body),
                )
                .await?;
        }
    } else {
        push_blobs(
            client,
            store,
            &parsed,
            target,
            &sources,
            opts,
            progress,
            &mut totals,
        )
        .await?;
    }
    let digest = client
        .put_manifest(target, &desc.media_type, Bytes::from(body))
        .await?;
    totals.digest = Some(digest);
    Ok(totals)
}

/// Repositories on the target's registry that local images came from: mount candidates.
fn mount_sources(store: &ImageStore, target: &Reference) -> Vec<String> {
    let mut v: Vec<String> = store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, _)| name.parse::<Reference>().ok())
        .filter(|r| r.registry == target.registry && r.repository != target.repository)
        .map(|r| r.repository)
        .collect();
    v.sort();
    v.dedup();
    v.truncate(3);
    v
}

#[allow(clippy::too_many_arguments)]
async fn push_blobs(
    client: &RegistryClient,
    store: &Arc<ImageStore>,
    manifest: &ParsedManifest,
    target: &Reference,
    sources: &[String],
    opts: &PushOptions,
    progress: &dyn Progress,
    totals: &mut Pushed,
) -> Result<()> {
    let blobs: Vec<Descriptor> = manifest.required_blobs().cloned().collect();
    for d in &blobs {
        if !store.has_blob(&d.digest) {
            return Err(TransferError::MissingBlob(d.digest.clone()));
        }
    }
    let outcomes: Vec<Outcome> = futures::stream::iter(blobs)
        .map(|desc| {
            let task = progress.begin(&short(&desc.digest), desc.size);
            push_with_retries(client, store, target, desc, sources, opts, task)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await?;
    for o in outcomes {
        match o {
            Outcome::Uploaded(n) => totals.uploaded += n,
            Outcome::Existed => totals.existing += 1,
            Outcome::Mounted => totals.mounted += 1,
        }
    }
    Ok(())
}

async fn push_with_retries(
    client: &RegistryClient,
    store: &Arc<ImageStore>,
    target: &Reference,
    desc: Descriptor,
    sources: &[String],
    opts: &PushOptions,
    task: Arc<dyn Task>,
) -> Result<Outcome> {
    if client
        .blob_size(target, &desc.digest, true)
        .await?
        .is_some()
    {
        task.done("exists");
        return Ok(Outcome::Existed);
    }
    for from in sources {
        if client.mount_blob(target, &desc.digest, from).await? {
            task.done(&format!("mounted from {from}"));
            return Ok(Outcome::Mounted);
        }
    }
    let mut attempt = 0;
    loop {
        match upload(client, store, target, &desc, opts, &task).await {
            Ok(n) => {
                task.done("pushed");
                return Ok(Outcome::Uploaded(n));
            }
            Err(e) if e.is_retryable() && attempt < opts.max_retries => {
                attempt += 1;
                tracing::warn!(blob = %desc.digest, error = %e, attempt, "upload failed; retrying");
                task.reset(0);
                tokio::time::sleep(client.backoff(attempt)).await;
            }
            Err(e) => {
                task.fail(&e.to_string());
                return Err(e);
            }
        }
    }
}

/// A request body reading `len` bytes of a file from `offset`, counting progress.
fn file_body(
    path: &std::path::Path,
    offset: u64,
    len: u64,
    task: &Arc<dyn Task>,
) -> oci_client::Result<reqwest::Body> {
    let io = |source| oci_client::ClientError::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(f), len);
    let task = task.clone();
    let stream = ReaderStream::with_capacity(reader, 256 << 10)
        .inspect_ok(move |b| task.advance(b.len() as u64));
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Upload one blob: monolithic when small; otherwise chunks, resuming from the registry's
/// offset after a failed chunk.
async fn upload(
    client: &RegistryClient,
    store: &Arc<ImageStore>,
    target: &Reference,
    desc: &Descriptor,
    opts: &PushOptions,
    task: &Arc<dyn Task>,
) -> Result<u64> {
    let path = store.blob_path(&desc.digest);
    let size = desc.size;
    let counter = task;
    let mut session = client.start_upload(target).await?;
    if size <= opts.monolithic_max {
        let make = || file_body(&path, 0, size, counter);
        client
            .finish_upload(target, &session, &desc.digest, Some((size, &make)))
            .await?;
        return Ok(size);
    }
    let mut offset = 0u64;
    let mut failures = 0;
    while offset < size {
        let len = opts.chunk_size.min(size - offset);
        let make = || file_body(&path, offset, len, counter);
        match client
            .upload_chunk(target, &session, offset, len, &make)
            .await
        {
            Ok(next) => {
                session = next;
                offset += len;
            }
            // A cut connection, a busy registry, or a chunk the registry no longer expects
            // at this offset (part of a cut-off chunk arrived): ask where the session
            // stands and go on from there.
            Err(e)
                if (e.is_retryable()
                    || e.status() == Some(reqwest::StatusCode::RANGE_NOT_SATISFIABLE))
                    && failures < opts.max_retries + 2 =>
            {
                failures += 1;
                tokio::time::sleep(client.backoff(failures)).await;
                let have = client.upload_offset(target, &session).await?;
                tracing::warn!(blob = %desc.digest, error = %e, resume_at = have, "chunk failed; resuming");
                offset = have;
                task.reset(offset);
            }
            Err(e) => return Err(e.into()),
        }
    }
    client
        .finish_upload(target, &session, &desc.digest, None)
        .await?;
    Ok(size)
}
