//! An S3-compatible server for tests: `s3s-fs` (real SigV4 checks, S3's 5 MiB minimum part
//! size) on a free loopback port, with its own data directory, keys and bucket.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Registry, free_port, hyperregistry_bin, require_tool, wait_http};

/// Access key of every test server.
pub const ACCESS_KEY: &str = "hyper-test-access";
/// Secret key of every test server.
pub const SECRET_KEY: &str = "hyper-test-secret-key-0123456789";
/// The bucket every test server starts with.
pub const BUCKET: &str = "registry";

/// Where `s3s-fs` is: on `PATH`, else in Cargo's bin directory (where `cargo install` puts
/// it). `None` when missing (a test failure under `HYPER_REQUIRE_TOOLS=1`).
pub fn s3s_fs_bin() -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .arg("-c")
        .arg("command -v s3s-fs")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if on_path.is_some() {
        return on_path;
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(p) = cargo_home.map(|h| h.join("bin/s3s-fs"))
        && p.exists()
    {
        return Some(p);
    }
    require_tool("s3s-fs");
    None
}

/// A running `s3s-fs`, killed on drop.
pub struct S3Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory (one subdirectory per bucket).
    pub dir: tempfile::TempDir,
}

impl S3Server {
    /// Start a server with the bucket [`BUCKET`]; `None` when `s3s-fs` is not installed
    /// (and tools are not required).
    pub fn start() -> Option<S3Server> {
        let bin = s3s_fs_bin()?;
        let dir = tempfile::tempdir().unwrap();
        // s3s-fs keeps each bucket as a directory of its root.
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("s3s-fs exited early: {status}");
            }
            assert!(Instant::now() < deadline, "s3s-fs did not come up");
            std::thread::sleep(Duration::from_millis(25));
        }
        Some(S3Server { child, port, dir })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The access key.
    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    /// The secret key.
    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// Files s3s-fs holds for the bucket under `prefix` (objects only: its hidden metadata
    /// files and multipart part files live elsewhere in the root).
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let rel = path
                        .strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .to_string();
                    out.push(rel);
                }
            }
        }
        let base = self.dir.path().join(BUCKET);
        let mut out = Vec::new();
        walk(&base.join(prefix), &base, &mut out);
        out.sort();
        out
    }

    /// Link objects under `<prefix>blobs/`: the empty objects other than the empty blob,
    /// each of which points to one object under `data/`.
    pub fn links(&self, prefix: &str) -> Vec<String> {
        const EMPTY_SHA256: &str =
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bucket = self.dir.path().join(BUCKET);
        self.objects(&format!("{prefix}blobs"))
            .into_iter()
            .filter(|k| {
                !k.ends_with(EMPTY_SHA256)
                    && std::fs::metadata(bucket.join(k)).is_ok_and(|m| m.len() == 0)
            })
            .collect()
    }

    /// What upload sessions left in the bucket: tail objects, multipart uploads in
    /// progress, and data objects no link points to.
    pub fn session_leftovers(&self) -> usize {
        self.objects("uploads").len()
            + self.pending_multipart_files().len()
            + self
                .objects("data")
                .len()
                .saturating_sub(self.links("").len())
    }

    /// Multipart uploads in progress (s3s-fs keeps one marker file per upload id, and one
    /// file per uploaded part, in its root).
    pub fn pending_multipart_files(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".upload"))
            .collect();
        out.sort();
        out
    }

    /// The `REGISTRY_*` variables that make hyperregistry store blobs in this server's bucket.
    pub fn registry_env(&self) -> Vec<(String, String)> {
        [
            ("REGISTRY_STORAGE", "s3".to_string()),
            ("REGISTRY_STORAGE_S3_BUCKET", BUCKET.to_string()),
            ("REGISTRY_STORAGE_S3_ENDPOINT", self.endpoint()),
            ("REGISTRY_STORAGE_S3_REGION", "us-east-1".to_string()),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", ACCESS_KEY.to_string()),
            ("REGISTRY_STORAGE_S3_SECRETKEY", SECRET_KEY.to_string()),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// hyperregistry storing blobs in `s3`'s bucket (metadata in its own data directory),
    /// with extra environment variables (`REGISTRY_STORAGE_S3_REDIRECT=true`, …).
    pub fn hyper_s3(s3: &S3Server, extra_env: &[(&str, &str)]) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(hyperregistry_bin());
        cmd.env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                dir.path().join("data"),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (k, v) in s3.registry_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        wait_http(&format!("http://127.0.0.1:{port}/v2/"), &mut child, false);
        Registry { child, port, dir }
    }
}
