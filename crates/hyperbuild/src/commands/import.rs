//! `hyperbuild import`: a root filesystem tarball as an image.

use std::path::PathBuf;

use anyhow::Context;
use oci_client::Platform;

use crate::ctx::{Ctx, local_name, now_rfc3339, parse_compression, parse_format};

/// Import a root filesystem tarball as a one-layer image named `image`.
pub(crate) async fn import(
    ctx: &Ctx,
    tarball: PathBuf,
    image: &str,
    compression: &str,
    format: &str,
    platform: Option<&str>,
    cmd: Vec<String>,
) -> anyhow::Result<()> {
    let platform = match platform {
        Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let opts = image_build::import::ImportOptions {
        compression: parse_compression(compression)?,
        format: parse_format(format)?,
        os: platform.os,
        architecture: platform.architecture,
        created: now_rfc3339(),
        cmd: (!cmd.is_empty()).then_some(cmd),
    };
    let name = local_name(image)?;
    let store = ctx.store.clone();
    let (desc, id) =
        tokio::task::spawn_blocking(move || image_build::import::import(&store, &tarball, &opts))
            .await?
            .context("importing")?;
    ctx.store.set_ref(&name, desc)?;
    println!("{id}");
    Ok(())
}
