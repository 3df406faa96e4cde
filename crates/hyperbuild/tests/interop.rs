//! hyperbuild against real registries and real clients: images pushed by hyperbuild are
//! pulled and run by docker and podman and read by skopeo; images pushed by docker and
//! skopeo are pulled and unpacked by hyperbuild; the same against CNCF Distribution.

use test_support::*;

fn tools(names: &[&str]) -> bool {
    names.iter().all(|n| require_tool(n))
}

/// skopeo → registry → hyperbuild pull + unpack → hyperbuild push → skopeo, docker, podman.
fn round_trip(registry: &Registry) {
    let host = registry.host();
    seed_with_skopeo(&host, "seed/busybox:1");
    let hb = Hb::new();
    let digest = hb.ok(&["pull", &format!("{host}/seed/busybox:1")]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let images = hb.ok(&["images"]);
    assert!(images.contains(&format!("{host}/seed/busybox")), "{images}");

    let out_dir = tempfile::tempdir().unwrap();
    let rootfs = out_dir.path().join("rootfs");
    hb.ok(&[
        "unpack",
        &format!("{host}/seed/busybox:1"),
        rootfs.to_str().unwrap(),
    ]);
    assert_busybox_tree(&rootfs);

    // Push under a new name: the blobs are mounted or uploaded, the manifest last.
    hb.ok(&[
        "tag",
        &format!("{host}/seed/busybox:1"),
        &format!("{host}/pushed/busybox:2"),
    ]);
    let out = hb.run(&["push", &format!("{host}/pushed/busybox:2")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 mounted"),
        "config and layer are mounted from seed/busybox:\n{stderr}"
    );
    let pushed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        pushed.trim(),
        digest.trim(),
        "same manifest bytes, same digest"
    );

    let inspect: serde_json::Value = serde_json::from_str(&sh(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/pushed/busybox:2"),
        ],
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.trim());
    assert_eq!(inspect["Os"], "linux");

    // hyperbuild inspect, remote and local.
    let remote: serde_json::Value =
        serde_json::from_str(&hb.ok(&["inspect", "--remote", &format!("{host}/pushed/busybox:2")]))
            .unwrap();
    assert_eq!(remote["Digest"], digest.trim());
    assert_eq!(remote["Config"]["Cmd"][1], "cat");
    let local: serde_json::Value =
        serde_json::from_str(&hb.ok(&["inspect", &format!("{host}/pushed/busybox:2")])).unwrap();
    assert_eq!(local["Digest"], digest.trim());

    ensure_dockerd();
    let image = format!("{host}/pushed/busybox:2");
    sh("docker", &["pull", "-q", &image]);
    let said = sh("docker", &["run", "--rm", "--network", "none", &image]);
    assert_eq!(said, HELLO);
    // docker push → hyperbuild pull: a client we did not write filled this repository.
    let from_docker = format!("{host}/from/docker:3");
    sh("docker", &["tag", &image, &from_docker]);
    sh("docker", &["push", "-q", &from_docker]);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &image, &from_docker])
        .output();
    let hb2 = Hb::new();
    hb2.ok(&["pull", &from_docker]);
    let rootfs = out_dir.path().join("from-docker");
    hb2.ok(&["unpack", &from_docker, rootfs.to_str().unwrap()]);
    assert_busybox_tree(&rootfs);

    podman(&["pull", "-q", "--tls-verify=false", &image]);
    let mut run = vec!["run", "--rm"];
    run.extend(PODMAN_RUN);
    run.push(&image);
    assert_eq!(podman(&run), HELLO);
    let _ = std::process::Command::new("podman")
        .args(["--storage-driver", "vfs", "rmi", "-f", &image])
        .output();
}

#[test]
fn round_trip_with_hyperregistry() {
    if !tools(&["skopeo", "docker", "dockerd", "podman", "busybox"]) {
        return;
    }
    round_trip(&Registry::hyper());
}

#[test]
fn round_trip_with_distribution() {
    if !tools(&[
        "skopeo",
        "docker",
        "dockerd",
        "podman",
        "busybox",
        "docker-registry",
    ]) {
        return;
    }
    round_trip(&Registry::distribution(None));
}

/// docker push → hyperbuild pull: an image docker loaded from hyperbuild's docker-archive.
#[test]
fn docker_push_then_hyperbuild_pull_and_save_load() {
    if !tools(&["skopeo", "docker", "dockerd", "podman", "busybox"]) {
        return;
    }
    let registry = Registry::hyper();
    let host = registry.host();
    seed_with_skopeo(&host, "seed/bb:1");
    let hb = Hb::new();
    hb.ok(&["pull", &format!("{host}/seed/bb:1")]);
    let dir = tempfile::tempdir().unwrap();

    // hyperbuild save → docker load → docker run → docker push.
    let archive = dir.path().join("bb-docker.tar");
    hb.ok(&[
        "save",
        &format!("{host}/seed/bb:1"),
        "-o",
        archive.to_str().unwrap(),
    ]);
    ensure_dockerd();
    let loaded = sh("docker", &["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(&format!("{host}/seed/bb:1")), "{loaded}");
    assert_eq!(
        sh(
            "docker",
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &format!("{host}/seed/bb:1")
            ]
        ),
        HELLO
    );
    let from_docker = format!("{host}/from/docker:3");
    sh(
        "docker",
        &["tag", &format!("{host}/seed/bb:1"), &from_docker],
    );
    sh("docker", &["push", "-q", &from_docker]);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &from_docker, &format!("{host}/seed/bb:1")])
        .output();

    let hb2 = Hb::new();
    hb2.ok(&["pull", &from_docker]);
    let rootfs = dir.path().join("from-docker");
    hb2.ok(&["unpack", &from_docker, rootfs.to_str().unwrap()]);
    assert_busybox_tree(&rootfs);

    // oci-archive → podman load → podman run; and hyperbuild load of its own archives.
    let oci = dir.path().join("bb-oci.tar");
    hb.ok(&[
        "save",
        "--format",
        "oci-archive",
        &format!("{host}/seed/bb:1"),
        "-o",
        oci.to_str().unwrap(),
    ]);
    let loaded = podman(&["load", "-i", oci.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image"), "{loaded}");
    let podman_docker = podman(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        podman_docker.contains(&format!("{host}/seed/bb:1")),
        "{podman_docker}"
    );
    let mut run = vec!["run", "--rm"];
    run.extend(PODMAN_RUN);
    let name = format!("{host}/seed/bb:1");
    run.push(&name);
    assert_eq!(podman(&run), HELLO);

    let hb3 = Hb::new();
    let out = hb3.ok(&["load", "-i", oci.to_str().unwrap()]);
    assert!(out.contains(&format!("{host}/seed/bb:1")), "{out}");
    let out = hb3.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(&format!("{host}/seed/bb:1")), "{out}");
    let rootfs = dir.path().join("from-archive");
    hb3.ok(&[
        "unpack",
        &format!("{host}/seed/bb:1"),
        rootfs.to_str().unwrap(),
    ]);
    assert_busybox_tree(&rootfs);
}

/// login / logout with Basic auth against Distribution's htpasswd.
#[test]
fn login_push_pull_logout_against_distribution_with_basic_auth() {
    if !tools(&["skopeo", "docker-registry", "busybox"]) {
        return;
    }
    let hash = bcrypt_hash("s3cret-pass");
    let registry = Registry::distribution(Some(&format!("alice:{hash}\n")));
    let host = registry.host();
    let hb = Hb::new();
    // Without credentials: a clear authentication error.
    let out = hb.run(&["pull", &format!("{host}/private/bb:1")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authentication") || err.contains("401"),
        "{err}"
    );

    let bad = hb.run_stdin(
        &["login", &host, "-u", "alice", "--password-stdin"],
        Some("wrong\n"),
    );
    assert!(
        !bad.status.success(),
        "login with a wrong password must fail"
    );
    let good = hb.run_stdin(
        &["login", &host, "-u", "alice", "--password-stdin"],
        Some("s3cret-pass\n"),
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let saved = std::fs::read_to_string(hb.authfile()).unwrap();
    assert!(
        saved.contains(&host) && !saved.contains("s3cret-pass"),
        "stored base64 in Docker's format"
    );

    // Seed through skopeo with the same credentials, then pull and push with hyperbuild.
    let dir = tempfile::tempdir().unwrap();
    busybox_layout(dir.path(), "t");
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:s3cret-pass",
            &format!("oci:{}:t", dir.path().display()),
            &format!("docker://{host}/private/bb:1"),
        ],
    );
    let debug = hb.run(&["--debug", "pull", &format!("{host}/private/bb:1")]);
    assert!(
        debug.status.success(),
        "{}",
        String::from_utf8_lossy(&debug.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&debug.stderr).contains("s3cret-pass"),
        "credentials never logged"
    );
    hb.ok(&[
        "tag",
        &format!("{host}/private/bb:1"),
        &format!("{host}/private/copy:2"),
    ]);
    hb.ok(&["push", &format!("{host}/private/copy:2")]);

    hb.ok(&["logout", &host]);
    let out = hb.run(&["push", &format!("{host}/private/copy:2")]);
    assert!(!out.status.success(), "push after logout must fail");
}

/// An htpasswd bcrypt hash (`$2y$`, as Distribution expects).
fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash_with_result(password, 5)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

/// `hyperbuild import` of a root filesystem tarball makes an image docker can run.
#[test]
fn imported_rootfs_runs_in_docker() {
    if !tools(&["docker", "dockerd", "busybox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let tarball = dir.path().join("rootfs.tar");
    sh(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
            ".",
        ],
    );
    let registry = Registry::hyper();
    let image = format!("{}/imported/busybox:1", registry.host());
    let hb = Hb::new();
    let id = hb.ok(&[
        "import",
        tarball.to_str().unwrap(),
        &image,
        "--cmd",
        "/bin/sh",
        "--cmd",
        "-c",
        "--cmd",
        "echo imported",
    ]);
    assert!(id.trim().starts_with("sha256:"));
    hb.ok(&["push", &image]);
    ensure_dockerd();
    sh("docker", &["pull", "-q", &image]);
    assert_eq!(
        sh("docker", &["run", "--rm", "--network", "none", &image]),
        "imported\n"
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &image])
        .output();
    let bad = hb.run(&["import", "/etc/hostname", "x/y:1"]);
    assert!(!bad.status.success(), "a non-tar file is refused");
}
