//! starget's errors, each with a stable exit code.

/// What went wrong, in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum StargetError {
    /// Bad command line or configuration.
    #[error("{0}")]
    Usage(String),
    /// The registry or the network.
    #[error(transparent)]
    Registry(#[from] oci_client::ClientError),
    /// A layer is not eStargz.
    #[error(
        "layer {0} is not an eStargz layer (no TOC footer); rebuild it with `hyperbuild build --compression estargz` or convert the image with `hyperbuild convert --estargz`"
    )]
    NotEstargz(String),
    /// A TOC or chunk did not verify.
    #[error("corrupted download: {0}")]
    Corrupt(String),
    /// Nothing matched.
    #[error("no file in the image matches {0}")]
    NotFound(String),
    /// Local files.
    #[error("{0}")]
    Io(String),
}

impl StargetError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            StargetError::Usage(_) => 2,
            StargetError::Registry(oci_client::ClientError::Unauthorized { .. }) => 3,
            StargetError::Registry(_) => 4,
            StargetError::NotEstargz(_) => 5,
            StargetError::Corrupt(_) => 6,
            StargetError::NotFound(_) => 7,
            StargetError::Io(_) => 8,
        }
    }
}

impl From<estargz::Error> for StargetError {
    fn from(e: estargz::Error) -> Self {
        StargetError::Corrupt(e.to_string())
    }
}
