//! Writing archives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

use oci_core::manifest::{MANIFEST_MEDIA_TYPES, OCI_INDEX, is_index, is_non_distributable};
use oci_core::{Descriptor, Digest};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{ArchiveFormat, append_dir, append_file};
use crate::compress::{Compression, SNIFF_LEN, read_head};
use crate::error::{IoContext, StoreError};
use crate::fsutil::{HashingReader, HashingWriter, copy_large};
use crate::reference::docker_repo_tag;
use crate::store::{ImageStore, IndexFile, MAX_DEPTH, MAX_MANIFEST_SIZE, REF_NAME_ANNOTATION};

/// One image in a docker-archive `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub(crate) config: String,
    #[serde(rename = "RepoTags", default)]
    pub(crate) repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub(crate) layers: Vec<String>,
}

/// The parts of an image config this crate reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub(crate) architecture: Option<String>,
    #[serde(default)]
    pub(crate) os: Option<String>,
    pub(crate) rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub(crate) diff_ids: Vec<Digest>,
}

/// Write the images named by `refs` as an archive to `w`; returns `w` once the archive is complete.
pub fn save_to<W: Write>(
    store: &ImageStore,
    refs: &[String],
    format: ArchiveFormat,
    w: W,
) -> Result<W, StoreError> {
    if refs.is_empty() {
        return Err(StoreError::InvalidArchive("no image to save".into()));
    }
    let mut builder = tar::Builder::new(w);
    match format {
        ArchiveFormat::Docker => save_docker(store, refs, &mut builder)?,
        ArchiveFormat::Oci => save_oci(store, refs, &mut builder)?,
    }
    builder.into_inner().at("archive output")
}

/// The descriptor a reference or digest names, or `RefNotFound`.
fn resolve(store: &ImageStore, name: &str) -> Result<Descriptor, StoreError> {
    store
        .resolve(name)?
        .ok_or_else(|| StoreError::RefNotFound(name.to_string()))
}

/// Whether an index entry is an attestation or other non-image entry (BuildKit writes
/// `unknown/unknown` platforms for them).
fn is_attestation(d: &Descriptor) -> bool {
    let annotated = d
        .annotations
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some();
    annotated || platform_field(d, "os") == Some("unknown")
}

fn platform_field<'a>(d: &'a Descriptor, field: &str) -> Option<&'a str> {
    let p = d.platform.as_ref()?;
    match field {
        "os" => Some(&p.os),
        "architecture" => Some(&p.architecture),
        _ => None,
    }
}

/// Follow indexes down to one image manifest: linux/amd64, or the only image.
fn pick_image(store: &ImageStore, top: &Descriptor) -> Result<Descriptor, StoreError> {
    let mut desc = top.clone();
    for _ in 0..MAX_DEPTH {
        if !is_index(&desc.media_type) {
            return Ok(desc);
        }
        let index = store.read_manifest(&desc)?;
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|m| !is_attestation(m))
            .collect();
        let chosen = candidates
            .iter()
            .find(|m| {
                platform_field(m, "os") == Some("linux")
                    && platform_field(m, "architecture") == Some("amd64")
            })
            .or(if candidates.len() == 1 {
                candidates.first()
            } else {
                None
            })
            .ok_or_else(|| {
                StoreError::Unsupported(format!(
                    "index {} has no linux/amd64 image manifest",
                    desc.digest
                ))
            })?;
        debug!(index = %desc.digest, chosen = %chosen.digest, "picked image from index");
        desc = (*chosen).clone();
    }
    Err(StoreError::Unsupported(format!(
        "indexes nested deeper than {MAX_DEPTH}"
    )))
}

/// One image of a docker-archive being written.
struct DockerImage {
    config_file: String,
    layer_files: Vec<String>,
    repo_tags: Vec<String>,
}

fn save_docker<W: Write>(
    store: &ImageStore,
    refs: &[String],
    builder: &mut tar::Builder<W>,
) -> Result<(), StoreError> {
    let mut images: Vec<DockerImage> = Vec::new();
    let mut by_config: HashMap<Digest, usize> = HashMap::new();
    let mut layers_written: HashSet<Digest> = HashSet::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for name in refs {
        let top = resolve(store, name)?;
        let image = pick_image(store, &top)?;
        let manifest = store.read_manifest(&image)?;
        let config_desc = manifest
            .config
            .as_ref()
            .ok_or_else(|| StoreError::Unsupported(format!("{} has no config", image.digest)))?;
        let tag = docker_repo_tag(name);
        let idx = match by_config.get(&config_desc.digest) {
            Some(&i) => i,
            None => {
                let config_bytes = store.read_blob(&config_desc.digest, MAX_MANIFEST_SIZE)?;
                if config_bytes.len() as u64 != config_desc.size {
                    return Err(StoreError::SizeMismatch {
                        what: format!("config {}", config_desc.digest),
                        expected: config_desc.size,
                        actual: config_bytes.len() as u64,
                    });
                }
                let config: ImageConfig =
                    serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
                        what: format!("config {}", config_desc.digest),
                        source,
                    })?;
                if config.rootfs.diff_ids.len() != manifest.layers.len() {
                    return Err(StoreError::Unsupported(format!(
                        "image {} has {} layers but {} diff_ids",
                        image.digest,
                        manifest.layers.len(),
                        config.rootfs.diff_ids.len()
                    )));
                }
                let config_file = format!("{}.json", config_desc.digest.hex());
                append_file(
                    builder,
                    &config_file,
                    config_bytes.len() as u64,
                    &config_bytes[..],
                )
                .at(&config_file)?;
                let mut layer_files = Vec::new();
                for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
                    if is_non_distributable(&layer.media_type) {
                        return Err(StoreError::Unsupported(format!(
                            "non-distributable layer {} cannot be saved",
                            layer.digest
                        )));
                    }
                    let dir = diff_id.hex().to_string();
                    let path = format!("{dir}/layer.tar");
                    if layers_written.insert(diff_id.clone()) {
                        append_dir(builder, &dir).at(&dir)?;
                        write_docker_layer(store, builder, layer, diff_id, &path)?;
                    }
                    layer_files.push(path);
                }
                images.push(DockerImage {
                    config_file,
                    layer_files,
                    repo_tags: Vec::new(),
                });
                by_config.insert(config_desc.digest.clone(), images.len() - 1);
                images.len() - 1
            }
        };
        match tag {
            Some(tag) => {
                let img = &mut images[idx];
                if !img.repo_tags.contains(&tag) {
                    img.repo_tags.push(tag.clone());
                }
                if let (Some((repo, t)), Some(top_layer)) =
                    (tag.rsplit_once(':'), img.layer_files.last())
                {
                    let id = top_layer.trim_end_matches("/layer.tar").to_string();
                    repositories
                        .entry(repo.to_string())
                        .or_default()
                        .insert(t.to_string(), id);
                }
            }
            None => warn!(
                name,
                "no tag to record in the docker-archive; image saved untagged"
            ),
        }
    }
    let manifest: Vec<DockerManifestEntry> = images
        .into_iter()
        .map(|i| DockerManifestEntry {
            config: i.config_file,
            repo_tags: Some(i.repo_tags),
            layers: i.layer_files,
        })
        .collect();
    let manifest_json = to_json("manifest.json", &manifest)?;
    append_file(
        builder,
        "manifest.json",
        manifest_json.len() as u64,
        &manifest_json[..],
    )
    .at("manifest.json")?;
    let repositories_json = to_json("repositories", &repositories)?;
    append_file(
        builder,
        "repositories",
        repositories_json.len() as u64,
        &repositories_json[..],
    )
    .at("repositories")?;
    info!(
        images = manifest.len(),
        layers = layers_written.len(),
        "docker-archive written"
    );
    Ok(())
}

/// Serialize `v` to JSON bytes.
pub(crate) fn to_json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Json {
        what: what.to_string(),
        source,
    })
}

/// Write one layer uncompressed at `path`, verifying the stored blob against its digest and
/// the uncompressed stream against `diff_id`.
fn write_docker_layer<W: Write>(
    store: &ImageStore,
    builder: &mut tar::Builder<W>,
    layer: &Descriptor,
    diff_id: &Digest,
    path: &str,
) -> Result<(), StoreError> {
    let blob_path = store.blob_path(&layer.digest);
    let mut file = store.open_blob(&layer.digest)?;
    let size = file.metadata().at(&blob_path)?.len();
    if size != layer.size {
        return Err(StoreError::SizeMismatch {
            what: format!("layer {}", layer.digest),
            expected: layer.size,
            actual: size,
        });
    }
    let head = read_head(&mut file, SNIFF_LEN).at(&blob_path)?;
    file.seek(SeekFrom::Start(0)).at(&blob_path)?;
    let compression = Compression::sniff(&head)
        .map_err(|c| StoreError::Unsupported(format!("{c}-compressed layer {}", layer.digest)))?;
    let mut raw = HashingReader::new(file, layer.digest.algorithm());
    match compression {
        Compression::None => {
            append_file(builder, path, size, (&mut raw).take(size)).at(path)?;
            let count = raw.count();
            let (actual, _) = raw.finish();
            if count != size {
                return Err(StoreError::SizeMismatch {
                    what: format!("layer {}", layer.digest),
                    expected: size,
                    actual: count,
                });
            }
            check_digest(&layer.digest, actual.clone())?;
            check_digest(diff_id, actual)?;
        }
        c => {
            // The tar header needs the uncompressed size first: decompress to a temporary
            // file in the store, hashing as it goes.
            let tmp = store.temp_file()?;
            let (tmp_file, tmp_path) = tmp.into_parts();
            let mut out = HashingWriter::new(
                io::BufWriter::with_capacity(crate::fsutil::COPY_BUF, tmp_file),
                diff_id.algorithm(),
            );
            {
                let mut decoder = c.decoder(&mut raw).at(&blob_path)?;
                copy_large(&mut decoder, &mut out).at(&blob_path)?;
            }
            // Hash any bytes the decoder left unread (padding) so the blob digest is complete.
            io::copy(&mut raw, &mut io::sink()).at(&blob_path)?;
            let (actual, _) = raw.finish();
            check_digest(&layer.digest, actual)?;
            let (uncompressed, usize_, buf) = out.finish();
            check_digest(diff_id, uncompressed)?;
            let mut tmp_file = buf
                .into_inner()
                .map_err(|e| StoreError::io(&tmp_path, e.into_error()))?;
            tmp_file.seek(SeekFrom::Start(0)).at(&tmp_path)?;
            append_file(builder, path, usize_, (&mut tmp_file).take(usize_)).at(path)?;
            debug!(layer = %layer.digest, %diff_id, size = usize_, "layer decompressed into archive");
        }
    }
    Ok(())
}

fn check_digest(expected: &Digest, actual: Digest) -> Result<(), StoreError> {
    if *expected == actual {
        Ok(())
    } else {
        Err(StoreError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

fn save_oci<W: Write>(
    store: &ImageStore,
    refs: &[String],
    builder: &mut tar::Builder<W>,
) -> Result<(), StoreError> {
    let mut index = IndexFile::empty();
    let mut seen_names = HashSet::new();
    for name in refs {
        if !seen_names.insert(name.as_str()) {
            continue;
        }
        let mut desc = resolve(store, name)?;
        let annotations = desc.annotations.get_or_insert_with(BTreeMap::new);
        annotations.remove(REF_NAME_ANNOTATION);
        if name.parse::<Digest>().is_err() {
            annotations.insert(REF_NAME_ANNOTATION.to_string(), name.clone());
        }
        if annotations.is_empty() {
            desc.annotations = None;
        }
        index.manifests.push(desc);
    }
    // Every blob the archive needs, manifests before what they reference.
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut stack: Vec<(Descriptor, usize, bool)> = index
        .manifests
        .iter()
        .rev()
        .map(|d| (d.clone(), 0, true))
        .collect();
    while let Some((desc, depth, required)) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if !store.has_blob(&desc.digest) {
            if is_non_distributable(&desc.media_type) {
                continue;
            }
            if !required {
                warn!(digest = %desc.digest, "index child not in the store; archive will be partial");
                continue;
            }
            return Err(StoreError::BlobNotFound(desc.digest));
        }
        if MANIFEST_MEDIA_TYPES.contains(&desc.media_type.as_str()) {
            if depth >= MAX_DEPTH {
                return Err(StoreError::Unsupported(format!(
                    "manifests nested deeper than {MAX_DEPTH}"
                )));
            }
            let parsed = store.read_manifest(&desc)?;
            // Children of an index may be absent (a partial multi-platform image).
            let children_required = !parsed.is_index();
            for child in parsed
                .config
                .iter()
                .chain(&parsed.layers)
                .chain(&parsed.manifests)
                .rev()
            {
                stack.push((child.clone(), depth + 1, children_required));
            }
        }
        blobs.push(desc);
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append_file(builder, "oci-layout", layout.len() as u64, &layout[..]).at("oci-layout")?;
    index.media_type = Some(OCI_INDEX.to_string());
    let index_json = to_json("index.json", &index)?;
    append_file(
        builder,
        "index.json",
        index_json.len() as u64,
        &index_json[..],
    )
    .at("index.json")?;
    append_dir(builder, "blobs").at("blobs")?;
    let mut dirs = HashSet::new();
    for desc in &blobs {
        let alg = desc.digest.algorithm().as_str();
        if dirs.insert(alg) {
            let dir = format!("blobs/{alg}");
            append_dir(builder, &dir).at(&dir)?;
        }
        let path = format!("blobs/{alg}/{}", desc.digest.hex());
        let blob_path = store.blob_path(&desc.digest);
        let file = store.open_blob(&desc.digest)?;
        let size = file.metadata().at(&blob_path)?.len();
        if size != desc.size {
            return Err(StoreError::SizeMismatch {
                what: format!("blob {}", desc.digest),
                expected: desc.size,
                actual: size,
            });
        }
        let mut reader = HashingReader::new(file, desc.digest.algorithm());
        append_file(builder, &path, size, (&mut reader).take(size)).at(&path)?;
        let count = reader.count();
        let (actual, _) = reader.finish();
        if count != size {
            return Err(StoreError::SizeMismatch {
                what: format!("blob {}", desc.digest),
                expected: size,
                actual: count,
            });
        }
        check_digest(&desc.digest, actual)?;
    }
    info!(
        images = index.manifests.len(),
        blobs = blobs.len(),
        "oci-archive written"
    );
    Ok(())
}
