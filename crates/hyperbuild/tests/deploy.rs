//! The registry's container file (`deploy/Containerfile`) builds with hyperbuild and the
//! image runs under docker: an unprivileged user, the data volume, port 5000, env-var
//! configuration. The `prebuilt` target is built (it packages the workspace's own binary);
//! the source-building stage needs a Rust builder image from a public registry, which this
//! machine cannot reach, so it is not exercised here.

use std::path::Path;
use std::time::{Duration, Instant};

use test_support::*;

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
}

#[test]
fn containerfile_builds_and_the_image_serves_the_registry() {
    if !["docker", "dockerd", "runc", "debootstrap"]
        .iter()
        .all(|t| require_tool(t))
    {
        return;
    }
    let registry = Registry::hyper();
    let hb = Hb::new();
    let work = tempfile::tempdir().unwrap();
    let (_, tarball) = debootstrap_tarball(work.path(), &["ca-certificates"]);
    let base = format!("{}/debian:bookworm", registry.host());
    hb.ok(&["import", tarball.to_str().unwrap(), &base]);

    // The build context, laid out like the repository: the container file, the ignore file
    // and the binary where `cargo build --release` puts it.
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("deploy")).unwrap();
    std::fs::create_dir_all(ctx.join("target/release")).unwrap();
    let root = workspace_root();
    std::fs::copy(
        root.join("deploy/Containerfile"),
        ctx.join("deploy/Containerfile"),
    )
    .unwrap();
    std::fs::copy(root.join(".dockerignore"), ctx.join(".dockerignore")).unwrap();
    std::fs::copy(
        hyperregistry_bin(),
        ctx.join("target/release/hyperregistry"),
    )
    .unwrap();
    // Something the ignore file must keep out of the image's context.
    std::fs::write(ctx.join("target/release/secret.txt"), "not for images").unwrap();

    let image = format!("{}/hyperregistry:test", registry.host());
    let arg = format!("BASE_IMAGE={base}");
    hb.ok(&[
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("deploy/Containerfile").to_str().unwrap(),
        "--target",
        "prebuilt",
        "--build-arg",
        &arg,
        "-i",
        &image,
        "--push",
    ]);
    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", &image])).unwrap();
    let config = &info["Config"];
    assert_eq!(config["User"], "registry", "{config}");
    assert!(config["ExposedPorts"]["5000/tcp"].is_object(), "{config}");
    assert!(
        config["Volumes"]["/var/lib/hyperregistry"].is_object(),
        "{config}"
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hyperregistry"])
    );

    ensure_dockerd();
    sh("docker", &["pull", "-q", &image]);
    let port = free_port();
    let name = format!("hyperregistry-deploy-test-{port}");
    let addr = format!("REGISTRY_HTTP_ADDR=127.0.0.1:{port}");
    sh(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "-e",
            &addr,
            &image,
        ],
    );
    let cleanup = || {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &name])
            .output();
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &image])
            .output();
    };
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client
            .get(format!("{url}/v2/"))
            .send()
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        if Instant::now() > deadline {
            let logs = std::process::Command::new("docker")
                .args(["logs", &name])
                .output()
                .unwrap();
            cleanup();
            panic!(
                "the containerized registry did not come up:\n{}",
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // It stores data in its volume as the unprivileged user: a monolithic blob upload.
    let blob = b"stored by the containerized registry";
    let digest = format!("sha256:{}", sha256_hex(blob));
    let put = client
        .post(format!(
            "{url}/v2/deploy/test/blobs/uploads/?digest={digest}"
        ))
        .body(blob.to_vec())
        .send()
        .unwrap();
    let status = put.status();
    let got = client
        .get(format!("{url}/v2/deploy/test/blobs/{digest}"))
        .send()
        .unwrap();
    let whoami = sh("docker", &["exec", &name, "id", "-un"]);
    let files = sh(
        "docker",
        &["exec", &name, "ls", "-A", "/var/lib/hyperregistry"],
    );
    let leaked = std::process::Command::new("docker")
        .args(["exec", &name, "find", "/", "-name", "secret.txt", "-xdev"])
        .output()
        .unwrap();
    cleanup();
    assert_eq!(status, 201);
    assert_eq!(got.bytes().unwrap().as_ref(), blob);
    assert_eq!(whoami.trim(), "registry");
    assert!(files.contains("metadata.db"), "{files}");
    assert!(
        String::from_utf8_lossy(&leaked.stdout).trim().is_empty(),
        "an ignored file reached the image"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    oci_core::Digest::sha256_of(data).hex().to_string()
}
