//! Blob uploads: `POST` (session, monolithic, cross-repository mount), `PATCH` (chunks),
//! `PUT` (finish), `GET` (status) and `DELETE` (cancel) on `/v2/<name>/blobs/uploads/`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use oci_core::Digest;
use registry_core::blobs::Chunk;

use crate::AppState;
use crate::blobs::CONTENT_DIGEST;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::route::parse_digest;

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

/// `POST /v2/<name>/blobs/uploads/`: a session, a monolithic upload (`?digest=`) or a
/// cross-repository mount (`?mount=`, with or without `from`).
pub async fn start(st: &AppState, name: &str, req: Request) -> ApiResult<Response> {
    let repo = st.repository(name)?;
    let pairs = query_pairs(&req);
    if let Some(mount) = query_get(&pairs, "mount") {
        let digest = parse_digest(mount)?;
        if repo
            .mount_blob(&digest, query_get(&pairs, "from"))
            .await?
            .is_some()
        {
            return Ok(created(name, &digest));
        }
    }
    if let Some(d) = query_get(&pairs, "digest") {
        // Monolithic upload: the whole blob in this request.
        let digest = parse_digest(d)?;
        let declared = declared_length(&req);
        repo.upload_blob(&digest, declared, crate::stall::request_body(st, req))
            .await?;
        return Ok(created(name, &digest));
    }
    let id = repo.start_upload().await?;
    Ok(progress_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// A request body as a chunk, its `Content-Range` and `Content-Length` checked together.
fn chunk(st: &AppState, req: Request) -> ApiResult<Chunk> {
    let range = content_range(&req)?;
    let length = declared_length(&req);
    if let (Some((a, b)), Some(len)) = (range, length)
        && b - a + 1 != len
    {
        return Err(ApiError::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range {a}-{b} does not match Content-Length {len}"),
        ));
    }
    Ok(Chunk {
        range,
        length,
        body: crate::stall::request_body(st, req),
    })
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: append a chunk.
pub async fn patch(st: &AppState, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    let repo = st.repository(name)?;
    let size = repo.append(id, chunk(st, req)?).await?;
    Ok(progress_response(StatusCode::ACCEPTED, name, id, size))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: optional last chunk, verify, commit.
pub async fn finish(st: &AppState, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    let repo = st.repository(name)?;
    let pairs = query_pairs(&req);
    let digest = match query_get(&pairs, "digest") {
        Some(d) => parse_digest(d)?,
        None => {
            repo.check_session(id).await?;
            return Err(ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            ));
        }
    };
    repo.commit_blob(id, &digest, chunk(st, req)?).await?;
    Ok(created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how much has arrived.
pub async fn status(st: &AppState, name: &str, id: &str) -> ApiResult<Response> {
    let size = st.repository(name)?.upload_status(id).await?;
    Ok(progress_response(StatusCode::NO_CONTENT, name, id, size))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancel.
pub async fn cancel(st: &AppState, name: &str, id: &str) -> ApiResult<Response> {
    st.repository(name)?.cancel_upload(id).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .expect("valid response"))
}
