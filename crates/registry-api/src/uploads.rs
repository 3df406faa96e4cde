//! Blob uploads: `POST` (session, monolithic, cross-repository mount), `PATCH` (chunks),
//! `PUT` (finish), `GET` (status) and `DELETE` (cancel) on `/v2/<name>/blobs/uploads/`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use oci_core::{Digest, validate_repository};
use registry_storage::StorageError;

use crate::AppState;
use crate::blobs::CONTENT_DIGEST;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::route::parse_digest;
use crate::shared;

/// Header naming the upload session.
pub const UPLOAD_UUID: &str = "docker-upload-uuid";

/// Query parameters as (key, value) pairs, in order.
pub fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header values built here are ASCII")
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Parse a chunk's `Content-Range: <start>-<end>` (a `bytes ` prefix is tolerated).
fn content_range(req: &Request) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            ErrorCode::RangeInvalid,
            "malformed Content-Range; expected <start>-<end>",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix("bytes")
        .map(|r| r.trim_start_matches([' ', '=']))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if b < a {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn progress_response(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, hv(&upload_location(name, id)))
        .header(header::RANGE, hv(&format!("0-{}", size.saturating_sub(1))))
        .header(UPLOAD_UUID, hv(id))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn created(name: &str, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(&format!("/v2/{name}/blobs/{digest}")))
        .header(CONTENT_DIGEST, hv(&digest.to_string()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUploadUnknown,
        "blob upload unknown to registry",
    )
    .detail(serde_json::json!({ "uuid": id }))
}

async fn check_session(st: &AppState, name: &str, id: &str) -> ApiResult<()> {
    match st.meta.upload_repo(id).await? {
        Some(repo) if repo == name => Ok(()),
        _ => Err(upload_unknown(id)),
    }
}

/// Try to satisfy `?mount=` (with or without `from`) from blobs the registry already has.
async fn try_mount(
    st: &AppState,
    name: &str,
    pairs: &[(String, String)],
) -> ApiResult<Option<Digest>> {
    let Some(mount) = query_get(pairs, "mount") else {
        return Ok(None);
    };
    let digest = parse_digest(mount)?;
    let _lock = st.blob_lock(&digest).await?;
    let known = match query_get(pairs, "from") {
        Some(from) if validate_repository(from).is_ok() => st.meta.repo_blob(from, &digest).await?,
        Some(_) => None,
        None => st.meta.any_blob(&digest).await?,
    };
    let Some(size) = known else { return Ok(None) };
    if st.blobs.stat(&digest).await?.is_none() {
        return Ok(None);
    }
    st.meta.link_blob(name, &digest, size).await?;
    Ok(Some(digest))
}

/// `POST /v2/<name>/blobs/uploads/`.
pub async fn start(st: &AppState, name: &str, req: Request) -> ApiResult<Response> {
    let pairs = query_pairs(&req);
    if let Some(digest) = try_mount(st, name, &pairs).await? {
        return Ok(created(name, &digest));
    }
    let id = uuid::Uuid::new_v4().to_string();
    if let Some(d) = query_get(&pairs, "digest") {
        // Monolithic upload: the whole blob in this request.
        let digest = parse_digest(d)?;
        st.blobs.create_upload(&id).await?;
        let declared = declared_length(&req);
        let mut lock = None;
        let result = async {
            st.blobs
                .append_upload_sized(&id, None, declared, crate::stall::request_body(st, req))
                .await?;
            // Commit and link under the blob lock (see `AppState::blob_lock`).
            lock = Some(st.blob_lock(&digest).await?);
            Ok::<_, ApiError>(st.blobs.commit_upload(&id, &digest).await?)
        }
        .await;
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let _ = st.blobs.cancel_upload(&id).await;
                return Err(e);
            }
        };
        st.meta.link_blob(name, &digest, size).await?;
        drop(lock);
        return Ok(created(name, &digest));
    }
    // The session row first: a blob store may keep the session's state in it (S3).
    st.meta.create_upload(&id, name).await?;
    st.blobs.create_upload(&id).await?;
    Ok(progress_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// Append a request body to a session, checking `Content-Range` and `Content-Length`.
async fn append(st: &AppState, id: &str, req: Request) -> ApiResult<u64> {
    let range = content_range(&req)?;
    let declared = declared_length(&req);
    if let (Some((a, b)), Some(len)) = (range, declared)
        && b - a + 1 != len
    {
        return Err(ApiError::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range {a}-{b} does not match Content-Length {len}"),
        ));
    }
    if declared == Some(0) && range.is_none() {
        return st
            .blobs
            .upload_size(id)
            .await?
            .ok_or_else(|| upload_unknown(id));
    }
    let size = st
        .blobs
        .append_upload_sized(
            id,
            range.map(|r| r.0),
            declared,
            crate::stall::request_body(st, req),
        )
        .await?;
    if let Some((a, b)) = range
        && size != b + 1
    {
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!("chunk {a}-{b} declared, but the upload now ends at byte {size}"),
        ));
    }
    Ok(size)
}

/// Hold the session's lock (one request at a time per session, across replicas).
async fn lock_session(st: &AppState, id: &str) -> ApiResult<registry_coord::LockGuard> {
    match registry_coord::locks::upload(&*st.coord, id).await {
        Ok(g) => Ok(g),
        Err(e) => Err(shared::upload_lock_failed(st, id, e).await),
    }
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: append a chunk.
pub async fn patch(st: &AppState, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    check_session(st, name, id).await?;
    let _session = lock_session(st, id).await?;
    let size = append(st, id, req).await?;
    Ok(progress_response(StatusCode::ACCEPTED, name, id, size))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: optional last chunk, verify, commit.
pub async fn finish(st: &AppState, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    check_session(st, name, id).await?;
    let _session = lock_session(st, id).await?;
    // Another request may have finished or cancelled the session while we waited.
    check_session(st, name, id).await?;
    let pairs = query_pairs(&req);
    let digest = match query_get(&pairs, "digest") {
        Some(d) => parse_digest(d)?,
        None => {
            return Err(ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            ));
        }
    };
    append(st, id, req).await?;
    // Commit and link under the blob lock (see `AppState::blob_lock`).
    let lock = st.blob_lock(&digest).await?;
    let size = match st.blobs.commit_upload(id, &digest).await {
        Ok(size) => size,
        Err(e @ (StorageError::DigestMismatch { .. } | StorageError::UploadUnknown(_))) => {
            st.meta.delete_upload(id).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    st.meta.link_blob(name, &digest, size).await?;
    drop(lock);
    st.meta.delete_upload(id).await?;
    Ok(created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how much has arrived.
pub async fn status(st: &AppState, name: &str, id: &str) -> ApiResult<Response> {
    check_session(st, name, id).await?;
    let Some(size) = st.blobs.upload_size(id).await? else {
        st.meta.delete_upload(id).await?;
        return Err(upload_unknown(id));
    };
    Ok(progress_response(StatusCode::NO_CONTENT, name, id, size))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancel.
pub async fn cancel(st: &AppState, name: &str, id: &str) -> ApiResult<Response> {
    check_session(st, name, id).await?;
    let _session = lock_session(st, id).await?;
    match st.blobs.cancel_upload(id).await {
        Ok(()) | Err(StorageError::UploadUnknown(_)) => {}
        Err(e) => return Err(e.into()),
    }
    st.meta.delete_upload(id).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .expect("valid response"))
}
