//! The store: layout, blobs, references, concurrency, gc.

mod common;

use std::fs;
use std::io::Write;
use std::time::{Duration, SystemTime};

use common::{Comp, blob_count, desc, layer_tar, put_image, put_index, tmp_files};
use image_store::{GcOptions, ImageStore, REF_NAME_ANNOTATION, StoreError};
use oci_core::Digest;

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

fn age(path: &std::path::Path, by: Duration) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn open_creates_an_oci_layout_and_reopens() {
    let (_d, s) = store();
    let root = s.root();
    assert_eq!(
        fs::read_to_string(root.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert!(root.join("blobs/sha256").is_dir());
    let d = s.put_blob(b"kept").unwrap();
    let again = ImageStore::open(root).unwrap();
    assert!(again.has_blob(&d));

    fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
    assert!(matches!(
        ImageStore::open(root),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn blobs_round_trip_streaming_and_small() {
    let (_d, s) = store();
    let d = s.put_blob(b"{\"a\":1}").unwrap();
    assert_eq!(d, Digest::sha256_of(b"{\"a\":1}"));
    assert!(s.has_blob(&d));
    assert_eq!(s.read_blob(&d, 100).unwrap(), b"{\"a\":1}");
    assert_eq!(s.put_blob(b"{\"a\":1}").unwrap(), d, "idempotent");
    assert!(
        s.blob_path(&d)
            .ends_with(format!("blobs/sha256/{}", d.hex()))
    );

    // 5 MiB streamed in odd chunks, never held whole by the store.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let bd = Digest::sha256_of(&big);
    let mut w = s.blob_writer(&bd).unwrap().expect_size(big.len() as u64);
    for c in big.chunks(65_537) {
        w.write_all(c).unwrap();
    }
    assert_eq!(w.written(), big.len() as u64);
    assert_eq!(w.commit().unwrap(), (bd.clone(), big.len() as u64));
    assert_eq!(fs::read(s.blob_path(&bd)).unwrap(), big);
    let mut f = s.open_blob(&bd).unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut back).unwrap();
    assert_eq!(back.len(), big.len());

    // Digest learned at commit.
    let mut w = s.blob_writer_unknown().unwrap();
    w.write_all(b"unknown").unwrap();
    assert_eq!(w.commit().unwrap().0, Digest::sha256_of(b"unknown"));

    assert!(matches!(
        s.read_blob(&bd, 1024),
        Err(StoreError::TooLarge { .. })
    ));
    let missing = Digest::sha256_of(b"missing");
    assert!(!s.has_blob(&missing));
    assert!(matches!(
        s.open_blob(&missing),
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(tmp_files(&s).is_empty());
}

#[test]
fn digest_or_size_mismatch_leaves_nothing() {
    let (_d, s) = store();
    let claimed = Digest::sha256_of(b"what was promised");
    let mut w = s.blob_writer(&claimed).unwrap();
    w.write_all(b"something else").unwrap();
    assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
    assert!(!s.has_blob(&claimed));
    assert_eq!(blob_count(&s), 0);
    assert!(tmp_files(&s).is_empty());

    // Too many bytes fail at write time; too few at commit.
    let d = Digest::sha256_of(b"abc");
    let mut w = s.blob_writer(&d).unwrap().expect_size(2);
    assert!(w.write_all(b"abc").is_err());
    drop(w);
    let mut w = s.blob_writer(&d).unwrap().expect_size(4);
    w.write_all(b"abc").unwrap();
    assert!(matches!(w.commit(), Err(StoreError::SizeMismatch { .. })));
    let mut w = s.blob_writer_unknown().unwrap().max_size(2);
    assert!(w.write_all(b"abc").is_err());
    drop(w);

    // Dropped without commit.
    let mut w = s.blob_writer(&d).unwrap();
    w.write_all(b"abc").unwrap();
    drop(w);
    assert_eq!(blob_count(&s), 0);
    assert!(tmp_files(&s).is_empty());
}

#[test]
fn corrupted_blob_is_detected_on_read() {
    let (_d, s) = store();
    let d = s.put_blob(b"original").unwrap();
    fs::write(s.blob_path(&d), b"tampered").unwrap();
    assert!(matches!(
        s.read_blob(&d, 100),
        Err(StoreError::DigestMismatch { .. })
    ));
}

#[test]
fn references_set_resolve_list_replace_remove() {
    let (_d, s) = store();
    let a = put_image(
        &s,
        &[layer_tar(&[("a", 0o644, b"a")])],
        &[Comp::Gzip],
        "amd64",
        &["a"],
    );
    let b = put_image(
        &s,
        &[layer_tar(&[("b", 0o644, b"b")])],
        &[Comp::None],
        "amd64",
        &["b"],
    );
    s.set_ref("localhost:5000/app:1", a.clone()).unwrap();
    s.set_ref("docker.io/library/other:latest", b.clone())
        .unwrap();
    let got = s.resolve("localhost:5000/app:1").unwrap().unwrap();
    assert_eq!(got.digest, a.digest);
    assert_eq!(
        got.annotations.unwrap()[REF_NAME_ANNOTATION],
        "localhost:5000/app:1"
    );
    assert_eq!(
        s.resolve(&b.digest.to_string()).unwrap().unwrap().digest,
        b.digest
    );
    assert!(s.resolve("nope:1").unwrap().is_none());
    assert!(
        s.resolve(&Digest::sha256_of(b"x").to_string())
            .unwrap()
            .is_none()
    );

    // Replace keeps one entry for the name.
    s.set_ref("localhost:5000/app:1", b.clone()).unwrap();
    let list = s.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].0, "localhost:5000/app:1");
    assert_eq!(list[0].1.digest, b.digest);

    assert!(s.remove_ref("localhost:5000/app:1").unwrap());
    assert!(!s.remove_ref("localhost:5000/app:1").unwrap());
    assert_eq!(s.list().unwrap().len(), 1);

    // Untagged entries resolve by digest, are not listed, and go away with a named one.
    s.add_untagged(a.clone()).unwrap();
    assert_eq!(s.list().unwrap().len(), 1);
    assert!(s.resolve(&a.digest.to_string()).unwrap().is_some());
    s.set_ref("x:1", a.clone()).unwrap();
    s.remove_ref("x:1").unwrap();
    assert!(s.resolve(&a.digest.to_string()).unwrap().is_none());
    s.add_untagged(a.clone()).unwrap();
    assert!(s.remove_ref(&a.digest.to_string()).unwrap());
}

#[test]
fn set_ref_refuses_bad_names_and_incomplete_images() {
    let (_d, s) = store();
    let a = put_image(
        &s,
        &[layer_tar(&[("a", 0o644, b"a")])],
        &[Comp::Gzip],
        "amd64",
        &["a"],
    );
    let digest_name = Digest::sha256_of(b"n").to_string();
    for bad in ["", "a b", "a\nb", digest_name.as_str()] {
        assert!(
            matches!(s.set_ref(bad, a.clone()), Err(StoreError::InvalidName(_))),
            "{bad:?}"
        );
    }
    let missing = desc(
        oci_core::manifest::OCI_MANIFEST,
        Digest::sha256_of(b"nothing"),
        7,
    );
    assert!(matches!(
        s.set_ref("m:1", missing),
        Err(StoreError::BlobNotFound(_))
    ));
    let mut wrong_size = a.clone();
    wrong_size.size += 1;
    assert!(matches!(
        s.set_ref("m:1", wrong_size),
        Err(StoreError::SizeMismatch { .. })
    ));
    // A manifest whose layer is gone cannot be referenced.
    let m = s.read_blob(&a.digest, 1 << 20).unwrap();
    let parsed = oci_core::ParsedManifest::parse(&m, None).unwrap();
    fs::remove_file(s.blob_path(&parsed.layers[0].digest)).unwrap();
    assert!(matches!(
        s.set_ref("m:1", a),
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn index_json_keeps_fields_it_does_not_know() {
    let (_d, s) = store();
    let path = s.root().join("index.json");
    fs::write(
        &path,
        r#"{"schemaVersion":2,"manifests":[],"annotations":{"kept":"yes"}}"#,
    )
    .unwrap();
    let a = put_image(
        &s,
        &[layer_tar(&[("a", 0o644, b"a")])],
        &[Comp::Gzip],
        "amd64",
        &["a"],
    );
    s.set_ref("a:1", a).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["annotations"]["kept"], "yes");
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn concurrent_threads_with_separate_handles_lose_no_reference() {
    let (_d, s) = store();
    let img = put_image(
        &s,
        &[layer_tar(&[("a", 0o644, b"a")])],
        &[Comp::Gzip],
        "amd64",
        &["a"],
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = s.root().to_path_buf();
            let img = img.clone();
            std::thread::spawn(move || {
                let s = ImageStore::open(&root).unwrap();
                for i in 0..25 {
                    s.set_ref(&format!("localhost/t{t}:{i}"), img.clone())
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.list().unwrap().len(), 100);
}

const CHILD_ENV: &str = "IMAGE_STORE_TEST_CHILD_ROOT";

/// Body of the child process in `concurrent_processes_lose_no_reference`; a no-op otherwise.
#[test]
fn child_process_sets_refs() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = ImageStore::open(std::path::Path::new(&root)).unwrap();
    let digest: Digest = std::env::var("IMAGE_STORE_TEST_CHILD_DIGEST")
        .unwrap()
        .parse()
        .unwrap();
    let img = s.resolve(&digest.to_string()).unwrap().unwrap();
    let id = std::process::id();
    for i in 0..40 {
        s.set_ref(&format!("localhost/p{id}:{i}"), img.clone())
            .unwrap();
        if i % 10 == 0 {
            s.gc().unwrap();
        }
    }
}

#[test]
fn concurrent_processes_lose_no_reference() {
    let (_d, s) = store();
    let img = put_image(
        &s,
        &[layer_tar(&[("a", 0o644, b"a")])],
        &[Comp::Gzip],
        "amd64",
        &["a"],
    );
    s.set_ref("base:1", img.clone()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_process_sets_refs", "--nocapture"])
                .env(CHILD_ENV, s.root())
                .env("IMAGE_STORE_TEST_CHILD_DIGEST", img.digest.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..40 {
        s.set_ref(&format!("localhost/parent:{i}"), img.clone())
            .unwrap();
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(s.list().unwrap().len(), 1 + 40 + 3 * 40);
    // gc ran concurrently in the children and kept everything reachable.
    assert_eq!(s.gc().unwrap().blobs_removed, 0);
}

#[test]
fn gc_keeps_reachable_and_deletes_old_unreachable() {
    let (_d, s) = store();
    let hour = Duration::from_secs(3600);
    let a = put_image(
        &s,
        &[layer_tar(&[("a", 0o644, b"a")])],
        &[Comp::Gzip],
        "amd64",
        &["a"],
    );
    let arm = put_image(
        &s,
        &[layer_tar(&[("r", 0o644, b"r")])],
        &[Comp::Zstd],
        "arm64",
        &["r"],
    );
    let index = put_index(
        &s,
        &[(a.clone(), "linux", "amd64"), (arm, "linux", "arm64")],
    );
    s.set_ref("multi:1", index.clone()).unwrap();
    let orphan_old = s.put_blob(b"orphan old").unwrap();
    let orphan_new = s.put_blob(b"orphan new").unwrap();
    // Everything is an hour old except the fresh orphan.
    for e in fs::read_dir(s.root().join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        if !p.ends_with(orphan_new.hex()) {
            age(&p, hour);
        }
    }
    let stale_tmp = s.root().join("tmp/.tmp-stale");
    fs::write(&stale_tmp, b"x").unwrap();
    age(&stale_tmp, 2 * hour);
    let fresh_tmp = s.root().join("tmp/.tmp-fresh");
    fs::write(&fresh_tmp, b"x").unwrap();

    let stats = s.gc().unwrap();
    assert_eq!(stats.blobs_removed, 1);
    assert_eq!(stats.blobs_in_grace, 1);
    assert_eq!(
        stats.blobs_kept, 7,
        "index, 2 manifests, 2 configs, 2 layers"
    );
    assert_eq!(stats.temp_files_removed, 1);
    assert!(!s.has_blob(&orphan_old));
    assert!(s.has_blob(&orphan_new));
    assert!(!stale_tmp.exists());
    assert!(fresh_tmp.exists());
    assert_eq!(s.resolve("multi:1").unwrap().unwrap().digest, index.digest);

    // Unreferenced, everything old goes.
    s.remove_ref("multi:1").unwrap();
    let stats = s
        .gc_with(&GcOptions {
            blob_grace: Duration::ZERO,
            temp_grace: Duration::ZERO,
        })
        .unwrap();
    assert_eq!(stats.blobs_removed, 8);
    assert_eq!(blob_count(&s), 0);
    assert!(tmp_files(&s).is_empty());
}

#[test]
fn rewriting_an_existing_blob_refreshes_its_gc_grace() {
    // A blob that already exists but is written again gets a fresh mtime, so a gc running
    // while its image is being assembled does not take it.
    let (_d, s) = store();
    let d = s.put_blob(b"shared").unwrap();
    age(&s.blob_path(&d), Duration::from_secs(3600));
    s.put_blob(b"shared").unwrap();
    assert_eq!(s.gc().unwrap().blobs_in_grace, 1);
    assert!(s.has_blob(&d));
}

#[test]
fn gc_refuses_to_guess_when_a_manifest_is_unreadable() {
    let (_d, s) = store();
    let a = put_image(
        &s,
        &[layer_tar(&[("a", 0o644, b"a")])],
        &[Comp::Gzip],
        "amd64",
        &["a"],
    );
    s.set_ref("a:1", a.clone()).unwrap();
    fs::write(s.blob_path(&a.digest), b"garbage").unwrap();
    let before = blob_count(&s);
    assert!(
        s.gc_with(&GcOptions {
            blob_grace: Duration::ZERO,
            temp_grace: Duration::ZERO,
        })
        .is_err()
    );
    assert_eq!(blob_count(&s), before);
}
