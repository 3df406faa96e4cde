//! The build cache: for every step that made a layer, its snapshot directory (the overlay
//! upper dir, reused as a lower dir by later steps) and its blob in the image store, both
//! found by the step's cache key.
//!
//! A key chains the parent's key with everything that determines the step's result: the
//! instruction after variable expansion, the environment, the user and working directory,
//! and for COPY/ADD a hash of the sources' paths, modes, owners and contents (not mtimes).

use std::path::{Path, PathBuf};

use image_store::ImageStore;
use oci_core::Digest;
use serde::{Deserialize, Serialize};

use crate::layer::LayerBlob;
use crate::{BuildError, Result};

/// A cached layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedLayer {
    /// Compressed blob digest.
    pub digest: Digest,
    /// Compressed size.
    pub size: u64,
    /// Uncompressed digest.
    pub diff_id: Digest,
    /// Media type it was stored with.
    pub media_type: String,
    /// When the layer was made (history `created`); reused on cache hits so that a fully
    /// cached rebuild produces the same image.
    #[serde(default)]
    pub created: String,
    /// Layer annotations (eStargz).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl CachedLayer {
    /// The blob as the layer writer reports it.
    pub fn blob(&self) -> LayerBlob {
        LayerBlob {
            digest: self.digest.clone(),
            size: self.size,
            diff_id: self.diff_id.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// The cache directory: `entries/<key>.json` and `snapshots/<key>/`.
pub struct BuildCache {
    dir: PathBuf,
}

impl BuildCache {
    /// Open (creating) the cache under `dir`.
    pub fn open(dir: &Path) -> Result<BuildCache> {
        for sub in ["entries", "snapshots", "tmp"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| BuildError::io(&p, e))?;
        }
        Ok(BuildCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The snapshot directory of a key.
    pub fn snapshot(&self, key: &Digest) -> PathBuf {
        self.dir.join("snapshots").join(key.hex())
    }

    /// A scratch directory for a step in progress.
    pub fn tmp_dir(&self, name: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir
            .join("tmp")
            .join(format!("{name}-{}-{n}", std::process::id()))
    }

    /// A cached layer for `key`, if its snapshot and blob are both still there.
    pub fn get(&self, key: &Digest, store: &ImageStore) -> Option<CachedLayer> {
        let bytes =
            std::fs::read(self.dir.join("entries").join(format!("{}.json", key.hex()))).ok()?;
        let entry: CachedLayer = serde_json::from_slice(&bytes).ok()?;
        (store.has_blob(&entry.digest) && self.snapshot(key).is_dir()).then_some(entry)
    }

    /// Record a layer made for `key` whose snapshot is at `snapshot` (moved into the cache).
    pub fn put(&self, key: &Digest, snapshot: &Path, layer: &CachedLayer) -> Result<PathBuf> {
        let dest = self.snapshot(key);
        if dest.exists() {
            // A concurrent build of the same step got there first; its snapshot is equivalent.
            let _ = std::fs::remove_dir_all(snapshot);
        } else {
            std::fs::rename(snapshot, &dest).map_err(|e| BuildError::io(&dest, e))?;
        }
        let entry = self.dir.join("entries").join(format!("{}.json", key.hex()));
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(layer).expect("json"))
            .map_err(|e| BuildError::io(&tmp, e))?;
        std::fs::rename(&tmp, &entry).map_err(|e| BuildError::io(&entry, e))?;
        Ok(dest)
    }

    /// Remove everything. Returns the bytes freed (approximately).
    pub fn prune(&self) -> Result<u64> {
        let freed = dir_size(&self.dir);
        for sub in ["entries", "snapshots", "tmp"] {
            let p = self.dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| BuildError::io(&p, e))?;
            }
            std::fs::create_dir_all(&p).map_err(|e| BuildError::io(&p, e))?;
        }
        Ok(freed)
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.len()
    }
}

/// Chain a parent key with a step description.
pub fn chain(parent: &Digest, step: &str) -> Digest {
    Digest::sha256_of(format!("{parent}\n{step}").as_bytes())
}
