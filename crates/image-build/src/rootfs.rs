//! Root filesystems of base images, unpacked once per layer chain and reused as the bottom
//! overlay lower directory of every step built on them.

use std::path::{Path, PathBuf};

use image_store::ImageStore;

use crate::image::{Image, chain_id};
use crate::{BuildError, Result};

/// The directory holding the unpacked root filesystem of `image` (its layers applied in
/// order), creating it under `cache_dir` if needed. `None` for an image without layers.
pub fn base_rootfs(store: &ImageStore, image: &Image, cache_dir: &Path) -> Result<Option<PathBuf>> {
    let diff_ids = image.diff_ids();
    let Some(chain) = chain_id(&diff_ids) else {
        return Ok(None);
    };
    let dir = cache_dir.join(chain.hex());
    if dir.join(".complete").exists() {
        return Ok(Some(dir.join("root")));
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = cache_dir.join(format!(".tmp-{}-{}-{n}", chain.hex(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("root")).map_err(|e| BuildError::io(&tmp, e))?;
    let layers: Vec<(PathBuf, String)> = image
        .layers
        .iter()
        .map(|l| (store.blob_path(&l.digest), l.media_type.clone()))
        .collect();
    let opts = image_unpack::UnpackOptions::default();
    let stats = image_unpack::unpack(
        layers.iter().map(|(p, m)| (p.as_path(), m.as_str())),
        &tmp.join("root"),
        &opts,
    )
    .map_err(|e| BuildError::Invalid(format!("unpacking the base image: {e}")))?;
    for (i, (s, want)) in stats.iter().zip(&diff_ids).enumerate() {
        if &s.diff_id != want {
            return Err(BuildError::Invalid(format!(
                "base image layer {i}: content {} does not match diff_id {want}",
                s.diff_id
            )));
        }
    }
    std::fs::write(tmp.join(".complete"), b"").map_err(|e| BuildError::io(&tmp, e))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another build unpacked the same chain meanwhile: use theirs.
        Err(_) if dir.join(".complete").exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(BuildError::io(&dir, e)),
    }
    Ok(Some(dir.join("root")))
}
