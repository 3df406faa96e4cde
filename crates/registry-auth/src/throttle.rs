//! Failed-login throttling per user name and per client address, and a short-lived cache of
//! successful password checks (bcrypt is deliberately slow).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

/// Counts failed logins and locks names and addresses out for a while.
#[derive(Debug)]
pub struct Throttle {
    max: u32,
    window: Duration,
    backoff: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Throttle {
    /// A throttle from `auth.throttle` (`maxfailures: 0` disables it).
    pub fn new(cfg: &ThrottleConfig) -> Throttle {
        Throttle {
            max: cfg.maxfailures,
            window: Duration::from_secs(cfg.window.max(1)),
            backoff: Duration::from_secs(cfg.backoff.max(1)),
            entries: Mutex::new(HashMap::new()),
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
}
