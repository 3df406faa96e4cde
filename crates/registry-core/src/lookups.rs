//! What replicas share through the coordinator: locks around writes, invalidation after
//! them, and a lookup cache in front of the metadata database.
//!
//! **The lookup cache** (only with a shared coordinator, see
//! [`Registry::with_coordinator`]) holds blob sizes by repository + digest and tag →
//! manifest resolutions, for [`ENTRY_TTL`]. Each repository has a *generation*, a random
//! token under `gen:<repo>`; every entry is stored with the generation that was current
//! *before* its database read, and is served only while that generation is still current.
//! A write, after its database commit, sets a new generation (then publishes the
//! invalidation), so a stale entry (even one written after the commit by a reader that read
//! the database before it) is never served again by any replica, with no delivery window.
//! Entry and generation are read in one round trip (`MGET`).
//!
//! **The per-process manifest cache** is invalidated by the published message; between the
//! writer's `201`/`202` and the message's delivery to another replica (pub/sub latency:
//! sub-millisecond on one host, a network round trip between hosts) that replica may still
//! serve the old manifest from memory. If the subscription drops, the coordinator says
//! "drop everything" (`"*"`) on every reconnect attempt, so the window stays bounded by
//! about a second even then.
//!
//! **Failures.** A cache failure never fails a read: the database answers. A lock that
//! cannot be taken fails the write with [`CoreError::Unavailable`](crate::CoreError) (or,
//! for an upload session busy with another request, `UploadBusy`).

use std::time::Duration;

use oci_core::Digest;
use registry_coord::lookups::{self, GENERATION_TTL, generation_key, new_generation};

use crate::Registry;
use crate::error::Result;

/// How long a shared lookup stays cached (when no write invalidates it first).
pub const ENTRY_TTL: Duration = Duration::from_secs(30);

// Repository names and tags cannot contain `:` or `@`, so these keys never collide.
fn tag_key(repo: &str, tag: &str) -> String {
    format!("tag:{repo}:{tag}")
}

fn blob_key(repo: &str, digest: &Digest) -> String {
    format!("blob:{repo}@{digest}")
}

/// A shared lookup: the cached value if its generation is current, else the generation to
/// store a fresh value under (`None`: do not store, the cache is off or failing).
enum Lookup {
    Hit(String),
    Miss(Option<String>),
}

async fn lookup(st: &Registry, repo: &str, key: String) -> Lookup {
    if !st.inner.shared_cache {
        return Lookup::Miss(None);
    }
    let gen_key = generation_key(repo);
    let got = match st.inner.coord.cache_get_many(&[gen_key.clone(), key]).await {
        Ok(got) => got,
        Err(e) => {
            tracing::debug!(error = %e, "shared cache lookup failed; asking the database");
            return Lookup::Miss(None);
        }
    };
    let mut got = got.into_iter();
    let (generation, entry) = (got.next().flatten(), got.next().flatten());
    let Some(generation) = generation.and_then(|g| String::from_utf8(g).ok()) else {
        // No generation yet: start one before reading the database, so that a write
        // committing after our read replaces it and orphans what we store.
        let fresh = new_generation();
        return match st
            .inner
            .coord
            .cache_set(&gen_key, fresh.as_bytes(), GENERATION_TTL)
            .await
        {
            Ok(()) => Lookup::Miss(Some(fresh)),
            Err(_) => Lookup::Miss(None),
        };
    };
    if let Some(entry) = entry.and_then(|e| String::from_utf8(e).ok())
        && let Some((entry_gen, value)) = entry.split_once('\n')
        && entry_gen == generation
    {
        return Lookup::Hit(value.to_string());
    }
    Lookup::Miss(Some(generation))
}

async fn store(st: &Registry, key: String, generation: Option<String>, value: &str) {
    let Some(generation) = generation else { return };
    let entry = format!("{generation}\n{value}");
    if let Err(e) = st
        .inner
        .coord
        .cache_set(&key, entry.as_bytes(), ENTRY_TTL)
        .await
    {
        tracing::debug!(error = %e, "storing a shared lookup failed");
    }
}

/// Like [`repo_blob`], for a client asking whether the blob exists (GET/HEAD): on a
/// cache miss the database lookup also refreshes a link older than half of GC's grace
/// ([`registry_meta::BlobMeta::touch_blob`]). A cached answer is at most the cache's time
/// to live older than such a lookup, so with a grace above twice that TTL a blob a client
/// was told about keeps its link for at least half the grace.
pub(crate) async fn touch_blob(st: &Registry, repo: &str, digest: &Digest) -> Result<Option<u64>> {
    blob_size(st, repo, digest, true).await
}

/// Size of a blob if `repo` may serve it: shared cache, else the database (positive answers
/// only are cached: a blob being pushed must not be reported missing from a cache).
pub(crate) async fn repo_blob(st: &Registry, repo: &str, digest: &Digest) -> Result<Option<u64>> {
    blob_size(st, repo, digest, false).await
}

/// [`repo_blob`], or with `touch` [`touch_blob`].
async fn blob_size(st: &Registry, repo: &str, digest: &Digest, touch: bool) -> Result<Option<u64>> {
    let key = blob_key(repo, digest);
    let generation = match lookup(st, repo, key.clone()).await {
        Lookup::Hit(v) => match v.parse() {
            Ok(size) => return Ok(Some(size)),
            Err(_) => None,
        },
        Lookup::Miss(generation) => generation,
    };
    let meta = &st.inner.meta;
    let size = if touch {
        meta.touch_blob(repo, digest, st.link_refresh_before())
            .await?
    } else {
        meta.repo_blob(repo, digest).await?
    };
    if let Some(size) = size {
        store(st, key, generation, &size.to_string()).await;
    }
    Ok(size)
}

/// What a tag points to: digest and media type.
pub(crate) async fn resolve_tag(
    st: &Registry,
    repo: &str,
    tag: &str,
) -> Result<Option<(Digest, String)>> {
    let key = tag_key(repo, tag);
    let generation = match lookup(st, repo, key.clone()).await {
        Lookup::Hit(v) => {
            if let Some((d, media_type)) = v.split_once('\n')
                && let Ok(digest) = d.parse::<Digest>()
            {
                return Ok(Some((digest, media_type.to_string())));
            }
            None
        }
        Lookup::Miss(generation) => generation,
    };
    let Some(record) = st.inner.meta.resolve_tag(repo, tag).await? else {
        return Ok(None);
    };
    let value = format!("{}\n{}", record.digest, record.media_type);
    store(st, key, generation, &value).await;
    Ok(Some((record.digest, record.media_type)))
}

/// After a database commit that changed what `repo` serves: see
/// [`registry_coord::lookups::repository_changed`] (other writers, such as garbage
/// collection, call that directly).
pub(crate) async fn repository_changed(st: &Registry, repo: &str) {
    lookups::repository_changed(&*st.inner.coord, repo, st.inner.shared_cache).await;
}
