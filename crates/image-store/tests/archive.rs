//! docker-archive and oci-archive: round trips, real-world shapes, hostile input.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use common::{
    Comp, RawEntry, blob_count, gzip, layer_tar, put_image, put_index, raw_tar, tmp_files,
};
use image_store::archive::{self, ArchiveFormat};
use image_store::{ImageStore, StoreError};
use oci_core::{Digest, ParsedManifest};

fn store(dir: &Path, name: &str) -> ImageStore {
    ImageStore::open(&dir.join(name)).unwrap()
}

/// Every regular entry of a tarball, by name.
fn entries(path: &Path) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    let mut a = tar::Archive::new(fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(name, data);
        }
    }
    out
}

fn manifest_of(s: &ImageStore, name: &str) -> ParsedManifest {
    let d = s.resolve(name).unwrap().unwrap();
    ParsedManifest::parse(&s.read_blob(&d.digest, 1 << 22).unwrap(), None).unwrap()
}

fn config_diff_ids(s: &ImageStore, m: &ParsedManifest) -> Vec<String> {
    let c = m.config.as_ref().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&s.read_blob(&c.digest, 1 << 22).unwrap()).unwrap();
    v["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn two_layers() -> Vec<Vec<u8>> {
    vec![
        layer_tar(&[("bin/tool", 0o755, &b"#!/bin/sh\necho tool\n".repeat(1000))]),
        layer_tar(&[("etc/conf", 0o644, b"x=1\n")]),
    ]
}

#[test]
fn docker_archive_round_trip_decompresses_layers() {
    let dir = tempfile::tempdir().unwrap();
    let src = store(dir.path(), "src");
    let layers = two_layers();
    let img = put_image(
        &src,
        &layers,
        &[Comp::Gzip, Comp::Zstd],
        "amd64",
        &["/bin/tool"],
    );
    src.set_ref("docker.io/library/app:1", img.clone()).unwrap();
    src.set_ref("localhost:5000/team/app:2", img.clone())
        .unwrap();
    let out = dir.path().join("docker.tar");
    let refs = vec![
        "docker.io/library/app:1".to_string(),
        "localhost:5000/team/app:2".to_string(),
    ];
    archive::save(&src, &refs, ArchiveFormat::Docker, &out).unwrap();

    let files = entries(&out);
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 1, "one image, two tags");
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["app:1", "localhost:5000/team/app:2"])
    );
    let src_manifest = manifest_of(&src, "docker.io/library/app:1");
    let config_digest = src_manifest.config.as_ref().unwrap().digest.clone();
    assert_eq!(
        manifest[0]["Config"],
        format!("{}.json", config_digest.hex())
    );
    for (i, layer) in layers.iter().enumerate() {
        let path = manifest[0]["Layers"][i].as_str().unwrap();
        assert_eq!(
            path,
            format!("{}/layer.tar", Digest::sha256_of(layer).hex())
        );
        assert_eq!(&files[path], layer, "layer {i} stored uncompressed");
    }
    let repositories: serde_json::Value = serde_json::from_slice(&files["repositories"]).unwrap();
    assert!(repositories["app"]["1"].is_string());

    let dst = store(dir.path(), "dst");
    let mut names = archive::load(&dst, &out).unwrap();
    names.sort();
    assert_eq!(
        names,
        ["docker.io/library/app:1", "localhost:5000/team/app:2"]
    );
    let m = manifest_of(&dst, "docker.io/library/app:1");
    assert_eq!(
        m.config.as_ref().unwrap().digest,
        config_digest,
        "same image id"
    );
    assert_eq!(m.media_type, oci_core::manifest::OCI_MANIFEST);
    for (i, layer) in m.layers.iter().enumerate() {
        assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(layer.digest, Digest::sha256_of(&layers[i]));
    }
    assert_eq!(
        config_diff_ids(&dst, &m),
        config_diff_ids(&src, &src_manifest)
    );
    // Loaded image can be saved again, identically.
    let again = dir.path().join("again.tar");
    archive::save(&dst, &refs, ArchiveFormat::Docker, &again).unwrap();
    assert_eq!(entries(&again)["manifest.json"], files["manifest.json"]);
    assert!(tmp_files(&dst).is_empty());
    assert!(tmp_files(&src).is_empty());
}

#[test]
fn oci_archive_round_trip_keeps_blobs_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let src = store(dir.path(), "src");
    let amd = put_image(
        &src,
        &two_layers(),
        &[Comp::Gzip, Comp::None],
        "amd64",
        &["a"],
    );
    let arm = put_image(
        &src,
        &[layer_tar(&[("arm", 0o644, b"arm")])],
        &[Comp::Zstd],
        "arm64",
        &["r"],
    );
    let index = put_index(
        &src,
        &[(amd.clone(), "linux", "amd64"), (arm, "linux", "arm64")],
    );
    src.set_ref("localhost:5000/multi:1", index.clone())
        .unwrap();
    src.set_ref("docker.io/library/single:latest", amd.clone())
        .unwrap();
    let refs = vec![
        "localhost:5000/multi:1".to_string(),
        "docker.io/library/single:latest".to_string(),
    ];
    let out = dir.path().join("oci.tar");
    archive::save(&src, &refs, ArchiveFormat::Oci, &out).unwrap();
    let files = entries(&out);
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let idx: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(
        idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "localhost:5000/multi:1"
    );
    // index + 2 manifests + 2 configs + 3 layers
    assert_eq!(files.keys().filter(|k| k.starts_with("blobs/")).count(), 8);
    for (name, data) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(Digest::sha256_of(data).hex(), hex);
        }
    }

    let dst = store(dir.path(), "dst");
    let names = archive::load(&dst, &out).unwrap();
    assert_eq!(names, refs);
    assert_eq!(
        dst.resolve("localhost:5000/multi:1")
            .unwrap()
            .unwrap()
            .digest,
        index.digest
    );
    assert_eq!(
        dst.resolve("docker.io/library/single:latest")
            .unwrap()
            .unwrap()
            .digest,
        amd.digest
    );
    assert_eq!(blob_count(&dst), 8);
    // The multi-platform image saves to docker-archive as its linux/amd64 image.
    let docker = dir.path().join("from-index.tar");
    archive::save(
        &dst,
        &["localhost:5000/multi:1".to_string()],
        ArchiveFormat::Docker,
        &docker,
    )
    .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&entries(&docker)["manifest.json"]).unwrap();
    let amd_config = manifest_of(&dst, "docker.io/library/single:latest")
        .config
        .unwrap()
        .digest;
    assert_eq!(m[0]["Config"], format!("{}.json", amd_config.hex()));
}

#[test]
fn save_refuses_unknown_refs_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "s");
    let out = dir.path().join("x.tar");
    let r = archive::save(&s, &["nope:1".to_string()], ArchiveFormat::Oci, &out);
    assert!(matches!(r, Err(StoreError::RefNotFound(_))));
    assert!(!out.exists());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}

#[test]
fn save_detects_a_corrupted_layer() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "s");
    let img = put_image(
        &s,
        &two_layers(),
        &[Comp::None, Comp::Gzip],
        "amd64",
        &["a"],
    );
    s.set_ref("a:1", img).unwrap();
    let m = manifest_of(&s, "a:1");
    let path = s.blob_path(&m.layers[0].digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes[600] ^= 1;
    fs::write(&path, bytes).unwrap();
    let out = dir.path().join("x.tar");
    for format in [ArchiveFormat::Docker, ArchiveFormat::Oci] {
        let r = archive::save(&s, &["a:1".to_string()], format, &out);
        assert!(matches!(r, Err(StoreError::DigestMismatch { .. })), "{r:?}");
        assert!(!out.exists());
    }
}

/// A docker-archive as podman writes it: `<diff>.tar` files, `<id>/layer.tar` symlinks,
/// plus an untagged second image and a gzip layer.
#[test]
fn loads_podman_style_symlinked_docker_archive() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[("hello", 0o644, b"hello")]);
    let diff = Digest::sha256_of(&layer);
    let gz = gzip(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    );
    let cfg_hex = Digest::sha256_of(config.as_bytes()).hex().to_string();
    let manifest = format!(
        r#"[{{"Config":"{cfg_hex}.json","RepoTags":["user/app:1"],"Layers":["v1id/layer.tar"]}},
           {{"Config":"{cfg_hex}.json","RepoTags":null,"Layers":["gz/layer.tar"]}}]"#
    );
    let layer_name = format!("{}.tar", diff.hex());
    let cfg_name = format!("{cfg_hex}.json");
    let target = format!("../{layer_name}");
    let tar = raw_tar(&[
        RawEntry::file(&layer_name, &layer),
        RawEntry::file(&cfg_name, config.as_bytes()),
        RawEntry::symlink("v1id/layer.tar", &target),
        RawEntry::file("gz/layer.tar", &gz),
        RawEntry::file("manifest.json", manifest.as_bytes()),
    ]);
    let path = dir.path().join("podman.tar.gz");
    fs::write(&path, gzip(&tar)).unwrap();
    let s = store(dir.path(), "s");
    let names = archive::load(&s, &path).unwrap();
    assert_eq!(names[0], "docker.io/user/app:1");
    let m = manifest_of(&s, "docker.io/user/app:1");
    assert_eq!(m.layers[0].digest, diff);
    // The untagged image kept its gzip layer as is and is reachable by digest.
    let untagged = s.resolve(&names[1]).unwrap().unwrap();
    let m2 = ParsedManifest::parse(&s.read_blob(&untagged.digest, 1 << 20).unwrap(), None).unwrap();
    assert_eq!(
        m2.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(m2.layers[0].digest, Digest::sha256_of(&gz));
    assert!(tmp_files(&s).is_empty(), "spilled entries cleaned up");
}

/// Load `tar` into a fresh store and expect it refused with nothing stored.
fn refused(tar: &[u8]) -> StoreError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.tar");
    fs::write(&path, tar).unwrap();
    let s = store(dir.path(), "s");
    let err = archive::load(&s, &path).unwrap_err();
    assert!(s.list().unwrap().is_empty());
    assert!(tmp_files(&s).is_empty(), "spilled entries cleaned up");
    assert!(!dir.path().join("x").exists() && !dir.path().join("s/x").exists());
    err
}

fn minimal_docker(extra: RawEntry<'_>, manifest: &str) -> Vec<u8> {
    raw_tar(&[extra, RawEntry::file("manifest.json", manifest.as_bytes())])
}

#[test]
fn hostile_archives_are_refused() {
    let ok_manifest = r#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":[]}]"#;
    let e = refused(&minimal_docker(
        RawEntry::file("../x", b"evil"),
        ok_manifest,
    ));
    assert!(matches!(e, StoreError::UnsafePath(_)), "{e}");
    let e = refused(&minimal_docker(
        RawEntry::file("/etc/x", b"evil"),
        ok_manifest,
    ));
    assert!(matches!(e, StoreError::UnsafePath(_)), "{e}");
    let e = refused(&minimal_docker(
        RawEntry::file("a/../../x", b"evil"),
        ok_manifest,
    ));
    assert!(matches!(e, StoreError::UnsafePath(_)), "{e}");
    let e = refused(&minimal_docker(
        RawEntry::symlink("c.json", "../../etc/passwd"),
        ok_manifest,
    ));
    assert!(matches!(e, StoreError::UnsafePath(_)), "{e}");
    let e = refused(&minimal_docker(
        RawEntry::symlink("c.json", "/etc/passwd"),
        ok_manifest,
    ));
    assert!(matches!(e, StoreError::UnsafePath(_)), "{e}");

    // Metadata pointing outside the archive.
    let e = refused(&minimal_docker(
        RawEntry::file("c.json", b"{}"),
        r#"[{"Config":"../../etc/passwd","RepoTags":["a:1"],"Layers":[]}]"#,
    ));
    assert!(matches!(e, StoreError::UnsafePath(_)), "{e}");
    let e = refused(&minimal_docker(
        RawEntry::file("c.json", br#"{"rootfs":{"diff_ids":[]}}"#),
        r#"[{"Config":"/etc/passwd","RepoTags":["a:1"],"Layers":[]}]"#,
    ));
    assert!(matches!(e, StoreError::UnsafePath(_)), "{e}");

    // A layer that does not match its diff_id.
    let layer = layer_tar(&[("f", 0o644, b"f")]);
    let config = format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::sha256_of(b"other")
    );
    let e = refused(&raw_tar(&[
        RawEntry::file("l.tar", &layer),
        RawEntry::file("c.json", config.as_bytes()),
        RawEntry::file(
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l.tar"]}]"#,
        ),
    ]));
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");

    // An OCI blob whose content is not its name.
    let name = format!("blobs/sha256/{}", Digest::sha256_of(b"promised").hex());
    let e = refused(&raw_tar(&[
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file(&name, b"delivered"),
        RawEntry::file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
    ]));
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");

    // An absurd size claimed for metadata is refused before anything is read.
    let e = refused(&raw_tar(&[RawEntry {
        claimed_size: Some(1 << 40),
        ..RawEntry::file("manifest.json", b"[]")
    }]));
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");

    // Duplicate names are ambiguous.
    let e = refused(&raw_tar(&[
        RawEntry::file("c.json", b"{}"),
        RawEntry::file("c.json", b"{}"),
    ]));
    assert!(matches!(e, StoreError::InvalidArchive(_)), "{e}");

    // Devices are not image content.
    let e = refused(&raw_tar(&[RawEntry {
        kind: tar::EntryType::Char,
        ..RawEntry::file("dev", b"")
    }]));
    assert!(matches!(e, StoreError::InvalidArchive(_)), "{e}");

    // Neither format.
    let e = refused(&raw_tar(&[RawEntry::file("README", b"hi")]));
    assert!(matches!(e, StoreError::InvalidArchive(_)), "{e}");

    // A link loop.
    let e = refused(&raw_tar(&[
        RawEntry::symlink("a", "b"),
        RawEntry::symlink("b", "a"),
        RawEntry::file(
            "manifest.json",
            br#"[{"Config":"a","RepoTags":["a:1"],"Layers":[]}]"#,
        ),
    ]));
    assert!(matches!(e, StoreError::InvalidArchive(_)), "{e}");
}

#[test]
fn oci_archive_missing_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = store(dir.path(), "src");
    let img = put_image(
        &src,
        &two_layers(),
        &[Comp::Gzip, Comp::Gzip],
        "amd64",
        &["a"],
    );
    src.set_ref("a:1", img).unwrap();
    let out = dir.path().join("oci.tar");
    archive::save(&src, &["a:1".to_string()], ArchiveFormat::Oci, &out).unwrap();
    // Rebuild the archive without one layer.
    let m = manifest_of(&src, "a:1");
    let drop_name = format!("blobs/sha256/{}", m.layers[1].digest.hex());
    let files = entries(&out);
    let kept: Vec<RawEntry> = files
        .iter()
        .filter(|(n, _)| **n != drop_name)
        .map(|(n, d)| RawEntry::file(n, d))
        .collect();
    let e = refused(&raw_tar(&kept));
    assert!(matches!(e, StoreError::InvalidArchive(_)), "{e}");
}

/// The shape `docker save` writes since Docker 25: an OCI layout plus `manifest.json`
/// whose paths point into `blobs/`. `manifest.json` wins (it has the full tags).
#[test]
fn loads_docker_25_style_archive() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[("f", 0o644, b"docker 25")]);
    let ld = Digest::sha256_of(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{ld}"]}}}}"#
    );
    let cd = Digest::sha256_of(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let md = Digest::sha256_of(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/library/app:25","org.opencontainers.image.ref.name":"25"}}}}]}}"#,
        manifest.len()
    );
    let docker_manifest = format!(
        r#"[{{"Config":"blobs/sha256/{}","RepoTags":["app:25"],"Layers":["blobs/sha256/{}"]}}]"#,
        cd.hex(),
        ld.hex()
    );
    let (lp, cp, mp) = (
        format!("blobs/sha256/{}", ld.hex()),
        format!("blobs/sha256/{}", cd.hex()),
        format!("blobs/sha256/{}", md.hex()),
    );
    let entries = [
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file(&lp, &layer),
        RawEntry::file(&cp, config.as_bytes()),
        RawEntry::file(&mp, manifest.as_bytes()),
        RawEntry::file("index.json", index.as_bytes()),
        RawEntry::file("manifest.json", docker_manifest.as_bytes()),
    ];
    let path = dir.path().join("d25.tar");
    fs::write(&path, raw_tar(&entries)).unwrap();
    let s = store(dir.path(), "s");
    assert_eq!(
        archive::load(&s, &path).unwrap(),
        ["docker.io/library/app:25"]
    );
    assert_eq!(
        manifest_of(&s, "docker.io/library/app:25").layers[0].digest,
        ld
    );

    // Without manifest.json it is an OCI layout; containerd's full name is preferred over
    // the tag-only ref.name.
    let path = dir.path().join("oci.tar");
    fs::write(&path, raw_tar(&entries[..5])).unwrap();
    let s2 = store(dir.path(), "s2");
    assert_eq!(
        archive::load(&s2, &path).unwrap(),
        ["docker.io/library/app:25"]
    );
    assert_eq!(
        s2.resolve("docker.io/library/app:25")
            .unwrap()
            .unwrap()
            .digest,
        md
    );
}
