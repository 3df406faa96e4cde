//! An image in a registry, seen through its manifest and its layers' TOCs, fetched with
//! Range requests. Counts every byte it transfers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use oci_client::{Platform, Reference, RegistryClient};
use oci_core::{Descriptor, Digest, ParsedManifest};

use crate::error::StargetError;
use crate::view::{FileEntry, Kind, clean};

/// Bytes read from the end of each layer at first: the footer plus, usually, the TOC.
const TAIL_GUESS: u64 = 64 << 10;

/// A layer and, when it is eStargz, its TOC.
pub struct Layer {
    /// The manifest's descriptor.
    pub desc: Descriptor,
    /// The TOC's entries as files, when the layer is eStargz.
    pub files: Option<Vec<FileEntry>>,
}

/// The remote image.
pub struct Image {
    /// The reference.
    pub reference: Reference,
    /// Manifest digest.
    pub digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
}

/// A registry client plus a transfer counter.
#[derive(Clone)]
pub struct Remote {
    /// The client.
    pub client: RegistryClient,
    /// Bytes received in range responses.
    pub transferred: Arc<AtomicU64>,
}

impl Remote {
    /// Fetch ranges of a blob (one request), counting bytes; multi-range refusals fall back
    /// to one request per range.
    pub async fn ranges(
        &self,
        r: &Reference,
        digest: &Digest,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<(u64, Bytes)>, StargetError> {
        let parts = match self.client.get_blob_ranges(r, digest, ranges).await {
            Ok(p) => p,
            Err(oci_client::ClientError::MultiRangeRefused(_)) => {
                let mut all = Vec::new();
                for range in ranges {
                    all.extend(
                        self.client
                            .get_blob_ranges(r, digest, std::slice::from_ref(range))
                            .await?,
                    );
                }
                all
            }
            Err(e) => return Err(e.into()),
        };
        let n: u64 = parts.iter().map(|(_, b)| b.len() as u64).sum();
        self.transferred.fetch_add(n, Ordering::Relaxed);
        Ok(parts)
    }

    /// Resolve the image (an index to `platform`) and read every layer's TOC.
    pub async fn open(
        &self,
        r: &Reference,
        platform: &Platform,
        verify: bool,
    ) -> Result<Image, StargetError> {
        let (mut body, mut mt, mut digest) = self.client.get_manifest(r).await?;
        let mut parsed = ParsedManifest::parse(&body, Some(&mt))
            .map_err(|e| StargetError::Corrupt(format!("{r}: {e}")))?;
        if parsed.is_index() {
            let child = platform
                .select(&parsed.manifests)
                .ok_or_else(|| oci_client::ClientError::NoPlatform(platform.to_string()))?
                .clone();
            (body, mt, digest) = self
                .client
                .get_manifest(&r.with_digest(child.digest))
                .await?;
            parsed = ParsedManifest::parse(&body, Some(&mt))
                .map_err(|e| StargetError::Corrupt(format!("{r}: {e}")))?;
        }
        // Every layer's TOC, all at once.
        let tocs = futures::future::try_join_all(
            parsed.layers.iter().map(|d| self.read_toc(r, d, verify)),
        )
        .await?;
        let layers = parsed
            .layers
            .into_iter()
            .zip(tocs)
            .map(|(desc, files)| Layer { desc, files })
            .collect();
        let reference = r.clone();
        Ok(Image {
            reference,
            digest,
            layers,
        })
    }

    /// Footer → TOC of a layer; `None` when the layer is not eStargz.
    async fn read_toc(
        &self,
        r: &Reference,
        desc: &Descriptor,
        verify: bool,
    ) -> Result<Option<Vec<FileEntry>>, StargetError> {
        let size = desc.size;
        if size < estargz::FOOTER_SIZE {
            return Ok(None);
        }
        // One request for the end of the blob: the footer, and usually the whole TOC member
        // with it (a second request fetches a TOC larger than TAIL_GUESS).
        let guess = size.min(TAIL_GUESS);
        let tail = self
            .ranges(r, &desc.digest, &[(size - guess, guess)])
            .await?;
        let tail = tail.first().map(|(_, b)| b.clone()).unwrap_or_default();
        if (tail.len() as u64) < estargz::FOOTER_SIZE {
            return Err(StargetError::Corrupt(format!(
                "layer {}: short read of its last bytes",
                desc.digest
            )));
        }
        let Ok(footer) = estargz::parse_footer(&tail[tail.len() - estargz::FOOTER_SIZE as usize..])
        else {
            return Ok(None);
        };
        if footer.toc_offset >= size {
            return Err(StargetError::Corrupt(format!(
                "layer {}: TOC offset beyond the blob",
                desc.digest
            )));
        }
        let region = if footer.toc_offset >= size - guess {
            tail.slice((footer.toc_offset - (size - guess)) as usize..)
        } else {
            let fetched = self
                .ranges(
                    r,
                    &desc.digest,
                    &[(footer.toc_offset, size - footer.toc_offset)],
                )
                .await?;
            fetched.first().map(|(_, b)| b.clone()).unwrap_or_default()
        };
        let src = Slice {
            base: footer.toc_offset,
            bytes: &region,
            size,
        };
        let expected: Option<Digest> = if verify {
            desc.annotations
                .as_ref()
                .and_then(|a| a.get(estargz::TOC_DIGEST_ANNOTATION))
                .and_then(|d| d.parse().ok())
        } else {
            None
        };
        let (toc, _) = estargz::read_toc(&src, expected.as_ref())
            .map_err(|e| StargetError::Corrupt(format!("layer {}: {e}", desc.digest)))?;
        let files = toc
            .files()
            .map_err(|e| StargetError::Corrupt(format!("layer {}: {e}", desc.digest)))?;
        let entries = files
            .into_iter()
            .filter(|f| {
                !f.name.is_empty()
                    && f.name != estargz::PREFETCH_LANDMARK
                    && f.name != estargz::NO_PREFETCH_LANDMARK
                    && f.name != estargz::TOC_TAR_NAME
            })
            .map(|f| {
                let e = f.entry;
                let kind = match e.kind.as_str() {
                    "dir" => Kind::Dir,
                    "reg" => Kind::File,
                    "symlink" => Kind::Symlink,
                    "hardlink" => Kind::Hardlink,
                    _ => Kind::Other,
                };
                FileEntry {
                    path: clean(&f.name),
                    kind,
                    size: e.size,
                    mode: (e.mode & 0o7777) as u32,
                    uid: e.uid as u32,
                    gid: e.gid as u32,
                    modtime: e.modtime.clone(),
                    link: (!e.link_name.is_empty()).then(|| e.link_name.clone()),
                    layer: 0,
                    chunks: if kind == Kind::File {
                        f.chunks
                    } else {
                        Vec::new()
                    },
                    digest: e.digest.clone(),
                }
            })
            .collect();
        Ok(Some(entries))
    }
}

/// Bytes of a blob already fetched, from `base`, served as a [`estargz::RangeSource`].
pub struct Slice<'a> {
    /// Offset of `bytes` in the blob.
    pub base: u64,
    /// The bytes.
    pub bytes: &'a [u8],
    /// Size of the whole blob.
    pub size: u64,
}

impl estargz::RangeSource for Slice<'_> {
    fn size(&self) -> Result<u64, estargz::Error> {
        Ok(self.size)
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, estargz::Error> {
        let start = offset.checked_sub(self.base).map(|s| s as usize);
        match start.and_then(|s| self.bytes.get(s..s + len as usize)) {
            Some(b) => Ok(b.to_vec()),
            None => Err(estargz::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bytes {offset}+{len} were not fetched"),
            ))),
        }
    }
}
