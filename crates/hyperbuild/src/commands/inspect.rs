//! `hyperbuild inspect`: an image's manifest and config, local or remote.

use anyhow::{Context, bail};
use oci_client::{Platform, Reference, RegistryClient};
use oci_core::{Descriptor, Digest, ParsedManifest};

use crate::ctx::{Ctx, local_name, parse_ref};

pub(crate) async fn inspect(
    ctx: &Ctx,
    image: &str,
    remote: bool,
    platform: Option<&str>,
) -> anyhow::Result<()> {
    let local = if remote {
        None
    } else {
        ctx.store.resolve(&local_name(image)?)?
    };
    let (name, digest, media_type, manifest, config) = match local {
        Some(desc) => {
            let body = ctx.store.read_blob(&desc.digest, 4 << 20)?;
            let config = config_of(&body, &desc.media_type, |d| {
                Ok(ctx.store.read_blob(d, 4 << 20)?)
            })
            .await?;
            (
                local_name(image)?,
                desc.digest,
                desc.media_type,
                body,
                config,
            )
        }
        None => {
            let r = parse_ref(image)?;
            let client = ctx.client(None)?;
            let (mut body, mut mt, mut digest) = client.get_manifest(&r).await?;
            let parsed =
                ParsedManifest::parse(&body, Some(&mt)).map_err(|e| anyhow::anyhow!("{r}: {e}"))?;
            if parsed.is_index() {
                let p = match platform {
                    Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
                    None => Platform::host(),
                };
                let child = p
                    .select(&parsed.manifests)
                    .with_context(|| format!("no manifest for {p} in {r}"))?;
                (body, mt, digest) = client
                    .get_manifest(&r.with_digest(child.digest.clone()))
                    .await?;
            }
            let parsed =
                ParsedManifest::parse(&body, Some(&mt)).map_err(|e| anyhow::anyhow!("{r}: {e}"))?;
            let config = match &parsed.config {
                Some(c) => Some(fetch_small_blob(&client, &r, c).await?),
                None => None,
            };
            (r.to_string(), digest, mt, body.to_vec(), config)
        }
    };
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let config: serde_json::Value = config
        .map(|c| serde_json::from_slice(&c))
        .transpose()?
        .unwrap_or_default();
    let layers: Vec<serde_json::Value> = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .map(|l| l.iter().filter_map(|d| d.get("digest").cloned()).collect())
        .unwrap_or_default();
    let out = serde_json::json!({
        "Name": name,
        "Digest": digest.to_string(),
        "MediaType": media_type,
        "Created": config.get("created"),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
        "Layers": layers,
        "Config": config.get("config"),
        "Manifest": manifest,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn config_of(
    body: &[u8],
    media_type: &str,
    read: impl Fn(&Digest) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let parsed =
        ParsedManifest::parse(body, Some(media_type)).map_err(|e| anyhow::anyhow!("{e}"))?;
    parsed.config.map(|c| read(&c.digest)).transpose()
}

async fn fetch_small_blob(
    client: &RegistryClient,
    r: &Reference,
    d: &Descriptor,
) -> anyhow::Result<Vec<u8>> {
    if d.size > 4 << 20 {
        bail!("config blob {} is larger than 4 MiB", d.digest);
    }
    let (resp, _) = client.get_blob(r, &d.digest, 0).await?;
    let bytes = resp.bytes().await.context("downloading the config")?;
    let got = Digest::of(d.digest.algorithm(), &bytes);
    if got != d.digest {
        bail!("config digest mismatch: expected {}, got {got}", d.digest);
    }
    Ok(bytes.to_vec())
}
