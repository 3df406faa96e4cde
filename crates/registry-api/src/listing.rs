//! Listings: `tags/list`, `_catalog` (both with `n`/`last` pagination and `Link`) and
//! `referrers/<digest>` (with the `artifactType` filter).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use oci_core::manifest::OCI_INDEX;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::route::parse_digest;
use crate::uploads::query_pairs;

/// Page size of `_catalog` when the client gives no `n`, and the largest `n` honoured.
pub const MAX_PAGE: usize = 10_000;

struct Page {
    n: Option<usize>,
    last: Option<String>,
}

fn page(req: &Request) -> ApiResult<Page> {
    let mut p = Page {
        n: None,
        last: None,
    };
    for (k, v) in query_pairs(req) {
        match k.as_str() {
            "n" => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::new(
                        ErrorCode::PaginationNumberInvalid,
                        format!("invalid n={v:?}"),
                    )
                })?;
                p.n = Some(n.min(MAX_PAGE));
            }
            "last" => p.last = Some(v),
            _ => {}
        }
    }
    Ok(p)
}

fn json_response(body: &serde_json::Value, link: Option<String>) -> Response {
    let bytes = serde_json::to_vec(body).expect("json values serialize");
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len());
    if let Some(l) = link {
        b = b.header(header::LINK, HeaderValue::from_str(&l).expect("ascii link"));
    }
    b.body(Body::from(bytes)).expect("valid response")
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Fetch one page plus one item to learn whether there is a next page.
fn split_page(mut items: Vec<String>, n: usize) -> (Vec<String>, Option<String>) {
    if items.len() > n {
        items.truncate(n);
        let last = items.last().cloned();
        (items, last)
    } else {
        (items, None)
    }
}

/// `GET /v2/<name>/tags/list`.
pub async fn tags(st: &AppState, name: &str, req: Request) -> ApiResult<Response> {
    let p = page(&req)?;
    let n = p.n.unwrap_or(usize::MAX - 1);
    let items = st
        .repository(name)?
        .tags(p.last.as_deref(), if n == 0 { 0 } else { n + 1 })
        .await?;
    let (tags, next) = split_page(items, n);
    let link = next.map(|last| {
        format!(
            "</v2/{name}/tags/list?n={n}&last={}>; rel=\"next\"",
            encode(&last)
        )
    });
    Ok(json_response(
        &serde_json::json!({ "name": name, "tags": tags }),
        link,
    ))
}

/// `GET /v2/_catalog`.
pub async fn catalog(st: &AppState, req: Request) -> ApiResult<Response> {
    let p = page(&req)?;
    let n = p.n.unwrap_or(MAX_PAGE);
    let items = if n == 0 {
        Vec::new()
    } else {
        st.registry.catalog(p.last.as_deref(), n + 1).await?
    };
    let (repos, next) = split_page(items, n);
    let link =
        next.map(|last| format!("</v2/_catalog?n={n}&last={}>; rel=\"next\"", encode(&last)));
    Ok(json_response(
        &serde_json::json!({ "repositories": repos }),
        link,
    ))
}

/// `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject is `digest`.
pub async fn referrers(
    st: &AppState,
    name: &str,
    digest: &str,
    req: Request,
) -> ApiResult<Response> {
    let subject = parse_digest(digest)?;
    let filter = query_pairs(&req)
        .into_iter()
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v);
    let records = st
        .repository(name)?
        .referrers(&subject, filter.as_deref())
        .await?;
    let manifests: Vec<serde_json::Value> = records
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest.to_string(),
                "size": r.size,
            });
            if let Some(at) = r.artifact_type {
                d["artifactType"] = at.into();
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&body).expect("json values serialize");
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX)
        .header(header::CONTENT_LENGTH, bytes.len());
    if filter.is_some() {
        b = b.header("oci-filters-applied", "artifactType");
    }
    Ok(b.body(Body::from(bytes)).expect("valid response"))
}
