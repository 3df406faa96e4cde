//! The locks the registry takes, with their time to live and waits in one place, so that
//! every caller (the HTTP API, garbage collection) takes them the same way.
//!
//! A lock's time to live only matters when its holder dies: [`crate::RedisCoordinator`]
//! renews a held lock every third of its time to live until the guard is dropped.

use std::time::Duration;

use crate::{Coordinator, LockGuard, Result, keys};

/// Time to live of the registry's locks (renewed while held by a live replica).
pub const TTL: Duration = Duration::from_secs(30);
/// How long a blob commit or GC sweep waits for the same digest.
pub const BLOB_WAIT: Duration = Duration::from_secs(10);
/// How long a tag update waits for another update of the same tag.
pub const TAG_WAIT: Duration = Duration::from_secs(10);
/// Time to live of an upload session's lock: short, so that when the replica appending to a
/// session dies, the client's retry on another replica gets the session within seconds
/// (a live holder renews it every third of this).
pub const UPLOAD_TTL: Duration = Duration::from_secs(5);
/// How long a request waits for another request on the same upload session (a client
/// resuming after a cut connection can arrive while the server still finishes the old one).
pub const UPLOAD_WAIT: Duration = Duration::from_secs(3);

/// Hold [`keys::blob`]: taken while a blob with `digest` is committed and linked into a
/// repository, mounted, or swept by garbage collection.
pub async fn blob(coord: &dyn Coordinator, digest: &str) -> Result<LockGuard> {
    coord.lock(&keys::blob(digest), TTL, BLOB_WAIT).await
}

/// Hold [`keys::tag`] while a tag of `repo` is moved or deleted.
pub async fn tag(coord: &dyn Coordinator, repo: &str, tag: &str) -> Result<LockGuard> {
    coord.lock(&keys::tag(repo, tag), TTL, TAG_WAIT).await
}

/// Hold [`keys::upload`] while a request appends to, commits or cancels upload session `id`.
pub async fn upload(coord: &dyn Coordinator, id: &str) -> Result<LockGuard> {
    coord.lock(&keys::upload(id), UPLOAD_TTL, UPLOAD_WAIT).await
}

/// Hold the tag locks of every tag in `tags` (sorted and deduplicated first, so that two
/// writers of overlapping tag sets cannot deadlock).
pub async fn tags(coord: &dyn Coordinator, repo: &str, tags: &[String]) -> Result<Vec<LockGuard>> {
    let mut sorted: Vec<&str> = tags.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut guards = Vec::with_capacity(sorted.len());
    for t in sorted {
        guards.push(tag(coord, repo, t).await?);
    }
    Ok(guards)
}
