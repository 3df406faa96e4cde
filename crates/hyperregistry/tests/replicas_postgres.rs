//! Several hyperregistry processes sharing one PostgreSQL database (and one data directory,
//! standing in for shared blob storage): what one replica writes, the others serve.

mod common;

use common::*;
use oci_core::Digest;
use reqwest::{Method, StatusCode};

/// Three replicas started at once on a fresh database (migrations race), then pushes,
/// uploads and deletes spread over them.
#[tokio::test]
async fn replicas_share_postgres_metadata() {
    if !test_support::postgres::available() {
        return;
    }
    let url = test_support::postgres::database_url();
    let first = Server::start_with_env(&[("REGISTRY_DATABASE_URL", url.as_str())]).await;
    let root = first.root().display().to_string();
    let env = [
        ("REGISTRY_DATABASE_URL", url.as_str()),
        ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", root.as_str()),
    ];
    let (a, b) = tokio::join!(Server::start_with_env(&env), Server::start_with_env(&env));
    assert!(!first.root().join("metadata.db").exists());

    // An image pushed through one replica is served by the others.
    let (m, d) = a.push_image("shared/app", "v1", b"layer bytes").await;
    for s in [&first, &b] {
        let r = s
            .req(Method::GET, "/v2/shared/app/manifests/v1")
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "docker-content-digest"), d.to_string());
        assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..]);
        let tags: serde_json::Value = s
            .req(Method::GET, "/v2/shared/app/tags/list")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    }

    // An upload session started on one replica continues on another and ends on a third.
    let data = bytes(70_000, 9);
    let digest = Digest::sha256_of(&data);
    let loc = first.start_upload("shared/app").await;
    let r = a
        .req(Method::PATCH, &loc)
        .header("content-range", "0-39999")
        .body(data[..40_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    let r = b.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-39999");
    let r = b
        .req(Method::PUT, &format!("{loc}?digest={digest}"))
        .body(data[40_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let r = first
        .req(Method::GET, &format!("/v2/shared/app/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    // A delete on one replica is seen by another (by digest, never read through `a`, so its
    // per-process manifest cache holds nothing stale).
    let r = b
        .req(Method::DELETE, &format!("/v2/shared/app/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_error(
        a.req(Method::GET, &format!("/v2/shared/app/manifests/{d}"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let cat: serde_json::Value = a
        .req(Method::GET, "/v2/_catalog")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cat["repositories"], serde_json::json!(["shared/app"]));
}

fn qs(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Write an htpasswd file (alice:s3cret) and a configuration with auth on for it (`extra`
/// is more of the `auth:` block); returns the configuration's path.
fn auth_config(dir: &std::path::Path, extra: &str) -> String {
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash_with_result("s3cret", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  htpasswd:\n    realm: r\n    path: {}\n{extra}  access:\n    - repositories: [\"**\"]\n      users: [alice]\n      actions: [\"*\"]\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    config.display().to_string()
}

/// A hyperregistry process started directly (auth on: `/v2/` answers 401, not 200).
struct Proc {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = test_support::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
            .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &data)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Proc {
            child,
            port,
            _dir: dir,
            data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_up(&mut self) {
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while client.get(self.url("/v2/")).send().await.is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hyperregistry exited early: {status}");
            }
            assert!(std::time::Instant::now() < deadline, "not up");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Wait for the process to exit on its own; its status and standard error.
    fn exit(mut self) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "still running");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status, err)
    }
}

/// Replicas that each have their own data directory (as containers do) on one database and
/// one bucket:
/// each generated its own token signing key, yet every replica accepts every replica's
/// access and refresh tokens; the key sealing external registries' secrets must be one,
/// and a replica with another refuses to start, saying which setting to give.
#[tokio::test]
async fn replicas_with_their_own_data_directories_share_tokens_and_one_secrets_key() {
    if !test_support::postgres::available() {
        return;
    }
    let url = test_support::postgres::database_url();
    let conf = tempfile::tempdir().unwrap();
    let config = auth_config(conf.path(), "  token:\n    service: reg\n    issuer: reg\n");
    // Blobs in a shared bucket: nothing a replica needs is in its data directory.
    let Some(s3) = test_support::s3::S3Server::start() else {
        return;
    };
    let s3_env = s3.registry_env();
    let mut env: Vec<(&str, &str)> = s3_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("REGISTRY_DATABASE_URL", url.as_str()));
    env.push(("REGISTRY_CONFIG", config.as_str()));
    let mut a = Proc::spawn(&env);
    a.wait_up().await;

    // Another data directory, so another generated secrets key: refused.
    let (status, err) = Proc::spawn(&env).exit();
    assert!(!status.success());
    assert!(
        err.contains("external.secretkey") && err.contains("REGISTRY_EXTERNAL_SECRETKEY"),
        "{err}"
    );
    // With A's key it starts (its token signing key is still its own).
    let key = std::fs::read_to_string(a.data.join("external.key")).unwrap();
    let mut env_b = env.clone();
    env_b.push(("REGISTRY_EXTERNAL_SECRETKEY", key.trim()));
    let mut b = Proc::spawn(&env_b);
    b.wait_up().await;
    let key_file = |p: &Proc| std::fs::read(p.data.join("token-signing-key-es256.pem")).unwrap();
    assert_ne!(key_file(&a), key_file(&b));

    let client = reqwest::Client::new();
    let scope = "repository:team/app:pull,push";
    let token = |p: &Proc| {
        let req = client
            .get(p.url(&format!(
                "/token?{}",
                qs(&[("service", "reg"), ("scope", scope)])
            )))
            .basic_auth("alice", Some("s3cret"));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let v: serde_json::Value = r.json().await.unwrap();
            v["token"].as_str().unwrap().to_string()
        }
    };
    // A token from A pushes through B; one from B reads through A.
    let blob = b"pushed with a token from the other replica".to_vec();
    let d = Digest::sha256_of(&blob);
    let r = client
        .post(b.url(&format!("/v2/team/app/blobs/uploads/?digest={d}")))
        .bearer_auth(token(&a).await)
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let r = client
        .get(a.url(&format!("/v2/team/app/blobs/{d}")))
        .bearer_auth(token(&b).await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &blob[..]);
    // A refresh token (docker's identity token) from B is good at A.
    let r = client
        .post(b.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(qs(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "s3cret"),
            ("service", "reg"),
            ("client_id", "test"),
            ("access_type", "offline"),
            ("scope", scope),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    let r = client
        .post(a.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(qs(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "reg"),
            ("client_id", "test"),
            ("scope", scope),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    // A token signed by a key no replica published is refused.
    let stranger = Proc::spawn(&[("REGISTRY_CONFIG", config.as_str())]);
    let mut stranger = stranger;
    stranger.wait_up().await;
    let r = client
        .get(a.url(&format!("/v2/team/app/blobs/{d}")))
        .bearer_auth(token(&stranger).await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Replicas sharing Redis count failed logins together: a guesser spreading attempts over
/// them is locked out after the same number as on one, on every replica.
#[tokio::test]
async fn replicas_sharing_redis_lock_out_a_guesser_together() {
    if !test_support::postgres::available() {
        return;
    }
    let Some(redis) = test_support::redis::RedisServer::start() else {
        return;
    };
    let url = test_support::postgres::database_url();
    let conf = tempfile::tempdir().unwrap();
    let config = auth_config(
        conf.path(),
        "  throttle:\n    maxfailures: 3\n    window: 60\n    backoff: 60\n",
    );
    let redis_url = redis.url();
    let env = [
        ("REGISTRY_DATABASE_URL", url.as_str()),
        ("REGISTRY_REDIS_URL", redis_url.as_str()),
        ("REGISTRY_CONFIG", config.as_str()),
        (
            "REGISTRY_EXTERNAL_SECRETKEY",
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
        ),
    ];
    let (mut a, mut b) = (Proc::spawn(&env), Proc::spawn(&env));
    a.wait_up().await;
    b.wait_up().await;
    let client = reqwest::Client::new();
    let login = |p: &Proc, password: &str| {
        client
            .get(p.url("/v2/"))
            .basic_auth("alice", Some(password.to_string()))
            .send()
    };
    assert_eq!(login(&a, "s3cret").await.unwrap().status(), StatusCode::OK);
    // Two wrong passwords on A, one on B: three in all.
    for p in [&a, &a, &b] {
        let r = login(p, "guess").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked out everywhere, even with the right password, for the backoff.
    for p in [&a, &b] {
        let r = login(p, "s3cret").await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = header(&r, "retry-after").parse().unwrap();
        assert!((50..=60).contains(&wait), "{wait}");
    }
}
