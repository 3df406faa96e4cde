//! eStargz: write and read seekable tar.gz layers compatible with containerd's
//! stargz-snapshotter (`github.com/containerd/stargz-snapshotter/estargz`).
//!
//! An eStargz blob is an ordinary `tar+gzip` layer (any gunzip yields a valid tar) made of
//! many concatenated gzip members, so that a reader holding the table of contents (TOC) can
//! fetch and inflate one file, or one chunk of a large file, with a single byte-range read.
//!
//! ```text
//! [member: headers ...][member: payload of file A (+ padding, following headers)]
//! [member: chunk 1 of B][member: chunk 2 of B ...] ... [member: TOC tar entry + tar end]
//! [footer: empty member whose gzip Extra field holds the TOC offset]
//! ```
//!
//! A new gzip member starts at the blob start, at each non-empty regular file payload, at
//! each chunk of a large file, at the TOC tar header and at the footer. The TOC
//! (`stargz.index.json`, [`Toc`]) lists every entry with the compressed offset of its
//! payload and a SHA-256 per chunk; its own digest goes into the layer annotation
//! [`TOC_DIGEST_ANNOTATION`], which makes every fetched chunk verifiable from the manifest.
//!
//! - Writing: [`build`] converts a tar stream into a blob ([`WriterOptions`], [`Built`]),
//!   [`annotations`] gives the layer annotations.
//! - Reading: the caller supplies byte ranges through [`RangeSource`] (a local file with
//!   [`FileRangeSource`], or a registry with HTTP `Range`). [`read_toc`] reads the footer and
//!   the TOC, [`Toc::chunks_of`] and [`Toc::files`] locate payloads, [`read_chunk`] /
//!   [`decompress_chunk`] inflate and verify one chunk, [`verify`] checks a whole blob.

#![warn(missing_docs)]

mod footer;
mod reader;
mod tarstream;
mod time;
mod toc;
mod writer;

pub use footer::{Footer, footer_bytes, legacy_footer_bytes, parse_footer};
pub use reader::{
    FileRangeSource, RangeSource, TocLocation, VerifyReport, decompress_chunk, is_estargz,
    read_chunk, read_toc, verify,
};
pub use toc::{ChunkRange, EntryKind, Toc, TocEntry, TocFile, clean_entry_name};
pub use writer::{Built, WriterOptions, annotations, build};

use oci_core::Digest;

/// Name of the TOC tar entry, the last entry of the blob.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Size of the eStargz footer.
pub const FOOTER_SIZE: u64 = 51;
/// Size of the footer of legacy stargz blobs (Google CRFS), still accepted by readers.
pub const LEGACY_FOOTER_SIZE: u64 = 47;
/// Default maximum size of one chunk of a regular file (4 MiB).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Default gzip level, as in the Go implementation (`gzip.BestCompression`).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 9;
/// Landmark entry that ends the prioritized (prefetched) files.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Landmark entry written first when there are no prioritized files.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// The single byte a landmark file holds.
pub const LANDMARK_CONTENTS: u8 = 0x0f;
/// Layer annotation: digest of the uncompressed TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Layer annotation: decimal size of the uncompressed tar (for containers/storage).
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// Largest compressed TOC member [`read_toc`] accepts.
pub const MAX_TOC_COMPRESSED_SIZE: u64 = 256 << 20;
/// Largest TOC JSON [`read_toc`] accepts.
pub const MAX_TOC_JSON_SIZE: u64 = 1 << 30;

/// Everything that can go wrong writing or reading eStargz.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the input, writing the output or a temporary file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The input is not a well-formed tar stream.
    #[error("invalid input tar: {0}")]
    InvalidTar(String),
    /// A tar entry this format cannot represent (sparse files, global PAX headers, ...).
    #[error("unsupported tar entry {name:?}: {reason}")]
    UnsupportedEntry {
        /// Entry name as found in the tar.
        name: String,
        /// Why it is not supported.
        reason: String,
    },
    /// A prioritized file is absent from the input (and missing files are not allowed).
    #[error("prioritized file {0:?} is not in the input tar")]
    PrioritizedFileNotFound(String),
    /// A [`WriterOptions`] value is out of range.
    #[error("invalid writer option: {0}")]
    InvalidOption(String),
    /// The blob is smaller than any footer.
    #[error("blob of {size} bytes is too small to be eStargz")]
    BlobTooSmall {
        /// Size of the blob.
        size: u64,
    },
    /// The last bytes of the blob are not an eStargz (nor legacy stargz) footer.
    #[error("no valid eStargz footer: {0}")]
    InvalidFooter(String),
    /// The TOC member, its tar entry or its JSON are malformed or inconsistent.
    #[error("invalid TOC: {0}")]
    InvalidToc(String),
    /// The TOC JSON does not have the expected digest.
    #[error("TOC digest mismatch: expected {expected}, got {actual}")]
    TocDigestMismatch {
        /// Digest from the layer annotation.
        expected: Digest,
        /// Digest of the TOC JSON read from the blob.
        actual: Digest,
    },
    /// A non-empty `reg` or `chunk` entry has no `chunkDigest`, so it cannot be verified.
    #[error("TOC entry {name:?} at offset {offset} has no chunkDigest")]
    MissingChunkDigest {
        /// Entry name.
        name: String,
        /// Its compressed offset.
        offset: u64,
    },
    /// A chunk could not be inflated (not gzip, corrupt deflate data).
    #[error("cannot inflate chunk: {0}")]
    Decompress(std::io::Error),
    /// A chunk inflated to fewer bytes than the TOC says.
    #[error("chunk inflated to {actual} bytes, TOC says {expected}")]
    ChunkLengthMismatch {
        /// Size from the TOC.
        expected: u64,
        /// Bytes actually obtained.
        actual: u64,
    },
    /// A chunk's content does not match its `chunkDigest`.
    #[error("chunk digest mismatch: expected {expected}, got {actual}")]
    ChunkDigestMismatch {
        /// `chunkDigest` from the TOC.
        expected: Digest,
        /// Digest of the inflated bytes.
        actual: Digest,
    },
    /// A whole file does not match its `digest` (see [`verify`]).
    #[error("file {name:?} digest mismatch: expected {expected}, got {actual}")]
    FileDigestMismatch {
        /// File name.
        name: String,
        /// `digest` from the TOC.
        expected: Digest,
        /// Digest of the file's bytes.
        actual: Digest,
    },
    /// No TOC entry has this name.
    #[error("no TOC entry named {0:?}")]
    NotFound(String),
    /// The entry exists but is not a regular file.
    #[error("TOC entry {0:?} is not a regular file")]
    NotRegularFile(String),
    /// A [`RangeSource`] was asked for bytes outside the blob.
    #[error("range {offset}+{len} is outside the blob of {size} bytes")]
    RangeOutOfBounds {
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// Size of the blob.
        size: u64,
    },
}
