//! `/api/v1/registry/images` and `/api/v1/registry/tags`: listings (with `n`/`last`
//! pagination and a `Link` header, like the registry's `_catalog`, and `q` substring search),
//! details and deletes.

use axum::Json;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oci_core::{validate_repository, validate_tag};
use registry_api::error::{ApiError, ApiResult, ErrorCode};
use registry_core::CoreError;
use registry_meta::{RepositoryQuery, RepositorySummary, TagQuery, TagSummary};
use serde::Serialize;
use utoipa::ToSchema;

use crate::MgmtState;
use crate::inspect::{TagDetail, inspect_tag};

/// Page size when the client gives no `n`.
pub const DEFAULT_PAGE: usize = 100;
/// Largest `n` honoured.
pub const MAX_PAGE: usize = 1000;

/// One repository in a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageSummary {
    /// Repository name.
    pub name: String,
    /// Number of tags.
    pub tag_count: u64,
    /// Bytes of its manifests plus the distinct blobs they reference.
    pub total_size: u64,
    /// Latest push or tag update, RFC 3339.
    pub last_update: String,
}

/// `GET /api/v1/registry/images`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageList {
    /// Repositories in name order.
    pub images: Vec<ImageSummary>,
}

/// One tag in a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagEntry {
    /// Repository name.
    pub repository: String,
    /// Tag.
    pub tag: String,
    /// Digest of the manifest it points to.
    pub digest: String,
    /// Media type of that manifest.
    pub media_type: String,
    /// Size of that manifest in bytes.
    pub size: u64,
    /// When the tag was last pointed, RFC 3339.
    pub updated: String,
}

/// `GET /api/v1/registry/images/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageDetail {
    /// Repository name.
    pub name: String,
    /// Number of tags.
    pub tag_count: u64,
    /// Bytes of its manifests plus the distinct blobs they reference.
    pub total_size: u64,
    /// Latest push or tag update, RFC 3339.
    pub last_update: String,
    /// Its tags in name order (one page).
    pub tags: Vec<TagEntry>,
}

/// `GET /api/v1/registry/tags`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagList {
    /// Tags in (repository, tag) order.
    pub tags: Vec<TagEntry>,
}

/// `DELETE /api/v1/registry/images/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageDeleted {
    /// Repository name.
    pub name: String,
    /// Tags removed.
    pub tags: Vec<String>,
    /// Digests of the manifests removed.
    pub manifests: Vec<String>,
    /// Blob links removed (content is left for garbage collection).
    pub blob_links: u64,
}

/// `DELETE /api/v1/registry/tags/{name}:{tag}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagDeleted {
    /// Repository name.
    pub repository: String,
    /// Tag removed.
    pub tag: String,
    /// Digest it pointed to (the manifest stays).
    pub digest: String,
}

/// Error body, as the registry writes it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// One entry per error.
    pub errors: Vec<ErrorEntry>,
}

/// One error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorEntry {
    /// Code: `NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, `NAME_INVALID`, `PAGINATION_NUMBER_INVALID`,
    /// `UNSUPPORTED`, `DENIED`, `UNKNOWN`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Structured detail.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

pub use oci_core::time::rfc3339;

/// `n`, `last` and `q` of a listing.
struct ListParams {
    n: usize,
    last: Option<String>,
    q: Option<String>,
}

fn list_params(query: Option<&str>) -> ApiResult<ListParams> {
    let mut p = ListParams {
        n: DEFAULT_PAGE,
        last: None,
        q: None,
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "n" => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::new(
                        ErrorCode::PaginationNumberInvalid,
                        format!("invalid n={v:?}"),
                    )
                })?;
                p.n = n.min(MAX_PAGE);
            }
            "last" if !v.is_empty() => p.last = Some(v.into_owned()),
            "q" if !v.is_empty() => p.q = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(p)
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A `Link: <path?n=&last=[&q=]>; rel="next"` header value.
fn next_link(path: &str, n: usize, last: &str, q: Option<&str>) -> HeaderValue {
    let mut link = format!("<{path}?n={n}&last={}", encode(last));
    if let Some(q) = q {
        link.push_str(&format!("&q={}", encode(q)));
    }
    link.push_str(">; rel=\"next\"");
    HeaderValue::from_str(&link).expect("encoded link is ASCII")
}

fn json_page<T: Serialize>(body: &T, link: Option<HeaderValue>) -> Response {
    let mut resp = Json(body).into_response();
    if let Some(l) = link {
        resp.headers_mut().insert(header::LINK, l);
    }
    resp
}

fn checked_name(name: &str) -> ApiResult<()> {
    validate_repository(name).map_err(|e| {
        ApiError::new(ErrorCode::NameInvalid, e.to_string())
            .detail(serde_json::json!({ "name": name }))
    })
}

fn name_unknown(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NameUnknown,
        "repository name not known to registry",
    )
    .detail(serde_json::json!({ "name": name }))
}

fn tag_unknown(name: &str, tag: &str) -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown, "tag unknown to registry")
        .detail(serde_json::json!({ "name": name, "tag": tag }))
}

/// Refuse a delete the registry's policy forbids, with the registry's codes.
fn admit_delete(st: &MgmtState) -> ApiResult<()> {
    if st.app.policy.read_only {
        return Err(ApiError::new(
            ErrorCode::Denied,
            "the registry is in read-only mode for maintenance",
        ));
    }
    if !st.app.policy.delete_enabled {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "deletes are disabled on this registry",
        ));
    }
    Ok(())
}

/// Split `name:tag` at the last `:` after the last `/`.
pub fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let after_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let colon = after_slash + reference[after_slash..].rfind(':')?;
    let (name, tag) = (&reference[..colon], &reference[colon + 1..]);
    (!name.is_empty() && !tag.is_empty()).then_some((name, tag))
}

/// Parse and validate `{name}:{tag}` from the path.
fn name_and_tag(reference: &str) -> ApiResult<(String, String)> {
    let (name, tag) = split_reference(reference).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NameInvalid,
            format!("expected <name>:<tag>, got {reference:?}"),
        )
    })?;
    checked_name(name)?;
    if validate_tag(tag).is_err() {
        // A malformed tag names nothing.
        return Err(tag_unknown(name, tag));
    }
    Ok((name.to_string(), tag.to_string()))
}

fn summary(r: RepositorySummary) -> ImageSummary {
    ImageSummary {
        name: r.name,
        tag_count: r.tag_count,
        total_size: r.total_size,
        last_update: rfc3339(r.last_update),
    }
}

fn tag_entry(t: TagSummary) -> TagEntry {
    TagEntry {
        repository: t.repository,
        tag: t.tag,
        digest: t.digest.to_string(),
        media_type: t.media_type,
        size: t.size,
        updated: rfc3339(t.updated_at),
    }
}

/// Repositories with tag count, total size and last update.
#[utoipa::path(
    get,
    path = "/api/v1/registry/images",
    tag = "registry",
    params(
        ("n" = Option<usize>, Query, description = "Page size (default 100, at most 1000)."),
        ("last" = Option<String>, Query, description = "Return repositories after this name (from the previous page's `Link`)."),
        ("q" = Option<String>, Query, description = "Only repositories whose name contains this substring."),
    ),
    responses(
        (status = 200, description = "One page of repositories in name order; a `Link: <...>; rel=\"next\"` header when there are more.", body = ImageList),
        (status = 400, description = "`n` is not a number (PAGINATION_NUMBER_INVALID).", body = ErrorBody),
    )
)]
pub async fn list_images(
    State(st): State<MgmtState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let p = list_params(query.as_deref())?;
    let mut rows = if p.n == 0 {
        Vec::new()
    } else {
        st.app
            .registry
            .meta()
            .repository_summaries(&RepositoryQuery {
                name: None,
                contains: p.q.as_deref(),
                after: p.last.as_deref(),
                limit: p.n + 1,
            })
            .await?
    };
    let link = (rows.len() > p.n).then(|| {
        rows.truncate(p.n);
        let last = &rows.last().expect("n > 0").name;
        next_link("/api/v1/registry/images", p.n, last, p.q.as_deref())
    });
    let body = ImageList {
        images: rows.into_iter().map(summary).collect(),
    };
    Ok(json_page(&body, link))
}

/// A repository and its tags.
#[utoipa::path(
    get,
    path = "/api/v1/registry/images/{name}",
    tag = "registry",
    params(
        ("name" = String, Path, description = "Repository name; it may contain `/` (sent as is)."),
        ("n" = Option<usize>, Query, description = "Tags per page (default 100, at most 1000)."),
        ("last" = Option<String>, Query, description = "Return tags after this one."),
    ),
    responses(
        (status = 200, description = "The repository with one page of its tags; `Link` when there are more.", body = ImageDetail),
        (status = 400, description = "Invalid name (NAME_INVALID) or `n` (PAGINATION_NUMBER_INVALID).", body = ErrorBody),
        (status = 404, description = "No such repository (NAME_UNKNOWN).", body = ErrorBody),
    )
)]
pub async fn get_image(
    State(st): State<MgmtState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    checked_name(&name)?;
    let p = list_params(query.as_deref())?;
    let repo = st
        .app
        .registry
        .meta()
        .repository_summaries(&RepositoryQuery {
            name: Some(&name),
            contains: None,
            after: None,
            limit: 1,
        })
        .await?
        .pop()
        .ok_or_else(|| name_unknown(&name))?;
    let mut tags = if p.n == 0 {
        Vec::new()
    } else {
        st.app
            .registry
            .meta()
            .tag_summaries(&TagQuery {
                repository: Some(&name),
                tag: None,
                contains: None,
                after: p.last.as_deref().map(|t| (name.as_str(), t)),
                limit: p.n + 1,
            })
            .await?
    };
    let link = (tags.len() > p.n).then(|| {
        tags.truncate(p.n);
        let last = &tags.last().expect("n > 0").tag;
        next_link(&format!("/api/v1/registry/images/{name}"), p.n, last, None)
    });
    let s = summary(repo);
    let body = ImageDetail {
        name: s.name,
        tag_count: s.tag_count,
        total_size: s.total_size,
        last_update: s.last_update,
        tags: tags.into_iter().map(tag_entry).collect(),
    };
    Ok(json_page(&body, link))
}

/// Delete a repository: its tags, manifests and blob links, in one transaction. Blob
/// content stays until garbage collection.
#[utoipa::path(
    delete,
    path = "/api/v1/registry/images/{name}",
    tag = "registry",
    params(("name" = String, Path, description = "Repository name; it may contain `/`.")),
    responses(
        (status = 200, description = "Deleted; what was removed.", body = ImageDeleted),
        (status = 400, description = "Invalid name (NAME_INVALID).", body = ErrorBody),
        (status = 403, description = "The registry is read-only (DENIED).", body = ErrorBody),
        (status = 404, description = "No such repository (NAME_UNKNOWN).", body = ErrorBody),
        (status = 405, description = "Deletes are disabled (UNSUPPORTED).", body = ErrorBody),
    )
)]
pub async fn delete_image(
    State(st): State<MgmtState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    admit_delete(&st)?;
    checked_name(&name)?;
    let repo = st.app.repository(&name)?;
    let removed = registry_core::events::with_request(
        registry_api::events::request_info(&req),
        repo.delete(),
    )
    .await?;
    let digests: Vec<String> = removed
        .manifests
        .iter()
        .map(|m| m.digest.to_string())
        .collect();
    Ok(Json(ImageDeleted {
        name,
        tags: removed.tags,
        manifests: digests,
        blob_links: removed.blob_links,
    })
    .into_response())
}

/// Tags across repositories.
#[utoipa::path(
    get,
    path = "/api/v1/registry/tags",
    tag = "registry",
    params(
        ("n" = Option<usize>, Query, description = "Page size (default 100, at most 1000)."),
        ("last" = Option<String>, Query, description = "Return tags after this `name:tag` (from the previous page's `Link`)."),
        ("q" = Option<String>, Query, description = "Only tags whose `name:tag` contains this substring."),
    ),
    responses(
        (status = 200, description = "One page of tags in (repository, tag) order; `Link` when there are more.", body = TagList),
        (status = 400, description = "`n` is not a number (PAGINATION_NUMBER_INVALID).", body = ErrorBody),
    )
)]
pub async fn list_tags(
    State(st): State<MgmtState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let p = list_params(query.as_deref())?;
    let after = match p.last.as_deref() {
        None => None,
        Some(l) => Some(split_reference(l).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NameInvalid,
                format!("last={l:?} is not <name>:<tag>"),
            )
        })?),
    };
    let mut tags = if p.n == 0 {
        Vec::new()
    } else {
        st.app
            .registry
            .meta()
            .tag_summaries(&TagQuery {
                repository: None,
                tag: None,
                contains: p.q.as_deref(),
                after,
                limit: p.n + 1,
            })
            .await?
    };
    let link = (tags.len() > p.n).then(|| {
        tags.truncate(p.n);
        let t = tags.last().expect("n > 0");
        next_link(
            "/api/v1/registry/tags",
            p.n,
            &format!("{}:{}", t.repository, t.tag),
            p.q.as_deref(),
        )
    });
    Ok(json_page(
        &TagList {
            tags: tags.into_iter().map(tag_entry).collect(),
        },
        link,
    ))
}

/// One tag: digest, size, created, platform, layer count, per-platform entries of an
/// index, referrers, and the manifest itself.
#[utoipa::path(
    get,
    path = "/api/v1/registry/tags/{name}:{tag}",
    tag = "registry",
    params(
        ("name" = String, Path, description = "Repository name; it may contain `/`. The path is split at the last `:` after the last `/`."),
        ("tag" = String, Path, description = "Tag."),
    ),
    responses(
        (status = 200, description = "The tag's details.", body = TagDetail),
        (status = 400, description = "Not `<name>:<tag>`, or an invalid name (NAME_INVALID).", body = ErrorBody),
        (status = 404, description = "No such tag (MANIFEST_UNKNOWN).", body = ErrorBody),
    )
)]
pub async fn get_tag(
    State(st): State<MgmtState>,
    Path(reference): Path<String>,
) -> ApiResult<Response> {
    let (name, tag) = name_and_tag(&reference)?;
    let detail = inspect_tag(&st.app, &name, &tag)
        .await?
        .ok_or_else(|| tag_unknown(&name, &tag))?;
    Ok(Json(detail).into_response())
}

/// Delete a tag (the manifest stays, reachable by digest).
#[utoipa::path(
    delete,
    path = "/api/v1/registry/tags/{name}:{tag}",
    tag = "registry",
    params(
        ("name" = String, Path, description = "Repository name; it may contain `/`."),
        ("tag" = String, Path, description = "Tag."),
    ),
    responses(
        (status = 200, description = "Deleted.", body = TagDeleted),
        (status = 400, description = "Not `<name>:<tag>`, or an invalid name (NAME_INVALID).", body = ErrorBody),
        (status = 403, description = "The registry is read-only (DENIED).", body = ErrorBody),
        (status = 404, description = "No such tag (MANIFEST_UNKNOWN).", body = ErrorBody),
        (status = 405, description = "Deletes are disabled (UNSUPPORTED).", body = ErrorBody),
    )
)]
pub async fn delete_tag(
    State(st): State<MgmtState>,
    Path(reference): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    admit_delete(&st)?;
    let (name, tag) = name_and_tag(&reference)?;
    let repo = st.app.repository(&name)?;
    let record = registry_core::events::with_request(
        registry_api::events::request_info(&req),
        repo.untag(&tag),
    )
    .await
    .map_err(|e| match e {
        CoreError::ManifestUnknown { .. } => tag_unknown(&name, &tag),
        other => other.into(),
    })?;
    Ok((
        StatusCode::OK,
        Json(TagDeleted {
            repository: name,
            tag,
            digest: record.digest.to_string(),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_after_the_last_slash() {
        assert_eq!(split_reference("a/b:v1"), Some(("a/b", "v1")));
        assert_eq!(
            split_reference("host:5000/a:v1"),
            Some(("host:5000/a", "v1"))
        );
        assert_eq!(split_reference("a:b/c:d"), Some(("a:b/c", "d")));
        assert_eq!(split_reference("a/b"), None);
        assert_eq!(split_reference("a:b/c"), None);
        assert_eq!(split_reference(":v1"), None);
        assert_eq!(split_reference("a:"), None);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn list_parameters() {
        let p = list_params(Some("n=5000&last=a%2Fb&q=x")).unwrap();
        assert_eq!(p.n, MAX_PAGE);
        assert_eq!(p.last.as_deref(), Some("a/b"));
        assert_eq!(p.q.as_deref(), Some("x"));
        assert_eq!(list_params(None).unwrap().n, DEFAULT_PAGE);
        assert_eq!(
            list_params(Some("n=x")).err().unwrap().code,
            ErrorCode::PaginationNumberInvalid
        );
    }
}
