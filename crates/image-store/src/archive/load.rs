//! Reading archives: one streaming pass spills every regular entry to a temporary file in
//! the store (hashing it on the way), then the format's metadata decides what is published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufReader, Read};

use oci_core::manifest::{MANIFEST_MEDIA_TYPES, OCI_MANIFEST, is_non_distributable};
use oci_core::{Descriptor, Digest, ParsedManifest};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::save::{DockerManifestEntry, ImageConfig, to_json};
use super::tarpath::{clean_path, resolve_symlink};
use crate::compress::{Compression, OCI_CONFIG, SNIFF_LEN, read_head};
use crate::error::{IoContext, StoreError};
use crate::fsutil::{copy_large, hash_sink};
use crate::reference::normalize_docker_ref;
use crate::store::{
    ImageStore, IndexFile, MAX_DEPTH, MAX_MANIFEST_SIZE, OciLayout, PendingBlob,
    REF_NAME_ANNOTATION,
};

/// Most entries an archive may have.
pub const MAX_ENTRIES: usize = 65_536;
/// Largest single entry accepted (1 TiB).
pub const MAX_ENTRY_SIZE: u64 = 1 << 40;
/// Most link hops followed when looking an entry up.
const MAX_LINK_HOPS: usize = 16;
/// containerd's full-name annotation (Docker 25+ and `ctr export` write it).
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Entries that are JSON metadata and must be small.
const METADATA_FILES: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];

/// Read an archive stream (docker-archive or oci-archive, optionally gzip/zstd compressed)
/// into the store; returns the reference names set.
pub fn load_from<R: Read>(store: &ImageStore, input: R) -> Result<Vec<String>, StoreError> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let head = read_head(&mut input, SNIFF_LEN).at("archive input")?;
    let compression = Compression::sniff(&head)
        .map_err(|c| StoreError::Unsupported(format!("{c}-compressed archive")))?;
    let reader = compression
        .decoder(io::Cursor::new(head).chain(input))
        .at("archive input")?;
    let spill = Spill::read(store, reader)?;
    if spill.files.contains_key("manifest.json") {
        info!(entries = spill.files.len(), "loading docker-archive");
        load_docker(store, spill)
    } else if spill.files.contains_key("oci-layout") && spill.files.contains_key("index.json") {
        info!(entries = spill.files.len(), "loading oci-archive");
        load_oci(store, spill)
    } else {
        Err(StoreError::InvalidArchive(
            "neither manifest.json (docker-archive) nor oci-layout and index.json (oci-archive)"
                .into(),
        ))
    }
}

/// Every regular entry of an archive, spilled to temporary files; links kept as names.
struct Spill {
    files: HashMap<String, Spilled>,
    links: HashMap<String, String>,
}

/// One spilled entry: not yet published, or already published.
enum Spilled {
    Pending(PendingBlob),
    Committed { digest: Digest, size: u64 },
}

impl Spilled {
    fn digest(&self) -> &Digest {
        match self {
            Spilled::Pending(p) => &p.digest,
            Spilled::Committed { digest, .. } => digest,
        }
    }

    fn size(&self) -> u64 {
        match self {
            Spilled::Pending(p) => p.size,
            Spilled::Committed { size, .. } => *size,
        }
    }
}

impl Spill {
    /// Read every entry of the tar stream `r`.
    fn read(store: &ImageStore, r: impl Read) -> Result<Spill, StoreError> {
        let mut archive = tar::Archive::new(r);
        let mut spill = Spill {
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut count = 0usize;
        for entry in archive.entries().at("archive")? {
            let mut entry = entry.at("archive")?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(StoreError::InvalidArchive(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            let path = clean_path(&entry.path_bytes())?;
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind.is_pax_global_extensions() {
                continue;
            }
            if path.is_empty() {
                return Err(StoreError::UnsafePath(
                    String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                ));
            }
            if spill.files.contains_key(&path) || spill.links.contains_key(&path) {
                return Err(StoreError::InvalidArchive(format!(
                    "duplicate entry {path:?}"
                )));
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    StoreError::InvalidArchive(format!("link {path:?} has no target"))
                })?;
                let resolved = if kind.is_symlink() {
                    resolve_symlink(&path, &target)?
                } else {
                    // Hard-link targets are names in the archive, from its root.
                    clean_path(&target)?
                };
                debug!(link = %path, target = %resolved, "archive link");
                spill.links.insert(path, resolved);
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                return Err(StoreError::InvalidArchive(format!(
                    "entry {path:?} has unsupported type {kind:?}"
                )));
            }
            let size = entry.size();
            if size > MAX_ENTRY_SIZE {
                return Err(StoreError::TooLarge {
                    what: format!("archive entry {path:?}"),
                    max: MAX_ENTRY_SIZE,
                });
            }
            if METADATA_FILES.contains(&path.as_str()) && size > MAX_MANIFEST_SIZE as u64 {
                return Err(StoreError::TooLarge {
                    what: path,
                    max: MAX_MANIFEST_SIZE as u64,
                });
            }
            // Entries named after their digest are verified as they are read.
            let writer = match digest_of_blob_path(&path) {
                Some(d) => store.blob_writer(&d)?,
                None => store.blob_writer_unknown()?,
            };
            let mut writer = writer.expect_size(size);
            copy_large(&mut entry, &mut writer).at(&path)?;
            let pending = writer.finish()?;
            spill.files.insert(path, Spilled::Pending(pending));
        }
        Ok(spill)
    }

    /// The entry at `path`, following links inside the archive.
    fn resolve(&self, path: &str) -> Result<String, StoreError> {
        let mut current = path.to_string();
        for _ in 0..MAX_LINK_HOPS {
            if self.files.contains_key(&current) {
                return Ok(current);
            }
            match self.links.get(&current) {
                Some(next) => current = next.clone(),
                None => {
                    return Err(StoreError::InvalidArchive(format!(
                        "missing entry {path:?}"
                    )));
                }
            }
        }
        Err(StoreError::InvalidArchive(format!(
            "too many links resolving {path:?}"
        )))
    }

    /// The spilled entry at `path` (after links).
    fn get(&self, path: &str) -> Result<&Spilled, StoreError> {
        let p = self.resolve(path)?;
        Ok(&self.files[&p])
    }

    /// Whether `path` names an entry (after links).
    fn contains(&self, path: &str) -> bool {
        self.resolve(path).is_ok()
    }

    /// Read a small entry whole.
    fn read_small(&self, store: &ImageStore, path: &str) -> Result<Vec<u8>, StoreError> {
        let spilled = self.get(path)?;
        if spilled.size() > MAX_MANIFEST_SIZE as u64 {
            return Err(StoreError::TooLarge {
                what: format!("archive entry {path:?}"),
                max: MAX_MANIFEST_SIZE as u64,
            });
        }
        let mut f = self.open(store, path)?;
        let mut data = Vec::with_capacity(spilled.size() as usize);
        f.read_to_end(&mut data).at(path)?;
        Ok(data)
    }

    /// Open an entry for reading (its temporary file, or the blob once published).
    fn open(&self, store: &ImageStore, path: &str) -> Result<std::fs::File, StoreError> {
        match self.get(path)? {
            Spilled::Pending(p) => p.open(),
            Spilled::Committed { digest, .. } => store.open_blob(digest),
        }
    }

    /// Publish the entry at `path` as a blob (once); returns its digest and size.
    fn commit(&mut self, path: &str) -> Result<(Digest, u64), StoreError> {
        let p = self.resolve(path)?;
        let slot = self.files.get_mut(&p).expect("resolved entry exists");
        let (digest, size) = (slot.digest().clone(), slot.size());
        let previous = std::mem::replace(
            slot,
            Spilled::Committed {
                digest: digest.clone(),
                size,
            },
        );
        if let Spilled::Pending(pending) = previous {
            pending.commit()?;
        }
        Ok((digest, size))
    }
}

/// `blobs/<alg>/<hex>` → the digest it claims.
fn digest_of_blob_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// The archive path of a blob.
fn blob_archive_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// An OCI image manifest, as written for docker-archive images.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciManifestOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, data: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(data).map_err(|source| StoreError::Json {
        what: what.to_string(),
        source,
    })
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        urls: None,
        annotations: None,
        artifact_type: None,
        platform: None,
    }
}

fn load_docker(store: &ImageStore, mut spill: Spill) -> Result<Vec<String>, StoreError> {
    let manifest_bytes = spill.read_small(store, "manifest.json")?;
    let entries: Vec<DockerManifestEntry> = parse_json("manifest.json", &manifest_bytes)?;
    if entries.is_empty() {
        return Err(StoreError::InvalidArchive(
            "manifest.json lists no image".into(),
        ));
    }
    // Everything is validated and published before any reference is set.
    let mut images = Vec::new();
    let mut diff_ids_of: HashMap<Digest, Digest> = HashMap::new();
    for entry in &entries {
        let config_path = clean_path(entry.config.as_bytes())?;
        let config_bytes = spill.read_small(store, &config_path)?;
        let config: ImageConfig = parse_json(&entry.config, &config_bytes)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(StoreError::InvalidArchive(format!(
                "{} lists {} layers but its config has {} diff_ids",
                entry.config,
                entry.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let path = clean_path(layer.as_bytes())?;
            let digest = spill.get(&path)?.digest().clone();
            let mut f = spill.open(store, &path)?;
            let head = read_head(&mut f, SNIFF_LEN).at(&path)?;
            let compression = Compression::sniff(&head)
                .map_err(|c| StoreError::Unsupported(format!("{c}-compressed layer {path:?}")))?;
            let actual_diff_id = match compression {
                Compression::None => digest.clone(),
                c => match diff_ids_of.get(&digest) {
                    Some(d) => d.clone(),
                    None => {
                        let f = spill.open(store, &path)?;
                        let mut decoder = c.decoder(f).at(&path)?;
                        let mut sink = hash_sink(diff_id.algorithm());
                        copy_large(&mut decoder, &mut sink).at(&path)?;
                        let (d, _, _) = sink.finish();
                        diff_ids_of.insert(digest.clone(), d.clone());
                        d
                    }
                },
            };
            if &actual_diff_id != diff_id {
                return Err(StoreError::DigestMismatch {
                    expected: diff_id.clone(),
                    actual: actual_diff_id,
                });
            }
            let (digest, size) = spill.commit(&path)?;
            layers.push(descriptor(compression.oci_layer_media_type(), digest, size));
        }
        let (config_digest, config_size) = spill.commit(&config_path)?;
        let config_desc = descriptor(OCI_CONFIG, config_digest, config_size);
        let manifest = to_json(
            "image manifest",
            &OciManifestOut {
                schema_version: 2,
                media_type: OCI_MANIFEST,
                config: &config_desc,
                layers: &layers,
            },
        )?;
        let digest = store.put_blob(&manifest)?;
        let mut desc = descriptor(OCI_MANIFEST, digest, manifest.len() as u64);
        if let (Some(os), Some(arch)) = (&config.os, &config.architecture) {
            desc.platform = Some(oci_core::Platform {
                os: os.clone(),
                architecture: arch.clone(),
                ..oci_core::Platform::default()
            });
        }
        let tags = entry
            .repo_tags
            .iter()
            .flatten()
            .map(|t| normalize_docker_ref(t))
            .collect::<Result<Vec<_>, _>>()?;
        images.push((desc, tags));
    }
    let mut names = Vec::new();
    for (desc, tags) in images {
        if tags.is_empty() {
            store.add_untagged(desc.clone())?;
            names.push(desc.digest.to_string());
        }
        for tag in tags {
            store.set_ref(&tag, desc.clone())?;
            names.push(tag);
        }
    }
    info!(?names, "docker-archive loaded");
    Ok(names)
}

fn load_oci(store: &ImageStore, mut spill: Spill) -> Result<Vec<String>, StoreError> {
    let layout: OciLayout = parse_json("oci-layout", &spill.read_small(store, "oci-layout")?)?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(StoreError::Unsupported(format!(
            "imageLayoutVersion {:?}",
            layout.image_layout_version
        )));
    }
    let index: IndexFile = parse_json("index.json", &spill.read_small(store, "index.json")?)?;
    // Walk from every top-level descriptor, checking each blob against its descriptor.
    let mut to_commit: Vec<String> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut stack: Vec<(Descriptor, usize, bool)> = index
        .manifests
        .iter()
        .map(|d| (d.clone(), 0, true))
        .collect();
    while let Some((desc, depth, required)) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        let path = blob_archive_path(&desc.digest);
        if !spill.contains(&path) {
            if is_non_distributable(&desc.media_type) {
                continue;
            }
            if !required {
                warn!(digest = %desc.digest, "index child missing from archive; skipped");
                continue;
            }
            return Err(StoreError::InvalidArchive(format!(
                "blob {} is missing",
                desc.digest
            )));
        }
        let spilled = spill.get(&path)?;
        if spilled.digest() != &desc.digest {
            return Err(StoreError::DigestMismatch {
                expected: desc.digest.clone(),
                actual: spilled.digest().clone(),
            });
        }
        if spilled.size() != desc.size {
            return Err(StoreError::SizeMismatch {
                what: format!("blob {}", desc.digest),
                expected: desc.size,
                actual: spilled.size(),
            });
        }
        if MANIFEST_MEDIA_TYPES.contains(&desc.media_type.as_str()) {
            if depth >= MAX_DEPTH {
                return Err(StoreError::InvalidArchive(format!(
                    "manifests nested deeper than {MAX_DEPTH}"
                )));
            }
            let body = spill.read_small(store, &path)?;
            let parsed =
                ParsedManifest::parse(&body, Some(&desc.media_type)).map_err(|source| {
                    StoreError::Manifest {
                        digest: desc.digest.clone(),
                        source,
                    }
                })?;
            let children_required = !parsed.is_index();
            for child in parsed
                .config
                .into_iter()
                .chain(parsed.layers)
                .chain(parsed.manifests)
            {
                stack.push((child, depth + 1, children_required));
            }
        }
        to_commit.push(path);
    }
    for path in &to_commit {
        spill.commit(path)?;
    }
    let mut names = Vec::new();
    for desc in index.manifests {
        let annotations = desc.annotations.clone().unwrap_or_default();
        let name = annotations
            .get(CONTAINERD_NAME_ANNOTATION)
            .or_else(|| annotations.get(REF_NAME_ANNOTATION))
            .cloned();
        let mut entry = desc;
        let mut rest: BTreeMap<String, String> = annotations;
        rest.remove(REF_NAME_ANNOTATION);
        entry.annotations = (!rest.is_empty()).then_some(rest);
        match name {
            Some(name) => {
                store.set_ref(&name, entry)?;
                names.push(name);
            }
            None => {
                names.push(entry.digest.to_string());
                store.add_untagged(entry)?;
            }
        }
    }
    info!(?names, blobs = to_commit.len(), "oci-archive loaded");
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(digest_of_blob_path(&blob_archive_path(&d)), Some(d));
        assert_eq!(digest_of_blob_path("blobs/sha256/zz"), None);
        assert_eq!(digest_of_blob_path("manifest.json"), None);
    }
}
