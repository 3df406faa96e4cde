//! Several hyperregistry processes serving one registry: the same data directory (blobs and
//! the SQLite file) and the same Redis. Writes through one replica must be seen by the
//! others at once, even when they had the old answer cached.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use test_support::redis::RedisServer;

/// N replicas sharing one environment: storage, metadata and Redis.
///
/// Today they share a filesystem data directory (blobs and the SQLite file, which works
/// across processes on one machine: WAL mode, a busy timeout). For PostgreSQL and S3,
/// pass their settings in `env` (`REGISTRY_DATABASE_URL`, the S3 storage keys): every
/// replica gets the same variables.
pub struct ReplicaSet {
    /// The replicas, in start order.
    pub replicas: Vec<Server>,
    /// The Redis they coordinate through.
    pub redis: RedisServer,
    /// The shared data directory.
    pub data: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl ReplicaSet {
    /// Start Redis and `n` replicas with the shared settings plus `env`; `None` when
    /// redis-server is missing and tools are not required.
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Option<ReplicaSet> {
        let redis = RedisServer::start()?;
        let data = tempfile::tempdir().unwrap();
        let mut shared = vec![
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_string(),
                data.path().display().to_string(),
            ),
            ("REGISTRY_REDIS_URL".to_string(), redis.url()),
        ];
        shared.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut set = ReplicaSet {
            replicas: Vec::new(),
            redis,
            data,
            env: shared,
        };
        for _ in 0..n {
            set.add().await;
        }
        Some(set)
    }

    /// Start one more replica with the shared settings.
    pub async fn add(&mut self) -> &Server {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.replicas.push(Server::start_with_env(&env).await);
        self.replicas.last().unwrap()
    }
}

async fn get_manifest(s: &Server, repo: &str, reference: &str) -> reqwest::Response {
    s.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
}

/// The digest a replica serves for a tag (asserting 200).
async fn served_digest(s: &Server, repo: &str, reference: &str) -> String {
    let r = get_manifest(s, repo, reference).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {repo}:{reference}");
    header(&r, "docker-content-digest")
}

async fn blob_status(s: &Server, repo: &str, digest: &oci_core::Digest) -> StatusCode {
    s.req(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_write_on_one_replica_is_served_by_the_other_at_once() {
    let Some(set) = ReplicaSet::start(2, &[]).await else {
        return;
    };
    let (a, b) = (&set.replicas[0], &set.replicas[1]);
    let repo = "team/app";

    // Push through A, pull through B (twice: the second answer comes from B's cache).
    let (m1, d1) = a.push_image(repo, "stable", &bytes(2000, 1)).await;
    for _ in 0..3 {
        let r = get_manifest(b, repo, "stable").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &m1[..]);
    }
    assert_eq!(
        served_digest(b, repo, &d1.to_string()).await,
        d1.to_string()
    );

    // Move the tag through A: B answers with the new manifest right after.
    let (m2, d2) = a.push_image(repo, "stable", &bytes(2000, 2)).await;
    let r = get_manifest(b, repo, "stable").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), d2.to_string());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &m2[..]);
    // And keeps doing so once it cached the new answer.
    assert_eq!(served_digest(b, repo, "stable").await, d2.to_string());

    // Delete the tag through A: B says 404 (the manifest stays reachable by digest).
    let second = a.push_image(repo, "second", &bytes(100, 3)).await.1;
    assert_eq!(served_digest(b, repo, "second").await, second.to_string());
    let r = a
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/second"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_error(
        get_manifest(b, repo, "second").await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        served_digest(b, repo, &second.to_string()).await,
        second.to_string()
    );

    // Delete the manifest through A: B says 404 by tag and by digest.
    let r = a
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/{d2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_error(
        get_manifest(b, repo, "stable").await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        get_manifest(b, repo, &d2.to_string()).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // Blob lookups are shared too: B's cached "present" goes with A's delete.
    let layer = a.push_blob(repo, &bytes(500, 9)).await;
    for _ in 0..2 {
        assert_eq!(blob_status(b, repo, &layer).await, StatusCode::OK);
    }
    let r = a
        .req(Method::DELETE, &format!("/v2/{repo}/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(blob_status(b, repo, &layer).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_redis_a_replica_keeps_serving_its_cached_tag() {
    // The control experiment: the same two processes without Redis. B's warm cache hides
    // A's tag move, which is what the test above proves Redis fixes.
    if !require_tool("redis-server") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let root = data.path().display().to_string();
    let env = [("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", root.as_str())];
    let a = Server::start_with_env(&env).await;
    let b = Server::start_with_env(&env).await;
    let d1 = a.push_image("team/app", "stable", &bytes(2000, 1)).await.1;
    assert_eq!(
        served_digest(&b, "team/app", "stable").await,
        d1.to_string()
    );
    let d2 = a.push_image("team/app", "stable", &bytes(2000, 2)).await.1;
    assert_ne!(d1, d2);
    assert_eq!(
        served_digest(&a, "team/app", "stable").await,
        d2.to_string()
    );
    assert_eq!(
        served_digest(&b, "team/app", "stable").await,
        d1.to_string()
    );
}

#[tokio::test]
async fn an_upload_started_on_one_replica_is_continued_and_finished_on_others() {
    let Some(set) = ReplicaSet::start(3, &[]).await else {
        return;
    };
    let (a, b, c) = (&set.replicas[0], &set.replicas[1], &set.replicas[2]);
    let data = bytes(3 << 20, 7);
    let digest = oci_core::Digest::sha256_of(&data);
    let loc = a.start_upload("team/app").await;
    let chunks: Vec<&[u8]> = data.chunks(1 << 20).collect();
    let mut offset = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        let s = [a, b, c][i % 3];
        let r = s
            .req(Method::PATCH, &loc)
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{}-{}", offset, offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk {i}");
        offset += chunk.len();
        assert_eq!(header(&r, "range"), format!("0-{}", offset - 1));
    }
    // Status through yet another replica.
    let r = b.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    let r = c
        .req(Method::PUT, &format!("{loc}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let r = a
        .req(Method::GET, &format!("/v2/team/app/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        oci_core::Digest::sha256_of(&r.bytes().await.unwrap()),
        digest
    );
}

#[tokio::test]
async fn two_replicas_never_append_to_one_session_at_once() {
    let Some(set) = ReplicaSet::start(2, &[]).await else {
        return;
    };
    let (a, b) = (&set.replicas[0], &set.replicas[1]);
    let loc = a.start_upload("team/app").await;
    // A PATCH on A whose body is still arriving holds the session.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let slow = a
        .req(Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send();
    let slow = tokio::spawn(slow);
    tx.send(Ok(bytes(1000, 1))).await.unwrap();
    // Wait until A holds the session's lock in Redis.
    let id = loc.rsplit('/').next().unwrap();
    let key = format!("hyperregistry:lock:upload:{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let port = set.redis.port.to_string();
        let held = test_support::sh("redis-cli", &["-p", &port, "EXISTS", &key]);
        if held.trim() == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "A never took the session's lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let r = b
        .req(Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .body(bytes(10, 2))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "B waited a little first"
    );
    assert!(!header(&r, "range").is_empty());
    assert_eq!(header(&r, "retry-after"), "1");
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    // A finishes its chunk; the session continues normally, on either replica.
    tx.send(Ok(bytes(24, 3))).await.unwrap();
    drop(tx);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-1023");
    let mut data = bytes(1000, 1);
    data.extend(bytes(24, 3));
    let digest = oci_core::Digest::sha256_of(&data);
    let r = b
        .req(Method::PUT, &format!("{loc}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

/// A byte stream from a channel, for a request body that arrives piece by piece.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn with_redis_down_reads_work_and_writes_answer_503_until_it_is_back() {
    let Some(mut set) = ReplicaSet::start(2, &[]).await else {
        return;
    };
    let repo = "team/app";
    let d1 = set.replicas[0]
        .push_image(repo, "stable", &bytes(1000, 1))
        .await
        .1;
    let layer = set.replicas[0].push_blob(repo, &bytes(300, 5)).await;
    let config = set.replicas[0].push_blob(repo, b"{}").await;
    set.redis.stop();
    let (a, b) = (&set.replicas[0], &set.replicas[1]);
    // Reads go to the database.
    assert_eq!(served_digest(b, repo, "stable").await, d1.to_string());
    assert_eq!(blob_status(b, repo, &layer).await, StatusCode::OK);
    // A tag update needs its lock: 503 with Retry-After, nothing changed.
    let m = image_manifest(&config, 2, &[], None);
    let r = a.put_manifest(repo, "stable", OCI_MANIFEST, &m).await;
    assert_eq!(header(&r, "retry-after"), "1");
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    assert_eq!(served_digest(a, repo, "stable").await, d1.to_string());

    // Redis comes back (empty): writes work again and B drops what it cached meanwhile.
    set.redis.start_again();
    let (a, b) = (&set.replicas[0], &set.replicas[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let d2 = loop {
        let r = a.put_manifest(repo, "stable", OCI_MANIFEST, &m).await;
        if r.status() == StatusCode::CREATED {
            break header(&r, "docker-content-digest");
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "writes never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // B's subscription may still be reconnecting; once it is, it serves the new tag. While
    // it is not, it drops its cache every second at most.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if served_digest(b, repo, "stable").await == d2 {
            break;
        }
        assert!(Instant::now() < deadline, "B kept serving the old tag");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
