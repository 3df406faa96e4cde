//! Reading eStargz through byte ranges: footer → TOC → chunks.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::read::{GzDecoder, MultiGzDecoder};
use oci_core::{Algorithm, Digest};

use crate::tarstream::TarReader;
use crate::toc::{ChunkRange, EntryKind, Toc, clean_entry_name};
use crate::{
    Error, FOOTER_SIZE, LEGACY_FOOTER_SIZE, MAX_TOC_COMPRESSED_SIZE, MAX_TOC_JSON_SIZE,
    TOC_TAR_NAME, parse_footer,
};

/// Random access to the bytes of a blob. Transport-agnostic: a local file
/// ([`FileRangeSource`]), memory (`Vec<u8>`, `&[u8]`), or a registry through HTTP `Range`
/// requests implemented by the caller.
pub trait RangeSource {
    /// Total size of the blob.
    fn size(&self) -> Result<u64, Error>;
    /// Exactly `len` bytes starting at `offset`; [`Error::RangeOutOfBounds`] when the range
    /// does not fit in the blob.
    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, Error>;
}

fn check_range(offset: u64, len: u64, size: u64) -> Result<(), Error> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::RangeOutOfBounds { offset, len, size }),
    }
}

impl RangeSource for [u8] {
    fn size(&self) -> Result<u64, Error> {
        Ok(self.len() as u64)
    }
    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        check_range(offset, len, self.len() as u64)?;
        Ok(self[offset as usize..(offset + len) as usize].to_vec())
    }
}

impl RangeSource for Vec<u8> {
    fn size(&self) -> Result<u64, Error> {
        self.as_slice().size()
    }
    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.as_slice().read_range(offset, len)
    }
}

impl RangeSource for &[u8] {
    fn size(&self) -> Result<u64, Error> {
        (**self).size()
    }
    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        (**self).read_range(offset, len)
    }
}

/// A blob in a local file, read with positioned reads (`pread`), so one source can serve
/// concurrent readers.
#[derive(Debug)]
pub struct FileRangeSource {
    file: File,
    size: u64,
}

impl FileRangeSource {
    /// Open the file at `path`; its size is taken now.
    pub fn open(path: impl AsRef<Path>) -> Result<FileRangeSource, Error> {
        FileRangeSource::new(File::open(path)?)
    }

    /// Wrap an open file; its size is taken now.
    pub fn new(file: File) -> Result<FileRangeSource, Error> {
        let size = file.metadata()?.len();
        Ok(FileRangeSource { file, size })
    }
}

impl RangeSource for FileRangeSource {
    fn size(&self) -> Result<u64, Error> {
        Ok(self.size)
    }
    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        check_range(offset, len, self.size)?;
        let len = usize::try_from(len).map_err(|_| Error::RangeOutOfBounds {
            offset,
            len,
            size: self.size,
        })?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Where the TOC was found, and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocLocation {
    /// Size of the blob.
    pub blob_size: u64,
    /// Offset of the TOC gzip member.
    pub toc_offset: u64,
    /// Compressed size of the TOC member (from `toc_offset` to the footer).
    pub toc_compressed_size: u64,
    /// Size of the footer: 51 (eStargz) or 47 (legacy stargz).
    pub footer_size: u64,
    /// Size of the TOC JSON.
    pub toc_json_size: u64,
    /// SHA-256 of the TOC JSON, as computed from the blob.
    pub toc_digest: Digest,
}

/// Read the footer (last 51 bytes), then the TOC member, gunzip it, check that its tar
/// entry is `stargz.index.json` and parse the JSON. When `expected_toc_digest` is given
/// (the layer's `containerd.io/snapshot/stargz/toc.digest` annotation), the JSON's digest
/// must match and every non-empty `reg`/`chunk` entry must carry a `chunkDigest`
/// ([`Toc::verify_chunk_digests`]). The returned TOC knows its offset (for
/// [`Toc::chunks_of`]) and has `num_link` filled in.
pub fn read_toc(
    src: &dyn RangeSource,
    expected_toc_digest: Option<&Digest>,
) -> Result<(Toc, TocLocation), Error> {
    let blob_size = src.size()?;
    if blob_size < LEGACY_FOOTER_SIZE {
        return Err(Error::BlobTooSmall { size: blob_size });
    }
    let tail_len = blob_size.min(FOOTER_SIZE);
    let tail = src.read_range(blob_size - tail_len, tail_len)?;
    let footer = parse_footer(&tail)?;
    let toc_end = blob_size - footer.size;
    if footer.toc_offset >= toc_end {
        return Err(Error::InvalidFooter(format!(
            "TOC offset {} is beyond the footer at {toc_end}",
            footer.toc_offset
        )));
    }
    let toc_compressed_size = toc_end - footer.toc_offset;
    if toc_compressed_size > MAX_TOC_COMPRESSED_SIZE {
        return Err(Error::InvalidToc(format!(
            "compressed TOC of {toc_compressed_size} bytes exceeds the limit"
        )));
    }
    let member = src.read_range(footer.toc_offset, toc_compressed_size)?;
    // One gzip member only, as Go's reader (Multistream(false)).
    let mut tar = TarReader::new(GzDecoder::new(&member[..]));
    let bad = |e: Error| match e {
        Error::Io(io) => Error::InvalidToc(format!("TOC member: {io}")),
        Error::InvalidTar(s) => Error::InvalidToc(format!("TOC tar entry: {s}")),
        other => Error::InvalidToc(other.to_string()),
    };
    let entry = tar
        .next_entry()
        .map_err(bad)?
        .ok_or_else(|| Error::InvalidToc("TOC member holds no tar entry".into()))?;
    if clean_entry_name(&entry.meta.name) != TOC_TAR_NAME || *entry.meta.kind() != EntryKind::Reg {
        return Err(Error::InvalidToc(format!(
            "TOC tar entry is {:?}, expected {TOC_TAR_NAME:?}",
            entry.meta.name
        )));
    }
    let json_size = entry.meta.size;
    if json_size > MAX_TOC_JSON_SIZE {
        return Err(Error::InvalidToc(format!(
            "TOC JSON of {json_size} bytes exceeds the limit"
        )));
    }
    let mut json = Vec::new();
    tar.inner()
        .take(json_size)
        .read_to_end(&mut json)
        .map_err(|e| Error::InvalidToc(format!("TOC member: {e}")))?;
    if json.len() as u64 != json_size {
        return Err(Error::InvalidToc(format!(
            "TOC JSON is truncated: {} of {json_size} bytes",
            json.len()
        )));
    }
    let toc_digest = Digest::sha256_of(&json);
    if let Some(expected) = expected_toc_digest {
        let actual = Digest::of(expected.algorithm(), &json);
        if &actual != expected {
            return Err(Error::TocDigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }
    let mut toc = Toc::from_json(&json)?;
    toc.set_toc_offset(footer.toc_offset);
    if expected_toc_digest.is_some() {
        toc.verify_chunk_digests()?;
    }
    toc.fill_link_counts();
    tracing::debug!(
        toc_offset = footer.toc_offset,
        entries = toc.entries.len(),
        %toc_digest,
        "read eStargz TOC"
    );
    Ok((
        toc,
        TocLocation {
            blob_size,
            toc_offset: footer.toc_offset,
            toc_compressed_size,
            footer_size: footer.size,
            toc_json_size: json_size,
            toc_digest,
        },
    ))
}

/// Whether the blob ends with an eStargz (or legacy stargz) footer that points inside it.
pub fn is_estargz(src: &dyn RangeSource) -> bool {
    let Ok(size) = src.size() else {
        return false;
    };
    if size < LEGACY_FOOTER_SIZE {
        return false;
    }
    let tail_len = size.min(FOOTER_SIZE);
    let Ok(tail) = src.read_range(size - tail_len, tail_len) else {
        return false;
    };
    parse_footer(&tail).is_ok_and(|f| f.toc_offset < size - f.size)
}

fn inflate(
    compressed: &[u8],
    inner_offset: u64,
    expected_len: u64,
    digest: Option<&Digest>,
) -> Result<Vec<u8>, Error> {
    let mut d = MultiGzDecoder::new(compressed);
    if inner_offset > 0 {
        let skipped = io::copy(&mut (&mut d).take(inner_offset), &mut io::sink())
            .map_err(Error::Decompress)?;
        if skipped != inner_offset {
            return Err(Error::ChunkLengthMismatch {
                expected: expected_len,
                actual: 0,
            });
        }
    }
    let mut out = Vec::with_capacity(expected_len.min(8 << 20) as usize);
    (&mut d)
        .take(expected_len)
        .read_to_end(&mut out)
        .map_err(Error::Decompress)?;
    if out.len() as u64 != expected_len {
        return Err(Error::ChunkLengthMismatch {
            expected: expected_len,
            actual: out.len() as u64,
        });
    }
    if let Some(expected) = digest {
        let actual = Digest::of(expected.algorithm(), &out);
        if &actual != expected {
            return Err(Error::ChunkDigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(out)
}

/// Inflate a chunk from its compressed range (which starts a gzip member): the first
/// `expected_len` uncompressed bytes, checked against `digest` (the `chunkDigest`) when
/// given. Bytes after the chunk in the same member (tar padding, following headers) are
/// not inflated.
pub fn decompress_chunk(
    compressed: &[u8],
    expected_len: u64,
    digest: Option<&Digest>,
) -> Result<Vec<u8>, Error> {
    inflate(compressed, 0, expected_len, digest)
}

/// Fetch one chunk's compressed range from `src`, inflate it and verify its `chunkDigest`
/// (when the TOC has one).
pub fn read_chunk(src: &dyn RangeSource, chunk: &ChunkRange) -> Result<Vec<u8>, Error> {
    let compressed = src.read_range(chunk.compressed_offset, chunk.compressed_len)?;
    inflate(
        &compressed,
        chunk.inner_offset,
        chunk.chunk_size,
        chunk.chunk_digest.as_ref(),
    )
}

/// What [`verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Non-chunk TOC entries (unique names).
    pub entries: u64,
    /// Regular files whose content was checked.
    pub files: u64,
    /// Chunks fetched and verified.
    pub chunks: u64,
    /// Uncompressed file bytes verified.
    pub bytes: u64,
}

/// Verify a whole blob the way a lazy reader would, one chunk at a time: the TOC against
/// `expected_toc_digest`, every chunk against its `chunkDigest`, and every regular file
/// against its `digest`.
pub fn verify(src: &dyn RangeSource, expected_toc_digest: &Digest) -> Result<VerifyReport, Error> {
    let (toc, _) = read_toc(src, Some(expected_toc_digest))?;
    let mut report = VerifyReport::default();
    for f in toc.files()? {
        report.entries += 1;
        if f.entry.kind != EntryKind::Reg {
            continue;
        }
        let mut hasher = f
            .entry
            .digest
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm)
            .hasher();
        for c in &f.chunks {
            let data = read_chunk(src, c)?;
            hasher.update(&data);
            report.chunks += 1;
            report.bytes += data.len() as u64;
        }
        let actual = hasher.finish();
        if let Some(expected) = &f.entry.digest
            && &actual != expected
        {
            return Err(Error::FileDigestMismatch {
                name: f.name.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        report.files += 1;
    }
    Ok(report)
}
