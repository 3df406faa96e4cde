//! Events from the HTTP side: [`capture`] records each write's request for the events
//! that [`registry_core`] operations emit, and [`request_info`] reads a request's facts.
//! The event types themselves live in [`registry_core::events`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
pub use registry_core::events::{Action, Event, EventSink, NoEvents, RequestInfo, Target};

/// Request extension an authentication layer may set to name the user in events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// Read the facts of a request (headers, peer address, [`Actor`] extension).
pub fn request_info<B>(req: &axum::http::Request<B>) -> RequestInfo {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let forwarded = h("x-forwarded-for");
    let addr = match forwarded.split(',').next().map(str::trim) {
        Some(first) if !first.is_empty() => first.to_string(),
        _ => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_default(),
    };
    RequestInfo {
        id: h("x-request-id"),
        addr,
        host: h(header::HOST.as_str()),
        method: req.method().to_string(),
        user_agent: h(header::USER_AGENT.as_str()),
        actor: req.extensions().get::<Actor>().map(|a| a.0.clone()),
    }
}

/// Middleware: makes the request's facts available to [`Event::new`] while it is served.
/// Reads (`GET`, `HEAD`) emit no events, so the pull hot path skips this.
pub async fn capture(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let info = request_info(&req);
    registry_core::events::with_request(info, next.run(req)).await
}
