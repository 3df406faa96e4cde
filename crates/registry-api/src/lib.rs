//! The OCI Distribution v1.1 HTTP API, as an axum [`Router`].
//!
//! The HTTP side only: requests are parsed, admitted and answered here, and every operation
//! goes to a [`registry_core::Repository`].
//!
//! - [`route`]: turns `/v2/...` paths (whose repository names contain slashes) into [`route::Route`]s.
//! - [`blobs`], [`uploads`], [`manifests`], [`listing`]: one module per resource family.
//! - [`auth`]: the guard in front of `/v2` and the management API; `/token`.
//! - [`events`]: the request behind each write, for the events the registry emits.
//! - [`stall`]: request bodies cut off when they stall.
//! - [`error`]: the spec's error codes and JSON body.

pub mod auth;
pub mod blobs;
pub mod error;
pub mod events;
pub mod hooks;
pub mod listing;
pub mod manifests;
pub mod route;
pub mod stall;
pub mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use registry_core::{Registry, Repository};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::Instrument;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::route::Route;

/// The API version header every Docker client checks.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Everything a handler needs: the registry service, the operator's policy, its limits,
/// authentication and the push hook.
#[derive(Clone)]
pub struct AppState {
    /// The registry: every read and write goes through it.
    pub registry: Registry,
    /// Operator policy.
    pub policy: Arc<Policy>,
    /// Permits for requests that write blob data, when limited.
    upload_permits: Option<Arc<tokio::sync::Semaphore>>,
    /// One permit per manifest byte being received, when limited.
    manifest_bytes: Option<Arc<tokio::sync::Semaphore>>,
    /// Told about every manifest a client pushed (none by default).
    pub push_hook: Option<Arc<dyn hooks::PushHook>>,
    /// Authentication and authorization; `None` lets every request through.
    pub auth: Option<Arc<registry_auth::Auth>>,
}

/// Operator policy: what the registry allows.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether DELETE is allowed (Distribution's `storage.delete.enabled`).
    pub delete_enabled: bool,
    /// Maintenance mode: every write is refused with DENIED.
    pub read_only: bool,
    /// Requests writing blob data at once; beyond it, TOOMANYREQUESTS. 0 = unlimited.
    pub max_concurrent_uploads: usize,
    /// How slow an upload body may be before it is cut off (`None`: never).
    pub upload_stall: Option<stall::StallLimit>,
    /// Manifest bytes being received across all requests; a PUT that would go beyond it
    /// gets TOOMANYREQUESTS with `Retry-After`. 0 = unlimited.
    pub max_manifest_bytes_in_flight: usize,
}

/// Default of [`Policy::max_manifest_bytes_in_flight`]: 64 MiB (16 largest manifests).
pub const DEFAULT_MANIFEST_BYTES_IN_FLIGHT: usize = 64 << 20;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            delete_enabled: true,
            read_only: false,
            max_concurrent_uploads: 0,
            upload_stall: None,
            max_manifest_bytes_in_flight: DEFAULT_MANIFEST_BYTES_IN_FLIGHT,
        }
    }
}

impl AppState {
    /// Serve `registry` under `policy`.
    pub fn new(registry: Registry, policy: Policy) -> AppState {
        let upload_permits = (policy.max_concurrent_uploads > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(policy.max_concurrent_uploads)));
        let manifest_bytes = (policy.max_manifest_bytes_in_flight > 0).then(|| {
            Arc::new(tokio::sync::Semaphore::new(
                policy
                    .max_manifest_bytes_in_flight
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ))
        });
        AppState {
            registry,
            policy: Arc::new(policy),
            upload_permits,
            manifest_bytes,
            push_hook: None,
            auth: None,
        }
    }

    /// The repository a request names; `NAME_INVALID` if the name breaks the grammar.
    pub fn repository(&self, name: &str) -> ApiResult<Repository> {
        Ok(self.registry.repository(name)?)
    }

    /// Call `hook` after every successful manifest push by a client.
    pub fn with_push_hook(mut self, hook: Arc<dyn hooks::PushHook>) -> AppState {
        self.push_hook = Some(hook);
        self
    }

    /// Require authentication and enforce access rules on every `/v2` request.
    pub fn with_auth(mut self, auth: Arc<registry_auth::Auth>) -> AppState {
        self.auth = Some(auth);
        self
    }

    /// Refuse a request up front when policy says so; returns a permit to hold for
    /// requests that write blob data.
    fn admit(
        &self,
        route: &Route,
        method: &Method,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ApiError> {
        let writes = !matches!(*method, Method::GET | Method::HEAD);
        if writes && self.policy.read_only {
            return Err(ApiError::new(
                ErrorCode::Denied,
                "the registry is in read-only mode for maintenance",
            ));
        }
        if *method == Method::DELETE && !self.policy.delete_enabled {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                "deletes are disabled on this registry",
            ));
        }
        let uploads_data = matches!(route, Route::UploadStart { .. } | Route::Upload { .. })
            && matches!(*method, Method::POST | Method::PATCH | Method::PUT);
        match (&self.upload_permits, uploads_data) {
            (Some(sem), true) => sem.clone().try_acquire_owned().map(Some).map_err(|_| {
                ApiError::new(
                    ErrorCode::TooManyRequests,
                    "too many uploads in progress; retry later",
                )
                .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }),
            _ => Ok(None),
        }
    }
}

/// The registry's router, with request ids, tracing and the API version header.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let guard = axum::middleware::from_fn_with_state(state.clone(), auth::guard);
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*path}", any(dispatch))
        .route("/token", get(auth::token_get).post(auth::token_post))
        .with_state(state)
        .layer(axum::middleware::from_fn(events::capture))
        .layer(guard)
        .layer(axum::middleware::from_fn(access_log))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(API_VERSION_HEADER),
            HeaderValue::from_static("registry/2.0"),
        ))
}

/// One log line per request, inside a span carrying the request id. Writes and failures log
/// at `info`, successful reads at `debug` (pulls are the hot path).
async fn access_log(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let span = tracing::info_span!("request", request_id = %id);
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let _entered = span.enter();
    if status >= 500 {
        tracing::error!(%method, %path, status, ms, "request");
    } else if status >= 400 || !matches!(method, Method::GET | Method::HEAD) {
        tracing::info!(%method, %path, status, ms, "request");
    } else {
        tracing::debug!(%method, %path, status, ms, "request");
    }
    resp
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
    let _permit = match st.admit(&route, &method) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
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
