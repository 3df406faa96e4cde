//! Real registry clients against hyperregistry: skopeo copies, inspects, lists and deletes.

mod common;

use std::process::Command;

use common::*;
use oci_core::Digest;
use reqwest::{Method, StatusCode};
use test_support::require_tool;

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

#[tokio::test]
async fn skopeo_copies_inspects_lists_and_deletes() {
    if !require_tool("skopeo") {
        return;
    }
    let s = Server::start().await;
    // A real gzip stream: skopeo recompresses layers that are not.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes(300_000, 11)).unwrap();
    let layer = gz.finish().unwrap();
    let (_m, digest) = s.push_image("origin/app", "v1", &layer).await;
    let host = format!("127.0.0.1:{}", s.port);

    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{host}/origin/app:v1"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.to_string());
    assert_eq!(inspect["Architecture"], "amd64");

    // Registry to registry: skopeo pulls from and pushes to hyperregistry (with blob mounts).
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{host}/origin/app:v1"),
        &format!("docker://{host}/copy/app:v2"),
    ]);
    let r = s
        .req(Method::GET, "/v2/copy/app/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), digest.to_string());
    let tags: serde_json::Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/copy/app"),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v2"]));

    // Out to an OCI layout and back in under a new name: the layer survives byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/origin/app:v1"),
        &format!("oci:{}:v1", layout.display()),
    ]);
    let layer_digest = Digest::sha256_of(&layer);
    let on_disk = std::fs::read(layout.join("blobs/sha256").join(layer_digest.hex())).unwrap();
    assert_eq!(on_disk, layer);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/from/layout:v3"),
    ]);
    let got = s
        .req(
            Method::GET,
            &format!("/v2/from/layout/blobs/{layer_digest}"),
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &layer[..]);

    skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{host}/copy/app:v2"),
    ]);
    let r = s
        .req(Method::GET, "/v2/copy/app/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
