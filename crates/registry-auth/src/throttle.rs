//! Failed-login throttling per user name and per client address, and a short-lived cache of
//! successful password checks (bcrypt is deliberately slow).
//!
//! An attempt is counted *before* its password is checked ([`Throttle::begin`]): attempts in
//! flight count against the limit like failures, so N concurrent guesses evaluate at most
//! `maxfailures` passwords and the rest are refused at once. A success gives its attempt
//! back. Concurrent checks of one (user, password) pair wait for a single evaluation
//! ([`VerifiedCache::verifying`]), so a client sending many requests with the right
//! password at once is not mistaken for a guesser.
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
    in_flight: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            in_flight: 0,
            window_start: now,
            blocked_until: None,
        }
    }

    /// Forget an expired lock-out or window.
    fn refresh(&mut self, now: Instant, window: Duration) {
        if self.blocked_until.is_some_and(|u| u <= now) || now - self.window_start > window {
            self.blocked_until = None;
            self.failures = 0;
            self.window_start = now;
        }
    }
}

/// One login attempt counted by [`Throttle::begin`]; [`Throttle::end`] records how it
/// went. Dropped without `end` (the client went away mid-check), it is given back.
#[derive(Debug)]
#[must_use = "end the attempt with its outcome"]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    user: Option<String>,
    ip: Option<IpAddr>,
    open: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.open {
            self.throttle
                .settle(self.user.as_deref(), self.ip, Outcome::Abandoned);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Abandoned,
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

    /// The lock-out wait, in seconds, that the shared counters hold for this name or
    /// address, if any (fails open with a warning).
    async fn shared_block(&self, user: Option<&str>, ip: Option<IpAddr>) -> Option<u64> {
        let shared = self.shared().filter(|_| self.max > 0)?;
        let names: Vec<String> = Self::keys(user, ip)
            .map(|k| shared_name("block", &k))
            .collect();
        let values = match shared.get_many(&names).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "shared login throttle unavailable");
                return None;
            }
        };
        let now = unix_ms(SystemTime::now());
        values
            .into_iter()
            .flatten()
            .filter_map(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
            .filter(|until| *until > now)
            .map(|until| (until - now).div_ceil(1000).max(1))
            .max()
    }

    /// [`check`](Self::check) here, then in the shared counters.
    pub async fn check_everywhere(
        &self,
        user: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(), u64> {
        self.check(user, ip)?;
        match self.shared_block(user, ip).await {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// [`begin`](Self::begin) here, refused too when the shared counters lock the name or
    /// address out.
    pub async fn begin_everywhere(
        &self,
        user: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<Attempt<'_>, u64> {
        let attempt = self.begin(user, ip)?;
        match self.shared_block(user, ip).await {
            Some(wait) => Err(wait),
            None => Ok(attempt),
        }
    }

    /// [`end`](Self::end) here, and in the shared counters: a failure counts there (a name
    /// or address that reaches the limit is locked out on every replica), a success clears
    /// the name's count.
    pub async fn end_everywhere(&self, attempt: Attempt<'_>, ok: bool) {
        let (user, ip) = (attempt.user.clone(), attempt.ip);
        self.end(attempt, ok);
        let Some(shared) = self.shared().filter(|_| self.max > 0) else {
            return;
        };
        if ok {
            if let Some(user) = user {
                let name = shared_name("fail", &Key::User(user));
                if let Err(e) = shared.delete(&[name]).await {
                    tracing::warn!(error = %e, "shared login throttle unavailable");
                }
            }
            return;
        }
        for key in Self::keys(user.as_deref(), ip) {
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

    /// Count a login attempt before its password is checked: `Err(seconds to wait)` when
    /// the name or address is locked out, or when its failures plus the attempts already in
    /// flight reach the limit (then the wait is 1 s: those attempts end quickly).
    pub fn begin(&self, user: Option<&str>, ip: Option<IpAddr>) -> Result<Attempt<'_>, u64> {
        let attempt = |open| Attempt {
            throttle: self,
            user: user.map(str::to_string),
            ip,
            open,
        };
        if self.max == 0 {
            return Ok(attempt(false));
        }
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_TRACKED {
            let window = self.window;
            entries.retain(|_, e| {
                e.in_flight > 0
                    || e.blocked_until.is_some_and(|u| u > now)
                    || now - e.window_start < window
            });
        }
        let mut wait: Option<u64> = None;
        for key in Self::keys(user, ip) {
            let e = entries.entry(key).or_insert_with(|| Entry::new(now));
            e.refresh(now, self.window);
            let w = match e.blocked_until {
                Some(until) => Some(((until - now).as_secs_f64().ceil() as u64).max(1)),
                None if e.failures + e.in_flight >= self.max => Some(1),
                None => None,
            };
            wait = wait.max(w);
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for key in Self::keys(user, ip) {
            if let Some(e) = entries.get_mut(&key) {
                e.in_flight += 1;
            }
        }
        Ok(attempt(true))
    }

    /// Record how an attempt went: a failure counts (and locks out at the limit); a success
    /// forgets the name's failures and gives the address its attempt back.
    pub fn end(&self, mut attempt: Attempt<'_>, ok: bool) {
        if attempt.open {
            attempt.open = false;
            let outcome = if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            self.settle(attempt.user.as_deref(), attempt.ip, outcome);
        }
    }

    fn settle(&self, user: Option<&str>, ip: Option<IpAddr>, outcome: Outcome) {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        for key in Self::keys(user, ip) {
            let is_user = matches!(key, Key::User(_));
            let Some(e) = entries.get_mut(&key) else {
                continue;
            };
            e.in_flight = e.in_flight.saturating_sub(1);
            e.refresh(now, self.window);
            match outcome {
                Outcome::Failure => {
                    e.failures += 1;
                    if e.failures >= self.max {
                        e.blocked_until = Some(now + self.backoff);
                    }
                }
                Outcome::Success if is_user => e.failures = 0,
                Outcome::Success | Outcome::Abandoned => {}
            }
            if e.failures == 0 && e.in_flight == 0 && e.blocked_until.is_none() {
                entries.remove(&key);
            }
        }
    }
}

/// Remembers, for a short time, which (user, password) pairs verified, keyed by a salted
/// SHA-256 of the pair (the password itself is never kept).
#[derive(Debug)]
pub struct VerifiedCache {
    salt: [u8; 16],
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
    pending: Arc<Mutex<PendingChecks>>,
}

/// Checks in progress, by pair key: one turn lock each.
type PendingChecks = HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>;

/// The right to check one (user, password) pair: holders of the same pair take turns (see
/// [`VerifiedCache::verifying`]).
#[derive(Debug)]
pub struct Verifying {
    key: [u8; 32],
    pending: Arc<Mutex<PendingChecks>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Verifying {
    fn drop(&mut self) {
        let mut pending = self.pending.lock();
        drop(self.turn.take());
        // Nobody else waits for this pair (the map's reference is the last): forget it.
        if pending
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            pending.remove(&self.key);
        }
    }
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
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Wait for the turn to check this pair: concurrent checks of one pair run one after
    /// another, so that all but the first find the pair in the cache (when it verified)
    /// instead of each spending an attempt and a bcrypt.
    pub async fn verifying(&self, user: &str, password: &str) -> Verifying {
        let key = self.key(user, password);
        let lock = {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_CACHED {
                // Left by waiters that went away: nobody holds or waits for them.
                pending.retain(|_, m| Arc::strong_count(m) > 1);
            }
            pending.entry(key).or_default().clone()
        };
        let turn = lock.lock_owned().await;
        Verifying {
            key,
            pending: self.pending.clone(),
            turn: Some(turn),
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

    fn throttle(max: u32) -> Throttle {
        Throttle::new(&ThrottleConfig {
            maxfailures: max,
            window: 60,
            backoff: 30,
        })
    }

    fn fail(t: &Throttle, user: Option<&str>, ip: Option<IpAddr>) {
        let a = t.begin(user, ip).unwrap();
        t.end(a, false);
    }

    #[test]
    fn locks_after_max_failures_per_user_and_ip() {
        let t = throttle(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check(Some("eve"), Some(ip)).is_ok());
            fail(&t, Some("eve"), Some(ip));
        }
        let wait = t.check(Some("eve"), Some(ip)).unwrap_err();
        assert!((29..=30).contains(&wait), "{wait}");
        assert!(t.begin(Some("eve"), Some(ip)).is_err());
        // The name is locked from any address, the address for any name.
        assert!(t.check(Some("eve"), Some(other)).is_err());
        assert!(t.check(Some("alice"), Some(ip)).is_err());
        assert!(t.check(Some("alice"), Some(other)).is_ok());
        // A success clears the name's counter.
        fail(&t, Some("bob"), Some(other));
        let a = t.begin(Some("bob"), Some(other)).unwrap();
        t.end(a, true);
        assert!(t.check(Some("bob"), None).is_ok());

        let off = throttle(0);
        for _ in 0..10 {
            fail(&off, Some("eve"), Some(ip));
        }
        assert!(off.check(Some("eve"), Some(ip)).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let t = throttle(5);
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        // Forty concurrent guesses: five are let through to the password check.
        let mut admitted = Vec::new();
        let mut refused = 0;
        for _ in 0..40 {
            match t.begin(Some("eve"), Some(ip)) {
                Ok(a) => admitted.push(a),
                Err(wait) => {
                    assert_eq!(wait, 1);
                    refused += 1;
                }
            }
        }
        assert_eq!((admitted.len(), refused), (5, 35));
        // They fail: the name is locked out for the backoff.
        for a in admitted {
            t.end(a, false);
        }
        assert!(t.check(Some("eve"), None).unwrap_err() >= 29);
        // An attempt dropped unfinished (the client went away) is given back.
        let other: IpAddr = "10.0.0.4".parse().unwrap();
        let held: Vec<_> = (0..5)
            .map(|_| t.begin(Some("ann"), Some(other)).unwrap())
            .collect();
        assert!(t.begin(Some("ann"), Some(other)).is_err());
        drop(held);
        assert!(t.begin(Some("ann"), Some(other)).is_ok());
        // Successes give the address its attempts back: a busy client never locks itself out.
        let ci: IpAddr = "10.0.0.5".parse().unwrap();
        for _ in 0..50 {
            let a = t.begin(Some("ci"), Some(ci)).unwrap();
            t.end(a, true);
        }
        assert!(t.check(Some("ci"), Some(ci)).is_ok());
        assert!(
            t.entries.lock().get(&Key::Ip(ci)).is_none(),
            "nothing left to track"
        );
    }

    #[tokio::test]
    async fn checks_of_one_pair_take_turns() {
        let c = Arc::new(VerifiedCache::new(Duration::from_secs(60)));
        let first = c.verifying("alice", "pw").await;
        // Another pair is not held up.
        drop(c.verifying("alice", "other").await);
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                let _turn = c.verifying("alice", "pw").await;
                c.hit("alice", "pw")
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits for the first check");
        c.insert("alice", "pw");
        drop(first);
        assert!(waiter.await.unwrap(), "finds the first check's result");
        assert!(c.pending.lock().is_empty(), "nothing left pending");
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
        async fn fail(t: &Throttle, user: &str, ip: Option<IpAddr>) {
            let a = t.begin_everywhere(Some(user), ip).await.unwrap();
            t.end_everywhere(a, false).await;
        }
        // Two failures on one replica, one on the other: the limit is reached.
        fail(&a, "eve", Some(ip)).await;
        fail(&a, "eve", Some(ip)).await;
        assert!(b.check_everywhere(Some("eve"), Some(ip)).await.is_ok());
        fail(&b, "eve", None).await;
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
        fail(&c, "bob", None).await;
        let ok = c.begin_everywhere(Some("bob"), None).await.unwrap();
        c.end_everywhere(ok, true).await;
        fail(&b, "bob", None).await;
        fail(&b, "bob", None).await;
        assert!(a.check_everywhere(Some("bob"), None).await.is_ok());
    }
}
