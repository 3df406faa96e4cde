//! `hyperbuild save` and `load`: docker-archive and oci-archive tarballs.

use std::path::Path;

use anyhow::bail;
use image_store::archive::ArchiveFormat;

use crate::ctx::{Ctx, resolve_name};

/// Write `images` to an archive at `output`.
pub(crate) async fn save(
    ctx: &Ctx,
    images: &[String],
    output: &Path,
    format: &str,
) -> anyhow::Result<()> {
    let format = match format {
        "docker-archive" | "docker" => ArchiveFormat::Docker,
        "oci-archive" | "oci" => ArchiveFormat::Oci,
        other => {
            bail!("unknown archive format {other:?}: use docker-archive or oci-archive")
        }
    };
    let names = images
        .iter()
        .map(|i| resolve_name(ctx, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = ctx.store.clone();
    let out = output.to_path_buf();
    tokio::task::spawn_blocking(move || image_store::archive::save(&store, &names, format, &out))
        .await??;
    if !ctx.quiet {
        eprintln!("Saved {} image(s) to {}", images.len(), output.display());
    }
    Ok(())
}

/// Read every image of the archive at `input` into the store.
pub(crate) async fn load(ctx: &Ctx, input: &Path) -> anyhow::Result<()> {
    let store = ctx.store.clone();
    let input = input.to_path_buf();
    let loaded =
        tokio::task::spawn_blocking(move || image_store::archive::load(&store, &input)).await??;
    for name in loaded {
        println!("Loaded image: {name}");
    }
    Ok(())
}
