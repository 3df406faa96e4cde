//! `hyperbuild convert`: a local image rewritten with eStargz layers.

use anyhow::Context;
use oci_client::Platform;
use oci_core::ParsedManifest;

use crate::ctx::{Ctx, local_name, parse_format, resolve_local};

/// Write `source` with eStargz layers as `dest`.
pub(crate) async fn convert(
    ctx: &Ctx,
    source: &str,
    dest: &str,
    format: &str,
) -> anyhow::Result<()> {
    let mut desc = resolve_local(ctx, source)?;
    if oci_core::manifest::is_index(&desc.media_type) {
        let body = ctx.store.read_blob(&desc.digest, 4 << 20)?;
        let idx = ParsedManifest::parse(&body, Some(&desc.media_type))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        desc = Platform::host()
            .select(&idx.manifests)
            .cloned()
            .context("no manifest for this platform in the image index")?;
    }
    let format = parse_format(format)?;
    let store = ctx.store.clone();
    let converted = tokio::task::spawn_blocking(move || {
        image_build::convert::convert_to_estargz(&store, &desc, format)
    })
    .await?
    .context("converting to eStargz")?;
    ctx.store
        .set_ref(&local_name(dest)?, converted.manifest.clone())?;
    if !ctx.quiet {
        eprintln!(
            "{} layer(s) rewritten as eStargz, {} already eStargz",
            converted.rewritten, converted.kept
        );
    }
    println!("{}", converted.manifest.digest);
    Ok(())
}
