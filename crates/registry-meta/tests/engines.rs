//! The metadata store's behaviour, one test body run against every engine (SQLite in a
//! temporary directory, PostgreSQL on a fresh database), plus concurrency tests for
//! PostgreSQL with several pools writing the same repository at once.

use std::sync::Arc;

use oci_core::Digest;
use registry_meta::{ManifestRecord, MetaError, MetaStore, NewManifest, PgMeta};
use test_support::postgres as pg;

/// A database of one engine for one test.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            url: format!("sqlite://{}", dir.path().join("m.db").display()),
            _dir: Some(dir),
        }
    }

    fn postgres() -> Db {
        Db {
            url: pg::database_url(),
            _dir: None,
        }
    }

    async fn open(&self) -> Arc<dyn MetaStore> {
        registry_meta::connect(&self.url).await.unwrap()
    }
}

/// One `#[tokio::test]` per engine for each shared body.
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if test_support::postgres::available() {
                        super::$name(super::Db::postgres()).await;
                    }
                }
            )*
        }
    };
}

on_every_engine!(
    tags_manifests_and_membership,
    references_must_exist,
    indexes_referrers_and_deletes,
    uploads_state_and_catalog,
);

fn rec(data: &[u8], subject: Option<Digest>) -> ManifestRecord {
    ManifestRecord {
        digest: Digest::sha256_of(data),
        media_type: oci_core::manifest::OCI_MANIFEST.into(),
        size: data.len() as u64,
        artifact_type: Some("application/x-test".into()),
        subject,
        annotations: None,
    }
}

fn image(data: &[u8], blobs: &[&Digest]) -> NewManifest {
    NewManifest {
        record: rec(data, None),
        blobs: blobs.iter().map(|d| (*d).clone()).collect(),
        children: vec![],
    }
}

fn tags(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn tags_manifests_and_membership(db: Db) {
    let meta = db.open().await;
    let blob = Digest::sha256_of(b"layer");
    assert!(!meta.repository_exists("a/b").await.unwrap());
    meta.link_blob("a/b", &blob, 5).await.unwrap();
    meta.link_blob("a/b", &blob, 5).await.unwrap();
    assert!(meta.repository_exists("a/b").await.unwrap());
    assert_eq!(meta.repo_blob("a/b", &blob).await.unwrap(), Some(5));
    assert_eq!(meta.repo_blob("c", &blob).await.unwrap(), None);
    assert_eq!(meta.any_blob(&blob).await.unwrap(), Some(5));
    assert_eq!(meta.any_blob(&Digest::sha256_of(b"x")).await.unwrap(), None);

    let m = image(b"m1", &[&blob]);
    meta.put_manifest("a/b", &m, &tags(&["v1", "latest"]))
        .await
        .unwrap();
    assert_eq!(
        meta.resolve_tag("a/b", "v1").await.unwrap().unwrap(),
        m.record
    );
    assert_eq!(
        meta.get_manifest("a/b", &m.record.digest).await.unwrap(),
        Some(m.record.clone())
    );
    assert_eq!(
        meta.get_manifest("c", &m.record.digest).await.unwrap(),
        None
    );
    // Idempotent: the same manifest again (even with other facts) keeps the first record.
    let mut again = m.clone();
    again.record.artifact_type = Some("application/x-other".into());
    meta.put_manifest("a/b", &again, &[]).await.unwrap();
    assert_eq!(
        meta.get_manifest("a/b", &m.record.digest).await.unwrap(),
        Some(m.record.clone())
    );
    assert_eq!(
        meta.list_tags("a/b", None, 10).await.unwrap(),
        vec!["latest", "v1"]
    );
    assert_eq!(
        meta.list_tags("a/b", Some("latest"), 10).await.unwrap(),
        vec!["v1"]
    );
    assert_eq!(
        meta.list_tags("a/b", None, 0).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(meta.list_tags("nope", None, 10).await.unwrap().is_empty());

    // Moving a tag: it points at the new manifest, the old one keeps its other tags.
    let m2 = image(b"m2", &[&blob]);
    meta.put_manifest("a/b", &m2, &tags(&["latest"]))
        .await
        .unwrap();
    assert_eq!(
        meta.resolve_tag("a/b", "latest")
            .await
            .unwrap()
            .unwrap()
            .digest,
        m2.record.digest
    );
    assert_eq!(
        meta.resolve_tag("a/b", "v1").await.unwrap().unwrap().digest,
        m.record.digest
    );

    // Lexical (bytewise) order whatever the database's locale.
    for t in ["Beta", "alpha", "1.0", "_x", "b"] {
        meta.put_manifest("a/b", &m2, &tags(&[t])).await.unwrap();
    }
    assert_eq!(
        meta.list_tags("a/b", None, 100).await.unwrap(),
        vec!["1.0", "Beta", "_x", "alpha", "b", "latest", "v1"]
    );
    assert_eq!(
        meta.list_tags("a/b", Some("Beta"), 2).await.unwrap(),
        vec!["_x", "alpha"]
    );

    assert!(meta.delete_tag("a/b", "b").await.unwrap());
    assert!(!meta.delete_tag("a/b", "b").await.unwrap());
    assert!(!meta.delete_tag("other", "b").await.unwrap());
    assert!(meta.resolve_tag("a/b", "b").await.unwrap().is_none());

    let removed = meta.delete_manifest("a/b", &m.record.digest).await.unwrap();
    assert_eq!(removed, Some(vec!["v1".to_string()]));
    assert!(meta.resolve_tag("a/b", "v1").await.unwrap().is_none());
    assert_eq!(
        meta.delete_manifest("a/b", &m.record.digest).await.unwrap(),
        None
    );
    assert_eq!(
        meta.delete_manifest("other", &m.record.digest)
            .await
            .unwrap(),
        None
    );
    let removed = meta
        .delete_manifest("a/b", &m2.record.digest)
        .await
        .unwrap();
    assert_eq!(
        removed,
        Some(tags(&["1.0", "Beta", "_x", "alpha", "latest"]))
    );
    assert!(meta.list_tags("a/b", None, 100).await.unwrap().is_empty());
    // A deleted manifest can be pushed again.
    meta.put_manifest("a/b", &m, &tags(&["v1"])).await.unwrap();
    assert_eq!(
        meta.resolve_tag("a/b", "v1").await.unwrap().unwrap(),
        m.record
    );

    // Unlinking removes membership only.
    assert!(meta.unlink_blob("a/b", &blob).await.unwrap());
    assert!(!meta.unlink_blob("a/b", &blob).await.unwrap());
    assert!(!meta.unlink_blob("zzz", &blob).await.unwrap());
    assert_eq!(meta.repo_blob("a/b", &blob).await.unwrap(), None);
    assert_eq!(meta.any_blob(&blob).await.unwrap(), Some(5));
    meta.close().await;
}

async fn references_must_exist(db: Db) {
    let meta = db.open().await;
    let (b1, b2, b3) = (
        Digest::sha256_of(b"1"),
        Digest::sha256_of(b"2"),
        Digest::sha256_of(b"3"),
    );
    meta.link_blob("r", &b1, 1).await.unwrap();
    meta.link_blob("other", &b2, 1).await.unwrap();
    assert_eq!(
        meta.missing_blobs("r", &[b3.clone(), b1.clone(), b2.clone(), b3.clone()])
            .await
            .unwrap(),
        vec![b3.clone(), b2.clone(), b3.clone()]
    );
    assert!(meta.missing_blobs("r", &[]).await.unwrap().is_empty());

    // A blob linked only in another repository does not count: nothing is stored.
    let m = image(b"needs b2", &[&b1, &b2]);
    match meta.put_manifest("r", &m, &tags(&["t"])).await {
        Err(MetaError::MissingReference(d)) => assert_eq!(d, b2),
        other => panic!("expected MissingReference, got {other:?}"),
    }
    assert_eq!(
        meta.get_manifest("r", &m.record.digest).await.unwrap(),
        None
    );
    assert!(meta.resolve_tag("r", "t").await.unwrap().is_none());

    // A child manifest must be in the repository too.
    let child = image(b"child", &[&b1]);
    let index = NewManifest {
        record: rec(b"index", None),
        blobs: vec![],
        children: vec![child.record.digest.clone()],
    };
    assert_eq!(
        meta.missing_manifests("r", std::slice::from_ref(&child.record.digest))
            .await
            .unwrap(),
        vec![child.record.digest.clone()]
    );
    match meta.put_manifest("r", &index, &tags(&["i"])).await {
        Err(MetaError::MissingReference(d)) => assert_eq!(d, child.record.digest),
        other => panic!("expected MissingReference, got {other:?}"),
    }
    assert!(meta.resolve_tag("r", "i").await.unwrap().is_none());
    meta.put_manifest("r", &child, &[]).await.unwrap();
    assert!(
        meta.missing_manifests("r", std::slice::from_ref(&child.record.digest))
            .await
            .unwrap()
            .is_empty()
    );
    meta.put_manifest("r", &index, &tags(&["i"])).await.unwrap();
    assert_eq!(
        meta.resolve_tag("r", "i").await.unwrap().unwrap().digest,
        index.record.digest
    );
    meta.close().await;
}

async fn indexes_referrers_and_deletes(db: Db) {
    let meta = db.open().await;
    let blob = Digest::sha256_of(b"cfg");
    meta.link_blob("x", &blob, 3).await.unwrap();
    let m = image(b"subject", &[&blob]);
    meta.put_manifest("x", &m, &tags(&["s"])).await.unwrap();
    let mut sigs = Vec::new();
    for i in 0..3u8 {
        let mut r = NewManifest {
            record: rec(&[b's', i], Some(m.record.digest.clone())),
            blobs: vec![],
            children: vec![],
        };
        r.record.annotations = Some(format!(r#"{{"n":"{i}"}}"#));
        r.record.artifact_type = (i != 1).then(|| format!("application/x-{i}"));
        meta.put_manifest("x", &r, &[]).await.unwrap();
        sigs.push(r.record);
    }
    sigs.sort_by_key(|r| r.digest.to_string());
    assert_eq!(meta.referrers("x", &m.record.digest).await.unwrap(), sigs);
    assert!(
        meta.referrers("y", &m.record.digest)
            .await
            .unwrap()
            .is_empty()
    );
    // Referrers outlive their subject (the spec lets clients push them first, too).
    meta.delete_manifest("x", &m.record.digest).await.unwrap();
    assert_eq!(meta.referrers("x", &m.record.digest).await.unwrap(), sigs);
    // An index whose child is deleted later stays (as in Distribution).
    meta.put_manifest("x", &m, &[]).await.unwrap();
    let index = NewManifest {
        record: rec(b"idx", None),
        blobs: vec![],
        children: vec![m.record.digest.clone()],
    };
    meta.put_manifest("x", &index, &tags(&["multi"]))
        .await
        .unwrap();
    assert_eq!(
        meta.delete_manifest("x", &m.record.digest).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(
        meta.resolve_tag("x", "multi")
            .await
            .unwrap()
            .unwrap()
            .digest,
        index.record.digest
    );
    meta.close().await;
}

async fn uploads_state_and_catalog(db: Db) {
    {
        let meta = db.open().await;
        meta.create_upload("u1", "x/y").await.unwrap();
        assert!(meta.create_upload("u1", "x/y").await.is_err());
        meta.create_upload("u2", "x/y").await.unwrap();
        assert_eq!(meta.upload_state("u1").await.unwrap(), None);
        meta.set_upload_state("u1", b"parts:1").await.unwrap();
        meta.set_upload_state("u1", &[0, 255, 7, 0]).await.unwrap();
        for name in ["b", "a", "c/d"] {
            meta.link_blob(name, &Digest::sha256_of(b"z"), 1)
                .await
                .unwrap();
        }
        meta.close().await;
    }
    // Everything survives a reconnect.
    let meta = db.open().await;
    assert_eq!(
        meta.upload_repo("u1").await.unwrap().as_deref(),
        Some("x/y")
    );
    assert_eq!(
        meta.upload_state("u1").await.unwrap(),
        Some(vec![0, 255, 7, 0])
    );
    assert_eq!(meta.upload_state("u2").await.unwrap(), None);
    meta.set_upload_state("u2", b"").await.unwrap();
    assert_eq!(meta.upload_state("u2").await.unwrap(), Some(vec![]));
    meta.delete_upload("u1").await.unwrap();
    meta.delete_upload("u1").await.unwrap();
    assert_eq!(meta.upload_repo("u1").await.unwrap(), None);
    assert_eq!(meta.upload_state("u1").await.unwrap(), None);
    // An unknown session stores nothing and says so.
    for id in ["u1", "never"] {
        match meta.set_upload_state(id, b"s").await {
            Err(MetaError::UnknownUpload(got)) => assert_eq!(got, id),
            other => panic!("expected UnknownUpload, got {other:?}"),
        }
        assert_eq!(meta.upload_repo(id).await.unwrap(), None);
    }
    assert_eq!(
        meta.list_repositories(None, 2).await.unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(
        meta.list_repositories(Some("b"), 2).await.unwrap(),
        vec!["c/d"]
    );
    assert!(meta.list_repositories(None, 0).await.unwrap().is_empty());
    meta.close().await;
}

#[tokio::test]
async fn unknown_schemes_are_refused() {
    for url in ["mysql://u:secret@h/db", "metadata.db", "redis://h"] {
        match registry_meta::connect(url).await {
            Err(MetaError::UnsupportedUrl(shown)) => {
                assert!(!shown.contains("secret"), "{shown}")
            }
            Err(e) => panic!("{url}: expected UnsupportedUrl, got {e}"),
            Ok(_) => panic!("{url}: expected UnsupportedUrl, got a store"),
        }
    }
    assert_eq!(
        registry_meta::redact("postgres://me:pw@db:5432/reg?sslmode=require"),
        "postgres://me:***@db:5432/reg?sslmode=require"
    );
    assert_eq!(
        registry_meta::redact("postgres://me@db/reg"),
        "postgres://me@db/reg"
    );
}

/// Writers with their own pools (as separate replicas have) hammer one new repository:
/// creating it at once, pushing manifests that share blobs, moving shared tags, deleting
/// manifests and unlinking blobs. No error other than the expected MissingReference, and
/// the final state is consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_writers_stay_consistent() {
    if !pg::available() {
        return;
    }
    const WRITERS: usize = 6;
    const ROUNDS: usize = 15;
    let url = pg::database_url();
    let shared = Digest::sha256_of(b"shared layer");
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let url = url.clone();
        let shared = shared.clone();
        let start = start.clone();
        tasks.spawn(async move {
            let meta = PgMeta::connect(&url).await.unwrap();
            start.wait().await;
            let mut last = None;
            let mut missing = 0;
            for i in 0..ROUNDS {
                let own = Digest::sha256_of(format!("layer {w} {i}").as_bytes());
                meta.link_blob("race/repo", &shared, 12).await.unwrap();
                meta.link_blob("race/repo", &own, 9).await.unwrap();
                let m = image(format!("manifest {w} {i}").as_bytes(), &[&shared, &own]);
                let my_tag = format!("w{w}");
                // Every writer moves "latest" and "stable" (in different orders) and its own tag.
                let mut moved = vec!["latest".to_string(), "stable".to_string(), my_tag];
                if w % 2 == 1 {
                    moved.reverse();
                }
                meta.put_manifest("race/repo", &m, &moved).await.unwrap();
                // One manifest every writer pushes and deletes at once.
                let common = image(b"common", &[&shared]);
                meta.put_manifest("race/repo", &common, &tags(&["common"]))
                    .await
                    .unwrap();
                if i % 3 == w % 3 {
                    meta.delete_manifest("race/repo", &common.record.digest)
                        .await
                        .unwrap();
                }
                // Pushes racing an unlink of their blob either succeed or see it missing.
                let flap = Digest::sha256_of(b"flapping");
                if w == 0 {
                    meta.unlink_blob("race/repo", &flap).await.unwrap();
                } else {
                    meta.link_blob("race/repo", &flap, 8).await.unwrap();
                }
                let f = image(format!("flap {w} {i}").as_bytes(), &[&flap]);
                match meta.put_manifest("race/repo", &f, &[]).await {
                    Ok(()) => {}
                    Err(MetaError::MissingReference(d)) => {
                        assert_eq!(d, flap);
                        missing += 1;
                    }
                    Err(e) => panic!("writer {w}: {e}"),
                }
                if let Some(prev) = last.replace(m.record.digest.clone()) {
                    // The previous manifest: some of its tags may have moved on already.
                    let removed = meta
                        .delete_manifest("race/repo", &prev)
                        .await
                        .unwrap()
                        .expect("only this writer deletes its manifests");
                    assert!(
                        !removed.contains(&format!("w{w}")),
                        "w{w} had moved on: {removed:?}"
                    );
                }
            }
            meta.close().await;
            (w, last.unwrap(), missing)
        });
    }
    let mut finals = Vec::new();
    while let Some(done) = tasks.join_next().await {
        finals.push(done.unwrap());
    }
    let meta = PgMeta::connect(&url).await.unwrap();
    let listed = meta.list_tags("race/repo", None, 1000).await.unwrap();
    for tag in &listed {
        assert!(
            meta.resolve_tag("race/repo", tag).await.unwrap().is_some(),
            "tag {tag} points nowhere"
        );
    }
    let mut last_digests = Vec::new();
    for (w, last, _) in &finals {
        assert_eq!(
            &meta
                .resolve_tag("race/repo", &format!("w{w}"))
                .await
                .unwrap()
                .expect("own tag")
                .digest,
            last
        );
        assert!(
            meta.missing_blobs(
                "race/repo",
                &[
                    shared.clone(),
                    Digest::sha256_of(format!("layer {w} {}", ROUNDS - 1).as_bytes())
                ]
            )
            .await
            .unwrap()
            .is_empty()
        );
        last_digests.push(last.clone());
    }
    // "latest" and "stable" were last moved by some writer to its final manifest (a deleted
    // manifest takes its tags with it, so they can only point at a surviving one).
    for shared_tag in ["latest", "stable"] {
        if let Some(m) = meta.resolve_tag("race/repo", shared_tag).await.unwrap() {
            assert!(last_digests.contains(&m.digest), "{shared_tag}");
        }
    }
    // Exactly one manifest per writer survives among the numbered ones.
    let mut expected: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
    expected.extend(["latest", "stable"].map(String::from));
    for t in &expected {
        if t.starts_with('w') {
            assert!(listed.contains(t), "{t} missing from {listed:?}");
        }
    }
    assert!(listed.iter().all(|t| expected.contains(t) || t == "common"));
    assert_eq!(
        meta.list_repositories(None, 10).await.unwrap(),
        vec!["race/repo"]
    );
    meta.close().await;
}
