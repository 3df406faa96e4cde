//! The context every command runs in, and the helpers they share to name images.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use image_store::ImageStore;
use oci_client::{ClientConfig, CredentialStore, Reference, RegistryClient};
use oci_core::{Descriptor, Digest};

use crate::{Cli, TransferArgs};

/// Where the image store lives unless told otherwise.
fn default_root() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("hyperbuild")
}

/// What every command works with: the store, credentials, registries to reach over HTTP.
pub(crate) struct Ctx {
    /// The local image store.
    pub(crate) store: Arc<ImageStore>,
    /// Where registry credentials are read and saved.
    pub(crate) credentials: CredentialStore,
    /// Registries reached over plain HTTP.
    pub(crate) insecure: Vec<String>,
    /// No progress output.
    pub(crate) quiet: bool,
}

impl Ctx {
    /// The context the command line asks for: its store (created if needed), credentials
    /// and plain-HTTP registries.
    pub(crate) fn open(cli: &Cli) -> anyhow::Result<Ctx> {
        // Absolute: build steps hand paths under the store to runc, which resolves relative
        // paths against its bundle directory.
        let root = std::path::absolute(cli.root.clone().unwrap_or_else(default_root))
            .context("resolving the store directory")?;
        let store = Arc::new(
            ImageStore::open(&root)
                .with_context(|| format!("opening the image store at {}", root.display()))?,
        );
        Ok(Ctx {
            store,
            credentials: cli
                .authfile
                .clone()
                .map(CredentialStore::single)
                .unwrap_or_default(),
            insecure: cli.insecure.clone(),
            quiet: cli.quiet,
        })
    }

    /// A registry client with this context's credentials and retry settings.
    pub(crate) fn client(&self, transfer: Option<&TransferArgs>) -> anyhow::Result<RegistryClient> {
        let cfg = ClientConfig {
            insecure_registries: self.insecure.clone(),
            credentials: self.credentials.clone(),
            max_retries: transfer.map_or(3, |t| t.retries),
            ..ClientConfig::default()
        };
        Ok(RegistryClient::new(cfg)?)
    }
}

/// Where builds keep their cache and unpacked base images: next to the store.
pub(crate) fn build_dir(ctx: &Ctx) -> PathBuf {
    ctx.store.root().join("build")
}

/// `--compression`.
pub(crate) fn parse_compression(s: &str) -> anyhow::Result<image_build::layer::Compression> {
    image_build::layer::Compression::parse(s)
        .with_context(|| format!("unknown compression {s:?}: use gzip, zstd or uncompressed"))
}

/// `--format`.
pub(crate) fn parse_format(s: &str) -> anyhow::Result<image_build::image::Format> {
    match s {
        "oci" => Ok(image_build::image::Format::Oci),
        "docker" => Ok(image_build::image::Format::Docker),
        other => bail!("unknown format {other:?}: use oci or docker"),
    }
}

/// The current time as RFC 3339 UTC, or SOURCE_DATE_EPOCH when set.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(oci_core::time::now);
    oci_core::time::rfc3339(secs)
}

/// Parse a user-given image name the way Docker does.
pub(crate) fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    s.parse::<Reference>()
        .with_context(|| format!("invalid image reference {s:?}"))
}

/// The store name of a user-given image: a digest as is, else the normalized reference.
pub(crate) fn local_name(s: &str) -> anyhow::Result<String> {
    if s.parse::<Digest>().is_ok() {
        return Ok(s.to_string());
    }
    Ok(parse_ref(s)?.to_string())
}

/// The store name an image is known under (its normalized name, or a digest).
pub(crate) fn resolve_name(ctx: &Ctx, image: &str) -> anyhow::Result<String> {
    let name = local_name(image)?;
    if ctx.store.resolve(&name)?.is_none() {
        bail!(
            "no image {image:?} in the local store ({})",
            ctx.store.root().display()
        );
    }
    Ok(name)
}

/// The descriptor of a local image (by name or digest).
pub(crate) fn resolve_local(ctx: &Ctx, image: &str) -> anyhow::Result<Descriptor> {
    let name = local_name(image)?;
    ctx.store.resolve(&name)?.with_context(|| {
        format!(
            "no image {image:?} in the local store ({})",
            ctx.store.root().display()
        )
    })
}
