//! The registry as a service, with no HTTP: every write to hyperregistry's content goes
//! through here, whoever makes it (the /v2 API, the management API, replication, the
//! pull-through cache).
//!
//! Shaped on Distribution's `Namespace` / `Repository` / `ManifestService` / `BlobStore` /
//! `TagService`: a [`Registry`] hands out a [`Repository`] per name, whose operations own
//! the invariants of a write:
//!
//! - content is stored, and linked in metadata, under the digest's coordinator lock, so
//!   garbage collection never sweeps what is about to be referenced;
//! - tags change under their tag locks, upload sessions under their session lock;
//! - a manifest is stored only when every blob and child it references is in the
//!   repository with the declared size;
//! - after a commit, the in-process manifest cache and the lookups shared between replicas
//!   are invalidated ([`lookups`]), then an [`events::Event`] is emitted.
//!
//! Modules: [`manifests`] (manifests, tags, referrers), [`blobs`] (blobs and upload
//! sessions), [`cache`] (the manifest cache), [`lookups`] (lookups shared through the
//! coordinator), [`events`] (what happened, for webhooks), [`upstream`] (where a
//! pull-through repository's missing content comes from), [`gc`] (the deletions garbage
//! collection makes), [`upload_state`] (S3 session state in the metadata database),
//! [`error`].

pub mod blobs;
pub mod cache;
pub mod error;
pub mod events;
pub mod gc;
pub mod lookups;
pub mod manifests;
pub mod upload_state;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oci_core::Digest;
use registry_coord::{Coordinator, LocalCoordinator, LockGuard};
use registry_meta::MetaStore;
use registry_storage::BlobStore;

pub use crate::blobs::{BlobRead, BlobWant};
pub use crate::cache::{CachedManifest, ManifestCache};
pub use crate::error::{CoreError, Result};
pub use crate::manifests::{Reference, StoredManifest};
pub use crate::upload_state::MetaUploadState;
pub use crate::upstream::Upstream;

/// GC's default grace period (config `gc.graceperiod`).
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

/// Bytes of manifests the in-process cache holds.
const MANIFEST_CACHE_BYTES: usize = 64 << 20;

/// The registry: storage, metadata, coordination, caches and event sink. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetaStore>,
    coord: Arc<dyn Coordinator>,
    cache: Arc<ManifestCache>,
    events: Arc<dyn events::EventSink>,
    gc_grace: Duration,
    /// Whether lookups go through the coordinator's cache ([`lookups`]).
    shared_cache: bool,
    upstream: Option<Arc<dyn Upstream>>,
}

impl Registry {
    /// A registry over `blobs` and `meta`, coordinated within this process only.
    pub fn new(blobs: Arc<dyn BlobStore>, meta: Arc<dyn MetaStore>) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                blobs,
                meta,
                coord: Arc::new(LocalCoordinator::new()),
                cache: Arc::new(ManifestCache::new(MANIFEST_CACHE_BYTES)),
                events: Arc::new(events::NoEvents),
                gc_grace: DEFAULT_GC_GRACE,
                shared_cache: false,
                upstream: None,
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Inner)) -> Registry {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Coordinate with other replicas through `coord`: locks, invalidation of this
    /// process's manifest cache by every replica's writes, and [`lookups`] through its
    /// cache. Must be called inside a Tokio runtime (a task follows the invalidations).
    pub fn with_coordinator(self, coord: Arc<dyn Coordinator>) -> Registry {
        self.inner.cache.follow(coord.invalidations());
        self.with(|i| {
            i.coord = coord;
            i.shared_cache = true;
        })
    }

    /// Set garbage collection's grace period (see [`Registry::gc_grace`]).
    pub fn with_gc_grace(self, grace: Duration) -> Registry {
        self.with(|i| i.gc_grace = grace)
    }

    /// Send push and delete events to `sink`.
    pub fn with_events(self, sink: Arc<dyn events::EventSink>) -> Registry {
        self.with(|i| i.events = sink)
    }

    /// Serve the repositories `upstream` covers as pull-through caches of it.
    pub fn with_upstream(self, upstream: Arc<dyn Upstream>) -> Registry {
        self.with(|i| i.upstream = Some(upstream))
    }

    /// The repository `name` (validated against the spec's grammar).
    pub fn repository(&self, name: &str) -> Result<Repository> {
        oci_core::validate_repository(name).map_err(|e| CoreError::NameInvalid(e.to_string()))?;
        let upstream = self
            .inner
            .upstream
            .as_ref()
            .filter(|u| u.covers(name))
            .cloned();
        Ok(Repository {
            reg: self.clone(),
            name: name.to_string(),
            upstream,
        })
    }

    /// Repository names in order, after `last`, at most `limit`.
    pub async fn catalog(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Ok(self.inner.meta.list_repositories(last, limit).await?)
    }

    /// Metadata, for reads (listings, inspection). Writes go through [`Repository`].
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.inner.meta
    }

    /// Blob content, for reads. Writes go through [`Repository`].
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// Garbage collection's grace period: blob links older than half of it are refreshed
    /// when a client is told the blob exists.
    pub fn gc_grace(&self) -> Duration {
        self.inner.gc_grace
    }

    /// At start: drop the stored bytes of every upload in `ids` that has no session row (a
    /// monolithic upload a crash cut short: nothing can finish it); returns how many.
    pub async fn drop_interrupted_uploads(
        &self,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<u64> {
        let mut dropped = 0;
        for id in ids {
            if self.inner.meta.upload_repo(&id).await?.is_none() {
                self.inner.blobs.cancel_upload(&id).await?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Take the lock `keys::blob(digest)`: held while a blob is committed and linked (or a
    /// manifest stored), so that garbage collection, which sweeps a digest under the same
    /// lock, never deletes content that is about to be referenced.
    pub async fn blob_lock(&self, digest: &Digest) -> Result<LockGuard> {
        registry_coord::locks::blob(&*self.inner.coord, &digest.to_string())
            .await
            .map_err(|e| error::lock_failed(e, "this blob"))
    }

    /// When a link older than this is used, its timestamp is refreshed (half the grace).
    pub fn link_refresh_before(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.inner.gc_grace / 2)
            .unwrap_or(std::time::UNIX_EPOCH)
    }
}

/// One repository of a [`Registry`]: its manifests, tags, referrers, blobs and upload
/// sessions. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    reg: Registry,
    name: String,
    /// Set when the repository is a pull-through cache.
    upstream: Option<Arc<dyn Upstream>>,
}

impl Repository {
    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry it belongs to.
    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    /// Whether it is a pull-through cache (clients may read it, not push to it).
    pub fn is_read_through(&self) -> bool {
        self.upstream.is_some()
    }

    /// Refuse a client's write to a pull-through cache.
    fn writable(&self) -> Result<()> {
        match self.upstream {
            Some(_) => Err(CoreError::ReadThrough(self.name.clone())),
            None => Ok(()),
        }
    }

    /// After a commit that changed what the repository serves: shared lookups orphaned,
    /// every replica's manifest cache told.
    async fn changed(&self) {
        lookups::repository_changed(&self.reg, &self.name).await;
    }

    fn inner(&self) -> &Inner {
        &self.reg.inner
    }
}
