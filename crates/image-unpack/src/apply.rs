//! Applying the entries of one layer inside a [`Root`].

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use tracing::{debug, trace, warn};

use crate::UnpackOptions;
use crate::error::{UnpackError, display_name, fs_err};
use crate::paths::{NameProblem, normalize};
use crate::pax::{self, PaxRecords};
use crate::stream::GuardError;
use fs_confine::{Dir, Root, dir_flags, list_dir, remove_all_at};

const COPY_BUF: usize = 256 * 1024;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

/// Turn an error out of the `tar` crate or the readers below it into an [`UnpackError`].
pub(crate) fn read_err(e: io::Error) -> UnpackError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(g) = err.downcast_ref::<GuardError>() {
            return match g {
                GuardError::Limit { what, size, limit } => UnpackError::LimitExceeded {
                    what,
                    size: *size,
                    limit: *limit,
                },
                GuardError::Malformed(m) => UnpackError::Malformed(m.clone()),
            };
        }
        cur = match err.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    UnpackError::Read(e)
}

fn name_error(raw: &[u8], p: NameProblem) -> UnpackError {
    match p {
        NameProblem::Escapes => UnpackError::Breakout {
            name: display_name(raw),
        },
        _ => UnpackError::InvalidName {
            name: display_name(raw),
            reason: p.reason(),
        },
    }
}

/// Metadata of one entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: Timestamps,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory whose mode and times are set at the end of the layer.
struct DeferredDir {
    path: PathBuf,
    mode: u32,
    times: Timestamps,
}

/// Where to set extended attributes.
#[derive(Clone, Copy)]
enum XattrTarget<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// `name` in directory `dir`, not followed (symlinks, devices, fifos).
    At(BorrowedFd<'a>, &'a OsStr),
}

/// State while applying one layer.
pub(crate) struct Applier<'o> {
    root: Root,
    opts: &'o UnpackOptions,
    /// Resolved paths written by this layer, and all their ancestors.
    layer_paths: HashSet<PathBuf>,
    dirs: Vec<DeferredDir>,
    /// The last parent directory: (lexical key, directory, generation).
    cache: Option<(Vec<u8>, Dir, u64)>,
    /// Bumped whenever something is removed: cached resolutions may be stale.
    generation: u64,
    buf: Vec<u8>,
    warned_xattr: bool,
}

impl<'o> Applier<'o> {
    pub(crate) fn new(root: Root, opts: &'o UnpackOptions) -> Self {
        Applier {
            root,
            opts,
            layer_paths: HashSet::new(),
            dirs: Vec::new(),
            cache: None,
            generation: 0,
            buf: Vec::new(),
            warned_xattr: false,
        }
    }

    /// Apply one archive entry; `pax_raw` is the PAX data that precedes it, if any.
    pub(crate) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pax_raw: Option<&[u8]>,
    ) -> Result<(), UnpackError> {
        let pax = match pax_raw {
            Some(d) => pax::parse(d).map_err(UnpackError::Malformed)?,
            None => PaxRecords::default(),
        };
        let typeflag = entry.header().as_bytes()[156];
        if typeflag == b'g' {
            trace!("skipping PAX global header");
            return Ok(());
        }
        let raw: Vec<u8> = match &pax.path {
            Some(p) => p.clone(),
            None => entry.path_bytes().into_owned(),
        };
        let comps = normalize(&raw).map_err(|p| name_error(&raw, p))?;
        trace!(name = %display_name(&raw), kind = %(typeflag as char), "entry");

        if let Some(last) = comps.last()
            && last.as_bytes().starts_with(WHITEOUT_PREFIX)
        {
            return self.whiteout(&comps, &raw);
        }
        if comps
            .first()
            .is_some_and(|c| c.as_bytes().starts_with(WHITEOUT_META_PREFIX))
        {
            debug!(name = %display_name(&raw), "ignoring aufs metadata entry");
            return Ok(());
        }

        let meta = self.meta(entry, &pax, &raw)?;
        let is_dir = typeflag == b'5' || (typeflag == b'\0' && raw.last() == Some(&b'/'));

        let Some((name, parent_comps)) = comps.split_last() else {
            if !is_dir {
                return Err(UnpackError::InvalidName {
                    name: display_name(&raw),
                    reason: "a non-directory entry for the root",
                });
            }
            return self.root_dir(meta);
        };
        let (key, parent) = self.parent(parent_comps, &raw)?;
        let result = self.dispatch(entry, typeflag, is_dir, &parent, name, meta, &pax, &raw);
        // Removals made by this entry were below `parent`, so its resolution still holds.
        self.cache = Some((key, parent, self.generation));
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        typeflag: u8,
        is_dir: bool,
        parent: &Dir,
        name: &OsStr,
        meta: Meta,
        pax: &PaxRecords,
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        if is_dir {
            return self.directory(parent, name, meta);
        }
        match typeflag {
            b'0' | b'\0' | b'7' => self.file(entry, parent, name, meta, false),
            b'S' => self.file(entry, parent, name, meta, true),
            b'2' => {
                let target = link_target(entry, pax, raw)?;
                self.symlink(parent, name, &target, meta)
            }
            b'1' => {
                let target = link_target(entry, pax, raw)?;
                self.hardlink(parent, name, &target, raw)
            }
            b'3' | b'4' => {
                if !self.opts.devices {
                    debug!(name = %display_name(raw), "skipping device node (devices disabled)");
                    return Ok(());
                }
                let header = entry.header();
                let major = header
                    .device_major()
                    .map_err(|e| malformed(raw, e))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|e| malformed(raw, e))?
                    .unwrap_or(0);
                let kind = if typeflag == b'3' {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                self.special(parent, name, kind, rustix::fs::makedev(major, minor), meta)
            }
            b'6' => self.special(parent, name, FileType::Fifo, 0, meta),
            other => Err(UnpackError::UnsupportedEntry {
                name: display_name(raw),
                kind: other as char,
            }),
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        pax: &PaxRecords,
        raw: &[u8],
    ) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let mode = h.mode().map_err(|e| malformed(raw, e))? & 0o7777;
        let uid = match pax.uid {
            Some(u) => u,
            None => h.uid().map_err(|e| malformed(raw, e))?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => h.gid().map_err(|e| malformed(raw, e))?,
        };
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| {
                    UnpackError::Malformed(format!(
                        "{}: {what} {v} out of range",
                        display_name(raw)
                    ))
                })
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => {
                let s = h.mtime().map_err(|e| malformed(raw, e))?;
                Timespec {
                    tv_sec: i64::try_from(s).unwrap_or(i64::MAX),
                    tv_nsec: 0,
                }
            }
        };
        Ok(Meta {
            mode,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            times: Timestamps {
                last_access: pax.atime.unwrap_or(mtime),
                last_modification: mtime,
            },
            xattrs: pax.xattrs.clone(),
        })
    }

    /// Resolve (creating missing directories) the parent of an entry, reusing the last one.
    fn parent(&mut self, comps: &[&OsStr], raw: &[u8]) -> Result<(Vec<u8>, Dir), UnpackError> {
        let key = comps.iter().fold(Vec::new(), |mut k, c| {
            k.extend_from_slice(c.as_bytes());
            k.push(b'/');
            k
        });
        if let Some((k, dir, generation)) = self.cache.take()
            && k == key
            && generation == self.generation
        {
            return Ok((key, dir));
        }
        let dir = self
            .root
            .dir(comps, true)
            .map_err(|e| fs_err("resolve parent of", OsString::from_vec(raw.to_vec()), e))?
            .ok_or_else(|| {
                fs_err(
                    "resolve parent of",
                    OsString::from_vec(raw.to_vec()),
                    io::Error::from(io::ErrorKind::NotFound),
                )
            })?;
        Ok((key, dir))
    }

    /// Remember `path` (and its ancestors) as written by this layer.
    fn mark(&mut self, path: PathBuf) {
        let mut p = path;
        loop {
            if !self.layer_paths.insert(p.clone()) {
                break;
            }
            match p.parent() {
                Some(pp) if !pp.as_os_str().is_empty() => p = pp.to_path_buf(),
                _ => break,
            }
        }
    }

    /// Make room for a new entry at `name`; returns whether an existing directory was kept.
    fn clear_slot(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let rel = parent.path.join(name);
        let st = match rustix::fs::statat(&parent.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(fs_err("stat", rel, e)),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir && keep_dir {
            return Ok(true);
        }
        self.generation += 1;
        if is_dir {
            remove_all_at(parent.fd.as_fd(), name).map_err(|e| fs_err("remove", rel, e))?;
        } else {
            rustix::fs::unlinkat(&parent.fd, name, AtFlags::empty())
                .map_err(|e| fs_err("unlink", rel, e))?;
        }
        Ok(false)
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &Dir,
        name: &OsStr,
        meta: Meta,
        sparse: bool,
    ) -> Result<(), UnpackError> {
        let rel = parent.path.join(name);
        self.clear_slot(parent, name, false)?;
        let fd = rustix::fs::openat(
            &parent.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fs_err("create", &rel, e))?;
        self.mark(rel.clone());
        let mut file = File::from(fd);
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(COPY_BUF, 0);
        let copied = copy_data(entry, &mut file, &mut buf, sparse, &rel);
        self.buf = buf;
        copied?;
        self.chown(XattrTarget::Fd(file.as_fd()), &rel, &meta)?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
            .map_err(|e| fs_err("chmod", &rel, e))?;
        self.set_xattrs(XattrTarget::Fd(file.as_fd()), &rel, &meta.xattrs)?;
        rustix::fs::futimens(&file, &meta.times).map_err(|e| fs_err("set times of", &rel, e))?;
        Ok(())
    }

    fn directory(&mut self, parent: &Dir, name: &OsStr, meta: Meta) -> Result<(), UnpackError> {
        let rel = parent.path.join(name);
        if !self.clear_slot(parent, name, true)? {
            rustix::fs::mkdirat(&parent.fd, name, Mode::from_raw_mode(0o700))
                .map_err(|e| fs_err("mkdir", &rel, e))?;
        }
        let fd = rustix::fs::openat(&parent.fd, name, dir_flags(), Mode::empty())
            .map_err(|e| fs_err("open directory", &rel, e))?;
        self.mark(rel.clone());
        self.dir_meta(fd, rel, meta)
    }

    fn root_dir(&mut self, meta: Meta) -> Result<(), UnpackError> {
        let fd = self
            .root
            .fd()
            .try_clone_to_owned()
            .map_err(|e| fs_err("open", "", e))?;
        self.dir_meta(fd, PathBuf::new(), meta)
    }

    /// Owner and xattrs now; mode and times once the layer's contents are written.
    fn dir_meta(&mut self, fd: OwnedFd, rel: PathBuf, meta: Meta) -> Result<(), UnpackError> {
        self.chown(XattrTarget::Fd(fd.as_fd()), &rel, &meta)?;
        self.set_xattrs(XattrTarget::Fd(fd.as_fd()), &rel, &meta.xattrs)?;
        self.dirs.push(DeferredDir {
            path: rel,
            mode: meta.mode,
            times: meta.times,
        });
        Ok(())
    }

    fn symlink(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        target: &[u8],
        meta: Meta,
    ) -> Result<(), UnpackError> {
        let rel = parent.path.join(name);
        self.clear_slot(parent, name, false)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &parent.fd, name)
            .map_err(|e| fs_err("symlink", &rel, e))?;
        self.mark(rel.clone());
        let at = XattrTarget::At(parent.fd.as_fd(), name);
        self.chown(at, &rel, &meta)?;
        self.set_xattrs(at, &rel, &meta.xattrs)?;
        rustix::fs::utimensat(&parent.fd, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fs_err("set times of", &rel, e))?;
        Ok(())
    }

    fn hardlink(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        target_raw: &[u8],
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        let rel = parent.path.join(name);
        let fail = |reason: String| UnpackError::HardLink {
            name: display_name(raw),
            target: display_name(target_raw),
            reason,
        };
        let tcomps = normalize(target_raw).map_err(|p| name_error(target_raw, p))?;
        let Some((tname, tparent_comps)) = tcomps.split_last() else {
            return Err(fail("the target is the root directory".into()));
        };
        let tparent = self
            .root
            .dir(tparent_comps, false)
            .map_err(|e| fail(format!("resolving the target: {e}")))?
            .ok_or_else(|| fail("the target does not exist".into()))?;
        let tst = match rustix::fs::statat(&tparent.fd, *tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(fail("the target does not exist".into())),
            Err(e) => return Err(fail(format!("stat of the target: {e}"))),
        };
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(fail("the target is a directory".into()));
        }
        if let Ok(st) = rustix::fs::statat(&parent.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            && (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino)
        {
            self.mark(rel);
            return Ok(());
        }
        self.clear_slot(parent, name, false)?;
        rustix::fs::linkat(&tparent.fd, *tname, &parent.fd, name, AtFlags::empty())
            .map_err(|e| fail(format!("link: {}", io::Error::from(e))))?;
        self.mark(rel);
        Ok(())
    }

    fn special(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        kind: FileType,
        dev: rustix::fs::Dev,
        meta: Meta,
    ) -> Result<(), UnpackError> {
        let rel = parent.path.join(name);
        self.clear_slot(parent, name, false)?;
        rustix::fs::mknodat(
            &parent.fd,
            name,
            kind,
            Mode::from_raw_mode(meta.mode & 0o777),
            dev,
        )
        .map_err(|e| fs_err("mknod", &rel, e))?;
        self.mark(rel.clone());
        let at = XattrTarget::At(parent.fd.as_fd(), name);
        self.chown(at, &rel, &meta)?;
        chmod_node(parent.fd.as_fd(), name, meta.mode).map_err(|e| fs_err("chmod", &rel, e))?;
        self.set_xattrs(at, &rel, &meta.xattrs)?;
        rustix::fs::utimensat(&parent.fd, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fs_err("set times of", &rel, e))?;
        Ok(())
    }

    fn chown(&self, target: XattrTarget<'_>, rel: &Path, meta: &Meta) -> Result<(), UnpackError> {
        if !self.opts.same_owner {
            return Ok(());
        }
        let uid = Some(Uid::from_raw(meta.uid));
        let gid = Some(Gid::from_raw(meta.gid));
        match target {
            XattrTarget::Fd(fd) => rustix::fs::fchown(fd, uid, gid),
            XattrTarget::At(dir, name) => {
                rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(|e| fs_err("chown", rel, e))
    }

    fn set_xattrs(
        &mut self,
        target: XattrTarget<'_>,
        rel: &Path,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), UnpackError> {
        if !self.opts.xattrs || xattrs.is_empty() {
            return Ok(());
        }
        for (name, value) in xattrs {
            let key = OsStr::from_bytes(name);
            let result = match target {
                XattrTarget::Fd(fd) => rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty()),
                XattrTarget::At(dir, entry) => {
                    if !proc_fd_available() {
                        debug!(path = ?rel, "no /proc/self/fd: xattrs of symlinks and special files skipped");
                        return Ok(());
                    }
                    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                    p.extend_from_slice(entry.as_bytes());
                    rustix::fs::lsetxattr(OsStr::from_bytes(&p), key, value, XattrFlags::empty())
                }
            };
            let Err(e) = result else { continue };
            let privileged = name.starts_with(b"security.") || name.starts_with(b"trusted.");
            let shown = String::from_utf8_lossy(name);
            if privileged && matches!(e, Errno::PERM | Errno::OPNOTSUPP) {
                debug!(path = ?rel, xattr = %shown, error = %e, "ignoring privileged xattr");
            } else if e == Errno::OPNOTSUPP {
                if !self.warned_xattr {
                    warn!(path = ?rel, xattr = %shown, "destination does not support this xattr; ignoring such xattrs");
                    self.warned_xattr = true;
                }
            } else if e == Errno::PERM && matches!(target, XattrTarget::At(..)) {
                // user.* attributes are not allowed on symlinks and device nodes.
                debug!(path = ?rel, xattr = %shown, "xattr not allowed on this file type");
            } else {
                return Err(fs_err("setxattr", rel, e));
            }
        }
        Ok(())
    }

    /// Handle `.wh.NAME` and `.wh..wh..opq` entries.
    fn whiteout(&mut self, comps: &[&OsStr], raw: &[u8]) -> Result<(), UnpackError> {
        let (last, parent_comps) = comps.split_last().expect("whiteout has a name");
        let base = last.as_bytes();
        let opaque = base == WHITEOUT_OPAQUE;
        if !opaque && base.starts_with(WHITEOUT_META_PREFIX) {
            debug!(name = %display_name(raw), "ignoring aufs metadata whiteout");
            return Ok(());
        }
        let target = &base[WHITEOUT_PREFIX.len()..];
        if !opaque && (target.is_empty() || target == b"." || target == b"..") {
            return Err(UnpackError::InvalidName {
                name: display_name(raw),
                reason: "a whiteout of an invalid name",
            });
        }
        let parent = match self.root.dir(parent_comps, false) {
            Ok(Some(d)) => d,
            Ok(None) => {
                trace!(name = %display_name(raw), "whiteout in a missing directory");
                return Ok(());
            }
            Err(e) => {
                return Err(fs_err(
                    "resolve parent of",
                    OsString::from_vec(raw.to_vec()),
                    e,
                ));
            }
        };
        self.generation += 1;
        // The directory holding a whiteout exists in this layer (overlayfs keeps it in the upper
        // layer), so an opaque marker higher up keeps it too.
        if !parent.path.as_os_str().is_empty() {
            self.mark(parent.path.clone());
        }
        if opaque {
            trace!(dir = ?parent.path, "opaque directory");
            let children =
                list_dir(parent.fd.as_fd()).map_err(|e| fs_err("list", &parent.path, e))?;
            for child in children {
                self.prune(parent.fd.as_fd(), &parent.path, &child, 0)?;
            }
        } else {
            trace!(dir = ?parent.path, name = %display_name(target), "whiteout");
            self.prune(
                parent.fd.as_fd(),
                &parent.path,
                OsStr::from_bytes(target),
                0,
            )?;
        }
        Ok(())
    }

    /// Remove what lower layers put at `dir_path/name`, keeping what this layer wrote.
    fn prune(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        name: &OsStr,
        depth: usize,
    ) -> Result<(), UnpackError> {
        let path = dir_path.join(name);
        if !self.layer_paths.contains(&path) {
            return remove_all_at(dir, name).map_err(|e| fs_err("remove", path, e));
        }
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(fs_err("stat", path, e)),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(());
        }
        if depth >= fs_confine::MAX_OPEN_DEPTH {
            return Err(fs_err(
                "prune",
                path,
                io::Error::other("directory tree too deep"),
            ));
        }
        let sub = rustix::fs::openat(dir, name, dir_flags(), Mode::empty())
            .map_err(|e| fs_err("open directory", &path, e))?;
        for child in list_dir(sub.as_fd()).map_err(|e| fs_err("list", &path, e))? {
            self.prune(sub.as_fd(), &path, &child, depth + 1)?;
        }
        Ok(())
    }

    /// Set directory modes and times, deepest first, once the layer's contents are in place.
    pub(crate) fn finish(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        let mut done: HashSet<&Path> = HashSet::new();
        for d in dirs.iter().rev() {
            // The last entry for a directory wins.
            if !done.insert(&d.path) {
                continue;
            }
            let comps: Vec<&OsStr> = d.path.iter().collect();
            // The recorded path had no symlinks; if one appeared since, the directory was
            // replaced later in the layer and is left alone.
            let fd = match self.root.dir_exact(&comps) {
                Ok(Some(fd)) => fd,
                Ok(None) => continue,
                Err(e) => return Err(fs_err("open directory", &d.path, e)),
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|e| fs_err("chmod", &d.path, e))?;
            rustix::fs::futimens(&fd, &d.times).map_err(|e| fs_err("set times of", &d.path, e))?;
        }
        Ok(())
    }
}

fn malformed(raw: &[u8], e: io::Error) -> UnpackError {
    UnpackError::Malformed(format!("{}: {e}", display_name(raw)))
}

/// The link target of a symlink or hard link entry (PAX `linkpath` first).
fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    pax: &PaxRecords,
    raw: &[u8],
) -> Result<Vec<u8>, UnpackError> {
    let target = match &pax.linkpath {
        Some(l) => l.clone(),
        None => entry
            .link_name_bytes()
            .map(|c| c.into_owned())
            .ok_or_else(|| {
                UnpackError::Malformed(format!("{}: link without a target", display_name(raw)))
            })?,
    };
    if target.len() > crate::paths::MAX_NAME_LEN {
        return Err(UnpackError::InvalidName {
            name: display_name(raw),
            reason: "link target longer than 4096 bytes",
        });
    }
    if target.is_empty() || target.contains(&0) {
        return Err(UnpackError::InvalidName {
            name: display_name(raw),
            reason: "link target empty or containing a NUL byte",
        });
    }
    Ok(target)
}

/// Copy entry data into `file`; GNU sparse entries keep their holes (zero blocks are skipped).
fn copy_data<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    file: &mut File,
    buf: &mut [u8],
    sparse: bool,
    rel: &Path,
) -> Result<(), UnpackError> {
    let mut len: u64 = 0;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        let chunk = &buf[..n];
        if sparse && chunk.iter().all(|b| *b == 0) {
            file.seek(SeekFrom::Current(n as i64))
                .map_err(|e| fs_err("seek", rel, e))?;
        } else {
            file.write_all(chunk).map_err(|e| fs_err("write", rel, e))?;
        }
        len += n as u64;
    }
    if sparse {
        file.set_len(len).map_err(|e| fs_err("truncate", rel, e))?;
    }
    Ok(())
}

/// Whether `/proc/self/fd` can be used to name a file relative to a descriptor.
fn proc_fd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// chmod a just-created device node or fifo without following a symlink at `name`.
///
/// `fchmodat` has no working no-follow flag before Linux 6.6, so the node is opened with
/// `O_PATH | O_NOFOLLOW`, checked, and changed through its `/proc/self/fd` entry.
fn chmod_node(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let mode = Mode::from_raw_mode(mode);
    if proc_fd_available() {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(Errno::LOOP.into());
        }
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        return Ok(rustix::fs::chmodat(
            CWD,
            p.as_str(),
            mode,
            AtFlags::empty(),
        )?);
    }
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Err(Errno::LOOP.into());
    }
    Ok(rustix::fs::chmodat(dir, name, mode, AtFlags::empty())?)
}
