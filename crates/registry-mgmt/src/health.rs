//! `GET /api/v1/health`: the metadata database and the blob store each answer a query.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use oci_core::Digest;
use serde::Serialize;
use utoipa::ToSchema;

use crate::MgmtState;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The health report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every check passed, else `error`.
    pub status: String,
    /// Checks by name: `database`, `storage`.
    pub checks: BTreeMap<String, Check>,
}

/// One check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// `ok` or `error`.
    pub status: String,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// What failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn run<F, E>(f: F) -> Check
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let error = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no answer within {} s",
            CHECK_TIMEOUT.as_secs_f64()
        )),
    };
    Check {
        status: if error.is_none() { "ok" } else { "error" }.into(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
    }
}

/// Whether the registry can serve: the metadata database answers a query and the blob
/// store answers a lookup.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Every check passed.", body = Health),
        (status = 503, description = "A check failed; `checks` says which and why.", body = Health),
    )
)]
pub async fn health(State(st): State<MgmtState>) -> Response {
    let meta = st.app.registry.meta().clone();
    let blobs = st.app.registry.blobs().clone();
    let (database, storage) = tokio::join!(
        run(async move { meta.list_repositories(None, 1).await.map(|_| ()) }),
        run(async move {
            // A lookup of the empty blob: it reaches the backend whether or not it exists.
            blobs.stat(&Digest::sha256_of(b"")).await.map(|_| ())
        }),
    );
    let ok = database.error.is_none() && storage.error.is_none();
    if !ok {
        tracing::warn!(database = ?database.error, storage = ?storage.error, "health check failed");
    }
    let report = Health {
        status: if ok { "ok" } else { "error" }.into(),
        checks: BTreeMap::from([
            ("database".to_string(), database),
            ("storage".to_string(), storage),
        ]),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
