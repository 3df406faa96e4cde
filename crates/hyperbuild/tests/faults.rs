//! Dropped connections in the middle of layer transfers: pushes resume chunked uploads from
//! the registry's offset, pulls resume downloads with Range, and the bytes that arrive are
//! exactly the image's.

use std::sync::atomic::Ordering;

use test_support::*;

fn seed_big(registry: &Registry, repo_tag: &str, size: usize) -> oci_core::Digest {
    let dir = tempfile::tempdir().unwrap();
    let layer = big_layout(dir.path(), "t", size);
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", dir.path().display()),
            &format!("docker://{}/{repo_tag}", registry.host()),
        ],
    );
    layer
}

#[test]
fn push_resumes_a_chunked_upload_after_the_connection_drops() {
    if !require_tool("skopeo") {
        return;
    }
    let registry = Registry::hyper();
    let layer = seed_big(&registry, "src/big:1", 100 << 20);
    let hb = Hb::new();
    hb.ok(&["pull", &format!("{}/src/big:1", registry.host())]);
    // 100 MiB layer: chunked (64 MiB chunks); the connection dies 40 MiB into the first one.
    let proxy = FaultProxy::start(registry.port, Some(40 << 20), None);
    let dest = format!("127.0.0.1:{}/dst/big:1", proxy.port);
    let out = hb.run(&["push", &format!("{}/src/big:1", registry.host()), &dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the fault fired");
    assert!(
        stderr.contains("resuming"),
        "the upload resumed rather than restarting:\n{stderr}"
    );
    assert_eq!(blob_sha256(&registry.host(), "dst/big", &layer), layer);
}

#[test]
fn pull_resumes_a_download_after_the_connection_drops() {
    if !require_tool("skopeo") {
        return;
    }
    let registry = Registry::hyper();
    let layer = seed_big(&registry, "src/big:1", 60 << 20);
    let proxy = FaultProxy::start(registry.port, None, Some(30 << 20));
    let hb = Hb::new();
    let image = format!("127.0.0.1:{}/src/big:1", proxy.port);
    let out = hb.run(&["pull", &image]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the fault fired");
    assert!(
        stderr.contains("resuming"),
        "the download resumed with Range:\n{stderr}"
    );
    let stored = std::fs::read(hb.root().join("blobs/sha256").join(layer.hex())).unwrap();
    assert_eq!(oci_core::Digest::sha256_of(&stored), layer);
}

#[test]
fn pull_picks_the_requested_platform_from_an_index() {
    if !require_tool("skopeo") {
        return;
    }
    let registry = Registry::hyper();
    let dir = tempfile::tempdir().unwrap();
    // Two single-platform images, then an index over them, pushed with skopeo --all.
    let mut entries = Vec::new();
    for (arch, content) in [
        ("amd64", b"amd64 layer".as_slice()),
        ("arm64", b"arm64 layer".as_slice()),
    ] {
        let sub = dir.path().join(arch);
        let d = oci_core::Digest::sha256_of(content);
        write_layout(
            &sub,
            "t",
            content,
            "application/vnd.oci.image.layer.v1.tar",
            &d,
            arch,
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sub.join("index.json")).unwrap()).unwrap();
        let mut m = index["manifests"][0].clone();
        m.as_object_mut().unwrap().remove("annotations");
        m["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        entries.push(m);
        for f in std::fs::read_dir(sub.join("blobs/sha256"))
            .unwrap()
            .flatten()
        {
            std::fs::create_dir_all(dir.path().join("all/blobs/sha256")).unwrap();
            std::fs::copy(
                f.path(),
                dir.path().join("all/blobs/sha256").join(f.file_name()),
            )
            .unwrap();
        }
    }
    let all = dir.path().join("all");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})).unwrap();
    let id = oci_core::Digest::sha256_of(&index);
    std::fs::write(all.join("blobs/sha256").join(id.hex()), &index).unwrap();
    std::fs::write(all.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        all.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id.to_string(), "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]})).unwrap(),
    )
    .unwrap();
    let image = format!("{}/multi/app:1", registry.host());
    sh(
        "skopeo",
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", all.display()),
            &format!("docker://{image}"),
        ],
    );

    let hb = Hb::new();
    hb.ok(&["pull", "--platform", "linux/arm64", &image]);
    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", &image])).unwrap();
    assert_eq!(info["Architecture"], "arm64");
    let remote: serde_json::Value =
        serde_json::from_str(&hb.ok(&["inspect", "--remote", "--platform", "linux/amd64", &image]))
            .unwrap();
    assert_eq!(remote["Architecture"], "amd64");
    let out = hb.run(&["pull", "--platform", "linux/s390x", &image]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no manifest for platform linux/s390x"));
}
