//! The [`Coordinator`] shared between replicas through Redis.
//!
//! - Locks: `SET <prefix>lock:<name> <random token> NX PX <ttl>`, retried with jittered
//!   exponential backoff until the caller's wait runs out. While the guard lives, a task
//!   renews the lock every third of its time to live (only if the token is still ours); the
//!   guard's drop releases it with a compare-and-delete script, so a holder whose lock expired
//!   and was taken by another replica never deletes the other's lock.
//! - Invalidation: `PUBLISH <prefix>invalidate <repository>`. A background task keeps a
//!   subscription (reconnecting with jittered backoff, pinging to detect dead connections)
//!   and forwards messages into a local broadcast channel. Pub/sub does not queue for absent
//!   subscribers, so whenever the subscription drops, fails to come back, or comes back, the
//!   task broadcasts [`INVALIDATE_ALL`]: consumers drop everything.
//! - Cache: `GET`/`MGET`/`SET PX`/`DEL` under `<prefix>cache:`. Cache calls are bounded by a
//!   short timeout, and after a failure they fail fast for a second, so a Redis outage costs
//!   readers at most one short wait before they fall back to the database.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use oci_core::retry::Backoff;
use parking_lot::Mutex;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{broadcast, watch};

use crate::{CoordError, Coordinator, INVALIDATE_ALL, LockGuard, Result};

/// Default key prefix (`redis.prefix`).
pub const DEFAULT_PREFIX: &str = "hyperregistry:";

/// Longest a cache call may take before the caller falls back to the database.
const CACHE_TIMEOUT: Duration = Duration::from_millis(300);
/// After a cache failure, how long cache calls fail at once instead of trying Redis.
const CACHE_COOLDOWN: Duration = Duration::from_secs(1);
/// Timeout of lock and publish commands (and of connecting).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscription connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Longest pause between two subscription attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Release only if the lock still holds our token.
const RELEASE: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Extend only if the lock still holds our token.
const RENEW: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

fn backend(e: redis::RedisError) -> CoordError {
    CoordError::Backend(e.to_string())
}

/// How a contended lock is polled: up to 5 ms, doubling to 200 ms, jittered.
const LOCK_POLL: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));

/// How the invalidation subscription is re-established: up to 50 ms, doubling to
/// [`MAX_RECONNECT_DELAY`], jittered.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), MAX_RECONNECT_DELAY);

/// State of the invalidation subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Whether the subscription is up now.
    pub connected: bool,
    /// How many times it has been (re)established.
    pub established: u64,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    release: redis::Script,
    renew: redis::Script,
    /// Cache calls fail at once until this instant (after a failure).
    cache_down_until: Mutex<Option<Instant>>,
}

/// Locks, invalidation and a cache shared by every replica using the same Redis and prefix.
pub struct RedisCoordinator {
    inner: Arc<Inner>,
    invalidations: broadcast::Sender<String>,
    subscription: watch::Receiver<Subscription>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl Drop for RedisCoordinator {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl std::fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordinator")
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl RedisCoordinator {
    /// Connect to `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://`), with
    /// every key and the channel under `prefix`. Only a malformed URL fails here: the
    /// connection is made on first use and re-made after failures, and the invalidation
    /// subscription retries in the background. Must run inside a Tokio runtime.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisCoordinator> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(MAX_RECONNECT_DELAY);
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(backend)?;
        let (invalidations, _) = broadcast::channel(1024);
        let (sub_tx, subscription) = watch::channel(Subscription::default());
        let channel = format!("{prefix}invalidate");
        let subscriber = tokio::spawn(subscribe_loop(
            client,
            channel,
            invalidations.clone(),
            sub_tx,
        ));
        Ok(RedisCoordinator {
            inner: Arc::new(Inner {
                conn,
                prefix: prefix.to_string(),
                release: redis::Script::new(RELEASE),
                renew: redis::Script::new(RENEW),
                cache_down_until: Mutex::new(None),
            }),
            invalidations,
            subscription,
            subscriber,
        })
    }

    /// Round trip to Redis (for start-up checks).
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(backend)
    }

    /// The invalidation subscription's state, updated as it connects and drops.
    pub fn subscription(&self) -> watch::Receiver<Subscription> {
        self.subscription.clone()
    }

    /// Wait until the invalidation subscription has been established more than `after`
    /// times (`after = 0`: the first time); false if `timeout` runs out first.
    pub async fn wait_subscribed(&self, after: u64, timeout: Duration) -> bool {
        let mut rx = self.subscription.clone();
        tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.connected && s.established > after),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    fn cache_key(&self, key: &str) -> String {
        format!("{}cache:{key}", self.inner.prefix)
    }

    /// Run a cache command with the short timeout and the failure cooldown.
    async fn cache_call<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T> {
        if let Some(until) = *self.inner.cache_down_until.lock()
            && Instant::now() < until
        {
            return Err(CoordError::Backend(
                "redis cache unavailable (cooling down after a failure)".into(),
            ));
        }
        let mut conn = self.inner.conn.clone();
        let result =
            match tokio::time::timeout(CACHE_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(backend(e)),
                Err(_) => Err(CoordError::Backend(format!(
                    "redis cache call timed out after {CACHE_TIMEOUT:?}"
                ))),
            };
        let mut down = self.inner.cache_down_until.lock();
        match &result {
            Ok(_) => {
                if down.take().is_some() {
                    tracing::info!("redis cache reachable again");
                }
            }
            Err(e) => {
                if down.is_none() {
                    tracing::warn!(error = %e, "redis cache failing; lookups go to the database");
                }
                *down = Some(Instant::now() + CACHE_COOLDOWN);
            }
        }
        result
    }
}

/// Keep the lock `key` ours while the guard lives: extend it every third of `ttl`. Stops
/// when the coordinator is gone (as if the process died) or the lock was lost.
async fn renew_loop(inner: Weak<Inner>, key: String, token: String, ttl: Duration) {
    let period = (ttl / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut conn = inner.conn.clone();
        let renewed: std::result::Result<i64, _> = inner
            .renew
            .key(&key)
            .arg(&token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(lock = %key, "lock expired and was lost while held");
                return;
            }
            // Keep trying: the lock may still be ours when Redis answers again.
            Err(e) => tracing::warn!(lock = %key, error = %e, "renewing a lock failed"),
        }
    }
}

/// Keep a subscription to `channel`, forwarding messages into `tx`; broadcast
/// [`INVALIDATE_ALL`] whenever messages may have been missed.
async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    tx: broadcast::Sender<String>,
    state: watch::Sender<Subscription>,
) {
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(Ok(pubsub)) => {
                if failures > 0 {
                    tracing::info!(channel = %channel, "invalidation subscription re-established");
                }
                failures = 0;
                // Whatever was published while we were not subscribed is lost.
                let _ = tx.send(INVALIDATE_ALL.to_string());
                state.send_modify(|s| {
                    s.connected = true;
                    s.established += 1;
                });
                let why = forward(pubsub, &tx).await;
                state.send_modify(|s| s.connected = false);
                let _ = tx.send(INVALIDATE_ALL.to_string());
                tracing::warn!(channel = %channel, reason = %why, "invalidation subscription lost; reconnecting");
            }
            Ok(Err(e)) => {
                failures = failures.saturating_add(1);
                let _ = tx.send(INVALIDATE_ALL.to_string());
                if failures == 1 {
                    tracing::warn!(channel = %channel, error = %e, "cannot subscribe to invalidations; retrying");
                } else {
                    tracing::debug!(channel = %channel, error = %e, failures, "subscribing to invalidations failed");
                }
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                let _ = tx.send(INVALIDATE_ALL.to_string());
                if failures == 1 {
                    tracing::warn!(channel = %channel, "subscribing to invalidations timed out; retrying");
                }
            }
        }
        // After a subscription that held, the first retry comes quickly again.
        tokio::time::sleep(RECONNECT.delay(failures.max(1))).await;
    }
}

/// Forward messages until the connection ends or stops answering pings; returns why.
async fn forward(pubsub: redis::aio::PubSub, tx: &broadcast::Sender<String>) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => match std::str::from_utf8(msg.get_payload_bytes()) {
                    Ok(repo) => {
                        let _ = tx.send(repo.to_string());
                    }
                    Err(_) => {
                        tracing::warn!("non-UTF-8 invalidation message; dropping everything");
                        let _ = tx.send(INVALIDATE_ALL.to_string());
                    }
                },
                None => return "connection closed".into(),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => return "ping timed out".into(),
                }
            }
        }
    }
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    async fn lock(&self, name: &str, ttl: Duration, wait: Duration) -> Result<LockGuard> {
        let key = format!("{}lock:{name}", self.inner.prefix);
        let token = format!("{:032x}", rand::rng().random::<u128>());
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let deadline = Instant::now() + wait;
        let mut tries = 0u32;
        let mut conn = self.inner.conn.clone();
        loop {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if taken.is_some() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CoordError::LockBusy(name.to_string()));
            }
            tries = tries.saturating_add(1);
            tokio::time::sleep(LOCK_POLL.delay(tries).min(deadline - now)).await;
        }
        let renewer = tokio::spawn(renew_loop(
            Arc::downgrade(&self.inner),
            key.clone(),
            token.clone(),
            ttl,
        ));
        let runtime = tokio::runtime::Handle::current();
        let release = self.inner.release.clone();
        Ok(LockGuard::new(move || {
            renewer.abort();
            // Drop cannot wait: release on the runtime. Should it never run, the lock
            // expires after its time to live.
            runtime.spawn(async move {
                let done: std::result::Result<i64, _> = release
                    .key(&key)
                    .arg(&token)
                    .invoke_async(&mut conn)
                    .await;
                match done {
                    Ok(1) => {}
                    Ok(_) => tracing::warn!(lock = %key, "lock had expired before its release"),
                    Err(e) => {
                        tracing::warn!(lock = %key, error = %e, "releasing a lock failed; it expires on its own")
                    }
                }
            });
        }))
    }

    async fn invalidate(&self, repo: &str) -> Result<()> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("PUBLISH")
            .arg(format!("{}invalidate", self.inner.prefix))
            .arg(repo)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(backend)
    }

    fn invalidations(&self) -> broadcast::Receiver<String> {
        self.invalidations.subscribe()
    }

    async fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.cache_key(key));
        self.cache_call(cmd).await
    }

    async fn cache_get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.cache_key(k));
        }
        self.cache_call(cmd).await
    }

    async fn cache_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.cache_key(key))
            .arg(value)
            .arg("PX")
            .arg((ttl.as_millis() as u64).max(1));
        self.cache_call::<()>(cmd).await
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64> {
        // One script, so that the count and its expiry are set together.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(
            "local n = redis.call('INCR', KEYS[1]) \
             if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
             return n",
        )
        .arg(1)
        .arg(self.cache_key(key))
        .arg((ttl.as_millis() as u64).max(1));
        self.cache_call(cmd).await
    }

    async fn cache_delete(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(self.cache_key(k));
        }
        self.cache_call::<()>(cmd).await
    }
}
