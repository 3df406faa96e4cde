//! OCI building blocks shared by the registry, the builder and starget.
//!
//! - [`duration`]: durations in configuration (`30s`, `1h30m`, `7d`, bare seconds).
//! - [`digest`]: content digests (`sha256`, `sha512`), parsing and streaming hashing.
//! - [`name`]: repository-name and tag grammar from the distribution spec.
//! - [`json`]: JSON read under the same depth and size bounds when accepted and read back.
//! - [`manifest`]: media types and the parts of manifests a registry must understand.
//! - [`platform`]: `os/arch[/variant]`, normalised as containerd does, and index selection.
//! - [`reference`]: image references (`app` is `docker.io/library/app:latest`).
//! - [`retry`]: the one retry policy (exponential backoff, equal jitter, `Retry-After`).
//! - [`time`]: RFC 3339 timestamps.
//! - [`units`]: byte counts for people.

pub mod digest;
pub mod duration;
pub mod json;
pub mod manifest;
pub mod name;
pub mod platform;
pub mod reference;
pub mod retry;
pub mod time;
pub mod units;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, ManifestError, ParsedManifest};
pub use name::{NameError, validate_repository, validate_tag};
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError};
