//! The OCI Distribution v1.1 HTTP API, as an axum [`Router`].
//!
//! - [`route`]: turns `/v2/...` paths (whose repository names contain slashes) into [`route::Route`]s.
//! - [`blobs`], [`uploads`], [`manifests`], [`listing`]: one module per resource family.
//! - [`cache`]: the in-process manifest cache that makes pulls by tag cheap.
//! - [`error`]: the spec's error codes and JSON body.

pub mod blobs;
pub mod cache;
pub mod error;
pub mod listing;
pub mod manifests;
pub mod route;
pub mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use registry_meta::MetaStore;
use registry_storage::BlobStore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::cache::ManifestCache;
use crate::error::{ApiError, ErrorCode};
use crate::route::Route;

/// The API version header every Docker client checks.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Everything a handler needs: storage, metadata and the manifest cache.
#[derive(Clone)]
pub struct AppState {
    /// Blob content.
    pub blobs: Arc<dyn BlobStore>,
    /// Metadata.
    pub meta: Arc<dyn MetaStore>,
    /// Manifests by (repository, reference).
    pub cache: Arc<ManifestCache>,
}

impl AppState {
    /// Assemble a state from a blob store and a metadata store.
    pub fn new(blobs: Arc<dyn BlobStore>, meta: Arc<dyn MetaStore>) -> AppState {
        AppState {
            blobs,
            meta,
            cache: Arc::new(ManifestCache::new(64 << 20)),
        }
    }
}

/// The registry's router, with request ids, tracing and the API version header.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*path}", any(dispatch))
        .with_state(state)
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::debug_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(API_VERSION_HEADER),
            HeaderValue::from_static("registry/2.0"),
        ))
}

async fn base() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

async fn dispatch(State(st): State<AppState>, req: Request<Body>) -> Response {
    let raw = req.uri().path();
    let path = match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(p) => p.into_owned(),
        Err(_) => {
            return ApiError::new(ErrorCode::NameInvalid, "path is not valid UTF-8")
                .into_response();
        }
    };
    let route = match route::parse(path.strip_prefix("/v2/").unwrap_or(&path)) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let method = req.method().clone();
    let result = match (&route, &method) {
        (Route::Catalog, &Method::GET) => listing::catalog(&st, req).await,
        (Route::Tags { name }, &Method::GET) => listing::tags(&st, name, req).await,
        (Route::Referrers { name, digest }, &Method::GET) => {
            listing::referrers(&st, name, digest, req).await
        }
        (Route::Manifest { name, reference }, &Method::GET) => {
            manifests::get(&st, name, reference, req, false).await
        }
        (Route::Manifest { name, reference }, &Method::HEAD) => {
            manifests::get(&st, name, reference, req, true).await
        }
        (Route::Manifest { name, reference }, &Method::PUT) => {
            manifests::put(&st, name, reference, req).await
        }
        (Route::Manifest { name, reference }, &Method::DELETE) => {
            manifests::delete(&st, name, reference).await
        }
        (Route::Blob { name, digest }, &Method::GET) => {
            blobs::get(&st, name, digest, req, false).await
        }
        (Route::Blob { name, digest }, &Method::HEAD) => {
            blobs::get(&st, name, digest, req, true).await
        }
        (Route::Blob { name, digest }, &Method::DELETE) => blobs::delete(&st, name, digest).await,
        (Route::UploadStart { name }, &Method::POST) => uploads::start(&st, name, req).await,
        (Route::Upload { name, id }, &Method::GET) => uploads::status(&st, name, id).await,
        (Route::Upload { name, id }, &Method::PATCH) => uploads::patch(&st, name, id, req).await,
        (Route::Upload { name, id }, &Method::PUT) => uploads::finish(&st, name, id, req).await,
        (Route::Upload { name, id }, &Method::DELETE) => uploads::cancel(&st, name, id).await,
        _ => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("{method} is not supported on this endpoint"),
        )),
    };
    match result {
        Ok(resp) => resp,
        Err(e) if method == Method::HEAD => {
            // HEAD responses carry no body.
            let mut resp = e.into_response();
            *resp.body_mut() = Body::empty();
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            resp
        }
        Err(e) => e.into_response(),
    }
}
