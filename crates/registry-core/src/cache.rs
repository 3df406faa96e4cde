//! An in-process cache of manifests by (repository, reference), bounded by total bytes.
//!
//! Correctness under concurrent writes: a reader notes the cache epoch before it reads the
//! metadata and inserts only if no write happened since ([`ManifestCache::insert_if_current`]);
//! writers bump the epoch and drop the keys they changed under the same lock.
//!
//! Other replicas' writes arrive as invalidations from the coordinator
//! ([`ManifestCache::follow`]): a repository's entries go (everything on `"*"`), and the
//! epoch moves on, so a read that started before the message cannot insert what it read.
//!
//! Entries are grouped by repository: a lookup borrows both keys (no allocation on the hot
//! path) and dropping a repository is one map removal.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use oci_core::Digest;
use parking_lot::RwLock;

/// A manifest as served: digest, media type and exact bytes.
#[derive(Debug)]
pub struct CachedManifest {
    /// Digest of the bytes.
    pub digest: Digest,
    /// Stored media type.
    pub media_type: String,
    /// The manifest bytes, byte for byte as pushed.
    pub body: Bytes,
}

#[derive(Default)]
struct Inner {
    /// repository → reference → manifest.
    entries: HashMap<String, HashMap<String, Arc<CachedManifest>>>,
    bytes: usize,
    epoch: u64,
}

/// The manifest cache.
pub struct ManifestCache {
    inner: RwLock<Inner>,
    max_bytes: usize,
}

impl ManifestCache {
    /// A cache holding at most `max_bytes` of manifest bodies.
    pub fn new(max_bytes: usize) -> ManifestCache {
        ManifestCache {
            inner: RwLock::new(Inner::default()),
            max_bytes,
        }
    }

    /// Look up a (repository, tag-or-digest) pair.
    pub fn get(&self, repo: &str, reference: &str) -> Option<Arc<CachedManifest>> {
        self.inner
            .read()
            .entries
            .get(repo)
            .and_then(|refs| refs.get(reference))
            .cloned()
    }

    /// The current write epoch; pass it to [`ManifestCache::insert_if_current`].
    pub fn epoch(&self) -> u64 {
        self.inner.read().epoch
    }

    /// Insert unless a write happened since `epoch` was read.
    pub fn insert_if_current(
        &self,
        epoch: u64,
        repo: &str,
        reference: &str,
        entry: Arc<CachedManifest>,
    ) {
        let mut inner = self.inner.write();
        if inner.epoch != epoch {
            return;
        }
        if inner.bytes + entry.body.len() > self.max_bytes {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += entry.body.len();
        let old = inner
            .entries
            .entry(repo.to_string())
            .or_default()
            .insert(reference.to_string(), entry);
        if let Some(old) = old {
            inner.bytes -= old.body.len();
        }
    }

    /// Drop entries for these references of `repo` and start a new epoch.
    pub fn invalidate<'a>(&self, repo: &str, references: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.inner.write();
        inner.epoch += 1;
        let Some(refs) = inner.entries.get_mut(repo) else {
            return;
        };
        let mut freed = 0;
        for r in references {
            if let Some(old) = refs.remove(r) {
                freed += old.body.len();
            }
        }
        if refs.is_empty() {
            inner.entries.remove(repo);
        }
        inner.bytes -= freed;
    }

    /// Drop every entry of `repo` and start a new epoch.
    pub fn drop_repository(&self, repo: &str) {
        let mut inner = self.inner.write();
        inner.epoch += 1;
        if let Some(refs) = inner.entries.remove(repo) {
            inner.bytes -= refs.values().map(|e| e.body.len()).sum::<usize>();
        }
    }

    /// Drop everything and start a new epoch.
    pub fn clear(&self) {
        let mut inner = self.inner.write();
        inner.epoch += 1;
        inner.entries.clear();
        inner.bytes = 0;
    }

    /// Apply the invalidations of `rx` (from [`registry_coord::Coordinator::invalidations`])
    /// until the cache or the channel goes away: a repository's entries are dropped;
    /// everything is on `"*"` or when the receiver lagged (messages were lost).
    pub fn follow(
        self: &Arc<Self>,
        mut rx: tokio::sync::broadcast::Receiver<String>,
    ) -> tokio::task::JoinHandle<()> {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let msg = rx.recv().await;
                let Some(cache) = cache.upgrade() else { return };
                match msg {
                    Ok(repo) if repo == registry_coord::INVALIDATE_ALL => cache.clear(),
                    Ok(repo) => cache.drop_repository(&repo),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "invalidations lagged; dropping the manifest cache");
                        cache.clear();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(b: &'static [u8]) -> Arc<CachedManifest> {
        Arc::new(CachedManifest {
            digest: Digest::sha256_of(b),
            media_type: "x".into(),
            body: Bytes::from_static(b),
        })
    }

    #[test]
    fn stale_insert_after_write_is_dropped() {
        let c = ManifestCache::new(1024);
        let e = c.epoch();
        c.invalidate("r", ["t"]);
        c.insert_if_current(e, "r", "t", entry(b"old"));
        assert!(c.get("r", "t").is_none());
        let e = c.epoch();
        c.insert_if_current(e, "r", "t", entry(b"new"));
        assert_eq!(&c.get("r", "t").unwrap().body[..], b"new");
        c.invalidate("r", ["t"]);
        assert!(c.get("r", "t").is_none());
    }

    #[test]
    fn dropping_a_repository_or_everything_also_stops_stale_inserts() {
        let c = ManifestCache::new(1024);
        c.insert_if_current(c.epoch(), "a", "t", entry(b"1"));
        c.insert_if_current(c.epoch(), "a", "u", entry(b"22"));
        c.insert_if_current(c.epoch(), "b", "t", entry(b"333"));
        let e = c.epoch();
        c.drop_repository("a");
        assert!(c.get("a", "t").is_none() && c.get("a", "u").is_none());
        assert!(c.get("b", "t").is_some());
        assert_eq!(c.inner.read().bytes, 3);
        c.insert_if_current(e, "a", "t", entry(b"stale"));
        assert!(c.get("a", "t").is_none());
        let e = c.epoch();
        c.clear();
        c.insert_if_current(e, "b", "u", entry(b"stale"));
        assert!(c.get("b", "t").is_none() && c.get("b", "u").is_none());
        assert_eq!(c.inner.read().bytes, 0);
    }

    #[tokio::test]
    async fn follows_the_coordinators_invalidations() {
        use registry_coord::{Coordinator, LocalCoordinator};
        let coord = LocalCoordinator::new();
        let c = Arc::new(ManifestCache::new(1024));
        let task = c.follow(coord.invalidations());
        c.insert_if_current(c.epoch(), "a", "t", entry(b"1"));
        c.insert_if_current(c.epoch(), "b", "t", entry(b"2"));
        coord.invalidate("a").await.unwrap();
        let wait = || tokio::time::sleep(std::time::Duration::from_millis(50));
        wait().await;
        assert!(c.get("a", "t").is_none());
        assert!(c.get("b", "t").is_some());
        coord.invalidate("*").await.unwrap();
        wait().await;
        assert!(c.get("b", "t").is_none());
        drop(c);
        coord.invalidate("a").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), task)
            .await
            .expect("the task ends with its cache")
            .unwrap();
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let c = ManifestCache::new(8);
        for (i, r) in ["a", "b", "c", "d"].into_iter().enumerate() {
            c.insert_if_current(c.epoch(), "r", r, entry(b"12345"));
            assert!(c.inner.read().bytes <= 8, "after {i}");
        }
        assert!(c.get("r", "d").is_some());
    }
}
