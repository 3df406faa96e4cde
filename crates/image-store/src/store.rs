//! The store itself: an OCI image layout with atomic blob writes and a locked `index.json`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_core::manifest::{MANIFEST_MEDIA_TYPES, OCI_INDEX, is_index};
use oci_core::{Algorithm, Descriptor, Digest, Hasher, ParsedManifest};
use serde::{Deserialize, Serialize};
use tempfile::TempPath;
use tracing::{debug, info, warn};

use crate::error::{IoContext, StoreError};
use crate::fsutil::fsync_dir;

/// Annotation that names a top-level manifest in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Largest manifest, index or config accepted (as registries do).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Largest `index.json` of the store itself.
const MAX_STORE_INDEX_SIZE: u64 = 64 << 20;
/// Deepest nesting of indexes followed.
pub(crate) const MAX_DEPTH: usize = 8;
/// Longest reference name accepted.
const MAX_NAME_LEN: usize = 1024;
/// Contents of the `oci-layout` file.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// How long a freshly written blob is safe from gc even if nothing references it.
pub const DEFAULT_BLOB_GRACE: Duration = Duration::from_secs(10 * 60);
/// How old a temporary file must be before gc deletes it.
pub const DEFAULT_TEMP_GRACE: Duration = Duration::from_secs(60 * 60);

/// An OCI image layout on disk, shared safely by threads and processes.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    tmp: PathBuf,
}

/// The store's `index.json`, with unknown fields kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexFile {
    pub(crate) schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    #[serde(default)]
    pub(crate) manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

impl IndexFile {
    /// An index with no manifests.
    pub(crate) fn empty() -> IndexFile {
        IndexFile {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: Vec::new(),
            extra: serde_json::Map::new(),
        }
    }
}

/// The `oci-layout` file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OciLayout {
    pub(crate) image_layout_version: String,
}

/// The reference name of an index entry, if it has one.
pub fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Blobs reachable from `index.json`.
    pub blobs_kept: usize,
    /// Unreachable blobs kept because they are younger than the grace period.
    pub blobs_in_grace: usize,
    /// Unreachable blobs deleted.
    pub blobs_removed: usize,
    /// Bytes freed by deleting blobs.
    pub bytes_freed: u64,
    /// Stale temporary files deleted.
    pub temp_files_removed: usize,
}

/// Tunables of [`ImageStore::gc_with`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreachable blobs younger than this are kept (another process may be about to reference them).
    pub blob_grace: Duration,
    /// Temporary files younger than this are kept (another process may be writing them).
    pub temp_grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            blob_grace: DEFAULT_BLOB_GRACE,
            temp_grace: DEFAULT_TEMP_GRACE,
        }
    }
}

/// Exclusive `flock` on `<root>/index.lock`, released on drop.
struct IndexLock {
    _file: File,
}

impl ImageStore {
    /// Open the store at `root`, creating the layout (`oci-layout`, `index.json`, `blobs/sha256`) if needed.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
        };
        let blobs = store.algorithm_dir(Algorithm::Sha256);
        fs::create_dir_all(&blobs).at(&blobs)?;
        fs::create_dir_all(&store.tmp).at(&store.tmp)?;
        let _lock = store.lock()?;
        let layout = root.join("oci-layout");
        match fs::read(&layout) {
            Ok(bytes) => {
                let parsed: OciLayout = serde_json::from_slice(&bytes)
                    .map_err(|e| store.corrupt(format!("oci-layout: {e}")))?;
                if !parsed.image_layout_version.starts_with("1.") {
                    return Err(store.corrupt(format!(
                        "unsupported imageLayoutVersion {:?}",
                        parsed.image_layout_version
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                store.write_atomic(&layout, OCI_LAYOUT)?;
            }
            Err(e) => return Err(StoreError::io(&layout, e)),
        }
        let index = store.index_path();
        if !index.exists() {
            store.write_index(&IndexFile::empty())?;
            info!(root = %root.display(), "created image store");
        } else {
            store.read_index()?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with digest `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.algorithm_dir(d.algorithm()).join(d.hex())
    }

    /// Whether the blob is in the store.
    pub fn has_blob(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(d)).is_ok_and(|m| m.is_file())
    }

    /// Start writing a blob that must hash to `expected`; nothing is visible until [`BlobWriter::commit`].
    pub fn blob_writer(&self, expected: &Digest) -> Result<BlobWriter, StoreError> {
        self.new_writer(Some(expected.clone()), expected.algorithm())
    }

    /// Start writing a blob whose sha256 digest is learned at [`BlobWriter::commit`].
    pub fn blob_writer_unknown(&self) -> Result<BlobWriter, StoreError> {
        self.new_writer(None, Algorithm::Sha256)
    }

    /// Store a small blob (manifest, config) and return its sha256 digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::sha256_of(data);
        if self.has_blob(&digest) {
            self.touch_blob(&digest);
            return Ok(digest);
        }
        let mut w = self.blob_writer(&digest)?.expect_size(data.len() as u64);
        w.write_all(data).at(self.blob_path(&digest))?;
        w.commit()?;
        Ok(digest)
    }

    /// Open a blob for reading (the caller verifies the content if it needs to).
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(d);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound(d.clone()))
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Read a small blob whole, refusing more than `max` bytes, and verify its digest.
    pub fn read_blob(&self, d: &Digest, max: usize) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let f = self.open_blob(d)?;
        let len = f.metadata().at(&path)?.len();
        if len > max as u64 {
            return Err(StoreError::TooLarge {
                what: format!("blob {d}"),
                max: max as u64,
            });
        }
        let mut data = Vec::with_capacity(len as usize);
        f.take(max as u64 + 1).read_to_end(&mut data).at(&path)?;
        if data.len() > max {
            return Err(StoreError::TooLarge {
                what: format!("blob {d}"),
                max: max as u64,
            });
        }
        let actual = Digest::of(d.algorithm(), &data);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Point `name` (an opaque reference such as `localhost:5000/app:1`) at `desc`, replacing
    /// any entry of that name. The manifest (and, for an image manifest, its config and layers)
    /// must be in the store.
    pub fn set_ref(&self, name: &str, desc: Descriptor) -> Result<(), StoreError> {
        validate_name(name)?;
        let _lock = self.lock()?;
        // Checked under the lock: gc holds it too, so what is checked here stays until the
        // entry is written, and from then on it is reachable.
        self.check_complete(&desc)?;
        let mut index = self.read_index()?;
        let mut entry = desc;
        entry
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
        let pos = index
            .manifests
            .iter()
            .position(|m| ref_name(m) == Some(name));
        let digest = entry.digest.clone();
        match pos {
            Some(i) => index.manifests[i] = entry,
            None => index.manifests.push(entry),
        }
        let mut seen = false;
        index.manifests.retain(|m| match ref_name(m) {
            Some(n) if n == name => !std::mem::replace(&mut seen, true),
            Some(_) => true,
            // An unnamed entry for the same manifest is now redundant.
            None => m.digest != digest,
        });
        self.write_index(&index)?;
        info!(name, %digest, "reference set");
        Ok(())
    }

    /// Keep `desc` as an unnamed top-level entry (reachable, resolvable by digest); no-op if
    /// the digest is already at the top level.
    pub fn add_untagged(&self, desc: Descriptor) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        self.check_complete(&desc)?;
        let mut index = self.read_index()?;
        if index.manifests.iter().any(|m| m.digest == desc.digest) {
            return Ok(());
        }
        let mut entry = desc;
        if let Some(a) = entry.annotations.as_mut() {
            a.remove(REF_NAME_ANNOTATION);
        }
        let digest = entry.digest.clone();
        index.manifests.push(entry);
        self.write_index(&index)?;
        info!(%digest, "untagged manifest kept");
        Ok(())
    }

    /// The descriptor `name` points at; `name` may also be a digest (`sha256:...`) of a
    /// top-level manifest.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let index = self.read_index()?;
        if let Some(d) = index.manifests.iter().find(|m| ref_name(m) == Some(name)) {
            return Ok(Some(d.clone()));
        }
        if let Ok(digest) = name.parse::<Digest>() {
            return Ok(index.manifests.into_iter().find(|m| m.digest == digest));
        }
        Ok(None)
    }

    /// Every named entry, in `index.json` order.
    pub fn list(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|m| ref_name(&m).map(str::to_string).map(|n| (n, m)))
            .collect())
    }

    /// Remove the entry named `name` (or, for a digest, the unnamed entries of that digest);
    /// returns whether anything was removed. Blobs go with the next [`gc`](Self::gc).
    pub fn remove_ref(&self, name: &str) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        match name.parse::<Digest>() {
            Ok(d) => index
                .manifests
                .retain(|m| !(ref_name(m).is_none() && m.digest == d)),
            Err(_) => index.manifests.retain(|m| ref_name(m) != Some(name)),
        }
        if index.manifests.len() == before {
            return Ok(false);
        }
        self.write_index(&index)?;
        info!(name, "reference removed");
        Ok(true)
    }

    /// Delete blobs not reachable from `index.json` and stale temporary files, with the
    /// default grace periods (10 minutes for blobs, 1 hour for temporary files).
    pub fn gc(&self) -> Result<GcStats, StoreError> {
        self.gc_with(&GcOptions::default())
    }

    /// [`gc`](Self::gc) with explicit grace periods.
    pub fn gc_with(&self, opts: &GcOptions) -> Result<GcStats, StoreError> {
        let _lock = self.lock()?;
        let index = self.read_index()?;
        let reachable = self.reachable(&index.manifests)?;
        let mut stats = GcStats::default();
        let now = SystemTime::now();
        let old_enough = |path: &Path, meta: &fs::Metadata, grace: Duration| -> bool {
            match meta.modified() {
                Ok(m) => now.duration_since(m).is_ok_and(|age| age >= grace),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "no mtime; kept");
                    false
                }
            }
        };
        let blobs = self.root.join("blobs");
        for alg_entry in fs::read_dir(&blobs).at(&blobs)? {
            let alg_entry = alg_entry.at(&blobs)?;
            let alg_dir = alg_entry.path();
            let Some(alg) = alg_entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !alg_entry.file_type().at(&alg_dir)?.is_dir() {
                continue;
            }
            let mut removed_here = false;
            for entry in fs::read_dir(&alg_dir).at(&alg_dir)? {
                let entry = entry.at(&alg_dir)?;
                let path = entry.path();
                let Some(hex) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
                    debug!(path = %path.display(), "not a blob name; left alone");
                    continue;
                };
                if reachable.contains(&digest) {
                    stats.blobs_kept += 1;
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(&path, e)),
                };
                if !meta.is_file() {
                    continue;
                }
                if !old_enough(&path, &meta, opts.blob_grace) {
                    stats.blobs_in_grace += 1;
                    continue;
                }
                match fs::remove_file(&path) {
                    Ok(()) => {
                        debug!(%digest, size = meta.len(), "gc removed blob");
                        stats.blobs_removed += 1;
                        stats.bytes_freed += meta.len();
                        removed_here = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&path, e)),
                }
            }
            if removed_here {
                fsync_dir(&alg_dir)?;
            }
        }
        for entry in fs::read_dir(&self.tmp).at(&self.tmp)? {
            let entry = entry.at(&self.tmp)?;
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && old_enough(&path, &meta, opts.temp_grace) {
                match fs::remove_file(&path) {
                    Ok(()) => stats.temp_files_removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&path, e)),
                }
            }
        }
        info!(
            kept = stats.blobs_kept,
            removed = stats.blobs_removed,
            in_grace = stats.blobs_in_grace,
            bytes_freed = stats.bytes_freed,
            temp_removed = stats.temp_files_removed,
            "gc done"
        );
        Ok(stats)
    }

    /// Every digest reachable from `roots` (manifests, configs, layers, index children).
    /// A manifest that cannot be read or parsed aborts: deleting blobs it may reference
    /// would be worse than keeping garbage.
    fn reachable(&self, roots: &[Descriptor]) -> Result<HashSet<Digest>, StoreError> {
        let mut seen = HashSet::new();
        let mut stack: Vec<(Descriptor, usize)> = roots.iter().map(|d| (d.clone(), 0)).collect();
        while let Some((desc, depth)) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            if !MANIFEST_MEDIA_TYPES.contains(&desc.media_type.as_str()) {
                continue;
            }
            if !self.has_blob(&desc.digest) {
                debug!(digest = %desc.digest, "referenced manifest missing");
                continue;
            }
            if depth >= MAX_DEPTH {
                return Err(self.corrupt(format!("manifests nested deeper than {MAX_DEPTH}")));
            }
            let parsed = self.read_manifest(&desc)?;
            let children = parsed
                .config
                .into_iter()
                .chain(parsed.layers)
                .chain(parsed.manifests)
                .chain(parsed.subject);
            stack.extend(children.map(|c| (c, depth + 1)));
        }
        Ok(seen)
    }

    /// Read and parse the manifest `desc` points at (capped, digest verified).
    pub(crate) fn read_manifest(&self, desc: &Descriptor) -> Result<ParsedManifest, StoreError> {
        let body = self.read_blob(&desc.digest, MAX_MANIFEST_SIZE)?;
        if body.len() as u64 != desc.size {
            return Err(StoreError::SizeMismatch {
                what: format!("manifest {}", desc.digest),
                expected: desc.size,
                actual: body.len() as u64,
            });
        }
        ParsedManifest::parse(&body, Some(&desc.media_type)).map_err(|source| {
            StoreError::Manifest {
                digest: desc.digest.clone(),
                source,
            }
        })
    }

    /// Whether `desc` can be referenced: its blob exists with the right size, and for an
    /// image manifest so do its config and (distributable) layers.
    fn check_complete(&self, desc: &Descriptor) -> Result<(), StoreError> {
        let size = self.blob_size(&desc.digest)?;
        if size != desc.size {
            return Err(StoreError::SizeMismatch {
                what: format!("blob {}", desc.digest),
                expected: desc.size,
                actual: size,
            });
        }
        if !MANIFEST_MEDIA_TYPES.contains(&desc.media_type.as_str()) || is_index(&desc.media_type) {
            return Ok(());
        }
        let parsed = self.read_manifest(desc)?;
        for child in parsed.required_blobs() {
            let size = self.blob_size(&child.digest)?;
            if size != child.size {
                return Err(StoreError::SizeMismatch {
                    what: format!("blob {}", child.digest),
                    expected: child.size,
                    actual: size,
                });
            }
        }
        Ok(())
    }

    /// Size of a stored blob.
    pub(crate) fn blob_size(&self, d: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(d);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound(d.clone()))
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Bump a blob's mtime so a concurrent gc treats it as fresh.
    fn touch_blob(&self, d: &Digest) {
        let path = self.blob_path(d);
        if let Err(e) = File::open(&path).and_then(|f| f.set_modified(SystemTime::now())) {
            warn!(path = %path.display(), error = %e, "could not refresh blob mtime");
        }
    }

    fn new_writer(
        &self,
        expected: Option<Digest>,
        alg: Algorithm,
    ) -> Result<BlobWriter, StoreError> {
        let (file, temp) = self.temp_file()?.into_parts();
        Ok(BlobWriter {
            file: BufWriter::with_capacity(crate::fsutil::COPY_BUF, file),
            temp,
            hasher: alg.hasher(),
            written: 0,
            expected,
            expected_size: None,
            max_size: None,
            store: self.clone(),
        })
    }

    /// A new temporary file inside the store (same filesystem as the blobs), mode 0644.
    pub(crate) fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(Permissions::from_mode(0o644))
            .tempfile_in(&self.tmp)
            .at(&self.tmp)
    }

    /// Write a small file atomically: temp file, fsync, rename, fsync the directory.
    fn write_atomic(&self, target: &Path, data: &[u8]) -> Result<(), StoreError> {
        let mut tmp = self.temp_file()?;
        tmp.write_all(data).at(tmp.path())?;
        tmp.as_file().sync_all().at(tmp.path())?;
        tmp.persist(target)
            .map_err(|e| StoreError::io(target, e.error))?;
        fsync_dir(target.parent().unwrap_or(&self.root))
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub(crate) fn read_index(&self) -> Result<IndexFile, StoreError> {
        let path = self.index_path();
        let f = File::open(&path).at(&path)?;
        let mut data = Vec::new();
        f.take(MAX_STORE_INDEX_SIZE + 1)
            .read_to_end(&mut data)
            .at(&path)?;
        if data.len() as u64 > MAX_STORE_INDEX_SIZE {
            return Err(StoreError::TooLarge {
                what: path.display().to_string(),
                max: MAX_STORE_INDEX_SIZE,
            });
        }
        serde_json::from_slice(&data).map_err(|e| self.corrupt(format!("index.json: {e}")))
    }

    fn write_index(&self, index: &IndexFile) -> Result<(), StoreError> {
        let mut index = index.clone();
        index.schema_version = 2;
        index.media_type = Some(OCI_INDEX.to_string());
        let data = serde_json::to_vec(&index).map_err(|source| StoreError::Json {
            what: "index.json".into(),
            source,
        })?;
        self.write_atomic(&self.index_path(), &data)
    }

    fn lock(&self) -> Result<IndexLock, StoreError> {
        let path = self.root.join("index.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        loop {
            match file.lock() {
                Ok(()) => return Ok(IndexLock { _file: file }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
    }

    fn algorithm_dir(&self, alg: Algorithm) -> PathBuf {
        self.root.join("blobs").join(alg.as_str())
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            root: self.root.clone(),
            reason,
        }
    }
}

/// Whether a reference name can be stored: non-empty, at most 1024 bytes, no whitespace or
/// control characters, and not a digest (digests resolve top-level manifests).
fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
        && name.parse::<Digest>().is_err();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_string()))
    }
}

/// A blob being written to a temporary file in the store; [`commit`](Self::commit) verifies
/// and publishes it, dropping it uncommitted deletes the temporary file.
pub struct BlobWriter {
    file: BufWriter<File>,
    temp: TempPath,
    hasher: Hasher,
    written: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    max_size: Option<u64>,
    store: ImageStore,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.temp.to_path_buf())
            .field("written", &self.written)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// Require exactly `size` bytes: writing more fails at once, fewer fails at commit.
    pub fn expect_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// Refuse more than `max` bytes (for content of unknown size from untrusted sources).
    pub fn max_size(mut self, max: u64) -> Self {
        self.max_size = Some(max);
        self
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verify size and digest, then publish the blob (fsync, rename, fsync directory);
    /// returns its digest and size. On error nothing is left behind.
    pub fn commit(self) -> Result<(Digest, u64), StoreError> {
        let pending = self.finish()?;
        let out = (pending.digest.clone(), pending.size);
        pending.commit()?;
        Ok(out)
    }

    /// Finish writing and verify, without publishing yet (the file is closed; the
    /// temporary file is deleted if the result is dropped).
    pub(crate) fn finish(self) -> Result<PendingBlob, StoreError> {
        let BlobWriter {
            file,
            temp,
            hasher,
            written,
            expected,
            expected_size,
            store,
            ..
        } = self;
        file.into_inner()
            .map_err(|e| StoreError::io(&temp, e.into_error()))?;
        let actual = hasher.finish();
        if let Some(size) = expected_size
            && size != written
        {
            return Err(StoreError::SizeMismatch {
                what: format!("blob {}", expected.as_ref().unwrap_or(&actual)),
                expected: size,
                actual: written,
            });
        }
        if let Some(expected) = expected
            && expected != actual
        {
            warn!(%expected, %actual, "blob digest mismatch; discarded");
            return Err(StoreError::DigestMismatch { expected, actual });
        }
        Ok(PendingBlob {
            temp,
            digest: actual,
            size: written,
            store,
        })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let limit = match (self.expected_size, self.max_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(limit) = limit
            && self.written + buf.len() as u64 > limit
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob exceeds its {limit}-byte size"),
            ));
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A fully written and hashed temporary file, not yet published.
pub(crate) struct PendingBlob {
    temp: TempPath,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    store: ImageStore,
}

impl PendingBlob {
    /// Open the temporary file for reading.
    pub(crate) fn open(&self) -> Result<File, StoreError> {
        File::open(&self.temp).at(&self.temp)
    }

    /// Fsync, rename into `blobs/`, fsync the directory. The mtime is set to now first, so
    /// gc's grace period counts from publication (a spilled file may have been written long
    /// before); renaming over an existing copy is fine (same bytes).
    pub(crate) fn commit(self) -> Result<(), StoreError> {
        File::open(&self.temp)
            .and_then(|f| {
                f.set_modified(SystemTime::now())?;
                f.sync_all()
            })
            .at(&self.temp)?;
        let target = self.store.blob_path(&self.digest);
        let dir = target
            .parent()
            .expect("blob path has a parent")
            .to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        self.temp
            .persist(&target)
            .map_err(|e| StoreError::io(&target, e.error))?;
        fsync_dir(&dir)?;
        debug!(digest = %self.digest, size = self.size, "blob committed");
        Ok(())
    }
}
