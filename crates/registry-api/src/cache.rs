//! An in-process cache of manifests by (repository, reference), bounded by total bytes.
//!
//! Correctness under concurrent writes: a reader notes the cache epoch before it reads the
//! metadata and inserts only if no write happened since ([`ManifestCache::insert_if_current`]);
//! writers bump the epoch and drop the keys they changed under the same lock.

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
    entries: HashMap<(String, String), Arc<CachedManifest>>,
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
        // Borrowed lookups need an owned key; manifests are tiny next to this allocation.
        self.inner
            .read()
            .entries
            .get(&(repo.to_string(), reference.to_string()))
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
        if let Some(old) = inner
            .entries
            .insert((repo.to_string(), reference.to_string()), entry)
        {
            inner.bytes -= old.body.len();
        }
    }

    /// Drop entries for these references of `repo` and start a new epoch.
    pub fn invalidate<'a>(&self, repo: &str, references: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.inner.write();
        inner.epoch += 1;
        for r in references {
            if let Some(old) = inner.entries.remove(&(repo.to_string(), r.to_string())) {
                inner.bytes -= old.body.len();
            }
        }
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
    fn stays_within_its_byte_budget() {
        let c = ManifestCache::new(8);
        for (i, r) in ["a", "b", "c", "d"].into_iter().enumerate() {
            c.insert_if_current(c.epoch(), "r", r, entry(b"12345"));
            assert!(c.inner.read().bytes <= 8, "after {i}");
        }
        assert!(c.get("r", "d").is_some());
    }
}
