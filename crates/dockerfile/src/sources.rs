//! COPY/ADD source paths: cleaning, wildcard matching and resolution in a context directory.
//!
//! Wildcards follow Go's `filepath.Match`, applied component by component: `*` never
//! crosses `/`, and there is no `**`. A pattern that matches nothing resolves to no paths
//! (BuildKit allows empty wildcards); a plain path that does not exist is an error.

use std::io;
use std::path::Path;

use thiserror::Error;

use go_filepath::{PatternError, clean_path, glob_match, has_wildcards};

/// A source that cannot be resolved.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The path leaves the build context (`../x`, `a/../../x`).
    #[error("forbidden path outside the build context: {0}")]
    OutsideContext(String),
    /// A malformed wildcard pattern.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// A non-wildcard source that does not exist in the context.
    #[error("{0:?}: not found in the build context")]
    NotFound(String),
    /// Reading the context failed.
    #[error("reading the build context at {path}: {source}")]
    Io {
        /// The directory or file being read.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// Cleans a source path relative to the context root: `/a/./b/` → `a/b`, `.` or `/` → `.`.
///
/// Paths that climb above the root are refused (Docker's classic builder refuses them too;
/// BuildKit silently clamps them at the root).
pub fn clean_source(src: &str) -> Result<String, SourceError> {
    let cleaned = clean_path(src);
    let rel = cleaned.trim_start_matches('/');
    if rel == ".." || rel.starts_with("../") {
        return Err(SourceError::OutsideContext(src.to_owned()));
    }
    Ok(if rel.is_empty() {
        ".".to_owned()
    } else {
        rel.to_owned()
    })
}

/// The candidates (context-relative paths) that the COPY source `pattern` designates.
///
/// A pattern without wildcards designates the candidate equal to it (after cleaning).
/// Results keep the candidates' order and spelling.
pub fn match_sources<'a, I>(pattern: &str, candidates: I) -> Result<Vec<&'a str>, SourceError>
where
    I: IntoIterator<Item = &'a str>,
{
    let pat = clean_source(pattern)?;
    // Validate the pattern once, even if there are no candidates.
    glob_match(&pat, ".")?;
    let mut out = Vec::new();
    for c in candidates {
        let Ok(cand) = clean_source(c) else {
            continue;
        };
        if glob_match(&pat, &cand)? {
            out.push(c);
        }
    }
    Ok(out)
}

/// Resolves a COPY/ADD source in `context_dir`: the matching context-relative paths, sorted.
///
/// Directories are descended only when they are real directories (never through symbolic
/// links), so resolution never leaves the context. Names that are not UTF-8 never match a
/// wildcard.
pub fn resolve_sources(context_dir: &Path, source: &str) -> Result<Vec<String>, SourceError> {
    let rel = clean_source(source)?;
    if rel == "." {
        return Ok(vec![rel]);
    }
    if !has_wildcards(&rel) {
        let full = context_dir.join(&rel);
        return match std::fs::symlink_metadata(&full) {
            Ok(_) => Ok(vec![rel]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SourceError::NotFound(rel)),
            Err(source) => Err(SourceError::Io {
                path: full.display().to_string(),
                source,
            }),
        };
    }
    glob_match(&rel, ".")?;
    let segments: Vec<&str> = rel.split('/').collect();
    let mut found = Vec::new();
    walk(context_dir, "", &segments, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(
    root: &Path,
    prefix: &str,
    segments: &[&str],
    found: &mut Vec<String>,
) -> Result<(), SourceError> {
    let Some((seg, rest)) = segments.split_first() else {
        return Ok(());
    };
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        }
    };
    let mut names = Vec::new();
    if has_wildcards(seg) {
        let dir = root.join(prefix);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(());
            }
            Err(source) => {
                return Err(SourceError::Io {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| SourceError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            if let Some(name) = entry.file_name().to_str()
                && glob_match(seg, name)?
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
    } else if std::fs::symlink_metadata(root.join(join(seg))).is_ok() {
        names.push((*seg).to_owned());
    }
    for name in names {
        let path = join(&name);
        if rest.is_empty() {
            found.push(path);
        } else if std::fs::symlink_metadata(root.join(&path)).is_ok_and(|m| m.is_dir()) {
            walk(root, &path, rest, found)?;
        }
    }
    Ok(())
}
