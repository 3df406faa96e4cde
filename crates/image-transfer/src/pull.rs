//! Pull: registry → local store.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use image_store::ImageStore;
use oci_client::{Platform, Reference, RegistryClient};
use oci_core::{Descriptor, ParsedManifest};
use tokio::sync::mpsc;

use crate::progress::{Progress, Task};
use crate::{Result, TransferError, short};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Platform to take from an index.
    pub platform: Platform,
    /// Blobs downloaded at once.
    pub concurrency: usize,
    /// Retries per blob after the first attempt.
    pub max_retries: u32,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            concurrency: 4,
            max_retries: 3,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The name the image has in the local store.
    pub name: String,
    /// Descriptor of the stored image manifest.
    pub manifest: Descriptor,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Blobs already in the store.
    pub already_present: usize,
    /// Blobs in the image (config and layers).
    pub blobs: usize,
}

/// Pull `r` into the store and name it `r` there.
pub async fn pull(
    client: &RegistryClient,
    store: &Arc<ImageStore>,
    r: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let (mut body, mut media_type, mut digest) = client.get_manifest(r).await?;
    let mut parsed = ParsedManifest::parse(&body, Some(&media_type))
        .map_err(|e| TransferError::Manifest(format!("{r}: {e}")))?;
    if parsed.is_index() {
        let chosen = opts.platform.select(&parsed.manifests).ok_or_else(|| {
            TransferError::Client(oci_client::ClientError::NoPlatform(
                opts.platform.to_string(),
            ))
        })?;
        progress.message(&format!(
            "{r}: index resolved to {} for {}",
            short(&chosen.digest),
            opts.platform
        ));
        (body, media_type, digest) = client
            .get_manifest(&r.with_digest(chosen.digest.clone()))
            .await?;
        parsed = ParsedManifest::parse(&body, Some(&media_type))
            .map_err(|e| TransferError::Manifest(format!("{r}: {e}")))?;
        if parsed.is_index() {
            return Err(TransferError::Manifest(format!("{r}: nested index")));
        }
    }
    let blobs: Vec<Descriptor> = parsed.required_blobs().cloned().collect();
    let present = blobs.iter().filter(|d| store.has_blob(&d.digest)).count();
    let results: Vec<u64> = futures::stream::iter(blobs.iter().cloned())
        .map(|desc| {
            let task = progress.begin(&short(&desc.digest), desc.size);
            fetch_with_retries(client, store, r, desc, opts.max_retries, task)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await?;
    let stored = store.put_blob(&body)?;
    debug_assert_eq!(stored, digest);
    let manifest = Descriptor {
        media_type,
        digest,
        size: body.len() as u64,
        urls: None,
        annotations: None,
        artifact_type: None,
        platform: None,
    };
    let name = r.to_string();
    store.set_ref(&name, manifest.clone())?;
    Ok(Pulled {
        name,
        manifest,
        downloaded: results.iter().sum(),
        already_present: present,
        blobs: blobs.len(),
    })
}

async fn fetch_with_retries(
    client: &RegistryClient,
    store: &Arc<ImageStore>,
    r: &Reference,
    desc: Descriptor,
    retries: u32,
    task: Arc<dyn Task>,
) -> Result<u64> {
    if store.has_blob(&desc.digest) {
        task.done("exists");
        return Ok(0);
    }
    let mut attempt = 0;
    loop {
        match fetch_blob(client, store, r, &desc, &*task).await {
            Ok(n) => {
                task.done("done");
                return Ok(n);
            }
            Err(e) if e.is_retryable() && attempt < retries => {
                attempt += 1;
                tracing::warn!(blob = %desc.digest, error = %e, attempt, "download failed; retrying");
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

enum Chunk {
    Data(Bytes),
    Commit,
}

/// Download one blob into the store. Dropped connections resume with `Range` from the bytes
/// already written; the store verifies the digest before the blob becomes visible.
async fn fetch_blob(
    client: &RegistryClient,
    store: &Arc<ImageStore>,
    r: &Reference,
    desc: &Descriptor,
    task: &dyn Task,
) -> Result<u64> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(16);
    let st = store.clone();
    let digest = desc.digest.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut w = st.blob_writer(&digest)?;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Chunk::Data(b) => w.write_all(&b).map_err(|source| TransferError::Io {
                    context: format!("writing blob {digest}"),
                    source,
                })?,
                Chunk::Commit => {
                    w.commit()?;
                    return Ok(());
                }
            }
        }
        Err(TransferError::Io {
            context: format!("download of {digest}"),
            source: std::io::Error::other("interrupted"),
        })
    });
    let mut received = 0u64;
    let mut resumes = 0;
    let outcome: Result<()> = async {
        loop {
            let (resp, partial) = client.get_blob(r, &desc.digest, received).await?;
            if received > 0 && !partial {
                return Err(TransferError::Io {
                    context: format!("resuming {}", desc.digest),
                    source: std::io::Error::other("the registry ignored Range; starting over"),
                });
            }
            let mut stream = resp.bytes_stream();
            let mut failed = None;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(b) => {
                        received += b.len() as u64;
                        if received > desc.size {
                            return Err(TransferError::Manifest(format!(
                                "blob {} is larger than the {} bytes its descriptor declares",
                                desc.digest, desc.size
                            )));
                        }
                        task.advance(b.len() as u64);
                        if tx.send(Chunk::Data(b)).await.is_err() {
                            return Ok(()); // the writer failed; its error is reported below
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    let _ = tx.send(Chunk::Commit).await;
                    return Ok(());
                }
                Some(e) if resumes < 5 && received > 0 => {
                    resumes += 1;
                    tracing::warn!(blob = %desc.digest, error = %e, at = received, "connection dropped; resuming");
                }
                Some(source) => {
                    return Err(TransferError::Client(oci_client::ClientError::Http {
                        context: format!("downloading {}", desc.digest),
                        source,
                    }));
                }
            }
        }
    }
    .await;
    drop(tx);
    let written = writer.await.expect("blob writer thread panicked");
    outcome?;
    written?;
    Ok(received)
}
