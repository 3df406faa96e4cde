//! `hyperbuild push`: a local image to a registry.

use anyhow::Context;
use image_transfer::PushOptions;

use crate::TransferArgs;
use crate::ctx::{Ctx, parse_ref, resolve_name};
use crate::progress::{display, human};

pub(crate) async fn push(
    ctx: &Ctx,
    image: &str,
    dest: Option<&str>,
    t: &TransferArgs,
) -> anyhow::Result<String> {
    let local = resolve_name(ctx, image)?;
    let target = parse_ref(dest.unwrap_or(image))?;
    let client = ctx.client(Some(t))?;
    let shown = display(ctx.quiet);
    let opts = PushOptions {
        concurrency: t.concurrency,
        max_retries: t.retries,
        ..PushOptions::default()
    };
    let started = std::time::Instant::now();
    let pushed = image_transfer::push(&client, &ctx.store, &local, &target, &opts, &shown)
        .await
        .with_context(|| format!("pushing {target}"))?;
    let digest = pushed.digest.map(|d| d.to_string()).unwrap_or_default();
    if !ctx.quiet {
        eprintln!(
            "Pushed {target}: {} uploaded, {} blob(s) already there, {} mounted, in {:.1}s",
            human(pushed.uploaded),
            pushed.existing,
            pushed.mounted,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(digest)
}
