//! Prometheus metrics: requests by route family × method × status, request durations,
//! bytes in and out, upload sessions in progress, storage used, webhook deliveries.
//!
//! [`instrument`] wraps a router (the `/v2` API and the management API) with the counting
//! middleware; [`scrape`] serves `GET /metrics` in the text format. Labels are bounded:
//! paths become route families, never raw paths.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use registry_api::route::Route;
use registry_meta::{MetaStore, StorageStats};

use crate::MgmtState;

/// How long storage figures read from the metadata store are reused.
pub const STATS_TTL: Duration = Duration::from_secs(5);

/// Errors building or rendering metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created, registered or encoded.
    #[error("prometheus: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// Reading storage figures failed.
    #[error("reading storage figures: {0}")]
    Meta(#[from] registry_meta::MetaError),
}

/// The registry's metrics and the registry they live in.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    upload_sessions: IntGauge,
    storage_bytes: IntGauge,
    blobs: IntGauge,
    notifications: IntCounterVec,
    meta: Arc<dyn MetaStore>,
    stats: tokio::sync::Mutex<Option<(Instant, StorageStats)>>,
}

impl Metrics {
    /// Create the metrics; storage figures come from `meta`.
    pub fn new(meta: Arc<dyn MetaStore>) -> Result<Metrics, MetricsError> {
        let registry = Registry::new_custom(Some("hyperregistry".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route family, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to the response headers, by route family and method.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route", "method"],
        )?;
        let bytes_in = IntCounterVec::new(
            Opts::new(
                "http_request_bytes_total",
                "Request body bytes received, by route family.",
            ),
            &["route"],
        )?;
        let bytes_out = IntCounterVec::new(
            Opts::new(
                "http_response_bytes_total",
                "Response body bytes sent, by route family.",
            ),
            &["route"],
        )?;
        let upload_sessions = IntGauge::new(
            "upload_sessions",
            "Upload sessions started and not yet finished or cancelled.",
        )?;
        let storage_bytes = IntGauge::new(
            "storage_bytes",
            "Bytes of committed blobs and manifests, from the metadata store.",
        )?;
        let blobs = IntGauge::new("blobs", "Committed blobs, from the metadata store.")?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "notifications_total",
                "Webhook events by endpoint and outcome (delivered, failed attempt, dropped).",
            ),
            &["endpoint", "outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        registry.register(Box::new(upload_sessions.clone()))?;
        registry.register(Box::new(storage_bytes.clone()))?;
        registry.register(Box::new(blobs.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            bytes_in,
            bytes_out,
            upload_sessions,
            storage_bytes,
            blobs,
            notifications,
            meta,
            stats: tokio::sync::Mutex::new(None),
        })
    }

    /// Count webhook events of `endpoint` ending in `outcome` (`delivered`, `failed`,
    /// `dropped`).
    pub fn notification(&self, endpoint: &str, outcome: &str, events: u64) {
        self.notifications
            .with_label_values(&[endpoint, outcome])
            .inc_by(events);
    }

    /// Refresh the storage gauges when older than [`STATS_TTL`].
    async fn refresh_stats(&self) -> Result<(), MetricsError> {
        let mut cached = self.stats.lock().await;
        if let Some((at, _)) = *cached
            && at.elapsed() < STATS_TTL
        {
            return Ok(());
        }
        let stats = self.meta.storage_stats().await?;
        self.upload_sessions.set(stats.upload_sessions as i64);
        self.storage_bytes.set(stats.bytes as i64);
        self.blobs.set(stats.blobs as i64);
        *cached = Some((Instant::now(), stats));
        Ok(())
    }

    /// Every metric in the Prometheus text format.
    pub async fn render(&self) -> Result<String, MetricsError> {
        self.refresh_stats().await?;
        let mut out = String::new();
        TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// The route family of a path: `blob`, `manifest`, `upload`, `tags`, `catalog`,
/// `referrers`, `base` (`/v2/`), `api`, `metrics`, or `other`.
pub fn route_family(path: &str) -> &'static str {
    if path == "/v2" || path == "/v2/" {
        return "base";
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
        return match registry_api::route::parse(&decoded) {
            Ok(Route::Catalog) => "catalog",
            Ok(Route::Tags { .. }) => "tags",
            Ok(Route::Manifest { .. }) => "manifest",
            Ok(Route::Referrers { .. }) => "referrers",
            Ok(Route::Blob { .. }) => "blob",
            Ok(Route::UploadStart { .. } | Route::Upload { .. }) => "upload",
            Err(_) => "other",
        };
    }
    if path == "/metrics" {
        return "metrics";
    }
    if path == "/api" || path.starts_with("/api/") {
        return "api";
    }
    "other"
}

/// A bounded method label.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A body that adds the size of every data frame it yields to a counter.
struct Counted {
    inner: Body,
    counter: IntCounter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let family = route_family(req.uri().path());
    let method = method_label(req.method());
    let started = Instant::now();
    let counter = metrics.bytes_in.with_label_values(&[family]);
    let req = req.map(|inner| Body::new(Counted { inner, counter }));
    let resp = next.run(req).await;
    metrics
        .duration
        .with_label_values(&[family, method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[family, method, resp.status().as_str()])
        .inc();
    let counter = metrics.bytes_out.with_label_values(&[family]);
    resp.map(|inner| Body::new(Counted { inner, counter }))
}

/// Wrap a router with the middleware that counts requests, durations and bytes.
pub fn instrument(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(metrics, track))
}

/// `GET /metrics` in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses(
        (status = 200, description = "Metrics in the Prometheus text exposition format 0.0.4.", content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, description = "Storage figures could not be read.", body = crate::images::ErrorBody),
    )
)]
pub async fn scrape(State(st): State<MgmtState>) -> Response {
    match st.metrics.render().await {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            )],
            text,
        )
            .into_response(),
        Err(e) => registry_api::error::ApiError::new(
            registry_api::error::ErrorCode::Unknown,
            format!("rendering metrics: {e}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_bounded() {
        assert_eq!(route_family("/v2/"), "base");
        assert_eq!(route_family("/v2/_catalog"), "catalog");
        assert_eq!(route_family("/v2/a/b/tags/list"), "tags");
        assert_eq!(route_family("/v2/a/manifests/v1"), "manifest");
        assert_eq!(route_family("/v2/a/blobs/sha256:00"), "blob");
        assert_eq!(route_family("/v2/a/blobs/uploads/"), "upload");
        assert_eq!(route_family("/v2/a/blobs/uploads/x-1"), "upload");
        assert_eq!(route_family("/v2/a/referrers/sha256:00"), "referrers");
        assert_eq!(route_family("/v2/a%2Fb/manifests/v1"), "manifest");
        assert_eq!(route_family("/v2/NOPE/x"), "other");
        assert_eq!(route_family("/api/v1/registry/images"), "api");
        assert_eq!(route_family("/metrics"), "metrics");
        assert_eq!(route_family("/favicon.ico"), "other");
    }
}
