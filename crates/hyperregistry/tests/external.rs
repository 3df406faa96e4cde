//! External registries, replication and pull-through caches, between real processes:
//! hyperregistry instances and CNCF Distribution (`docker-registry`) with htpasswd auth.

mod common;

use std::time::{Duration, Instant};

use common::*;
use oci_core::Digest;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use test_support::{Registry, require_tool};

// These run once per engine combination (`NAME::<meta>::<storage>`): external registries and
// API-managed rules are stored by the metadata engine.
backend_tests!(
    external_registry_crud_secrets_and_test_endpoint,
    rules_replicate_on_push,
);

const USER: &str = "alice";
const PASSWORD: &str = "pl41n-s3cret-Passw0rd";

/// Distribution with one htpasswd user (bcrypt cost 4, `$2y$` as Apache writes it).
async fn distribution_with_auth() -> Registry {
    let hash = bcrypt::hash_with_result(PASSWORD, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let line = format!("{USER}:{hash}\n");
    tokio::task::spawn_blocking(move || Registry::distribution(Some(&line)))
        .await
        .unwrap()
}

/// Plain HTTP access to any registry, with optional basic auth.
struct Target {
    base: String,
    auth: Option<(&'static str, &'static str)>,
    client: Client,
}

impl Target {
    fn new(host: &str, auth: Option<(&'static str, &'static str)>) -> Target {
        Target {
            base: format!("http://{host}"),
            auth,
            client: Client::new(),
        }
    }

    fn req(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let rb = self.client.request(method, url);
        match self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// POST a session, then PUT the whole blob (works on every registry).
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
        let loc = header(&r, "location");
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .req(Method::PUT, &format!("{loc}{sep}digest={d}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, mt: &str, body: &[u8]) {
        let r = self
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", mt)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    }

    /// (digest header, body) of a manifest, or the status when absent.
    async fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>), StatusCode> {
        let r = self
            .req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header(
                "accept",
                format!("{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST}, {DOCKER_LIST}"),
            )
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            return Err(r.status());
        }
        let d = header(&r, "docker-content-digest");
        Ok((d, r.bytes().await.unwrap().to_vec()))
    }

    async fn blob(&self, repo: &str, d: &Digest) -> Result<Vec<u8>, StatusCode> {
        let r = self
            .req(Method::GET, &format!("/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            return Err(r.status());
        }
        Ok(r.bytes().await.unwrap().to_vec())
    }
}

/// A two-platform OCI index with a referrer (a signature-like artifact whose subject is the
/// index).
struct Image {
    index: Digest,
    children: Vec<Digest>,
    blobs: Vec<Digest>,
    referrer: Digest,
}

async fn push_multiarch(t: &Target, repo: &str, tag: &str, seed: u64) -> Image {
    let mut children = Vec::new();
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let config =
            format!(r#"{{"architecture":"{arch}","os":"linux","seed":{seed}}}"#).into_bytes();
        let layer = bytes(50_000 + i * 1000, seed * 10 + i as u64);
        let cd = t.push_blob(repo, &config).await;
        let ld = t.push_blob(repo, &layer).await;
        let m = image_manifest(&cd, config.len(), &[(ld.clone(), layer.len())], None);
        let md = Digest::sha256_of(&m);
        t.put_manifest(repo, &md.to_string(), OCI_MANIFEST, &m)
            .await;
        descs.push(
            json!({"mediaType": OCI_MANIFEST, "digest": md.to_string(), "size": m.len(),
            "platform": {"os": "linux", "architecture": arch}}),
        );
        children.push(md);
        blobs.extend([cd, ld]);
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}),
    )
    .unwrap();
    let index_digest = Digest::sha256_of(&index);
    t.put_manifest(repo, tag, OCI_INDEX, &index).await;
    let empty = b"{}";
    let ed = t.push_blob(repo, empty).await;
    let sig = format!("signature of {index_digest}").into_bytes();
    let sd = t.push_blob(repo, &sig).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature", "digest": sd.to_string(), "size": sig.len()}],
        "subject": {"mediaType": OCI_INDEX, "digest": index_digest.to_string(), "size": index.len()},
    }))
    .unwrap();
    let rd = Digest::sha256_of(&referrer);
    t.put_manifest(repo, &rd.to_string(), OCI_MANIFEST, &referrer)
        .await;
    blobs.extend([ed, sd]);
    Image {
        index: index_digest,
        children,
        blobs,
        referrer: rd,
    }
}

/// Check a copy: the tag resolves to the index, every child, blob and the referrer is there
/// with the right content.
async fn assert_copied(t: &Target, repo: &str, tag: &str, img: &Image) {
    let (d, body) = t.manifest(repo, tag).await.expect("tag copied");
    assert_eq!(d, img.index.to_string());
    assert_eq!(Digest::sha256_of(&body), img.index);
    for c in img.children.iter().chain([&img.referrer]) {
        let (d, body) = t
            .manifest(repo, &c.to_string())
            .await
            .unwrap_or_else(|s| panic!("{repo}@{c}: {s}"));
        assert_eq!(d, c.to_string());
        assert_eq!(&Digest::sha256_of(&body), c);
    }
    for b in &img.blobs {
        let data = t
            .blob(repo, b)
            .await
            .unwrap_or_else(|s| panic!("{repo} blob {b}: {s}"));
        assert_eq!(&Digest::sha256_of(&data), b);
    }
}

async fn api(s: &Server, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut rb = s.req(method, path);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, v)
}

async fn add_registry(s: &Server, name: &str, host: &str, basic: bool) -> String {
    let mut body = json!({"name": name, "type": "generic", "endpoint": format!("http://{host}")});
    if basic {
        body["auth"] = json!({"type": "basic", "username": USER, "password": PASSWORD});
    }
    let (st, v) = api(s, Method::POST, "/api/v1/registry/external", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if let Ok(data) = std::fs::read(&p)
            && data.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

async fn external_registry_crud_secrets_and_test_endpoint(backend: Backend) {
    if !require_tool("docker-registry") {
        return;
    }
    let dist = distribution_with_auth().await;
    let mut s = Server::start_on(backend).await;
    let id = add_registry(&s, "dist", &dist.host(), true).await;

    // The secret is never returned.
    for path in [
        "/api/v1/registry/external".to_string(),
        format!("/api/v1/registry/external/{id}"),
    ] {
        let r = s.req(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(text.contains(r#""has_secret":true"#), "{text}");
        assert!(text.contains(USER), "{text}");
    }
    // Reachable, and the stored credentials work.
    let test_path = format!("/api/v1/registry/external/{id}/test");
    let (st, v) = api(&s, Method::POST, &test_path, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["reachable"], true, "{v}");
    assert_eq!(v["authenticated"], true, "{v}");

    // Stored encrypted: no file in the data directory holds the plain password.
    assert!(
        files_containing(&s.root(), PASSWORD.as_bytes()).is_empty(),
        "plain secret on disk"
    );
    let key = s.root().join("external.key");
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&key).unwrap());
    assert_eq!(mode & 0o777, 0o600);

    // A wrong password: reachable, not authenticated.
    let (st, v) = api(
        &s,
        Method::PUT,
        &format!("/api/v1/registry/external/{id}"),
        Some(json!({"auth": {"type": "basic", "username": USER, "password": "wrong"}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = api(&s, Method::POST, &test_path, None).await;
    assert_eq!(v["reachable"], true, "{v}");
    assert_eq!(v["authenticated"], false, "{v}");

    // Back to the right one; a rename keeps the stored secret.
    api(
        &s,
        Method::PUT,
        &format!("/api/v1/registry/external/{id}"),
        Some(json!({"auth": {"type": "basic", "username": USER, "password": PASSWORD}})),
    )
    .await;
    let (st, v) = api(
        &s,
        Method::PUT,
        &format!("/api/v1/registry/external/{id}"),
        Some(json!({"name": "dist-renamed"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "dist-renamed");
    assert_eq!(v["has_secret"], true);

    // The key persists: after a restart the secret still decrypts.
    s.stop_and_restart().await;
    let (_, v) = api(&s, Method::POST, &test_path, None).await;
    assert_eq!(v["authenticated"], true, "{v}");

    // Unreachable endpoint, duplicate name, bad input, delete.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let gone = add_registry(&s, "gone", &format!("127.0.0.1:{closed_port}"), false).await;
    let (_, v) = api(
        &s,
        Method::POST,
        &format!("/api/v1/registry/external/{gone}/test"),
        None,
    )
    .await;
    assert_eq!(v["reachable"], false, "{v}");
    let (st, v) = api(
        &s,
        Method::POST,
        "/api/v1/registry/external",
        Some(json!({"name": "gone", "endpoint": "http://127.0.0.1:1"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["errors"][0]["code"], "CONFLICT");
    let (st, _) = api(
        &s,
        Method::POST,
        "/api/v1/registry/external",
        Some(json!({"name": "x", "type": "quay", "endpoint": "https://q"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = api(
        &s,
        Method::POST,
        "/api/v1/registry/external",
        Some(json!({"name": "hub", "type": "dockerhub"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v["endpoint"], "https://registry-1.docker.io");
    let (st, _) = api(
        &s,
        Method::DELETE,
        &format!("/api/v1/registry/external/{gone}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = api(
        &s,
        Method::GET,
        &format!("/api/v1/registry/external/{gone}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["errors"][0]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn push_replication_to_hyperregistry_and_distribution() {
    if !require_tool("docker-registry") {
        return;
    }
    let dist = distribution_with_auth().await;
    let a = Server::start().await;
    let b = Server::start().await;
    let local = Target::new(&format!("127.0.0.1:{}", a.port), None);
    let img = push_multiarch(&local, "app/web", "v1", 1).await;

    let b_id = add_registry(&a, "b", &format!("127.0.0.1:{}", b.port), false).await;
    let d_id = add_registry(&a, "dist", &dist.host(), true).await;

    let (st, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/push",
        Some(json!({"registry_id": b_id, "repository": "app/web", "reference": "v1"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["digest"], img.index.to_string());
    assert_eq!(v["stats"]["manifests"], 4, "{v}"); // index, two platforms, referrer
    let remote_b = Target::new(&format!("127.0.0.1:{}", b.port), None);
    assert_copied(&remote_b, "app/web", "v1", &img).await;
    // The referrer is a referrer on the target too.
    let (_, refs) = api(
        &b,
        Method::GET,
        &format!("/v2/app/web/referrers/{}", img.index),
        None,
    )
    .await;
    assert_eq!(refs["manifests"][0]["digest"], img.referrer.to_string());

    // To Distribution with basic auth, under another name, by registry name.
    let (st, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/push",
        Some(
            json!({"registry_id": "dist", "repository": "app/web", "reference": "v1",
            "target_repository": "mirror/web"}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let remote_d = Target::new(&dist.host(), Some((USER, PASSWORD)));
    assert_copied(&remote_d, "mirror/web", "v1", &img).await;
    // Without credentials Distribution refuses: the copy really went through auth.
    assert_eq!(
        Target::new(&dist.host(), None)
            .manifest("mirror/web", "v1")
            .await
            .unwrap_err(),
        StatusCode::UNAUTHORIZED
    );

    // A second push skips every blob; a copy to a new repository mounts them.
    let (_, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/push",
        Some(
            json!({"registry_id": d_id, "repository": "app/web", "reference": "v1",
            "target_repository": "mirror/web"}),
        ),
    )
    .await;
    assert_eq!(v["stats"]["blobs_copied"], 0, "{v}");
    assert_eq!(v["stats"]["blobs_skipped"], 6, "{v}");
    let (_, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/push",
        Some(
            json!({"registry_id": d_id, "repository": "app/web", "reference": "v1",
            "target_repository": "mirror/web2"}),
        ),
    )
    .await;
    assert_eq!(v["stats"]["blobs_copied"], 0, "{v}");
    assert_eq!(v["stats"]["blobs_mounted"], 6, "{v}");
    assert_copied(&remote_d, "mirror/web2", "v1", &img).await;

    // Unknown image: a clear 404.
    let (st, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/push",
        Some(json!({"registry_id": b_id, "repository": "app/web", "reference": "nope"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn pull_replication_from_distribution_and_hyperregistry() {
    if !require_tool("docker-registry") {
        return;
    }
    let dist = distribution_with_auth().await;
    let remote_d = Target::new(&dist.host(), Some((USER, PASSWORD)));
    let img = push_multiarch(&remote_d, "src/app", "1.0", 2).await;
    let a = Server::start().await;
    add_registry(&a, "dist", &dist.host(), true).await;

    let (st, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/pull",
        Some(
            json!({"registry_id": "dist", "repository": "src/app", "reference": "1.0",
            "target_repository": "copies/app"}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["digest"], img.index.to_string());
    let local = Target::new(&format!("127.0.0.1:{}", a.port), None);
    // Distribution 2.8 has no referrers API: the platforms and blobs come, the referrer not.
    let (d, _) = local.manifest("copies/app", "1.0").await.unwrap();
    assert_eq!(d, img.index.to_string());
    for c in &img.children {
        assert!(local.manifest("copies/app", &c.to_string()).await.is_ok());
    }
    for b in &img.blobs[..4] {
        assert_eq!(
            &Digest::sha256_of(&local.blob("copies/app", b).await.unwrap()),
            b
        );
    }
    let (_, tags) = api(&a, Method::GET, "/v2/copies/app/tags/list", None).await;
    assert_eq!(tags["tags"], json!(["1.0"]));

    // From a hyperregistry, referrers come too.
    let b = Server::start().await;
    let remote_b = Target::new(&format!("127.0.0.1:{}", b.port), None);
    let img2 = push_multiarch(&remote_b, "team/svc", "2", 3).await;
    add_registry(&a, "b", &format!("127.0.0.1:{}", b.port), false).await;
    let (st, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/pull",
        Some(json!({"registry_id": "b", "repository": "team/svc", "reference": "2"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_copied(&local, "team/svc", "2", &img2).await;
    let (_, refs) = api(
        &a,
        Method::GET,
        &format!("/v2/team/svc/referrers/{}", img2.index),
        None,
    )
    .await;
    assert_eq!(refs["manifests"][0]["digest"], img2.referrer.to_string());
}

async fn wait_jobs(s: &Server, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = api(s, Method::GET, "/api/v1/replication/jobs", None).await;
        let jobs = v.as_array().unwrap().clone();
        if jobs.len() >= n
            && jobs
                .iter()
                .all(|j| j["status"] == "succeeded" || j["status"] == "failed")
        {
            return jobs;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rules_replicate_on_push(backend: Backend) {
    let b = Server::start().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("registry.yaml");
    std::fs::write(
        &cfg,
        "replication:\n  rules:\n    - name: team-releases\n      registry_id: target-b\n      repositories: [\"team/*\"]\n      tags: [\"v*\"]\n      target_prefix: mirror\n",
    )
    .unwrap();
    let a = Server::start_on_with_env(backend, &[("REGISTRY_CONFIG", cfg.to_str().unwrap())]).await;
    add_registry(&a, "target-b", &format!("127.0.0.1:{}", b.port), false).await;
    let local = Target::new(&format!("127.0.0.1:{}", a.port), None);
    let remote_b = Target::new(&format!("127.0.0.1:{}", b.port), None);

    // Matches: pushed to B under mirror/, with platforms and the referrer.
    let img = push_multiarch(&local, "team/api", "v2", 4).await;
    let jobs = wait_jobs(&a, 2).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    assert!(
        jobs.iter()
            .any(|j| j["reference"] == "v2" && j["rule"] == "team-releases")
    );
    assert_copied(&remote_b, "mirror/team/api", "v2", &img).await;

    // No match: another tag, another repository.
    a.push_image("team/api", "latest", b"not a release").await;
    a.push_image("other/api", "v3", b"not a team").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        remote_b
            .manifest("mirror/team/api", "latest")
            .await
            .unwrap_err(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        remote_b
            .manifest("mirror/other/api", "v3")
            .await
            .unwrap_err(),
        StatusCode::NOT_FOUND
    );

    // An API-managed rule.
    let (st, v) = api(
        &a,
        Method::POST,
        "/api/v1/replication/rules",
        Some(json!({"name": "other", "registry_id": "target-b", "repositories": ["other/**"]})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, rules) = api(&a, Method::GET, "/api/v1/replication/rules", None).await;
    assert_eq!(rules.as_array().unwrap().len(), 2, "{rules}");
    let (_, d) = a.push_image("other/deep/api", "1", b"layer").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((got, _)) = remote_b.manifest("other/deep/api", "1").await {
            assert_eq!(got, d.to_string());
            break;
        }
        assert!(Instant::now() < deadline, "API rule did not replicate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A registry used by rules cannot be deleted.
    let (st, _) = api(
        &a,
        Method::DELETE,
        "/api/v1/registry/external/target-b",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
}

#[tokio::test]
async fn rule_retries_until_the_target_is_up() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("registry.yaml");
    std::fs::write(
        &cfg,
        "replication:\n  rules:\n    - name: all\n      registry_id: later\n",
    )
    .unwrap();
    let a = Server::start_with_env(&[("REGISTRY_CONFIG", cfg.to_str().unwrap())]).await;
    // The target's port is reserved now, its registry starts after the first attempt fails.
    let mut b = Server::start().await;
    let b_port = b.port;
    b.terminate();
    add_registry(&a, "later", &format!("127.0.0.1:{b_port}"), false).await;
    let (_, d) = a.push_image("svc", "1", b"retried layer").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = api(&a, Method::GET, "/api/v1/replication/jobs", None).await;
        if v[0]["status"] == "retrying" {
            assert!(
                v[0]["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("external registry")
            );
            break;
        }
        assert!(Instant::now() < deadline, "no retry recorded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.start_again().await;
    let jobs = wait_jobs(&a, 1).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{jobs:?}");
    assert!(jobs[0]["attempts"].as_u64().unwrap() >= 2);
    let remote_b = Target::new(&format!("127.0.0.1:{b_port}"), None);
    assert_eq!(
        remote_b.manifest("svc", "1").await.unwrap().0,
        d.to_string()
    );
}

fn blob_file(root: &std::path::Path, d: &Digest) -> std::path::PathBuf {
    root.join("blobs")
        .join("sha256")
        .join(&d.hex()[..2])
        .join(d.hex())
}

#[tokio::test]
async fn pull_through_cache() {
    if !require_tool("docker-registry") {
        return;
    }
    let mut upstream = Server::start().await;
    let dist = distribution_with_auth().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("registry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "proxies:\n  - prefix: hub\n    endpoint: http://127.0.0.1:{up}\n    ttl: 10m\n  - prefix: fast\n    endpoint: http://127.0.0.1:{up}\n    ttl: 1s\n  - prefix: dist\n    endpoint: http://{dist}\n    auth: {{type: basic, username: {USER}, password: {PASSWORD}}}\n    ttl: 10m\n",
            up = upstream.port,
            dist = dist.host(),
        ),
    )
    .unwrap();
    let p = Server::start_with_env(&[("REGISTRY_CONFIG", cfg.to_str().unwrap())]).await;
    let proxy = Target::new(&format!("127.0.0.1:{}", p.port), None);

    let layer = bytes(300_000, 7);
    let layer_digest = Digest::sha256_of(&layer);
    let (_, d1) = upstream.push_image("lib/app", "1", &layer).await;
    assert!(!blob_file(&p.root(), &layer_digest).exists());

    // First pull: fetched from upstream, stored, served.
    for prefix in ["hub", "fast"] {
        let repo = format!("{prefix}/lib/app");
        let (d, body) = proxy.manifest(&repo, "1").await.expect("first pull");
        assert_eq!(d, d1.to_string());
        let m: Value = serde_json::from_slice(&body).unwrap();
        let cfg_digest: Digest = m["config"]["digest"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            Digest::sha256_of(&proxy.blob(&repo, &cfg_digest).await.unwrap()),
            cfg_digest
        );
        assert_eq!(proxy.blob(&repo, &layer_digest).await.unwrap(), layer);
    }
    // Upstream access observed: the blob now lives in the proxy's own storage.
    let stored = std::fs::read(blob_file(&p.root(), &layer_digest)).unwrap();
    assert_eq!(stored, layer);

    // The tag moves upstream.
    let layer2 = bytes(200_000, 8);
    let layer2_digest = Digest::sha256_of(&layer2);
    let (_, d2) = upstream.push_image("lib/app", "1", &layer2).await;
    // Within the TTL: the cached tag, upstream not asked.
    assert_eq!(
        proxy.manifest("hub/lib/app", "1").await.unwrap().0,
        d1.to_string()
    );
    // After the TTL: revalidated, the moved tag is picked up; a first HEAD fetches the blob.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        proxy.manifest("fast/lib/app", "1").await.unwrap().0,
        d2.to_string()
    );
    let r = proxy
        .req(
            Method::HEAD,
            &format!("/v2/fast/lib/app/blobs/{layer2_digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), layer2.len().to_string());
    assert_eq!(
        proxy.blob("fast/lib/app", &layer2_digest).await.unwrap(),
        layer2
    );

    // Upstream stopped: everything cached is served locally, stale tags included.
    upstream.terminate();
    assert_eq!(
        proxy.manifest("hub/lib/app", "1").await.unwrap().0,
        d1.to_string()
    );
    assert_eq!(
        proxy.blob("hub/lib/app", &layer_digest).await.unwrap(),
        layer
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        proxy.manifest("fast/lib/app", "1").await.unwrap().0,
        d2.to_string()
    );
    // Never fetched and upstream down: unknown.
    assert_eq!(
        proxy.manifest("hub/lib/other", "1").await.unwrap_err(),
        StatusCode::NOT_FOUND
    );

    // Pushes into a proxied prefix are denied.
    let r = proxy
        .req(Method::POST, "/v2/hub/lib/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = p
        .put_manifest("hub/lib/app", "2", OCI_MANIFEST, b"{}")
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    // Other repositories are untouched by the proxy.
    p.push_image("local/app", "1", b"local layer").await;

    // An upstream with basic auth (Distribution), a multi-platform index pulled child by child.
    let remote_d = Target::new(&dist.host(), Some((USER, PASSWORD)));
    let img = push_multiarch(&remote_d, "base/os", "12", 9).await;
    let (d, _) = proxy.manifest("dist/base/os", "12").await.unwrap();
    assert_eq!(d, img.index.to_string());
    for c in &img.children {
        assert!(proxy.manifest("dist/base/os", &c.to_string()).await.is_ok());
    }
    for b in &img.blobs[..4] {
        assert_eq!(
            &Digest::sha256_of(&proxy.blob("dist/base/os", b).await.unwrap()),
            b
        );
    }
    drop(dist);
    for b in &img.blobs[..4] {
        assert_eq!(
            &Digest::sha256_of(&proxy.blob("dist/base/os", b).await.unwrap()),
            b
        );
    }
    assert_eq!(
        proxy.manifest("dist/base/os", "12").await.unwrap().0,
        img.index.to_string()
    );
}

/// The operations of `doc` under the external-registry and replication prefixes, sorted.
fn external_operations(doc: &Value) -> Vec<String> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.starts_with("/api/v1/registry/external") || path.starts_with("/api/v1/replication/")
        {
            for method in item.as_object().unwrap().keys() {
                ops.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ops.sort();
    ops
}

/// The schema a `$ref` names.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            let s = &doc["components"]["schemas"][name];
            assert!(s.is_object(), "{r} is not defined");
            s
        }
        None => schema,
    }
}

/// Every property an object schema requires is in `value` (one level deep; arrays: each item).
fn assert_matches_schema(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let schema = resolve(doc, schema);
    if schema["type"] == "array" {
        for item in value
            .as_array()
            .unwrap_or_else(|| panic!("{what}: not an array: {value}"))
        {
            assert_matches_schema(doc, &schema["items"], item, what);
        }
        return;
    }
    let mut required: Vec<&Value> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    // `allOf` (a flattened struct): every part's required properties.
    for part in schema["allOf"].as_array().into_iter().flatten() {
        required.extend(
            resolve(doc, part)["required"]
                .as_array()
                .into_iter()
                .flatten(),
        );
    }
    for field in required {
        let field = field.as_str().unwrap();
        assert!(
            value.get(field).is_some(),
            "{what}: {field} is required but missing from {value}"
        );
    }
}

/// Call a documented operation: it must succeed with a documented status, and a JSON body
/// must carry the documented schema's required fields.
async fn call(
    s: &Server,
    doc: &Value,
    called: &mut Vec<String>,
    op: &str,
    args: &[(&str, &str)],
    body: Option<Value>,
) -> Value {
    let (method, path) = op.split_once(' ').unwrap();
    let mut concrete = path.to_string();
    for (k, v) in args {
        concrete = concrete.replace(&format!("{{{k}}}"), v);
    }
    let (status, v) = api(
        s,
        Method::from_bytes(method.as_bytes()).unwrap(),
        &concrete,
        body,
    )
    .await;
    assert!(
        status.is_success(),
        "{op} ({concrete}) answered {status}: {v}"
    );
    let response = &doc["paths"][path][method.to_lowercase()]["responses"][status.as_str()];
    assert!(response.is_object(), "{op}: {status} is not documented");
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() {
        assert_eq!(v, Value::Null, "{op}: undocumented body");
    } else {
        assert_matches_schema(doc, schema, &v, op);
    }
    called.push(op.to_string());
    v
}

#[tokio::test]
async fn openapi_document_covers_external_registries_and_replication() {
    let b = Server::start().await;
    let a = Server::start().await;
    let (status, doc) = api(&a, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");

    // The served document carries registry-external's description unchanged, alongside the
    // management API's (no schema name clashes: merging would keep the first), with only
    // each operation's security added: every external operation is for admins.
    let own = serde_json::to_value(registry_external::openapi()).unwrap();
    for (path, item) in own["paths"].as_object().unwrap() {
        let mut served = doc["paths"][path].clone();
        for (method, op) in served.as_object_mut().unwrap() {
            let security = op.as_object_mut().unwrap().remove("security");
            assert_eq!(
                security,
                Some(json!([{"basic": []}, {"bearer": ["registry:admin:*"]}])),
                "{method} {path}"
            );
        }
        assert_eq!(&served, item, "{path}");
    }
    for (name, schema) in own["components"]["schemas"].as_object().unwrap() {
        assert_eq!(&doc["components"]["schemas"][name], schema, "schema {name}");
    }
    assert!(doc["paths"]["/api/v1/registry/images"]["get"].is_object());
    let text = doc.to_string();
    for name in text.split("#/components/schemas/").skip(1) {
        let name = name.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} undefined"
        );
    }
    // Operation ids are unique across both APIs (client generators name methods after them).
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate operationId: {ids:?}");
    // Secrets are write-only in requests and absent from responses.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["AuthSpec"]["properties"]["password"]["writeOnly"],
        true
    );
    assert!(schemas["AuthView"]["properties"]["password"].is_null());
    let documented = external_operations(&doc);
    assert_eq!(
        documented,
        [
            "DELETE /api/v1/registry/external/{id}",
            "DELETE /api/v1/replication/rules/{id}",
            "GET /api/v1/registry/external",
            "GET /api/v1/registry/external/{id}",
            "GET /api/v1/replication/jobs",
            "GET /api/v1/replication/jobs/{id}",
            "GET /api/v1/replication/rules",
            "POST /api/v1/registry/external",
            "POST /api/v1/registry/external/{id}/test",
            "POST /api/v1/replication/pull",
            "POST /api/v1/replication/push",
            "POST /api/v1/replication/rules",
            "PUT /api/v1/registry/external/{id}",
        ]
    );

    // Each documented operation, for real, against a second hyperregistry.
    let d = &doc;
    let c = &mut Vec::new();
    let list = call(&a, d, c, "GET /api/v1/registry/external", &[], None).await;
    assert_eq!(list, json!([]));
    let endpoint = format!("http://127.0.0.1:{}", b.port);
    let reg = call(
        &a,
        d,
        c,
        "POST /api/v1/registry/external",
        &[],
        Some(json!({"name": "b", "type": "generic", "endpoint": endpoint})),
    )
    .await;
    let id = reg["id"].as_str().unwrap().to_string();
    let got = call(
        &a,
        d,
        c,
        "GET /api/v1/registry/external/{id}",
        &[("id", &id)],
        None,
    )
    .await;
    assert_eq!(got, reg);
    let put = call(
        &a,
        d,
        c,
        "PUT /api/v1/registry/external/{id}",
        &[("id", &id)],
        Some(json!({"insecure": true})),
    )
    .await;
    assert_eq!(put["insecure"], true);
    let test = call(
        &a,
        d,
        c,
        "POST /api/v1/registry/external/{id}/test",
        &[("id", &id)],
        None,
    )
    .await;
    assert_eq!(test["reachable"], true, "{test}");

    let (_, pushed) = a.push_image("team/app", "v1", b"openapi layer").await;
    let r = call(
        &a,
        d,
        c,
        "POST /api/v1/replication/push",
        &[],
        Some(json!({"registry_id": id, "repository": "team/app", "reference": "v1"})),
    )
    .await;
    assert_eq!(r["digest"], pushed.to_string());
    let r = call(
        &a,
        d,
        c,
        "POST /api/v1/replication/pull",
        &[],
        Some(
            json!({"registry_id": "b", "repository": "team/app", "reference": "v1",
            "target_repository": "pulled/app"}),
        ),
    )
    .await;
    assert_eq!(r["digest"], pushed.to_string());
    assert_eq!(r["target_repository"], "pulled/app");

    let rule = call(
        &a,
        d,
        c,
        "POST /api/v1/replication/rules",
        &[],
        Some(json!({"name": "mirror", "registry_id": "b", "repositories": ["rule/**"]})),
    )
    .await;
    assert_eq!(rule["source"], "api");
    let rules = call(&a, d, c, "GET /api/v1/replication/rules", &[], None).await;
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    a.push_image("rule/app", "v1", b"replicated by rule").await;
    wait_jobs(&a, 1).await;
    let jobs = call(&a, d, c, "GET /api/v1/replication/jobs", &[], None).await;
    let job_id = jobs[0]["id"].to_string();
    let job = call(
        &a,
        d,
        c,
        "GET /api/v1/replication/jobs/{id}",
        &[("id", &job_id)],
        None,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let rule_id = rule["id"].as_str().unwrap();
    call(
        &a,
        d,
        c,
        "DELETE /api/v1/replication/rules/{id}",
        &[("id", rule_id)],
        None,
    )
    .await;
    call(
        &a,
        d,
        c,
        "DELETE /api/v1/registry/external/{id}",
        &[("id", &id)],
        None,
    )
    .await;
    c.sort();
    assert_eq!(*c, documented, "every documented operation was called");

    // Errors answer with a documented status and the documented error body.
    let (status, v) = api(
        &a,
        Method::GET,
        &format!("/api/v1/registry/external/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = &doc["paths"]["/api/v1/registry/external/{id}"]["get"]["responses"]["404"];
    assert_matches_schema(
        d,
        &response["content"]["application/json"]["schema"],
        &v,
        "404",
    );
    assert_eq!(v["errors"][0]["code"], "NOT_FOUND");
}
