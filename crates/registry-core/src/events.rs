//! Registry events (push, delete) handed to an [`EventSink`], such as a webhook notifier.
//!
//! Operations emit an [`Event`] after a change is committed. The request it came from is
//! taken from a task-local that the HTTP layer sets around each write
//! ([`with_request`]), so operations need no extra parameters. A sink must return at once:
//! it queues, it never blocks or fails the operation.

use std::future::Future;
use std::time::SystemTime;

use oci_core::Digest;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A manifest was stored.
    Push,
    /// A manifest, tag, blob link or repository was removed.
    Delete,
}

impl Action {
    /// The name Distribution uses (`push`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// Repository name.
    pub repository: String,
    /// Media type of the manifest or blob, when known.
    pub media_type: Option<String>,
    /// Digest of the manifest or blob, when known.
    pub digest: Option<Digest>,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// Tag, when the event concerns one.
    pub tag: Option<String>,
}

/// The request that caused an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestInfo {
    /// The `x-request-id`.
    pub id: String,
    /// Client address (first `X-Forwarded-For` entry, else the peer address).
    pub addr: String,
    /// `Host` header.
    pub host: String,
    /// HTTP method.
    pub method: String,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Authenticated user, when an authentication layer named one.
    pub actor: Option<String>,
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// When it happened.
    pub timestamp: SystemTime,
    /// Push or delete.
    pub action: Action,
    /// What it concerns.
    pub target: Target,
    /// The request that caused it.
    pub request: RequestInfo,
}

impl Event {
    /// An event for the request being served (see [`capture`]); outside one, the request
    /// facts are empty.
    pub fn new(action: Action, target: Target) -> Event {
        let request = REQUEST.try_with(Clone::clone).unwrap_or_default();
        Event::with_request(action, target, request)
    }

    /// An event with explicit request facts.
    pub fn with_request(action: Action, target: Target, request: RequestInfo) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: SystemTime::now(),
            action,
            target,
            request,
        }
    }
}

/// Receives events. `emit` must return at once and never fail the request.
pub trait EventSink: Send + Sync + 'static {
    /// Accept one event (queue it, or drop it with a warning).
    fn emit(&self, event: Event);
}

/// The default sink: drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: Event) {}
}

tokio::task_local! {
    static REQUEST: RequestInfo;
}

/// Run `fut` with `info` as the request that [`Event::new`] attributes its events to.
pub async fn with_request<F: Future>(info: RequestInfo, fut: F) -> F::Output {
    REQUEST.scope(info, fut).await
}
