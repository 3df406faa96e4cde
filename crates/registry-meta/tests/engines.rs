//! The metadata store's behaviour, one test body run against every engine (SQLite in a
//! temporary directory, PostgreSQL on a fresh database), plus concurrency tests for
//! PostgreSQL with several pools writing the same repository at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oci_core::Digest;
use registry_meta::prelude::*;
use registry_meta::{
    ExternalRegistryRecord, ManifestRecord, MetaError, MetaStore, NewManifest, PgMeta,
    ReplicationRuleRecord, RepositoryQuery, TagQuery,
};
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
    gc_deletes_only_what_is_still_unreferenced_and_old,
    summaries_tag_listing_and_repository_delete,
    external_registries_rules_and_proxy_tags,
    shared_keys,
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
    assert_eq!(meta.repo_blob("r", &b1).await.unwrap(), Some(1));
    assert_eq!(
        meta.repo_blob("r", &b2).await.unwrap(),
        None,
        "linked elsewhere only"
    );
    assert_eq!(meta.repo_blob("r", &b3).await.unwrap(), None);
    assert_eq!(meta.any_blob(&b2).await.unwrap(), Some(1));

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
    assert!(
        meta.get_manifest("r", &child.record.digest)
            .await
            .unwrap()
            .is_none()
    );
    match meta.put_manifest("r", &index, &tags(&["i"])).await {
        Err(MetaError::MissingReference(d)) => assert_eq!(d, child.record.digest),
        other => panic!("expected MissingReference, got {other:?}"),
    }
    assert!(meta.resolve_tag("r", "i").await.unwrap().is_none());
    meta.put_manifest("r", &child, &[]).await.unwrap();
    assert!(
        meta.get_manifest("r", &child.record.digest)
            .await
            .unwrap()
            .is_some()
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
        // Purging candidates: created before a time (whole seconds are stored).
        let later = SystemTime::now() + Duration::from_secs(2);
        assert_eq!(
            meta.uploads_created_before(later, 10).await.unwrap().len(),
            2
        );
        assert_eq!(
            meta.uploads_created_before(later, 1).await.unwrap().len(),
            1
        );
        let earlier = SystemTime::now() - Duration::from_secs(2);
        assert!(
            meta.uploads_created_before(earlier, 10)
                .await
                .unwrap()
                .is_empty()
        );
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

async fn gc_deletes_only_what_is_still_unreferenced_and_old(db: Db) {
    let meta = db.open().await;
    let (used, loose) = (Digest::sha256_of(b"used"), Digest::sha256_of(b"loose"));
    // Before anything is stored: nothing can be older than this (timestamps have whole
    // seconds, so a later instant may already be past the links' second).
    let start = SystemTime::now();
    meta.link_blob("r", &used, 4).await.unwrap();
    meta.link_blob("r", &loose, 5).await.unwrap();
    let child = NewManifest {
        record: rec(b"child", None),
        blobs: vec![used.clone()],
        children: vec![],
    };
    meta.put_manifest("r", &child, &[]).await.unwrap();
    let idx = NewManifest {
        record: rec(b"index", None),
        blobs: vec![],
        children: vec![child.record.digest.clone()],
    };
    meta.put_manifest("r", &idx, &["t".into()]).await.unwrap();
    let sig = NewManifest {
        record: rec(b"sig", Some(idx.record.digest.clone())),
        blobs: vec![],
        children: vec![],
    };
    meta.put_manifest("r", &sig, &[]).await.unwrap();
    // Nothing is old yet.
    assert!(!meta.gc_unlink_blob("r", &loose, start).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let cutoff = SystemTime::now() - Duration::from_secs(1);

    let page = meta.gc_manifests(None, 2).await.unwrap();
    let rest = meta
        .gc_manifests(Some((&page[1].repo, &page[1].digest)), 10)
        .await
        .unwrap();
    assert_eq!(page.len() + rest.len(), 3);
    let all: Vec<_> = page.into_iter().chain(rest).collect();
    let find = |d: &Digest| all.iter().find(|m| &m.digest == d).unwrap();
    assert!(find(&idx.record.digest).tagged);
    assert_eq!(
        find(&idx.record.digest).children,
        vec![child.record.digest.clone()]
    );
    assert_eq!(find(&child.record.digest).blobs, vec![used.clone()]);
    assert_eq!(
        find(&sig.record.digest).subject,
        Some(idx.record.digest.clone())
    );
    let blobs = meta.gc_blobs(None, 10).await.unwrap();
    assert_eq!(blobs.len(), 2);
    assert!(
        blobs
            .iter()
            .all(|b| b.links.len() == 1 && b.links[0].0 == "r")
    );

    // Referenced or tagged or listed or with a present subject: kept.
    assert!(!meta.gc_unlink_blob("r", &used, cutoff).await.unwrap());
    for m in [&idx, &child, &sig] {
        assert!(
            !meta
                .gc_delete_manifest("r", &m.record.digest, cutoff)
                .await
                .unwrap()
        );
    }
    assert!(
        !meta.gc_delete_blob(&loose, cutoff).await.unwrap(),
        "still linked"
    );
    // Untagged, the index goes; then its child and its referrer can.
    assert!(meta.delete_tag("r", "t").await.unwrap());
    assert!(
        meta.gc_delete_manifest("r", &idx.record.digest, cutoff)
            .await
            .unwrap()
    );
    assert!(
        meta.gc_delete_manifest("r", &sig.record.digest, cutoff)
            .await
            .unwrap()
    );
    assert!(
        meta.gc_delete_manifest("r", &child.record.digest, cutoff)
            .await
            .unwrap()
    );
    assert!(meta.gc_unlink_blob("r", &used, cutoff).await.unwrap());

    // A link used (touch) or re-linked is fresh again.
    assert_eq!(
        meta.touch_blob("r", &loose, SystemTime::now())
            .await
            .unwrap(),
        Some(5)
    );
    assert!(!meta.gc_unlink_blob("r", &loose, cutoff).await.unwrap());

    // A manifest whose blob GC unlinked is refused inside its transaction.
    let late = NewManifest {
        record: rec(b"late", None),
        blobs: vec![used.clone()],
        children: vec![],
    };
    assert!(matches!(
        meta.put_manifest("r", &late, &["x".into()]).await,
        Err(MetaError::MissingReference(d)) if d == used
    ));
    assert!(meta.resolve_tag("r", "x").await.unwrap().is_none());
    assert!(meta.digest_in_use(&used).await.unwrap(), "row still there");
    assert!(meta.gc_delete_blob(&used, cutoff).await.unwrap());
    assert!(!meta.digest_in_use(&used).await.unwrap());
    assert!(!meta.digest_in_use(&idx.record.digest).await.unwrap());
    meta.close().await;
}

async fn summaries_tag_listing_and_repository_delete(db: Db) {
    let meta = db.open().await;
    let shared = Digest::sha256_of(b"shared");
    let own = Digest::sha256_of(b"own");
    for repo in ["team/app", "team/db", "x_y"] {
        meta.link_blob(repo, &shared, 100).await.unwrap();
    }
    meta.link_blob("team/app", &own, 10).await.unwrap();
    let m1 = NewManifest {
        record: rec(b"m1", None),
        blobs: vec![shared.clone(), own.clone()],
        children: vec![],
    };
    let m2 = NewManifest {
        record: rec(b"m2x", None),
        blobs: vec![shared.clone()],
        children: vec![],
    };
    meta.put_manifest("team/app", &m1, &["v1".into(), "latest".into()])
        .await
        .unwrap();
    meta.put_manifest("team/app", &m2, &["v2".into()])
        .await
        .unwrap();
    meta.put_manifest("team/db", &m2, &["15".into()])
        .await
        .unwrap();

    let q = |name, contains, after| RepositoryQuery {
        name,
        contains,
        after,
        limit: 10,
    };
    let all = meta
        .repository_summaries(&q(None, None, None))
        .await
        .unwrap();
    let names: Vec<_> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["team/app", "team/db", "x_y"]);
    // Two manifests (2 + 3 bytes) plus the distinct blobs 100 + 10.
    assert_eq!(all[0].tag_count, 3);
    assert_eq!(all[0].total_size, 2 + 3 + 100 + 10);
    assert_eq!(all[1].total_size, 3 + 100);
    assert_eq!(all[2].total_size, 0);
    assert!(all[0].last_update > 0);
    let page = meta
        .repository_summaries(&q(None, None, Some("team/app")))
        .await
        .unwrap();
    assert_eq!(page[0].name, "team/db");
    let one = meta
        .repository_summaries(&q(Some("team/db"), None, None))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], all[1]);
    // `_` is literal, not a wildcard.
    let found = meta
        .repository_summaries(&q(None, Some("_"), None))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "x_y");

    let tags = meta
        .tag_summaries(&TagQuery {
            limit: 10,
            ..TagQuery::default()
        })
        .await
        .unwrap();
    let pairs: Vec<_> = tags
        .iter()
        .map(|t| format!("{}:{}", t.repository, t.tag))
        .collect();
    assert_eq!(
        pairs,
        [
            "team/app:latest",
            "team/app:v1",
            "team/app:v2",
            "team/db:15"
        ]
    );
    assert_eq!(tags[0].digest, m1.record.digest);
    assert_eq!(tags[2].size, 3);
    let next = meta
        .tag_summaries(&TagQuery {
            after: Some(("team/app", "v1")),
            limit: 2,
            ..TagQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 2);
    assert_eq!(
        (next[1].repository.as_str(), next[1].tag.as_str()),
        ("team/db", "15")
    );
    let v = meta
        .tag_summaries(&TagQuery {
            contains: Some("app:v"),
            limit: 10,
            ..TagQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(v.len(), 2);
    let db = meta
        .tag_summaries(&TagQuery {
            repository: Some("team/db"),
            limit: 10,
            ..TagQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(db.len(), 1);
    let exact = meta
        .tag_summaries(&TagQuery {
            repository: Some("team/app"),
            tag: Some("v1"),
            limit: 10,
            ..TagQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0].digest, m1.record.digest);

    let stats = meta.storage_stats().await.unwrap();
    assert_eq!(stats.blobs, 2);
    assert_eq!(stats.bytes, 100 + 10 + 2 + 3);

    let removed = meta.delete_repository("team/app").await.unwrap().unwrap();
    assert_eq!(removed.tags, ["latest", "v1", "v2"]);
    assert_eq!(removed.manifests.len(), 2);
    assert_eq!(removed.blob_links, 2);
    assert!(!meta.repository_exists("team/app").await.unwrap());
    assert!(meta.resolve_tag("team/app", "v1").await.unwrap().is_none());
    assert_eq!(meta.repo_blob("team/app", &own).await.unwrap(), None);
    // Other repositories and the blob records (content is GC's) are untouched.
    assert!(meta.resolve_tag("team/db", "15").await.unwrap().is_some());
    assert_eq!(meta.any_blob(&own).await.unwrap(), Some(10));
    assert_eq!(meta.delete_repository("team/app").await.unwrap(), None);
    meta.close().await;
}

async fn external_registries_rules_and_proxy_tags(db: Db) {
    let meta = db.open().await;
    assert!(meta.external_registries().await.unwrap().is_empty());
    let reg = |id: &str, name: &str, secret: Option<Vec<u8>>| ExternalRegistryRecord {
        id: id.into(),
        name: name.into(),
        kind: "generic".into(),
        endpoint: format!("https://{name}.example"),
        auth_kind: if secret.is_some() { "basic" } else { "none" }.into(),
        username: secret.as_ref().map(|_| "me".to_string()),
        secret,
        insecure: false,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    };
    // Secrets are opaque bytes (nonce || ciphertext): any byte survives.
    let sealed = vec![0u8, 255, 1, 0, 128, 10];
    let a = reg("id-a", "a-upstream", Some(sealed.clone()));
    let b = reg("id-b", "B-target", None);
    meta.put_external_registry(&a).await.unwrap();
    meta.put_external_registry(&b).await.unwrap();
    // By name, bytewise ("B" sorts before "a").
    assert_eq!(
        meta.external_registries().await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    // Replacing by id updates everything but the creation time.
    let mut a2 = reg("id-a", "c-renamed", None);
    a2.kind = "harbor".into();
    a2.insecure = true;
    a2.created_at = 1_800_000_000;
    a2.updated_at = 1_800_000_100;
    meta.put_external_registry(&a2).await.unwrap();
    let listed = meta.external_registries().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[1],
        ExternalRegistryRecord {
            created_at: 1_700_000_000,
            ..a2.clone()
        }
    );
    // Names are unique.
    assert!(matches!(
        meta.put_external_registry(&reg("id-c", "B-target", None))
            .await,
        Err(MetaError::Database(_))
    ));
    assert!(meta.delete_external_registry("id-b").await.unwrap());
    assert!(!meta.delete_external_registry("id-b").await.unwrap());
    assert_eq!(meta.external_registries().await.unwrap().len(), 1);

    assert!(meta.replication_rules().await.unwrap().is_empty());
    let rule = |id: &str, name: &str, body: &str, at| ReplicationRuleRecord {
        id: id.into(),
        name: name.into(),
        body: body.into(),
        created_at: at,
    };
    let r1 = rule("r1", "nightly", r#"{"mode":"push"}"#, 10);
    let r2 = rule("r2", "Mirror", r#"{"mode":"pull"}"#, 20);
    meta.put_replication_rule(&r1).await.unwrap();
    meta.put_replication_rule(&r2).await.unwrap();
    assert_eq!(
        meta.replication_rules().await.unwrap(),
        vec![r2.clone(), r1.clone()]
    );
    meta.put_replication_rule(&rule("r1", "weekly", r#"{"mode":"pull"}"#, 99))
        .await
        .unwrap();
    assert_eq!(
        meta.replication_rules().await.unwrap()[1],
        rule("r1", "weekly", r#"{"mode":"pull"}"#, 10)
    );
    assert!(matches!(
        meta.put_replication_rule(&rule("r3", "Mirror", "{}", 30))
            .await,
        Err(MetaError::Database(_))
    ));
    assert!(meta.delete_replication_rule("r2").await.unwrap());
    assert!(!meta.delete_replication_rule("r2").await.unwrap());
    assert_eq!(meta.replication_rules().await.unwrap().len(), 1);

    assert_eq!(meta.proxy_tag_checked("hub/lib", "1").await.unwrap(), None);
    meta.set_proxy_tag_checked("hub/lib", "1", 1_700_000_000_123)
        .await
        .unwrap();
    meta.set_proxy_tag_checked("hub/lib", "2", 5).await.unwrap();
    assert_eq!(
        meta.proxy_tag_checked("hub/lib", "1").await.unwrap(),
        Some(1_700_000_000_123)
    );
    meta.set_proxy_tag_checked("hub/lib", "1", 1_700_000_999_000)
        .await
        .unwrap();
    assert_eq!(
        meta.proxy_tag_checked("hub/lib", "1").await.unwrap(),
        Some(1_700_000_999_000)
    );
    assert_eq!(
        meta.proxy_tag_checked("hub/lib", "2").await.unwrap(),
        Some(5)
    );
    assert_eq!(
        meta.proxy_tag_checked("hub/other", "1").await.unwrap(),
        None
    );
    meta.close().await;

    // Everything survives a reconnect.
    let meta = db.open().await;
    assert_eq!(
        meta.external_registries().await.unwrap()[0].name,
        "c-renamed"
    );
    assert_eq!(meta.replication_rules().await.unwrap()[0].name, "weekly");
    assert_eq!(
        meta.proxy_tag_checked("hub/lib", "2").await.unwrap(),
        Some(5)
    );
    meta.close().await;
}

/// Pushers and garbage collectors with their own pools (separate replicas) work on the same
/// blobs at once, the collectors with no grace at all (everything unreferenced goes at once).
/// Every operation succeeds or, for a push whose blob GC unlinked between its link and its
/// manifest, fails with MissingReference; a manifest that was stored always keeps its blob
/// links and blob rows, while it is tagged (checked right after each push, then the tag is
/// removed so that GC takes it and its blobs) and at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_gc_racing_pushes_never_orphans_a_manifest() {
    if !pg::available() {
        return;
    }
    const PUSHERS: usize = 4;
    const COLLECTORS: usize = 2;
    const ROUNDS: usize = 40;
    const REPOS: [&str; 2] = ["gc/one", "gc/two"];
    // Pusher w references blobs w*3+i and w*3+i+1 in round i: each blob is dropped by one
    // pusher shortly before the next one links it again, while GC is removing it.
    const BLOBS: usize = 12;
    let url = pg::database_url();
    let blobs: Arc<Vec<Digest>> = Arc::new(
        (0..BLOBS)
            .map(|i| Digest::sha256_of(format!("contended blob {i}").as_bytes()))
            .collect(),
    );
    // Created once before the racers connect (several first migrations at once are tested
    // elsewhere).
    PgMeta::connect(&url).await.unwrap().close().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Arc::new(tokio::sync::Barrier::new(PUSHERS + COLLECTORS));

    let mut collectors = tokio::task::JoinSet::new();
    for c in 0..COLLECTORS {
        let (url, done, start) = (url.clone(), done.clone(), start.clone());
        collectors.spawn(async move {
            let meta = PgMeta::connect(&url).await.unwrap();
            start.wait().await;
            let (mut manifests, mut links, mut rows) = (0u64, 0u64, 0u64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let future = SystemTime::now() + Duration::from_secs(3600);
                for m in meta.gc_manifests(None, 1000).await.unwrap() {
                    if !m.tagged
                        && meta
                            .gc_delete_manifest(&m.repo, &m.digest, future)
                            .await
                            .unwrap()
                    {
                        manifests += 1;
                    }
                }
                let mut page = meta.gc_blobs(None, 1000).await.unwrap();
                if c % 2 == 1 {
                    page.reverse();
                }
                for b in page {
                    for (repo, _) in &b.links {
                        if meta.gc_unlink_blob(repo, &b.digest, future).await.unwrap() {
                            links += 1;
                        }
                    }
                    if meta.gc_delete_blob(&b.digest, future).await.unwrap() {
                        rows += 1;
                    }
                }
            }
            meta.close().await;
            (manifests, links, rows)
        });
    }

    let mut pushers = tokio::task::JoinSet::new();
    for w in 0..PUSHERS {
        let (url, blobs, start) = (url.clone(), blobs.clone(), start.clone());
        pushers.spawn(async move {
            let meta = PgMeta::connect(&url).await.unwrap();
            start.wait().await;
            let tag = format!("w{w}");
            let mut last: [Option<NewManifest>; 2] = [None, None];
            let (mut stored, mut missing) = (0, 0);
            for i in 0..ROUNDS {
                let r = i % REPOS.len();
                let repo = REPOS[r];
                let (a, b) = (&blobs[(w * 3 + i) % BLOBS], &blobs[(w * 3 + i + 1) % BLOBS]);
                meta.link_blob(repo, a, 11).await.unwrap();
                meta.link_blob(repo, b, 11).await.unwrap();
                let m = image(format!("gc race {w} {i}").as_bytes(), &[a, b]);
                match meta
                    .put_manifest(repo, &m, std::slice::from_ref(&tag))
                    .await
                {
                    Ok(()) => {
                        stored += 1;
                        // Tagged by us and by nobody else: GC must leave it and its blobs.
                        for d in [a, b] {
                            assert_eq!(
                                meta.repo_blob(repo, d).await.unwrap(),
                                Some(11),
                                "{repo}: the link of a stored manifest's blob is gone"
                            );
                        }
                        // Untag it (all but the last round per repository), so that GC can
                        // take it, then its links, then the blob rows, while others push.
                        if i + REPOS.len() < ROUNDS {
                            assert!(meta.delete_tag(repo, &tag).await.unwrap());
                        } else {
                            last[r] = Some(m);
                        }
                    }
                    Err(MetaError::MissingReference(d)) => {
                        assert!(&d == a || &d == b, "unexpected missing {d}");
                        missing += 1;
                    }
                    Err(e) => panic!("pusher {w}: {e}"),
                }
            }
            meta.close().await;
            (w, last, stored, missing)
        });
    }
    let mut finals = Vec::new();
    while let Some(joined) = pushers.join_next().await {
        finals.push(joined.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut collected = (0, 0, 0);
    while let Some(joined) = collectors.join_next().await {
        let (m, l, r) = joined.unwrap();
        collected = (collected.0 + m, collected.1 + l, collected.2 + r);
    }
    let (stored, missing): (usize, usize) =
        finals.iter().fold((0, 0), |(s, m), f| (s + f.2, m + f.3));
    eprintln!(
        "stored {stored}, refused {missing}; GC deleted {} manifests, {} links, {} blob rows",
        collected.0, collected.1, collected.2
    );
    assert!(stored > 0, "no push got through");
    assert!(
        collected.0 > 0 && collected.1 > 0 && collected.2 > 0,
        "GC collected nothing ({collected:?}): the race was not exercised"
    );

    let meta = PgMeta::connect(&url).await.unwrap();
    // Every manifest left has its blobs linked and recorded.
    let left = meta.gc_manifests(None, 10_000).await.unwrap();
    for m in &left {
        for d in &m.blobs {
            assert_eq!(
                meta.repo_blob(&m.repo, d).await.unwrap(),
                Some(11),
                "{}@{} lost {d}",
                m.repo,
                m.digest
            );
        }
    }
    // A manifest stored in a pusher's last round per repository still carries its tag.
    for (w, last, _, _) in &finals {
        for (r, m) in last.iter().enumerate() {
            if let Some(m) = m {
                let got = meta
                    .resolve_tag(REPOS[r], &format!("w{w}"))
                    .await
                    .unwrap()
                    .expect("tag kept");
                assert_eq!(got.digest, m.record.digest);
            }
        }
    }
    // A final collection with no grace leaves exactly the tagged manifests and their blobs.
    let future = SystemTime::now() + Duration::from_secs(3600);
    for m in &left {
        if !m.tagged {
            meta.gc_delete_manifest(&m.repo, &m.digest, future)
                .await
                .unwrap();
        }
    }
    for b in meta.gc_blobs(None, 1000).await.unwrap() {
        for (repo, _) in &b.links {
            meta.gc_unlink_blob(repo, &b.digest, future).await.unwrap();
        }
        meta.gc_delete_blob(&b.digest, future).await.unwrap();
    }
    let kept = meta.gc_manifests(None, 10_000).await.unwrap();
    assert!(kept.iter().all(|m| m.tagged));
    for m in &kept {
        for d in &m.blobs {
            assert!(meta.repo_blob(&m.repo, d).await.unwrap().is_some());
        }
    }
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
        for blob in [
            shared.clone(),
            Digest::sha256_of(format!("layer {w} {}", ROUNDS - 1).as_bytes()),
        ] {
            assert!(meta.repo_blob("race/repo", &blob).await.unwrap().is_some());
        }
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

/// Repository deletes racing pushes into the same repository from other pools: every push
/// succeeds or misses a blob link the delete removed (MissingReference), never fails on a
/// vanished repository row, and whatever survives is consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_repository_delete_racing_pushes_stays_consistent() {
    if !pg::available() {
        return;
    }
    const PUSHERS: usize = 3;
    const ROUNDS: usize = 30;
    let url = pg::database_url();
    PgMeta::connect(&url).await.unwrap().close().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deleter = {
        let (url, done) = (url.clone(), done.clone());
        tokio::spawn(async move {
            let meta = PgMeta::connect(&url).await.unwrap();
            let mut deleted = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(removed) = meta.delete_repository("del/race").await.unwrap() {
                    deleted += 1;
                    // A stored manifest always came with its layer's link.
                    assert!(removed.manifests.is_empty() || removed.blob_links > 0);
                }
                tokio::task::yield_now().await;
            }
            meta.close().await;
            deleted
        })
    };
    let mut pushers = tokio::task::JoinSet::new();
    for w in 0..PUSHERS {
        let url = url.clone();
        pushers.spawn(async move {
            let meta = PgMeta::connect(&url).await.unwrap();
            let (mut stored, mut missing) = (0, 0);
            for i in 0..ROUNDS {
                let layer = Digest::sha256_of(format!("del layer {}", i % 4).as_bytes());
                meta.link_blob("del/race", &layer, 7).await.unwrap();
                let m = image(format!("del {w} {i}").as_bytes(), &[&layer]);
                match meta
                    .put_manifest("del/race", &m, &tags(&["latest", &format!("w{w}")]))
                    .await
                {
                    Ok(()) => stored += 1,
                    Err(MetaError::MissingReference(d)) => {
                        assert_eq!(d, layer);
                        missing += 1;
                    }
                    Err(e) => panic!("pusher {w}: {e}"),
                }
            }
            meta.close().await;
            (stored, missing)
        });
    }
    let (mut stored, mut missing) = (0, 0);
    while let Some(joined) = pushers.join_next().await {
        let (s, m) = joined.unwrap();
        stored += s;
        missing += m;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let deleted = deleter.await.unwrap();
    eprintln!("stored {stored}, refused {missing}, repository deleted {deleted} times");
    assert!(stored > 0 && deleted > 0, "the race was not exercised");

    let meta = PgMeta::connect(&url).await.unwrap();
    for tag in meta.list_tags("del/race", None, 100).await.unwrap() {
        assert!(meta.resolve_tag("del/race", &tag).await.unwrap().is_some());
    }
    for m in meta.gc_manifests(None, 1000).await.unwrap() {
        for d in &m.blobs {
            assert_eq!(meta.repo_blob(&m.repo, d).await.unwrap(), Some(7));
        }
    }
    // The repository can still be deleted and used afresh.
    meta.delete_repository("del/race").await.unwrap();
    assert!(!meta.repository_exists("del/race").await.unwrap());
    let layer = Digest::sha256_of(b"del layer 0");
    meta.link_blob("del/race", &layer, 7).await.unwrap();
    meta.put_manifest("del/race", &image(b"after", &[&layer]), &tags(&["latest"]))
        .await
        .unwrap();
    meta.close().await;
}

async fn shared_keys(db: Db) {
    let meta = db.open().await;
    assert_eq!(meta.token_key("k1").await.unwrap(), None);
    meta.put_token_key("k1", "ES256", &[4, 1, 2]).await.unwrap();
    // Recorded once: a second publication of the same kid changes nothing.
    meta.put_token_key("k1", "RS256", &[9]).await.unwrap();
    meta.put_token_key("k2", "RS256", &[0, 255]).await.unwrap();
    assert_eq!(
        meta.token_key("k1").await.unwrap(),
        Some(("ES256".to_string(), vec![4, 1, 2]))
    );
    assert_eq!(
        meta.token_key("k2").await.unwrap(),
        Some(("RS256".to_string(), vec![0, 255]))
    );
    // The first fingerprint recorded for a name is everyone's answer.
    assert_eq!(
        meta.agree_key_fingerprint("ext", "aaa").await.unwrap(),
        "aaa"
    );
    assert_eq!(
        meta.agree_key_fingerprint("ext", "bbb").await.unwrap(),
        "aaa"
    );
    assert_eq!(
        meta.agree_key_fingerprint("other", "bbb").await.unwrap(),
        "bbb"
    );
    meta.close().await;
}
