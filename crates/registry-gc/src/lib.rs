//! Garbage collection for hyperregistry.
//!
//! [`run`] works in three steps:
//! 1. **Snapshot**: every manifest (with its tags, subject, children and blobs), every blob
//!    row with its repository links, every piece of stored content.
//! 2. **Mark** ([`plan`]): tagged manifests are live (with `delete_untagged`; otherwise every
//!    manifest is), and so are manifests younger than the grace period; children of a live
//!    index are live; a manifest whose `subject` is live is live (referrers, transitively).
//!    What is not live is swept; links that no remaining manifest of their repository
//!    references and that are older than the grace go; blob rows that no repository links
//!    any more go; content that is neither a remaining blob nor a remaining manifest in any
//!    repository goes when it is older than the grace (this includes orphans: content a
//!    crash left without metadata).
//! 3. **Sweep**: every deletion re-checks its condition where it happens (one conditional
//!    SQL statement each), so pushes running meanwhile are safe: the registry checks a
//!    manifest's references inside its own transaction, and content is deleted only under
//!    the coordinator lock `keys::blob(digest)` that the registry holds while it commits a
//!    blob or stores a manifest, after checking again that nothing uses the digest.
//!
//! Before all that, upload sessions started longer ago than [`GcOptions::upload_age`] and
//! idle (no request holds their lock) are purged: their stored bytes (a session file, or S3
//! multipart upload, tails and data object) and their row, as Distribution's upload purging
//! does. A client that comes back to one gets `BLOB_UPLOAD_UNKNOWN` and starts again.
//!
//! After the sweep, objects only the blob store can tell are unused (S3 data objects whose
//! link is gone) are deleted when older than the grace period, and never younger than
//! [`UNREFERENCED_MIN_AGE`]; they count as deleted blobs in the report.
//!
//! The whole run holds `keys::GC`, so one replica at a time collects.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use futures::TryStreamExt;
use oci_core::Digest;
use registry_core::{CoreError, Registry};
use registry_meta::{GcBlob, GcManifest, MetaError, MetaStore};
use registry_storage::{BlobInfo, BlobStore, StorageError};
use serde::Serialize;

/// Rows fetched per metadata page.
const PAGE: usize = 1000;
/// Stored objects only the blob store knows (S3 data objects whose link is gone) are swept
/// when older than this, or the grace period if longer: far beyond any commit's wait
/// between storing an upload's bytes and linking them (which may wait on GC's own locks).
pub const UNREFERENCED_MIN_AGE: Duration = Duration::from_secs(3600);
/// Most upload sessions purged by one run (the oldest; the rest go in later runs).
pub const MAX_UPLOADS_PURGED: usize = 10_000;

/// Errors from a garbage collection run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Another garbage collection holds the GC lock.
    #[error("another garbage collection is running")]
    Busy,
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The blob store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A deletion failed (a lock could not be taken, a store failed).
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Result alias for garbage collection.
pub type Result<T> = std::result::Result<T, GcError>;

/// What a run may do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Compute and report, delete nothing.
    pub dry_run: bool,
    /// Also sweep manifests that no tag reaches (otherwise every manifest is kept).
    pub delete_untagged: bool,
    /// Nothing written or asserted more recently than this is deleted.
    pub grace: Duration,
    /// Purge upload sessions started longer ago than this (`None`: keep every session).
    pub upload_age: Option<Duration>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            delete_untagged: false,
            grace: Duration::from_secs(3600),
            upload_age: None,
        }
    }
}

/// What a run freed (or, in a dry run, would free).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GcReport {
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// Manifests deleted.
    pub manifests_deleted: u64,
    /// Repository blob links removed.
    pub links_removed: u64,
    /// Stored content objects deleted (blobs, manifests' bytes, orphans).
    pub blobs_deleted: u64,
    /// Bytes of the content deleted.
    pub bytes_freed: u64,
    /// Abandoned upload sessions purged (their bytes are not in `bytes_freed`).
    pub uploads_purged: u64,
    /// Wall-clock time of the run.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// The (repository, digest) of every deleted manifest (for cache invalidation).
    #[serde(skip)]
    pub swept_manifests: Vec<(String, Digest)>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Everything GC looked at.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every manifest.
    pub manifests: Vec<GcManifest>,
    /// Every blob row with its links.
    pub blobs: Vec<GcBlob>,
    /// Every piece of stored content.
    pub content: Vec<BlobInfo>,
}

/// What a run is to delete, before the per-item re-checks.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Manifests to sweep, as (repository, digest).
    pub manifests: Vec<(String, Digest)>,
    /// Links to remove, as (repository, digest).
    pub links: Vec<(String, Digest)>,
    /// Blob rows to delete.
    pub blob_rows: Vec<Digest>,
    /// Content to delete, with its size.
    pub content: Vec<(Digest, u64)>,
}

/// Mark and plan the sweep: pure, from a snapshot and the cutoff (now minus the grace).
pub fn plan(snap: &Snapshot, delete_untagged: bool, cutoff: SystemTime) -> Plan {
    let ms = &snap.manifests;
    let index: HashMap<(&str, &Digest), usize> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.repo.as_str(), &m.digest), i))
        .collect();
    let mut referrers: HashMap<(&str, &Digest), Vec<usize>> = HashMap::new();
    for (i, m) in ms.iter().enumerate() {
        if let Some(s) = &m.subject {
            referrers.entry((m.repo.as_str(), s)).or_default().push(i);
        }
    }
    let mut live = vec![false; ms.len()];
    let mut queue: Vec<usize> = ms
        .iter()
        .enumerate()
        .filter(|(_, m)| !delete_untagged || m.tagged || m.created_at >= cutoff)
        .map(|(i, _)| i)
        .collect();
    for &i in &queue {
        live[i] = true;
    }
    while let Some(i) = queue.pop() {
        let m = &ms[i];
        let children = m
            .children
            .iter()
            .filter_map(|c| index.get(&(m.repo.as_str(), c)).copied());
        let refs = referrers
            .get(&(m.repo.as_str(), &m.digest))
            .into_iter()
            .flatten()
            .copied();
        for j in children.chain(refs) {
            if !live[j] {
                live[j] = true;
                queue.push(j);
            }
        }
    }

    let mut plan = Plan::default();
    // Blobs referenced per repository, and content still needed anywhere.
    let mut referenced: HashSet<(&str, &Digest)> = HashSet::new();
    let mut needed: HashSet<&Digest> = HashSet::new();
    for (i, m) in ms.iter().enumerate() {
        if live[i] {
            needed.insert(&m.digest);
            for b in &m.blobs {
                referenced.insert((m.repo.as_str(), b));
            }
        } else {
            plan.manifests.push((m.repo.clone(), m.digest.clone()));
        }
    }
    for b in &snap.blobs {
        let mut links_left = 0;
        for (repo, linked_at) in &b.links {
            if *linked_at < cutoff && !referenced.contains(&(repo.as_str(), &b.digest)) {
                plan.links.push((repo.clone(), b.digest.clone()));
            } else {
                links_left += 1;
            }
        }
        if links_left == 0 && b.created_at < cutoff {
            plan.blob_rows.push(b.digest.clone());
        } else {
            needed.insert(&b.digest);
        }
    }
    for c in &snap.content {
        if c.modified < cutoff && !needed.contains(&c.digest) {
            plan.content.push((c.digest.clone(), c.size));
        }
    }
    plan
}

/// Read everything GC needs, page by page.
pub async fn snapshot(meta: &dyn MetaStore, blobs: &dyn BlobStore) -> Result<Snapshot> {
    let mut snap = Snapshot::default();
    loop {
        let after = snap.manifests.last().map(|m| (m.repo.as_str(), &m.digest));
        let page = meta.gc_manifests(after, PAGE).await?;
        let done = page.len() < PAGE;
        snap.manifests.extend(page);
        if done {
            break;
        }
    }
    loop {
        let after = snap.blobs.last().map(|b| &b.digest);
        let page = meta.gc_blobs(after, PAGE).await?;
        let done = page.len() < PAGE;
        snap.blobs.extend(page);
        if done {
            break;
        }
    }
    snap.content = blobs.list_blobs().try_collect().await?;
    Ok(snap)
}

/// Run one garbage collection on `reg`: snapshot, mark, sweep (unless `dry_run`), report.
pub async fn run(reg: &Registry, opts: GcOptions) -> Result<GcReport> {
    let started = Instant::now();
    let cutoff = ago(opts.grace);
    let Some(_gc) = reg.lock_gc().await? else {
        return Err(GcError::Busy);
    };
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    if let Some(age) = opts.upload_age {
        report.uploads_purged = purge_uploads(reg, age, opts.dry_run).await?;
    }
    let snap = snapshot(reg.meta().as_ref(), reg.blobs().as_ref()).await?;
    let plan = plan(&snap, opts.delete_untagged, cutoff);
    tracing::debug!(
        manifests = snap.manifests.len(),
        blobs = snap.blobs.len(),
        content = snap.content.len(),
        sweep_manifests = plan.manifests.len(),
        sweep_links = plan.links.len(),
        sweep_rows = plan.blob_rows.len(),
        sweep_content = plan.content.len(),
        "gc planned"
    );
    let unreferenced_before = ago(opts.grace.max(UNREFERENCED_MIN_AGE));
    if opts.dry_run {
        report.manifests_deleted = plan.manifests.len() as u64;
        report.links_removed = plan.links.len() as u64;
        report.blobs_deleted = plan.content.len() as u64;
        report.bytes_freed = plan.content.iter().map(|(_, s)| s).sum();
        let (n, bytes) = reg.sweep_unreferenced(unreferenced_before, true).await?;
        report.blobs_deleted += n;
        report.bytes_freed += bytes;
        report.duration = started.elapsed();
        return Ok(report);
    }
    sweep(reg, &plan, cutoff, &mut report).await?;
    let (n, bytes) = reg.sweep_unreferenced(unreferenced_before, false).await?;
    report.blobs_deleted += n;
    report.bytes_freed += bytes;
    report.duration = started.elapsed();
    Ok(report)
}

/// The time `d` ago (the epoch if that is earlier).
fn ago(d: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Purge (or, in a dry run, count) upload sessions started more than `age` ago that no
/// request is using; returns how many.
async fn purge_uploads(reg: &Registry, age: Duration, dry_run: bool) -> Result<u64> {
    let stale = reg
        .meta()
        .uploads_created_before(ago(age), MAX_UPLOADS_PURGED)
        .await?;
    if dry_run {
        return Ok(stale.len() as u64);
    }
    let mut purged = 0;
    for id in stale {
        if reg.purge_upload(&id).await? {
            purged += 1;
        }
    }
    Ok(purged)
}

async fn sweep(
    reg: &Registry,
    plan: &Plan,
    cutoff: SystemTime,
    report: &mut GcReport,
) -> Result<()> {
    // Manifests: a manifest is deleted only once no index lists it and its subject is gone,
    // so parents and subjects go first; passes repeat while they make progress.
    let mut pending: Vec<&(String, Digest)> = plan.manifests.iter().collect();
    loop {
        let before = pending.len();
        let mut kept = Vec::new();
        for item in pending {
            let (repo, digest) = item;
            if reg.sweep_manifest(repo, digest, cutoff).await? {
                report.swept_manifests.push((repo.clone(), digest.clone()));
            } else {
                kept.push(item);
            }
        }
        pending = kept;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    report.manifests_deleted = report.swept_manifests.len() as u64;
    let mut changed: HashSet<&str> = report
        .swept_manifests
        .iter()
        .map(|(r, _)| r.as_str())
        .collect();

    for (repo, digest) in &plan.links {
        if reg.sweep_link(repo, digest, cutoff).await? {
            report.links_removed += 1;
            changed.insert(repo.as_str());
        }
    }
    reg.swept(changed).await;

    // Blob rows and content, one digest at a time under its lock.
    let rows: HashSet<&Digest> = plan.blob_rows.iter().collect();
    let sizes: HashMap<&Digest, u64> = plan.content.iter().map(|(d, s)| (d, *s)).collect();
    let mut digests: Vec<&Digest> = rows.iter().copied().chain(sizes.keys().copied()).collect();
    digests.sort();
    digests.dedup();
    for digest in digests {
        let size = sizes.get(digest).copied();
        if reg
            .sweep_blob(digest, rows.contains(digest), size, cutoff)
            .await?
        {
            report.blobs_deleted += 1;
            report.bytes_freed += size.unwrap_or(0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use registry_coord::{Coordinator, keys};

    use super::*;

    fn d(n: u32) -> Digest {
        Digest::sha256_of(&n.to_le_bytes())
    }

    fn old() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1000)
    }

    fn cutoff() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(2000)
    }

    fn new() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(3000)
    }

    fn m(repo: &str, n: u32, tagged: bool, blobs: &[u32]) -> GcManifest {
        GcManifest {
            repo: repo.into(),
            digest: d(n),
            size: 100,
            tagged,
            subject: None,
            children: vec![],
            blobs: blobs.iter().map(|b| d(*b)).collect(),
            created_at: old(),
        }
    }

    fn blob(n: u32, links: &[&str]) -> GcBlob {
        GcBlob {
            digest: d(n),
            size: n as u64,
            created_at: old(),
            links: links.iter().map(|r| (r.to_string(), old())).collect(),
        }
    }

    fn content(ns: &[u32]) -> Vec<BlobInfo> {
        ns.iter()
            .map(|n| BlobInfo {
                digest: d(*n),
                size: *n as u64,
                modified: old(),
            })
            .collect()
    }

    fn names(v: &[(String, Digest)]) -> Vec<(String, Digest)> {
        let mut v = v.to_vec();
        v.sort();
        v
    }

    #[tokio::test]
    async fn run_against_real_stores_dry_run_busy_and_sweep() {
        use bytes::Bytes;
        use registry_meta::{ManifestRecord, NewManifest, SqliteMeta};
        use registry_storage::FsBlobStore;

        let dir = tempfile::tempdir().unwrap();
        let fs = FsBlobStore::open(dir.path()).unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.path().join("m.db")).await.unwrap());
        let coord: Arc<dyn Coordinator> = Arc::new(registry_coord::LocalCoordinator::new());
        let put = |data: &'static [u8]| {
            let d = Digest::sha256_of(data);
            let path = fs.blob_path(&d);
            (d, data, path)
        };
        let (layer, junk, orphan, manifest) = (
            put(b"layer"),
            put(b"junk blob"),
            put(b"orphan!"),
            put(b"manifest"),
        );
        let blobs: Arc<dyn BlobStore> = Arc::new(fs);
        for (d, data, _) in [&layer, &junk, &orphan, &manifest] {
            blobs.put_bytes(d, Bytes::from_static(data)).await.unwrap();
        }
        meta.link_blob("r", &layer.0, 5).await.unwrap();
        meta.link_blob("r", &junk.0, 9).await.unwrap();
        let m = NewManifest {
            record: ManifestRecord {
                digest: manifest.0.clone(),
                media_type: oci_core::manifest::OCI_MANIFEST.into(),
                size: 8,
                artifact_type: None,
                subject: None,
                annotations: None,
            },
            blobs: vec![layer.0.clone()],
            children: vec![],
        };
        meta.put_manifest("r", &m, &[]).await.unwrap();
        let opts = |dry_run, grace| GcOptions {
            dry_run,
            delete_untagged: false,
            grace,
            upload_age: None,
        };
        let reg = Registry::new(blobs.clone(), meta.clone()).with_coordinator(coord.clone());
        let go = |o: GcOptions| {
            let reg = reg.clone();
            async move { run(&reg, o).await }
        };

        let r = go(opts(false, Duration::from_secs(3600))).await.unwrap();
        assert_eq!((r.links_removed, r.blobs_deleted, r.bytes_freed), (0, 0, 0));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let grace = Duration::from_secs(1);
        {
            let _held = coord
                .lock(keys::GC, Duration::from_secs(60), Duration::ZERO)
                .await
                .unwrap();
            assert!(matches!(go(opts(false, grace)).await, Err(GcError::Busy)));
        }
        let dry = go(opts(true, grace)).await.unwrap();
        let json = serde_json::to_value(&dry).unwrap();
        assert_eq!(json["dry_run"], true);
        assert_eq!(json["bytes_freed"], 16);
        assert!(json["duration"].is_f64() && json.get("swept_manifests").is_none());
        assert!(junk.2.exists() && orphan.2.exists());
        let r = go(opts(false, grace)).await.unwrap();
        assert_eq!(
            (
                r.manifests_deleted,
                r.links_removed,
                r.blobs_deleted,
                r.bytes_freed
            ),
            (0, 1, 2, 16)
        );
        assert_eq!(
            (dry.manifests_deleted, dry.links_removed, dry.blobs_deleted),
            (0, 1, 2)
        );
        assert!(!junk.2.exists() && !orphan.2.exists());
        assert!(layer.2.exists() && manifest.2.exists());
        assert_eq!(meta.repo_blob("r", &junk.0).await.unwrap(), None);
        assert_eq!(meta.repo_blob("r", &layer.0).await.unwrap(), Some(5));
    }

    #[test]
    fn marks_index_children_and_referrers_transitively() {
        // a: tag -> index 1 -> manifest 2 (blob 10); 3 refers to 1; 4 refers to 3;
        // 5 untagged (blob 11); 6 refers to 5.
        let mut idx = m("a", 1, true, &[]);
        idx.children = vec![d(2)];
        let mut sig = m("a", 3, false, &[12]);
        sig.subject = Some(d(1));
        let mut sig2 = m("a", 4, false, &[]);
        sig2.subject = Some(d(3));
        let mut orphan_sig = m("a", 6, false, &[]);
        orphan_sig.subject = Some(d(5));
        let snap = Snapshot {
            manifests: vec![
                idx,
                m("a", 2, false, &[10]),
                sig,
                sig2,
                m("a", 5, false, &[11]),
                orphan_sig,
            ],
            blobs: vec![blob(10, &["a"]), blob(11, &["a"]), blob(12, &["a"])],
            content: content(&[1, 2, 3, 4, 5, 6, 10, 11, 12]),
        };
        let p = plan(&snap, true, cutoff());
        assert_eq!(
            names(&p.manifests),
            names(&[("a".into(), d(5)), ("a".into(), d(6))])
        );
        assert_eq!(p.links, vec![("a".to_string(), d(11))]);
        assert_eq!(p.blob_rows, vec![d(11)]);
        let mut gone: Vec<_> = p.content.iter().map(|(d, _)| d.clone()).collect();
        gone.sort();
        let mut want = vec![d(5), d(6), d(11)];
        want.sort();
        assert_eq!(gone, want);

        // Without delete_untagged every manifest is a root.
        let p = plan(&snap, false, cutoff());
        assert!(p.manifests.is_empty() && p.links.is_empty() && p.content.is_empty());
    }

    #[test]
    fn shared_layers_young_things_and_orphans() {
        let mut young = m("c", 7, false, &[21]);
        young.created_at = new();
        let mut fresh_link = blob(22, &["c"]);
        fresh_link.links[0].1 = new();
        let mut fresh_content = content(&[30, 31]);
        fresh_content[1].modified = new();
        let snap = Snapshot {
            // Layer 20 is linked in a and b, used only by b's image.
            manifests: vec![m("b", 2, true, &[20]), young],
            blobs: vec![blob(20, &["a", "b"]), blob(21, &["c"]), fresh_link],
            // 30 and 31 have no metadata at all; 31 is too young to go.
            content: [content(&[2, 7, 20, 21, 22]), fresh_content].concat(),
        };
        let p = plan(&snap, true, cutoff());
        assert!(p.manifests.is_empty(), "young untagged manifests stay");
        assert_eq!(p.links, vec![("a".to_string(), d(20))]);
        assert!(p.blob_rows.is_empty());
        assert_eq!(p.content, vec![(d(30), 30)]);
    }

    #[tokio::test]
    async fn abandoned_uploads_are_purged_unless_in_use() {
        use registry_meta::SqliteMeta;
        use registry_storage::FsBlobStore;

        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.path().join("m.db")).await.unwrap());
        let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let coord: Arc<dyn Coordinator> = Arc::new(registry_coord::LocalCoordinator::new());
        let start = |id: &'static str| {
            let (meta, blobs) = (meta.clone(), blobs.clone());
            async move {
                meta.create_upload(id, "r").await.unwrap();
                blobs.create_upload(id).await.unwrap();
                let body: registry_storage::ByteStream = Box::pin(futures::stream::once(async {
                    Ok(bytes::Bytes::from_static(b"some bytes"))
                }));
                blobs.append_upload(id, None, body).await.unwrap();
            }
        };
        start("old").await;
        start("busy").await;
        // A row whose bytes are already gone (a purge cut short) is purged too.
        meta.create_upload("rowonly", "r").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        start("fresh").await;
        let opts = |dry_run| GcOptions {
            dry_run,
            upload_age: Some(Duration::from_secs(1)),
            ..GcOptions::default()
        };
        let reg = Registry::new(blobs.clone(), meta.clone()).with_coordinator(coord.clone());
        let go = |o: GcOptions| {
            let reg = reg.clone();
            async move { run(&reg, o).await }
        };

        let dry = go(opts(true)).await.unwrap();
        assert_eq!(dry.uploads_purged, 3);
        assert_eq!(blobs.upload_size("old").await.unwrap(), Some(10));
        let held = coord
            .lock(
                &keys::upload("busy"),
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .await
            .unwrap();
        let r = go(opts(false)).await.unwrap();
        assert_eq!(r.uploads_purged, 2, "old and rowonly; busy is in use");
        assert_eq!(blobs.upload_size("old").await.unwrap(), None);
        assert_eq!(meta.upload_repo("old").await.unwrap(), None);
        assert_eq!(meta.upload_repo("rowonly").await.unwrap(), None);
        assert_eq!(blobs.upload_size("busy").await.unwrap(), Some(10));
        assert_eq!(blobs.upload_size("fresh").await.unwrap(), Some(10));
        assert_eq!(
            meta.upload_repo("fresh").await.unwrap().as_deref(),
            Some("r")
        );
        drop(held);
        let r = go(opts(false)).await.unwrap();
        assert_eq!(r.uploads_purged, 1);
        assert_eq!(blobs.upload_size("busy").await.unwrap(), None);
        // Off: nothing is purged, however old.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = go(GcOptions::default()).await.unwrap();
        assert_eq!(r.uploads_purged, 0);
        assert_eq!(blobs.upload_size("fresh").await.unwrap(), Some(10));
    }
}
