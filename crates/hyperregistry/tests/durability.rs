//! Crashes, restarts, concurrency and configuration, against the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::SinkExt;
use oci_core::Digest;
use reqwest::{Method, StatusCode};

/// Every committed blob file's content hashes to its name.
fn assert_all_blobs_match_names(root: &std::path::Path) {
    let dir = root.join("blobs").join("sha256");
    let Ok(prefixes) = std::fs::read_dir(&dir) else {
        return;
    };
    for p in prefixes.flatten() {
        for f in std::fs::read_dir(p.path()).unwrap().flatten() {
            let data = std::fs::read(f.path()).unwrap();
            let name = f.file_name().into_string().unwrap();
            assert_eq!(
                Digest::sha256_of(&data).hex(),
                name,
                "blob file {name} does not match its content"
            );
        }
    }
}

#[tokio::test]
async fn kill_9_mid_chunked_upload_then_resume() {
    let mut s = Server::start().await;
    let data = bytes(8 << 20, 7);
    let digest = Digest::sha256_of(&data);
    let loc = s.start_upload("crash/test").await;
    let uuid = loc.rsplit('/').next().unwrap().to_string();
    let first = 1 << 20;
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", format!("0-{}", first - 1))
        .body(data[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // A second chunk streams in; the server is killed while it is half sent.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let client = s.client.clone();
    let url = s.url(&loc);
    let pending = tokio::spawn(async move {
        client
            .patch(url)
            .body(reqwest::Body::wrap_stream(rx))
            .send()
            .await
    });
    let half = 5 << 20; // more than the server's 1 MiB write segment
    for piece in data[first..first + half].chunks(64 << 10) {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    let upload_file = s.root().join("uploads").join(&uuid);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&upload_file)
        .map(|m| m.len())
        .unwrap_or(0)
        <= first as u64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "server never wrote the streamed bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.crash_and_restart().await;
    drop(tx);
    assert!(
        pending
            .await
            .unwrap()
            .map(|r| r.status() != StatusCode::ACCEPTED)
            .unwrap_or(true)
    );

    // Nothing half-done is visible as a blob.
    assert_eq!(
        s.req(Method::HEAD, &format!("/v2/crash/test/blobs/{digest}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_all_blobs_match_names(&s.root());

    // The session survived: resume from where the server says it is.
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let range = header(&r, "range");
    let have: usize = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
    // Whatever reached the disk before the kill counts; the rest is sent again.
    assert!(have > first && have <= first + half, "{range}");
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", format!("{have}-{}", data.len() - 1))
        .body(data[have..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = s
        .req(Method::GET, &format!("/v2/crash/test/blobs/{digest}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(Digest::sha256_of(&got), digest);
    assert_all_blobs_match_names(&s.root());
}

#[tokio::test]
async fn kill_9_mid_monolithic_upload_leaves_no_blob() {
    let mut s = Server::start().await;
    let data = bytes(2 << 20, 8);
    let digest = Digest::sha256_of(&data);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let client = s.client.clone();
    let url = s.url(&format!("/v2/mono/blobs/uploads/?digest={digest}"));
    let pending = tokio::spawn(async move {
        client
            .post(url)
            .body(reqwest::Body::wrap_stream(rx))
            .send()
            .await
    });
    tx.send(Ok(Bytes::copy_from_slice(&data[..1 << 20])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.crash_and_restart().await;
    drop(tx);
    let _ = pending.await;
    assert_eq!(
        s.req(Method::HEAD, &format!("/v2/mono/blobs/{digest}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(count_files(&s.root().join("blobs")), 0);
    assert_eq!(
        count_files(&s.root().join("uploads")),
        0,
        "the interrupted upload's data is removed at start"
    );
    // The same push afterwards succeeds.
    s.push_blob("mono", &data).await;
    assert_all_blobs_match_names(&s.root());
}

#[tokio::test]
async fn twenty_clients_push_the_same_blob_at_once() {
    let s = Server::start().await;
    let data = bytes(2 << 20, 9);
    let digest = Digest::sha256_of(&data);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = s.client.clone();
        let base = s.url("");
        let data = data.clone();
        let digest = digest.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let r = client
                    .post(format!(
                        "{base}/v2/same/blob/blobs/uploads/?digest={digest}"
                    ))
                    .body(data)
                    .send()
                    .await
                    .unwrap();
                r.status()
            } else {
                let r = client
                    .post(format!("{base}/v2/same/blob/blobs/uploads/"))
                    .send()
                    .await
                    .unwrap();
                let loc = r.headers()["location"].to_str().unwrap().to_string();
                let half = data.len() / 2;
                let r = client
                    .patch(format!("{base}{loc}"))
                    .header("content-range", format!("0-{}", half - 1))
                    .body(data[..half].to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                let r = client
                    .put(format!("{base}{loc}?digest={digest}"))
                    .body(data[half..].to_vec())
                    .send()
                    .await
                    .unwrap();
                r.status()
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    let got = s
        .req(Method::GET, &format!("/v2/same/blob/blobs/{digest}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &data[..]);
    assert_eq!(
        count_files(&s.root().join("blobs")),
        1,
        "one copy of the content"
    );
    assert_eq!(
        count_files(&s.root().join("uploads")),
        0,
        "no session left behind"
    );
    assert_all_blobs_match_names(&s.root());
}

#[tokio::test]
async fn concurrent_tag_updates_never_serve_a_stale_tag_after_the_last_write() {
    let s = Server::start().await;
    let mut manifests = Vec::new();
    for i in 0..5u8 {
        let (m, d) = s.push_image("race", &format!("v{i}"), &[i; 10]).await;
        manifests.push((m, d));
    }
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let client = s.client.clone();
            let url = s.url("/v2/race/manifests/moving");
            tokio::spawn(async move {
                for _ in 0..100 {
                    let _ = client.get(&url).send().await.unwrap().bytes().await;
                }
            })
        })
        .collect();
    for round in 0..20 {
        let (m, _) = &manifests[round % manifests.len()];
        assert_eq!(
            s.put_manifest("race", "moving", OCI_MANIFEST, m)
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    for r in readers {
        r.await.unwrap();
    }
    let (_, last) = &manifests[19 % manifests.len()];
    let r = s
        .req(Method::GET, "/v2/race/manifests/moving")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), last.to_string());
}

#[tokio::test]
async fn graceful_restart_keeps_everything() {
    let mut s = Server::start().await;
    let (m, d) = s.push_image("keep/me", "v1", b"persist").await;
    let loc = s.start_upload("keep/me").await;
    s.req(Method::PATCH, &loc)
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    s.stop_and_restart().await;
    let r = s
        .req(Method::GET, "/v2/keep/me/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..]);
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-999");
    let c: serde_json::Value = s
        .req(Method::GET, "/v2/_catalog")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["repositories"], serde_json::json!(["keep/me"]));
}

#[tokio::test]
async fn configuration_from_a_file_and_database_url_from_env() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = dir.path().join("files");
    let db = dir.path().join("elsewhere.db");
    let cfg = dir.path().join("registry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "http:\n  addr: 127.0.0.1:{port}\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            root.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
        .arg("--config")
        .arg(&cfg)
        .env(
            "REGISTRY_DATABASE_URL",
            format!("sqlite://{}", db.display()),
        )
        .env_remove("REGISTRY_HTTP_ADDR")
        .env_remove("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v2/");
    let mut ok = false;
    for _ in 0..200 {
        if client.get(&url).send().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "registry configured from file did not come up");
    let r = client
        .post(format!(
            "http://127.0.0.1:{port}/v2/cfg/blobs/uploads/?digest={}",
            Digest::sha256_of(b"c")
        ))
        .body("c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(root.join("blobs").is_dir());
    assert!(db.exists());
    assert!(!root.join("metadata.db").exists());
    child.kill().unwrap();
    child.wait().unwrap();

    // A missing config file is a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
        .arg("--config")
        .arg(dir.path().join("nope.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[tokio::test]
async fn policy_read_only_delete_disabled_and_upload_limit() {
    let ro =
        Server::start_with_env(&[("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")]).await;
    let r = ro
        .req(Method::POST, "/v2/x/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    assert_eq!(
        ro.req(Method::GET, "/v2/_catalog")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let nodelete = Server::start_with_env(&[("REGISTRY_STORAGE_DELETE_ENABLED", "false")]).await;
    let (_, d) = nodelete.push_image("keep", "v1", b"x").await;
    let r = nodelete
        .req(Method::DELETE, &format!("/v2/keep/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    assert_eq!(
        nodelete
            .req(Method::GET, "/v2/keep/manifests/v1")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let limited = Server::start_with_env(&[("REGISTRY_HTTP_MAXCONCURRENTUPLOADS", "1")]).await;
    let loc = limited.start_upload("busy").await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let client = limited.client.clone();
    let url = limited.url(&loc);
    let pending = tokio::spawn(async move {
        client
            .patch(url)
            .body(reqwest::Body::wrap_stream(rx))
            .send()
            .await
    });
    tx.send(Ok(Bytes::from_static(b"first bytes")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = limited
        .req(Method::POST, "/v2/busy/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "retry-after"), "1");
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    drop(tx);
    assert_eq!(
        pending.await.unwrap().unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        limited
            .req(Method::POST, "/v2/busy/blobs/uploads/")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperregistry"))
        .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            dir.path().join("data"),
        )
        .env("REGISTRY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if client.get(format!("{base}/v2/")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .post(format!("{base}/v2/logged/blobs/uploads/"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    // SIGTERM: graceful shutdown flushes and exits 0.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("trace-me-42"))
        .unwrap_or_else(|| panic!("no log line with the request id:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("log lines are JSON");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["status"], 202);
    assert_eq!(v["span"]["request_id"], "trace-me-42");
}
