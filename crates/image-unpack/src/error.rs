//! The error type of this crate.

use std::io;
use std::path::PathBuf;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading, decompressing or parsing the layer stream failed.
    #[error("reading layer stream: {0}")]
    Read(#[source] io::Error),
    /// The tar stream is malformed or ambiguous (e.g. PAX records that parsers would read differently).
    #[error("malformed layer: {0}")]
    Malformed(String),
    /// A header is larger than this crate accepts (GNU long names, PAX records).
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry name or link target is unusable (too long, too deep, NUL byte, bad whiteout).
    #[error("invalid entry name {name:?}: {reason}")]
    InvalidName {
        /// The name as found in the archive (lossy, shortened).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry name or hard-link target climbs out of the root with `..`.
    #[error("entry {name:?} escapes the root directory")]
    Breakout {
        /// The offending name (lossy, shortened).
        name: String,
    },
    /// A hard link whose target is missing or cannot be linked.
    #[error("hard link {name:?} -> {target:?}: {reason}")]
    HardLink {
        /// The link's own name.
        name: String,
        /// The target named by the archive.
        target: String,
        /// Why it failed.
        reason: String,
    },
    /// An entry of a type that is not applied (e.g. GNU volume headers).
    #[error("entry {name:?} has unsupported tar type {kind:?}")]
    UnsupportedEntry {
        /// The entry name (lossy, shortened).
        name: String,
        /// The raw type flag.
        kind: char,
    },
    /// A filesystem operation inside the root failed; `path` is relative to the root.
    #[error("{op} {path:?}: {source}")]
    Fs {
        /// The operation (`create`, `mkdir`, `chown`, ...).
        op: &'static str,
        /// The path, relative to the root.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The root directory cannot be opened or created.
    #[error("root directory {path:?}: {source}")]
    Root {
        /// The root given by the caller.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A layer blob file cannot be opened or read.
    #[error("layer blob {path:?}: {source}")]
    Blob {
        /// The blob file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Applying the layer at `index` (0-based, in application order) failed.
    #[error("layer {index} ({blob:?}): {source}")]
    Layer {
        /// Position of the layer in the list given to [`crate::unpack`].
        index: usize,
        /// The blob file.
        blob: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<UnpackError>,
    },
}

impl UnpackError {
    /// The innermost error, looking through [`UnpackError::Layer`] wrappers.
    pub fn root_cause(&self) -> &UnpackError {
        match self {
            UnpackError::Layer { source, .. } => source.root_cause(),
            other => other,
        }
    }
}

/// A name for messages: lossy UTF-8, at most 256 characters.
pub(crate) fn display_name(raw: &[u8]) -> String {
    const MAX: usize = 256;
    let s = String::from_utf8_lossy(raw);
    if s.chars().count() <= MAX {
        s.into_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

/// Build an [`UnpackError::Fs`] from a rustix or std error.
pub(crate) fn fs_err(
    op: &'static str,
    path: impl Into<PathBuf>,
    e: impl Into<io::Error>,
) -> UnpackError {
    UnpackError::Fs {
        op,
        path: path.into(),
        source: e.into(),
    }
}
