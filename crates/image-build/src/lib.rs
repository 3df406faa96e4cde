//! The build engine behind `hyperbuild build`.
//!
//! - [`overlay`]: overlayfs mounts for RUN and COPY steps.
//! - [`sandbox`]: RUN in namespaces through an OCI runtime bundle (`runc`).
//! - [`layer`]: snapshot directory → deterministic, compressed layer in the store.
//! - [`frontend`]: the Dockerfile interpreter (ARG/ENV scoping, stages, steps).
//! - [`convert`]: rewriting an image's layers as eStargz.
//! - [`context`]: COPY/ADD planning: sources, `.dockerignore`, content hashes.
//! - [`cache`]: step cache keys, cached snapshots and layers.
//! - [`fsops`]: COPY/ADD file operations inside a step's root.
//! - [`pgzip`]: gzip compressed on several threads (one member per block).
//! - [`image`]: image configs and manifests (OCI or Docker media types).
//! - [`import`]: a base image from a root filesystem tarball.
//! - [`stage`]: executing a stage's steps with the cache.
//! - [`users`]: `USER` / `--chown` resolution against the image's passwd and group files.
//! - [`rootfs`]: base images unpacked once per layer chain, the bottom of every overlay.

pub mod cache;
pub mod context;
pub mod convert;
pub mod frontend;
pub mod fsops;
pub mod image;
pub mod import;
pub mod layer;
pub mod overlay;
pub mod pgzip;
pub mod rootfs;
pub mod sandbox;
pub mod stage;
pub mod users;

use std::path::Path;

/// Errors of the build engine.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// What.
        source: std::io::Error,
    },
    /// The image store.
    #[error(transparent)]
    Store(#[from] image_store::StoreError),
    /// Mounting, the runtime.
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// Input the builder cannot use.
    #[error("{0}")]
    Invalid(String),
}

impl BuildError {
    /// An I/O error at a path.
    pub fn io(path: &Path, source: std::io::Error) -> BuildError {
        BuildError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result alias of the build engine.
pub type Result<T> = std::result::Result<T, BuildError>;
