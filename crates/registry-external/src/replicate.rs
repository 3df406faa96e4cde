//! Copying images between hyperregistry and an external registry: the manifest or index with
//! every platform, their blobs, and the referrers of each manifest.
//!
//! Push streams blobs from the local [`BlobStore`](registry_storage::BlobStore) to the remote
//! (skipping blobs it has, mounting ones already sent to another of its repositories). Pull
//! stores blobs through an upload session (verified on commit) and manifests through the /v2
//! API's own `manifests::put`, so a pulled image is indistinguishable from a pushed one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, header};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::{ClientError, Reference};
use oci_core::{Digest, ParsedManifest};
use registry_api::AppState;
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

/// A local manifest's media type and bytes.
async fn local_manifest(
    st: &AppState,
    repo: &str,
    reference: &str,
) -> Result<(Digest, String, Bytes)> {
    let record = if reference.contains(':') {
        let d: Digest = reference
            .parse()
            .map_err(|e| ExternalError::Invalid(format!("digest {reference:?}: {e}")))?;
        st.meta.get_manifest(repo, &d).await?
    } else {
        st.meta.resolve_tag(repo, reference).await?
    };
    let record = record
        .ok_or_else(|| ExternalError::NotFound(format!("no manifest {repo}:{reference} here")))?;
    let body = st.blobs.get_bytes(&record.digest).await?;
    Ok((record.digest, record.media_type, body))
}

fn parse(body: &[u8], media_type: &str) -> Result<ParsedManifest> {
    ParsedManifest::parse(body, Some(media_type))
        .map_err(|e| ExternalError::Invalid(format!("manifest: {e}")))
}

/// Copies one local image to one remote repository.
struct Pusher<'a> {
    st: &'a AppState,
    remote: &'a Remote,
    registry_key: &'a str,
    hints: &'a MountHints,
    source: &'a str,
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
        if self.st.blobs.stat(digest).await?.is_none() {
            return Err(ExternalError::NotFound(format!(
                "blob {digest} of {} is not stored here",
                self.source
            )));
        }
        let session = client.start_upload(&self.target).await?;
        let blobs = self.st.blobs.clone();
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
            let (d, mt, b) =
                local_manifest(self.st, self.source, &child.digest.to_string()).await?;
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
        for referrer in self.st.meta.referrers(self.source, &digest).await? {
            if self.done.contains(&referrer.digest) {
                continue;
            }
            let b = self.st.blobs.get_bytes(&referrer.digest).await?;
            Box::pin(self.manifest(referrer.digest, referrer.media_type, b, None)).await?;
        }
        Ok(())
    }
}

/// Push local `repo:reference` (tag or digest) to `target_repo` on the remote, with every
/// platform and referrer. `registry_key` names the remote for mount hints.
pub async fn push(
    st: &AppState,
    remote: &Remote,
    registry_key: &str,
    hints: &MountHints,
    repo: &str,
    reference: &str,
    target_repo: &str,
) -> Result<(Digest, CopyStats)> {
    let (digest, media_type, body) = local_manifest(st, repo, reference).await?;
    let mut pusher = Pusher {
        st,
        remote,
        registry_key,
        hints,
        source: repo,
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

/// Download a blob from `source` into the local blob store (verified when committed; nothing
/// is kept on failure) and link it into `repo`. Returns its size.
pub async fn fetch_blob(
    st: &AppState,
    remote: &Remote,
    source: &Reference,
    digest: &Digest,
    repo: &str,
) -> Result<u64> {
    let (resp, _) = remote.client.get_blob(source, digest, 0).await?;
    let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
    let id = format!("ext-{}", uuid::Uuid::new_v4().simple());
    st.blobs.create_upload(&id).await?;
    if let Err(e) = st.blobs.append_upload(&id, None, stream).await {
        let _ = st.blobs.cancel_upload(&id).await;
        return Err(e.into());
    }
    // Commit and link under the blob lock, as a client push does (see
    // `AppState::blob_lock`): garbage collection cannot sweep the digest in between.
    let _lock = match st.blob_lock(digest).await {
        Ok(lock) => lock,
        Err(e) => {
            let _ = st.blobs.cancel_upload(&id).await;
            return Err(e.into());
        }
    };
    let size = match st.blobs.commit_upload(&id, digest).await {
        Ok(size) => size,
        Err(e) => {
            let _ = st.blobs.cancel_upload(&id).await;
            return Err(e.into());
        }
    };
    st.meta.link_blob(repo, digest, size).await?;
    Ok(size)
}

/// Store a manifest into `repo` through the /v2 API's `PUT` handler (same checks, metadata
/// and cache invalidation as a client push).
pub async fn put_local_manifest(
    st: &AppState,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: Bytes,
) -> Result<()> {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v2/{repo}/manifests/{reference}"))
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .map_err(|e| ExternalError::Invalid(format!("building the request: {e}")))?;
    registry_api::manifests::put(st, repo, reference, req).await?;
    Ok(())
}

/// Copies one remote image into one local repository.
struct Puller<'a> {
    st: &'a AppState,
    remote: &'a Remote,
    source: Reference,
    target: &'a str,
    stats: CopyStats,
    done: HashSet<Digest>,
}

impl Puller<'_> {
    async fn blob(&mut self, digest: &Digest) -> Result<()> {
        if self.st.meta.repo_blob(self.target, digest).await?.is_some() {
            self.stats.blobs_skipped += 1;
            return Ok(());
        }
        if let Some(size) = self.st.meta.any_blob(digest).await?
            && self.st.blobs.stat(digest).await?.is_some()
        {
            let _lock = self.st.blob_lock(digest).await?;
            self.st.meta.link_blob(self.target, digest, size).await?;
            self.stats.blobs_mounted += 1;
            return Ok(());
        }
        let size = fetch_blob(self.st, self.remote, &self.source, digest, self.target).await?;
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
        let reference = tag.map_or_else(|| digest.to_string(), str::to_string);
        put_local_manifest(self.st, self.target, &reference, &media_type, body).await?;
        self.done.insert(digest.clone());
        self.stats.manifests += 1;
        for referrer in self.remote_referrers(&digest).await? {
            if self.done.contains(&referrer)
                || self
                    .st
                    .meta
                    .get_manifest(self.target, &referrer)
                    .await?
                    .is_some()
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
    st: &AppState,
    remote: &Remote,
    repo: &str,
    reference: &str,
    target_repo: &str,
) -> Result<(Digest, CopyStats)> {
    oci_core::validate_repository(target_repo)
        .map_err(|e| ExternalError::Invalid(format!("target repository: {e}")))?;
    let source = remote.reference(&remote.source_repository(repo), reference)?;
    let (body, media_type, digest) = remote.client.get_manifest(&source).await?;
    let mut puller = Puller {
        st,
        remote,
        source,
        target: target_repo,
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
