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
