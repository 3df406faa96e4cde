//! Several hyperregistry processes serving one registry: the same data directory (blobs and
//! the SQLite file) and the same Redis. Writes through one replica must be seen by the
//! others at once, even when they had the old answer cached.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use test_support::redis::RedisServer;
use test_support::require_tool;

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

/// Wait (at most 1 s) until replica `s` serves `want` for `repo:reference` (`None`: 404).
/// A write on another replica reaches this one's in-process manifest cache through Redis
/// pub/sub: the one window the design leaves, sub-millisecond on one host, longer on a
/// loaded test machine. Without Redis it never converges (see the control test).
async fn converge(s: &Server, repo: &str, reference: &str, want: Option<&str>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let r = get_manifest(s, repo, reference).await;
        let got = (r.status() == StatusCode::OK).then(|| header(&r, "docker-content-digest"));
        if got.as_deref() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{repo}:{reference} still served as {got:?}, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn blob_status(s: &Server, repo: &str, digest: &oci_core::Digest) -> StatusCode {
    s.req(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_write_on_one_replica_is_served_by_the_other_at_once_on(env: &[(&str, &str)]) {
    let Some(set) = ReplicaSet::start(2, env).await else {
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
    converge(b, repo, "stable", Some(&d2.to_string())).await;
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
    converge(b, repo, "second", None).await;
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
    converge(b, repo, "stable", None).await;
    converge(b, repo, &d2.to_string(), None).await;
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

async fn an_upload_started_on_one_replica_is_continued_and_finished_on_others_on(
    env: &[(&str, &str)],
) {
    let Some(set) = ReplicaSet::start(3, env).await else {
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

async fn two_replicas_never_append_to_one_session_at_once_on(env: &[(&str, &str)]) {
    let Some(set) = ReplicaSet::start(2, env).await else {
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

async fn concurrent_pushes_through_both_replicas_all_land_on(env: &[(&str, &str)]) {
    let Some(set) = ReplicaSet::start(2, env).await else {
        return;
    };
    let pushes = (0..16u64).map(|i| {
        let s = &set.replicas[(i % 2) as usize];
        async move {
            let tag = format!("t{i}");
            let d = s.push_image("team/app", &tag, &bytes(5000, i)).await.1;
            (tag, d)
        }
    });
    let pushed = futures::future::join_all(pushes).await;
    for (tag, d) in &pushed {
        for s in &set.replicas {
            assert_eq!(served_digest(s, "team/app", tag).await, d.to_string());
        }
    }
}

#[tokio::test]
async fn a_replica_starting_up_leaves_another_replicas_upload_alone() {
    // At start a replica removes upload files that no session row explains (monolithic
    // uploads cut short by a crash); with replicas, such a file may be one that another
    // replica is receiving right now.
    let Some(mut set) = ReplicaSet::start(1, &[]).await else {
        return;
    };
    let data = bytes(300_000, 4);
    let digest = oci_core::Digest::sha256_of(&data);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let a = &set.replicas[0];
    let upload = a
        .req(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
        )
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
        .send();
    let upload = tokio::spawn(upload);
    tx.send(Ok(data[..100_000].to_vec())).await.unwrap();
    let uploads = set.data.path().join("uploads");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_files(&uploads) == 0 {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    set.add().await;
    tx.send(Ok(data[100_000..].to_vec())).await.unwrap();
    drop(tx);
    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(
        blob_status(&set.replicas[1], "team/app", &digest).await,
        StatusCode::OK
    );
}

/// Run hyperregistry with `args` and `env` until it listens; returns its stderr so far.
fn start_and_read_log(
    args: &[&str],
    env: &[(&str, &str)],
    port: u16,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
        .args(args)
        .envs(env.iter().copied())
        .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("hyperregistry listening") {
            // Keep draining so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, log);
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    panic!("hyperregistry exited ({status}) before listening:\n{log}");
}

#[test]
fn redis_settings_come_from_the_file_or_env_and_the_log_names_the_coordinator() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = dir.path().join("data");
    let cfg = dir.path().join("registry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\nredis:\n  url: {}\n  prefix: \"reg-a:\"\n",
            root.display(),
            redis.url()
        ),
    )
    .unwrap();
    let (mut child, log) = start_and_read_log(&["--config", cfg.to_str().unwrap()], &[], port);
    assert!(log.contains("coordinator=\"redis\""), "{log}");
    assert!(log.contains("prefix=reg-a:"), "{log}");
    // A write uses the configured prefix (its lock and the repository's generation).
    let client = reqwest::blocking::Client::new();
    let data = b"config".to_vec();
    let digest = oci_core::Digest::sha256_of(&data);
    let r = client
        .post(format!(
            "http://127.0.0.1:{port}/v2/team/app/blobs/uploads/?digest={digest}"
        ))
        .body(data)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .get(format!(
            "http://127.0.0.1:{port}/v2/team/app/blobs/{digest}"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let port_s = redis.port.to_string();
    let keys = test_support::sh("redis-cli", &["-p", &port_s, "KEYS", "reg-a:cache:*"]);
    assert!(keys.contains("reg-a:cache:gen:team/app"), "{keys}");
    assert!(keys.contains("reg-a:cache:blob:team/app@"), "{keys}");
    child.kill().unwrap();
    child.wait().unwrap();

    // Without redis.url: the process coordinates with itself only, and says so.
    let root = root.display().to_string();
    let (mut child, log) = start_and_read_log(
        &[],
        &[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", root.as_str())],
        port,
    );
    assert!(log.contains("coordinator=\"local\""), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();

    // The environment variable works the same way.
    let url = redis.url();
    let (mut child, log) = start_and_read_log(
        &[],
        &[
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", root.as_str()),
            ("REGISTRY_REDIS_URL", url.as_str()),
        ],
        port,
    );
    assert!(log.contains("coordinator=\"redis\""), "{log}");
    assert!(log.contains("prefix=hyperregistry:"), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Settings for replicas that share nothing on disk: a fresh PostgreSQL database and a
/// bucket on a fresh S3 server (kept alive by the caller). `None` when a service is missing
/// and tools are not required.
fn postgres_and_s3() -> Option<(Vec<(String, String)>, test_support::s3::S3Server)> {
    if !test_support::postgres::available() {
        return None;
    }
    let s3 = test_support::s3::S3Server::start()?;
    let mut env = s3.registry_env();
    env.push((
        "REGISTRY_DATABASE_URL".into(),
        test_support::postgres::database_url(),
    ));
    Some((env, s3))
}

#[tokio::test]
async fn a_write_on_one_replica_is_served_by_the_other_at_once() {
    a_write_on_one_replica_is_served_by_the_other_at_once_on(&[]).await;
}

#[tokio::test]
async fn a_write_on_one_replica_is_served_by_the_other_at_once_on_postgres_and_s3() {
    let Some((env, _s3)) = postgres_and_s3() else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    a_write_on_one_replica_is_served_by_the_other_at_once_on(&env).await;
}

#[tokio::test]
async fn an_upload_started_on_one_replica_is_continued_and_finished_on_others() {
    an_upload_started_on_one_replica_is_continued_and_finished_on_others_on(&[]).await;
}

#[tokio::test]
async fn an_upload_started_on_one_replica_is_continued_and_finished_on_others_on_postgres_and_s3() {
    let Some((env, _s3)) = postgres_and_s3() else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    an_upload_started_on_one_replica_is_continued_and_finished_on_others_on(&env).await;
}

#[tokio::test]
async fn two_replicas_never_append_to_one_session_at_once() {
    two_replicas_never_append_to_one_session_at_once_on(&[]).await;
}

#[tokio::test]
async fn two_replicas_never_append_to_one_session_at_once_on_postgres_and_s3() {
    let Some((env, _s3)) = postgres_and_s3() else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    two_replicas_never_append_to_one_session_at_once_on(&env).await;
}

#[tokio::test]
async fn concurrent_pushes_through_both_replicas_all_land() {
    concurrent_pushes_through_both_replicas_all_land_on(&[]).await;
}

#[tokio::test]
async fn concurrent_pushes_through_both_replicas_all_land_on_postgres_and_s3() {
    let Some((env, _s3)) = postgres_and_s3() else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    concurrent_pushes_through_both_replicas_all_land_on(&env).await;
}
