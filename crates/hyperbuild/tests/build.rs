//! `hyperbuild build` end to end: the examples build, push to hyperregistry, and run under
//! docker and podman; the cache rebuilds only what changed; SOURCE_DATE_EPOCH gives
//! byte-identical images; failures point at the Dockerfile line.

use test_support::*;

fn tools(names: &[&str]) -> bool {
    names.iter().all(|n| require_tool(n))
}

/// A registry with a busybox base image at `HOST/busybox:latest`, and a hyperbuild that has
/// it locally too.
fn setup() -> (Registry, Hb, String) {
    let registry = Registry::hyper();
    let hb = Hb::new();
    let tar = busybox_rootfs_tar(hb.dir.path());
    let base = format!("{}/busybox:latest", registry.host());
    hb.ok(&["import", tar.to_str().unwrap(), &base]);
    hb.ok(&["push", &base]);
    (registry, hb, base)
}

fn build(hb: &Hb, args: &[&str]) -> (String, String) {
    let out = hb.run(&[&["build"], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "build failed:\n{stderr}");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        stderr,
    )
}

#[test]
fn single_stage_example_runs_in_docker_and_podman_and_rebuilds_from_cache() {
    if !tools(&["docker", "dockerd", "podman", "runc", "busybox"]) {
        return;
    }
    let (registry, hb, base) = setup();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("single-stage");
    copy_dir(&examples_dir().join("single-stage"), &ctx);
    let image = format!("{}/hello:1", registry.host());
    let base_arg = format!("BASE={base}");
    let args = [
        "-c",
        ctx.to_str().unwrap(),
        "--build-arg",
        &base_arg,
        "-i",
        &image,
    ];
    let (id, log) = build(&hb, &[&args[..], &["--push"]].concat());
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(log.contains("3 step(s) run"), "{log}");

    let expected =
        "hello from hyperbuild\na file copied from the context\nstate: ready, user: app\n";
    ensure_dockerd();
    sh("docker", &["pull", "-q", &image]);
    assert_eq!(
        sh("docker", &["run", "--rm", "--network", "none", &image]),
        expected
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &image])
        .output();
    podman(&["pull", "-q", "--tls-verify=false", &image]);
    let mut run = vec!["run", "--rm"];
    run.extend(PODMAN_RUN);
    run.push(&image);
    assert_eq!(podman(&run), expected);

    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", &image])).unwrap();
    let cfg = &info["Config"];
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["User"], "app");
    assert!(cfg["ExposedPorts"].get("8080/tcp").is_some(), "{cfg}");
    assert_eq!(cfg["Labels"]["org.opencontainers.image.title"], "hello");
    assert_eq!(cfg["Cmd"][0], "/app/greet.sh");
    assert!(
        cfg["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hello from hyperbuild")
    );
    let rootfs = work.path().join("rootfs");
    hb.ok(&["unpack", &image, rootfs.to_str().unwrap()]);
    assert!(rootfs.join("app/data/message.txt").exists());
    assert!(
        !rootfs.join("app/data/secret.txt").exists(),
        ".dockerignore keeps it out"
    );

    // Unchanged: nothing runs, same image.
    let (id2, log) = build(&hb, &args);
    assert_eq!(id2, id, "a fully cached rebuild gives the same image");
    assert!(log.contains("0 step(s) run, 3 cached"), "{log}");
    // One copied file changes: only that COPY and the steps after it run.
    std::fs::write(ctx.join("data/message.txt"), "changed\n").unwrap();
    let (id3, log) = build(&hb, &args);
    assert_ne!(id3, id);
    assert!(log.contains("2 step(s) run, 1 cached"), "{log}");
    // mtime-only changes do not invalidate the cache.
    sh("touch", &[ctx.join("greet.sh").to_str().unwrap()]);
    let (_, log) = build(&hb, &args);
    assert!(log.contains("0 step(s) run, 3 cached"), "{log}");
    // The documented short form builds too (here from the cache).
    let out = hb.run(&[
        "-c",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("Dockerfile").to_str().unwrap(),
        "--build-arg",
        &base_arg,
        "-i",
        "short-form:1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        id3.as_str().trim_end_matches('\n')
    );
    // --no-cache runs everything.
    let (_, log) = build(&hb, &[&args[..], &["--no-cache"]].concat());
    assert!(log.contains("3 step(s) run, 0 cached"), "{log}");
    drop(registry);
}

#[test]
fn cache_mounts_example_with_secret_tmpfs_and_heredoc() {
    if !tools(&["docker", "dockerd", "runc", "busybox"]) {
        return;
    }
    let (registry, _importer, base) = setup();
    // A fresh store without the base image: FROM pulls it from the registry.
    let hb = Hb::new();
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("token");
    std::fs::write(&secret, "s3cr3t-value\n").unwrap();
    let image = format!("{}/cached:1", registry.host());
    let ctx = examples_dir().join("cache-mounts");
    let base_arg = format!("BASE={base}");
    let secret_arg = format!("id=token,src={}", secret.display());
    let args = [
        "-c",
        ctx.to_str().unwrap(),
        "--build-arg",
        &base_arg,
        "--secret",
        &secret_arg,
        "-i",
        &image,
    ];
    let (_, log) = build(&hb, &args);
    assert!(
        log.contains(&format!("Pulled {base}")),
        "FROM pulled the base image:\n{log}"
    );
    build(&hb, &[&args[..], &["--no-cache", "--push"]].concat());
    ensure_dockerd();
    sh("docker", &["pull", "-q", &image]);
    let out = sh("docker", &["run", "--rm", "--network", "none", &image]);
    assert_eq!(
        out,
        "temp\nsecret seen, not stored\nwritten by a heredoc\nno-secret-in-image\n"
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &image])
        .output();
    let rootfs = work.path().join("rootfs");
    hb.ok(&["unpack", &image, rootfs.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("cache-runs"))
            .unwrap()
            .trim(),
        "2",
        "the cache mount persisted between builds"
    );
    for leaked in ["run", "scratch", "var"] {
        assert!(
            !rootfs.join(leaked).exists(),
            "mount point {leaked} leaked into the image"
        );
    }
    let layers = walk_files(&hb.root());
    assert!(
        !layers
            .iter()
            .any(|f| std::fs::read(f).is_ok_and(|b| b.windows(12).any(|w| w == b"s3cr3t-value"))),
        "the secret is in no blob"
    );
    // Without the required secret the build fails clearly.
    let out = hb.run(&[
        "build",
        "--no-cache",
        "-c",
        ctx.to_str().unwrap(),
        "--build-arg",
        &base_arg,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secret token is required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                if !p.ends_with("build") {
                    out.extend(walk_files(&p));
                }
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn reproducible_with_source_date_epoch_and_formats() {
    if !tools(&["runc", "busybox"]) {
        return;
    }
    let (_registry, hb, base) = setup();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    copy_dir(&examples_dir().join("single-stage"), &ctx);
    let base_arg = format!("BASE={base}");
    let mut ids = Vec::new();
    for compression in ["gzip", "gzip", "zstd"] {
        let (_, _) = build(
            &hb,
            &[
                "-c",
                ctx.to_str().unwrap(),
                "--build-arg",
                &base_arg,
                "--no-cache",
                "--source-date-epoch",
                "1700000000",
                "--compression",
                compression,
                "-i",
                "repro:1",
            ],
        );
        let info: serde_json::Value =
            serde_json::from_str(&hb.ok(&["inspect", "repro:1"])).unwrap();
        ids.push(info["Digest"].as_str().unwrap().to_string());
        // Touch everything: mtimes must not matter under SOURCE_DATE_EPOCH.
        sh("touch", &[ctx.join("greet.sh").to_str().unwrap()]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(
        ids[0], ids[1],
        "same inputs, same epoch: byte-identical image (manifest digest)"
    );
    assert_ne!(ids[0], ids[2], "zstd layers differ");
    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", "repro:1"])).unwrap();
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert!(
        info["Manifest"]["layers"][1]["mediaType"]
            .as_str()
            .unwrap()
            .ends_with("tar+zstd")
    );
    let (_, _) = build(
        &hb,
        &[
            "-c",
            ctx.to_str().unwrap(),
            "--build-arg",
            &base_arg,
            "--format",
            "docker",
            "-i",
            "docker-format:1",
        ],
    );
    let info: serde_json::Value =
        serde_json::from_str(&hb.ok(&["inspect", "docker-format:1"])).unwrap();
    assert_eq!(
        info["MediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let out = hb.run(&[
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "--build-arg",
        &base_arg,
        "--format",
        "docker",
        "--compression",
        "zstd",
    ]);
    assert!(!out.status.success(), "zstd needs OCI media types");
}

#[test]
fn multi_stage_targets_parallel_stages_and_errors() {
    if !tools(&["runc", "busybox"]) {
        return;
    }
    let (_registry, hb, base) = setup();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path();
    std::fs::write(ctx.join("input.txt"), "input\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            r#"ARG BASE={base}
FROM ${{BASE}} AS one
RUN echo one > /one.txt
FROM ${{BASE}} AS two
ARG WHO=nobody
RUN echo "two for $WHO" > /two.txt
RUN --mount=type=bind,from=one,source=/,target=/from-one cat /from-one/one.txt > /two-saw-one.txt
FROM ${{BASE}} AS unused
RUN exit 42
FROM scratch AS final
COPY --from=one /one.txt /
COPY --from=two /two.txt /two-saw-one.txt /
COPY input.txt /copied/
"#
        ),
    )
    .unwrap();
    let (_, log) = build(
        &hb,
        &[
            "-c",
            ctx.to_str().unwrap(),
            "--build-arg",
            "WHO=tests",
            "-i",
            "multi:1",
        ],
    );
    assert!(
        !log.contains("stage 2"),
        "the unused stage is skipped:\n{log}"
    );
    let rootfs = ctx.join("out");
    hb.ok(&["unpack", "multi:1", rootfs.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("one.txt")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("two.txt")).unwrap(),
        "two for tests\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("two-saw-one.txt")).unwrap(),
        "one\n",
        "RUN --mount=type=bind,from=one"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("copied/input.txt")).unwrap(),
        "input\n"
    );
    let names: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    assert!(
        !names.contains(&"bin".to_string()),
        "scratch image holds only what was copied: {names:?}"
    );

    // --target builds one stage; the failing stage reports its line and exit code.
    let out = hb.run(&["build", "-c", ctx.to_str().unwrap(), "--target", "unused"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:9: RUN exit 42") && err.contains("exit code: 42"),
        "{err}"
    );

    // A bad Dockerfile: file, line and column.
    std::fs::write(
        ctx.join("Bad.Dockerfile"),
        "FROM scratch\nCOPY input.txt /\nFROBNICATE now\n",
    )
    .unwrap();
    let out = hb.run(&[
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("Bad.Dockerfile").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Bad.Dockerfile:3:1") && err.to_lowercase().contains("unknown instruction"),
        "{err}"
    );
    // A missing COPY source.
    std::fs::write(
        ctx.join("Missing.Dockerfile"),
        "FROM scratch\nCOPY nope.txt /\n",
    )
    .unwrap();
    let out = hb.run(&[
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("Missing.Dockerfile").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Missing.Dockerfile:2")
            && err.contains("nope.txt")
            && err.contains("not found"),
        "{err}"
    );
    // A source outside the context.
    std::fs::write(
        ctx.join("Escape.Dockerfile"),
        "FROM scratch\nCOPY ../../etc/passwd /\n",
    )
    .unwrap();
    let out = hb.run(&[
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("Escape.Dockerfile").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the build context"));
}

/// The multi-stage example: a static binary compiled with gcc in a Debian stage (a
/// debootstrap minbase root filesystem with gcc), copied into a scratch image.
#[test]
fn multi_stage_example_compiles_in_debian_and_ships_from_scratch() {
    if !tools(&["docker", "dockerd", "runc", "debootstrap"]) {
        return;
    }
    let registry = Registry::hyper();
    let hb = Hb::new();
    let work = tempfile::tempdir().unwrap();
    let (_, tarball) = debootstrap_tarball(work.path(), &["gcc", "libc6-dev"]);
    let builder_image = format!("{}/debian-gcc:bookworm", registry.host());
    hb.ok(&["import", tarball.to_str().unwrap(), &builder_image]);

    let image = format!("{}/static-hello:1", registry.host());
    let arg = format!("BUILDER={builder_image}");
    let ctx = examples_dir().join("multi-stage");
    let (_, log) = build(
        &hb,
        &[
            "-c",
            ctx.to_str().unwrap(),
            "--build-arg",
            &arg,
            "-i",
            &image,
            "--push",
        ],
    );
    assert!(log.contains("RUN gcc"), "{log}");
    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", &image])).unwrap();
    let layers = info["Manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "scratch + one COPY: a single layer");
    assert!(
        layers[0]["size"].as_u64().unwrap() < 2 << 20,
        "only the static binary ships"
    );
    ensure_dockerd();
    sh("docker", &["pull", "-q", &image]);
    assert_eq!(
        sh("docker", &["run", "--rm", "--network", "none", &image]),
        "hello, world, from a static binary built by hyperbuild\n"
    );
    assert_eq!(
        sh(
            "docker",
            &["run", "--rm", "--network", "none", &image, "tests"]
        ),
        "hello, tests, from a static binary built by hyperbuild\n"
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &image])
        .output();
}

/// ONBUILD triggers run in child builds; --label, --iidfile, --network none; prune.
#[test]
fn onbuild_labels_iidfile_network_and_prune() {
    if !tools(&["runc", "busybox"]) {
        return;
    }
    let (_registry, hb, base) = setup();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path();
    std::fs::write(ctx.join("input.txt"), "from the child's context\n").unwrap();
    std::fs::write(
        ctx.join("Base.Dockerfile"),
        format!("FROM {base}\nONBUILD RUN echo triggered > /triggered\nONBUILD COPY input.txt /from-trigger.txt\n"),
    )
    .unwrap();
    build(
        &hb,
        &[
            "-c",
            ctx.to_str().unwrap(),
            "-f",
            ctx.join("Base.Dockerfile").to_str().unwrap(),
            "-i",
            "onbuild-base:1",
        ],
    );
    let parent: serde_json::Value =
        serde_json::from_str(&hb.ok(&["inspect", "onbuild-base:1"])).unwrap();
    assert_eq!(parent["Config"]["OnBuild"].as_array().unwrap().len(), 2);

    std::fs::write(
        ctx.join("Child.Dockerfile"),
        "FROM onbuild-base:1\nRUN --network=none ls /sys/class/net > /interfaces\nRUN cat /triggered\n",
    )
    .unwrap();
    let iid = ctx.join("iid");
    let (id, log) = build(
        &hb,
        &[
            "-c",
            ctx.to_str().unwrap(),
            "-f",
            ctx.join("Child.Dockerfile").to_str().unwrap(),
            "-t",
            "child:1",
            "--label",
            "team=builders",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    );
    assert!(
        log.contains("RUN echo triggered"),
        "triggers ran first:\n{log}"
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    let child: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", "child:1"])).unwrap();
    assert!(
        child["Config"].get("OnBuild").is_none(),
        "triggers are not inherited"
    );
    assert_eq!(child["Config"]["Labels"]["team"], "builders");
    let rootfs = ctx.join("rootfs");
    hb.ok(&["unpack", "child:1", rootfs.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("triggered")).unwrap(),
        "triggered\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("from-trigger.txt")).unwrap(),
        "from the child's context\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("interfaces")).unwrap(),
        "lo\n",
        "--network=none: loopback only"
    );

    let out = hb.ok(&["prune"]);
    assert!(out.contains("Build cache cleared"), "{out}");
    assert!(
        std::fs::read_dir(hb.root().join("build/cache/snapshots"))
            .unwrap()
            .next()
            .is_none()
    );
    let (_, log) = build(
        &hb,
        &[
            "-c",
            ctx.to_str().unwrap(),
            "-f",
            ctx.join("Child.Dockerfile").to_str().unwrap(),
            "-t",
            "child:1",
        ],
    );
    assert!(
        log.contains(", 0 cached"),
        "nothing cached after prune:\n{log}"
    );
}

/// COPY --link and heredocs; ADD of a local tarball (extracted) and of a URL with --checksum.
#[test]
fn copy_link_heredoc_add_archive_and_url() {
    if !tools(&["runc", "busybox", "tar"]) {
        return;
    }
    let (registry, hb, base) = setup();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("tree/sub")).unwrap();
    std::fs::write(ctx.join("tree/sub/file.txt"), "in the archive\n").unwrap();
    sh(
        "tar",
        &[
            "-C",
            ctx.join("tree").to_str().unwrap(),
            "-czf",
            ctx.join("bundle.tar.gz").to_str().unwrap(),
            ".",
        ],
    );
    std::fs::write(ctx.join("linked.txt"), "linked\n").unwrap();
    // A URL to fetch: a blob in the test registry.
    let payload = b"downloaded by ADD\n";
    let digest = oci_core::Digest::sha256_of(payload);
    let client = reqwest::blocking::Client::new();
    let r = client
        .post(format!(
            "http://{}/v2/files/blobs/uploads/?digest={digest}",
            registry.host()
        ))
        .body(payload.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let url = format!("http://{}/v2/files/blobs/{digest}", registry.host());
    let dockerfile = format!(
        "FROM {base}\nRUN mkdir -p /opt/app && ln -s /opt/app /app\nCOPY --link linked.txt /linked/\nCOPY <<EOF /etc/from-heredoc.conf\ngreeting=hello\nEOF\nADD bundle.tar.gz /unpacked/\nADD --checksum={digest} {url} /downloads/payload.txt\n"
    );
    std::fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
    build(&hb, &["-c", ctx.to_str().unwrap(), "-i", "adds:1"]);
    let rootfs = work.path().join("rootfs");
    hb.ok(&["unpack", "adds:1", rootfs.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("linked/linked.txt")).unwrap(),
        "linked\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/from-heredoc.conf")).unwrap(),
        "greeting=hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("unpacked/sub/file.txt")).unwrap(),
        "in the archive\n"
    );
    assert_eq!(
        std::fs::read(rootfs.join("downloads/payload.txt")).unwrap(),
        payload
    );
    // The --link layer holds only what it copied: no parent directories of earlier layers.
    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", "adds:1"])).unwrap();
    assert_eq!(info["Manifest"]["layers"].as_array().unwrap().len(), 6);

    // A wrong checksum stops the build.
    let wrong = oci_core::Digest::sha256_of(b"something else");
    std::fs::write(
        ctx.join("Bad.Dockerfile"),
        format!("FROM {base}\nADD --checksum={wrong} {url} /x\n"),
    )
    .unwrap();
    let out = hb.run(&[
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("Bad.Dockerfile").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every blob in the local store, decompressed when it is gzip, for searching layer bytes.
fn store_blobs(hb: &Hb) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for path in walk_files(&hb.root().join("blobs")) {
        let raw = std::fs::read(&path).unwrap();
        if raw.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut plain)
                .unwrap();
            out.push(plain);
        } else {
            out.push(raw);
        }
    }
    out
}

/// The seven ways a context or a base image used to smuggle a host file into an image: a
/// context symlink (absolute, or `..` out of the context) crossed by a plain source, a glob
/// a directory copy or ADD of a local archive, and an image's absolute symlink crossed by `COPY --from` an image
/// or a stage. The host's bytes must be in no layer; the image's own files are copied.
#[test]
fn copy_sources_never_escape_the_context_or_the_image_root() {
    if !tools(&["tar"]) {
        return;
    }
    let (registry, hb, base) = setup();
    let work = tempfile::tempdir().unwrap();
    // The host directory an attacker aims at, outside the context.
    let host = work.path().join("host");
    std::fs::create_dir_all(host.join("subdir")).unwrap();
    let secret = b"HOST-SECRET-8f2c1e0b9d";
    std::fs::write(host.join("victim"), secret).unwrap();
    std::fs::write(host.join("subdir/victim"), secret).unwrap();
    entries_tar(&host.join("bundle.tar"), &[TarEntry::File("inner", secret)]);
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::os::unix::fs::symlink(&host, ctx.join("abslink")).unwrap();
    std::os::unix::fs::symlink("../host", ctx.join("rellink")).unwrap();

    // A base image holding `/lnk -> <host dir>`, plus a real `/<host dir>/victim` of its own:
    // resolved inside the image, the symlink reaches the image's file, not the host's.
    let host_rel = host.to_str().unwrap().trim_start_matches('/').to_string();
    let mut entries = vec![];
    let mut acc = String::new();
    for part in host_rel.split('/') {
        acc = if acc.is_empty() {
            part.to_string()
        } else {
            format!("{acc}/{part}")
        };
        entries.push(acc.clone());
    }
    let own = format!("{host_rel}/victim");
    let mut tar_entries: Vec<TarEntry> = entries.iter().map(|d| TarEntry::Dir(d)).collect();
    tar_entries.push(TarEntry::File(&own, b"the image's own file\n"));
    tar_entries.push(TarEntry::Symlink("lnk", host.to_str().unwrap()));
    let hostile_tar = work.path().join("hostile.tar");
    entries_tar(&hostile_tar, &tar_entries);
    let hostile = format!("{}/hostile:1", registry.host());
    hb.ok(&["import", hostile_tar.to_str().unwrap(), &hostile]);

    let cases: Vec<(&str, String)> = vec![
        ("abs-file", "COPY abslink/victim /stolen".into()),
        ("rel-file", "COPY rellink/victim /stolen".into()),
        ("glob", "COPY abslink/* /stolen/".into()),
        ("dir", "COPY rellink/subdir/ /stolen/".into()),
        ("add-archive", "ADD abslink/bundle.tar /unpacked/".into()),
        (
            "from-image",
            format!("COPY --from={hostile} /lnk/victim /stolen"),
        ),
        (
            "from-stage",
            "COPY --from=evil /lnk/victim /stolen".to_string(),
        ),
    ];
    for (name, copy) in &cases {
        let prelude = if *name == "from-stage" {
            format!("FROM {hostile} AS evil\n")
        } else {
            String::new()
        };
        let dockerfile = format!("{prelude}FROM {base}\n{copy}\n");
        let file = ctx.join(format!("{name}.Dockerfile"));
        std::fs::write(&file, &dockerfile).unwrap();
        let image = format!("escape-{name}:1");
        let out = hb.run(&[
            "build",
            "-c",
            ctx.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
            "-i",
            &image,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if name.starts_with("from-") {
            // Resolved inside the image: the image's own file is what is copied.
            assert!(out.status.success(), "{name}: {stderr}");
            let rootfs = work.path().join(format!("rootfs-{name}"));
            hb.ok(&["unpack", &image, rootfs.to_str().unwrap()]);
            assert_eq!(
                std::fs::read(rootfs.join("stolen")).unwrap(),
                b"the image's own file\n",
                "{name}"
            );
        } else {
            // Resolved inside the context, the symlink leads nowhere: the source is missing.
            assert!(!out.status.success(), "{name} must fail: {dockerfile}");
            assert!(
                stderr.contains("not found") || stderr.contains("no source files"),
                "{name}: {stderr}"
            );
        }
    }
    // Whatever was built, no blob in the store carries the host's bytes.
    let leaked = store_blobs(&hb)
        .iter()
        .filter(|b| b.windows(secret.len()).any(|w| w == secret))
        .count();
    assert_eq!(leaked, 0, "host file bytes found in {leaked} blob(s)");
    drop(registry);
}
