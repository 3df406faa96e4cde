//! What a tag points to: the manifest, its size with config and layers, and what its
//! config says (created, architecture, os, layer count); per-platform entries for an index.

use std::collections::HashSet;

use bytes::BytesMut;
use futures::StreamExt;
use oci_core::manifest::is_index;
use oci_core::{Descriptor, Digest, ParsedManifest};
use registry_api::AppState;
use registry_api::error::{ApiError, ApiResult, ErrorCode};
use registry_meta::TagQuery;
use serde::Serialize;
use utoipa::ToSchema;

use crate::images::rfc3339;

/// Largest config blob read for its fields, in bytes.
pub const MAX_CONFIG_SIZE: u64 = 4 << 20;

/// Config media types whose JSON carries `created`, `architecture` and `os`.
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// `GET /api/v1/registry/tags/{name}:{tag}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagDetail {
    /// Repository name.
    pub repository: String,
    /// Tag.
    pub tag: String,
    /// Digest of the manifest.
    pub digest: String,
    /// Media type of the manifest.
    pub media_type: String,
    /// Bytes of the manifest alone.
    pub manifest_size: u64,
    /// Bytes of the manifest, its config and layers; for an index, the index plus the
    /// distinct manifests, configs and layers of its entries.
    pub size: u64,
    /// When the tag was last pointed, RFC 3339.
    pub updated: String,
    /// `created` of the image config (image manifests).
    pub created: Option<String>,
    /// `architecture` of the image config (image manifests).
    pub architecture: Option<String>,
    /// `os` of the image config (image manifests).
    pub os: Option<String>,
    /// `variant` of the image config, when set.
    pub variant: Option<String>,
    /// Number of layers (image manifests).
    pub layer_count: Option<usize>,
    /// One entry per manifest of an index (absent for image manifests).
    pub platforms: Option<Vec<PlatformEntry>>,
    /// Manifests whose subject is this one (signatures, SBOMs...).
    pub referrers: Vec<ReferrerEntry>,
    /// The manifest JSON; `null` for a manifest nested deeper than readers allow (one
    /// stored before the registry refused such manifests at PUT).
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

/// One entry of an index.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlatformEntry {
    /// Digest of the entry's manifest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// `os` (from the index entry's platform, else the config).
    pub os: Option<String>,
    /// `architecture` (from the index entry's platform, else the config).
    pub architecture: Option<String>,
    /// `variant`, when set.
    pub variant: Option<String>,
    /// Bytes of the entry's manifest, config and layers.
    pub size: u64,
    /// `created` of its config.
    pub created: Option<String>,
    /// Number of layers.
    pub layer_count: Option<usize>,
}

/// A manifest referring to the tagged one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReferrerEntry {
    /// Digest of the referrer.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its artifact type.
    pub artifact_type: Option<String>,
    /// Its size in bytes.
    pub size: u64,
}

/// What an image manifest and its config say.
#[derive(Debug, Default)]
struct ImageFacts {
    created: Option<String>,
    architecture: Option<String>,
    os: Option<String>,
    variant: Option<String>,
    layer_count: Option<usize>,
    /// Config and layers.
    blobs: Vec<(Digest, u64)>,
}

fn corrupt(what: String) -> ApiError {
    ApiError::new(ErrorCode::Unknown, what)
}

/// A stored manifest's bytes, checked against its digest.
async fn manifest_bytes(st: &AppState, digest: &Digest) -> ApiResult<bytes::Bytes> {
    let body = st.registry.blobs().get_bytes(digest).await?;
    if &Digest::of(digest.algorithm(), &body) != digest {
        return Err(corrupt(format!(
            "stored manifest {digest} does not match its digest"
        )));
    }
    Ok(body)
}

/// Read an image config blob (at most [`MAX_CONFIG_SIZE`] bytes), verified, as JSON.
/// `None` when it is not an image config, too large, or not linked in the repository.
async fn read_config(
    st: &AppState,
    repo: &str,
    config: &Descriptor,
) -> ApiResult<Option<serde_json::Value>> {
    if !IMAGE_CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Ok(None);
    }
    let Some(size) = st.registry.meta().repo_blob(repo, &config.digest).await? else {
        return Ok(None);
    };
    if size > MAX_CONFIG_SIZE {
        tracing::debug!(digest = %config.digest, size, "config too large to inspect");
        return Ok(None);
    }
    let mut stream = st.registry.blobs().read(&config.digest, 0, size).await?;
    let mut buf = BytesMut::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| corrupt(format!("reading config {}: {e}", config.digest)))?;
        if (buf.len() + chunk.len()) as u64 > MAX_CONFIG_SIZE {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    if Digest::of(config.digest.algorithm(), &buf) != config.digest {
        return Err(corrupt(format!(
            "stored config {} does not match its digest",
            config.digest
        )));
    }
    Ok(oci_core::json::from_slice(&buf, MAX_CONFIG_SIZE as usize).ok())
}

fn text(v: Option<&serde_json::Value>, key: &str) -> Option<String> {
    v.and_then(|v| v.get(key))
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Facts of an image manifest (config fields, layers); an index or an unparseable manifest
/// yields empty facts.
async fn image_facts(
    st: &AppState,
    repo: &str,
    body: &[u8],
    media_type: &str,
) -> ApiResult<ImageFacts> {
    let Ok(parsed) = ParsedManifest::parse(body, Some(media_type)) else {
        return Ok(ImageFacts::default());
    };
    if parsed.is_index() {
        return Ok(ImageFacts::default());
    }
    let mut facts = ImageFacts {
        layer_count: Some(parsed.layers.len()),
        ..ImageFacts::default()
    };
    if let Some(config) = &parsed.config {
        facts.blobs.push((config.digest.clone(), config.size));
        let json = read_config(st, repo, config).await?;
        facts.created = text(json.as_ref(), "created");
        facts.architecture = text(json.as_ref(), "architecture");
        facts.os = text(json.as_ref(), "os");
        facts.variant = text(json.as_ref(), "variant");
    }
    facts
        .blobs
        .extend(parsed.layers.iter().map(|l| (l.digest.clone(), l.size)));
    Ok(facts)
}

/// Everything the management API tells about `repo:tag`; `None` when the tag is unknown.
pub async fn inspect_tag(st: &AppState, repo: &str, tag: &str) -> ApiResult<Option<TagDetail>> {
    let Some(summary) = st
        .registry
        .meta()
        .tag_summaries(&TagQuery {
            repository: Some(repo),
            tag: Some(tag),
            contains: None,
            after: None,
            limit: 1,
        })
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let body = manifest_bytes(st, &summary.digest).await?;
    // Parsed under the bounds the PUT applies; a manifest stored before they held (deeper
    // than a reader can keep) is described without its body rather than failing the call.
    let manifest = match oci_core::json::from_slice::<serde_json::Value>(&body, usize::MAX) {
        Ok(v) => v,
        Err(oci_core::json::JsonError::Syntax(e)) => {
            return Err(corrupt(format!(
                "stored manifest {} is not JSON: {e}",
                summary.digest
            )));
        }
        Err(e) => {
            tracing::warn!(digest = %summary.digest, error = %e, "stored manifest not shown");
            serde_json::Value::Null
        }
    };
    let mut detail = TagDetail {
        repository: repo.to_string(),
        tag: tag.to_string(),
        digest: summary.digest.to_string(),
        media_type: summary.media_type.clone(),
        manifest_size: body.len() as u64,
        size: body.len() as u64,
        updated: rfc3339(summary.updated_at),
        created: None,
        architecture: None,
        os: None,
        variant: None,
        layer_count: None,
        platforms: None,
        referrers: Vec::new(),
        manifest,
    };
    // Distinct content counted once, whatever the number of entries sharing it.
    let mut counted: HashSet<Digest> = HashSet::from([summary.digest.clone()]);
    if is_index(&summary.media_type) {
        let parsed = ParsedManifest::parse(&body, Some(&summary.media_type))
            .map_err(|e| corrupt(format!("stored index {}: {e}", summary.digest)))?;
        let mut platforms = Vec::new();
        for child in &parsed.manifests {
            let Some(rec) = st.registry.meta().get_manifest(repo, &child.digest).await? else {
                continue;
            };
            let child_body = manifest_bytes(st, &rec.digest).await?;
            let facts = image_facts(st, repo, &child_body, &rec.media_type).await?;
            let platform = child.platform.as_ref();
            let mut size = child_body.len() as u64;
            if counted.insert(rec.digest.clone()) {
                detail.size += size;
            }
            for (d, s) in &facts.blobs {
                size += s;
                if counted.insert(d.clone()) {
                    detail.size += s;
                }
            }
            platforms.push(PlatformEntry {
                digest: rec.digest.to_string(),
                media_type: rec.media_type,
                os: platform
                    .map(|p| p.os.clone())
                    .filter(|s| !s.is_empty())
                    .or(facts.os),
                architecture: platform
                    .map(|p| p.architecture.clone())
                    .filter(|s| !s.is_empty())
                    .or(facts.architecture),
                variant: platform
                    .and_then(|p| p.variant.clone())
                    .filter(|s| !s.is_empty())
                    .or(facts.variant),
                size,
                created: facts.created,
                layer_count: facts.layer_count,
            });
        }
        detail.platforms = Some(platforms);
    } else {
        let facts = image_facts(st, repo, &body, &summary.media_type).await?;
        for (d, s) in &facts.blobs {
            if counted.insert(d.clone()) {
                detail.size += s;
            }
        }
        detail.created = facts.created;
        detail.architecture = facts.architecture;
        detail.os = facts.os;
        detail.variant = facts.variant;
        detail.layer_count = facts.layer_count;
    }
    detail.referrers = st
        .registry
        .meta()
        .referrers(repo, &summary.digest)
        .await?
        .into_iter()
        .map(|r| ReferrerEntry {
            digest: r.digest.to_string(),
            media_type: r.media_type,
            artifact_type: r.artifact_type,
            size: r.size,
        })
        .collect();
    Ok(Some(detail))
}
