//! Archive entry names: lexical cleaning and link resolution, never touching the filesystem.

use crate::error::StoreError;

/// Clean an archive entry name or a name referenced from archive metadata: UTF-8, relative,
/// no `..`, no NUL; `.` components and repeated or trailing slashes dropped. The archive
/// root itself comes back as `""`.
pub(crate) fn clean_path(raw: &[u8]) -> Result<String, StoreError> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| StoreError::UnsafePath(String::from_utf8_lossy(raw).into_owned()))?;
    let unsafe_path = || StoreError::UnsafePath(s.to_string());
    if s.starts_with('/') || s.contains('\0') || s.contains('\\') {
        return Err(unsafe_path());
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(unsafe_path()),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Resolve a symbolic link's target, relative to the directory of the link at `link_path`
/// (already clean), to a clean archive path; absolute targets and targets that climb out
/// of the archive are refused.
pub(crate) fn resolve_symlink(link_path: &str, target: &[u8]) -> Result<String, StoreError> {
    let t = std::str::from_utf8(target)
        .map_err(|_| StoreError::UnsafePath(String::from_utf8_lossy(target).into_owned()))?;
    let escape = || StoreError::UnsafePath(format!("{link_path} -> {t}"));
    if t.starts_with('/') || t.contains('\0') || t.contains('\\') || t.is_empty() {
        return Err(escape());
    }
    let mut parts: Vec<&str> = link_path.split('/').collect();
    parts.pop(); // the link's own name
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(escape)?;
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_refuses() {
        assert_eq!(clean_path(b"./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(clean_path(b"./").unwrap(), "");
        for bad in [
            &b"../x"[..],
            b"/etc/passwd",
            b"a/../../b",
            b"a/..",
            b"a\\..\\b",
            b"\xff",
        ] {
            assert!(
                matches!(clean_path(bad), Err(StoreError::UnsafePath(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn resolves_links_inside_archive() {
        assert_eq!(
            resolve_symlink("a/layer.tar", b"../b.tar").unwrap(),
            "b.tar"
        );
        assert_eq!(
            resolve_symlink("blobs/sha256/x", b"./y").unwrap(),
            "blobs/sha256/y"
        );
        assert!(resolve_symlink("a/layer.tar", b"../../etc/passwd").is_err());
        assert!(resolve_symlink("layer.tar", b"/etc/passwd").is_err());
        assert!(resolve_symlink("layer.tar", b"..").is_err());
    }
}
