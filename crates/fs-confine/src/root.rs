//! The root and the walk that resolves paths inside it.
//!
//! Every lookup starts from a directory file descriptor of the root and opens one component at
//! a time with `O_NOFOLLOW | O_DIRECTORY`. A symlink met on the way is read with `readlinkat`
//! and its target is walked *by this code*, against the root: an absolute target restarts at
//! the root, `..` pops the stack of descriptors this walk opened and stops at the root. This is
//! the semantics of `openat2(RESOLVE_IN_ROOT)` (and of a chroot), done in user space so the
//! resolved path is known (whiteout bookkeeping and host paths need it). The kernel's own `..`
//! is never used, so no lookup can climb out of the root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Most symlinks followed while resolving one path (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
/// Most directory levels held open while resolving or removing.
pub const MAX_OPEN_DEPTH: usize = 512;

/// Flags for opening a directory without following a symlink in the last component.
pub fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// An open directory inside the root with its resolved path (relative, no symlinks).
#[derive(Debug)]
pub struct Dir {
    /// The directory's descriptor.
    pub fd: OwnedFd,
    /// Its path below the root: no `..`, no symlink.
    pub path: PathBuf,
}

/// A path resolved inside the root: its parent directory, open, and its last component.
#[derive(Debug)]
pub struct Resolved {
    /// The directory holding the entry (the root itself for a top-level name).
    pub parent: Dir,
    /// The entry's name in `parent`; `None` when the path is a directory named by the walk
    /// itself (the root, or a path ending in `..` or `.`).
    pub name: Option<OsString>,
}

impl Resolved {
    /// The resolved path below the root. Only its last component may be a symlink (when
    /// resolved without following it), and it may not exist.
    pub fn path(&self) -> PathBuf {
        match &self.name {
            Some(n) => self.parent.path.join(n),
            None => self.parent.path.clone(),
        }
    }
}

/// The root directory every operation is confined to.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Open `path` (which itself may be reached through symlinks: it is the caller's choice).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The host path the root was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolve `components` as a directory inside the root.
    ///
    /// With `create`, missing directories are made (mode 0755, like containerd and moby do for
    /// parents missing from an archive) and a non-directory on the way is an error (`ENOTDIR`);
    /// without it, `Ok(None)` says the directory does not exist (or is not a directory).
    pub fn dir(&self, components: &[&OsStr], create: bool) -> io::Result<Option<Dir>> {
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
    pub fn dir_exact(&self, components: &[&OsStr]) -> io::Result<Option<OwnedFd>> {
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

/// The components of `rel` for a walk: names and `..`, nothing else (a leading `/` is
/// dropped: every path is taken below the root).
pub fn components(rel: &Path) -> Vec<OsString> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

impl Root {
    /// Resolve `rel` inside the root. Every component but the last is walked as a directory
    /// (symlinks re-rooted, `..` stopping at the root); the last one is followed the same way
    /// when `follow`, and kept as it is otherwise, so that it can be operated on with `*at`
    /// calls that do not follow it. `Ok(None)`: a directory on the way is missing (or is not
    /// a directory). The last component itself need not exist.
    pub fn resolve(&self, rel: &Path, follow: bool) -> io::Result<Option<Resolved>> {
        self.resolve_components(components(rel), follow, false)
    }

    /// Resolve `rel` inside the root for a write: as [`Root::resolve`] following the last
    /// component, with the directories on the way (the way of a symlink's target included)
    /// created where missing, mode 0755.
    pub fn resolve_for_write(&self, rel: &Path) -> io::Result<Resolved> {
        self.resolve_components(components(rel), true, true)?
            .ok_or_else(|| io::Error::from(Errno::NOENT))
    }

    /// Whether `rel` exists inside the root (its last component not followed).
    pub fn exists(&self, rel: &Path) -> io::Result<bool> {
        let Some(r) = self.resolve(rel, false)? else {
            return Ok(false);
        };
        let Some(name) = &r.name else {
            return Ok(true);
        };
        match rustix::fs::statat(&r.parent.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn resolve_components(
        &self,
        mut comps: Vec<OsString>,
        follow: bool,
        create: bool,
    ) -> io::Result<Option<Resolved>> {
        let mut symlinks = 0usize;
        loop {
            let last = match comps.last() {
                Some(l) if l != ".." => l.clone(),
                // The root, or a path ending in `..`: a directory the walk names itself.
                _ => {
                    let refs: Vec<&OsStr> = comps.iter().map(|c| c.as_os_str()).collect();
                    return Ok(self
                        .dir(&refs, create)?
                        .map(|parent| Resolved { parent, name: None }));
                }
            };
            let refs: Vec<&OsStr> = comps[..comps.len() - 1]
                .iter()
                .map(|c| c.as_os_str())
                .collect();
            let Some(parent) = self.dir(&refs, create)? else {
                return Ok(None);
            };
            if follow {
                match rustix::fs::statat(&parent.fd, &last, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        symlinks += 1;
                        if symlinks > MAX_SYMLINKS {
                            return Err(Errno::LOOP.into());
                        }
                        let target = rustix::fs::readlinkat(&parent.fd, &last, Vec::new())?;
                        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                        comps = if target.is_absolute() {
                            components(target)
                        } else {
                            let mut c = components(&parent.path);
                            c.extend(components(target));
                            c
                        };
                        continue;
                    }
                    Ok(_) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Some(Resolved {
                parent,
                name: Some(last),
            }));
        }
    }

    /// The host path of `rel` resolved inside the root (see [`Root::resolve`]): a path with
    /// no symlink on the way, so that path-based calls that do not follow the last component
    /// stay inside the root. `Ok(None)` when a directory on the way is missing.
    pub fn host_path(&self, rel: &Path, follow: bool) -> io::Result<Option<PathBuf>> {
        Ok(self.resolve(rel, follow)?.map(|r| self.path.join(r.path())))
    }

    /// Open the file at `rel` for reading, every symlink resolved inside the root: with
    /// `openat2(RESOLVE_IN_ROOT)` where the kernel has it, by this crate's walk otherwise.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        let name: PathBuf = components(rel).iter().collect();
        let name = if name.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            name
        };
        match rustix::fs::openat2(
            &self.fd,
            &name,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(File::from(fd)),
            // No openat2 (before Linux 5.6, or filtered by a seccomp profile): walk.
            Err(Errno::NOSYS | Errno::PERM | Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        let resolved = self
            .resolve(rel, true)?
            .ok_or_else(|| io::Error::from(Errno::NOENT))?;
        let fd = match &resolved.name {
            Some(n) => rustix::fs::openat(
                &resolved.parent.fd,
                n,
                flags | OFlags::NOFOLLOW,
                Mode::empty(),
            )?,
            None => rustix::fs::openat(&resolved.parent.fd, ".", flags, Mode::empty())?,
        };
        Ok(File::from(fd))
    }

    /// The names in the directory at `rel` (symlinks resolved inside the root), or `Ok(None)`
    /// when there is no directory there.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Option<Vec<OsString>>> {
        let comps = components(rel);
        let refs: Vec<&OsStr> = comps.iter().map(|c| c.as_os_str()).collect();
        match self.dir(&refs, false)? {
            Some(d) => Ok(Some(list_dir(d.fd.as_fd())?)),
            None => Ok(None),
        }
    }

    /// The directory that is to hold `rel`, created inside the root where missing, and the
    /// name `rel` has in it. For writes: the caller creates the entry with `*at` calls on the
    /// returned descriptor that do not follow the name. A path with no last name (the root,
    /// or one ending in `..`) is refused.
    pub fn create_parent(&self, rel: &Path) -> io::Result<(Dir, OsString)> {
        let mut comps = components(rel);
        let name = match comps.pop() {
            Some(n) if n != ".." => n,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: names no entry below the root", rel.display()),
                ));
            }
        };
        let refs: Vec<&OsStr> = comps.iter().map(|c| c.as_os_str()).collect();
        let dir = self
            .dir(&refs, true)?
            .ok_or_else(|| io::Error::from(Errno::NOENT))?;
        Ok((dir, name))
    }
}

/// Names in a directory, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
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
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
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
