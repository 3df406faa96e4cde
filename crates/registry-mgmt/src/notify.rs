//! Webhook notifications, after Distribution's `notifications.endpoints`.
//!
//! Each endpoint has a bounded queue and one worker. [`Notifier::emit`] only queues (a full
//! queue drops the event with a warning), so a slow or dead endpoint never blocks or fails
//! a registry request. The worker sends what is queued as one envelope
//! (`application/vnd.docker.distribution.events.v1+json`, `{"events":[...]}`), retrying a
//! failed delivery with exponential backoff (`backoff`, doubled each time, at most
//! [`MAX_BACKOFF`]) until it has failed `threshold` times, then drops it with a warning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use registry_api::events::{Action, Event, EventSink};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Content type of an envelope.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Most events in one envelope.
pub const MAX_BATCH: usize = 64;

/// Errors in the notification configuration.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// An endpoint setting is invalid.
    #[error("notifications endpoint {endpoint:?}: {message}")]
    Invalid {
        /// Endpoint name.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("notifications endpoint {endpoint:?}: building the HTTP client: {source}")]
    Client {
        /// Endpoint name.
        endpoint: String,
        /// Cause.
        source: reqwest::Error,
    },
}

/// `notifications.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NotificationsConfig {
    /// `notifications.endpoints`: where events are sent.
    pub endpoints: Vec<EndpointConfig>,
}

/// One header's value or values.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum HeaderValues {
    /// `Authorization: Bearer x`
    One(String),
    /// `X-A: [a, b]`, as Distribution writes them.
    Many(Vec<String>),
}

/// A duration written as `500ms`, `5s`, `1m`, or a number of seconds.
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_threshold() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_queue() -> usize {
    1024
}

/// `notifications.endpoints[]`
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointConfig {
    /// Name, used in logs and metrics.
    pub name: String,
    /// URL the envelopes are POSTed to.
    pub url: String,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Time allowed for one delivery attempt (default 5s).
    #[serde(
        default = "default_timeout",
        deserialize_with = "oci_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Failed attempts after which an envelope is dropped (default 5).
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// Wait before the first retry, doubled after each failure (default 1s).
    #[serde(
        default = "default_backoff",
        deserialize_with = "oci_core::duration::deserialize"
    )]
    pub backoff: Duration,
    /// Actions sent: `push`, `delete` (default: all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Skip this endpoint.
    #[serde(default)]
    pub disabled: bool,
    /// Events queued at most before new ones are dropped (default 1024).
    #[serde(default = "default_queue")]
    pub queuesize: usize,
}

/// Who sends the events: the registry instance.
#[derive(Debug, Clone)]
pub struct Source {
    /// Address the registry listens on.
    pub addr: String,
    /// Unique id of this process.
    pub instance_id: String,
}

impl Source {
    /// This process listening on `addr`, with a fresh instance id.
    pub fn new(addr: &str) -> Source {
        Source {
            addr: addr.to_string(),
            instance_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

struct Queue {
    name: String,
    actions: Vec<Action>,
    tx: mpsc::Sender<Event>,
    metrics: Option<Arc<Metrics>>,
}

/// The [`EventSink`] that feeds the webhook endpoints.
pub struct Notifier {
    queues: Vec<Queue>,
    shutdown: watch::Sender<bool>,
    workers: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

struct Worker {
    name: String,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    client: reqwest::Client,
    threshold: u32,
    backoff: Duration,
    source: Source,
    metrics: Option<Arc<Metrics>>,
}

fn invalid(endpoint: &str, message: impl Into<String>) -> NotifyError {
    NotifyError::Invalid {
        endpoint: endpoint.to_string(),
        message: message.into(),
    }
}

impl Notifier {
    /// Check the configuration and start one worker per enabled endpoint (on the current
    /// tokio runtime).
    pub fn start(
        cfg: &NotificationsConfig,
        source: Source,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Notifier, NotifyError> {
        let (shutdown, _) = watch::channel(false);
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for ep in cfg.endpoints.iter().filter(|e| !e.disabled) {
            let name = ep.name.clone();
            if name.is_empty() {
                return Err(invalid("", "every endpoint needs a name"));
            }
            let url = reqwest::Url::parse(&ep.url).map_err(|e| invalid(&name, e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(&name, "url must be http:// or https://"));
            }
            if ep.threshold == 0 || ep.queuesize == 0 {
                return Err(invalid(&name, "threshold and queuesize must be at least 1"));
            }
            let mut actions = Vec::new();
            for a in &ep.events {
                actions.push(match a.as_str() {
                    "push" => Action::Push,
                    "delete" => Action::Delete,
                    other => {
                        return Err(invalid(
                            &name,
                            format!("unknown event {other:?} (push, delete)"),
                        ));
                    }
                });
            }
            if actions.is_empty() {
                actions = vec![Action::Push, Action::Delete];
            }
            let mut headers = reqwest::header::HeaderMap::new();
            for (k, v) in &ep.headers {
                let key = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| invalid(&name, format!("header {k:?}: {e}")))?;
                let values = match v {
                    HeaderValues::One(s) => std::slice::from_ref(s),
                    HeaderValues::Many(list) => list.as_slice(),
                };
                for value in values {
                    let value = HeaderValue::from_str(value)
                        .map_err(|e| invalid(&name, format!("header {k:?}: {e}")))?;
                    headers.append(key.clone(), value);
                }
            }
            let client = reqwest::Client::builder()
                .timeout(ep.timeout)
                .build()
                .map_err(|source| NotifyError::Client {
                    endpoint: name.clone(),
                    source,
                })?;
            let (tx, rx) = mpsc::channel(ep.queuesize);
            let worker = Worker {
                name: name.clone(),
                url,
                headers,
                client,
                threshold: ep.threshold,
                backoff: ep.backoff,
                source: source.clone(),
                metrics: metrics.clone(),
            };
            workers.push(tokio::spawn(worker.run(rx, shutdown.subscribe())));
            tracing::info!(endpoint = %name, url = %ep.url, "webhook notifications enabled");
            queues.push(Queue {
                name,
                actions,
                tx,
                metrics: metrics.clone(),
            });
        }
        Ok(Notifier {
            queues,
            shutdown,
            workers: parking_lot::Mutex::new(workers),
        })
    }

    /// Whether any endpoint is enabled.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Stop retrying, send what is queued once, and wait for the workers (at most `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let workers = std::mem::take(&mut *self.workers.lock());
        let wait = futures::future::join_all(workers);
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!("webhook deliveries still running at shutdown were abandoned");
        }
    }
}

impl EventSink for Notifier {
    fn emit(&self, event: Event) {
        for q in self
            .queues
            .iter()
            .filter(|q| q.actions.contains(&event.action))
        {
            if let Err(e) = q.tx.try_send(event.clone()) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "worker stopped",
                };
                tracing::warn!(endpoint = %q.name, action = event.action.as_str(), repository = %event.target.repository, why, "webhook event dropped");
                if let Some(m) = &q.metrics {
                    m.notification(&q.name, "dropped", 1);
                }
            }
        }
    }
}

/// The envelope of `events` as Distribution writes it.
pub fn envelope(events: &[Event], source: &Source) -> serde_json::Value {
    serde_json::json!({ "events": events.iter().map(|e| event_json(e, source)).collect::<Vec<_>>() })
}

fn is_manifest_type(media_type: &str) -> bool {
    oci_core::manifest::MANIFEST_MEDIA_TYPES.contains(&media_type)
        || media_type.starts_with("application/vnd.docker.distribution.manifest")
}

fn event_json(e: &Event, source: &Source) -> serde_json::Value {
    let t = &e.target;
    let mut target = serde_json::Map::new();
    if let Some(mt) = &t.media_type {
        target.insert("mediaType".into(), mt.clone().into());
    }
    if let Some(d) = &t.digest {
        target.insert("digest".into(), d.to_string().into());
    }
    if let Some(s) = t.size {
        target.insert("size".into(), s.into());
        target.insert("length".into(), s.into());
    }
    target.insert("repository".into(), t.repository.clone().into());
    let host = if e.request.host.is_empty() {
        &source.addr
    } else {
        &e.request.host
    };
    let blob = t
        .media_type
        .as_deref()
        .is_some_and(|m| !is_manifest_type(m));
    let kind = if blob { "blobs" } else { "manifests" };
    let reference = t.digest.as_ref().map(|d| d.to_string()).or(t.tag.clone());
    if let Some(r) = reference {
        target.insert(
            "url".into(),
            format!("http://{host}/v2/{}/{kind}/{r}", t.repository).into(),
        );
    }
    if let Some(tag) = &t.tag {
        target.insert("tag".into(), tag.clone().into());
    }
    let timestamp = time::OffsetDateTime::from(e.timestamp)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut actor = serde_json::Map::new();
    if let Some(name) = &e.request.actor {
        actor.insert("name".into(), name.clone().into());
    }
    serde_json::json!({
        "id": e.id,
        "timestamp": timestamp,
        "action": e.action.as_str(),
        "target": target,
        "request": {
            "id": e.request.id,
            "addr": e.request.addr,
            "host": e.request.host,
            "method": e.request.method,
            "useragent": e.request.user_agent,
        },
        "actor": actor,
        "source": { "addr": source.addr, "instanceID": source.instance_id },
    })
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Event>, mut shutdown: watch::Receiver<bool>) {
        let mut stopping = false;
        loop {
            let first = if stopping {
                // Stopping: send what is queued, once each, then stop.
                match rx.try_recv() {
                    Ok(e) => e,
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => e,
                        None => return,
                    },
                    _ = shutdown.changed() => {
                        stopping = true;
                        continue;
                    }
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            self.deliver(&batch, &mut shutdown).await;
        }
    }

    fn count(&self, outcome: &str, events: usize) {
        if let Some(m) = &self.metrics {
            m.notification(&self.name, outcome, events as u64);
        }
    }

    /// Send one envelope, retrying with exponential backoff.
    async fn deliver(&self, batch: &[Event], shutdown: &mut watch::Receiver<bool>) {
        let body =
            serde_json::to_vec(&envelope(batch, &self.source)).expect("JSON values serialize");
        let backoff = oci_core::retry::Backoff::new(self.backoff, MAX_BACKOFF);
        for attempt in 1..=self.threshold {
            let result = self
                .client
                .post(self.url.clone())
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, EVENTS_MEDIA_TYPE)
                .body(body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(r) if r.status().is_success() => {
                    tracing::debug!(endpoint = %self.name, events = batch.len(), attempt, "webhook delivered");
                    self.count("delivered", batch.len());
                    return;
                }
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            self.count("failed", batch.len());
            let stopping = *shutdown.borrow() || shutdown.has_changed().is_err();
            if attempt == self.threshold || stopping {
                tracing::warn!(endpoint = %self.name, events = batch.len(), attempt, error = %failure, "webhook delivery failed; events dropped");
                self.count("dropped", batch.len());
                return;
            }
            let wait = backoff.delay(attempt);
            tracing::warn!(endpoint = %self.name, events = batch.len(), attempt, error = %failure, retry_in = ?wait, "webhook delivery failed; will retry");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_api::events::{RequestInfo, Target};

    #[test]
    fn envelope_matches_distribution() {
        let digest = oci_core::Digest::sha256_of(b"m");
        let event = Event::with_request(
            Action::Push,
            Target {
                repository: "team/app".into(),
                media_type: Some(oci_core::manifest::OCI_MANIFEST.into()),
                digest: Some(digest.clone()),
                size: Some(1),
                tag: Some("v1".into()),
            },
            RequestInfo {
                id: "r1".into(),
                addr: "127.0.0.1:1".into(),
                host: "reg:5000".into(),
                method: "PUT".into(),
                user_agent: "test".into(),
                actor: Some("alice".into()),
            },
        );
        let source = Source {
            addr: "0.0.0.0:5000".into(),
            instance_id: "i".into(),
        };
        let v = envelope(&[event], &source);
        let e = &v["events"][0];
        assert_eq!(e["action"], "push");
        assert_eq!(e["target"]["repository"], "team/app");
        assert_eq!(e["target"]["digest"], digest.to_string());
        assert_eq!(e["target"]["length"], 1);
        assert_eq!(
            e["target"]["url"],
            format!("http://reg:5000/v2/team/app/manifests/{digest}")
        );
        assert_eq!(e["request"]["useragent"], "test");
        assert_eq!(e["actor"]["name"], "alice");
        assert_eq!(e["source"]["instanceID"], "i");
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn config_durations_and_headers() {
        let cfg: EndpointConfig = serde_json::from_value(serde_json::json!({
            "name": "a", "url": "http://127.0.0.1:1/", "timeout": "500ms", "backoff": 2,
            "headers": {"authorization": "Bearer x", "x-multi": ["1", "2"]}
        }))
        .unwrap();
        assert_eq!(cfg.timeout, Duration::from_millis(500));
        assert_eq!(cfg.backoff, Duration::from_secs(2));
        assert_eq!(cfg.threshold, 5);
        assert_eq!(
            cfg.headers["x-multi"],
            HeaderValues::Many(vec!["1".into(), "2".into()])
        );
    }
}
