//! `hyperbuild pull`: an image from a registry into the store.

use anyhow::Context;
use image_transfer::PullOptions;
use oci_client::Platform;

use crate::TransferArgs;
use crate::ctx::{Ctx, parse_ref};
use crate::progress::{display, human};

pub(crate) async fn pull(
    ctx: &Ctx,
    image: &str,
    platform: Option<&str>,
    t: &TransferArgs,
) -> anyhow::Result<(String, oci_core::Digest)> {
    let r = parse_ref(image)?;
    let platform = match platform {
        Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let client = ctx.client(Some(t))?;
    let shown = display(ctx.quiet);
    let opts = PullOptions {
        platform,
        concurrency: t.concurrency,
        max_retries: t.retries,
    };
    let started = std::time::Instant::now();
    let pulled = image_transfer::pull(&client, &ctx.store, &r, &opts, &shown)
        .await
        .with_context(|| format!("pulling {r}"))?;
    if !ctx.quiet {
        eprintln!(
            "Pulled {}: {} downloaded, {}/{} blob(s) already present, in {:.1}s",
            pulled.name,
            human(pulled.downloaded),
            pulled.already_present,
            pulled.blobs,
            started.elapsed().as_secs_f64()
        );
    }
    Ok((pulled.name, pulled.manifest.digest))
}
