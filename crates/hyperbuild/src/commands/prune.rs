//! `hyperbuild prune`: the build cache and unused blobs removed.

use anyhow::Context;

use crate::ctx::{Ctx, build_dir};
use crate::progress::human;

/// Clear the build cache and collect unused blobs.
pub(crate) fn prune(ctx: &Ctx) -> anyhow::Result<()> {
    let build = build_dir(ctx);
    let freed = image_build::cache::BuildCache::open(&build.join("cache"))?.prune()?;
    let rootfs = build.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("removing {}", rootfs.display()))?;
    }
    let stats = ctx.store.gc()?;
    println!(
        "Build cache cleared ({} freed); {} unused blob(s) removed ({})",
        human(freed),
        stats.blobs_removed,
        human(stats.bytes_freed)
    );
    Ok(())
}
