//! Image archives: `docker save`-style tarballs (docker-archive) and tarred OCI image
//! layouts (oci-archive), written from and read into an [`ImageStore`].
//!
//! Archives are untrusted input: every entry name is checked (no absolute paths, no `..`),
//! symbolic and hard links are resolved inside the archive's own namespace and never on the
//! filesystem, JSON documents are capped at [`MAX_MANIFEST_SIZE`](crate::MAX_MANIFEST_SIZE),
//! and every blob is verified against its digest before it is published.

mod load;
mod save;
mod tarpath;

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

pub use load::{MAX_ENTRIES, MAX_ENTRY_SIZE, load_from};
pub use save::save_to;

use crate::error::{IoContext, StoreError};
use crate::fsutil::fsync_dir;
use crate::store::ImageStore;

/// Which kind of archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// The format `docker save` wrote before Docker 25: `manifest.json`, `<id>.json`
    /// configs, uncompressed `<diff id>/layer.tar` layers; `docker load` and `podman load` read it.
    Docker,
    /// A tarred OCI image layout (`oci-layout`, `index.json`, `blobs/`), blobs as stored.
    Oci,
}

/// Write the images named by `refs` to the file `out` (atomically: a temporary file beside
/// it is renamed into place once complete).
pub fn save(
    store: &ImageStore,
    refs: &[String],
    format: ArchiveFormat,
    out: &Path,
) -> Result<(), StoreError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".image-archive-")
        .tempfile_in(dir)
        .at(dir)?;
    let (file, temp_path) = tmp.into_parts();
    let w = save_to(store, refs, format, BufWriter::with_capacity(1 << 20, file))?;
    let file = w
        .into_inner()
        .map_err(|e| StoreError::io(&temp_path, e.into_error()))?;
    file.sync_all().at(&temp_path)?;
    drop(file);
    temp_path
        .persist(out)
        .map_err(|e| StoreError::io(out, e.error))?;
    fsync_dir(dir)
}

/// Read a docker-archive or oci-archive (optionally gzip/zstd compressed; the format is
/// detected) into the store; returns the reference names it set (a digest string for an
/// image that came without a name).
pub fn load(store: &ImageStore, input: &Path) -> Result<Vec<String>, StoreError> {
    let f = File::open(input).at(input)?;
    load_from(store, f)
}

/// Write `data` as a regular file entry at `path` (deterministic header: root, 0644, mtime 0).
pub(crate) fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    builder.append_data(&mut header, path, data)
}

/// Write a directory entry at `path` (0755).
pub(crate) fn append_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    builder.append_data(&mut header, path, std::io::empty())
}
