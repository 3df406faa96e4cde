//! `GET`, `HEAD`, `PUT` and `DELETE /v2/<name>/manifests/<reference>`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use oci_core::manifest::MANIFEST_MEDIA_TYPES;
use oci_core::{Algorithm, Digest, ManifestError, ParsedManifest, validate_tag};
use registry_meta::{ManifestRecord, MetaError, NewManifest};

use crate::blobs::CONTENT_DIGEST;
use crate::cache::CachedManifest;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::events::{Action, Event, Target};
use crate::route::parse_digest;
use crate::shared;
use crate::uploads::query_pairs;
use crate::{AppState, MAX_MANIFEST_SIZE};

/// Header naming the subject of a stored referrer.
pub const OCI_SUBJECT: &str = "oci-subject";

/// A reference: a tag, or a digest (anything containing `:`).
enum Reference {
    Tag(String),
    Digest(Digest),
}

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

/// Load a manifest through the cache.
async fn load(
    st: &AppState,
    name: &str,
    reference: &str,
    parsed: &Reference,
) -> ApiResult<Arc<CachedManifest>> {
    if let Some(hit) = st.cache.get(name, reference) {
        return Ok(hit);
    }
    let epoch = st.cache.epoch();
    let found = match parsed {
        Reference::Tag(tag) => shared::resolve_tag(st, name, tag).await?,
        Reference::Digest(d) => st
            .meta
            .get_manifest(name, d)
            .await?
            .map(|r| (r.digest, r.media_type)),
    };
    let (digest, media_type) = found.ok_or_else(|| manifest_unknown(name, reference))?;
    // The bytes of a digest never change: take them from the cache when it has them.
    let body = match st.cache.get(name, &digest.to_string()) {
        Some(hit) => hit.body.clone(),
        None => st.blobs.get_bytes(&digest).await?,
    };
    let entry = Arc::new(CachedManifest {
        digest,
        media_type,
        body,
    });
    st.cache
        .insert_if_current(epoch, name, reference, entry.clone());
    Ok(entry)
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
    let entry = load(st, name, reference, &parsed).await?;
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

fn manifest_error(e: ManifestError) -> ApiError {
    match e {
        ManifestError::Unsupported(mt) => ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("unsupported manifest media type {mt:?}"),
        )
        .detail(serde_json::json!({ "mediaType": mt })),
        other => ApiError::new(ErrorCode::ManifestInvalid, other.to_string()),
    }
}

fn blob_unknown(digest: &Digest) -> ApiError {
    ApiError::new(
        ErrorCode::ManifestBlobUnknown,
        "manifest references a blob or manifest unknown to registry",
    )
    .detail(serde_json::json!({ "digest": digest.to_string() }))
}

fn size_mismatch(digest: &Digest, declared: u64, actual: u64) -> ApiError {
    ApiError::new(
        ErrorCode::ManifestInvalid,
        format!("descriptor of {digest} declares {declared} bytes, but the registry has {actual}"),
    )
}

/// `PUT` a manifest by tag or digest, with optional `?tag=` parameters.
pub async fn put(st: &AppState, name: &str, reference: &str, req: Request) -> ApiResult<Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut tags = Vec::new();
    let pinned = match parse_reference(reference)? {
        Reference::Tag(t) => {
            tags.push(t);
            None
        }
        Reference::Digest(d) => Some(d),
    };
    for (k, v) in query_pairs(&req) {
        if k == "tag" {
            validate_tag(&v)
                .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
            if !tags.contains(&v) {
                tags.push(v);
            }
        }
    }
    let (body, _in_flight) = read_manifest_body(st, req).await?;
    let parsed = ParsedManifest::parse(&body, content_type.as_deref()).map_err(manifest_error)?;
    let algorithm = pinned.as_ref().map_or(Algorithm::Sha256, Digest::algorithm);
    let digest = Digest::of(algorithm, &body);
    if let Some(p) = &pinned
        && p != &digest
    {
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            "manifest digest does not match the reference",
        )
        .detail(serde_json::json!({ "expected": p.to_string(), "computed": digest.to_string() })));
    }
    for d in parsed.required_blobs() {
        match st.meta.repo_blob(name, &d.digest).await? {
            None => return Err(blob_unknown(&d.digest)),
            Some(size) if size != d.size => return Err(size_mismatch(&d.digest, d.size, size)),
            Some(_) => {}
        }
    }
    for child in &parsed.manifests {
        match st.meta.get_manifest(name, &child.digest).await? {
            None => return Err(blob_unknown(&child.digest)),
            Some(rec) if rec.size != child.size => {
                return Err(size_mismatch(&child.digest, child.size, rec.size));
            }
            Some(_) => {}
        }
    }
    // Content and metadata under the digest's lock, so that GC cannot delete the content
    // between the write and the metadata that references it.
    let lock = st.blob_lock(&digest).await?;
    st.blobs.put_bytes(&digest, body.clone()).await?;
    let record = ManifestRecord {
        digest: digest.clone(),
        media_type: parsed.media_type.clone(),
        size: body.len() as u64,
        artifact_type: parsed.effective_artifact_type(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        annotations: parsed
            .annotations
            .as_ref()
            .map(|a| serde_json::to_string(a).expect("string maps serialize")),
    };
    let new = NewManifest {
        record,
        blobs: parsed.required_blobs().map(|d| d.digest.clone()).collect(),
        children: parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
    };
    let tag_locks = registry_coord::locks::tags(&*st.coord, name, &tags)
        .await
        .map_err(|e| shared::lock_failed(e, "a tag of this manifest"))?;
    match st.meta.put_manifest(name, &new, &tags).await {
        Ok(()) => {}
        // A reference disappeared since the checks above (garbage collection swept it).
        Err(MetaError::MissingReference(d)) => return Err(blob_unknown(&d)),
        Err(e) => return Err(e.into()),
    }
    drop(lock);
    let digest_str = digest.to_string();
    st.cache.invalidate(
        name,
        tags.iter().map(String::as_str).chain([digest_str.as_str()]),
    );
    shared::repository_changed(st, name).await;
    drop(tag_locks);
    tracing::info!(repository = name, digest = %digest, tags = ?tags, "manifest stored");
    emit_push(
        st,
        name,
        &digest,
        &parsed.media_type,
        body.len() as u64,
        &tags,
    );
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            hv(&format!("/v2/{name}/manifests/{digest}")),
        )
        .header(CONTENT_DIGEST, hv(&digest_str))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = &parsed.subject {
        resp = resp.header(OCI_SUBJECT, hv(&subject.digest.to_string()));
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
    match parsed {
        Reference::Digest(d) => {
            let tags = st
                .meta
                .delete_manifest(name, &d)
                .await?
                .ok_or_else(|| manifest_unknown(name, reference))?;
            st.cache
                .invalidate(name, tags.iter().map(String::as_str).chain([reference]));
            shared::repository_changed(st, name).await;
            tracing::info!(repository = name, digest = %d, tags = ?tags, "manifest deleted");
            st.events.emit(Event::new(
                Action::Delete,
                Target {
                    repository: name.to_string(),
                    digest: Some(d.clone()),
                    ..Target::default()
                },
            ));
        }
        Reference::Tag(t) => {
            let _tag_lock = registry_coord::locks::tag(&*st.coord, name, &t)
                .await
                .map_err(|e| shared::lock_failed(e, "this tag"))?;
            if !st.meta.delete_tag(name, &t).await? {
                return Err(manifest_unknown(name, reference));
            }
            st.cache.invalidate(name, [t.as_str()]);
            shared::repository_changed(st, name).await;
            tracing::info!(repository = name, tag = %t, "tag deleted");
            st.events.emit(Event::new(
                Action::Delete,
                Target {
                    repository: name.to_string(),
                    tag: Some(t.clone()),
                    ..Target::default()
                },
            ));
        }
    }
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response"))
}

/// One push event per tag the manifest was stored under (one without a tag when pushed by
/// digest only).
fn emit_push(
    st: &AppState,
    name: &str,
    digest: &Digest,
    media_type: &str,
    size: u64,
    tags: &[String],
) {
    let target = |tag: Option<&String>| Target {
        repository: name.to_string(),
        media_type: Some(media_type.to_string()),
        digest: Some(digest.clone()),
        size: Some(size),
        tag: tag.cloned(),
    };
    if tags.is_empty() {
        st.events.emit(Event::new(Action::Push, target(None)));
    }
    for tag in tags {
        st.events.emit(Event::new(Action::Push, target(Some(tag))));
    }
}
