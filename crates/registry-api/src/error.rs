//! Errors in the distribution spec's JSON format: `{"errors":[{"code","message","detail"}]}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use registry_core::CoreError;
use registry_meta::MetaError;
use registry_storage::StorageError;

/// The spec's error codes (plus `UNKNOWN` for server faults, as Distribution does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content, or is malformed.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length, or content too large.
    SizeInvalid,
    /// The operation is unsupported.
    Unsupported,
    /// The requested range cannot be satisfied.
    RangeInvalid,
    /// Requested access to the resource is denied.
    Denied,
    /// Authentication required.
    Unauthorized,
    /// Too many requests.
    TooManyRequests,
    /// A `n` pagination parameter that is not a number.
    PaginationNumberInvalid,
    /// A server-side failure.
    Unknown,
    /// The service cannot answer now (Distribution's `UNAVAILABLE`): a lock it needs is
    /// held too long, or the coordination service is down. Retry later.
    Unavailable,
}

impl ErrorCode {
    /// The code string written in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status the spec pairs with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An API error: a code, a message, optional detail, and the status to answer with.
#[derive(Debug)]
pub struct ApiError {
    /// The spec code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Structured detail.
    pub detail: Option<serde_json::Value>,
    /// Status, defaulting to the code's.
    pub status: StatusCode,
    /// Extra headers (`Content-Range` on 416, `Range` on upload errors).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the code's default status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            detail: None,
            status: code.status(),
            headers: Vec::new(),
        }
    }

    /// Attach structured detail.
    pub fn detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    /// Override the status.
    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// Add a response header.
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        } else {
            tracing::debug!(code = self.code.as_str(), message = %self.message, status = %self.status, "request refused");
        }
        let mut entry = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = self.detail {
            entry["detail"] = d;
        }
        let body =
            serde_json::to_vec(&serde_json::json!({ "errors": [entry] })).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        if let MetaError::MissingReference(d) = &e {
            // A blob unlinked (or child deleted) after the handler checked it.
            return ApiError::new(
                ErrorCode::ManifestBlobUnknown,
                "manifest references a blob or manifest unknown to registry",
            )
            .detail(serde_json::json!({ "digest": d.to_string() }));
        }
        ApiError::new(ErrorCode::Unknown, format!("metadata: {e}"))
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::BlobUnknown(d) => {
                ApiError::new(ErrorCode::BlobUnknown, "blob unknown to registry").detail(serde_json::json!({"digest": d.to_string()}))
            }
            StorageError::UploadUnknown(id) => ApiError::new(ErrorCode::BlobUploadUnknown, "blob upload unknown to registry")
                .detail(serde_json::json!({"uuid": id})),
            StorageError::DigestMismatch { expected, computed } => ApiError::new(
                ErrorCode::DigestInvalid,
                "provided digest did not match uploaded content",
            )
            .detail(serde_json::json!({"expected": expected.to_string(), "computed": computed.to_string()})),
            StorageError::OutOfOrder { have, got } => ApiError::new(
                ErrorCode::RangeInvalid,
                format!("chunk must start at byte {have}, not {got}"),
            )
            .header(
                header::RANGE,
                HeaderValue::from_str(&format!("0-{}", have.saturating_sub(1))).expect("ascii"),
            ),
            StorageError::TooLarge(max) => ApiError::new(ErrorCode::SizeInvalid, format!("blob exceeds the limit of {max} bytes"))
                .status(StatusCode::PAYLOAD_TOO_LARGE),
            StorageError::Body(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                ApiError::new(ErrorCode::BlobUploadInvalid, format!("reading the request body: {e}"))
                    .status(StatusCode::REQUEST_TIMEOUT)
            }
            StorageError::Body(e) => ApiError::new(ErrorCode::BlobUploadInvalid, format!("reading the request body: {e}")),
            StorageError::Io(e) => ApiError::new(ErrorCode::Unknown, format!("storage: {e}")),
        }
    }
}

fn retry_later(e: ApiError) -> ApiError {
    e.header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        use serde_json::json;
        let message = e.to_string();
        match e {
            CoreError::NameInvalid(_) => ApiError::new(ErrorCode::NameInvalid, message),
            CoreError::NameUnknown(name) => {
                ApiError::new(ErrorCode::NameUnknown, message).detail(json!({ "name": name }))
            }
            CoreError::TagInvalid(_)
            | CoreError::ManifestInvalid(_)
            | CoreError::ReferenceSizeMismatch { .. } => {
                ApiError::new(ErrorCode::ManifestInvalid, message)
            }
            CoreError::ManifestUnknown { name, reference } => {
                ApiError::new(ErrorCode::ManifestUnknown, message)
                    .detail(json!({ "name": name, "reference": reference }))
            }
            CoreError::UnsupportedMediaType(mt) => {
                ApiError::new(ErrorCode::ManifestInvalid, message)
                    .detail(json!({ "mediaType": mt }))
            }
            CoreError::ManifestDigestMismatch { expected, computed } => {
                ApiError::new(ErrorCode::DigestInvalid, message).detail(
                    json!({ "expected": expected.to_string(), "computed": computed.to_string() }),
                )
            }
            CoreError::ManifestBlobUnknown(d) => {
                ApiError::new(ErrorCode::ManifestBlobUnknown, message)
                    .detail(json!({ "digest": d.to_string() }))
            }
            CoreError::BlobUnknown(d) => ApiError::new(ErrorCode::BlobUnknown, message)
                .detail(json!({ "digest": d.to_string() })),
            CoreError::UploadUnknown(id) => {
                ApiError::new(ErrorCode::BlobUploadUnknown, message).detail(json!({ "uuid": id }))
            }
            // As the spec answers a chunk that does not follow the session's end: the client
            // asks the status and resumes.
            CoreError::UploadBusy { id, size } => {
                let mut err = retry_later(
                    ApiError::new(ErrorCode::BlobUploadInvalid, message)
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .detail(json!({ "uuid": id })),
                );
                if let Some(size) = size {
                    err = err.header(
                        header::RANGE,
                        HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1)))
                            .expect("ascii"),
                    );
                }
                err
            }
            CoreError::ChunkMismatch { .. } => ApiError::new(ErrorCode::SizeInvalid, message),
            CoreError::ReadThrough(_) => ApiError::new(ErrorCode::Denied, message),
            CoreError::Unavailable(_) => {
                retry_later(ApiError::new(ErrorCode::Unavailable, message))
            }
            CoreError::Storage(e) => e.into(),
            CoreError::Meta(e) => e.into(),
        }
    }
}
