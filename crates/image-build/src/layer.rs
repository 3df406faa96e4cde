//! Turning a snapshot directory (an overlay upper dir, or a plain directory tree) into a
//! layer: a deterministic tar (entries sorted, PAX records for long names and xattrs,
//! numeric owners, overlay whiteouts turned into OCI `.wh.` entries and opaque markers),
//! compressed, hashed twice on the way (diff_id before compression, digest after) and
//! written into the image store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use image_store::ImageStore;
use oci_core::{Digest, Hasher};

use crate::{BuildError, Result};

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// eStargz: gzip members per file chunk plus a TOC, still a valid tar.gz.
    Estargz,
}

impl Compression {
    /// Parse `gzip`, `zstd`, `uncompressed`.
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "uncompressed" | "none" => Some(Compression::None),
            "estargz" => Some(Compression::Estargz),
            _ => None,
        }
    }

    /// The OCI layer media type.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip | Compression::Estargz => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The Docker layer media type, where one exists.
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some("application/vnd.docker.image.rootfs.diff.tar"),
            Compression::Gzip | Compression::Estargz => {
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip")
            }
            Compression::Zstd => None,
        }
    }
}

/// A layer written into the store.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Layer annotations (the eStargz TOC digest and uncompressed size).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Counts and hashes what passes through.
struct HashWriter<W: Write> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    None(W),
    Gzip(crate::pgzip::ParallelGzip<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

/// Options for writing a layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    /// Compression of the blob.
    pub compression: Compression,
    /// Clamp every mtime to this (SOURCE_DATE_EPOCH), for reproducible layers.
    pub epoch: Option<i64>,
}

/// A sink for an uncompressed tar stream: hashes it (diff_id), compresses it, hashes the
/// result (digest) and writes it into the store.
pub struct LayerWriter {
    raw: HashWriter<Encoder<HashWriter<io::BufWriter<image_store::BlobWriter>>>>,
}

impl LayerWriter {
    /// Start a layer blob in `store`.
    pub fn new(store: &ImageStore, compression: Compression) -> Result<LayerWriter> {
        let blob = store.blob_writer_unknown()?;
        let compressed = HashWriter {
            inner: io::BufWriter::with_capacity(1 << 20, blob),
            hasher: oci_core::Algorithm::Sha256.hasher(),
            written: 0,
        };
        let encoder = match compression {
            Compression::None => Encoder::None(compressed),
            Compression::Gzip => Encoder::Gzip(crate::pgzip::ParallelGzip::new(
                compressed,
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            Compression::Estargz => {
                return Err(BuildError::Invalid(
                    "eStargz layers are written by write_estargz".into(),
                ));
            }
            Compression::Zstd => Encoder::Zstd(
                zstd::Encoder::new(compressed, 3)
                    .map_err(|e| BuildError::Invalid(format!("zstd: {e}")))?,
            ),
        };
        Ok(LayerWriter {
            raw: HashWriter {
                inner: encoder,
                hasher: oci_core::Algorithm::Sha256.hasher(),
                written: 0,
            },
        })
    }

    /// Finish compression and commit the blob.
    pub fn finish(self) -> Result<LayerBlob> {
        let diff_id = self.raw.hasher.finish();
        let ctx = |e: io::Error| BuildError::Invalid(format!("writing a layer: {e}"));
        let compressed = self.raw.inner.finish().map_err(ctx)?;
        let digest = compressed.hasher.finish();
        let size = compressed.written;
        let blob = compressed
            .inner
            .into_inner()
            .map_err(|e| ctx(e.into_error()))?;
        let (stored, stored_size) = blob.commit()?;
        debug_assert_eq!(stored, digest);
        debug_assert_eq!(stored_size, size);
        Ok(LayerBlob {
            digest,
            size,
            diff_id,
            annotations: Default::default(),
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.raw.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.raw.flush()
    }
}

/// Convert an uncompressed tar stream into an eStargz blob in the store.
pub fn write_estargz(store: &ImageStore, tar: impl io::Read) -> Result<LayerBlob> {
    let blob = store.blob_writer_unknown()?;
    let mut out = io::BufWriter::with_capacity(1 << 20, blob);
    let opts = estargz::WriterOptions {
        // Level 6: most of level 9's ratio at a fraction of its time.
        compression_level: 6,
        temp_dir: Some(store.root().to_path_buf()),
        ..estargz::WriterOptions::default()
    };
    let built = estargz::build(tar, &mut out, &opts)
        .map_err(|e| BuildError::Invalid(format!("writing an eStargz layer: {e}")))?;
    let blob = out
        .into_inner()
        .map_err(|e| BuildError::Invalid(format!("writing an eStargz layer: {}", e.error())))?;
    let (digest, size) = blob.commit()?;
    if digest != built.digest {
        return Err(BuildError::Invalid(format!(
            "eStargz writer reported {} but wrote {digest}",
            built.digest
        )));
    }
    Ok(LayerBlob {
        digest,
        size,
        diff_id: built.diff_id.clone(),
        annotations: estargz::annotations(&built),
    })
}

/// Tar the tree at `dir` (overlay upper-dir conventions) into a compressed blob in `store`.
pub fn write_layer(store: &ImageStore, dir: &Path, opts: LayerOptions) -> Result<LayerBlob> {
    if opts.compression == Compression::Estargz {
        // The eStargz writer needs the tar as input: write it to a temporary file first.
        let tmp =
            tempfile::tempfile_in(store.root()).map_err(|e| BuildError::io(store.root(), e))?;
        let mut builder = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, tmp));
        builder.mode(tar::HeaderMode::Complete);
        let mut links = HashMap::new();
        walk(&mut builder, dir, Path::new(""), opts.epoch, &mut links)?;
        let mut tmp = builder
            .into_inner()
            .map_err(|e| BuildError::io(dir, e))?
            .into_inner()
            .map_err(|e| BuildError::io(dir, e.into_error()))?;
        io::Seek::rewind(&mut tmp).map_err(|e| BuildError::io(dir, e))?;
        return write_estargz(store, io::BufReader::with_capacity(1 << 20, tmp));
    }
    let mut builder = tar::Builder::new(LayerWriter::new(store, opts.compression)?);
    builder.mode(tar::HeaderMode::Complete);
    let mut links = HashMap::new();
    walk(&mut builder, dir, Path::new(""), opts.epoch, &mut links)?;
    let writer = builder.into_inner().map_err(|e| BuildError::io(dir, e))?;
    writer.finish()
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    matches!(xattr::get(path, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y")
}

/// Extended attributes worth keeping (not overlayfs's own bookkeeping).
fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = names
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with("trusted.overlay.") && n != "security.selinux")
        .filter_map(|n| xattr::get(path, &n).ok().flatten().map(|v| (n, v)))
        .collect();
    out.sort();
    out
}

fn base_header(meta: &std::fs::Metadata, epoch: Option<i64>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    let mtime = match epoch {
        Some(e) => meta.mtime().min(e),
        None => meta.mtime(),
    };
    h.set_mtime(mtime.max(0) as u64);
    h
}

/// Append one entry, with PAX records for a long path or link name and for xattrs.
fn append<W: Write>(
    b: &mut tar::Builder<W>,
    mut h: tar::Header,
    path: &str,
    link: Option<&str>,
    xattrs: &[(String, Vec<u8>)],
    data: impl io::Read,
) -> io::Result<()> {
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if h.set_path(path).is_err() || path.len() > 100 {
        pax.push(("path".into(), path.as_bytes().to_vec()));
        let short: String = path
            .chars()
            .rev()
            .take(90)
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        let short = short.trim_start_matches('/');
        h.set_path(short).or_else(|_| h.set_path("pax-long-name"))?;
    }
    if let Some(l) = link
        && (h.set_link_name(l).is_err() || l.len() > 100)
    {
        pax.push(("linkpath".into(), l.as_bytes().to_vec()));
        h.set_link_name("pax-long-link")?;
    }
    for (k, v) in xattrs {
        pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
    }
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    h.set_cksum();
    b.append(&h, data)
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    epoch: Option<i64>,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| BuildError::io(&dir, e))?
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| BuildError::io(&dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let rel_path = rel.join(&name);
        let full = root.join(&rel_path);
        let meta = std::fs::symlink_metadata(&full).map_err(|e| BuildError::io(&full, e))?;
        let path = rel_path
            .to_str()
            .ok_or_else(|| {
                BuildError::Invalid(format!("non-UTF-8 file name {}", rel_path.display()))
            })?
            .to_string();
        let io_err = |e| BuildError::io(&full, e);
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            let wh = match rel_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(p) => format!("{}/.wh.{}", p.display(), name.to_string_lossy()),
                None => format!(".wh.{}", name.to_string_lossy()),
            };
            let mut h = base_header(&meta, epoch);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            append(b, h, &wh, None, &[], io::empty()).map_err(io_err)?;
        } else if ft.is_dir() {
            let mut h = base_header(&meta, epoch);
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            append(b, h, &format!("{path}/"), None, &xattrs(&full), io::empty()).map_err(io_err)?;
            if is_opaque(&full) {
                let mut h = base_header(&meta, epoch);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                append(
                    b,
                    h,
                    &format!("{path}/.wh..wh..opq"),
                    None,
                    &[],
                    io::empty(),
                )
                .map_err(io_err)?;
            }
            walk(b, root, &rel_path, epoch, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&full).map_err(io_err)?;
            let target = target
                .to_str()
                .ok_or_else(|| BuildError::Invalid(format!("non-UTF-8 link target in {path}")))?;
            let mut h = base_header(&meta, epoch);
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            append(b, h, &path, Some(target), &xattrs(&full), io::empty()).map_err(io_err)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let mut h = base_header(&meta, epoch);
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    let first = first.clone();
                    append(b, h, &path, Some(&first), &[], io::empty()).map_err(io_err)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), path.clone());
            }
            let mut h = base_header(&meta, epoch);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = File::open(&full).map_err(io_err)?;
            append(
                b,
                h,
                &path,
                None,
                &xattrs(&full),
                io::Read::take(f, meta.len()),
            )
            .map_err(io_err)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let mut h = base_header(&meta, epoch);
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            h.set_size(0);
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev)).map_err(io_err)?;
            h.set_device_minor(libc::minor(rdev)).map_err(io_err)?;
            append(b, h, &path, None, &[], io::empty()).map_err(io_err)?;
        }
        // Sockets are not archived (as Docker does).
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_same_bytes_and_whiteouts_converted() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(store_dir.path()).unwrap();
        let mk = |root: &Path| {
            std::fs::create_dir_all(root.join("b/dir")).unwrap();
            std::fs::write(root.join("b/file"), b"hello").unwrap();
            std::fs::write(root.join("a"), b"first").unwrap();
            std::os::unix::fs::symlink("a", root.join("link")).unwrap();
            std::fs::hard_link(root.join("a"), root.join("hard")).unwrap();
            // an overlay whiteout: char device 0/0
            rustix::fs::mknodat(
                rustix::fs::CWD,
                root.join("gone"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
            let long = "x".repeat(150);
            std::fs::write(root.join(&long), b"long name").unwrap();
        };
        let t1 = tempfile::tempdir().unwrap();
        let t2 = tempfile::tempdir().unwrap();
        mk(t1.path());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        mk(t2.path());
        let opts = LayerOptions {
            compression: Compression::Gzip,
            epoch: Some(1_000_000),
        };
        let l1 = write_layer(&store, t1.path(), opts).unwrap();
        let l2 = write_layer(&store, t2.path(), opts).unwrap();
        assert_eq!(
            l1.digest, l2.digest,
            "SOURCE_DATE_EPOCH makes layers byte-identical"
        );
        assert_eq!(l1.diff_id, l2.diff_id);

        let raw = std::fs::read(store.blob_path(&l1.digest)).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&raw[..]));
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().to_string();
            assert!(e.header().mtime().unwrap() <= 1_000_000);
            if p == "hard" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Link);
            }
            names.push(p);
        }
        assert_eq!(names[0], "a");
        assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
        assert!(names.contains(&"x".repeat(150)), "long names via PAX");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names.iter().filter(|n| n.starts_with("b")).count(), 3);
    }
}
