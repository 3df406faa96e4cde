//! The registry service in process, over the embedded stores (SQLite and the filesystem):
//! what every writer (the /v2 API, management, replication, pull-through) relies on.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use oci_core::Digest;
use registry_core::blobs::Chunk;
use registry_core::events::{Action, Event, EventSink};
use registry_core::{BlobRead, BlobWant, CoreError, Reference, Registry, Repository, Upstream};
use registry_meta::SqliteMeta;
use registry_storage::{ByteStream, FsBlobStore, StorageError};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Keeps every event.
#[derive(Default)]
struct Recorder(parking_lot::Mutex<Vec<Event>>);

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.0.lock().push(event);
    }
}

impl Recorder {
    fn take(&self) -> Vec<(Action, String, Option<String>)> {
        self.0
            .lock()
            .drain(..)
            .map(|e| (e.action, e.target.repository, e.target.tag))
            .collect()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    reg: Registry,
    events: Arc<Recorder>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
    let meta = Arc::new(SqliteMeta::open(&dir.path().join("m.db")).await.unwrap());
    let events = Arc::new(Recorder::default());
    let reg = Registry::new(blobs, meta).with_events(events.clone());
    Fixture {
        _dir: dir,
        reg,
        events,
    }
}

fn body(bytes: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::once(async move {
        Ok(Bytes::from_static(bytes))
    }))
}

fn chunk(bytes: &'static [u8], at: Option<u64>) -> Chunk {
    Chunk {
        range: at.map(|a| (a, a + bytes.len() as u64 - 1)),
        length: Some(bytes.len() as u64),
        body: body(bytes),
    }
}

fn manifest(config: &Digest, config_size: usize, layer: &Digest, layer_size: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": layer_size}],
        })
        .to_string(),
    )
}

const CONFIG: &[u8] = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
const LAYER: &[u8] = b"layer bytes, in two chunks";

/// Pushes the config in one request and the layer in a two-chunk session; returns the
/// manifest referencing both.
async fn push_blobs(repo: &Repository) -> Bytes {
    let config = Digest::sha256_of(CONFIG);
    let layer = Digest::sha256_of(LAYER);
    repo.upload_blob(&config, Some(CONFIG.len() as u64), body(CONFIG))
        .await
        .unwrap();
    let id = repo.start_upload().await.unwrap();
    assert_eq!(
        repo.append(&id, chunk(&LAYER[..6], Some(0))).await.unwrap(),
        6
    );
    assert_eq!(repo.upload_status(&id).await.unwrap(), 6);
    let size = repo
        .commit_blob(&id, &layer, chunk(&LAYER[6..], Some(6)))
        .await
        .unwrap();
    assert_eq!(size, LAYER.len() as u64);
    manifest(&config, CONFIG.len(), &layer, LAYER.len())
}

#[tokio::test]
async fn a_pushed_image_reads_back_by_tag_and_digest_with_events() {
    let f = fixture().await;
    let repo = f.reg.repository("team/app").unwrap();
    let m = push_blobs(&repo).await;
    let stored = repo
        .put_manifest(
            &Reference::parse("v1").unwrap(),
            &["latest".into()],
            m.clone(),
            Some(OCI_MANIFEST),
        )
        .await
        .unwrap();
    assert_eq!(stored.digest, Digest::sha256_of(&m));
    assert_eq!(stored.tags, ["v1", "latest"]);
    for r in [
        Reference::Tag("latest".into()),
        Reference::Digest(stored.digest.clone()),
    ] {
        let got = repo.get_manifest(&r).await.unwrap();
        assert_eq!(
            (got.body.clone(), got.media_type.as_str()),
            (m.clone(), OCI_MANIFEST)
        );
    }
    assert_eq!(repo.tags(None, 10).await.unwrap(), ["latest", "v1"]);
    assert_eq!(repo.tags(Some("latest"), 10).await.unwrap(), ["v1"]);
    assert_eq!(f.reg.catalog(None, 10).await.unwrap(), ["team/app"]);
    let layer = Digest::sha256_of(LAYER);
    let BlobRead::Local { size } = repo.stat_blob(&layer, BlobWant::Stream).await.unwrap() else {
        panic!("a local blob streams from storage");
    };
    let read: Vec<u8> = repo
        .read_blob(&layer, 5, size - 5)
        .await
        .unwrap()
        .map(|c| c.unwrap().to_vec())
        .concat()
        .await;
    assert_eq!(read, &LAYER[5..]);
    assert_eq!(
        f.events.take(),
        [
            (Action::Push, "team/app".into(), Some("v1".into())),
            (Action::Push, "team/app".into(), Some("latest".into())),
        ]
    );
}

#[tokio::test]
async fn manifests_are_refused_unless_every_reference_is_here_and_the_digest_matches() {
    let f = fixture().await;
    let repo = f.reg.repository("team/app").unwrap();
    let config = Digest::sha256_of(CONFIG);
    let layer = Digest::sha256_of(LAYER);
    let tag = Reference::Tag("v1".into());
    let m = manifest(&config, CONFIG.len(), &layer, LAYER.len());
    let err = repo
        .put_manifest(&tag, &[], m.clone(), Some(OCI_MANIFEST))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::ManifestBlobUnknown(ref d) if *d == config),
        "{err}"
    );
    push_blobs(&repo).await;
    let wrong_size = manifest(&config, CONFIG.len() + 1, &layer, LAYER.len());
    let err = repo
        .put_manifest(&tag, &[], wrong_size, Some(OCI_MANIFEST))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::ReferenceSizeMismatch { declared, actual, .. } if declared == actual + 1),
        "{err}"
    );
    let pinned = Reference::Digest(Digest::sha256_of(b"something else"));
    let err = repo
        .put_manifest(&pinned, &[], m.clone(), Some(OCI_MANIFEST))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::ManifestDigestMismatch { .. }),
        "{err}"
    );
    let err = repo
        .put_manifest(&tag, &["-bad".into()], m.clone(), Some(OCI_MANIFEST))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::TagInvalid(_)), "{err}");
    let err = repo
        .put_manifest(&tag, &[], m.clone(), Some("application/x-unknown"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::ManifestInvalid(_) | CoreError::UnsupportedMediaType(_)
        ),
        "{err}"
    );
    // Nothing refused was stored.
    match repo.tags(None, 10).await {
        Ok(tags) => assert!(tags.is_empty(), "{tags:?}"),
        Err(e) => assert!(matches!(e, CoreError::NameUnknown(_)), "{e}"),
    }
    assert!(
        repo.manifest_record(&Digest::sha256_of(&m))
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.events.take().is_empty());
    assert!(matches!(
        f.reg.repository("Team/App").err(),
        Some(CoreError::NameInvalid(_))
    ));
}

#[tokio::test]
async fn untag_keeps_the_manifest_and_delete_takes_its_tags() {
    let f = fixture().await;
    let repo = f.reg.repository("team/app").unwrap();
    let m = push_blobs(&repo).await;
    let stored = repo
        .put_manifest(
            &Reference::Tag("v1".into()),
            &["v2".into()],
            m,
            Some(OCI_MANIFEST),
        )
        .await
        .unwrap();
    f.events.take();
    // Warm the cache first: untagging must drop the cached tag.
    repo.get_manifest(&Reference::Tag("v1".into()))
        .await
        .unwrap();
    let record = repo.untag("v1").await.unwrap();
    assert_eq!(record.digest, stored.digest);
    let err = repo
        .get_manifest(&Reference::Tag("v1".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::ManifestUnknown { ref reference, .. } if reference == "v1"),
        "{err}"
    );
    assert!(matches!(
        repo.untag("v1").await.unwrap_err(),
        CoreError::ManifestUnknown { .. }
    ));
    let by_digest = Reference::Digest(stored.digest.clone());
    repo.get_manifest(&by_digest).await.unwrap();
    assert_eq!(repo.delete_manifest(&stored.digest).await.unwrap(), ["v2"]);
    assert!(repo.get_manifest(&by_digest).await.is_err());
    assert!(
        repo.get_manifest(&Reference::Tag("v2".into()))
            .await
            .is_err()
    );
    assert_eq!(
        f.events.take(),
        [
            (Action::Delete, "team/app".into(), Some("v1".into())),
            (Action::Delete, "team/app".into(), None),
        ]
    );
}

#[tokio::test]
async fn upload_sessions_belong_to_their_repository_and_a_bad_digest_keeps_nothing() {
    let f = fixture().await;
    let repo = f.reg.repository("team/app").unwrap();
    let other = f.reg.repository("team/other").unwrap();
    let id = repo.start_upload().await.unwrap();
    let err = other.append(&id, chunk(b"x", None)).await.unwrap_err();
    assert!(matches!(err, CoreError::UploadUnknown(_)), "{err}");
    repo.append(&id, chunk(b"abc", Some(0))).await.unwrap();
    let err = repo.append(&id, chunk(b"def", Some(1))).await.unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::Storage(StorageError::OutOfOrder { have: 3, got: 1 })
        ),
        "{err}"
    );
    let wrong = Digest::sha256_of(b"not abc");
    let err = repo
        .commit_blob(&id, &wrong, chunk(b"", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Storage(StorageError::DigestMismatch { .. })),
        "{err}"
    );
    assert!(matches!(
        repo.upload_status(&id).await.unwrap_err(),
        CoreError::UploadUnknown(_)
    ));
    assert_eq!(repo.blob_size(&wrong).await.unwrap(), None);
    let id = repo.start_upload().await.unwrap();
    repo.cancel_upload(&id).await.unwrap();
    assert!(matches!(
        repo.upload_status(&id).await.unwrap_err(),
        CoreError::UploadUnknown(_)
    ));
}

#[tokio::test]
async fn mounts_link_what_another_repository_has_without_moving_bytes() {
    let f = fixture().await;
    let repo = f.reg.repository("team/app").unwrap();
    let other = f.reg.repository("team/other").unwrap();
    push_blobs(&repo).await;
    let layer = Digest::sha256_of(LAYER);
    assert_eq!(
        other
            .mount_blob(&layer, Some("team/nothing"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(other.blob_size(&layer).await.unwrap(), None);
    assert_eq!(
        other.mount_blob(&layer, Some("team/app")).await.unwrap(),
        Some(LAYER.len() as u64)
    );
    assert_eq!(
        other.blob_size(&layer).await.unwrap(),
        Some(LAYER.len() as u64)
    );
    other.delete_blob(&layer).await.unwrap();
    assert!(matches!(
        other.delete_blob(&layer).await.unwrap_err(),
        CoreError::BlobUnknown(_)
    ));
    assert_eq!(
        repo.blob_size(&layer).await.unwrap(),
        Some(LAYER.len() as u64)
    );
}

/// An upstream that serves one blob and records what it was asked.
#[derive(Default)]
struct FakeUpstream {
    asked: parking_lot::Mutex<Vec<String>>,
}

#[async_trait]
impl Upstream for FakeUpstream {
    fn covers(&self, repo: &str) -> bool {
        repo.starts_with("cache/")
    }

    async fn refresh_manifest(&self, repo: &Repository, reference: &Reference) {
        self.asked
            .lock()
            .push(format!("manifest {}:{reference}", repo.name()));
    }

    async fn fetch_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        want: BlobWant,
    ) -> Option<BlobRead> {
        self.asked
            .lock()
            .push(format!("blob {} {want:?}", repo.name()));
        if *digest != Digest::sha256_of(LAYER) {
            return None;
        }
        match want {
            BlobWant::Stream => Some(BlobRead::Streaming {
                size: Some(LAYER.len() as u64),
                body: body(LAYER),
            }),
            BlobWant::Stored => {
                let size = repo.ingest_blob(digest, None, body(LAYER)).await.ok()?;
                Some(BlobRead::Local { size })
            }
        }
    }
}

#[tokio::test]
async fn a_pull_through_repository_reads_from_its_upstream_and_refuses_pushes() {
    let f = fixture().await;
    let up = Arc::new(FakeUpstream::default());
    let reg = f.reg.clone().with_upstream(up.clone());
    let cached = reg.repository("cache/library/alpine").unwrap();
    assert!(cached.is_read_through());
    assert!(!reg.repository("team/app").unwrap().is_read_through());
    for err in [
        cached.start_upload().await.unwrap_err(),
        cached
            .put_manifest(
                &Reference::Tag("v1".into()),
                &[],
                Bytes::from_static(b"{}"),
                None,
            )
            .await
            .unwrap_err(),
        cached
            .mount_blob(&Digest::sha256_of(LAYER), None)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, CoreError::ReadThrough(ref n) if n == "cache/library/alpine"),
            "{err}"
        );
    }
    let err = cached
        .get_manifest(&Reference::Tag("3.20".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::ManifestUnknown { .. }), "{err}");
    let layer = Digest::sha256_of(LAYER);
    assert!(matches!(
        cached.stat_blob(&layer, BlobWant::Stream).await.unwrap(),
        BlobRead::Streaming { size: Some(26), .. }
    ));
    assert!(matches!(
        cached.stat_blob(&layer, BlobWant::Stored).await.unwrap(),
        BlobRead::Local { size: 26 }
    ));
    // Stored now: no more upstream trips.
    assert!(matches!(
        cached.stat_blob(&layer, BlobWant::Stream).await.unwrap(),
        BlobRead::Local { size: 26 }
    ));
    let missing = Digest::sha256_of(b"nowhere");
    assert!(matches!(
        cached
            .stat_blob(&missing, BlobWant::Stream)
            .await
            .unwrap_err(),
        CoreError::BlobUnknown(_)
    ));
    assert_eq!(
        *up.asked.lock(),
        [
            "manifest cache/library/alpine:3.20",
            "blob cache/library/alpine Stream",
            "blob cache/library/alpine Stored",
            "blob cache/library/alpine Stream",
        ]
    );
}
