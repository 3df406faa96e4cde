//! `hyperbuild import ROOTFS.tar REF`: a base image from a root filesystem tarball.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use image_store::ImageStore;
use oci_core::{Descriptor, Digest};
use serde_json::json;

use crate::image::{Format, Image, write_image};
use crate::layer::{Compression, LayerWriter};
use crate::{BuildError, Result};

/// What `import` needs to know.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Layer compression.
    pub compression: Compression,
    /// Media types of the result.
    pub format: Format,
    /// `os` of the image.
    pub os: String,
    /// `architecture` of the image.
    pub architecture: String,
    /// `created` timestamp (RFC 3339).
    pub created: String,
    /// Default command, if any.
    pub cmd: Option<Vec<String>>,
}

/// Import a tarball (plain, gzip or zstd; detected) as a one-layer image. Returns the
/// manifest descriptor and the image ID.
pub fn import(
    store: &ImageStore,
    tarball: &Path,
    opts: &ImportOptions,
) -> Result<(Descriptor, Digest)> {
    let file = std::fs::File::open(tarball).map_err(|e| BuildError::io(tarball, e))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let head = input.fill_buf().map_err(|e| BuildError::io(tarball, e))?;
    let reader: Box<dyn Read> = match image_unpack::Compression::detect(head) {
        image_unpack::Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        image_unpack::Compression::Zstd => {
            Box::new(zstd::Decoder::with_buffer(input).map_err(|e| BuildError::io(tarball, e))?)
        }
        image_unpack::Compression::None => Box::new(input),
    };
    // Check it is a tar archive while copying it: every entry must parse.
    let mut writer = LayerWriter::new(store, opts.compression)?;
    let mut tee = TeeReader {
        inner: reader,
        out: &mut writer,
    };
    let mut archive = tar::Archive::new(&mut tee);
    let mut entries = 0u64;
    for entry in archive.entries().map_err(|e| {
        BuildError::Invalid(format!("{}: not a tar archive: {e}", tarball.display()))
    })? {
        let mut entry = entry.map_err(|e| {
            BuildError::Invalid(format!("{}: broken tar archive: {e}", tarball.display()))
        })?;
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| BuildError::io(tarball, e))?;
        entries += 1;
    }
    // The end-of-archive blocks and any padding after them belong to the layer too.
    std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| BuildError::io(tarball, e))?;
    if entries == 0 {
        return Err(BuildError::Invalid(format!(
            "{}: the archive is empty",
            tarball.display()
        )));
    }
    let blob = writer.finish()?;
    let mut image = Image::scratch(&opts.os, &opts.architecture);
    image.config["created"] = json!(opts.created);
    image.set_env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    if let Some(cmd) = &opts.cmd {
        image.runtime().insert("Cmd".into(), json!(cmd));
    }
    let media_type = match opts.format {
        Format::Oci => opts.compression.oci_media_type(),
        Format::Docker => opts
            .compression
            .docker_media_type()
            .ok_or_else(|| BuildError::Invalid("zstd layers need --format oci".into()))?,
    };
    let name = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    image.push_layer(
        &blob,
        media_type,
        json!({"created": opts.created, "created_by": format!("hyperbuild import {name}")}),
    );
    write_image(store, &image, opts.format)
}

/// Passes bytes through to the layer writer as they are read.
struct TeeReader<'a, R: Read> {
    inner: R,
    out: &'a mut LayerWriter,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(self.out, &buf[..n])?;
        Ok(n)
    }
}
