//! Failed-login throttling per user name and per client address, and a short-lived cache of
//! successful password checks (bcrypt is deliberately slow).
//!
//! Counts are kept in this process and, when replicas share [`SharedCounters`] (Redis in the
//! binary), there too: a guesser who spreads attempts over replicas meets the same limit as
//! on one. The shared part fails open (a warning), as the local part still holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use crate::config::ThrottleConfig;

/// Most names and addresses tracked at once; beyond it, entries that no longer matter go.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

/// Counters replicas share (in the binary: the coordinator's Redis cache).
#[async_trait::async_trait]
pub trait SharedCounters: Send + Sync + 'static {
    /// Add one to the counter `key`, which expires `ttl` after the increment that created
    /// it; the new count.
    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64, String>;
    /// Set `key` to `value` for `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), String>;
    /// The values of `keys`, in order.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String>;
    /// Remove `keys`.
    async fn delete(&self, keys: &[String]) -> Result<(), String>;
}

/// Counts failed logins and locks names and addresses out for a while.
pub struct Throttle {
    max: u32,
    window: Duration,
    backoff: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
    shared: parking_lot::RwLock<Option<Arc<dyn SharedCounters>>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("max", &self.max)
            .field("window", &self.window)
            .field("backoff", &self.backoff)
            .field("shared", &self.shared.read().is_some())
            .finish_non_exhaustive()
    }
}

/// The shared name of a key: user names hashed (bounded length, nothing to read in Redis).
fn shared_name(kind: &str, key: &Key) -> String {
    match key {
        Key::User(u) => format!("throttle:{kind}:user:{}", hex::encode(Sha256::digest(u))),
        Key::Ip(ip) => format!("throttle:{kind}:ip:{ip}"),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Throttle {
    /// A throttle from `auth.throttle` (`maxfailures: 0` disables it).
    pub fn new(cfg: &ThrottleConfig) -> Throttle {
        Throttle {
            max: cfg.maxfailures,
            window: Duration::from_secs(cfg.window.max(1)),
            backoff: Duration::from_secs(cfg.backoff.max(1)),
            entries: Mutex::new(HashMap::new()),
            shared: parking_lot::RwLock::new(None),
        }
    }

    /// Count failures and lock-outs in `shared` too, so that every replica using it sees
    /// them.
    pub fn share(&self, shared: Arc<dyn SharedCounters>) {
        *self.shared.write() = Some(shared);
    }

    fn shared(&self) -> Option<Arc<dyn SharedCounters>> {
        self.shared.read().clone()
    }

    /// [`check`](Self::check) here, then in the shared counters.
    pub async fn check_everywhere(
        &self,
        user: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(), u64> {
        self.check(user, ip)?;
        let Some(shared) = self.shared().filter(|_| self.max > 0) else {
            return Ok(());
        };
        let names: Vec<String> = Self::keys(user, ip)
            .map(|k| shared_name("block", &k))
            .collect();
        let values = match shared.get_many(&names).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "shared login throttle unavailable");
                return Ok(());
            }
        };
        let now = unix_ms(SystemTime::now());
        let wait_ms = values
            .into_iter()
            .flatten()
            .filter_map(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait_ms {
            Some(ms) => Err(ms.div_ceil(1000).max(1)),
            None => Ok(()),
        }
    }

    /// [`failure`](Self::failure) here and in the shared counters (a name or address that
    /// reaches the limit there is locked out on every replica).
    pub async fn failure_everywhere(&self, user: Option<&str>, ip: Option<IpAddr>) {
        self.failure(user, ip);
        let Some(shared) = self.shared().filter(|_| self.max > 0) else {
            return;
        };
        for key in Self::keys(user, ip) {
            let counted = shared.incr(&shared_name("fail", &key), self.window).await;
            let result = match counted {
                Ok(n) if n >= u64::from(self.max) => {
                    let until = unix_ms(SystemTime::now() + self.backoff);
                    shared
                        .set(
                            &shared_name("block", &key),
                            until.to_string().as_bytes(),
                            self.backoff,
                        )
                        .await
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "shared login throttle unavailable");
                return;
            }
        }
    }

    /// [`success`](Self::success) here and in the shared counters.
    pub async fn success_everywhere(&self, user: &str) {
        self.success(user);
        let Some(shared) = self.shared().filter(|_| self.max > 0) else {
            return;
        };
        let name = shared_name("fail", &Key::User(user.to_string()));
        if let Err(e) = shared.delete(&[name]).await {
            tracing::warn!(error = %e, "shared login throttle unavailable");
        }
    }

    fn keys(user: Option<&str>, ip: Option<IpAddr>) -> impl Iterator<Item = Key> {
        user.map(|u| Key::User(u.to_string()))
            .into_iter()
            .chain(ip.map(Key::Ip))
    }

    /// `Err(seconds to wait)` when the user name or the address is locked out.
    pub fn check(&self, user: Option<&str>, ip: Option<IpAddr>) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let entries = self.entries.lock();
        let wait = Self::keys(user, ip)
            .filter_map(|k| entries.get(&k).and_then(|e| e.blocked_until))
            .filter(|until| *until > now)
            .map(|until| (until - now).as_secs_f64().ceil() as u64)
            .max();
        match wait {
            Some(w) => Err(w.max(1)),
            None => Ok(()),
        }
    }

    /// Record a failed login.
    pub fn failure(&self, user: Option<&str>, ip: Option<IpAddr>) {
        if self.max == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_TRACKED {
            let window = self.window;
            entries.retain(|_, e| {
                e.blocked_until.is_some_and(|u| u > now) || now - e.window_start < window
            });
        }
        for key in Self::keys(user, ip) {
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                window_start: now,
                blocked_until: None,
            });
            if e.blocked_until.is_some_and(|u| u <= now) {
                e.blocked_until = None;
                e.failures = 0;
                e.window_start = now;
            }
            if now - e.window_start > self.window {
                e.failures = 0;
                e.window_start = now;
            }
            e.failures += 1;
            if e.failures >= self.max {
                e.blocked_until = Some(now + self.backoff);
            }
        }
    }

    /// Record a successful login: the user name's failures are forgotten.
    pub fn success(&self, user: &str) {
        if self.max == 0 {
            return;
        }
        self.entries.lock().remove(&Key::User(user.to_string()));
    }
}

/// Remembers, for a short time, which (user, password) pairs verified, keyed by a salted
/// SHA-256 of the pair (the password itself is never kept).
#[derive(Debug)]
pub struct VerifiedCache {
    salt: [u8; 16],
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

/// Most cached verifications.
const MAX_CACHED: usize = 10_000;

impl VerifiedCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> VerifiedCache {
        VerifiedCache {
            salt: *uuid::Uuid::new_v4().as_bytes(),
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether this pair verified recently.
    pub fn hit(&self, user: &str, password: &str) -> bool {
        let k = self.key(user, password);
        let now = Instant::now();
        self.entries
            .lock()
            .get(&k)
            .is_some_and(|until| *until > now)
    }

    /// Remember a pair that verified.
    pub fn insert(&self, user: &str, password: &str) {
        let k = self.key(user, password);
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, until| *until > now);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(k, now + self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_per_user_and_ip() {
        let t = Throttle::new(&ThrottleConfig {
            maxfailures: 3,
            window: 60,
            backoff: 30,
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            assert!(t.check(Some("eve"), Some(ip)).is_ok());
            t.failure(Some("eve"), Some(ip));
        }
        assert!(t.check(Some("eve"), Some(ip)).is_ok());
        t.failure(Some("eve"), Some(ip));
        let wait = t.check(Some("eve"), Some(ip)).unwrap_err();
        assert!((29..=30).contains(&wait), "{wait}");
        // The name is locked from any address, the address for any name.
        assert!(t.check(Some("eve"), Some(other)).is_err());
        assert!(t.check(Some("alice"), Some(ip)).is_err());
        assert!(t.check(Some("alice"), Some(other)).is_ok());
        // A success clears the name's counter but not a lock on the address.
        t.failure(Some("bob"), Some(other));
        t.success("bob");
        assert!(t.check(Some("bob"), None).is_ok());

        let off = Throttle::new(&ThrottleConfig {
            maxfailures: 0,
            window: 60,
            backoff: 30,
        });
        for _ in 0..10 {
            off.failure(Some("eve"), Some(ip));
        }
        assert!(off.check(Some("eve"), Some(ip)).is_ok());
    }

    #[test]
    fn cache_keys_on_user_and_password() {
        let c = VerifiedCache::new(Duration::from_secs(60));
        c.insert("alice", "pw");
        assert!(c.hit("alice", "pw"));
        assert!(!c.hit("alice", "pw2"));
        assert!(!c.hit("alicep", "w"));
        let short = VerifiedCache::new(Duration::from_millis(1));
        short.insert("a", "b");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.hit("a", "b"));
    }

    /// Counters in memory, standing in for Redis.
    #[derive(Default)]
    struct Counters(Mutex<HashMap<String, Vec<u8>>>);

    #[async_trait::async_trait]
    impl SharedCounters for Counters {
        async fn incr(&self, key: &str, _ttl: Duration) -> Result<u64, String> {
            let mut m = self.0.lock();
            let n = m
                .get(key)
                .map_or(0, |v| String::from_utf8_lossy(v).parse::<u64>().unwrap())
                + 1;
            m.insert(key.to_string(), n.to_string().into_bytes());
            Ok(n)
        }
        async fn set(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), String> {
            self.0.lock().insert(key.to_string(), value.to_vec());
            Ok(())
        }
        async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
            let m = self.0.lock();
            Ok(keys.iter().map(|k| m.get(k).cloned()).collect())
        }
        async fn delete(&self, keys: &[String]) -> Result<(), String> {
            let mut m = self.0.lock();
            for k in keys {
                m.remove(k);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn replicas_sharing_counters_lock_out_together() {
        let cfg = ThrottleConfig {
            maxfailures: 3,
            window: 60,
            backoff: 30,
        };
        let shared = Arc::new(Counters::default());
        let (a, b) = (Throttle::new(&cfg), Throttle::new(&cfg));
        a.share(shared.clone());
        b.share(shared.clone());
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        // Two failures on one replica, one on the other: the limit is reached.
        a.failure_everywhere(Some("eve"), Some(ip)).await;
        a.failure_everywhere(Some("eve"), Some(ip)).await;
        assert!(b.check_everywhere(Some("eve"), Some(ip)).await.is_ok());
        b.failure_everywhere(Some("eve"), None).await;
        for t in [&a, &b] {
            let wait = t.check_everywhere(Some("eve"), None).await.unwrap_err();
            assert!((29..=30).contains(&wait), "{wait}");
        }
        // The address had two failures only; a third replica sees the same.
        let c = Throttle::new(&cfg);
        c.share(shared.clone());
        assert!(c.check_everywhere(Some("alice"), Some(ip)).await.is_ok());
        // Nothing names the user in the shared keys.
        assert!(shared.0.lock().keys().all(|k| !k.contains("eve")));
        // A success clears the shared count of the name.
        c.failure_everywhere(Some("bob"), None).await;
        c.success_everywhere("bob").await;
        b.failure_everywhere(Some("bob"), None).await;
        b.failure_everywhere(Some("bob"), None).await;
        assert!(a.check_everywhere(Some("bob"), None).await.is_ok());
    }
}
