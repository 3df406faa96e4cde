//! `hyperbuild tag`: another name for a local image.

use crate::ctx::{Ctx, local_name, resolve_local};

/// Point `target` at the image `source` names.
pub(crate) fn tag(ctx: &Ctx, source: &str, target: &str) -> anyhow::Result<()> {
    let desc = resolve_local(ctx, source)?;
    ctx.store.set_ref(&local_name(target)?, desc)?;
    Ok(())
}
