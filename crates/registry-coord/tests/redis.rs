//! `RedisCoordinator` against a real `redis-server`; two coordinator instances stand for two
//! replicas.

use std::time::{Duration, Instant};

use registry_coord::{CoordError, Coordinator, INVALIDATE_ALL, RedisCoordinator};
use test_support::redis::RedisServer;
use tokio::sync::broadcast;

const PREFIX: &str = "test:";

async fn pair(redis: &RedisServer) -> (RedisCoordinator, RedisCoordinator) {
    let a = RedisCoordinator::connect(&redis.url(), PREFIX)
        .await
        .unwrap();
    let b = RedisCoordinator::connect(&redis.url(), PREFIX)
        .await
        .unwrap();
    assert!(a.wait_subscribed(0, Duration::from_secs(10)).await);
    assert!(b.wait_subscribed(0, Duration::from_secs(10)).await);
    (a, b)
}

/// The next invalidation other than "drop everything".
async fn next_repo(rx: &mut broadcast::Receiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = rx.recv().await.unwrap();
            if m != INVALIDATE_ALL {
                return m;
            }
        }
    })
    .await
    .expect("an invalidation arrives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_the_other_replica_until_released() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis).await;
    let ttl = Duration::from_secs(10);
    let guard = a.lock("tag:r:t", ttl, Duration::ZERO).await.unwrap();
    let started = Instant::now();
    let busy = b.lock("tag:r:t", ttl, Duration::from_millis(200)).await;
    assert!(matches!(busy, Err(CoordError::LockBusy(_))), "{busy:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Another name is independent.
    b.lock("tag:r:other", ttl, Duration::ZERO).await.unwrap();
    // A waiter on the other replica gets the lock once it is released.
    let b = std::sync::Arc::new(b);
    let b2 = b.clone();
    let waiter = tokio::spawn(async move {
        let g = b2.lock("tag:r:t", ttl, Duration::from_secs(5)).await;
        (g.is_ok(), Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released_at = Instant::now();
    drop(guard);
    let (ok, got_at) = waiter.await.unwrap();
    assert!(ok);
    assert!(got_at.duration_since(released_at) < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_renewed_past_its_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis).await;
    let _g = a
        .lock("upload:u1", Duration::from_millis(300), Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let busy = b
        .lock("upload:u1", Duration::from_secs(1), Duration::ZERO)
        .await;
    assert!(matches!(busy, Err(CoordError::LockBusy(_))), "{busy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lock_expires_and_only_the_owner_releases() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis).await;
    let stale = a
        .lock("blob:sha256:x", Duration::from_millis(300), Duration::ZERO)
        .await
        .unwrap();
    // The replica "dies": its renewals stop, its guard is never dropped in time.
    drop(a);
    let started = Instant::now();
    let fresh = b
        .lock(
            "blob:sha256:x",
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "took {waited:?}");
    // The dead holder's late release must not free the new owner's lock.
    drop(stale);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = RedisCoordinator::connect(&redis.url(), PREFIX)
        .await
        .unwrap();
    let busy = c
        .lock("blob:sha256:x", Duration::from_secs(1), Duration::ZERO)
        .await;
    assert!(matches!(busy, Err(CoordError::LockBusy(_))), "{busy:?}");
    drop(fresh);
    c.lock(
        "blob:sha256:x",
        Duration::from_secs(1),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_reach_the_other_replica_and_this_one() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis).await;
    let mut rx_b = b.invalidations();
    let mut rx_a = a.invalidations();
    a.invalidate("team/app").await.unwrap();
    assert_eq!(next_repo(&mut rx_b).await, "team/app");
    assert_eq!(next_repo(&mut rx_a).await, "team/app");
    // Another prefix is another registry: it hears nothing.
    let other = RedisCoordinator::connect(&redis.url(), "other:")
        .await
        .unwrap();
    assert!(other.wait_subscribed(0, Duration::from_secs(10)).await);
    let mut rx_other = other.invalidations();
    b.invalidate("team/second").await.unwrap();
    assert_eq!(next_repo(&mut rx_a).await, "team/second");
    let heard = tokio::time::timeout(Duration::from_millis(300), next_repo(&mut rx_other)).await;
    assert!(heard.is_err(), "{heard:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_is_shared_and_expires() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis).await;
    a.cache_set("k1", b"v1", Duration::from_millis(400))
        .await
        .unwrap();
    a.cache_set("k2", b"v2", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        b.cache_get("k1").await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    let many = b
        .cache_get_many(&["k1".into(), "nope".into(), "k2".into()])
        .await
        .unwrap();
    assert_eq!(many, vec![Some(b"v1".to_vec()), None, Some(b"v2".to_vec())]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.cache_get("k1").await.unwrap(), None);
    b.cache_delete(&["k2".into()]).await.unwrap();
    assert_eq!(a.cache_get("k2").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_shared_atomic_and_expire() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis).await;
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let ttl = Duration::from_millis(500);
    // 20 increments at once from two replicas: every count from 1 to 20 is seen once.
    let mut calls = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(async move { c.incr("n", ttl).await.unwrap() }));
    }
    let mut seen = Vec::new();
    for c in calls {
        seen.push(c.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
    // The expiry counts from the first increment, not the last.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(a.incr("n", ttl).await.unwrap(), 1);
    assert_eq!(b.incr("other", ttl).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_everything_is_dropped_and_invalidations_flow_again() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis).await;
    let mut rx = b.invalidations();
    redis.restart();
    // The subscription comes back by itself and says "drop everything".
    assert!(b.wait_subscribed(1, Duration::from_secs(15)).await);
    let mut saw_all = false;
    while let Ok(m) = rx.try_recv() {
        saw_all |= m == INVALIDATE_ALL;
    }
    assert!(saw_all, "a reconnect must broadcast {INVALIDATE_ALL:?}");
    assert!(a.wait_subscribed(1, Duration::from_secs(15)).await);
    // Commands reconnect too (the first may still see the dropped connection).
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.invalidate("team/app").await.is_err() {
        assert!(Instant::now() < deadline, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(next_repo(&mut rx).await, "team/app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_cache_calls_fail_fast_and_locks_fail_clearly() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, _b) = pair(&redis).await;
    let mut rx = a.invalidations();
    a.cache_set("k", b"v", Duration::from_secs(30))
        .await
        .unwrap();
    redis.stop();
    let started = Instant::now();
    assert!(a.cache_get("k").await.is_err());
    // The second call does not even try while the cooldown runs.
    assert!(a.cache_get("k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let locked = a
        .lock("tag:r:t", Duration::from_secs(1), Duration::from_secs(1))
        .await;
    assert!(matches!(locked, Err(CoordError::Backend(_))), "{locked:?}");
    // Losing the subscription tells the consumers to drop everything.
    let all = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.recv().await.unwrap() == INVALIDATE_ALL {
                return;
            }
        }
    })
    .await;
    assert!(all.is_ok());
}
