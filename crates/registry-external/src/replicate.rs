//! Copying images between hyperregistry and an external registry: the manifest or index with
//! every platform, their blobs, and the referrers of each manifest.
//!
//! Push streams blobs from the local [`BlobStore`](registry_storage::BlobStore) to the remote
//! (skipping blobs it has, mounting ones already sent to another of its repositories). Pull
//! stores blobs and manifests through the local [`Repository`], with the checks of a client
//! push, so a pulled image is indistinguishable from a pushed one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::header;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::{ClientError, Reference};
use oci_core::{Digest, ParsedManifest};
use registry_core::{CoreError, Registry, Repository};
use serde::Serialize;

use crate::error::{ExternalError, Result};
use crate::remote::Remote;

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CopyStats {
    /// Manifests (image manifests, indexes, referrers) copied.
    pub manifests: usize,
    /// Blobs transferred.
    pub blobs_copied: usize,
    /// Blobs the destination already had in the repository.
    pub blobs_skipped: usize,
    /// Blobs linked without transfer (cross-repository mount).
    pub blobs_mounted: usize,
    /// Bytes transferred.
    pub bytes: u64,
}

/// Remote repositories known to hold a blob, per registry: where cross-repository mounts can
/// come from. Bounded; forgetting only costs an upload.
#[derive(Default)]
pub struct MountHints {
    inner: parking_lot::Mutex<HashMap<(String, Digest), String>>,
}

const MOUNT_HINTS_MAX: usize = 100_000;

impl MountHints {
    fn get(&self, registry: &str, digest: &Digest) -> Option<String> {
        self.inner
            .lock()
            .get(&(registry.to_string(), digest.clone()))
            .cloned()
    }

    fn put(&self, registry: &str, digest: &Digest, repo: &str) {
        let mut m = self.inner.lock();
        if m.len() >= MOUNT_HINTS_MAX {
            m.clear();
        }
        m.insert((registry.to_string(), digest.clone()), repo.to_string());
    }
}

/// A local manifest's digest, media type and bytes.
async fn local_manifest(repo: &Repository, reference: &str) -> Result<(Digest, String, Bytes)> {
    let parsed = registry_core::Reference::parse(reference)
        .map_err(|e| ExternalError::Invalid(format!("reference {reference:?}: {e}")))?;
    match repo.get_manifest(&parsed).await {
        Ok(m) => Ok((m.digest.clone(), m.media_type.clone(), m.body.clone())),
        Err(CoreError::ManifestUnknown { .. }) => Err(ExternalError::NotFound(format!(
            "no manifest {}:{reference} here",
            repo.name()
        ))),
        Err(e) => Err(e.into()),
    }
}

fn parse(body: &[u8], media_type: &str) -> Result<ParsedManifest> {
    ParsedManifest::parse(body, Some(media_type))
        .map_err(|e| ExternalError::Invalid(format!("manifest: {e}")))
}

/// Copies one local image to one remote repository.
struct Pusher<'a> {
    remote: &'a Remote,
    registry_key: &'a str,
    hints: &'a MountHints,
    source: Repository,
    target: Reference,
    stats: CopyStats,
    done: HashSet<Digest>,
}

impl Pusher<'_> {
    async fn blob(&mut self, digest: &Digest, size: u64) -> Result<()> {
        let client = &self.remote.client;
        if client
            .blob_size(&self.target, digest, true)
            .await?
            .is_some()
        {
            self.stats.blobs_skipped += 1;
            return Ok(());
        }
        if let Some(from) = self.hints.get(self.registry_key, digest)
            && from != self.target.repository
            && client.mount_blob(&self.target, digest, &from).await?
        {
            self.stats.blobs_mounted += 1;
            return Ok(());
        }
        let blobs = self.source.registry().blobs().clone();
        if blobs.stat(digest).await?.is_none() {
            return Err(ExternalError::NotFound(format!(
                "blob {digest} of {} is not stored here",
                self.source.name()
            )));
        }
        let session = client.start_upload(&self.target).await?;
        let d = digest.clone();
        let body = move || {
            let (blobs, d) = (blobs.clone(), d.clone());
            let stream = futures::stream::once(async move {
                blobs.read(&d, 0, size).await.map_err(std::io::Error::other)
            })
            .try_flatten();
            Ok(reqwest::Body::wrap_stream(stream))
        };
        client
            .finish_upload(&self.target, &session, digest, Some((size, &body)))
            .await?;
        self.hints
            .put(self.registry_key, digest, &self.target.repository);
        self.stats.blobs_copied += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// Push a manifest (children and blobs first), then its referrers.
    async fn manifest(
        &mut self,
        digest: Digest,
        media_type: String,
        body: Bytes,
        tag: Option<&str>,
    ) -> Result<()> {
        let parsed = parse(&body, &media_type)?;
        for child in &parsed.manifests {
            if self.done.contains(&child.digest) {
                continue;
            }
            let (d, mt, b) = local_manifest(&self.source, &child.digest.to_string()).await?;
            Box::pin(self.manifest(d, mt, b, None)).await?;
        }
        for blob in parsed.required_blobs() {
            self.blob(&blob.digest, blob.size).await?;
        }
        let target = match tag {
            Some(t) => self.target.with_tag(t),
            None => self.target.with_digest(digest.clone()),
        };
        self.remote
            .client
            .put_manifest(&target, &media_type, body.clone())
            .await?;
        self.done.insert(digest.clone());
        self.stats.manifests += 1;
        tracing::debug!(target = %target, digest = %digest, "manifest replicated");
        for referrer in self.source.referrers(&digest, None).await? {
            if self.done.contains(&referrer.digest) {
                continue;
            }
            let (_, _, b) = local_manifest(&self.source, &referrer.digest.to_string()).await?;
            Box::pin(self.manifest(referrer.digest, referrer.media_type, b, None)).await?;
        }
        Ok(())
    }
}

/// Push local `repo:reference` (tag or digest) to `target_repo` on the remote, with every
/// platform and referrer. `registry_key` names the remote for mount hints.
pub async fn push(
    reg: &Registry,
    remote: &Remote,
    registry_key: &str,
    hints: &MountHints,
    repo: &str,
    reference: &str,
    target_repo: &str,
) -> Result<(Digest, CopyStats)> {
    let source = reg.repository(repo)?;
    let (digest, media_type, body) = local_manifest(&source, reference).await?;
    let mut pusher = Pusher {
        remote,
        registry_key,
        hints,
        source,
        target: remote.reference(target_repo, "latest")?,
        stats: CopyStats::default(),
        done: HashSet::new(),
    };
    let tag = (!reference.contains(':')).then_some(reference);
    pusher
        .manifest(digest.clone(), media_type, body, tag)
        .await?;
    tracing::info!(repository = repo, reference, target = %pusher.target.name(), stats = ?pusher.stats, "image pushed to external registry");
    Ok((digest, pusher.stats))
}

/// Download a blob from `source` into `repo` (verified when committed; nothing is kept on
/// failure). Returns its size.
pub async fn fetch_blob(
    repo: &Repository,
    remote: &Remote,
    source: &Reference,
    digest: &Digest,
) -> Result<u64> {
    let (resp, _) = remote.client.get_blob(source, digest, 0).await?;
    let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
    Ok(repo.ingest_blob(digest, None, stream).await?)
}

/// Copies one remote image into one local repository.
struct Puller<'a> {
    remote: &'a Remote,
    source: Reference,
    target: Repository,
    stats: CopyStats,
    done: HashSet<Digest>,
}

impl Puller<'_> {
    async fn blob(&mut self, digest: &Digest) -> Result<()> {
        if self.target.blob_size(digest).await?.is_some() {
            self.stats.blobs_skipped += 1;
            return Ok(());
        }
        if self.target.link_stored_blob(digest).await? {
            self.stats.blobs_mounted += 1;
            return Ok(());
        }
        let size = fetch_blob(&self.target, self.remote, &self.source, digest).await?;
        self.stats.blobs_copied += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// Referrers of `digest` on the remote, through the referrers API; empty when the remote
    /// does not offer it.
    async fn remote_referrers(&self, digest: &Digest) -> Result<Vec<Digest>> {
        let r = self.source.with_digest(digest.clone());
        let url = format!(
            "{}/v2/{}/referrers/{digest}",
            self.remote.client.base_url(&r),
            r.repository
        );
        let scopes = [format!("repository:{}:pull", r.repository)];
        let resp = self
            .remote
            .client
            .send(&r, &scopes, "listing referrers", &|http| {
                Ok(http
                    .get(&url)
                    .header(header::ACCEPT, "application/vnd.oci.image.index.v1+json"))
            })
            .await?;
        if !resp.status().is_success() {
            tracing::debug!(status = %resp.status(), "the remote has no referrers API; referrers not copied");
            return Ok(Vec::new());
        }
        let v: serde_json::Value = resp.json().await.map_err(|source| ClientError::Http {
            context: "reading the referrers list".into(),
            source,
        })?;
        Ok(v["manifests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["digest"].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn manifest(
        &mut self,
        digest: Digest,
        media_type: String,
        body: Bytes,
        tag: Option<&str>,
    ) -> Result<()> {
        let parsed = parse(&body, &media_type)?;
        for child in &parsed.manifests {
            if self.done.contains(&child.digest) {
                continue;
            }
            let (b, mt, d) = self
                .remote
                .client
                .get_manifest(&self.source.with_digest(child.digest.clone()))
                .await?;
            Box::pin(self.manifest(d, mt, b, None)).await?;
        }
        for blob in parsed.required_blobs() {
            self.blob(&blob.digest).await?;
        }
        let reference = match tag {
            Some(t) => registry_core::Reference::Tag(t.to_string()),
            None => registry_core::Reference::Digest(digest.clone()),
        };
        self.target
            .put_manifest(&reference, &[], body, Some(&media_type))
            .await?;
        self.done.insert(digest.clone());
        self.stats.manifests += 1;
        for referrer in self.remote_referrers(&digest).await? {
            if self.done.contains(&referrer)
                || self.target.manifest_record(&referrer).await?.is_some()
            {
                continue;
            }
            let (b, mt, d) = self
                .remote
                .client
                .get_manifest(&self.source.with_digest(referrer))
                .await?;
            Box::pin(self.manifest(d, mt, b, None)).await?;
        }
        Ok(())
    }
}

/// Pull `repo:reference` from the remote into local `target_repo`, verifying every digest.
pub async fn pull(
    reg: &Registry,
    remote: &Remote,
    repo: &str,
    reference: &str,
    target_repo: &str,
) -> Result<(Digest, CopyStats)> {
    let target = reg.repository(target_repo).map_err(|e| match e {
        CoreError::NameInvalid(e) => ExternalError::Invalid(format!("target repository: {e}")),
        other => other.into(),
    })?;
    let source = remote.reference(&remote.source_repository(repo), reference)?;
    let (body, media_type, digest) = remote.client.get_manifest(&source).await?;
    let mut puller = Puller {
        remote,
        source,
        target,
        stats: CopyStats::default(),
        done: HashSet::new(),
    };
    let tag = (!reference.contains(':')).then_some(reference);
    puller
        .manifest(digest.clone(), media_type, body, tag)
        .await?;
    tracing::info!(source = %puller.source, target = target_repo, stats = ?puller.stats, "image pulled from external registry");
    Ok((digest, puller.stats))
}

/// Shared handle type for mount hints.
pub type SharedHints = Arc<MountHints>;
