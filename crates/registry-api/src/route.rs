//! Parsing `/v2/<name>/...` paths. Repository names contain slashes, so the resource is found
//! from the right-hand end of the path.

use oci_core::{Digest, validate_repository};

use crate::error::{ApiError, ErrorCode};

/// One API endpoint with its path parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags {
        /// Repository.
        name: String,
    },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        /// Repository.
        name: String,
        /// Tag or digest, unvalidated.
        reference: String,
    },
    /// `/v2/<name>/referrers/<digest>`
    Referrers {
        /// Repository.
        name: String,
        /// Subject digest, unvalidated.
        digest: String,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        /// Repository.
        name: String,
        /// Digest, unvalidated.
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart {
        /// Repository.
        name: String,
    },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload {
        /// Repository.
        name: String,
        /// Session id, unvalidated.
        id: String,
    },
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NameUnknown,
        format!("no such endpoint: /v2/{path}"),
    )
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    validate_repository(name).map_err(|e| {
        ApiError::new(ErrorCode::NameInvalid, e.to_string())
            .detail(serde_json::json!({ "name": name }))
    })?;
    Ok(name.to_string())
}

/// Parse the part of the path after `/v2/`.
pub fn parse(path: &str) -> Result<Route, ApiError> {
    if path == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Ok(Route::Tags {
            name: checked_name(name)?,
        });
    }
    if let Some(name) = path
        .strip_suffix("/blobs/uploads/")
        .or_else(|| path.strip_suffix("/blobs/uploads"))
    {
        return Ok(Route::UploadStart {
            name: checked_name(name)?,
        });
    }
    // The last segment is the parameter; the one before it names the resource.
    let (head, last) = path.rsplit_once('/').ok_or_else(|| not_found(path))?;
    if last.is_empty() {
        return Err(not_found(path));
    }
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Ok(Route::Upload {
            name: checked_name(name)?,
            id: last.to_string(),
        });
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        return Ok(Route::Manifest {
            name: checked_name(name)?,
            reference: last.to_string(),
        });
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        return Ok(Route::Blob {
            name: checked_name(name)?,
            digest: last.to_string(),
        });
    }
    if let Some(name) = head.strip_suffix("/referrers") {
        return Ok(Route::Referrers {
            name: checked_name(name)?,
            digest: last.to_string(),
        });
    }
    Err(not_found(path))
}

/// Parse a digest from a path or query, answering `DIGEST_INVALID` when malformed.
pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse().map_err(|e: oci_core::DigestError| {
        ApiError::new(ErrorCode::DigestInvalid, e.to_string())
            .detail(serde_json::json!({ "digest": s }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_nested_names() {
        assert_eq!(parse("_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            parse("a/b/tags/list").unwrap(),
            Route::Tags { name: "a/b".into() }
        );
        assert_eq!(
            parse("a/manifests/b/manifests/v1").unwrap(),
            Route::Manifest {
                name: "a/manifests/b".into(),
                reference: "v1".into()
            }
        );
        assert_eq!(
            parse("x/blobs/uploads/").unwrap(),
            Route::UploadStart { name: "x".into() }
        );
        assert_eq!(
            parse("x/y/blobs/uploads/abc").unwrap(),
            Route::Upload {
                name: "x/y".into(),
                id: "abc".into()
            }
        );
        assert_eq!(
            parse("x/blobs/sha256:00").unwrap(),
            Route::Blob {
                name: "x".into(),
                digest: "sha256:00".into()
            }
        );
        assert_eq!(
            parse("x/referrers/sha256:00").unwrap(),
            Route::Referrers {
                name: "x".into(),
                digest: "sha256:00".into()
            }
        );
        assert_eq!(
            parse("UPPER/tags/list").unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            parse("../x/blobs/sha256:00").unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(parse("x/unknown").unwrap_err().code, ErrorCode::NameUnknown);
    }
}
