//! External registries for hyperregistry: records with encrypted secrets, replication (push
//! to and pull from other registries, as API calls and as rules run on push) and
//! pull-through caches of upstream registries.
//!
//! - [`remote`]: registry types, endpoints, credentials, the configured client, reachability tests.
//! - [`registries`]: stored records (secrets sealed by [`secret`]) and their JSON view.
//! - [`replicate`]: copying an image with all platforms and referrers, both directions.
//! - [`jobs`]: rules, the job queue with retries, job status.
//! - [`proxy`]: the pull-through cache, the registry's [`Upstream`](registry_core::Upstream).
//! - [`api`]: the `/api/v1/registry/external` and `/api/v1/replication` router.
//! - [`config`]: the configuration blocks; [`glob`]: repository and tag patterns.

pub mod api;
pub mod config;
pub mod error;
pub mod glob;
pub mod jobs;
pub mod proxy;
pub mod registries;
pub mod remote;
pub mod replicate;
pub mod secret;

pub use api::openapi;

use std::path::Path;
use std::sync::Arc;

use registry_api::hooks::{PushEvent, PushHook};
use registry_core::Registry;
use tokio::sync::mpsc;

use crate::config::{ExternalConfig, ProxySpec, ReplicationConfig, RuleSpec};
use crate::error::{ExternalError, Result};
use crate::jobs::{JobList, JobStatus, MAX_ATTEMPTS, backoff, rule_matches, rule_target};
use crate::registries::{REPLICATION_RETRIES, Registries};
use crate::replicate::MountHints;

pub use error::ExternalError as Error;

/// The external-registry service: shared by its router, the push hook and the proxy.
#[derive(Clone)]
pub struct External {
    inner: Arc<Inner>,
    proxy: Arc<proxy::Proxy>,
}

/// State shared by handlers and background tasks.
pub struct Inner {
    /// The registry (local repositories, without the pull-through upstream).
    pub registry: Registry,
    /// External registry records and clients.
    pub registries: Arc<Registries>,
    /// Rules from configuration.
    pub config_rules: Vec<RuleSpec>,
    /// Recent jobs.
    pub jobs: parking_lot::Mutex<JobList>,
    /// Cross-repository mount sources on remotes.
    pub hints: MountHints,
    queue: mpsc::UnboundedSender<u64>,
    events: mpsc::UnboundedSender<PushEvent>,
}

/// The name under which the secrets key's fingerprint is agreed in the metadata database.
pub const SECRET_KEY_NAME: &str = "external.secretkey";

impl External {
    /// Check that this process seals external registries' secrets with the key every other
    /// replica on the same metadata database uses (the first to start recorded its
    /// fingerprint). A replica with another key could not open what the others sealed, nor
    /// they what it seals: it must not start.
    pub async fn agree_secret_key(&self) -> Result<()> {
        let ours = self.inner.registries.key_fingerprint();
        let agreed = self
            .inner
            .registry
            .meta()
            .agree_key_fingerprint(SECRET_KEY_NAME, ours)
            .await?;
        if agreed != ours {
            return Err(ExternalError::Crypto(
                "the metadata database holds external registry secrets sealed with another \
                 key than this replica's: give every replica the same external.secretkey \
                 (REGISTRY_EXTERNAL_SECRETKEY, base64 of 32 bytes; a replica without one \
                 uses <data dir>/external.key)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Start the service: load the secrets key (`data_dir/external.key` when not configured),
    /// check configured rules and proxies, and spawn the replication worker.
    pub fn start(
        registry: Registry,
        data_dir: &Path,
        external: &ExternalConfig,
        replication: &ReplicationConfig,
        proxies: &[ProxySpec],
    ) -> Result<External> {
        let secrets = secret::SecretBox::load(external.secretkey.as_deref(), data_dir)?;
        let registries = Arc::new(Registries::new(registry.meta().clone(), secrets));
        let mut config_rules = Vec::new();
        for r in &replication.rules {
            let mut r = r.clone();
            if r.name.is_empty() || r.registry_id.is_empty() {
                return Err(ExternalError::Invalid(
                    "replication rules need a name and a registry_id".into(),
                ));
            }
            r.id = format!("config:{}", r.name);
            config_rules.push(r);
        }
        let proxy = Arc::new(proxy::Proxy::new(proxies, registries.clone())?);
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            registry,
            registries,
            config_rules,
            jobs: parking_lot::Mutex::new(JobList::default()),
            hints: MountHints::default(),
            queue,
            events,
        });
        tokio::spawn(worker(inner.clone(), queue_rx));
        tokio::spawn(dispatcher(inner.clone(), events_rx));
        Ok(External { inner, proxy })
    }

    /// The management router (`/api/v1/registry/external...`, `/api/v1/replication...`).
    pub fn router(&self) -> axum::Router {
        api::router(self.inner.clone())
    }

    /// The hook to install with `AppState::with_push_hook`.
    pub fn push_hook(&self) -> Arc<dyn PushHook> {
        Arc::new(Hook(self.inner.events.clone()))
    }

    /// The pull-through cache, for `Registry::with_upstream` (`None` when no proxy is
    /// configured).
    pub fn upstream(&self) -> Option<Arc<dyn registry_core::Upstream>> {
        (!self.proxy.is_empty()).then(|| self.proxy.clone() as Arc<dyn registry_core::Upstream>)
    }
}

struct Hook(mpsc::UnboundedSender<PushEvent>);

impl PushHook for Hook {
    fn manifest_pushed(&self, event: PushEvent) {
        let _ = self.0.send(event);
    }
}

impl Inner {
    /// Configured and API-managed rules.
    pub async fn rules(&self) -> Result<Vec<(RuleSpec, &'static str)>> {
        let mut all: Vec<_> = self
            .config_rules
            .iter()
            .cloned()
            .map(|r| (r, "config"))
            .collect();
        for rec in self.registry.meta().replication_rules().await? {
            match serde_json::from_str::<RuleSpec>(&rec.body) {
                Ok(mut r) => {
                    r.id = rec.id;
                    all.push((r, "api"));
                }
                Err(e) => tracing::warn!(rule = %rec.name, error = %e, "unreadable stored rule"),
            }
        }
        Ok(all)
    }

    /// Queue a push replication job.
    pub fn enqueue(
        &self,
        rule: Option<String>,
        registry_id: &str,
        repository: &str,
        reference: &str,
        target: &str,
    ) -> u64 {
        let id = self
            .jobs
            .lock()
            .add(rule, registry_id, repository, reference, target);
        let _ = self.queue.send(id);
        id
    }
}

/// Match pushes against rules and queue jobs.
async fn dispatcher(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<PushEvent>) {
    while let Some(ev) = events.recv().await {
        let rules = match inner.rules().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "replication rules unavailable; push not replicated");
                continue;
            }
        };
        for (rule, _) in rules {
            if rule_matches(&rule, &ev.repository, &ev.reference, ev.subject.is_some()) {
                let target = rule_target(&rule, &ev.repository);
                let reference = if ev.reference.contains(':') {
                    ev.digest.to_string()
                } else {
                    ev.reference.clone()
                };
                let id = inner.enqueue(
                    Some(rule.name.clone()),
                    &rule.registry_id,
                    &ev.repository,
                    &reference,
                    &target,
                );
                tracing::info!(job = id, rule = %rule.name, repository = %ev.repository, reference = %reference, "replication queued");
            }
        }
    }
}

/// Run queued jobs one at a time; failures are retried after a growing delay.
async fn worker(inner: Arc<Inner>, mut queue: mpsc::UnboundedReceiver<u64>) {
    while let Some(id) = queue.recv().await {
        let Some(job) = inner.jobs.lock().get(id) else {
            continue;
        };
        let attempt = job.attempts + 1;
        inner.jobs.lock().update(id, |j| {
            j.status = JobStatus::Running;
            j.attempts = attempt;
        });
        let result = async {
            let rec = inner.registries.get(&job.registry_id).await?;
            let remote = inner.registries.remote_for(&rec, REPLICATION_RETRIES)?;
            replicate::push(
                &inner.registry,
                &remote,
                &rec.id,
                &inner.hints,
                &job.repository,
                &job.reference,
                &job.target_repository,
            )
            .await
        }
        .await;
        match result {
            Ok((digest, stats)) => {
                tracing::info!(job = id, digest = %digest, "replication done");
                inner.jobs.lock().update(id, |j| {
                    j.status = JobStatus::Succeeded;
                    j.digest = Some(digest.to_string());
                    j.stats = Some(stats);
                    j.last_error = None;
                });
            }
            Err(e) if attempt < MAX_ATTEMPTS => {
                let delay = backoff(attempt);
                tracing::warn!(job = id, attempt, error = %e, ?delay, "replication failed; will retry");
                inner.jobs.lock().update(id, |j| {
                    j.status = JobStatus::Retrying;
                    j.last_error = Some(e.to_string());
                });
                let queue = inner.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = queue.send(id);
                });
            }
            Err(e) => {
                tracing::error!(job = id, attempt, error = %e, "replication failed for good");
                inner.jobs.lock().update(id, |j| {
                    j.status = JobStatus::Failed;
                    j.last_error = Some(e.to_string());
                });
            }
        }
    }
}
