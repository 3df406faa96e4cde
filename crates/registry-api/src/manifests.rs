//! `GET`, `HEAD`, `PUT` and `DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use oci_core::manifest::MANIFEST_MEDIA_TYPES;
use oci_core::validate_tag;
use registry_core::{CoreError, Reference};

use crate::blobs::CONTENT_DIGEST;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::hooks::PushEvent;
use crate::route::parse_digest;
use crate::uploads::query_pairs;
use crate::{AppState, MAX_MANIFEST_SIZE};

/// Header naming the subject of a stored referrer.
pub const OCI_SUBJECT: &str = "oci-subject";

fn manifest_unknown(name: &str, reference: &str) -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
        .detail(serde_json::json!({ "name": name, "reference": reference }))
}

/// Parse a reference; a malformed tag can name nothing, so it is "unknown" on reads.
fn parse_reference(reference: &str) -> ApiResult<Reference> {
    if reference.contains(':') {
        Ok(Reference::Digest(parse_digest(reference)?))
    } else {
        validate_tag(reference)
            .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        Ok(Reference::Tag(reference.to_string()))
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header values built here are ASCII")
}

/// Whether the client's `Accept` headers allow `media_type`. Clients that name no manifest
/// type at all (or `*/*`) take whatever is stored.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut named_manifest_type = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let t = item.split(';').next().unwrap_or("").trim();
            if t == media_type || t == "*/*" {
                return true;
            }
            if MANIFEST_MEDIA_TYPES.contains(&t)
                || t.starts_with("application/vnd.docker.distribution.manifest")
            {
                named_manifest_type = true;
            }
        }
    }
    !named_manifest_type
}

/// `GET`/`HEAD` a manifest by tag or digest.
pub async fn get(
    st: &AppState,
    name: &str,
    reference: &str,
    req: Request,
    head: bool,
) -> ApiResult<Response> {
    let parsed = match parse_reference(reference) {
        Ok(p) => p,
        Err(e) if e.code == ErrorCode::ManifestInvalid => {
            return Err(manifest_unknown(name, reference));
        }
        Err(e) => return Err(e),
    };
    let entry = st.repository(name)?.get_manifest(&parsed).await?;
    // A digest pins the content; content negotiation applies to tags.
    if matches!(parsed, Reference::Tag(_)) && !accepts(req.headers(), &entry.media_type) {
        return Err(manifest_unknown(name, reference).detail(serde_json::json!({
            "reference": reference,
            "mediaType": entry.media_type,
            "reason": "the stored manifest's media type is not in the Accept header",
        })));
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(entry.body.clone())
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, hv(&entry.media_type))
        .header(CONTENT_DIGEST, hv(&entry.digest.to_string()))
        .header(header::ETAG, hv(&format!("\"{}\"", entry.digest)))
        .header(header::CONTENT_LENGTH, entry.body.len())
        .body(body)
        .expect("valid response"))
}

/// How much of an oversized manifest body is read (and dropped) before answering.
const DRAIN_LIMIT: usize = 2 * MAX_MANIFEST_SIZE;

/// Read at most [`MAX_MANIFEST_SIZE`] bytes of body, once, into one buffer sized from
/// `Content-Length` when it is given. The bytes it may take are reserved first out of the
/// registry-wide budget ([`crate::Policy::max_manifest_bytes_in_flight`]); the returned
/// permit holds them until dropped. Beyond the budget: 429 with `Retry-After`.
async fn read_manifest_body(
    st: &AppState,
    req: Request,
) -> ApiResult<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>)> {
    let too_large = || {
        ApiError::new(
            ErrorCode::SizeInvalid,
            format!("manifest exceeds the limit of {MAX_MANIFEST_SIZE} bytes"),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Bodies a little over the limit are drained so the client reads the error instead of a
    // reset connection; anything larger is refused without reading.
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    let expected = declared.map_or(MAX_MANIFEST_SIZE, |n| (n as usize).min(MAX_MANIFEST_SIZE));
    let permit = match &st.manifest_bytes {
        Some(budget) => {
            // The budget exists only when the limit is above 0.
            let wanted = expected.clamp(1, st.policy.max_manifest_bytes_in_flight);
            match budget.clone().try_acquire_many_owned(wanted as u32) {
                Ok(p) => Some(p),
                Err(_) => {
                    // Read and discard the body so that the client reads the answer rather
                    // than a reset connection; nothing of it is kept.
                    let mut stream = crate::stall::request_body(st, req);
                    let mut seen = 0usize;
                    while let Some(Ok(chunk)) = stream.next().await {
                        seen += chunk.len();
                        if seen > DRAIN_LIMIT {
                            break;
                        }
                    }
                    return Err(ApiError::new(
                        ErrorCode::TooManyRequests,
                        "too many manifest bytes being received; retry later",
                    )
                    .header(header::RETRY_AFTER, HeaderValue::from_static("1")));
                }
            }
        }
        None => None,
    };
    let mut stream = crate::stall::request_body(st, req);
    let mut buf = BytesMut::with_capacity(expected.min(declared.map_or(64 << 10, |n| n as usize)));
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let err = ApiError::new(ErrorCode::ManifestInvalid, format!("reading the body: {e}"));
            if e.kind() == std::io::ErrorKind::TimedOut {
                err.status(StatusCode::REQUEST_TIMEOUT)
            } else {
                err
            }
        })?;
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
        if seen <= MAX_MANIFEST_SIZE {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_MANIFEST_SIZE {
        return Err(too_large());
    }
    Ok((buf.freeze(), permit))
}

/// `PUT` a manifest by tag or digest, with optional `?tag=` parameters.
pub async fn put(st: &AppState, name: &str, reference: &str, req: Request) -> ApiResult<Response> {
    let repo = st.repository(name)?;
    if repo.is_read_through() {
        return Err(CoreError::ReadThrough(name.to_string()).into());
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed = parse_reference(reference)?;
    let tags: Vec<String> = query_pairs(&req)
        .into_iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v)
        .collect();
    let (body, _in_flight) = read_manifest_body(st, req).await?;
    let stored = repo
        .put_manifest(&parsed, &tags, body, content_type.as_deref())
        .await?;
    let digest_str = stored.digest.to_string();
    if let Some(hook) = &st.push_hook {
        hook.manifest_pushed(PushEvent {
            repository: name.to_string(),
            reference: reference.to_string(),
            digest: stored.digest.clone(),
            subject: stored.subject.clone(),
        });
    }
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            hv(&format!("/v2/{name}/manifests/{digest_str}")),
        )
        .header(CONTENT_DIGEST, hv(&digest_str))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = &stored.subject {
        resp = resp.header(OCI_SUBJECT, hv(&subject.to_string()));
    }
    Ok(resp.body(Body::empty()).expect("valid response"))
}

/// `DELETE` a manifest by digest (with its tags) or a single tag.
pub async fn delete(st: &AppState, name: &str, reference: &str) -> ApiResult<Response> {
    let parsed = match parse_reference(reference) {
        Ok(p) => p,
        Err(e) if e.code == ErrorCode::ManifestInvalid => {
            return Err(manifest_unknown(name, reference));
        }
        Err(e) => return Err(e),
    };
    let repo = st.repository(name)?;
    match parsed {
        Reference::Digest(d) => {
            repo.delete_manifest(&d).await?;
        }
        Reference::Tag(t) => {
            repo.untag(&t).await?;
        }
    }
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response"))
}
