//! Apply OCI/Docker image layers into a directory: image assembly.
//!
//! [`unpack`] applies the layer blobs of an image, in order, into a root directory;
//! [`apply_layer`] applies one layer stream. Both stream: a layer is decompressed
//! ([`Compression`]: plain, gzip, zstd), hashed (the diff_id in [`LayerStats`]) and applied
//! entry by entry, never held in memory.
//!
//! # Semantics
//!
//! As containerd and moby apply layers: regular files, directories, symlinks, hard links,
//! fifos, and device nodes when [`UnpackOptions::devices`]; modes (with setuid, setgid, sticky),
//! numeric ownership when [`UnpackOptions::same_owner`] (`lchown` for symlinks), modification
//! and access times (directories get theirs at the end of the layer), and `SCHILY.xattr.*`
//! PAX records as extended attributes when [`UnpackOptions::xattrs`]. An entry replaces an
//! existing path of another type (a directory tree included); a directory entry over an
//! existing directory only updates its metadata. Parents missing from an archive are created
//! with mode 0755.
//!
//! Whiteouts follow the OCI image spec: `.wh.NAME` removes `NAME` from lower layers,
//! `.wh..wh..opq` removes everything a directory held from lower layers. Both keep what the
//! same layer writes, whatever the order of entries. Whiteout files are never created; other
//! `.wh..wh.*` names (aufs metadata) are ignored.
//!
//! # Containment
//!
//! Nothing is ever created, written, chmod'ed, chown'ed or removed outside the root:
//!
//! - Entry names and hard-link targets are cleaned lexically: a leading `/` is dropped
//!   (`/a/b` is `a/b`) and a `..` that would climb above the root is refused
//!   ([`UnpackError::Breakout`]). Names longer than 4096 bytes, deeper than 256 components or
//!   containing NUL are refused.
//! - The parent directory of every entry is resolved from a descriptor of the root, one
//!   component at a time with `O_NOFOLLOW | O_DIRECTORY`. Symlinks met on the way are read and
//!   walked by this crate *against the root*, like `openat2(RESOLVE_IN_ROOT)` or a chroot: an
//!   absolute target restarts at the root and `..` never goes above it. So a symlink
//!   `evil -> /etc` followed by `evil/passwd` writes `ROOT/etc/passwd`, never `/etc/passwd`.
//!   Symlinks themselves may point anywhere: they are stored as written.
//! - The last component is never followed: files are created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` after whatever was there is removed, and metadata is set
//!   through the new file's descriptor or with `AT_SYMLINK_NOFOLLOW`.
//! - Removal (whiteouts, type changes) walks directories by descriptor and unlinks symlinks
//!   instead of following them. Hard links are made with `linkat` from a target resolved the
//!   same way, so they can only point at files inside the root.
//!
//! The threat model is a hostile archive. A concurrent process rewriting the root while a
//! layer is applied is out of scope (the walk stays descriptor-based, but e.g. a directory
//! moved out of the root by someone else mid-walk is not detected, as `openat2` would).
//!
//! # Hostile stream limits
//!
//! GNU long names and PAX headers are size-checked before the `tar` crate buffers them
//! (4097 bytes and 1 MiB), PAX records are parsed by their length prefix (binary xattr values
//! may contain newlines), and an archive whose PAX `size` two parsers would read differently
//! is refused.

mod apply;
mod compression;
mod error;
mod paths;
mod pax;
mod stream;

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use tracing::{debug, warn};

pub use compression::Compression;
pub use error::UnpackError;
pub use paths::{MAX_DEPTH, MAX_NAME_LEN};
pub use stream::{MAX_LONG_NAME_LEN, MAX_PAX_LEN};

use apply::{Applier, read_err};
use fs_confine::Root;
use stream::{Guard, Hashing, Shared};

const READ_BUF: usize = 128 * 1024;

/// What to preserve when applying layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Set numeric uid/gid from the archive (needs root or `CAP_CHOWN`).
    pub same_owner: bool,
    /// Create character and block devices (needs `CAP_MKNOD`); skipped otherwise.
    pub devices: bool,
    /// Set extended attributes from `SCHILY.xattr.*` PAX records.
    pub xattrs: bool,
}

impl Default for UnpackOptions {
    /// `same_owner` and `devices` when running as root, `xattrs` always.
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        UnpackOptions {
            same_owner: root,
            devices: root,
            xattrs: true,
        }
    }
}

/// What applying one layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar stream (the image config's `rootfs.diff_ids` entry).
    pub diff_id: oci_core::Digest,
    /// Number of tar entries read (whiteouts and skipped entries included).
    pub entries: u64,
    /// Length of the uncompressed tar stream in bytes.
    pub bytes: u64,
}

/// Apply one layer stream, compressed as `compression`, on top of the existing directory `root`.
pub fn apply_layer<R: Read>(
    reader: R,
    compression: Compression,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    debug!(root = ?root, %compression, "applying layer");
    let dir = Root::open(root).map_err(|source| UnpackError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(BufReader::with_capacity(READ_BUF, reader)),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(READ_BUF, reader),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(READ_BUF, reader))
                .map_err(UnpackError::Read)?,
        ),
    };
    let shared = Rc::new(RefCell::new(Shared::default()));
    let mut archive = tar::Archive::new(Guard::new(Hashing::new(decoded), shared.clone()));
    let mut applier = Applier::new(dir, opts);
    let mut entries = 0u64;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        entries += 1;
        let pax = shared.borrow_mut().current_pax.take();
        applier.entry(&mut entry, pax.as_deref())?;
    }
    applier.finish()?;
    let (diff_id, bytes) = archive
        .into_inner()
        .into_inner()
        .finish()
        .map_err(read_err)?;
    debug!(%diff_id, entries, bytes, "layer applied");
    Ok(LayerStats {
        diff_id,
        entries,
        bytes,
    })
}

/// Apply layer blob files in order into `root` (created if missing).
///
/// Each item is a blob file and its descriptor's media type. The compression is read from
/// the blob's first bytes; the media type is only a cross-check (a disagreement is logged and
/// the content wins, as containerd does), so mislabelled and unknown media types still work.
pub fn unpack<'a>(
    layers: impl IntoIterator<Item = (&'a Path, &'a str)>,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<Vec<LayerStats>, UnpackError> {
    std::fs::create_dir_all(root).map_err(|source| UnpackError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (index, (blob, media_type)) in layers.into_iter().enumerate() {
        let wrap = |e: UnpackError| UnpackError::Layer {
            index,
            blob: blob.to_path_buf(),
            source: Box::new(e),
        };
        let blob_err = |source| {
            wrap(UnpackError::Blob {
                path: blob.to_path_buf(),
                source,
            })
        };
        let mut file = File::open(blob).map_err(blob_err)?;
        let mut prefix = [0u8; 4];
        let mut n = 0;
        while n < prefix.len() {
            match file.read(&mut prefix[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(blob_err(e)),
            }
        }
        file.seek(SeekFrom::Start(0)).map_err(blob_err)?;
        let detected = Compression::detect(&prefix[..n]);
        match Compression::from_media_type(media_type) {
            Some(declared) if declared != detected => warn!(
                blob = ?blob, media_type, %declared, %detected,
                "layer content does not match its media type; using the content's compression"
            ),
            Some(_) => {}
            None => debug!(blob = ?blob, media_type, %detected, "unknown layer media type"),
        }
        let stats = apply_layer(file, detected, root, opts).map_err(wrap)?;
        out.push(stats);
    }
    Ok(out)
}
