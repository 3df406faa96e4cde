//! hyperregistry with `REGISTRY_STORAGE=s3` against a real S3 implementation (`s3s-fs`):
//! the upload protocol, presigned redirects, and skopeo round trips.

mod common;

use std::process::Command;

use common::*;
use oci_core::Digest;
use reqwest::{Method, StatusCode};
use test_support::require_tool;

/// 5 MiB parts: the smallest S3 allows, so modest blobs span several.
const SMALL_PARTS: (&str, &str) = ("REGISTRY_STORAGE_S3_CHUNKSIZE", "5242880");

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

fn blob_key(d: &Digest) -> String {
    format!("blobs/sha256/{}/{}", &d.hex()[..2], d.hex())
}

#[tokio::test]
async fn chunked_upload_through_the_api_lands_in_the_bucket() {
    let Some((s, s3)) = start_s3_server(&[SMALL_PARTS]).await else {
        return;
    };
    let blob = bytes(13 * 1024 * 1024 + 77, 21);
    let digest = Digest::sha256_of(&blob);
    let location = s.start_upload("s3/chunked").await;
    // Chunks below, at and above the 5 MiB part size.
    let cuts = [0, 2 << 20, 7 << 20, 9 << 20, blob.len()];
    let mut location = location;
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let r = s
            .client
            .patch(s.url(&location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{a}-{}", b - 1))
            .body(blob[a..b].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
        assert_eq!(header(&r, "range"), format!("0-{}", b - 1));
        location = header(&r, "location");
    }
    // The session reports its size from the stored state.
    let r = s.client.get(s.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", blob.len() - 1));
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = s
        .client
        .put(s.url(&format!("{location}{sep}digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(s3.objects("blobs"), vec![blob_key(&digest)]);
    assert_eq!(s3.session_leftovers(), 0);

    let r = s
        .req(Method::GET, &format!("/v2/s3/chunked/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), blob);
    let r = s
        .req(Method::GET, &format!("/v2/s3/chunked/blobs/{digest}"))
        .header("range", "bytes=5242870-5242889")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), blob[5242870..5242890]);

    // A wrong digest: 400 DIGEST_INVALID, nothing stored, session gone.
    let location = s.start_upload("s3/chunked").await;
    let r = s
        .client
        .patch(s.url(&location))
        .body(blob[..6 << 20].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location");
    let wrong = Digest::sha256_of(b"not these bytes");
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = s
        .client
        .put(s.url(&format!("{location}{sep}digest={wrong}")))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_eq!(s3.objects("blobs"), vec![blob_key(&digest)]);
    assert_eq!(s3.session_leftovers(), 0);

    // Cancel aborts the multipart upload and removes the tail. (A first body of known length
    // is one staging object; the chunk after it turns that into parts.)
    let location = s.start_upload("s3/chunked").await;
    let r = s
        .client
        .patch(s.url(&location))
        .body(blob[..7 << 20].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(s3.pending_multipart_files(), Vec::<String>::new());
    assert_eq!(s3.session_leftovers(), 1, "one staging object");
    let r = s
        .client
        .patch(s.url(&header(&r, "location")))
        .header("content-range", format!("{}-{}", 7 << 20, (8 << 20) - 1))
        .body(blob[7 << 20..8 << 20].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    assert!(!s3.pending_multipart_files().is_empty());
    let r = s
        .client
        .delete(s.url(&header(&r, "location")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(s3.session_leftovers(), 0);
}

#[tokio::test]
async fn blob_reads_redirect_to_presigned_urls() {
    let Some((s, s3)) = start_s3_server(&[("REGISTRY_STORAGE_S3_REDIRECT", "true")]).await else {
        return;
    };
    let blob = bytes(1 << 20, 22);
    let digest = s.push_blob("s3/redirect", &blob).await;
    let path = format!("/v2/s3/redirect/blobs/{digest}");
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // GET and HEAD answer 307 to a presigned URL on the S3 endpoint, Range or not.
    for (method, range) in [
        (Method::GET, None),
        (Method::HEAD, None),
        (Method::GET, Some("bytes=100-199")),
    ] {
        let mut rb = direct.request(method.clone(), s.url(&path));
        if let Some(r) = range {
            rb = rb.header("range", r);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::TEMPORARY_REDIRECT,
            "{method} {range:?}"
        );
        let location = header(&r, "location");
        assert!(
            location.starts_with(&format!("{}/{}/", s3.endpoint(), s3.bucket())),
            "{location}"
        );
        assert!(location.contains("X-Amz-Signature="), "{location}");
        assert_eq!(header(&r, "docker-content-digest"), digest.to_string());
    }
    // Blobs not in the repository are still refused by the registry itself.
    let r = direct
        .get(s.url(&format!("/v2/s3/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A client that follows redirects gets the bytes from S3.
    let r = s.client.get(s.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), blob);
    let r = s
        .client
        .get(s.url(&path))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 100-199/{}", blob.len())
    );
    assert_eq!(r.bytes().await.unwrap(), blob[100..200]);
    let r = s.client.head(s.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), blob.len().to_string());

    // Several ranges: S3 cannot, so the registry serves them itself.
    let r = direct
        .get(s.url(&path))
        .header("range", "bytes=0-9,1000-1009")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(header(&r, "content-type").starts_with("multipart/byteranges"));
    let body = r.bytes().await.unwrap();
    assert!(body.windows(10).any(|w| w == &blob[1000..1010]));
}

#[tokio::test]
async fn skopeo_round_trips_through_s3() {
    if !require_tool("skopeo") {
        return;
    }
    for redirect in ["false", "true"] {
        let Some((s, s3)) =
            start_s3_server(&[SMALL_PARTS, ("REGISTRY_STORAGE_S3_REDIRECT", redirect)]).await
        else {
            return;
        };
        let host = format!("127.0.0.1:{}", s.port);
        // A layer of several parts, as a real gzip stream (skopeo recompresses others).
        let layer = gzip(&bytes(12 << 20, 23));
        let (_m, digest) = s.push_image("origin/app", "v1", &layer).await;

        // Registry to registry (blob mounts), then out to an OCI layout and back in through
        // skopeo's own uploads.
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{host}/origin/app:v1"),
            &format!("docker://{host}/copy/app:v2"),
        ]);
        let out = tempfile::tempdir().unwrap();
        let layout = out.path().join("layout");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/copy/app:v2"),
            &format!("oci:{}:v2", layout.display()),
        ]);
        let layer_digest = Digest::sha256_of(&layer);
        let pulled = std::fs::read(layout.join("blobs/sha256").join(layer_digest.hex())).unwrap();
        assert_eq!(
            Digest::sha256_of(&pulled),
            layer_digest,
            "redirect={redirect}"
        );
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v2", layout.display()),
            &format!("docker://{host}/back/app:v3"),
        ]);
        let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/back/app:v3"),
        ]))
        .unwrap();
        assert_eq!(inspect["Digest"], digest.to_string());
        assert_eq!(inspect["Layers"][0], layer_digest.to_string());

        // Every blob is in the bucket once, named by its digest: its content, or a link
        // (an empty object) to a data object holding it. No session is left.
        let bucket = s3.dir.path().join(s3.bucket());
        let data_digests: Vec<String> = s3
            .objects("data")
            .iter()
            .map(|k| {
                Digest::sha256_of(&std::fs::read(bucket.join(k)).unwrap())
                    .hex()
                    .to_string()
            })
            .collect();
        let mut links = 0;
        for key in s3.objects("blobs") {
            let data = std::fs::read(bucket.join(&key)).unwrap();
            let hex = key.rsplit('/').next().unwrap();
            if data.is_empty() && hex != Digest::sha256_of(b"").hex() {
                links += 1;
                assert!(
                    data_digests.iter().any(|d| d == hex),
                    "link {key} to nothing"
                );
            } else {
                assert_eq!(Digest::sha256_of(&data).hex(), hex);
            }
        }
        assert_eq!(links, data_digests.len(), "data objects without a link");
        assert!(s3.objects("blobs").contains(&blob_key(&layer_digest)));
        assert_eq!(s3.objects("uploads"), Vec::<String>::new());
        assert_eq!(s3.pending_multipart_files(), Vec::<String>::new());
    }
}
