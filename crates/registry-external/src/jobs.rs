//! Replication jobs: rules matched against pushes, a queue worked by one task, retries with
//! exponential backoff, and the recent jobs' status (kept in memory: the last
//! [`KEEP_JOBS`]; jobs queued when the process stops are not resumed).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::config::RuleSpec;
use crate::glob::any_matches;
use crate::registries::{now, rfc3339};
use crate::replicate::CopyStats;

/// Jobs remembered for the status API.
pub const KEEP_JOBS: usize = 1000;
/// Attempts before a job fails for good.
pub const MAX_ATTEMPTS: u32 = 5;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for the worker.
    Queued,
    /// Being copied.
    Running,
    /// Failed; will be tried again after a delay.
    Retrying,
    /// Copied.
    Succeeded,
    /// Failed every attempt.
    Failed,
}

/// One replication of one image to one registry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// Identifier (increasing).
    pub id: u64,
    /// The rule that queued it.
    pub rule: Option<String>,
    /// Target registry (id or name).
    pub registry_id: String,
    /// Local repository.
    pub repository: String,
    /// Tag or digest.
    pub reference: String,
    /// Repository on the target.
    pub target_repository: String,
    /// Status.
    pub status: JobStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Digest copied, once done.
    pub digest: Option<String>,
    /// What the copy did, once done.
    pub stats: Option<CopyStats>,
    /// Queued at (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

/// The in-memory job list.
#[derive(Default)]
pub struct JobList {
    next_id: u64,
    jobs: VecDeque<Job>,
}

impl JobList {
    /// Add a queued job; returns its id.
    pub fn add(
        &mut self,
        rule: Option<String>,
        registry_id: &str,
        repository: &str,
        reference: &str,
        target_repository: &str,
    ) -> u64 {
        self.next_id += 1;
        let t = rfc3339(now());
        self.jobs.push_back(Job {
            id: self.next_id,
            rule,
            registry_id: registry_id.to_string(),
            repository: repository.to_string(),
            reference: reference.to_string(),
            target_repository: target_repository.to_string(),
            status: JobStatus::Queued,
            attempts: 0,
            last_error: None,
            digest: None,
            stats: None,
            created_at: t.clone(),
            updated_at: t,
        });
        while self.jobs.len() > KEEP_JOBS {
            self.jobs.pop_front();
        }
        self.next_id
    }

    /// A job by id.
    pub fn get(&self, id: u64) -> Option<Job> {
        self.jobs.iter().find(|j| j.id == id).cloned()
    }

    /// Change a job.
    pub fn update(&mut self, id: u64, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == id) {
            f(j);
            j.updated_at = rfc3339(now());
        }
    }

    /// Every remembered job, newest first.
    pub fn list(&self) -> Vec<Job> {
        self.jobs.iter().rev().cloned().collect()
    }
}

/// Delay before attempt `attempt + 1`: up to 1 s, 2 s, 4 s, ... at most a minute, jittered.
pub fn backoff(attempt: u32) -> Duration {
    JOB_BACKOFF.delay(attempt)
}

/// How failed replication jobs wait.
pub const JOB_BACKOFF: oci_core::retry::Backoff =
    oci_core::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// Whether a push of `repository:reference` matches a rule. A push by digest matches rules
/// without tag filters, and referrers (manifests with a subject) follow their subject's
/// repository filter whatever their reference.
pub fn rule_matches(rule: &RuleSpec, repository: &str, reference: &str, is_referrer: bool) -> bool {
    if !any_matches(&rule.repositories, repository) {
        return false;
    }
    if is_referrer || rule.tags.is_empty() {
        return true;
    }
    !reference.contains(':') && any_matches(&rule.tags, reference)
}

/// The repository a rule writes to.
pub fn rule_target(rule: &RuleSpec, repository: &str) -> String {
    match rule.target_prefix.as_deref().map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("{p}/{repository}"),
        _ => repository.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let rule = RuleSpec {
            name: "r".into(),
            registry_id: "x".into(),
            repositories: vec!["team/*".into()],
            tags: vec!["v*".into()],
            target_prefix: Some("mirror".into()),
            ..Default::default()
        };
        assert!(rule_matches(&rule, "team/app", "v1", false));
        assert!(!rule_matches(&rule, "team/app", "latest", false));
        assert!(!rule_matches(&rule, "other/app", "v1", false));
        assert!(!rule_matches(&rule, "team/app", "sha256:00", false));
        assert!(rule_matches(&rule, "team/app", "sha256:00", true));
        assert_eq!(rule_target(&rule, "team/app"), "mirror/team/app");
        assert_eq!(JOB_BACKOFF.ceiling(1), Duration::from_secs(1));
        assert_eq!(JOB_BACKOFF.ceiling(3), Duration::from_secs(4));
        assert_eq!(JOB_BACKOFF.ceiling(20), Duration::from_secs(60));
        assert!(backoff(3) >= Duration::from_secs(2) && backoff(3) <= Duration::from_secs(4));
    }

    #[test]
    fn job_list_keeps_the_newest() {
        let mut l = JobList::default();
        for i in 0..(KEEP_JOBS + 5) {
            l.add(None, "r", "a", &format!("t{i}"), "a");
        }
        let all = l.list();
        assert_eq!(all.len(), KEEP_JOBS);
        assert_eq!(all[0].id, (KEEP_JOBS + 5) as u64);
    }
}
