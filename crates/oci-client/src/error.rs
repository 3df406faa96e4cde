//! Client errors, with the registry's own error code and message when it sent one.

use reqwest::StatusCode;

/// Errors from registry operations.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection or HTTP exchange failed.
    #[error("{context}: {source}")]
    Http {
        /// What was being done.
        context: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("{context}: {status}{}", registry_detail(.code, .message))]
    Status {
        /// What was being done.
        context: String,
        /// HTTP status.
        status: StatusCode,
        /// The spec error code (`MANIFEST_UNKNOWN`, ...), if the body had one.
        code: Option<String>,
        /// The registry's message.
        message: Option<String>,
    },
    /// Credentials missing or refused.
    #[error("authentication to {registry} failed: {message}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Why.
        message: String,
    },
    /// Downloaded bytes did not match their digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was downloaded.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A manifest or index could not be understood.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// No manifest for the requested platform in an index.
    #[error("no manifest for platform {0} in the image index")]
    NoPlatform(String),
    /// Local I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The registry answered a Range request with the whole blob.
    #[error(
        "the registry ignored the Range request for blob {0} (it does not support partial downloads)"
    )]
    RangeIgnored(String),
    /// The registry refused a request for several ranges at once.
    #[error("the registry refused a multi-range request for blob {0}")]
    MultiRangeRefused(String),
    /// Credential files or helpers.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
}

fn registry_detail(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

impl ClientError {
    /// Whether trying again may help (connection trouble, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Http { source, .. } => {
                // A body cut off mid-way surfaces as a decode error when reading it.
                source.is_connect()
                    || source.is_timeout()
                    || source.is_request()
                    || source.is_body()
                    || source.is_decode()
            }
            ClientError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            ClientError::DigestMismatch { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Shorthand for results of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;
