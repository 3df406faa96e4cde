//! Pull-through caches: a [`Repository`] whose name an [`Upstream`] covers is served from
//! local storage and filled from the upstream on a miss, in the manner of Distribution's
//! proxy `ManifestService` and `BlobStore` wrapping the local ones. Clients may read such a
//! repository but not push to it ([`crate::CoreError::ReadThrough`]).

use async_trait::async_trait;
use oci_core::Digest;

use crate::Repository;
use crate::blobs::{BlobRead, BlobWant};
use crate::manifests::Reference;

/// Where the missing content of the repositories it covers comes from.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Whether `repo` is a pull-through cache of this upstream.
    fn covers(&self, repo: &str) -> bool;

    /// Before a manifest is read from `repo`: fetch it when missing, revalidate a tag whose
    /// last check is older than the cache's TTL. Failures leave the local state as it is
    /// (and are logged): the read then answers from what is stored.
    async fn refresh_manifest(&self, repo: &Repository, reference: &Reference);

    /// A blob `repo` does not have: fetch it. With [`BlobWant::Stream`] the upstream body
    /// may be returned as it is being stored (verified before its last chunk is released);
    /// with [`BlobWant::Stored`] it is stored first. `None` when the upstream cannot give it.
    async fn fetch_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        want: BlobWant,
    ) -> Option<BlobRead>;
}
