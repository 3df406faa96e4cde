//! Authentication and authorization of the `/v2` API (see the `registry-auth` crate), and
//! the token service's `GET`/`POST /token` endpoints.
//!
//! [`guard`] runs before any handler: it works out what the request needs (pull, push or
//! delete on a repository; the catalog; just a login for `/v2/`), authenticates the
//! request, and refuses it with `401 UNAUTHORIZED` (+ challenge), `403 DENIED` or
//! `429 TOOMANYREQUESTS` before any data is read or changed. The caller's [`Identity`] is
//! left in the request's extensions.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use registry_auth::{AccessEntry, Action, Auth, Identity, Resource};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::listing::MAX_PAGE;
use crate::route::{self, Route};
use crate::uploads::query_pairs;

/// What a request needs before it may run.
#[derive(Debug, Clone, PartialEq)]
enum Need {
    /// Any successful authentication (`/v2/`, and paths that do not parse).
    Login,
    /// The catalog, filtered by what the caller may pull.
    Catalog,
    /// Actions on one repository.
    Repository { name: String, action: Action },
}

fn need_of(route: &Route, method: &Method) -> Need {
    let repo = |name: &str, action| Need::Repository {
        name: name.to_string(),
        action,
    };
    let read_or = |write| match *method {
        Method::GET | Method::HEAD => Action::Pull,
        Method::DELETE => Action::Delete,
        _ => write,
    };
    match route {
        Route::Catalog => Need::Catalog,
        Route::Tags { name } | Route::Referrers { name, .. } => repo(name, Action::Pull),
        Route::Manifest { name, .. } => repo(name, read_or(Action::Push)),
        Route::Blob { name, .. } => repo(name, read_or(Action::Pull)),
        // Upload sessions (status and cancel included) belong to pushing.
        Route::UploadStart { name } | Route::Upload { name, .. } => repo(name, Action::Push),
    }
}

/// The scope a challenge asks for: Docker asks `pull,push` for writes.
fn challenge_scope(need: &Need) -> Option<AccessEntry> {
    match need {
        Need::Login => None,
        Need::Catalog => Some(AccessEntry {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }),
        Need::Repository { name, action } => Some(AccessEntry {
            kind: "repository".into(),
            name: name.clone(),
            actions: match action {
                Action::Push => vec!["pull".into(), "push".into()],
                a => vec![a.as_str().into()],
            },
        }),
    }
}

fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn without_body(mut resp: Response) -> Response {
    *resp.body_mut() = Body::empty();
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// The middleware in front of `/v2`: pass-through when auth is off.
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = st.auth.clone() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if path != "/v2" && !path.starts_with("/v2/") {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let need = match path.strip_prefix("/v2/").filter(|p| !p.is_empty()) {
        None => Need::Login,
        Some(rest) => match percent_encoding::percent_decode_str(rest).decode_utf8() {
            Ok(p) => match route::parse(&p) {
                Ok(r) => need_of(&r, &method),
                Err(_) => Need::Login,
            },
            Err(_) => Need::Login,
        },
    };
    let ip = client_ip(&req);
    let scope = challenge_scope(&need);
    let refuse = |failure, headers: &axum::http::HeaderMap| {
        let resp = auth
            .refusal(failure, headers, scope.as_ref())
            .into_response();
        if method == Method::HEAD {
            without_body(resp)
        } else {
            resp
        }
    };
    let identity = match auth.authenticate(req.headers(), ip).await {
        Ok(i) => i,
        Err(f) => return refuse(f, req.headers()),
    };
    let checked = match &need {
        Need::Login => {
            if identity.is_anonymous() && identity.token_access.is_none() {
                Err(registry_auth::Failure::Unauthenticated)
            } else {
                Ok(())
            }
        }
        Need::Catalog => auth.check(&identity, &[(Resource::Catalog, Action::Pull)]),
        Need::Repository { name, action } => {
            auth.check(&identity, &[(Resource::Repository(name), *action)])
        }
    };
    if let Err(f) = checked {
        return refuse(f, req.headers());
    }
    if let Need::Repository { name, .. } = &need
        && method == Method::POST
        && let Some(uri) = mount_allowed(&auth, &identity, name, req.uri())
    {
        *req.uri_mut() = uri;
    }
    if need == Need::Catalog && method == Method::GET {
        let query = query_pairs(&req);
        return match catalog(&st, &auth, &identity, query).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    if let Some(user) = &identity.user {
        req.extensions_mut()
            .insert(crate::events::Actor(user.clone()));
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// The middleware in front of the management API (`/api/v1/registry/...`, external
/// registries, replication): administrators only; pass-through when auth is off.
pub async fn admin_guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = st.auth.clone() else {
        return next.run(req).await;
    };
    let ip = client_ip(&req);
    match auth.require_admin(req.headers(), ip).await {
        Ok(identity) => {
            if let Some(user) = &identity.user {
                req.extensions_mut()
                    .insert(crate::events::Actor(user.clone()));
            }
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(refusal) => {
            let resp = refusal.into_response();
            if req.method() == Method::HEAD {
                without_body(resp)
            } else {
                resp
            }
        }
    }
}

/// A cross-repository mount needs pull on `from`; without it (or without `from`, a
/// registry-wide mount, for non-admins) the mount parameters are dropped and the request
/// becomes a plain upload session, as Distribution does. Returns the rewritten URI.
fn mount_allowed(auth: &Auth, identity: &Identity, name: &str, uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if !pairs.iter().any(|(k, _)| k == "mount") {
        return None;
    }
    let from = pairs.iter().find(|(k, _)| k == "from").map(|(_, v)| v);
    let allowed = match from {
        Some(from) => auth.authorize(identity, &Resource::Repository(from), Action::Pull),
        None => identity.admin,
    };
    if allowed {
        return None;
    }
    tracing::debug!(
        repository = name,
        "mount source not readable: falling back to an upload session"
    );
    let kept: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(k, _)| k != "mount" && k != "from"))
        .finish();
    let pq = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{kept}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).ok()
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /v2/_catalog`, listing only the repositories the caller may pull.
async fn catalog(
    st: &AppState,
    auth: &Auth,
    identity: &Identity,
    query: Vec<(String, String)>,
) -> ApiResult<Response> {
    let mut n = MAX_PAGE;
    let mut last: Option<String> = None;
    for (k, v) in query {
        match k.as_str() {
            "n" => {
                n = v.parse::<usize>().map_err(|_| {
                    ApiError::new(
                        ErrorCode::PaginationNumberInvalid,
                        format!("invalid n={v:?}"),
                    )
                })?;
                n = n.min(MAX_PAGE);
            }
            "last" => last = Some(v),
            _ => {}
        }
    }
    const BATCH: usize = 1000;
    let mut repos: Vec<String> = Vec::new();
    let mut cursor = last;
    while n > 0 && repos.len() <= n {
        let batch = st.registry.catalog(cursor.as_deref(), BATCH).await?;
        let done = batch.len() < BATCH;
        for r in batch {
            if auth.may_list(identity, &r) {
                repos.push(r.clone());
            }
            cursor = Some(r);
            if repos.len() > n {
                break;
            }
        }
        if done {
            break;
        }
    }
    let next = if repos.len() > n {
        repos.truncate(n);
        repos.last().cloned()
    } else {
        None
    };
    let body = serde_json::to_vec(&serde_json::json!({ "repositories": repos }))
        .expect("json values serialize");
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(l) = next {
        let link = format!("</v2/_catalog?n={n}&last={}>; rel=\"next\"", encode(&l));
        b = b.header(
            header::LINK,
            HeaderValue::from_str(&link).expect("ascii link"),
        );
    }
    Ok(b.body(Body::from(body)).expect("valid response"))
}

fn token_service_off() -> Response {
    ApiError::new(ErrorCode::Unsupported, "the token service is not enabled")
        .status(StatusCode::NOT_FOUND)
        .into_response()
}

/// `GET /token`: the Docker token service (Basic credentials or anonymous).
pub async fn token_get(State(st): State<AppState>, req: Request) -> Response {
    let Some(auth) = st.auth.clone() else {
        return token_service_off();
    };
    let ip = client_ip(&req);
    auth.token_get(req.headers(), req.uri().query().unwrap_or(""), ip)
        .await
}

/// `POST /token`: the OAuth2 form (`grant_type=password` or `refresh_token`).
pub async fn token_post(State(st): State<AppState>, req: Request) -> Response {
    let Some(auth) = st.auth.clone() else {
        return token_service_off();
    };
    let ip = client_ip(&req);
    let body = match axum::body::to_bytes(req.into_body(), registry_auth::MAX_TOKEN_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(ErrorCode::SizeInvalid, "token request too large")
                .status(StatusCode::PAYLOAD_TOO_LARGE)
                .into_response();
        }
    };
    auth.token_post(&body, ip).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_by_route_and_method() {
        let m = |s: &str| Route::Manifest {
            name: "a/b".into(),
            reference: s.into(),
        };
        let repo = |action| Need::Repository {
            name: "a/b".into(),
            action,
        };
        assert_eq!(need_of(&m("v1"), &Method::GET), repo(Action::Pull));
        assert_eq!(need_of(&m("v1"), &Method::HEAD), repo(Action::Pull));
        assert_eq!(need_of(&m("v1"), &Method::PUT), repo(Action::Push));
        assert_eq!(need_of(&m("v1"), &Method::DELETE), repo(Action::Delete));
        let blob = Route::Blob {
            name: "a/b".into(),
            digest: "sha256:0".into(),
        };
        assert_eq!(need_of(&blob, &Method::GET), repo(Action::Pull));
        assert_eq!(need_of(&blob, &Method::DELETE), repo(Action::Delete));
        let up = Route::Upload {
            name: "a/b".into(),
            id: "x".into(),
        };
        for method in [Method::GET, Method::PATCH, Method::PUT, Method::DELETE] {
            assert_eq!(need_of(&up, &method), repo(Action::Push));
        }
        assert_eq!(need_of(&Route::Catalog, &Method::GET), Need::Catalog);
        assert_eq!(
            need_of(&Route::Tags { name: "a/b".into() }, &Method::GET),
            repo(Action::Pull)
        );
    }
}
