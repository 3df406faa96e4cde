//! The management API: `/api/v1/registry/external[/{id}[/test]]` and
//! `/api/v1/replication/{push,pull,jobs,rules}`. JSON in and out; errors are
//! `{"errors":[{"code","message"}]}`. Secrets are accepted, never returned.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use registry_meta::ReplicationRuleRecord;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::Inner;
use crate::config::{AuthSpec, RuleSpec};
use crate::error::{ErrorBody, ErrorEntry, ExternalError, Result};
use crate::jobs::{Job, JobStatus};
use crate::registries::{
    AuthView, REPLICATION_RETRIES, RegistryInput, RegistryView, now, rfc3339, view,
};
use crate::remote::TestReport;
use crate::replicate::{self, CopyStats};

type St = State<Arc<Inner>>;

/// One route: method, path (written the same in axum and in the OpenAPI document) and
/// handler.
pub struct Endpoint {
    /// HTTP method.
    pub method: Method,
    /// Path, `{id}` for parameters.
    pub path: &'static str,
    handler: fn() -> MethodRouter<Arc<Inner>>,
}

/// Every route. The router is built from this table alone, so the OpenAPI test can compare
/// it with the document.
pub fn endpoints() -> Vec<Endpoint> {
    fn e(
        method: Method,
        path: &'static str,
        handler: fn() -> MethodRouter<Arc<Inner>>,
    ) -> Endpoint {
        Endpoint {
            method,
            path,
            handler,
        }
    }
    const REGISTRIES: &str = "/api/v1/registry/external";
    const REGISTRY: &str = "/api/v1/registry/external/{id}";
    const RULES: &str = "/api/v1/replication/rules";
    vec![
        e(Method::GET, REGISTRIES, || get(list_registries)),
        e(Method::POST, REGISTRIES, || post(create_registry)),
        e(Method::GET, REGISTRY, || get(get_registry)),
        e(Method::PUT, REGISTRY, || put(update_registry)),
        e(Method::DELETE, REGISTRY, || delete(delete_registry)),
        e(Method::POST, "/api/v1/registry/external/{id}/test", || {
            post(test_registry)
        }),
        e(Method::POST, "/api/v1/replication/push", || post(push)),
        e(Method::POST, "/api/v1/replication/pull", || post(pull)),
        e(Method::GET, "/api/v1/replication/jobs", || get(list_jobs)),
        e(Method::GET, "/api/v1/replication/jobs/{id}", || {
            get(get_job)
        }),
        e(Method::GET, RULES, || get(list_rules)),
        e(Method::POST, RULES, || post(create_rule)),
        e(Method::DELETE, "/api/v1/replication/rules/{id}", || {
            delete(delete_rule)
        }),
    ]
}

/// The router, to merge into hyperregistry's.
pub fn router(inner: Arc<Inner>) -> Router {
    let mut router = Router::new();
    for ep in endpoints() {
        router = router.route(ep.path, (ep.handler)());
    }
    router.with_state(inner)
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ExternalError::Invalid(format!("request body: {e}")))
}

fn reply(r: Result<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Every external registry.
#[utoipa::path(
    get,
    path = "/api/v1/registry/external",
    tag = "external",
    responses(
        (status = 200, description = "The registries, without secrets.", body = Vec<RegistryView>),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
async fn list_registries(State(inner): St) -> Response {
    reply(
        async {
            let all = inner.registries.list().await?;
            Ok(Json(all.iter().map(view).collect::<Vec<_>>()).into_response())
        }
        .await,
    )
}

/// Add an external registry; its password or token is stored encrypted.
#[utoipa::path(
    post,
    path = "/api/v1/registry/external",
    tag = "external",
    request_body(content = RegistryInput, description = "`name` is required; `endpoint` too unless the type has a default."),
    responses(
        (status = 201, description = "Created.", body = RegistryView),
        (status = 400, description = "Malformed body, unknown type or auth type, bad endpoint, plain HTTP to a remote host without `insecure` (INVALID).", body = ErrorBody),
        (status = 409, description = "The name is taken (CONFLICT).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
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

/// One external registry.
#[utoipa::path(
    get,
    path = "/api/v1/registry/external/{id}",
    tag = "external",
    params(("id" = String, Path, description = "The registry's id or name.")),
    responses(
        (status = 200, description = "The registry, without secrets.", body = RegistryView),
        (status = 404, description = "No such registry (NOT_FOUND).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
async fn get_registry(State(inner): St, Path(id): Path<String>) -> Response {
    reply(async { Ok(Json(view(&inner.registries.get(&id).await?)).into_response()) }.await)
}

/// Change an external registry: absent fields keep their values, and an `auth` of the same
/// type without a secret keeps the stored secret.
#[utoipa::path(
    put,
    path = "/api/v1/registry/external/{id}",
    tag = "external",
    params(("id" = String, Path, description = "The registry's id or name.")),
    request_body(content = RegistryInput, description = "The fields to change."),
    responses(
        (status = 200, description = "The updated registry.", body = RegistryView),
        (status = 400, description = "Malformed or invalid body (INVALID).", body = ErrorBody),
        (status = 404, description = "No such registry (NOT_FOUND).", body = ErrorBody),
        (status = 409, description = "The new name is taken (CONFLICT).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
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

/// Remove an external registry that no replication rule uses.
#[utoipa::path(
    delete,
    path = "/api/v1/registry/external/{id}",
    tag = "external",
    params(("id" = String, Path, description = "The registry's id or name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such registry (NOT_FOUND).", body = ErrorBody),
        (status = 409, description = "Replication rules use it (CONFLICT).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
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

/// Check that an external registry answers `GET /v2/` and accepts the stored credentials.
#[utoipa::path(
    post,
    path = "/api/v1/registry/external/{id}/test",
    tag = "external",
    params(("id" = String, Path, description = "The registry's id or name.")),
    responses(
        (status = 200, description = "The outcome (also when unreachable or refused: see the fields).", body = TestReport),
        (status = 404, description = "No such registry (NOT_FOUND).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The external registry, by id or name.
    pub registry_id: String,
    /// The repository copied from (local for push, remote for pull).
    pub repository: String,
    /// Tag or digest.
    pub reference: String,
    /// The repository copied to (default: `repository`).
    pub target_repository: Option<String>,
}

/// Reply of `POST /api/v1/replication/{push,pull}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CopyResult {
    /// Digest of the copied manifest or index.
    pub digest: String,
    /// The repository copied to.
    pub target_repository: String,
    /// What the copy did.
    pub stats: CopyStats,
}

/// A replication rule as listed: the rule and where it comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    /// The rule.
    #[serde(flatten)]
    pub rule: RuleSpec,
    /// `config` (the configuration file; cannot be deleted here) or `api`.
    pub source: String,
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

/// Copy a local image (every platform and its referrers) to an external registry, now.
#[utoipa::path(
    post,
    path = "/api/v1/replication/push",
    tag = "replication",
    request_body(content = CopyRequest, description = "The local image and the target registry."),
    responses(
        (status = 200, description = "Copied.", body = CopyResult),
        (status = 400, description = "Malformed body, invalid repository or tag (INVALID).", body = ErrorBody),
        (status = 404, description = "No such registry or local image (NOT_FOUND).", body = ErrorBody),
        (status = 502, description = "The external registry failed (UPSTREAM) or refused the credentials (UPSTREAM_UNAUTHORIZED).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
async fn push(State(inner): St, bytes: Bytes) -> Response {
    reply(
        async {
            let req: CopyRequest = body(&bytes)?;
            let target = check_names(&req)?;
            let rec = inner.registries.get(&req.registry_id).await?;
            let remote = inner.registries.remote_for(&rec, REPLICATION_RETRIES)?;
            let (digest, stats) = replicate::push(
                &inner.registry,
                &remote,
                &rec.id,
                &inner.hints,
                &req.repository,
                &req.reference,
                &target,
            )
            .await?;
            Ok(Json(CopyResult {
                digest: digest.to_string(),
                target_repository: target,
                stats,
            })
            .into_response())
        }
        .await,
    )
}

/// Copy an image (every platform and its referrers) from an external registry into this one,
/// now.
#[utoipa::path(
    post,
    path = "/api/v1/replication/pull",
    tag = "replication",
    request_body(content = CopyRequest, description = "The remote image and the source registry."),
    responses(
        (status = 200, description = "Copied.", body = CopyResult),
        (status = 400, description = "Malformed body, invalid repository or tag (INVALID).", body = ErrorBody),
        (status = 404, description = "No such registry (NOT_FOUND) or remote image (UPSTREAM_NOT_FOUND).", body = ErrorBody),
        (status = 502, description = "The external registry failed (UPSTREAM, UPSTREAM_UNAUTHORIZED) or this registry refused the content (REFUSED).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
async fn pull(State(inner): St, bytes: Bytes) -> Response {
    reply(
        async {
            let req: CopyRequest = body(&bytes)?;
            let target = check_names(&req)?;
            let remote = inner
                .registries
                .remote(&req.registry_id, REPLICATION_RETRIES)
                .await?;
            let (digest, stats) = replicate::pull(
                &inner.registry,
                &remote,
                &req.repository,
                &req.reference,
                &target,
            )
            .await?;
            Ok(Json(CopyResult {
                digest: digest.to_string(),
                target_repository: target,
                stats,
            })
            .into_response())
        }
        .await,
    )
}

/// Recent replication jobs (queued by rules on push; the last 1000, kept in memory).
#[utoipa::path(
    get,
    path = "/api/v1/replication/jobs",
    tag = "replication",
    responses((status = 200, description = "The jobs, oldest first.", body = Vec<Job>))
)]
async fn list_jobs(State(inner): St) -> Response {
    Json(inner.jobs.lock().list()).into_response()
}

/// One replication job.
#[utoipa::path(
    get,
    path = "/api/v1/replication/jobs/{id}",
    tag = "replication",
    params(("id" = u64, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job.", body = Job),
        (status = 404, description = "No such job (NOT_FOUND).", body = ErrorBody),
    )
)]
async fn get_job(State(inner): St, Path(id): Path<String>) -> Response {
    let job = id.parse().ok().and_then(|id| inner.jobs.lock().get(id));
    match job {
        Some(j) => Json(j).into_response(),
        None => ExternalError::NotFound(format!("no job {id:?}")).into_response(),
    }
}

fn rule_view(rule: &RuleSpec, source: &str) -> RuleView {
    RuleView {
        rule: rule.clone(),
        source: source.to_string(),
    }
}

/// Replication rules: from the configuration file and from this API.
#[utoipa::path(
    get,
    path = "/api/v1/replication/rules",
    tag = "replication",
    responses(
        (status = 200, description = "The rules.", body = Vec<RuleView>),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
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

/// Add a replication rule: pushes matching its repositories and tags are copied to its
/// registry.
#[utoipa::path(
    post,
    path = "/api/v1/replication/rules",
    tag = "replication",
    request_body(content = RuleSpec, description = "`name` and `registry_id` are required; `id` is assigned."),
    responses(
        (status = 201, description = "Created.", body = RuleView),
        (status = 400, description = "Malformed body, no name, an empty pattern or an invalid `target_prefix` (INVALID).", body = ErrorBody),
        (status = 404, description = "No such registry (NOT_FOUND).", body = ErrorBody),
        (status = 409, description = "A rule has this name (CONFLICT).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
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
        inner.registry.meta().put_replication_rule(&rec).await?;
        tracing::info!(rule = %rule.name, created = %rfc3339(rec.created_at), "replication rule created");
        Ok((StatusCode::CREATED, Json(rule_view(&rule, "api"))).into_response())
    }
    .await)
}

/// Remove a rule created through this API.
#[utoipa::path(
    delete,
    path = "/api/v1/replication/rules/{id}",
    tag = "replication",
    params(("id" = String, Path, description = "The rule's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such rule (NOT_FOUND).", body = ErrorBody),
        (status = 409, description = "The rule comes from the configuration file (CONFLICT).", body = ErrorBody),
        (status = 500, description = "Local metadata or storage failed (UNKNOWN).", body = ErrorBody),
    )
)]
async fn delete_rule(State(inner): St, Path(id): Path<String>) -> Response {
    reply(
        async {
            if id.starts_with("config:") {
                return Err(ExternalError::Conflict(
                    "rules from the configuration file cannot be deleted here".into(),
                ));
            }
            if !inner.registry.meta().delete_replication_rule(&id).await? {
                return Err(ExternalError::NotFound(format!("no rule {id:?}")));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// The OpenAPI description of this router, to merge into the management API's document.
#[derive(OpenApi)]
#[openapi(
    paths(
        list_registries,
        create_registry,
        get_registry,
        update_registry,
        delete_registry,
        test_registry,
        push,
        pull,
        list_jobs,
        get_job,
        list_rules,
        create_rule,
        delete_rule,
    ),
    components(schemas(
        RegistryInput,
        AuthSpec,
        RegistryView,
        AuthView,
        TestReport,
        CopyRequest,
        CopyResult,
        CopyStats,
        Job,
        JobStatus,
        RuleSpec,
        RuleView,
        ErrorBody,
        ErrorEntry,
    )),
    tags(
        (name = "external", description = "External registries: endpoints and encrypted credentials."),
        (name = "replication", description = "Copying images to and from external registries: on request, and by rules on push."),
    )
)]
pub struct ExternalApiDoc;

/// The OpenAPI document of the external-registry and replication routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ExternalApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (method, path) the document describes, methods upper-case, sorted.
    fn documented_operations() -> Vec<(String, String)> {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
        ops.sort();
        ops
    }

    #[test]
    fn every_route_is_documented_and_every_documented_path_is_routed() {
        let mut routed: Vec<(String, String)> = endpoints()
            .into_iter()
            .map(|e| (e.method.to_string(), e.path.to_string()))
            .collect();
        routed.sort();
        let mut unique = routed.clone();
        unique.dedup();
        assert_eq!(unique, routed, "a route is listed twice");
        assert_eq!(routed.len(), 13);
        assert_eq!(routed, documented_operations());
    }

    #[test]
    fn schemas_never_return_secrets() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = &doc["components"]["schemas"];
        // Secrets are accepted (write-only) ...
        for field in ["password", "token"] {
            assert_eq!(
                schemas["AuthSpec"]["properties"][field]["writeOnly"], true,
                "{field}: {}",
                schemas["AuthSpec"]
            );
        }
        // ... and the registry view has no field that could hold one.
        let view = schemas["RegistryView"]["properties"].as_object().unwrap();
        assert!(view.contains_key("has_secret"));
        for s in ["RegistryView", "AuthView"] {
            let props = schemas[s]["properties"].as_object().unwrap();
            for secret in ["password", "token", "secret"] {
                assert!(!props.contains_key(secret), "{s} has {secret}");
            }
        }
        assert_eq!(
            schemas["AuthView"]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["type", "username"]
        );
        // Named apart from the management API's error body, which has other codes: merging
        // keeps the first of two schemas with one name.
        assert!(schemas["ErrorBody"].is_null() && schemas["ErrorEntry"].is_null());
        // Every response and request body names a schema the document defines.
        let text = doc.to_string();
        for name in text.split("#/components/schemas/").skip(1) {
            let name = name.split('"').next().unwrap();
            assert!(
                schemas[name].is_object(),
                "{name} is referenced but not defined"
            );
        }
        // Every operation documents its error body.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|k| k.starts_with('2')),
                    "{method} {path}"
                );
                for (status, r) in responses {
                    if !status.starts_with('2') {
                        assert_eq!(
                            r["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ExternalErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn typed_views_serialize_as_before() {
        let rec = registry_meta::ExternalRegistryRecord {
            id: "id1".into(),
            name: "hub".into(),
            kind: "dockerhub".into(),
            endpoint: "https://registry-1.docker.io".into(),
            auth_kind: "basic".into(),
            username: Some("bob".into()),
            secret: Some(vec![1, 2, 3]),
            insecure: false,
            created_at: 0,
            updated_at: 60,
        };
        let v = serde_json::to_value(view(&rec)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "id1", "name": "hub", "type": "dockerhub",
                "endpoint": "https://registry-1.docker.io",
                "auth": {"type": "basic", "username": "bob"},
                "has_secret": true, "insecure": false,
                "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:01:00Z",
            })
        );
        let rule = RuleSpec {
            id: "r1".into(),
            name: "n".into(),
            registry_id: "hub".into(),
            repositories: vec!["a/*".into()],
            tags: vec![],
            target_prefix: None,
        };
        let v = serde_json::to_value(rule_view(&rule, "api")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "r1", "name": "n", "registry_id": "hub", "repositories": ["a/*"],
                "tags": [], "target_prefix": null, "source": "api",
            })
        );
    }
}
