//! Lexical normalisation of entry names and link targets.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Longest entry name or link target accepted, in bytes.
pub const MAX_NAME_LEN: usize = 4096;
/// Most path components accepted in an entry name or link target.
pub const MAX_DEPTH: usize = 256;

/// Why a name could not be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameProblem {
    TooLong,
    TooDeep,
    Nul,
    Escapes,
}

impl NameProblem {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            NameProblem::TooLong => "longer than 4096 bytes",
            NameProblem::TooDeep => "more than 256 path components",
            NameProblem::Nul => "contains a NUL byte",
            NameProblem::Escapes => "climbs above the root",
        }
    }
}

/// Split an archive name into clean components relative to the root.
///
/// Leading `/` is dropped (`/a/b` is `a/b`), empty and `.` components are skipped and `..`
/// removes the previous component; a `..` with nothing left to remove is refused
/// ([`NameProblem::Escapes`]). An empty result names the root itself.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<&OsStr>, NameProblem> {
    if raw.len() > MAX_NAME_LEN {
        return Err(NameProblem::TooLong);
    }
    if raw.contains(&0) {
        return Err(NameProblem::Nul);
    }
    let mut out: Vec<&OsStr> = Vec::new();
    let mut seen = 0usize;
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => continue,
            _ => {}
        }
        seen += 1;
        if seen > MAX_DEPTH {
            return Err(NameProblem::TooDeep);
        }
        if c == b".." {
            if out.pop().is_none() {
                return Err(NameProblem::Escapes);
            }
        } else {
            out.push(OsStr::from_bytes(c));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<Vec<&str>, NameProblem> {
        normalize(s.as_bytes()).map(|v| v.into_iter().map(|c| c.to_str().unwrap()).collect())
    }

    #[test]
    fn cleans() {
        assert_eq!(n("a/b/c").unwrap(), ["a", "b", "c"]);
        assert_eq!(n("./a//b/./c/").unwrap(), ["a", "b", "c"]);
        assert_eq!(n("/abs/path").unwrap(), ["abs", "path"]);
        assert_eq!(n("a/b/../c").unwrap(), ["a", "c"]);
        assert_eq!(n("./").unwrap(), Vec::<&str>::new());
        assert_eq!(n("").unwrap(), Vec::<&str>::new());
        assert_eq!(n("..."), Ok(vec!["..."]));
    }

    #[test]
    fn refuses() {
        assert_eq!(n("../escape"), Err(NameProblem::Escapes));
        assert_eq!(n("a/../../b"), Err(NameProblem::Escapes));
        assert_eq!(n("/../b"), Err(NameProblem::Escapes));
        assert_eq!(normalize(b"a\0b"), Err(NameProblem::Nul));
        assert_eq!(n(&"a".repeat(4097)), Err(NameProblem::TooLong));
        assert!(n(&"a".repeat(4096)).is_ok());
        assert_eq!(n(&"a/".repeat(257)), Err(NameProblem::TooDeep));
        assert!(n(&"a/".repeat(256)).is_ok());
    }
}
