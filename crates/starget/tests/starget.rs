//! starget against hyperregistry: an eStargz image of over 100 MB built from a debootstrap
//! base; one small file fetched with Range requests (bytes transferred measured); and the
//! failure cases: corrupted blobs, layers without a TOC, wrong credentials, dropped
//! connections, resumed downloads.

use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use test_support::*;

fn starget(args: &[&str]) -> Output {
    Command::new(workspace_bin("starget"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "starget failed:\n{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// `fetched N file(s): X transferred (B bytes), from layers of Y (L bytes)` → (B, L).
fn transferred(stderr: &str) -> (u64, u64) {
    let num = |after: &str| -> u64 {
        let i = stderr
            .find(after)
            .unwrap_or_else(|| panic!("no {after:?} in {stderr}"));
        let rest = &stderr[..i];
        let start = rest.rfind('(').unwrap() + 1;
        rest[start..].trim().parse().unwrap()
    };
    (num(" bytes), from"), num(" bytes)\n"))
}

/// Build `dockerfile` in `ctx` with eStargz layers, convert the base layers too, push as `image`.
fn build_estargz(hb: &Hb, ctx: &std::path::Path, dockerfile: &str, image: &str) {
    std::fs::create_dir_all(ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    hb.ok(&[
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "--compression",
        "estargz",
        "-i",
        "tmp-built:1",
    ]);
    hb.ok(&["convert", "--estargz", "tmp-built:1", image]);
    hb.ok(&["push", image]);
}

/// A busybox image, eStargz-converted, in a fresh registry: (registry, image name).
fn busybox_estargz(hb: &Hb) -> (Registry, String) {
    let registry = Registry::hyper();
    let tar = busybox_rootfs_tar(hb.dir.path());
    let plain = format!("{}/bb/plain:1", registry.host());
    hb.ok(&["import", tar.to_str().unwrap(), &plain]);
    let image = format!("{}/bb/stargz:1", registry.host());
    build_estargz(
        hb,
        &hb.dir.path().join("ctx"),
        &format!(
            "FROM {plain}\nRUN head -c 12000000 /dev/urandom > /big.bin && echo small > /small.txt\n"
        ),
        &image,
    );
    hb.ok(&["push", &plain]);
    (registry, image)
}

#[test]
fn one_small_file_from_a_debootstrap_estargz_image_of_over_100_mb() {
    if !require_tool("debootstrap") || !require_tool("runc") {
        return;
    }
    let registry = Registry::hyper();
    let hb = Hb::new();
    let work = tempfile::tempdir().unwrap();
    let (rootfs, tarball) = debootstrap_tarball(work.path(), &[]);
    let base = format!("{}/debian:bookworm", registry.host());
    hb.ok(&["import", tarball.to_str().unwrap(), &base]);
    // Incompressible data on top, so the image is over 100 MB even compressed.
    let image = format!("{}/debian/stargz:1", registry.host());
    build_estargz(
        &hb,
        &work.path().join("ctx"),
        &format!("FROM {base}\nRUN head -c 80000000 /dev/urandom > /opt/data.bin\n"),
        &image,
    );
    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", &image])).unwrap();
    let total: u64 = info["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(total > 100_000_000, "image is {total} bytes");

    let (info_out, _) = ok(starget(&["info", &image]));
    assert_eq!(info_out.matches("estargz").count(), 2, "{info_out}");
    let (ls, _) = ok(starget(&["ls", &image, "etc/"]));
    assert!(
        ls.lines()
            .any(|l| l == "etc/os-release" || l.starts_with("etc/os-release ->")),
        "{ls}"
    );

    let out = work.path().join("out");
    let (_, stderr) = ok(starget(&[
        "get",
        &image,
        "usr/lib/os-release",
        "-o",
        out.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(out.join("usr/lib/os-release")).unwrap(),
        std::fs::read(rootfs.join("usr/lib/os-release")).unwrap()
    );
    let (moved, layers) = transferred(&stderr);
    eprintln!("starget moved {moved} bytes for one file of an image of {total} bytes");
    assert!(
        moved * 100 < total,
        "transferred {moved} of {total} bytes: more than 1%"
    );
    assert!(layers > 0 && layers <= total);
}

#[test]
fn get_files_dirs_and_patterns_and_non_estargz_layers_fail_clearly() {
    if !require_tool("runc") || !require_tool("busybox") {
        return;
    }
    let hb = Hb::new();
    let (registry, image) = busybox_estargz(&hb);
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let (_, stderr) = ok(starget(&[
        "get",
        &image,
        "small.txt",
        "bin/",
        "etc/pass*",
        "-o",
        o,
    ]));
    assert_eq!(
        std::fs::read_to_string(out.path().join("small.txt")).unwrap(),
        "small\n"
    );
    assert_eq!(
        std::fs::read(out.path().join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        std::fs::read_link(out.path().join("bin/sh"))
            .unwrap()
            .to_str()
            .unwrap(),
        "busybox"
    );
    assert!(out.path().join("etc/passwd").exists());
    assert!(!out.path().join("big.bin").exists());
    let (moved, _) = transferred(&stderr);
    assert!(
        moved < 12_000_000,
        "the 12 MB file was not fetched: {moved}"
    );

    // --long listing, and one layer only.
    let (long, _) = ok(starget(&["ls", "--long", &image, "small.txt"]));
    assert!(
        long.contains("644") && long.contains("small.txt") && long.contains(" 6 "),
        "{long}"
    );
    let (layer0, _) = ok(starget(&["ls", "--layer", "0", &image]));
    assert!(
        layer0.contains("bin/busybox") && !layer0.contains("small.txt"),
        "{layer0}"
    );

    // Everything.
    let all = tempfile::tempdir().unwrap();
    ok(starget(&[
        "get",
        &image,
        ".",
        "-o",
        all.path().to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::metadata(all.path().join("big.bin")).unwrap().len(),
        12_000_000
    );

    // A plain gzip image: a clear message and exit code 5.
    let plain = format!("{}/bb/plain:1", registry.host());
    let out = starget(&["get", &plain, "bin/busybox", "-o", o]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an eStargz layer"));
    // Nothing matches: exit code 7.
    let out = starget(&["get", &image, "no/such/file", "-o", o]);
    assert_eq!(out.status.code(), Some(7));
    // Completions.
    for shell in ["bash", "zsh", "fish"] {
        let (script, _) = ok(starget(&["completions", shell]));
        assert!(script.contains("starget"), "{shell}");
    }
}

#[test]
fn corrupted_blobs_are_detected() {
    if !require_tool("runc") || !require_tool("busybox") {
        return;
    }
    let hb = Hb::new();
    let (registry, image) = busybox_estargz(&hb);
    // Flip bytes in the middle of the registry's copy of the big layer.
    let info: serde_json::Value = serde_json::from_str(&hb.ok(&["inspect", &image])).unwrap();
    let layers = info["Manifest"]["layers"].as_array().unwrap();
    let big = layers
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap();
    let digest: oci_core::Digest = big["digest"].as_str().unwrap().parse().unwrap();
    let path = registry
        .dir
        .path()
        .join("data/blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x55;
    }
    std::fs::write(&path, &bytes).unwrap();
    let out = tempfile::tempdir().unwrap();
    let res = starget(&["get", &image, "big.bin", "-o", out.path().to_str().unwrap()]);
    assert_eq!(
        res.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("corrupted download"));
    assert!(
        !out.path().join("big.bin").exists(),
        "no corrupted file is left under its name"
    );
}

#[test]
fn wrong_credentials_are_refused() {
    if !require_tool("docker-registry") || !require_tool("runc") || !require_tool("busybox") {
        return;
    }
    let hash = bcrypt::hash_with_result("right", 5)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let registry = Registry::distribution(Some(&format!("bob:{hash}\n")));
    let hb = Hb::new();
    let tar = busybox_rootfs_tar(hb.dir.path());
    let image = format!("{}/private/bb:1", registry.host());
    hb.ok(&["import", tar.to_str().unwrap(), "plain:1"]);
    hb.ok(&["convert", "--estargz", "plain:1", &image]);
    let login = hb.run_stdin(
        &["login", &registry.host(), "-u", "bob", "--password-stdin"],
        Some("right\n"),
    );
    assert!(login.status.success());
    hb.ok(&["push", &image]);
    let out = starget(&["--credential", "bob:wrong", "info", &image]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("wrong"),
        "secrets never printed"
    );
    let (listing, _) = ok(starget(&[
        "--credential",
        "bob:right",
        "ls",
        &image,
        "bin/busybox",
    ]));
    assert_eq!(listing.trim(), "bin/busybox");
    // The same credentials from the configuration file.
    let cfg = hb.dir.path().join("starget.yaml");
    std::fs::write(
        &cfg,
        format!("concurrency: 2\nmax_retries: 1\nregistries:\n  \"{}\":\n    username: bob\n    password: right\n", registry.host()),
    )
    .unwrap();
    let (listing, _) = ok(starget(&[
        "--config",
        cfg.to_str().unwrap(),
        "ls",
        &image,
        "bin/busybox",
    ]));
    assert_eq!(listing.trim(), "bin/busybox");
    let out = starget(&["--config", "/nonexistent/starget.yaml", "info", &image]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing explicit config file is a usage error"
    );
}

#[test]
fn dropped_connections_are_retried_and_partial_files_resume() {
    if !require_tool("runc") || !require_tool("busybox") {
        return;
    }
    let hb = Hb::new();
    let (registry, image) = busybox_estargz(&hb);
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    // The connection dies 6 MB into the download; a retry finishes it.
    let proxy = FaultProxy::start(registry.port, None, Some(6_000_000));
    let via = image.replace(&registry.host(), &format!("127.0.0.1:{}", proxy.port));
    ok(starget(&[
        "--concurrency",
        "1",
        "get",
        &via,
        "big.bin",
        "-o",
        o,
    ]));
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1);
    assert_eq!(
        std::fs::metadata(out.path().join("big.bin")).unwrap().len(),
        12_000_000
    );

    // Without retries the download fails after its first 8 MB request and leaves a .partial;
    // the next run reuses the chunks in it.
    let out2 = tempfile::tempdir().unwrap();
    let o2 = out2.path().to_str().unwrap();
    let proxy = FaultProxy::start(registry.port, None, Some(10_000_000));
    let via = image.replace(&registry.host(), &format!("127.0.0.1:{}", proxy.port));
    let failed = starget(&[
        "--concurrency",
        "1",
        "--max-retries",
        "0",
        "get",
        &via,
        "big.bin",
        "-o",
        o2,
    ]);
    assert!(!failed.status.success());
    assert!(out2.path().join("big.bin.partial").exists());
    let (_, stderr) = ok(starget(&["get", &image, "big.bin", "-o", o2]));
    assert!(stderr.contains("resumed from .partial"), "{stderr}");
    assert_eq!(
        std::fs::read(out.path().join("big.bin")).unwrap(),
        std::fs::read(out2.path().join("big.bin")).unwrap()
    );
}

/// A hostile image whose TOC holds symlinks out of the tree (`abs -> /…/outside`,
/// `rel -> ../../…/outside`) followed by files below them: `starget get IMG / -o out` writes
/// every file inside `out` (the links re-rooted there, as a chroot would), never outside it.
#[test]
fn toc_entries_below_hostile_symlinks_stay_inside_the_output_directory() {
    let hb = Hb::new();
    let registry = Registry::hyper();
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let abs = outside.to_str().unwrap().to_string();
    let rel = format!("{}{}", "../".repeat(12), abs.trim_start_matches('/'));
    let tarball = t.path().join("hostile.tar");
    entries_tar(
        &tarball,
        &[
            TarEntry::Symlink("abs", &abs),
            TarEntry::File("abs/pwned_abs", b"absolute\n"),
            TarEntry::Symlink("rel", &rel),
            TarEntry::File("rel/pwned_rel", b"relative\n"),
            TarEntry::Dir("abs/made_dir"),
        ],
    );
    let plain = format!("{}/evil/plain:1", registry.host());
    let image = format!("{}/evil/stargz:1", registry.host());
    hb.ok(&["import", tarball.to_str().unwrap(), &plain]);
    hb.ok(&["convert", "--estargz", &plain, &image]);
    hb.ok(&["push", &image]);
    let listed = ok(starget(&["ls", &image])).0;
    assert!(
        listed.contains("abs/pwned_abs"),
        "the TOC holds the entry:\n{listed}"
    );
    let out = t.path().join("out");
    let res = starget(&["get", &image, "/", "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    let inside = out.join(abs.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written outside the output directory"
    );
    assert_eq!(
        std::fs::read(inside.join("pwned_abs")).unwrap(),
        b"absolute\n"
    );
    assert_eq!(
        std::fs::read(inside.join("pwned_rel")).unwrap(),
        b"relative\n"
    );
    assert!(inside.join("made_dir").is_dir());
    assert_eq!(
        std::fs::read_link(out.join("abs")).unwrap(),
        std::path::PathBuf::from(&abs),
        "symlinks themselves are written as the image has them"
    );
}
