//! Test harness: runs the real `hyperregistry` binary on a free loopback port.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_core::Digest;
use reqwest::{Client, Method, Response, StatusCode};

/// A running registry process with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub client: Client,
    extra_env: Vec<(String, String)>,
    /// The S3 server holding this registry's blobs, when it runs on S3.
    pub s3: Option<test_support::s3::S3Server>,
}

pub use test_support::free_port;
impl Server {
    /// Start a registry on a fresh data directory.
    pub async fn start() -> Server {
        Server::start_with_env(&[]).await
    }

    /// Start with extra environment variables.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            client: Client::builder().build().unwrap(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            s3: None,
        };
        s.spawn().await;
        s
    }

    /// Committed blob objects: files under `blobs/` of the data directory, or objects under
    /// `blobs/` in the S3 bucket.
    pub fn stored_blobs(&self) -> usize {
        match &self.s3 {
            Some(s3) => s3.objects("blobs").len(),
            None => count_files(&self.root().join("blobs")),
        }
    }

    /// Where a digest's content is stored: under the data directory, or (S3) the file that
    /// s3s-fs keeps for the object in its bucket directory.
    pub fn content_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        let rel = format!("blobs/{}/{}/{hex}", d.algorithm().as_str(), &hex[..2]);
        match &self.s3 {
            Some(s3) => s3.dir.path().join(test_support::s3::BUCKET).join(rel),
            None => self.root().join(rel),
        }
    }

    /// Upload session data left: files under `uploads/`, or what sessions left in the S3
    /// bucket (tails, multipart uploads, data objects no link points to).
    pub fn stored_uploads(&self) -> usize {
        match &self.s3 {
            Some(s3) => s3.session_leftovers(),
            None => count_files(&self.root().join("uploads")),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hyperregistry"));
        cmd.env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", self.root())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn hyperregistry"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.url("/v2/")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("hyperregistry exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "hyperregistry did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9 the process, then start it again on the same data directory.
    pub async fn crash_and_restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        self.spawn().await;
    }

    /// SIGTERM (graceful), wait, start again.
    pub async fn stop_and_restart(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "graceful shutdown exited with {status}");
        self.spawn().await;
    }

    /// The registry process's id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("http://127.0.0.1:{}{}", self.port, path)
        }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Push a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "push blob: {:?}",
            r.text().await
        );
        digest
    }

    /// Start an upload session; returns its Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        header(&r, "location")
    }

    /// Push a manifest under a reference; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Push a config and one layer and an OCI manifest for them; returns (manifest bytes, digest).
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, Digest) {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","layer":{}}}"#,
            layer.len()
        )
        .into_bytes();
        let cd = self.push_blob(repo, &config).await;
        let ld = self.push_blob(repo, layer).await;
        let m = image_manifest(&cd, config.len(), &[(ld, layer.len())], None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let d = Digest::sha256_of(&m);
        (m, d)
    }
}

impl Server {
    /// Run the `hyperregistry` binary with this server's environment (same data directory and
    /// configuration) and `args`, e.g. `["gc", "--dry-run"]`.
    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hyperregistry"));
        cmd.env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", self.root())
            .env("RUST_LOG", "warn")
            .args(args);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.output().expect("run hyperregistry")
    }

    /// Start the process again after [`Server::terminate`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An OCI image manifest JSON for a config and layers, with an optional subject.
pub fn image_manifest(
    config: &Digest,
    config_size: usize,
    layers: &[(Digest, usize)],
    subject: Option<(&Digest, usize)>,
) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d.to_string(),"size":s}))
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":config.to_string(),"size":config_size},
        "layers": layers,
    });
    if let Some((d, s)) = subject {
        m["subject"] =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s});
    }
    serde_json::to_vec(&m).unwrap()
}

/// A response header as a string ("" when absent).
pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Assert an error response: status and the spec's JSON error code.
pub async fn assert_error(r: Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status, "expected {status} {code}");
    let body: serde_json::Value = r.json().await.expect("error body is JSON");
    let errors = body["errors"].as_array().expect("errors array");
    assert_eq!(errors[0]["code"], code, "{body}");
    assert!(errors[0]["message"].is_string(), "{body}");
}

/// Deterministic pseudo-random bytes.
#[allow(unused_imports)]
pub use test_support::noise as bytes;

/// Files under a directory, recursively.
pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += count_files(&p);
            } else {
                n += 1;
            }
        }
    }
    n
}

/// The engines a test registry runs on: one metadata engine and one blob storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Where metadata lives.
    pub meta: Meta,
    /// Where blobs live.
    pub storage: Storage,
}

/// Metadata engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// SQLite in the data directory (the default).
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

/// Blob storage engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The filesystem under the data directory (the default).
    Fs,
    /// A bucket on a fresh s3s-fs server.
    S3,
}

impl Meta {
    /// Every metadata engine.
    pub const ALL: &[Meta] = &[Meta::Sqlite, Meta::Postgres];

    /// Whether its service is usable (a missing one fails under HYPER_REQUIRE_TOOLS=1).
    pub fn available(self) -> bool {
        match self {
            Meta::Sqlite => true,
            Meta::Postgres => test_support::postgres::available(),
        }
    }

    /// Environment for a new registry on this engine (fresh, empty state).
    pub fn env(self) -> Vec<(String, String)> {
        match self {
            Meta::Sqlite => vec![],
            Meta::Postgres => vec![(
                "REGISTRY_DATABASE_URL".into(),
                test_support::postgres::database_url(),
            )],
        }
    }
}

impl Storage {
    /// Every blob storage engine.
    pub const ALL: &[Storage] = &[Storage::Fs, Storage::S3];

    /// Whether its service is usable (a missing one fails under HYPER_REQUIRE_TOOLS=1).
    pub fn available(self) -> bool {
        match self {
            Storage::Fs => true,
            Storage::S3 => test_support::s3::s3s_fs_bin().is_some(),
        }
    }

    /// Start what the engine needs (an S3 server) and the environment for a registry on it.
    pub fn start(self) -> (Vec<(String, String)>, Option<test_support::s3::S3Server>) {
        match self {
            Storage::Fs => (vec![], None),
            Storage::S3 => {
                let s3 = test_support::s3::S3Server::start().expect("s3s-fs is installed");
                (s3.registry_env(), Some(s3))
            }
        }
    }
}

impl Backend {
    /// Every combination of engines.
    pub fn all() -> Vec<Backend> {
        Meta::ALL
            .iter()
            .flat_map(|&meta| {
                Storage::ALL
                    .iter()
                    .map(move |&storage| Backend { meta, storage })
            })
            .collect()
    }

    /// Whether every service it needs is usable.
    pub fn available(self) -> bool {
        self.meta.available() && self.storage.available()
    }

    /// Environment for a new registry on these engines, and the S3 server it needs.
    pub fn start(self) -> (Vec<(String, String)>, Option<test_support::s3::S3Server>) {
        let mut env = self.meta.env();
        let (storage_env, s3) = self.storage.start();
        env.extend(storage_env);
        (env, s3)
    }
}

impl Server {
    /// Start a registry on fresh state of the given engines (restarts keep that state).
    pub async fn start_on(backend: Backend) -> Server {
        let (env, s3) = backend.start();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut s = Server::start_with_env(&env).await;
        s.s3 = s3;
        // The server really runs on the engine asked for.
        assert_eq!(
            s.root().join("metadata.db").exists(),
            backend.meta == Meta::Sqlite,
            "{backend:?}: metadata.db in the data directory"
        );
        s
    }
}

/// For each `async fn NAME(backend: Backend)` named, one `#[tokio::test]` per engine
/// combination, as `NAME::<meta>::<storage>` (e.g. `blob_uploads::postgres::fs`), skipped
/// (or failed under HYPER_REQUIRE_TOOLS=1) when a service is missing. A new engine is one
/// line in `backend_tests_meta!` or `backend_tests_storage!`.
#[macro_export]
macro_rules! backend_tests {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                $crate::backend_tests_meta!($test);
            }
        )*
    };
}

/// One module per metadata engine (see `backend_tests!`).
#[macro_export]
macro_rules! backend_tests_meta {
    ($test:ident) => {
        mod sqlite {
            $crate::backend_tests_storage!($test, $crate::common::Meta::Sqlite);
        }
        mod postgres {
            $crate::backend_tests_storage!($test, $crate::common::Meta::Postgres);
        }
    };
}

/// One test per blob storage engine (see `backend_tests!`).
#[macro_export]
macro_rules! backend_tests_storage {
    ($test:ident, $meta:expr) => {
        $crate::backend_test!(fs, $test, $meta, $crate::common::Storage::Fs);
        $crate::backend_test!(s3, $test, $meta, $crate::common::Storage::S3);
    };
}

/// One test of `backend_tests!`.
#[macro_export]
macro_rules! backend_test {
    ($name:ident, $test:ident, $meta:expr, $storage:expr) => {
        #[tokio::test]
        async fn $name() {
            let backend = $crate::common::Backend {
                meta: $meta,
                storage: $storage,
            };
            if backend.available() {
                $crate::$test(backend).await;
            }
        }
    };
}

impl Server {
    /// Like [`Server::start_on`], with extra environment (configuration) on top of the
    /// engines' own.
    pub async fn start_on_with_env(backend: Backend, env: &[(&str, &str)]) -> Server {
        let (mut all, s3) = backend.start();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut s = Server::start_with_env(&all).await;
        s.s3 = s3;
        assert_eq!(
            s.root().join("metadata.db").exists(),
            backend.meta == Meta::Sqlite,
            "{backend:?}: metadata.db in the data directory"
        );
        s
    }
}

/// A registry whose blobs live in the bucket of a fresh `s3s-fs` (metadata stays in the
/// registry's data directory), with extra environment variables. `None` when s3s-fs is not
/// installed (a test failure under `HYPER_REQUIRE_TOOLS=1`). Keep the pair together: the
/// registry is stopped first when it drops.
pub async fn start_s3_server(
    extra_env: &[(&str, &str)],
) -> Option<(Server, test_support::s3::S3Server)> {
    let s3 = test_support::s3::S3Server::start()?;
    let mut env = s3.registry_env();
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with_env(&env).await;
    Some((server, s3))
}
