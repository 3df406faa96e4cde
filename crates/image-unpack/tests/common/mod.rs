//! Helpers shared by the integration tests: synthetic layers and an outside-root sentinel.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use image_unpack::{Compression, LayerStats, UnpackError, UnpackOptions};
use sha2::Digest as _;
use tar::{EntryType, Header};

/// Default mtime of synthetic entries.
pub const MTIME: u64 = 1_600_000_000;

/// A layer tar built in memory.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: EntryType, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// A regular file.
    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        self.file_with(path, data, mode, MTIME, 0, 0)
    }

    /// A regular file with explicit mtime and owner.
    pub fn file_with(
        mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        mtime: u64,
        uid: u64,
        gid: u64,
    ) -> Self {
        let mut h = header(EntryType::Regular, mode);
        h.set_size(data.len() as u64);
        h.set_mtime(mtime);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A directory.
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_with(path, mode, MTIME, 0, 0)
    }

    /// A directory with explicit mtime and owner.
    pub fn dir_with(mut self, path: &str, mode: u32, mtime: u64, uid: u64, gid: u64) -> Self {
        let mut h = header(EntryType::Directory, mode);
        h.set_mtime(mtime);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// A symlink (the target may be anything, `..` and absolute included).
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.symlink_owned(path, target, 0, 0)
    }

    /// A symlink with an owner.
    pub fn symlink_owned(mut self, path: &str, target: &str, uid: u64, gid: u64) -> Self {
        let mut h = header(EntryType::Symlink, 0o777);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A hard link to `target` (an archive path).
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(EntryType::Link, 0o644);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A character (`'3'`) or block (`'4'`) device, or a fifo (`'6'`).
    pub fn node(mut self, path: &str, kind: EntryType, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = header(kind, mode);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// A PAX extended header for the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    /// An entry whose name and link name are written verbatim (no validation by the tar crate).
    pub fn raw(mut self, name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) -> Self {
        let mut h = header(kind, 0o644);
        if kind == EntryType::Directory {
            h.set_mode(0o755);
        }
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        assert!(name.len() <= old.name.len() && link.len() <= old.linkname.len());
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    /// A raw header (checksum set) followed by `data` as is.
    pub fn raw_header(mut self, h: &Header, data: &[u8]) -> Self {
        self.b.get_mut().extend_from_slice(h.as_bytes());
        let b = self.b.get_mut();
        b.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        b.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// The finished, uncompressed tar stream.
    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => gzip(data),
        Compression::Zstd => zstd(data),
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Options used by most tests: everything the process is allowed to do.
pub fn opts() -> UnpackOptions {
    UnpackOptions::default()
}

/// Apply an uncompressed tar, compressed as `c` first.
pub fn apply(root: &Path, tar: &[u8], c: Compression) -> Result<LayerStats, UnpackError> {
    apply_with(root, tar, c, &opts())
}

pub fn apply_with(
    root: &Path,
    tar: &[u8],
    c: Compression,
    o: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let blob = compress(tar, c);
    image_unpack::apply_layer(&blob[..], c, root, o)
}

pub fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

pub fn read(p: &Path) -> String {
    String::from_utf8(std::fs::read(p).unwrap()).unwrap()
}

/// A temp dir holding `root/` (where layers go) and `outside/` (a sentinel tree beside it).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub outside: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir_all(outside.join("dir/sub")).unwrap();
        std::fs::write(outside.join("file"), b"precious").unwrap();
        std::fs::write(outside.join("dir/sub/deep"), b"precious too").unwrap();
        std::os::unix::fs::symlink("file", outside.join("link")).unwrap();
        std::fs::set_permissions(
            outside.join("file"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        // Distinct, old times so that any touch shows.
        for p in ["file", "dir/sub/deep", "dir/sub", "dir", ""] {
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
            std::fs::File::open(outside.join(p))
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
                .unwrap();
        }
        let mut s = Sandbox {
            dir,
            root,
            outside,
            before: BTreeMap::new(),
        };
        s.before = s.snapshot();
        s
    }

    /// Everything in the temp dir except `root/`: type, mode, owner, links, times, content.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let top = self.dir.path();
        let mut stack = vec![top.to_path_buf()];
        while let Some(p) = stack.pop() {
            if p == self.root {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else if ft.is_file() {
                format!("file {}", sha256_hex(&std::fs::read(&p).unwrap()))
            } else if ft.is_dir() {
                for e in std::fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
                "dir".to_string()
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                "special".to_string()
            } else {
                "other".to_string()
            };
            let desc = format!(
                "{what} mode={:o} uid={} gid={} nlink={} mtime={}.{} size={}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.mtime(),
                m.mtime_nsec(),
                if ft.is_dir() { 0 } else { m.size() }
            );
            out.insert(p.strip_prefix(top).unwrap().to_path_buf(), desc);
        }
        out
    }

    /// Assert that nothing outside `root/` changed.
    pub fn check(&self) {
        let after = self.snapshot();
        assert_eq!(self.before, after, "something outside the root changed");
    }

    /// `outside` as a path inside the root (for absolute symlinks resolved in root).
    pub fn outside_in_root(&self) -> PathBuf {
        self.root.join(self.outside.strip_prefix("/").unwrap())
    }
}
