//! Media types and the parts of image manifests and indexes a registry must check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (signed), refused.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema 1 (unsigned), refused.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// OCI empty JSON descriptor media type.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Every manifest media type the registry stores.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Whether a layer media type marks a non-distributable (foreign) layer, which need not exist.
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
}

/// Whether a media type is an index (a list of manifests).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Alternate download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Arbitrary annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Artifact type, on referrer descriptors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform, on index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<crate::Platform>,
}

/// Why a manifest body was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A structural rule broken.
    #[error("{0}")]
    Invalid(String),
    /// A media type the registry does not store.
    #[error("unsupported manifest media type {0:?}")]
    Unsupported(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// The registry's view of a manifest: its type and what it points to.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// Effective media type (from the body, else the `Content-Type`).
    pub media_type: String,
    /// Config descriptor (image manifests).
    pub config: Option<Descriptor>,
    /// Layer descriptors (image manifests).
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    pub subject: Option<Descriptor>,
    /// Declared artifact type.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// Parse and check a manifest body against its `Content-Type`.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
        crate::json::check_depth(body).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        let raw: RawManifest = serde_json::from_slice(body)?;
        if raw.schema_version != Some(2) {
            if raw.schema_version == Some(1) {
                return Err(ManifestError::Unsupported(DOCKER_SCHEMA1.to_string()));
            }
            return Err(ManifestError::Invalid("schemaVersion must be 2".into()));
        }
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        let media_type = match (&raw.media_type, content_type) {
            (Some(m), Some(c)) if m != c => {
                return Err(ManifestError::Invalid(format!(
                    "mediaType {m:?} does not match Content-Type {c:?}"
                )));
            }
            (Some(m), _) => m.clone(),
            (None, Some(c)) if MANIFEST_MEDIA_TYPES.contains(&c) => c.to_string(),
            (None, _) if raw.manifests.is_some() => OCI_INDEX.to_string(),
            (None, _) if raw.config.is_some() => OCI_MANIFEST.to_string(),
            (None, Some(c)) => return Err(ManifestError::Unsupported(c.to_string())),
            (None, None) => return Err(ManifestError::Invalid("no mediaType".into())),
        };
        if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(ManifestError::Unsupported(media_type));
        }
        let parsed = ParsedManifest {
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
            media_type,
        };
        if is_index(&parsed.media_type) {
            if parsed.config.is_some() || !parsed.layers.is_empty() {
                return Err(ManifestError::Invalid(
                    "an index has no config or layers".into(),
                ));
            }
        } else {
            if parsed.config.is_none() {
                return Err(ManifestError::Invalid(
                    "an image manifest needs a config".into(),
                ));
            }
            if !parsed.manifests.is_empty() {
                return Err(ManifestError::Invalid(
                    "an image manifest has no manifests list".into(),
                ));
            }
            if parsed.media_type == DOCKER_MANIFEST && parsed.layers.is_empty() {
                return Err(ManifestError::Invalid(
                    "a Docker image manifest needs layers".into(),
                ));
            }
        }
        Ok(parsed)
    }

    /// Whether this is an index / manifest list.
    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }

    /// The artifact type a referrers listing reports: `artifactType`, else the config's media type.
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }

    /// Blobs that must exist in the repository before this manifest is accepted.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(
            self.layers
                .iter()
                .filter(|d| !is_non_distributable(&d.media_type)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn parses_image_manifest() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}},{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}","size":4}}]}}"#,
            d(1),
            d(2),
            d(3)
        );
        let m = ParsedManifest::parse(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.effective_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(ParsedManifest::parse(body.as_bytes(), Some(OCI_INDEX)).is_ok());
        assert!(matches!(
            ParsedManifest::parse(body.as_bytes(), Some(OCI_MANIFEST)),
            Err(ManifestError::Invalid(_))
        ));
        assert!(ParsedManifest::parse(b"not json", None).is_err());
        assert!(ParsedManifest::parse(br#"{"schemaVersion":3}"#, None).is_err());
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::Unsupported(_))
        ));
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(ParsedManifest::parse(bad_digest.as_bytes(), None).is_err());
    }
}
