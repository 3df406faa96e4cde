//! `hyperbuild images`: the store's images, as a table or JSON.

use image_store::ImageStore;
use oci_client::Reference;
use oci_core::{Descriptor, Digest, ParsedManifest};

use crate::ctx::Ctx;
use crate::progress::human;

/// Config digest, total size and creation time of an image manifest in the store.
fn summarize(store: &ImageStore, desc: &Descriptor) -> Option<(Digest, u64, String)> {
    let body = store.read_blob(&desc.digest, 4 << 20).ok()?;
    let m = ParsedManifest::parse(&body, Some(&desc.media_type)).ok()?;
    let config = m.config?;
    let size = config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    let created = store
        .read_blob(&config.digest, 4 << 20)
        .ok()
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
        .and_then(|v| {
            v.get("created")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    Some((config.digest, size, created))
}

pub(crate) fn images(ctx: &Ctx, digests: bool, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (name, desc) in ctx.store.list()? {
        let (repo, tag) = match name.parse::<Reference>() {
            Ok(r) => {
                let familiar = r.with_tag("x").familiar();
                (
                    familiar[..familiar.len() - 2].to_string(),
                    r.tag.clone().unwrap_or_else(|| "<none>".into()),
                )
            }
            Err(_) => (name.clone(), "<none>".into()),
        };
        let (id, size, created) =
            summarize(&ctx.store, &desc).unwrap_or((desc.digest.clone(), desc.size, String::new()));
        rows.push((repo, tag, desc.digest.clone(), id, size, created));
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(repo, tag, digest, id, size, created)| {
                serde_json::json!({"repository": repo, "tag": tag, "digest": digest.to_string(), "id": id.to_string(), "size": size, "created": created})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if digests {
        println!(
            "{:<40} {:<16} {:<72} {:<14} {:>10}",
            "REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "SIZE"
        );
    } else {
        println!(
            "{:<40} {:<16} {:<14} {:<22} {:>10}",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
        );
    }
    for (repo, tag, digest, id, size, created) in rows {
        let short_id = &id.hex()[..12];
        if digests {
            println!(
                "{repo:<40} {tag:<16} {:<72} {short_id:<14} {:>10}",
                digest.to_string(),
                human(size)
            );
        } else {
            println!(
                "{repo:<40} {tag:<16} {short_id:<14} {:<22} {:>10}",
                created.get(..19).unwrap_or(&created),
                human(size)
            );
        }
    }
    Ok(())
}
