//! File operations of COPY and ADD inside a step's merged root: copying trees with modes,
//! symlinks and mtimes, applying `--chown` / `--chmod`, and resolving destinations without
//! leaving the root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use fs_confine::Root;

use crate::{BuildError, Result};

/// Ownership and mode overrides of a COPY/ADD.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    /// `--chown` uid/gid (otherwise 0:0).
    pub owner: Option<(u32, u32)>,
    /// `--chmod` mode bits.
    pub mode: Option<u32>,
}

/// A path inside the root, lexically cleaned; `..` cannot climb above `/`.
pub fn clean_in_root(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Resolve a destination `rel` inside `root` following symlinks as if `root` were `/` (so a
/// symlinked destination directory is honoured but cannot lead outside the root); the
/// directories on the way are created where missing. The host path returned has no symlink
/// in it, so path-based writes there stay inside the root.
pub fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf> {
    let r = Root::open(root).map_err(|e| BuildError::io(root, e))?;
    let resolved = r
        .resolve_for_write(rel)
        .map_err(|e| BuildError::io(&root.join(rel), e))?;
    Ok(root.join(resolved.path()))
}

/// Resolve a source `rel` inside `root` (a build context, an image's or a stage's root) as
/// [`resolve_in_root`] does, without creating anything: its host path, symlink-free, or a
/// "not found" error. With `follow`, a last component that is a symlink is followed
/// (re-rooted) too; otherwise it is kept, to be copied as a symlink.
pub fn source_in_root(root: &Path, rel: &Path, follow: bool) -> Result<PathBuf> {
    let r = Root::open(root).map_err(|e| BuildError::io(root, e))?;
    let found = r
        .host_path(rel, follow)
        .map_err(|e| BuildError::io(&root.join(rel), e))?
        .filter(|p| std::fs::symlink_metadata(p).is_ok());
    found.ok_or_else(|| {
        BuildError::Invalid(format!(
            "failed to compute cache key: \"/{}\": not found",
            rel.display()
        ))
    })
}

/// Create `dir` (inside the root, already resolved) and its missing parents as 0755 root.
pub fn mkdir_p(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| BuildError::io(dir, e))
}

fn set_owner(path: &Path, attrs: Attrs) -> Result<()> {
    let (uid, gid) = attrs.owner.unwrap_or((0, 0));
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| BuildError::io(path, e))
}

fn copy_times(src: &std::fs::Metadata, dest: &Path) {
    let atime = rustix::fs::Timespec {
        tv_sec: src.atime(),
        tv_nsec: src.atime_nsec() as _,
    };
    let mtime = rustix::fs::Timespec {
        tv_sec: src.mtime(),
        tv_nsec: src.mtime_nsec() as _,
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        dest,
        &rustix::fs::Timestamps {
            last_access: atime,
            last_modification: mtime,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

/// Copy one file, symlink or directory tree from `src` (host) to `dest` (inside the root).
/// Existing files are replaced; existing directories are merged into.
pub fn copy_tree(src: &Path, dest: &Path, attrs: Attrs) -> Result<u64> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| BuildError::io(src, e))?;
    let ft = meta.file_type();
    let mut count = 1;
    if ft.is_dir() {
        match std::fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(dest).map_err(|e| BuildError::io(dest, e))?;
                std::fs::create_dir(dest).map_err(|e| BuildError::io(dest, e))?;
            }
            Err(_) => std::fs::create_dir_all(dest).map_err(|e| BuildError::io(dest, e))?,
        }
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| BuildError::io(src, e))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            count += copy_tree(&e.path(), &dest.join(e.file_name()), attrs)?;
        }
        let mode = attrs.mode.unwrap_or(meta.mode() & 0o7777);
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io(dest, e))?;
        set_owner(dest, attrs)?;
        copy_times(&meta, dest);
        return Ok(count);
    }
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        if m.is_dir() {
            std::fs::remove_dir_all(dest).map_err(|e| BuildError::io(dest, e))?;
        } else {
            std::fs::remove_file(dest).map_err(|e| BuildError::io(dest, e))?;
        }
    }
    if let Some(parent) = dest.parent() {
        mkdir_p(parent)?;
    }
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| BuildError::io(src, e))?;
        std::os::unix::fs::symlink(&target, dest).map_err(|e| BuildError::io(dest, e))?;
        set_owner(dest, attrs)?;
    } else if ft.is_file() {
        std::fs::copy(src, dest).map_err(|e| BuildError::io(dest, e))?;
        let mode = attrs.mode.unwrap_or(meta.mode() & 0o7777);
        set_owner(dest, attrs)?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io(dest, e))?;
    } else {
        return Err(BuildError::Invalid(format!(
            "{}: only files, directories and symlinks can be copied",
            src.display()
        )));
    }
    copy_times(&meta, dest);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_in_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("abs/dir")).unwrap(),
            root.join("real/dir")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("escape/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(clean_in_root("/a/../../b/./c"), PathBuf::from("b/c"));
        // A destination below a missing directory reached through a symlink is created
        // inside the root.
        assert_eq!(
            resolve_in_root(root, Path::new("escape/new/file")).unwrap(),
            root.join("etc/new/file")
        );
        assert!(root.join("etc/new").is_dir());
    }

    #[test]
    fn sources_resolve_inside_the_root_or_are_not_found() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"host secret").unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("real/f", root.join("lnk")).unwrap();
        for hostile in ["abs/victim", "rel/victim", "abs/../outside/victim"] {
            let err = source_in_root(&root, Path::new(hostile), true).unwrap_err();
            assert!(err.to_string().contains("not found"), "{hostile}: {err}");
        }
        assert_eq!(
            source_in_root(&root, Path::new("lnk"), false).unwrap(),
            root.join("lnk")
        );
        assert_eq!(
            source_in_root(&root, Path::new("lnk"), true).unwrap(),
            root.join("real/f")
        );
    }

    #[test]
    fn copies_trees_with_attrs() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        let dest = d.path().join("dest");
        let n = copy_tree(
            &src,
            &dest,
            Attrs {
                owner: Some((1000, 1000)),
                mode: Some(0o640),
            },
        )
        .unwrap();
        assert_eq!(n, 4);
        let m = std::fs::metadata(dest.join("sub/f")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
        assert_eq!(
            std::fs::read_link(dest.join("l")).unwrap(),
            PathBuf::from("sub/f")
        );
    }
}
