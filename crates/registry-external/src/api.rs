//! The management API: `/api/v1/registry/external[/{id}[/test]]` and
//! `/api/v1/replication/{push,pull,jobs,rules}`. JSON in and out; errors are
//! `{"errors":[{"code","message"}]}`. Secrets are accepted, never returned.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use registry_meta::ReplicationRuleRecord;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Inner;
use crate::config::RuleSpec;
use crate::error::{ExternalError, Result};
use crate::registries::{REPLICATION_RETRIES, RegistryInput, now, rfc3339, view};
use crate::replicate;

type St = State<Arc<Inner>>;

/// The router, to merge into hyperregistry's.
pub fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(
            "/api/v1/registry/external",
            get(list_registries).post(create_registry),
        )
        .route(
            "/api/v1/registry/external/{id}",
            get(get_registry)
                .put(update_registry)
                .delete(delete_registry),
        )
        .route("/api/v1/registry/external/{id}/test", post(test_registry))
        .route("/api/v1/replication/push", post(push))
        .route("/api/v1/replication/pull", post(pull))
        .route("/api/v1/replication/jobs", get(list_jobs))
        .route("/api/v1/replication/jobs/{id}", get(get_job))
        .route(
            "/api/v1/replication/rules",
            get(list_rules).post(create_rule),
        )
        .route("/api/v1/replication/rules/{id}", delete(delete_rule))
        .with_state(inner)
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ExternalError::Invalid(format!("request body: {e}")))
}

fn reply(r: Result<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn list_registries(State(inner): St) -> Response {
    reply(
        async {
            let all = inner.registries.list().await?;
            Ok(Json(all.iter().map(view).collect::<Vec<_>>()).into_response())
        }
        .await,
    )
}

async fn create_registry(State(inner): St, bytes: Bytes) -> Response {
    reply(
        async {
            let input: RegistryInput = body(&bytes)?;
            let rec = inner.registries.save(None, input).await?;
            Ok((StatusCode::CREATED, Json(view(&rec))).into_response())
        }
        .await,
    )
}

async fn get_registry(State(inner): St, Path(id): Path<String>) -> Response {
    reply(async { Ok(Json(view(&inner.registries.get(&id).await?)).into_response()) }.await)
}

async fn update_registry(State(inner): St, Path(id): Path<String>, bytes: Bytes) -> Response {
    reply(
        async {
            let input: RegistryInput = body(&bytes)?;
            let existing = inner.registries.get(&id).await?;
            let rec = inner.registries.save(Some(existing), input).await?;
            Ok(Json(view(&rec)).into_response())
        }
        .await,
    )
}

async fn delete_registry(State(inner): St, Path(id): Path<String>) -> Response {
    reply(
        async {
            let rec = inner.registries.get(&id).await?;
            let users: Vec<String> = inner
                .rules()
                .await?
                .into_iter()
                .filter(|(r, _)| r.registry_id == rec.id || r.registry_id == rec.name)
                .map(|(r, _)| r.name)
                .collect();
            if !users.is_empty() {
                return Err(ExternalError::Conflict(format!(
                    "replication rules use this registry: {}",
                    users.join(", ")
                )));
            }
            inner.registries.delete(&rec.id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

async fn test_registry(State(inner): St, Path(id): Path<String>) -> Response {
    reply(
        async {
            let remote = inner.registries.remote(&id, 0).await?;
            Ok(Json(remote.test().await).into_response())
        }
        .await,
    )
}

/// Body of `POST /api/v1/replication/{push,pull}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyRequest {
    registry_id: String,
    repository: String,
    reference: String,
    target_repository: Option<String>,
}

fn check_names(req: &CopyRequest) -> Result<String> {
    let target = req
        .target_repository
        .clone()
        .unwrap_or_else(|| req.repository.clone());
    for n in [&req.repository, &target] {
        oci_core::validate_repository(n)
            .map_err(|e| ExternalError::Invalid(format!("repository {n:?}: {e}")))?;
    }
    if !req.reference.contains(':') {
        oci_core::validate_tag(&req.reference)
            .map_err(|e| ExternalError::Invalid(format!("reference: {e}")))?;
    }
    Ok(target)
}

async fn push(State(inner): St, bytes: Bytes) -> Response {
    reply(
        async {
            let req: CopyRequest = body(&bytes)?;
            let target = check_names(&req)?;
            let rec = inner.registries.get(&req.registry_id).await?;
            let remote = inner.registries.remote_for(&rec, REPLICATION_RETRIES)?;
            let (digest, stats) = replicate::push(
                &inner.st,
                &remote,
                &rec.id,
                &inner.hints,
                &req.repository,
                &req.reference,
                &target,
            )
            .await?;
            Ok(Json(serde_json::json!({
                "digest": digest.to_string(),
                "target_repository": target,
                "stats": stats,
            }))
            .into_response())
        }
        .await,
    )
}

async fn pull(State(inner): St, bytes: Bytes) -> Response {
    reply(
        async {
            let req: CopyRequest = body(&bytes)?;
            let target = check_names(&req)?;
            let remote = inner
                .registries
                .remote(&req.registry_id, REPLICATION_RETRIES)
                .await?;
            let (digest, stats) =
                replicate::pull(&inner.st, &remote, &req.repository, &req.reference, &target)
                    .await?;
            Ok(Json(serde_json::json!({
                "digest": digest.to_string(),
                "target_repository": target,
                "stats": stats,
            }))
            .into_response())
        }
        .await,
    )
}

async fn list_jobs(State(inner): St) -> Response {
    Json(inner.jobs.lock().list()).into_response()
}

async fn get_job(State(inner): St, Path(id): Path<String>) -> Response {
    let job = id.parse().ok().and_then(|id| inner.jobs.lock().get(id));
    match job {
        Some(j) => Json(j).into_response(),
        None => ExternalError::NotFound(format!("no job {id:?}")).into_response(),
    }
}

fn rule_view(rule: &RuleSpec, source: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(rule).unwrap_or_default();
    v["source"] = serde_json::Value::String(source.to_string());
    v
}

async fn list_rules(State(inner): St) -> Response {
    reply(
        async {
            let rules = inner.rules().await?;
            Ok(Json(
                rules
                    .iter()
                    .map(|(r, s)| rule_view(r, s))
                    .collect::<Vec<_>>(),
            )
            .into_response())
        }
        .await,
    )
}

async fn create_rule(State(inner): St, bytes: Bytes) -> Response {
    reply(async {
        let mut rule: RuleSpec = body(&bytes)?;
        rule.name = rule.name.trim().to_string();
        if rule.name.is_empty() {
            return Err(ExternalError::Invalid("a rule needs a name".into()));
        }
        if inner.rules().await?.iter().any(|(r, _)| r.name == rule.name) {
            return Err(ExternalError::Conflict(format!(
                "a rule named {:?} exists",
                rule.name
            )));
        }
        inner.registries.get(&rule.registry_id).await?;
        if rule.repositories.iter().chain(&rule.tags).any(String::is_empty) {
            return Err(ExternalError::Invalid("empty pattern".into()));
        }
        if let Some(p) = rule.target_prefix.as_deref().map(|p| p.trim_matches('/'))
            && !p.is_empty()
        {
            oci_core::validate_repository(p)
                .map_err(|e| ExternalError::Invalid(format!("target_prefix: {e}")))?;
        }
        rule.id = uuid::Uuid::new_v4().to_string();
        let rec = ReplicationRuleRecord {
            id: rule.id.clone(),
            name: rule.name.clone(),
            body: serde_json::to_string(&rule).unwrap_or_default(),
            created_at: now(),
        };
        inner.st.meta.put_replication_rule(&rec).await?;
        tracing::info!(rule = %rule.name, created = %rfc3339(rec.created_at), "replication rule created");
        Ok((StatusCode::CREATED, Json(rule_view(&rule, "api"))).into_response())
    }
    .await)
}

async fn delete_rule(State(inner): St, Path(id): Path<String>) -> Response {
    reply(
        async {
            if id.starts_with("config:") {
                return Err(ExternalError::Conflict(
                    "rules from the configuration file cannot be deleted here".into(),
                ));
            }
            if !inner.st.meta.delete_replication_rule(&id).await? {
                return Err(ExternalError::NotFound(format!("no rule {id:?}")));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}
