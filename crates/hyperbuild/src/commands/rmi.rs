//! `hyperbuild rmi`: remove names from the store.

use anyhow::bail;

use crate::ctx::{Ctx, local_name};
use crate::progress::human;

pub(crate) fn rmi(ctx: &Ctx, images: &[String]) -> anyhow::Result<()> {
    let mut failed = false;
    for image in images {
        let name = local_name(image)?;
        if ctx.store.remove_ref(&name)? {
            println!("Untagged: {name}");
        } else {
            eprintln!("Error: no image {image:?} in the local store");
            failed = true;
        }
    }
    let stats = ctx.store.gc()?;
    if stats.blobs_removed > 0 {
        println!(
            "Deleted {} blob(s), {} freed",
            stats.blobs_removed,
            human(stats.bytes_freed)
        );
    }
    if failed {
        bail!("some images were not found");
    }
    Ok(())
}
