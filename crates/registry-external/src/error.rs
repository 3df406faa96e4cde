//! Errors of external-registry operations, and their JSON form on the management API.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Errors from external registries, replication and the pull-through cache.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// No such registry, rule, job or image.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with existing state (a duplicate name, a registry in use).
    #[error("{0}")]
    Conflict(String),
    /// Talking to the external registry failed.
    #[error("external registry: {0}")]
    Client(#[from] oci_client::ClientError),
    /// Local metadata failed.
    #[error(transparent)]
    Meta(#[from] registry_meta::MetaError),
    /// Local blob storage failed.
    #[error(transparent)]
    Storage(#[from] registry_storage::StorageError),
    /// The local registry refused content (as it would refuse a push).
    #[error("local registry refused it: {code}: {message}")]
    Refused {
        /// The distribution error code.
        code: &'static str,
        /// Its message.
        message: String,
    },
    /// Encryption or decryption of a secret failed.
    #[error("secret: {0}")]
    Crypto(String),
    /// Local I/O (the key file).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<registry_api::error::ApiError> for ExternalError {
    fn from(e: registry_api::error::ApiError) -> ExternalError {
        ExternalError::Refused {
            code: e.code.as_str(),
            message: e.message,
        }
    }
}

impl From<registry_core::CoreError> for ExternalError {
    fn from(e: registry_core::CoreError) -> ExternalError {
        match e {
            registry_core::CoreError::Storage(e) => ExternalError::Storage(e),
            registry_core::CoreError::Meta(e) => ExternalError::Meta(e),
            // Refused as the /v2 API would refuse it, with the spec's code.
            other => registry_api::error::ApiError::from(other).into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ExternalError>;

impl ExternalError {
    /// The HTTP status and error code the management API answers with.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ExternalError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ExternalError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID"),
            ExternalError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            ExternalError::Client(oci_client::ClientError::Unauthorized { .. }) => {
                (StatusCode::BAD_GATEWAY, "UPSTREAM_UNAUTHORIZED")
            }
            ExternalError::Client(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                (StatusCode::NOT_FOUND, "UPSTREAM_NOT_FOUND")
            }
            ExternalError::Client(_) => (StatusCode::BAD_GATEWAY, "UPSTREAM"),
            ExternalError::Refused { .. } => (StatusCode::BAD_GATEWAY, "REFUSED"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }
}

impl IntoResponse for ExternalError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "management request failed");
        }
        let body = ErrorBody {
            errors: vec![ErrorEntry {
                code: code.to_string(),
                message: self.to_string(),
            }],
        };
        (status, axum::Json(body)).into_response()
    }
}

/// The error body of the external-registry and replication API:
/// `{"errors":[{"code","message"}]}` (schema `ExternalErrorBody`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ExternalErrorBody)]
pub struct ErrorBody {
    /// The errors (one).
    pub errors: Vec<ErrorEntry>,
}

/// One error.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ExternalErrorEntry)]
pub struct ErrorEntry {
    /// `NOT_FOUND`, `INVALID`, `CONFLICT`, `UPSTREAM`, `UPSTREAM_UNAUTHORIZED`,
    /// `UPSTREAM_NOT_FOUND`, `REFUSED` or `UNKNOWN`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}
