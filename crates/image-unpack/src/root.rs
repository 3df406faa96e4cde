//! Path resolution confined to a root directory, and removal that never leaves it.
//!
//! Every lookup starts from a directory file descriptor of the root and opens one component at
//! a time with `O_NOFOLLOW | O_DIRECTORY`. A symlink met on the way is read with `readlinkat`
//! and its target is walked *by this code*, against the root: an absolute target restarts at
//! the root, `..` pops the stack of descriptors this walk opened and stops at the root. This is
//! the semantics of `openat2(RESOLVE_IN_ROOT)` (and of a chroot), done in user space so the
//! resolved path is known (whiteout bookkeeping needs it). The kernel's own `..` is never used,
//! so no lookup can climb out of the root. The last component of an entry is never resolved
//! here: callers operate on it with `*at` calls that do not follow it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Most symlinks followed while resolving one path (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
/// Most directory levels held open while resolving or removing.
pub(crate) const MAX_OPEN_DEPTH: usize = 512;

/// Flags for opening a directory without following a symlink in the last component.
pub(crate) fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// An open directory inside the root with its resolved path (relative, no symlinks).
pub(crate) struct Dir {
    pub fd: OwnedFd,
    pub path: PathBuf,
}

/// The root directory every operation is confined to.
pub(crate) struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Open `path` (which itself may be reached through symlinks: it is the caller's choice).
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// The root's descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolve `components` as a directory inside the root.
    ///
    /// With `create`, missing directories are made (mode 0755, like containerd and moby do for
    /// parents missing from an archive) and a non-directory on the way is an error (`ENOTDIR`);
    /// without it, `Ok(None)` says the directory does not exist (or is not a directory).
    pub(crate) fn dir(&self, components: &[&OsStr], create: bool) -> io::Result<Option<Dir>> {
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut queue: VecDeque<OsString> = components.iter().map(|c| c.to_os_string()).collect();
        let mut symlinks = 0usize;
        let mut created_retries = 0usize;
        while let Some(c) = queue.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            if stack.len() >= MAX_OPEN_DEPTH {
                return Err(io::Error::other(format!(
                    "path resolves deeper than {MAX_OPEN_DEPTH} directories"
                )));
            }
            let cur = stack.last().map_or(self.fd.as_fd(), |(fd, _)| fd.as_fd());
            match rustix::fs::openat(cur, &c, dir_flags(), Mode::empty()) {
                Ok(fd) => stack.push((fd, c)),
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(cur, &c, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    created_retries += 1;
                    if created_retries > MAX_OPEN_DEPTH * 4 {
                        return Err(io::Error::other("directory keeps disappearing"));
                    }
                    // Open it on the next turn (and look again should something else be there).
                    queue.push_front(c);
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let st = match rustix::fs::statat(cur, &c, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => st,
                        Err(Errno::NOENT) if !create => return Ok(None),
                        Err(e) => return Err(e.into()),
                    };
                    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                        if create {
                            return Err(Errno::NOTDIR.into());
                        }
                        return Ok(None);
                    }
                    symlinks += 1;
                    if symlinks > MAX_SYMLINKS {
                        return Err(Errno::LOOP.into());
                    }
                    let target = rustix::fs::readlinkat(cur, &c, Vec::new())?;
                    let target = target.as_bytes();
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    for part in target.rsplit(|b| *b == b'/') {
                        if !part.is_empty() {
                            queue.push_front(OsStr::from_bytes(part).to_os_string());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let path: PathBuf = stack.iter().map(|(_, n)| n.as_os_str()).collect();
        let fd = match stack.pop() {
            Some((fd, _)) => fd,
            None => self.fd.try_clone()?,
        };
        Ok(Some(Dir { fd, path }))
    }
}

impl Root {
    /// Open the directory at exactly `components` (a resolved path): `Ok(None)` when a
    /// component is missing, not a directory, or a symlink (nothing is followed).
    pub(crate) fn dir_exact(&self, components: &[&OsStr]) -> io::Result<Option<OwnedFd>> {
        let mut cur = self.fd.try_clone()?;
        for c in components {
            cur = match rustix::fs::openat(&cur, *c, dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        }
        Ok(Some(cur))
    }
}

/// Names in a directory, without `.` and `..`.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

/// Remove `name` in `dir` and everything below it, never following a symlink.
/// A missing `name` is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    remove_at(dir, name, 0)
}

fn remove_at(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        if depth >= MAX_OPEN_DEPTH {
            return Err(io::Error::other(format!(
                "directory tree deeper than {MAX_OPEN_DEPTH} levels"
            )));
        }
        let sub = rustix::fs::openat(dir, name, dir_flags(), Mode::empty())?;
        for child in list_dir(sub.as_fd())? {
            remove_at(sub.as_fd(), &child, depth + 1)?;
        }
        drop(sub);
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    } else {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn comps(s: &str) -> Vec<&OsStr> {
        s.split('/')
            .filter(|c| !c.is_empty())
            .map(OsStr::new)
            .collect()
    }

    /// The walk agrees with the kernel's `openat2(RESOLVE_IN_ROOT)` on a tree full of symlinks.
    #[test]
    fn matches_kernel_resolve_in_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("x/y")).unwrap();
        std::os::unix::fs::symlink("/a/b", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("b/c", root.join("a/rel")).unwrap();
        std::os::unix::fs::symlink("../x", root.join("a/b/tox")).unwrap();
        std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::fs::write(root.join("x/file"), b"").unwrap();
        let r = Root::open(root).unwrap();
        let cases = [
            "a",
            "abs",
            "abs/c",
            "a/up",
            "a/up/x/y",
            "a/rel",
            "a/b/tox/y",
            "abs/tox",
            "a/up/abs/../x",
            "loop1",
            "etc",
            "x/file",
            "nope",
            "a/../..",
            "",
        ];
        for case in cases {
            let kernel = rustix::fs::openat2(
                r.fd(),
                if case.is_empty() { "." } else { case },
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
            );
            let ours = r.dir(&comps(case), false);
            match (kernel, ours) {
                (Ok(k), Ok(Some(o))) => {
                    let ks = rustix::fs::fstat(&k).unwrap();
                    let os = rustix::fs::fstat(&o.fd).unwrap();
                    assert_eq!((ks.st_dev, ks.st_ino), (os.st_dev, os.st_ino), "{case}");
                    let m = std::fs::metadata(root.join(&o.path)).unwrap();
                    assert_eq!(m.ino(), os.st_ino, "resolved path of {case}");
                }
                (Err(_), Ok(None)) | (Err(_), Err(_)) => {}
                (k, o) => panic!(
                    "{case}: kernel {:?}, ours {:?}",
                    k.map(|_| ()),
                    o.map(|d| d.map(|d| d.path))
                ),
            }
        }
    }

    #[test]
    fn creates_missing_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), root.join("evil")).unwrap();
        let r = Root::open(&root).unwrap();
        let d = r.dir(&comps("evil/sub"), true).unwrap().unwrap();
        let expect: PathBuf = t
            .path()
            .join("outside/sub")
            .strip_prefix("/")
            .unwrap()
            .to_path_buf();
        assert_eq!(d.path, expect);
        assert!(root.join(&expect).is_dir());
        assert!(!t.path().join("outside").exists());
    }

    #[test]
    fn removes_without_following() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/link")).unwrap();
        let r = Root::open(&root).unwrap();
        remove_all_at(r.fd(), OsStr::new("d")).unwrap();
        remove_all_at(r.fd(), OsStr::new("missing")).unwrap();
        assert!(!root.join("d").exists());
        assert!(outside.join("keep").exists());
    }
}
