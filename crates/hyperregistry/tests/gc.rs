//! Garbage collection against the real binary: `hyperregistry gc` (offline, dry run) and the
//! server's periodic GC, including GC running while clients push.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use oci_core::Digest;
use reqwest::{Client, Method, StatusCode};

// These run once per engine combination (`NAME::<meta>::<storage>`): GC's queries and
// conditional deletes differ per metadata engine.
backend_tests!(
    dry_run_then_gc_frees_exactly_what_nothing_references,
    gc_running_while_pushes_go_on_loses_nothing_that_ends_up_referenced,
    blobs_reported_present_or_mounted_are_kept_for_the_grace,
    abandoned_upload_sessions_are_purged,
);

/// Run `hyperregistry gc ARGS --json` and return the report.
fn gc_json(s: &Server, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = s.run_cli(&all);
    assert!(
        out.status.success(),
        "gc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("gc --json prints a JSON report")
}

/// Check a report's counts: (manifests, links, blobs, bytes).
fn assert_report(r: &serde_json::Value, want: (u64, u64, u64, u64)) {
    let got = (
        r["manifests_deleted"].as_u64().unwrap(),
        r["links_removed"].as_u64().unwrap(),
        r["blobs_deleted"].as_u64().unwrap(),
        r["bytes_freed"].as_u64().unwrap(),
    );
    assert_eq!(got, want, "report {r}");
    assert!(r["duration"].as_f64().unwrap() >= 0.0);
}

/// GET a blob and verify its digest and size.
async fn verify_blob(client: &Client, base: &str, repo: &str, d: &Digest, size: u64) {
    let r = client
        .get(format!("{base}/v2/{repo}/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "blob {d} in {repo}");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, size, "size of {d} in {repo}");
    assert_eq!(&Digest::sha256_of(&body), d, "content of {d} in {repo}");
}

/// Pull `reference` completely (an index's children too), verifying every digest.
/// Returns the manifest digest.
async fn pull_verified(client: &Client, base: &str, repo: &str, reference: &str) -> Digest {
    let r = client
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header(
            "accept",
            format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "manifest {repo}:{reference}");
    let body = r.bytes().await.unwrap();
    let digest = Digest::sha256_of(&body);
    if reference.contains(':') {
        assert_eq!(reference, digest.to_string());
    }
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let desc = |v: &serde_json::Value| -> (Digest, u64) {
        (
            v["digest"].as_str().unwrap().parse().unwrap(),
            v["size"].as_u64().unwrap(),
        )
    };
    if let Some(children) = m["manifests"].as_array() {
        for c in children {
            let (d, _) = desc(c);
            Box::pin(pull_verified(client, base, repo, &d.to_string())).await;
        }
    } else {
        let (cd, cs) = desc(&m["config"]);
        verify_blob(client, base, repo, &cd, cs).await;
        for l in m["layers"].as_array().unwrap() {
            let (ld, ls) = desc(l);
            verify_blob(client, base, repo, &ld, ls).await;
        }
    }
    digest
}

/// An OCI index of `children` (digest, size).
fn index(children: &[(&Digest, usize)]) -> Vec<u8> {
    let ms: Vec<_> = children
        .iter()
        .map(|(d, s)| {
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s,
                               "platform": {"architecture": "amd64", "os": "linux"}})
        })
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ms}),
    )
    .unwrap()
}

/// Push config + layers and a manifest (optionally with a subject) by `reference`.
async fn push(
    s: &Server,
    repo: &str,
    reference: &str,
    config: &[u8],
    layers: &[&[u8]],
    subject: Option<(&Digest, usize)>,
) -> (Digest, usize) {
    let cd = s.push_blob(repo, config).await;
    let mut ls = Vec::new();
    for l in layers {
        ls.push((s.push_blob(repo, l).await, l.len()));
    }
    let m = image_manifest(&cd, config.len(), &ls, subject);
    let d = Digest::sha256_of(&m);
    let reference = if reference.is_empty() {
        d.to_string()
    } else {
        reference.to_string()
    };
    let r = s.put_manifest(repo, &reference, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    (d, m.len())
}

async fn dry_run_then_gc_frees_exactly_what_nothing_references(backend: Backend) {
    let mut s = Server::start_on(backend).await;
    let base = s.url("");
    let (shared, la1, la2, lb, lc) = (
        bytes(3000, 1),
        bytes(1100, 2),
        bytes(1200, 3),
        // Above S3's smallest part: on S3 its commit links a data object, which GC must
        // delete with the link.
        bytes(6 << 20, 4),
        bytes(1400, 5),
    );
    let sd = Digest::sha256_of(&shared);
    let ld = |b: &[u8]| Digest::sha256_of(b);

    // a:1 = A1 (shared + la1), with referrers R (subject A1) and R2 (subject R).
    let (a1, a1_len) = push(&s, "a", "1", b"{\"c\":\"a1\"}", &[&shared, &la1], None).await;
    let (r1, r1_len) = push(
        &s,
        "a",
        "",
        b"{\"c\":\"sig\"}",
        &[b"signature"],
        Some((&a1, a1_len)),
    )
    .await;
    let (r2, _) = push(&s, "a", "", b"{\"c\":\"sig2\"}", &[], Some((&r1, r1_len))).await;
    // a:2 = A2, then re-pointed to A3: A2 is untagged.
    let ca2 = b"{\"c\":\"a2\"}".to_vec();
    let (a2, a2_len) = push(&s, "a", "2", &ca2, &[&la2], None).await;
    let (a3, _) = push(&s, "a", "2", b"{\"c\":\"a3\"}", &[&shared], None).await;
    // a:multi = an index whose only child C is untagged.
    let (c, c_len) = push(&s, "a", "", b"{\"c\":\"c\"}", &[&lc], None).await;
    let idx = index(&[(&c, c_len)]);
    let r = s.put_manifest("a", "multi", OCI_INDEX, &idx).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // b:1 = B1 (shared + lb), then deleted: shared must survive through a.
    let cb = b"{\"c\":\"b1\"}".to_vec();
    let (b1, b1_len) = push(&s, "b", "1", &cb, &[&shared, &lb], None).await;
    let r = s
        .req(Method::DELETE, &format!("/v2/b/manifests/{b1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // An orphan: content with no metadata (a crash between commit and link).
    let orphan = bytes(777, 6);
    let od = Digest::sha256_of(&orphan);
    std::fs::create_dir_all(s.content_path(&od).parent().unwrap()).unwrap();
    std::fs::write(s.content_path(&od), &orphan).unwrap();

    // Nothing is older than the grace yet: even a dry run finds nothing.
    let r = gc_json(&s, &["--dry-run", "--delete-untagged", "--grace", "1h"]);
    assert_report(&r, (0, 0, 0, 0));
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let pass1 = cb.len() + lb.len() + b1_len + orphan.len();
    let pass2 = ca2.len() + la2.len() + a2_len;
    let files_before = s.stored_blobs();
    let r = gc_json(&s, &["--dry-run", "--delete-untagged", "--grace", "1s"]);
    assert_eq!(r["dry_run"], true);
    assert_report(&r, (1, 5, 7, (pass1 + pass2) as u64));
    assert_eq!(s.stored_blobs(), files_before, "dry run deleted files");

    // A live server's locks are invisible to another process: sweeping is refused.
    let out = s.run_cli(&["gc", "--grace", "1s"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.terminate().success());

    // Without --delete-untagged every manifest stays; b's links, B1's bytes, b's own blobs
    // and the orphan go.
    let r = gc_json(&s, &["--grace", "1s"]);
    assert_eq!(r["dry_run"], false);
    assert_report(&r, (0, 3, 4, pass1 as u64));
    for gone in [&ld(&cb), &ld(&lb), &b1, &od] {
        assert!(!s.content_path(gone).exists(), "{gone} still on disk");
    }
    assert_eq!(s.stored_uploads(), 0, "data left behind by a deleted blob");
    assert!(
        s.content_path(&a2).exists(),
        "untagged manifest swept without the flag"
    );
    // With it, the untagged A2 goes, with its config and layer.
    let r = gc_json(&s, &["--delete-untagged", "--grace", "1s"]);
    assert_report(&r, (1, 2, 3, pass2 as u64));
    for gone in [&ld(&ca2), &ld(&la2), &a2] {
        assert!(!s.content_path(gone).exists(), "{gone} still on disk");
    }
    // Idempotent.
    assert_report(
        &gc_json(&s, &["--delete-untagged", "--grace", "1s"]),
        (0, 0, 0, 0),
    );
    assert_eq!(
        s.stored_blobs(),
        files_before - 7,
        "exactly the reported blobs are gone"
    );

    s.start_again().await;
    let client = s.client.clone();
    assert_eq!(pull_verified(&client, &base, "a", "1").await, a1);
    assert_eq!(pull_verified(&client, &base, "a", "2").await, a3);
    pull_verified(&client, &base, "a", "multi").await;
    for referrer in [&r1, &r2] {
        pull_verified(&client, &base, "a", &referrer.to_string()).await;
    }
    let refs: serde_json::Value = s
        .req(Method::GET, &format!("/v2/a/referrers/{a1}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refs["manifests"][0]["digest"], r1.to_string());
    let status = |repo: &str, what: &str, d: &Digest| {
        let req = s.req(Method::HEAD, &format!("/v2/{repo}/{what}/{d}"));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(status("a", "manifests", &a2).await, StatusCode::NOT_FOUND);
    assert_eq!(status("b", "blobs", &sd).await, StatusCode::NOT_FOUND);
    assert_eq!(status("b", "blobs", &ld(&lb)).await, StatusCode::NOT_FOUND);
    assert_eq!(status("a", "blobs", &sd).await, StatusCode::OK);
    // A layer GC deleted can be pushed again.
    let (again, _) = push(&s, "b", "1", &cb, &[&shared, &lb], None).await;
    assert_eq!(again, b1);
    pull_verified(&client, &base, "b", "1").await;
}

/// One blob push the way docker does it: HEAD (skip when present), else a cross-repository
/// mount when a source is known, else POST + PATCH + PUT.
async fn push_blob_like_docker(
    client: &Client,
    base: &str,
    repo: &str,
    data: &[u8],
    mount_from: Option<&str>,
) {
    let d = Digest::sha256_of(data);
    let r = client
        .head(format!("{base}/v2/{repo}/blobs/{d}"))
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::OK {
        return;
    }
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let start = match mount_from {
        Some(from) => format!("{base}/v2/{repo}/blobs/uploads/?mount={d}&from={from}"),
        None => format!("{base}/v2/{repo}/blobs/uploads/"),
    };
    let r = client.post(start).send().await.unwrap();
    if r.status() == StatusCode::CREATED {
        return; // mounted
    }
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = format!("{base}{}", header(&r, "location"));
    let r = client
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", data.len() - 1))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    let location = format!("{base}{}", header(&r, "location"));
    let r = client
        .put(format!("{location}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

async fn gc_running_while_pushes_go_on_loses_nothing_that_ends_up_referenced(backend: Backend) {
    // GC inside the server every 100 ms with a 1 s grace, sweeping untagged manifests too.
    let s = Server::start_on_with_env(
        backend,
        &[
            ("REGISTRY_GC_INTERVAL", "100ms"),
            ("REGISTRY_GC_GRACEPERIOD", "1s"),
            ("REGISTRY_GC_DELETEUNTAGGED", "true"),
        ],
    )
    .await;
    let base = s.url("");
    let shared: Arc<Vec<Vec<u8>>> =
        Arc::new((0..5).map(|i| bytes(20_000 + i, 100 + i as u64)).collect());
    let rejected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..20usize {
        let (client, base, shared, rejected) = (
            s.client.clone(),
            base.clone(),
            shared.clone(),
            rejected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let repo = format!("team{}/app", p % 4);
            let neighbour = format!("team{}/app", (p + 1) % 4);
            // Some pushers wait longer than the grace between their blobs and the manifest.
            let slow = p % 4 == 0;
            let mut pushed = Vec::new();
            let mut abandoned = Vec::new();
            for k in 0..3usize {
                let config = format!("{{\"pusher\":{p},\"image\":{k}}}").into_bytes();
                let fresh = bytes(5_000 + p * 10 + k, (1000 + p * 10 + k) as u64);
                let layers: Vec<&[u8]> =
                    vec![&shared[(p + k) % 5], &shared[(p * 3 + k + 1) % 5], &fresh];
                let descs: Vec<(Digest, usize)> = layers
                    .iter()
                    .map(|l| (Digest::sha256_of(l), l.len()))
                    .collect();
                let m = image_manifest(&Digest::sha256_of(&config), config.len(), &descs, None);
                let tag = format!("p{p}-{k}");
                let mut attempt = 0;
                loop {
                    push_blob_like_docker(&client, &base, &repo, &config, None).await;
                    for (i, l) in layers.iter().enumerate() {
                        let from = (i < 2).then_some(neighbour.as_str());
                        push_blob_like_docker(&client, &base, &repo, l, from).await;
                    }
                    if slow && attempt == 0 {
                        tokio::time::sleep(Duration::from_millis(3000)).await;
                    }
                    let r = client
                        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
                        .header("content-type", OCI_MANIFEST)
                        .body(m.clone())
                        .send()
                        .await
                        .unwrap();
                    if r.status() == StatusCode::CREATED {
                        break;
                    }
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{body}");
                    rejected.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    assert!(attempt < 10, "push of {repo}:{tag} never succeeded");
                }
                pushed.push((repo.clone(), tag, Digest::sha256_of(&m)));
                // A blob uploaded and never referenced (an interrupted push).
                let junk = bytes(999, (5000 + p * 10 + k) as u64);
                push_blob_like_docker(&client, &base, &repo, &junk, None).await;
                abandoned.push((repo.clone(), Digest::sha256_of(&junk)));
            }
            (pushed, abandoned)
        }));
    }
    let mut pushed = Vec::new();
    let mut abandoned = Vec::new();
    for t in tasks {
        let (p, a) = t.await.expect("pusher panicked");
        pushed.extend(p);
        abandoned.extend(a);
    }
    assert_eq!(pushed.len(), 60);
    assert!(
        rejected.load(Ordering::Relaxed) > 0,
        "GC never removed a blob link a slow pusher had left for longer than the grace"
    );
    // Let GC run over everything once more, everything now older than the grace.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    for (repo, tag, digest) in &pushed {
        assert_eq!(&pull_verified(&s.client, &base, repo, tag).await, digest);
    }
    // And GC did collect: abandoned blobs are gone, from metadata and from disk.
    for (repo, d) in &abandoned {
        let r = s
            .req(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "abandoned {d} in {repo}");
        assert!(!s.content_path(d).exists(), "abandoned {d} still on disk");
    }
    let live: HashSet<_> = pushed.iter().map(|(_, _, d)| d.clone()).collect();
    assert_eq!(live.len(), 60);
}

#[tokio::test]
async fn online_gc_collects_periodically_and_keeps_untagged_without_the_flag() {
    let s = Server::start_with_env(&[
        ("REGISTRY_GC_INTERVAL", "300ms"),
        ("REGISTRY_GC_GRACEPERIOD", "1s"),
    ])
    .await;
    let base = s.url("");
    let (img, _) = s.push_image("on/line", "v1", &bytes(4096, 7)).await;
    let img = Digest::sha256_of(&img);
    let (untagged, _) = push(
        &s,
        "on/line",
        "",
        b"{\"c\":\"u\"}",
        &[b"untagged layer"],
        None,
    )
    .await;
    let junk = s.push_blob("on/line", &bytes(5000, 8)).await;
    let orphan = bytes(600, 9);
    let od = Digest::sha256_of(&orphan);
    std::fs::create_dir_all(s.content_path(&od).parent().unwrap()).unwrap();
    std::fs::write(s.content_path(&od), &orphan).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while s.content_path(&junk).exists() || s.content_path(&od).exists() {
        assert!(Instant::now() < deadline, "periodic GC did not collect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = s
        .req(Method::HEAD, &format!("/v2/on/line/blobs/{junk}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(pull_verified(&s.client, &base, "on/line", "v1").await, img);
    assert_eq!(
        pull_verified(&s.client, &base, "on/line", &untagged.to_string()).await,
        untagged
    );
}

async fn blobs_reported_present_or_mounted_are_kept_for_the_grace(backend: Backend) {
    // The server refreshes a link older than half its grace when it reports the blob.
    let mut s = Server::start_on_with_env(backend, &[("REGISTRY_GC_GRACEPERIOD", "2s")]).await;
    let base = s.url("");
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    let layer = bytes(3000, 11);
    let control = bytes(1000, 12);
    let h = s.push_blob("y", &config).await;
    let m = s.push_blob("x", &layer).await;
    let u = s.push_blob("y", &control).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    // A client checks the config (present: it will not upload it) and mounts the layer.
    let r = s
        .req(Method::HEAD, &format!("/v2/y/blobs/{h}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .req(
            Method::POST,
            &format!("/v2/y/blobs/uploads/?mount={m}&from=x"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(s.terminate().success());
    // x's link to the layer and y's untouched control blob are past the grace; the rest is
    // not. The layer's content stays: y links it now.
    let r = gc_json(&s, &["--grace", "2s"]);
    assert_report(&r, (0, 2, 1, control.len() as u64));
    s.start_again().await;
    let manifest = image_manifest(&h, config.len(), &[(m.clone(), layer.len())], None);
    let r = s.put_manifest("y", "1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(
        pull_verified(&s.client, &base, "y", "1").await,
        Digest::sha256_of(&manifest)
    );
    for (repo, d) in [("y", &u), ("x", &m)] {
        let r = s
            .req(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{repo} {d}");
    }
}

/// Start an upload session in `repo` and send `data` in one PATCH; returns its Location.
async fn abandon_upload(s: &Server, repo: &str, data: Vec<u8>) -> String {
    let location = s.start_upload(repo).await;
    let r = s
        .client
        .patch(s.url(&location))
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    header(&r, "location")
}

async fn abandoned_upload_sessions_are_purged(backend: Backend) {
    let mut s = Server::start_on(backend).await;
    // Abandoned: one of 7 MiB (on S3 a data object of its own) and one of 1000 bytes.
    let big = abandon_upload(&s, "up/x", bytes(7 << 20, 31)).await;
    let small = abandon_upload(&s, "up/y", bytes(1000, 32)).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let recent = bytes(100, 33);
    let fresh = abandon_upload(&s, "up/x", recent.clone()).await;
    assert!(s.stored_uploads() > 0);

    let r = gc_json(&s, &["--dry-run", "--upload-age", "1s"]);
    assert_eq!(r["uploads_purged"], 2, "{r}");
    // The default age (gc.uploadage, a week) keeps them.
    assert!(s.terminate().success());
    assert_eq!(gc_json(&s, &[])["uploads_purged"], 0);
    let r = gc_json(&s, &["--upload-age", "1s"]);
    assert_eq!(r["uploads_purged"], 2, "{r}");
    assert_eq!(gc_json(&s, &["--upload-age", "1s"])["uploads_purged"], 0);

    s.start_again().await;
    for gone in [&big, &small] {
        let r = s.client.get(s.url(gone)).send().await.unwrap();
        assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // The recent session goes on.
    let r = s.client.get(s.url(&fresh)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-99");
    let digest = Digest::sha256_of(&recent);
    let sep = if fresh.contains('?') { '&' } else { '?' };
    let r = s
        .client
        .put(s.url(&format!("{fresh}{sep}digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    // Nothing of the purged sessions is left in storage.
    assert_eq!(s.stored_uploads(), 0);
}
