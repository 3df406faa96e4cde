//! `GET`, `HEAD` and `DELETE /v2/<name>/blobs/<digest>`, with single and multi-range reads.

use std::ops::RangeInclusive;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use http_range_header::{SyntacticallyCorrectRange, parse_range_header};
use registry_core::{BlobRead, BlobWant};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::route::parse_digest;

/// Header carrying the content digest on blob and manifest responses.
pub const CONTENT_DIGEST: &str = "docker-content-digest";

/// Resolve the byte ranges of a `Range` header against a blob size: clamped, sorted, with
/// overlapping and adjacent ranges merged. `None` for an unsatisfiable header.
pub fn resolve_ranges(value: &str, size: u64) -> Option<Vec<RangeInclusive<u64>>> {
    let parsed = parse_range_header(value).ok()?;
    let mut ranges: Vec<(u64, u64)> = parsed
        .into_ranges()
        .into_iter()
        .filter_map(|r| match r {
            SyntacticallyCorrectRange::FromStart(s) if s < size => Some((s, size - 1)),
            SyntacticallyCorrectRange::FromLast(n) if n > 0 && size > 0 => {
                Some((size.saturating_sub(n), size - 1))
            }
            SyntacticallyCorrectRange::Indexed(s, e) if s < size => Some((s, e.min(size - 1))),
            _ => None,
        })
        .collect();
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    Some(merged.into_iter().map(|(s, e)| s..=e).collect())
}

fn unsatisfiable(size: u64) -> ApiError {
    ApiError::new(ErrorCode::RangeInvalid, "requested range not satisfiable").header(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
    )
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header values built here are ASCII")
}

/// `GET`/`HEAD` a blob, honouring `Range`.
pub async fn get(
    st: &AppState,
    name: &str,
    digest: &str,
    req: Request,
    head: bool,
) -> ApiResult<Response> {
    let digest = parse_digest(digest)?;
    let repo = st.repository(name)?;
    let range_header = req
        .headers()
        .get(header::RANGE)
        .map(|v| v.to_str().unwrap_or("invalid").to_string());
    let want = if head || range_header.is_some() {
        BlobWant::Stored
    } else {
        BlobWant::Stream
    };
    let size = match repo.stat_blob(&digest, want).await? {
        BlobRead::Local { size } => size,
        BlobRead::Streaming { size, body } => {
            // A pull-through miss: the upstream's body, stored as it streams.
            let mut builder = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_DIGEST, hv(&digest.to_string()))
                .header(header::ETAG, hv(&format!("\"{digest}\"")));
            if let Some(len) = size {
                builder = builder.header(header::CONTENT_LENGTH, len);
            }
            return Ok(builder
                .body(Body::from_stream(body))
                .expect("valid response"));
        }
    };
    // Like Distribution: GET and HEAD go to the storage's presigned URL when it has one,
    // with or without Range. Several ranges are served here: S3 answers only single ranges.
    let multi_range = range_header.as_deref().is_some_and(|v| v.contains(','));
    if !multi_range && let Some(url) = repo.presigned_url(&digest, head).await? {
        return Ok(Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, hv(&url))
            .header(CONTENT_DIGEST, hv(&digest.to_string()))
            .header(header::CONTENT_LENGTH, 0)
            .body(Body::empty())
            .expect("valid response"));
    }
    let ranges = match &range_header {
        Some(v) => Some(resolve_ranges(v, size).ok_or_else(|| unsatisfiable(size))?),
        None => None,
    };
    let builder = Response::builder()
        .header(CONTENT_DIGEST, hv(&digest.to_string()))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, hv(&format!("\"{digest}\"")))
        .header(header::CACHE_CONTROL, "max-age=31536000");
    let resp = match ranges.as_deref() {
        None | Some([]) => {
            let body = if head {
                Body::empty()
            } else {
                Body::from_stream(repo.read_blob(&digest, 0, size).await?)
            };
            builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, size)
                .body(body)
        }
        Some([r]) => {
            let (start, end) = (*r.start(), *r.end());
            let len = end - start + 1;
            let body = if head {
                Body::empty()
            } else {
                Body::from_stream(repo.read_blob(&digest, start, len).await?)
            };
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(
                    header::CONTENT_RANGE,
                    hv(&format!("bytes {start}-{end}/{size}")),
                )
                .header(header::CONTENT_LENGTH, len)
                .body(body)
        }
        Some(many) => {
            let boundary = uuid::Uuid::new_v4().simple().to_string();
            let parts: Vec<(Bytes, u64, u64)> = many
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let lead = if i == 0 { "" } else { "\r\n" };
                    let head = format!(
                        "{lead}--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
                        r.start(),
                        r.end()
                    );
                    (Bytes::from(head), *r.start(), r.end() - r.start() + 1)
                })
                .collect();
            let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            let total: u64 = parts
                .iter()
                .map(|(h, _, l)| h.len() as u64 + l)
                .sum::<u64>()
                + tail.len() as u64;
            let body = if head {
                Body::empty()
            } else {
                let digest = digest.clone();
                let stream = stream::iter(parts)
                    .map(move |(part_head, start, len)| {
                        let repo = repo.clone();
                        let digest = digest.clone();
                        let data = stream::once(async move {
                            repo.read_blob(&digest, start, len)
                                .await
                                .map_err(std::io::Error::other)
                        })
                        .try_flatten();
                        stream::once(async move { Ok::<_, std::io::Error>(part_head) }).chain(data)
                    })
                    .flatten()
                    .chain(stream::once(async move { Ok(tail) }));
                Body::from_stream(stream)
            };
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    header::CONTENT_TYPE,
                    hv(&format!("multipart/byteranges; boundary={boundary}")),
                )
                .header(header::CONTENT_LENGTH, total)
                .body(body)
        }
    };
    Ok(resp.expect("valid response"))
}

/// `DELETE` a blob from a repository (the content stays until garbage collection).
pub async fn delete(st: &AppState, name: &str, digest: &str) -> ApiResult<Response> {
    let digest = parse_digest(digest)?;
    st.repository(name)?.delete_blob(&digest).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(CONTENT_DIGEST, hv(&digest.to_string()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_conformance_cases() {
        assert_eq!(
            resolve_ranges("bytes=500-1499", 3000),
            Some(vec![500..=1499])
        );
        assert_eq!(resolve_ranges("bytes=500-", 3000), Some(vec![500..=2999]));
        assert_eq!(resolve_ranges("bytes=-500", 3000), Some(vec![2500..=2999]));
        assert_eq!(
            resolve_ranges("bytes=2000-5000", 3000),
            Some(vec![2000..=2999])
        );
        assert_eq!(resolve_ranges("bytes=500-0", 3000), None);
        assert_eq!(resolve_ranges("bytes=3000-", 3000), None);
        assert_eq!(resolve_ranges("items=0-1", 3000), None);
    }

    #[test]
    fn ranges_merge_overlapping_and_adjacent() {
        assert_eq!(
            resolve_ranges("bytes=10-19,0-4,5-9,100-110,105-120", 1000),
            Some(vec![0..=19, 100..=120])
        );
        assert_eq!(
            resolve_ranges("bytes=0-1,5-6", 1000),
            Some(vec![0..=1, 5..=6])
        );
    }
}
