//! The push hook: code outside the /v2 API (replication rules) told about every manifest a
//! client pushed. Absent by default. (Pull-through caches are not a hook: they are a
//! [`registry_core::Upstream`] of the registry.)

use oci_core::Digest;

/// A manifest stored by a successful `PUT /v2/<name>/manifests/<reference>`.
#[derive(Debug, Clone)]
pub struct PushEvent {
    /// Repository.
    pub repository: String,
    /// The reference of the request path: a tag or a digest.
    pub reference: String,
    /// Digest of the stored manifest.
    pub digest: Digest,
    /// The manifest's subject, when it is a referrer.
    pub subject: Option<Digest>,
}

/// Told about every manifest push after it succeeded. Must not block: queue work instead.
pub trait PushHook: Send + Sync + 'static {
    /// A manifest was stored.
    fn manifest_pushed(&self, event: PushEvent);
}
