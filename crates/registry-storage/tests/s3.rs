//! The S3 backend against a real S3 implementation (`s3s-fs`: SigV4 checked, 5 MiB minimum
//! parts enforced).

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_core::{Algorithm, Digest};
use registry_storage::s3::MIN_PART;
use registry_storage::{
    BlobStore, ByteStream, MemoryUploadStateStore, S3BlobStore, S3Config, StorageError,
    UploadStateStore,
};
use test_support::s3::S3Server;

const MIB: usize = 1 << 20;

use test_support::noise as data;

/// A body delivered in pieces of `piece` bytes, as hyper would.
fn body(bytes: &[u8], piece: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(piece.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn config(s3: &S3Server) -> S3Config {
    let mut cfg = S3Config::new(s3.bucket());
    cfg.endpoint = Some(s3.endpoint());
    cfg.access_key = Some(s3.access_key().into());
    cfg.secret_key = Some(s3.secret_key().into());
    cfg.path_style = true;
    cfg.allow_http = true;
    cfg.part_size = MIN_PART; // parts as small as S3 allows, so tests cross many boundaries
    cfg
}

fn store(s3: &S3Server, states: &Arc<MemoryUploadStateStore>) -> S3BlobStore {
    S3BlobStore::new(config(s3), states.clone() as Arc<dyn UploadStateStore>).unwrap()
}

async fn read_all(store: &S3BlobStore, digest: &Digest, offset: u64, len: u64) -> Vec<u8> {
    let mut s = store.read(digest, offset, len).await.unwrap();
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.unwrap());
    }
    out
}

/// Nothing of a session is left: no state, no objects under `uploads/`, no multipart upload,
/// and every data object is one a link points to.
fn assert_clean(s3: &S3Server, states: &MemoryUploadStateStore) {
    assert!(states.is_empty(), "session state left behind");
    assert_eq!(s3.objects("uploads"), Vec::<String>::new());
    assert_eq!(s3.pending_multipart_files(), Vec::<String>::new());
    assert_eq!(
        s3.objects("data").len(),
        s3.links("").len(),
        "data objects {:?} vs links {:?}",
        s3.objects("data"),
        s3.links("")
    );
}

#[tokio::test]
async fn monolithic_upload_commits_and_reads_ranges() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    let blob = data(12 * MIB + 123, 1);
    let digest = Digest::sha256_of(&blob);
    store.create_upload("mono").await.unwrap();
    let size = store
        .append_upload("mono", None, body(&blob, 64 * 1024))
        .await
        .unwrap();
    assert_eq!(size, blob.len() as u64);
    assert_eq!(
        store.commit_upload("mono", &digest).await.unwrap(),
        blob.len() as u64
    );
    assert_eq!(store.stat(&digest).await.unwrap(), Some(blob.len() as u64));
    assert_eq!(
        s3.objects("blobs"),
        vec![format!(
            "blobs/sha256/{}/{}",
            &digest.hex()[..2],
            digest.hex()
        )]
    );
    assert_clean(&s3, &states);

    // Ranged reads: across the first part boundary, the very end, one byte, empty.
    let start = MIN_PART - 10;
    assert_eq!(
        read_all(&store, &digest, start, 20).await,
        &blob[start as usize..start as usize + 20]
    );
    let last = blob.len() as u64 - 7;
    assert_eq!(
        read_all(&store, &digest, last, 7).await,
        &blob[last as usize..]
    );
    assert_eq!(read_all(&store, &digest, 0, 1).await, &blob[..1]);
    assert!(read_all(&store, &digest, 5, 0).await.is_empty());
    assert_eq!(
        Digest::sha256_of(&read_all(&store, &digest, 0, blob.len() as u64).await),
        digest
    );

    // Small content, delete, unknown blobs.
    let manifest = Bytes::from_static(b"{\"schemaVersion\":2}");
    let md = Digest::sha256_of(&manifest);
    store.put_bytes(&md, manifest.clone()).await.unwrap();
    assert_eq!(store.get_bytes(&md).await.unwrap(), manifest);
    store.delete(&md).await.unwrap();
    assert!(matches!(
        store.get_bytes(&md).await,
        Err(StorageError::BlobUnknown(_))
    ));
    assert!(matches!(
        store.delete(&md).await,
        Err(StorageError::BlobUnknown(_))
    ));
    assert_eq!(store.stat(&md).await.unwrap(), None);
    assert!(matches!(
        store.read(&md, 0, 10).await,
        Err(StorageError::BlobUnknown(_))
    ));
}

#[tokio::test]
async fn chunked_upload_crosses_part_boundaries() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    // Chunks shorter than a part (kept as tails between requests), one of exactly 5 MiB
    // landing on a part boundary, a tiny one, then a large one.
    let sizes = [
        3 * MIB,
        3 * MIB,
        MIB + 7,
        5 * MIB,
        2 * MIB - 7,
        5 * MIB,
        10,
        11 * MIB,
        1,
    ];
    let total: usize = sizes.iter().sum();
    let blob = data(total, 2);
    let digest = Digest::sha256_of(&blob);
    store.create_upload("chunked").await.unwrap();
    let mut offset = 0usize;
    for (i, len) in sizes.iter().enumerate() {
        let at = (i % 2 == 0).then_some(offset as u64);
        let size = store
            .append_upload("chunked", at, body(&blob[offset..offset + len], 100_000))
            .await
            .unwrap();
        offset += len;
        assert_eq!(size, offset as u64);
        assert_eq!(
            store.upload_size("chunked").await.unwrap(),
            Some(offset as u64)
        );
    }
    // A chunk that does not start at the end is refused and changes nothing.
    assert!(matches!(
        store.append_upload("chunked", Some(3), body(b"x", 1)).await,
        Err(StorageError::OutOfOrder { got: 3, .. })
    ));
    assert_eq!(
        store.commit_upload("chunked", &digest).await.unwrap(),
        total as u64
    );
    assert_eq!(
        Digest::sha256_of(&read_all(&store, &digest, 0, total as u64).await),
        digest
    );
    assert_clean(&s3, &states);
}

#[tokio::test]
async fn small_and_empty_blobs_skip_multipart() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    for (id, blob) in [("small", b"hello world".to_vec()), ("empty", Vec::new())] {
        let digest = Digest::sha256_of(&blob);
        store.create_upload(id).await.unwrap();
        store.append_upload(id, None, body(&blob, 3)).await.unwrap();
        assert_eq!(
            store.commit_upload(id, &digest).await.unwrap(),
            blob.len() as u64
        );
        assert_eq!(store.get_bytes(&digest).await.unwrap(), blob);
        assert_clean(&s3, &states);
    }
    // sha512 is verified too (from the stored bytes: the running hash is sha256).
    let blob = data(6 * MIB, 9);
    let digest = Digest::of(Algorithm::Sha512, &blob);
    store.create_upload("sha512").await.unwrap();
    store
        .append_upload("sha512", None, body(&blob, MIB))
        .await
        .unwrap();
    store.commit_upload("sha512", &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(blob.len() as u64));
    assert_clean(&s3, &states);
}

#[tokio::test]
async fn another_replica_continues_and_commits() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let a = store(&s3, &states);
    let b = store(&s3, &states);
    let blob = data(6 * MIB + 3 * MIB + 2 * MIB + 5, 3);
    let digest = Digest::sha256_of(&blob);
    let (p1, p2) = (6 * MIB, 9 * MIB);

    a.create_upload("shared").await.unwrap();
    a.append_upload("shared", Some(0), body(&blob[..p1], 65536))
        .await
        .unwrap();
    // B sees A's progress from the shared state only, and appends.
    assert_eq!(b.upload_size("shared").await.unwrap(), Some(p1 as u64));
    b.append_upload("shared", Some(p1 as u64), body(&blob[p1..p2], 65536))
        .await
        .unwrap();
    // A continues after B: its running hash no longer covers the session.
    a.append_upload("shared", Some(p2 as u64), body(&blob[p2..], 65536))
        .await
        .unwrap();
    // B finishes: it never saw the first bytes, so it hashes the stored bytes.
    assert_eq!(
        b.commit_upload("shared", &digest).await.unwrap(),
        blob.len() as u64
    );
    assert_eq!(
        Digest::sha256_of(&read_all(&a, &digest, 0, blob.len() as u64).await),
        digest
    );
    assert_eq!(a.upload_size("shared").await.unwrap(), None);
    assert_clean(&s3, &states);
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let a = store(&s3, &states);
    let b = store(&s3, &states);
    let blob = data(7 * MIB, 4);
    let wrong = Digest::sha256_of(b"something else");

    // Known from the running hash: aborted before anything is assembled.
    a.create_upload("bad1").await.unwrap();
    a.append_upload("bad1", None, body(&blob, MIB))
        .await
        .unwrap();
    assert!(matches!(
        a.commit_upload("bad1", &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(a.stat(&wrong).await.unwrap(), None);
    assert_eq!(a.upload_size("bad1").await.unwrap(), None);
    assert_clean(&s3, &states);

    // Found by hashing the stored bytes on another replica.
    a.create_upload("bad2").await.unwrap();
    a.append_upload("bad2", None, body(&blob, MIB))
        .await
        .unwrap();
    assert!(matches!(
        b.commit_upload("bad2", &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(b.stat(&wrong).await.unwrap(), None);
    assert_eq!(s3.objects("blobs"), Vec::<String>::new());
    assert_clean(&s3, &states);
}

#[tokio::test]
async fn cancel_aborts_multipart_and_removes_tails() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    let blob = data(7 * MIB, 5);
    store.create_upload("gone").await.unwrap();
    store
        .append_upload("gone", None, body(&blob, MIB))
        .await
        .unwrap();
    // One part in a multipart upload, and a 2 MiB tail object.
    assert!(!s3.pending_multipart_files().is_empty());
    assert_eq!(s3.objects("uploads").len(), 1);
    assert_eq!(s3.objects("data"), Vec::<String>::new());
    store.cancel_upload("gone").await.unwrap();
    assert_clean(&s3, &states);
    assert!(matches!(
        store.cancel_upload("gone").await,
        Err(StorageError::UploadUnknown(_))
    ));
    assert!(matches!(
        store.append_upload("gone", None, body(b"x", 1)).await,
        Err(StorageError::UploadUnknown(_))
    ));
}

#[tokio::test]
async fn body_cut_short_keeps_the_prefix() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    let blob = data(8 * MIB, 6);
    let cut = 6 * MIB + 17;
    store.create_upload("cut").await.unwrap();
    let mut items: Vec<std::io::Result<Bytes>> = blob[..cut]
        .chunks(MIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    items.push(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    let cut_body: ByteStream = Box::pin(futures::stream::iter(items));
    assert!(matches!(
        store.append_upload("cut", None, cut_body).await,
        Err(StorageError::Body(_))
    ));
    assert_eq!(store.upload_size("cut").await.unwrap(), Some(cut as u64));
    store
        .append_upload("cut", Some(cut as u64), body(&blob[cut..], MIB))
        .await
        .unwrap();
    let digest = Digest::sha256_of(&blob);
    store.commit_upload("cut", &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(blob.len() as u64));
    assert_clean(&s3, &states);
}

#[tokio::test]
async fn commits_link_the_data_object_under_a_prefix() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let mut cfg = config(&s3);
    cfg.prefix = "team/registry".into();
    cfg.redirect = true;
    let store = S3BlobStore::new(cfg, states.clone() as Arc<dyn UploadStateStore>).unwrap();
    let blob = data(13 * MIB + 1, 7);
    let digest = Digest::sha256_of(&blob);
    store.create_upload("big").await.unwrap();
    store
        .append_upload("big", None, body(&blob, MIB))
        .await
        .unwrap();
    store.commit_upload("big", &digest).await.unwrap();
    let key = format!(
        "team/registry/blobs/sha256/{}/{}",
        &digest.hex()[..2],
        digest.hex()
    );
    assert_eq!(s3.objects("team/registry/blobs"), vec![key.clone()]);
    assert_eq!(s3.links("team/registry/"), vec![key]);
    assert_eq!(
        s3.objects("team/registry/data"),
        vec!["team/registry/data/big".to_string()]
    );
    assert_eq!(store.stat(&digest).await.unwrap(), Some(blob.len() as u64));
    assert_eq!(
        Digest::sha256_of(&read_all(&store, &digest, 0, blob.len() as u64).await),
        digest
    );
    assert_eq!(read_all(&store, &digest, 5, 3).await, &blob[5..8]);
    assert_eq!(s3.objects("team/registry/uploads"), Vec::<String>::new());
    assert_eq!(s3.pending_multipart_files(), Vec::<String>::new());

    // Presigned URLs name the data object.
    let http = reqwest::Client::new();
    let url = store.presigned_url(&digest, false).await.unwrap().unwrap();
    assert!(url.contains("/team/registry/data/big?"), "{url}");
    let resp = http
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), &blob[100..200]);
    let url = store.presigned_url(&digest, true).await.unwrap().unwrap();
    let resp = http.head(&url).send().await.unwrap();
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        blob.len().to_string()
    );

    // Listing reports the blob's size, not the link's.
    let listed: Vec<_> = store.list_blobs().try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, digest);
    assert_eq!(listed[0].size, blob.len() as u64);

    // Deleting removes the link and the data.
    store.delete(&digest).await.unwrap();
    assert_eq!(s3.objects("team/registry/blobs"), Vec::<String>::new());
    assert_eq!(s3.objects("team/registry/data"), Vec::<String>::new());
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert!(matches!(
        store.read(&digest, 0, 1).await,
        Err(StorageError::BlobUnknown(_))
    ));
}

#[tokio::test]
async fn the_same_blob_committed_twice_keeps_one_data_object() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let a = store(&s3, &states);
    let b = store(&s3, &states);
    let blob = data(6 * MIB, 12);
    let digest = Digest::sha256_of(&blob);
    let len = Some(blob.len() as u64);
    for (store, id) in [(&a, "first"), (&b, "second")] {
        store.create_upload(id).await.unwrap();
        store
            .append_upload_sized(id, Some(0), len, body(&blob, MIB))
            .await
            .unwrap();
    }
    // One after the other: the second finds the blob stored and drops its own data.
    a.commit_upload("first", &digest).await.unwrap();
    assert_eq!(b.commit_upload("second", &digest).await.unwrap(), 6 << 20);
    assert_eq!(s3.objects("data"), vec!["data/first".to_string()]);
    assert_clean(&s3, &states);

    // At the same time, several rounds: whichever link wins points to data that is kept,
    // and both replicas read the blob. (s3s-fs checks If-None-Match apart from the write,
    // so a loser may keep unreferenced data there; never the other way round.)
    for round in 0..5u64 {
        let blob = data(5 * MIB + 1, 100 + round);
        let digest = Digest::sha256_of(&blob);
        let ids = [format!("a{round}"), format!("b{round}")];
        for (store, id) in [(&a, &ids[0]), (&b, &ids[1])] {
            store.create_upload(id).await.unwrap();
            store
                .append_upload_sized(id, Some(0), Some(blob.len() as u64), body(&blob, MIB))
                .await
                .unwrap();
        }
        let (x, y) = tokio::join!(
            a.commit_upload(&ids[0], &digest),
            b.commit_upload(&ids[1], &digest)
        );
        assert_eq!(x.unwrap(), blob.len() as u64);
        assert_eq!(y.unwrap(), blob.len() as u64);
        for store in [&a, &b] {
            assert_eq!(
                Digest::sha256_of(&read_all(store, &digest, 0, blob.len() as u64).await),
                digest
            );
        }
    }
    assert!(states.is_empty());
    assert!(s3.objects("data").len() >= s3.links("").len());
}

#[tokio::test]
async fn a_remembered_location_that_is_gone_is_resolved_again() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let reader = store(&s3, &states);
    let writer = store(&s3, &states);
    let blob = data(5 * MIB + 7, 13);
    let digest = Digest::sha256_of(&blob);
    let push = |id: &'static str| {
        let (writer, blob, digest) = (&writer, &blob, &digest);
        async move {
            writer.create_upload(id).await.unwrap();
            writer
                .append_upload(id, None, body(blob, MIB))
                .await
                .unwrap();
            writer.commit_upload(id, digest).await.unwrap();
        }
    };
    push("one").await;
    assert_eq!(read_all(&reader, &digest, 0, 4).await, &blob[..4]);
    // Another replica deletes the blob and it is pushed again (into another data object):
    // the reader's remembered location is stale.
    writer.delete(&digest).await.unwrap();
    push("two").await;
    assert_eq!(s3.objects("data"), vec!["data/two".to_string()]);
    assert_eq!(read_all(&reader, &digest, 1, 4).await, &blob[1..5]);
    assert_eq!(
        reader.get_bytes(&digest).await.unwrap().len(),
        blob.len(),
        "whole reads resolve again too"
    );
}

#[tokio::test]
async fn links_to_keys_this_store_does_not_write_are_refused() {
    use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    let secret = Bytes::from(data(1000, 14));
    let sd = Digest::sha256_of(&secret);
    store.put_bytes(&sd, secret.clone()).await.unwrap();
    let raw = raw_client(&s3);
    let blob_key = |d: &Digest| {
        object_store::path::Path::from(format!("blobs/sha256/{}/{}", &d.hex()[..2], d.hex()))
    };
    for (n, location) in [
        format!("blobs/sha256/{}/{}", &sd.hex()[..2], sd.hex()),
        "data/../blobs/x".to_string(),
        "data/".to_string(),
        "uploads/x/tail-0".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let fake = Digest::sha256_of(format!("fake {n}").as_bytes());
        let options = PutOptions {
            attributes: Attributes::from_iter([
                (
                    Attribute::Metadata("hyper-location".into()),
                    location.clone(),
                ),
                (Attribute::Metadata("hyper-size".into()), "1000".to_string()),
            ]),
            ..Default::default()
        };
        raw.put_opts(&blob_key(&fake), PutPayload::default(), options)
            .await
            .unwrap();
        assert!(
            store.read(&fake, 0, 10).await.is_err(),
            "a link to {location:?} was followed"
        );
    }
}

#[tokio::test]
async fn presigned_urls_serve_get_and_head() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let plain = store(&s3, &states);
    let blob = Bytes::from(data(300_000, 8));
    let digest = Digest::sha256_of(&blob);
    plain.put_bytes(&digest, blob.clone()).await.unwrap();
    assert_eq!(plain.presigned_url(&digest, false).await.unwrap(), None);

    let mut cfg = config(&s3);
    cfg.redirect = true;
    let redirecting = S3BlobStore::new(cfg, states.clone() as Arc<dyn UploadStateStore>).unwrap();
    let http = reqwest::Client::new();
    let get = redirecting
        .presigned_url(&digest, false)
        .await
        .unwrap()
        .unwrap();
    assert!(get.contains("X-Amz-Signature="), "{get}");
    let resp = http.get(&get).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), blob);
    let resp = http
        .get(&get)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), blob.slice(10..20));
    let head = redirecting
        .presigned_url(&digest, true)
        .await
        .unwrap()
        .unwrap();
    let resp = http.head(&head).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        blob.len().to_string()
    );
    // The signature covers the method and the key.
    assert_eq!(http.head(&get).send().await.unwrap().status(), 403);
    let tampered = get.replace(digest.hex(), Digest::sha256_of(b"x").hex());
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn first_body_of_known_length_is_one_object() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    let blob = data(7 * MIB, 10);
    let digest = Digest::sha256_of(&blob);
    store.create_upload("one").await.unwrap();
    let len = Some(blob.len() as u64);
    assert_eq!(
        store
            .append_upload_sized("one", Some(0), len, body(&blob, 100_000))
            .await
            .unwrap(),
        blob.len() as u64
    );
    // One plain staging object, no multipart upload.
    assert_eq!(s3.objects("data"), vec!["data/one".to_string()]);
    assert_eq!(s3.objects("uploads"), Vec::<String>::new());
    assert_eq!(s3.pending_multipart_files(), Vec::<String>::new());
    assert_eq!(store.commit_upload("one", &digest).await.unwrap(), 7 << 20);
    // Committing wrote a link to it: nothing was copied.
    assert_eq!(s3.objects("data"), vec!["data/one".to_string()]);
    assert_eq!(s3.links(""), s3.objects("blobs"));
    assert_eq!(
        Digest::sha256_of(&read_all(&store, &digest, 0, blob.len() as u64).await),
        digest
    );
    assert_clean(&s3, &states);

    // A wrong digest keeps nothing.
    store.create_upload("bad").await.unwrap();
    store
        .append_upload_sized("bad", None, len, body(&blob, MIB))
        .await
        .unwrap();
    let wrong = Digest::sha256_of(b"other");
    assert!(matches!(
        store.commit_upload("bad", &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(store.stat(&wrong).await.unwrap(), None);
    assert_clean(&s3, &states);
}

#[tokio::test]
async fn staged_object_becomes_parts_when_more_follows() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let mut cfg = config(&s3);
    cfg.copy_part_size = MIN_PART; // the staged 12 MiB become parts of 5 and 7 MiB
    let a = S3BlobStore::new(cfg.clone(), states.clone() as Arc<dyn UploadStateStore>).unwrap();
    let b = S3BlobStore::new(cfg, states.clone() as Arc<dyn UploadStateStore>).unwrap();
    let blob = data(12 * MIB + 3 * MIB + 100, 11);
    let digest = Digest::sha256_of(&blob);
    let first = 12 * MIB;
    a.create_upload("grow").await.unwrap();
    a.append_upload_sized(
        "grow",
        Some(0),
        Some(first as u64),
        body(&blob[..first], MIB),
    )
    .await
    .unwrap();
    // The other replica appends: the staged object is copied into parts server-side.
    b.append_upload("grow", Some(first as u64), body(&blob[first..], 65536))
        .await
        .unwrap();
    assert_eq!(
        a.upload_size("grow").await.unwrap(),
        Some(blob.len() as u64)
    );
    a.commit_upload("grow", &digest).await.unwrap();
    assert_eq!(
        Digest::sha256_of(&read_all(&b, &digest, 0, blob.len() as u64).await),
        digest
    );
    assert_clean(&s3, &states);
}

/// A plain S3 client on the test bucket, to do what the store never does.
fn raw_client(s3: &S3Server) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(s3.bucket())
        .with_endpoint(s3.endpoint())
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .with_region("us-east-1")
        .with_allow_http(true)
        .build()
        .unwrap()
}

async fn assert_readable(store: &S3BlobStore, blob: &[u8]) {
    let digest = Digest::sha256_of(blob);
    assert_eq!(
        Digest::sha256_of(&read_all(store, &digest, 0, blob.len() as u64).await),
        digest
    );
}

/// A commit cut short after writing its link (the session state is still there): ending
/// the session afterwards, however it ends, never deletes the data the link points to.
#[tokio::test]
async fn a_session_cut_short_after_linking_keeps_the_linked_data() {
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    let blob = data(6 * MIB, 15);
    let digest = Digest::sha256_of(&blob);
    store.create_upload("cut").await.unwrap();
    store
        .append_upload_sized("cut", Some(0), Some(blob.len() as u64), body(&blob, MIB))
        .await
        .unwrap();
    let before: serde_json::Value =
        serde_json::from_slice(&states.load("cut").await.unwrap().unwrap()).unwrap();
    store.commit_upload("cut", &digest).await.unwrap();
    // What a crash between writing the link and removing the state leaves.
    let mut cut = before.clone();
    cut["linking"] = digest.to_string().into();
    let cut = serde_json::to_vec(&cut).unwrap();
    // Cancelled (or purged as abandoned).
    states.save("cut", &cut).await.unwrap();
    store.cancel_upload("cut").await.unwrap();
    assert_readable(&store, &blob).await;
    // Committed again, by another replica (no running hash: the data is re-read).
    let other = self::store(&s3, &states);
    states.save("cut", &cut).await.unwrap();
    assert_eq!(
        other.commit_upload("cut", &digest).await.unwrap(),
        blob.len() as u64
    );
    assert_readable(&store, &blob).await;
    // Committed again with a wrong digest.
    states.save("cut", &cut).await.unwrap();
    assert!(matches!(
        other.commit_upload("cut", &Digest::sha256_of(b"x")).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_readable(&other, &blob).await;
    assert_eq!(s3.objects("data"), vec!["data/cut".to_string()]);
    assert_clean(&s3, &states);
}

/// Data objects no link points to and no session owns (a crash between deleting a link and
/// its data leaves one) are swept when old enough; linked data and live sessions stay.
#[tokio::test]
async fn unreferenced_data_objects_are_swept() {
    use object_store::ObjectStoreExt;
    let Some(s3) = S3Server::start() else { return };
    let states = Arc::new(MemoryUploadStateStore::new());
    let store = store(&s3, &states);
    let upload = |id: &'static str, blob: Vec<u8>| {
        let store = &store;
        async move {
            store.create_upload(id).await.unwrap();
            store
                .append_upload_sized(id, Some(0), Some(blob.len() as u64), body(&blob, MIB))
                .await
                .unwrap();
        }
    };
    let (a, b, c) = (data(5 * MIB, 21), data(6 * MIB, 22), data(5 * MIB + 1, 23));
    upload("a", a.clone()).await;
    store
        .commit_upload("a", &Digest::sha256_of(&a))
        .await
        .unwrap();
    upload("b", b.clone()).await;
    let bd = Digest::sha256_of(&b);
    store.commit_upload("b", &bd).await.unwrap();
    // The link of b goes, its data stays: what a crash inside a delete leaves.
    let link = format!("blobs/sha256/{}/{}", &bd.hex()[..2], bd.hex());
    raw_client(&s3)
        .delete(&object_store::path::Path::from(link))
        .await
        .unwrap();
    // c is a session in progress.
    upload("c", c.clone()).await;
    assert_eq!(s3.objects("data").len(), 3);

    let recent = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    assert_eq!(
        store.sweep_unreferenced(recent, false).await.unwrap(),
        (0, 0)
    );
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    let orphan = (1, b.len() as u64);
    assert_eq!(store.sweep_unreferenced(later, true).await.unwrap(), orphan);
    assert_eq!(s3.objects("data").len(), 3, "a dry run deletes nothing");
    assert_eq!(
        store.sweep_unreferenced(later, false).await.unwrap(),
        orphan
    );
    assert_eq!(
        s3.objects("data"),
        vec!["data/a".to_string(), "data/c".to_string()]
    );
    assert_readable(&store, &a).await;
    store
        .commit_upload("c", &Digest::sha256_of(&c))
        .await
        .unwrap();
    assert_readable(&store, &c).await;
    assert_eq!(
        store.sweep_unreferenced(later, false).await.unwrap(),
        (0, 0)
    );
    assert_clean(&s3, &states);
}
