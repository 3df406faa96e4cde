//! `hyperbuild convert --estargz`: rewrite an image's layers as eStargz.
//!
//! Each layer is decompressed (gzip, zstd or plain) and rewritten by the eStargz writer,
//! which adds its TOC entry and landmark to the tar: the layer's uncompressed digest changes,
//! so the config's `rootfs.diff_ids` are replaced; history stays. Layers that already carry
//! a TOC digest annotation are kept as they are.

use std::io::{BufRead, BufReader, Read};

use image_store::ImageStore;
use oci_core::{Descriptor, Digest};
use serde_json::json;

use crate::image::{Format, Image, write_image};
use crate::layer::{Compression, write_estargz};
use crate::{BuildError, Result};

/// The annotation that marks an eStargz layer.
pub const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The new manifest.
    pub manifest: Descriptor,
    /// The new image ID.
    pub id: Digest,
    /// Layers rewritten.
    pub rewritten: usize,
    /// Layers that were eStargz already.
    pub kept: usize,
}

/// Convert the image manifest `src` (in the store) to eStargz layers.
pub fn convert_to_estargz(
    store: &ImageStore,
    src: &Descriptor,
    format: Format,
) -> Result<Converted> {
    let mut image = Image::load(store, src)?;
    let old_diff_ids = image.diff_ids();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let (mut rewritten, mut kept) = (0, 0);
    for (i, layer) in std::mem::take(&mut image.layers).into_iter().enumerate() {
        if layer
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(TOC_DIGEST))
        {
            diff_ids.push(
                old_diff_ids
                    .get(i)
                    .cloned()
                    .ok_or_else(|| BuildError::Invalid(format!("layer {i} has no diff_id")))?,
            );
            layers.push(layer);
            kept += 1;
            continue;
        }
        let file = store.open_blob(&layer.digest)?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let head = input
            .fill_buf()
            .map_err(|e| BuildError::io(&store.blob_path(&layer.digest), e))?;
        let tar: Box<dyn Read> = match image_unpack::Compression::detect(head) {
            image_unpack::Compression::Gzip => {
                Box::new(flate2::bufread::MultiGzDecoder::new(input))
            }
            image_unpack::Compression::Zstd => Box::new(
                zstd::Decoder::with_buffer(input)
                    .map_err(|e| BuildError::io(&store.blob_path(&layer.digest), e))?,
            ),
            image_unpack::Compression::None => Box::new(input),
        };
        let blob = write_estargz(store, tar)?;
        let media_type = match format {
            Format::Oci => Compression::Estargz.oci_media_type(),
            Format::Docker => Compression::Estargz
                .docker_media_type()
                .expect("gzip-compatible"),
        };
        diff_ids.push(blob.diff_id.clone());
        layers.push(Descriptor {
            media_type: media_type.to_string(),
            digest: blob.digest,
            size: blob.size,
            urls: None,
            annotations: Some(blob.annotations),
            artifact_type: None,
            platform: None,
        });
        rewritten += 1;
    }
    image.layers = layers;
    image.config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()});
    let (manifest, id) = write_image(store, &image, format)?;
    Ok(Converted {
        manifest,
        id,
        rewritten,
        kept,
    })
}
