//! Shared test helpers: build images in a store, build raw (possibly hostile) tarballs.
#![allow(dead_code)]

use std::io::Write;

use image_store::ImageStore;
use oci_core::manifest::{OCI_INDEX, OCI_MANIFEST};
use oci_core::{Descriptor, Digest};

/// A descriptor with only the required fields.
pub fn desc(media_type: &str, digest: Digest, size: u64) -> Descriptor {
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

/// A layer tar holding `files` (path, mode, contents), deterministic.
pub fn layer_tar(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in files {
        let mut p = std::path::Path::new(path).parent();
        while let Some(d) = p {
            if !d.as_os_str().is_empty() {
                dirs.insert(d.to_path_buf());
            }
            p = d.parent();
        }
    }
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, &d, std::io::empty()).unwrap();
    }
    for (path, mode, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// gzip `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// How to store a layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// Store an image made of `layers` (uncompressed tars) with `cmd`, compressing each layer
/// as asked; returns the manifest descriptor (not referenced yet).
pub fn put_image(
    store: &ImageStore,
    layers: &[Vec<u8>],
    comps: &[Comp],
    arch: &str,
    cmd: &[&str],
) -> Descriptor {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        diff_ids.push(Digest::sha256_of(l).to_string());
        let (bytes, mt) = match comps.get(i).copied().unwrap_or(Comp::Gzip) {
            Comp::None => (l.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Comp::Gzip => (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip"),
            Comp::Zstd => (
                zstd::encode_all(&l[..], 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        // Stream through a writer, as a puller would.
        let d = Digest::sha256_of(&bytes);
        let mut w = store
            .blob_writer(&d)
            .unwrap()
            .expect_size(bytes.len() as u64);
        for chunk in bytes.chunks(7919) {
            w.write_all(chunk).unwrap();
        }
        w.commit().unwrap();
        layer_descs.push(desc(mt, d, bytes.len() as u64));
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "image-store tests"}],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = store.put_blob(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", cd, config.len() as u64),
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let md = store.put_blob(&manifest).unwrap();
    desc(OCI_MANIFEST, md, manifest.len() as u64)
}

/// Store an index over `children` (descriptor, os, arch).
pub fn put_index(store: &ImageStore, children: &[(Descriptor, &str, &str)]) -> Descriptor {
    let manifests: Vec<Descriptor> = children
        .iter()
        .map(|(d, os, arch)| {
            let mut d = d.clone();
            d.platform = Some(oci_core::Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                ..oci_core::Platform::default()
            });
            d
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let d = store.put_blob(&bytes).unwrap();
    desc(OCI_INDEX, d, bytes.len() as u64)
}

/// One entry of a raw tarball.
pub struct RawEntry<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub data: &'a [u8],
    pub link: &'a [u8],
    /// Size written in the header (defaults to `data.len()`).
    pub claimed_size: Option<u64>,
}

impl<'a> RawEntry<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        RawEntry {
            name: name.as_bytes(),
            kind: tar::EntryType::Regular,
            data,
            link: b"",
            claimed_size: None,
        }
    }

    pub fn symlink(name: &'a str, target: &'a str) -> Self {
        RawEntry {
            name: name.as_bytes(),
            kind: tar::EntryType::Symlink,
            data: b"",
            link: target.as_bytes(),
            claimed_size: None,
        }
    }
}

/// A tarball written byte by byte, so names the tar crate would refuse (`../x`, `/etc`) can be made.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..e.name.len()].copy_from_slice(e.name);
            gnu.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(e.claimed_size.unwrap_or(e.data.len() as u64));
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Files left in the store's tmp directory.
pub fn tmp_files(store: &ImageStore) -> Vec<String> {
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every blob file in the store.
pub fn blob_count(store: &ImageStore) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}
