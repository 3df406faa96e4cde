//! Repository generations: how lookups cached in the coordinator's cache (blob sizes, tag
//! resolutions; see `registry_core::lookups`) are invalidated without a race.
//!
//! Each repository has a generation, a random token under [`generation_key`]. A cached
//! lookup is stored with the generation read *before* its database read and served only
//! while that generation is current. Every writer that changes what a repository serves
//! calls [`repository_changed`] after its database commit: a new generation orphans every
//! cached lookup of the repository at once, even one that a slow reader stores afterwards.

use std::time::Duration;

use rand::Rng;

use crate::Coordinator;

/// How long a generation lives without writes (then a reader starts a new one).
pub const GENERATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Cache key of `repo`'s generation.
pub fn generation_key(repo: &str) -> String {
    format!("gen:{repo}")
}

/// A fresh generation token.
pub fn new_generation() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// After a database commit that changed what `repo` serves: with `shared_lookups` (the
/// registry caches lookups in the coordinator, as it does with Redis) a new generation
/// first, then the invalidation for every replica's in-process caches. The write has
/// committed, so failures are logged, not returned: cached lookups then expire on their own.
pub async fn repository_changed(coord: &dyn Coordinator, repo: &str, shared_lookups: bool) {
    if shared_lookups
        && let Err(e) = coord
            .cache_set(
                &generation_key(repo),
                new_generation().as_bytes(),
                GENERATION_TTL,
            )
            .await
    {
        tracing::warn!(repository = repo, error = %e, "could not invalidate shared lookups; they expire on their own");
    }
    if let Err(e) = coord.invalidate(repo).await {
        tracing::warn!(repository = repo, error = %e, "could not tell other replicas to drop cached manifests");
    }
}
