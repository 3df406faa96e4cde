//! `hyperbuild unpack`: an image's layers applied into a directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oci_client::Platform;
use oci_core::ParsedManifest;

use crate::TransferArgs;
use crate::ctx::{Ctx, local_name};

pub(crate) async fn unpack(ctx: &Ctx, image: &str, dir: &Path) -> anyhow::Result<()> {
    let desc = match ctx.store.resolve(&local_name(image)?)? {
        Some(d) => d,
        None => {
            let t = TransferArgs {
                concurrency: 4,
                retries: 3,
            };
            let (name, _) = super::pull::pull(ctx, image, None, &t).await?;
            ctx.store
                .resolve(&name)?
                .context("image vanished after pull")?
        }
    };
    let mut body = ctx.store.read_blob(&desc.digest, 4 << 20)?;
    let mut parsed =
        ParsedManifest::parse(&body, Some(&desc.media_type)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if parsed.is_index() {
        let host = Platform::host();
        let child = host
            .select(&parsed.manifests)
            .with_context(|| format!("no manifest for {host} in the image index"))?
            .clone();
        body = ctx.store.read_blob(&child.digest, 4 << 20)?;
        parsed = ParsedManifest::parse(&body, Some(&child.media_type))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config: serde_json::Value = match &parsed.config {
        Some(c) => serde_json::from_slice(&ctx.store.read_blob(&c.digest, 4 << 20)?)?,
        None => serde_json::Value::Null,
    };
    let layers: Vec<(PathBuf, String)> = parsed
        .layers
        .iter()
        .map(|l| (ctx.store.blob_path(&l.digest), l.media_type.clone()))
        .collect();
    let target = dir.to_path_buf();
    let stats = tokio::task::spawn_blocking(move || {
        let opts = image_unpack::UnpackOptions::default();
        image_unpack::unpack(
            layers.iter().map(|(p, m)| (p.as_path(), m.as_str())),
            &target,
            &opts,
        )
    })
    .await??;
    if let Some(diff_ids) = config
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
    {
        for (i, (got, want)) in stats.iter().zip(diff_ids).enumerate() {
            if want.as_str() != Some(got.diff_id.to_string().as_str()) {
                bail!(
                    "layer {i}: uncompressed digest {} does not match the config's diff_id {want}",
                    got.diff_id
                );
            }
        }
    }
    if !ctx.quiet {
        eprintln!("Unpacked {} layer(s) into {}", stats.len(), dir.display());
    }
    Ok(())
}
