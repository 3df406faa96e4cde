//! hyperregistry's management side: a JSON REST API under `/api/v1` (documented by the
//! OpenAPI document at `/api/v1/openapi.json`), Prometheus metrics at `/metrics`, and webhook
//! notifications of pushes and deletes.
//!
//! - [`router`]: every management route, to merge next to `registry_api::router`.
//!   [`open_router`] (health, OpenAPI, metrics) and [`admin_router`] (`/api/v1/registry/...`)
//!   are its two halves, so an "admin required" layer can wrap the second alone.
//! - [`images`]: repositories and tags: listings, details, deletes.
//! - [`inspect`]: what a tag's manifest and config say (size, platform, layers, created).
//! - [`health`]: `GET /api/v1/health`.
//! - [`metrics`]: the Prometheus registry and the layer counting requests and bytes.
//! - [`notify`]: webhook endpoints fed from bounded queues, with retries.
//! - [`openapi`]: the OpenAPI 3.1 document (utoipa).

pub mod health;
pub mod images;
pub mod inspect;
pub mod metrics;
pub mod notify;
pub mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, delete, get};
use registry_api::AppState;
use registry_api::error::{ApiError, ErrorCode};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::metrics::Metrics;

/// Prefix of every management API path.
pub const API_PREFIX: &str = "/api/v1";

/// What the management handlers share: the registry's state and the metrics.
#[derive(Clone)]
pub struct MgmtState {
    /// The registry's storage, metadata, cache, policy and event sink.
    pub app: AppState,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Descriptions of other routers served alongside, merged into the OpenAPI document.
    pub extra_openapi: Vec<Arc<utoipa::openapi::OpenApi>>,
}

impl MgmtState {
    /// Management state over a registry state and its metrics.
    pub fn new(app: AppState, metrics: Arc<Metrics>) -> MgmtState {
        MgmtState {
            app,
            metrics,
            extra_openapi: Vec::new(),
        }
    }

    /// Also describe another router's routes (merged into the server) in
    /// `GET /api/v1/openapi.json`. Paths and schemas already in the document win on a clash.
    pub fn with_openapi(mut self, extra: utoipa::openapi::OpenApi) -> MgmtState {
        self.extra_openapi.push(Arc::new(extra));
        self
    }

    /// The served OpenAPI document: the management API's, merged with every
    /// [`with_openapi`](MgmtState::with_openapi) addition.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        openapi::merged(&self.extra_openapi)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health, OpenAPI document, metrics.
    Open,
    /// The registry administration API.
    Admin,
}

/// One management route: method, path as the OpenAPI document writes it, path as axum
/// routes it, who may call it.
pub struct Endpoint {
    /// HTTP method.
    pub method: Method,
    /// Path in the OpenAPI document (`{name}` may contain `/`).
    pub doc_path: &'static str,
    /// Path in the axum router (catch-alls for names with slashes).
    pub axum_path: &'static str,
    /// Open or admin.
    pub access: Access,
    handler: fn() -> MethodRouter<MgmtState>,
}

/// Every management route. The router is built from this table alone, so the OpenAPI test
/// can compare it with the document.
pub fn endpoints() -> Vec<Endpoint> {
    fn e(
        method: Method,
        doc_path: &'static str,
        axum_path: &'static str,
        access: Access,
        handler: fn() -> MethodRouter<MgmtState>,
    ) -> Endpoint {
        Endpoint {
            method,
            doc_path,
            axum_path,
            access,
            handler,
        }
    }
    use Access::{Admin, Open};
    vec![
        e(
            Method::GET,
            "/api/v1/health",
            "/api/v1/health",
            Open,
            || get(health::health),
        ),
        e(
            Method::GET,
            "/api/v1/openapi.json",
            "/api/v1/openapi.json",
            Open,
            || get(openapi::document),
        ),
        e(Method::GET, "/metrics", "/metrics", Open, || {
            get(metrics::scrape)
        }),
        e(
            Method::GET,
            "/api/v1/registry/images",
            "/api/v1/registry/images",
            Admin,
            || get(images::list_images),
        ),
        e(
            Method::GET,
            "/api/v1/registry/images/{name}",
            "/api/v1/registry/images/{*name}",
            Admin,
            || get(images::get_image),
        ),
        e(
            Method::DELETE,
            "/api/v1/registry/images/{name}",
            "/api/v1/registry/images/{*name}",
            Admin,
            || delete(images::delete_image),
        ),
        e(
            Method::GET,
            "/api/v1/registry/tags",
            "/api/v1/registry/tags",
            Admin,
            || get(images::list_tags),
        ),
        e(
            Method::GET,
            "/api/v1/registry/tags/{name}:{tag}",
            "/api/v1/registry/tags/{*reference}",
            Admin,
            || get(images::get_tag),
        ),
        e(
            Method::DELETE,
            "/api/v1/registry/tags/{name}:{tag}",
            "/api/v1/registry/tags/{*reference}",
            Admin,
            || delete(images::delete_tag),
        ),
    ]
}

fn build(state: &MgmtState, access: Access) -> Router {
    let mut router = Router::new();
    for ep in endpoints().into_iter().filter(|e| e.access == access) {
        router = router.route(ep.axum_path, (ep.handler)());
    }
    if access == Access::Admin {
        // Unknown paths under the API answer in the API's JSON, not axum's empty 404.
        router = router.route("/api/v1/{*rest}", any(no_such_endpoint));
    }
    let request_id = HeaderName::from_static("x-request-id");
    router
        .with_state(state.clone())
        .layer(axum::middleware::from_fn(access_log))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Health, the OpenAPI document and metrics: the routes anyone may call.
pub fn open_router(state: &MgmtState) -> Router {
    build(state, Access::Open)
}

/// `/api/v1/registry/...` (and JSON 404s for unknown `/api/v1/` paths): the routes an
/// authentication layer should restrict to administrators, e.g.
/// `admin_router(&s).layer(admin_required)`.
pub fn admin_router(state: &MgmtState) -> Router {
    build(state, Access::Admin)
}

/// Every management route, unauthenticated: `open_router` merged with `admin_router`.
pub fn router(state: MgmtState) -> Router {
    open_router(&state).merge(admin_router(&state))
}

async fn no_such_endpoint(method: Method, req: Request) -> Response {
    ApiError::new(
        ErrorCode::NameUnknown,
        format!("no such endpoint: {method} {}", req.uri().path()),
    )
    .status(axum::http::StatusCode::NOT_FOUND)
    .into_response()
}

/// One log line per management request: writes and failures at `info`, reads at `debug`.
async fn access_log(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::error!(request_id = %id, %method, %path, status, ms, "management request");
    } else if status >= 400 || method != Method::GET {
        tracing::info!(request_id = %id, %method, %path, status, ms, "management request");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status, ms, "management request");
    }
    resp
}
