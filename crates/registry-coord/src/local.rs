//! The single-process [`Coordinator`]: locks and the cache live in memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast};

use crate::{CoordError, Coordinator, LockGuard, Result};

/// In-memory locks, invalidation and cache for one process.
pub struct LocalCoordinator {
    locks: Arc<Mutex<HashSet<String>>>,
    released: Arc<Notify>,
    cache: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    invalidations: broadcast::Sender<String>,
}

impl Default for LocalCoordinator {
    fn default() -> Self {
        LocalCoordinator::new()
    }
}

impl LocalCoordinator {
    /// An empty coordinator.
    pub fn new() -> LocalCoordinator {
        LocalCoordinator {
            locks: Arc::new(Mutex::new(HashSet::new())),
            released: Arc::new(Notify::new()),
            cache: Mutex::new(HashMap::new()),
            invalidations: broadcast::channel(1024).0,
        }
    }

    /// Take the lock if it is free. Locks here do not expire: a holder in this process stops
    /// holding only by dropping its guard (the time to live matters across processes, where
    /// a holder can die; `RedisCoordinator` renews held locks for the same effect).
    fn try_take(&self, name: &str) -> bool {
        self.locks.lock().insert(name.to_string())
    }
}

#[async_trait]
impl Coordinator for LocalCoordinator {
    async fn lock(&self, name: &str, _ttl: Duration, wait: Duration) -> Result<LockGuard> {
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before trying, so a release between the two is not missed.
            let notified = self.released.notified();
            if self.try_take(name) {
                let locks = self.locks.clone();
                let released = self.released.clone();
                let name = name.to_string();
                return Ok(LockGuard::new(move || {
                    locks.lock().remove(&name);
                    released.notify_waiters();
                }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CoordError::LockBusy(name.to_string()));
            }
            // Wake on a release, or re-check periodically for expiry.
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn invalidate(&self, repo: &str) -> Result<()> {
        // No receivers is fine: nothing cached.
        let _ = self.invalidations.send(repo.to_string());
        Ok(())
    }

    fn invalidations(&self) -> broadcast::Receiver<String> {
        self.invalidations.subscribe()
    }

    async fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut cache = self.cache.lock();
        match cache.get(key) {
            Some((v, expires)) if *expires > Instant::now() => Ok(Some(v.clone())),
            Some(_) => {
                cache.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn cache_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.cache
            .lock()
            .insert(key.to_string(), (value.to_vec(), Instant::now() + ttl));
        Ok(())
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64> {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        // A live counter keeps its expiry; an absent or expired one starts again.
        let (count, expires) = match cache.get(key) {
            Some((v, expires)) if *expires > now && v.len() == 8 => (
                u64::from_le_bytes(v[..].try_into().expect("8 bytes")) + 1,
                *expires,
            ),
            _ => (1, now + ttl),
        };
        cache.insert(key.to_string(), (count.to_le_bytes().to_vec(), expires));
        Ok(count)
    }

    async fn cache_delete(&self, keys: &[String]) -> Result<()> {
        let mut cache = self.cache.lock();
        for k in keys {
            cache.remove(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_count_and_expire_from_the_first_increment() {
        let c = LocalCoordinator::new();
        let ttl = Duration::from_millis(200);
        assert_eq!(c.incr("n", ttl).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(c.incr("n", ttl).await.unwrap(), 2);
        assert_eq!(c.incr("m", ttl).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            c.incr("n", ttl).await.unwrap(),
            1,
            "expired 200 ms after the first"
        );
    }

    #[tokio::test]
    async fn lock_excludes_until_released() {
        let c = LocalCoordinator::new();
        let g = c
            .lock("a", Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap();
        let busy = c
            .lock("a", Duration::from_secs(10), Duration::from_millis(20))
            .await;
        assert!(matches!(busy, Err(CoordError::LockBusy(_))));
        // Another name is independent.
        c.lock("b", Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap();
        drop(g);
        c.lock("a", Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn waiter_gets_lock_on_release() {
        let c = Arc::new(LocalCoordinator::new());
        let g = c
            .lock("x", Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            c2.lock("x", Duration::from_secs(10), Duration::from_secs(5))
                .await
                .is_ok()
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(g);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_held_lock_outlives_its_ttl() {
        let c = LocalCoordinator::new();
        let g = c
            .lock("e", Duration::from_millis(20), Duration::ZERO)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let busy = c
            .lock("e", Duration::from_secs(1), Duration::from_millis(50))
            .await;
        assert!(matches!(busy, Err(CoordError::LockBusy(_))));
        drop(g);
        c.lock("e", Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn cache_expires_and_invalidations_reach_subscribers() {
        let c = LocalCoordinator::new();
        c.cache_set("k", b"v", Duration::from_millis(30))
            .await
            .unwrap();
        assert_eq!(c.cache_get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(c.cache_get("k").await.unwrap(), None);
        let mut rx = c.invalidations();
        c.invalidate("team/app").await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), "team/app");
    }
}
