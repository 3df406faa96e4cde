//! Coordination between hyperregistry replicas.
//!
//! One process needs nothing shared; several replicas on one database and one bucket need
//! three things, which [`Coordinator`] names:
//! - named, expiring locks (tag updates, a digest being committed or swept by GC, an upload
//!   session being appended to, the GC run itself);
//! - cache invalidation: a replica that changes a repository tells the others to drop what
//!   they cached about it;
//! - a shared key/value cache for lookups (blob sizes, manifests) with a time to live.
//!
//! [`local::LocalCoordinator`] is the single-process implementation;
//! [`redis::RedisCoordinator`] shares all three between replicas through Redis.
//! [`locks`] holds the lock helpers every caller uses, so that the names, time to live and
//! waits agree between the API and garbage collection.

pub mod local;
pub mod locks;
pub mod lookups;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::redis::RedisCoordinator;
pub use local::LocalCoordinator;

/// The invalidation meaning "every repository": sent when invalidations may have been lost
/// (the channel to the other replicas dropped or reconnected). Whoever receives it must drop
/// everything it cached, as it must when its receiver lags behind.
pub const INVALIDATE_ALL: &str = "*";

/// Errors from a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// A lock stayed taken for longer than the caller was willing to wait.
    #[error("lock {0:?} is busy")]
    LockBusy(String),
    /// The coordination service failed.
    #[error("coordination backend: {0}")]
    Backend(String),
}

/// Result alias for coordination operations.
pub type Result<T> = std::result::Result<T, CoordError>;

/// A held lock; released when dropped (or when its time to live runs out, should the holder
/// die first).
pub struct LockGuard {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl LockGuard {
    /// A guard that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> LockGuard {
        LockGuard {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Lock names used across the registry, so that every replica spells them the same way.
pub mod keys {
    /// Held while a blob with this digest is committed and linked, or swept by GC.
    pub fn blob(digest: &str) -> String {
        format!("blob:{digest}")
    }
    /// Held while a tag of `repo` is updated.
    pub fn tag(repo: &str, tag: &str) -> String {
        format!("tag:{repo}:{tag}")
    }
    /// Held while a request appends to or commits an upload session.
    pub fn upload(id: &str) -> String {
        format!("upload:{id}")
    }
    /// Held by the one replica running garbage collection.
    pub const GC: &str = "gc";
}

/// What replicas share to stay coherent.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Take the lock `name`, waiting at most `wait`; it expires after `ttl` if never released.
    async fn lock(&self, name: &str, ttl: Duration, wait: Duration) -> Result<LockGuard>;
    /// Tell every replica (this one included) that cached facts about `repo` are stale.
    async fn invalidate(&self, repo: &str) -> Result<()>;
    /// Repositories invalidated from now on, by any replica. [`INVALIDATE_ALL`] (`"*"`) means
    /// that messages may have been lost: drop everything. A receiver that lags
    /// (`RecvError::Lagged`) has lost messages too and must do the same.
    fn invalidations(&self) -> tokio::sync::broadcast::Receiver<String>;
    /// A cached value.
    async fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Cache a value for `ttl`.
    async fn cache_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;
    /// Drop cached values.
    async fn cache_delete(&self, keys: &[String]) -> Result<()>;
    /// Add one to the counter `key` (a cache entry that expires `ttl` after the increment
    /// that created it); returns the new count. Atomic across replicas.
    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64>;
    /// Several cached values at once (one round trip where the backend allows it), in the
    /// order of `keys`.
    async fn cache_get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.cache_get(k).await?);
        }
        Ok(out)
    }
}
