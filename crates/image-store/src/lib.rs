//! The local image store: an OCI image layout, safe for concurrent processes, with
//! docker-archive and oci-archive import/export.
//!
//! Layout under the root (an [OCI image layout](https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
//! other tools can read):
//!
//! ```text
//! oci-layout               {"imageLayoutVersion":"1.0.0"}
//! index.json               top-level manifests; names in org.opencontainers.image.ref.name
//! blobs/<alg>/<hex>        content, named by its digest, published only by rename
//! index.lock               flock(2) guarding read-modify-write of index.json
//! tmp/                     temporary files (same filesystem, so renames are atomic)
//! ```
//!
//! - [`ImageStore`]: blobs (streaming, verified, atomic), references, garbage collection.
//! - [`archive`]: `docker save`-style and OCI archives, both directions.
//! - [`reference`](mod@reference): Docker-style name normalization.

#![warn(missing_docs)]

pub mod archive;
pub mod compress;
mod error;
mod fsutil;
pub mod reference;
mod store;

pub use error::StoreError;
pub use store::{
    BlobWriter, DEFAULT_BLOB_GRACE, DEFAULT_TEMP_GRACE, GcOptions, GcStats, ImageStore,
    MAX_MANIFEST_SIZE, REF_NAME_ANNOTATION, ref_name,
};
