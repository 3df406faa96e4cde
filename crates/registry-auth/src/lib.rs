//! Authentication and authorization of hyperregistry.
//!
//! - [`config`]: the `auth.*` configuration block.
//! - [`htpasswd`]: users and bcrypt hashes.
//! - [`rules`]: repository patterns, access rules, anonymous pull, admins; [`Identity`].
//! - [`token`]: the Docker token flow's JWTs (ES256/RS256), scopes and claims.
//! - [`throttle`]: failed-login throttling and the cache of verified passwords.
//!
//! [`Auth`] ties them together. It has two modes: Basic auth checked on every request, or
//! the Docker token service (`GET`/`POST /token`, bearer tokens on the registry API). The
//! registry API calls [`Auth::authenticate`] and [`Auth::check`] before touching any data;
//! other routers (the management API) call [`Auth::require_admin`] with the request's headers:
//!
//! ```ignore
//! async fn admin_only(State(auth): State<Arc<Auth>>, ConnectInfo(peer): ConnectInfo<SocketAddr>,
//!                     headers: HeaderMap) -> Response {
//!     match auth.require_admin(&headers, Some(peer.ip())).await {
//!         Ok(identity) => /* identity.user is the admin's name */ todo!(),
//!         Err(refusal) => refusal.into_response(), // 401 + challenge, 403 DENIED or 429
//!     }
//! }
//! ```

pub mod config;
pub mod error;
pub mod htpasswd;
pub mod rules;
pub mod throttle;
pub mod token;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

pub use crate::config::AuthConfig;
pub use crate::error::AuthError;
pub use crate::htpasswd::Htpasswd;
pub use crate::rules::{Action, Identity, Pattern, Resource, Rules};
pub use crate::token::{AccessEntry, Claims, TokenKeys};

use crate::throttle::{Throttle, VerifiedCache};

/// How long a verified (user, password) pair skips bcrypt.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// The scope a bearer token needs for the management API: `registry:admin:*`. The token
/// service grants it to registry administrators who ask for it; without it an
/// administrator's token is bound to the repositories it names, like anyone's.
pub const ADMIN_SCOPE: &str = "registry:admin:*";

/// Largest `POST /token` form accepted, in bytes.
pub const MAX_TOKEN_FORM: usize = 64 << 10;

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Authorization: Basic` on every request (`auth.htpasswd` alone).
    Basic,
    /// Bearer tokens from the built-in token service (`auth.token`).
    Token,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No credentials, and the request needs some.
    Unauthenticated,
    /// Wrong user name or password, or a malformed `Authorization` header.
    BadCredentials,
    /// A bearer token that does not verify (signature, issuer, audience, expiry).
    InvalidToken,
    /// A valid bearer token that does not grant what the request needs.
    InsufficientScope,
    /// Authenticated with a password, but the rules do not allow the request.
    Denied,
    /// Too many failed logins for this user name or client address: retry after N seconds.
    Throttled(u64),
}

/// A refusal ready to send: status, spec error code, message and headers
/// (`WWW-Authenticate`, `Retry-After`).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status (401, 403 or 429).
    pub status: StatusCode,
    /// `UNAUTHORIZED`, `DENIED` or `TOOMANYREQUESTS`.
    pub code: &'static str,
    /// Human-readable message (never holds credentials).
    pub message: String,
    /// Headers to add to the response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message}]});
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

/// Authentication and authorization for one registry process.
pub struct Auth {
    mode: Mode,
    realm: String,
    users: Arc<Htpasswd>,
    rules: Rules,
    tokens: Option<TokenKeys>,
    token_realm: Option<String>,
    throttle: Throttle,
    verified: VerifiedCache,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// Whether an `Authorization` header is `Basic` with an empty user name and password, which
/// containers/image (skopeo, podman) sends when it has no credentials: anonymous.
fn is_empty_basic(value: &str) -> bool {
    let mut it = value.trim().splitn(2, ' ');
    let (scheme, rest) = (it.next().unwrap_or(""), it.next().unwrap_or("").trim());
    scheme.eq_ignore_ascii_case("basic")
        && base64::engine::general_purpose::STANDARD
            .decode(rest)
            .is_ok_and(|raw| raw == b":")
}

/// `Basic` credentials from an `Authorization` header value; `Err` when it is malformed.
fn basic_credentials(value: &str) -> Result<(String, String), ()> {
    let (scheme, rest) = value.trim().split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| ())?;
    let text = String::from_utf8(raw).map_err(|_| ())?;
    let (user, pass) = text.split_once(':').ok_or(())?;
    if user.is_empty() {
        return Err(());
    }
    Ok((user.to_string(), pass.to_string()))
}

/// A `quoted-string` value for a challenge (quotes and backslashes escaped).
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Form or query pairs (`application/x-www-form-urlencoded`).
fn pairs(s: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(s).into_owned().collect()
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn token_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({
            "errors": [{"code": code, "message": message}],
            "error": match status { StatusCode::BAD_REQUEST => "invalid_request", _ => "invalid_grant" },
            "error_description": message,
        }),
    )
}

impl Auth {
    /// Count failed logins in `shared` too (Redis), so that replicas lock out together.
    pub fn share_throttle(&self, shared: Arc<dyn throttle::SharedCounters>) {
        self.throttle.share(shared);
    }

    /// Publish the token signing key's public half in `directory` and accept tokens signed
    /// by any key published there (other replicas'); nothing to do without a token service.
    pub async fn share_token_keys(
        &self,
        directory: Arc<dyn token::KeyDirectory>,
    ) -> Result<(), AuthError> {
        match &self.tokens {
            Some(keys) => keys.share(directory).await,
            None => Ok(()),
        }
    }

    /// Build from the `auth` block; `Ok(None)` when authentication is off (no `htpasswd`
    /// and no `token`). `data_dir` keeps a generated token signing key.
    pub fn from_config(cfg: &AuthConfig, data_dir: &Path) -> Result<Option<Auth>, AuthError> {
        let Some(ht) = &cfg.htpasswd else {
            if cfg.token.is_some() {
                return Err(AuthError::Config(
                    "auth.token needs auth.htpasswd.path: the token service checks passwords there"
                        .into(),
                ));
            }
            if !cfg.access.is_empty()
                || !cfg.admins.users.is_empty()
                || !cfg.anonymous.pull.is_empty()
            {
                return Err(AuthError::Config(
                    "auth rules are set but no auth.htpasswd.path: authentication is off".into(),
                ));
            }
            return Ok(None);
        };
        if ht.path.as_os_str().is_empty() {
            return Err(AuthError::Config("auth.htpasswd.path is required".into()));
        }
        let users = Htpasswd::load(&ht.path)?;
        let rules = Rules::from_config(cfg)?;
        for u in rules.unknown_users(|u| users.contains(u)) {
            tracing::warn!(user = %u, "the auth configuration names a user the htpasswd file does not have");
        }
        let (mode, tokens, token_realm) = match &cfg.token {
            Some(t) => (
                Mode::Token,
                Some(TokenKeys::load(t, data_dir)?),
                t.realm.clone(),
            ),
            None => (Mode::Basic, None, None),
        };
        tracing::info!(mode = ?mode, users = users.len(), "authentication enabled");
        Ok(Some(Auth {
            mode,
            realm: ht.realm.clone(),
            users: Arc::new(users),
            rules,
            tokens,
            token_realm,
            throttle: Throttle::new(&cfg.throttle),
            verified: VerifiedCache::new(VERIFIED_TTL),
        }))
    }

    /// Basic or token mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The compiled rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Check a user name and password. A name or address that is locked out gets
    /// `Throttled` even with the right password. A pair that verified recently passes
    /// without bcrypt; any other check is counted as an attempt *before* bcrypt runs (on a
    /// blocking thread), so concurrent guesses evaluate at most the throttle's limit.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<Identity, Failure> {
        let refused = |wait| {
            tracing::info!(user, ip = ?ip, "login refused: too many failures");
            Failure::Throttled(wait)
        };
        self.throttle
            .check_everywhere(Some(user), ip)
            .await
            .map_err(refused)?;
        if self.verified.hit(user, password) {
            return Ok(self.rules.identity_of(user));
        }
        let _turn = self.verified.verifying(user, password).await;
        if self.verified.hit(user, password) {
            return Ok(self.rules.identity_of(user));
        }
        let attempt = self
            .throttle
            .begin_everywhere(Some(user), ip)
            .await
            .map_err(refused)?;
        let users = self.users.clone();
        let (u, p) = (user.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || users.verify(&u, &p))
            .await
            .unwrap_or(false);
        if ok {
            self.verified.insert(user, password);
        }
        self.throttle.end_everywhere(attempt, ok).await;
        if ok {
            Ok(self.rules.identity_of(user))
        } else {
            tracing::info!(user, ip = ?ip, "login failed");
            Err(Failure::BadCredentials)
        }
    }

    /// Who sent these headers: anonymous without `Authorization`, a user for valid `Basic`
    /// credentials, the token's subject and grants for a valid `Bearer` token.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
    ) -> Result<Identity, Failure> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Identity::anonymous());
        };
        let Ok(value) = value.to_str() else {
            return Err(Failure::BadCredentials);
        };
        if is_empty_basic(value) {
            return Ok(Identity::anonymous());
        }
        let scheme = value.split(' ').next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = value[scheme.len()..].trim();
            let Some(keys) = &self.tokens else {
                return Err(Failure::InvalidToken);
            };
            let claims = keys.verify(token).await.map_err(|why| {
                tracing::debug!(%why, "bearer token rejected");
                Failure::InvalidToken
            })?;
            let mut identity = if claims.sub.is_empty() {
                Identity::anonymous()
            } else {
                self.rules.identity_of(&claims.sub)
            };
            identity.token_access = Some(claims.access);
            return Ok(identity);
        }
        match basic_credentials(value) {
            Ok((user, password)) => self.login(&user, &password, ip).await,
            Err(()) => match self.throttle.begin_everywhere(None, ip).await {
                Ok(attempt) => {
                    self.throttle.end_everywhere(attempt, false).await;
                    Err(Failure::BadCredentials)
                }
                Err(wait) => Err(Failure::Throttled(wait)),
            },
        }
    }

    /// Whether `identity` may do `action` on `resource`: by its token's grants when it came
    /// with a token, by the rules otherwise (admins may do everything).
    pub fn authorize(&self, identity: &Identity, resource: &Resource<'_>, action: Action) -> bool {
        match &identity.token_access {
            Some(access) => match resource {
                Resource::Repository(name) => access
                    .iter()
                    .any(|e| e.grants("repository", name, action.as_str())),
                Resource::Catalog => access.iter().any(|e| e.grants("registry", "catalog", "*")),
                // The scope bounds the token, and the rules bound the scope's holder.
                Resource::Admin => {
                    identity.admin && access.iter().any(|e| e.grants("registry", "admin", "*"))
                }
            },
            None => self.rules.allows(identity, resource, action),
        }
    }

    /// Whether the rules let `identity` pull `repo` (what the catalog lists, whatever token
    /// the request carried).
    pub fn may_list(&self, identity: &Identity, repo: &str) -> bool {
        self.rules
            .allows(identity, &Resource::Repository(repo), Action::Pull)
    }

    /// Check that `identity` may do every `(resource, action)`; the failure says why not.
    pub fn check(
        &self,
        identity: &Identity,
        needs: &[(Resource<'_>, Action)],
    ) -> Result<(), Failure> {
        if needs.iter().all(|(r, a)| self.authorize(identity, r, *a)) {
            return Ok(());
        }
        Err(if identity.token_access.is_some() {
            Failure::InsufficientScope
        } else if identity.is_anonymous() {
            Failure::Unauthenticated
        } else {
            Failure::Denied
        })
    }

    /// Authenticate and require an admin (for the management API): 401 with a challenge
    /// without credentials, 403 DENIED for non-admins, 401 `insufficient_scope` for a bearer
    /// token without [`ADMIN_SCOPE`] (whoever it was issued to), 429 when throttled.
    pub async fn require_admin(
        &self,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
    ) -> Result<Identity, Refusal> {
        let scope = AccessEntry::parse_scope(ADMIN_SCOPE);
        let identity = self
            .authenticate(headers, ip)
            .await
            .map_err(|f| self.refusal(f, headers, scope.as_ref()))?;
        if identity.is_anonymous() && identity.token_access.is_none() {
            return Err(self.refusal(Failure::Unauthenticated, headers, scope.as_ref()));
        }
        self.check(&identity, &[(Resource::Admin, Action::Pull)])
            .map_err(|f| self.refusal(f, headers, scope.as_ref()))?;
        Ok(identity)
    }

    /// The token endpoint URL for challenges: configured, or `http://<Host>/token`.
    fn token_realm(&self, headers: &HeaderMap) -> String {
        if let Some(r) = &self.token_realm {
            return r.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        format!("http://{host}/token")
    }

    /// The `WWW-Authenticate` challenge for this mode, with the scope needed and an error.
    pub fn challenge(
        &self,
        headers: &HeaderMap,
        scope: Option<&AccessEntry>,
        error: Option<&str>,
    ) -> HeaderValue {
        let text = match (self.mode, &self.tokens) {
            (Mode::Token, Some(keys)) => {
                let mut c = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    quoted(&self.token_realm(headers)),
                    quoted(keys.service())
                );
                if let Some(s) = scope {
                    c.push_str(&format!(",scope=\"{}\"", quoted(&s.to_scope())));
                }
                if let Some(e) = error {
                    c.push_str(&format!(",error=\"{e}\""));
                }
                c
            }
            _ => format!("Basic realm=\"{}\",charset=\"UTF-8\"", quoted(&self.realm)),
        };
        HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"registry\""))
    }

    /// The response for a failure; `scope` is what the request needed (for the challenge).
    pub fn refusal(
        &self,
        failure: Failure,
        headers: &HeaderMap,
        scope: Option<&AccessEntry>,
    ) -> Refusal {
        let challenge = |error| {
            vec![(
                header::WWW_AUTHENTICATE,
                self.challenge(headers, scope, error),
            )]
        };
        match failure {
            Failure::Unauthenticated => Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "UNAUTHORIZED",
                message: "authentication required".into(),
                headers: challenge(None),
            },
            Failure::BadCredentials => Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "UNAUTHORIZED",
                message: "invalid user name or password".into(),
                headers: challenge(None),
            },
            Failure::InvalidToken => Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "UNAUTHORIZED",
                message: "invalid or expired token".into(),
                headers: challenge(Some("invalid_token")),
            },
            Failure::InsufficientScope => Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "UNAUTHORIZED",
                message: "the token does not grant access to the resource".into(),
                headers: challenge(Some("insufficient_scope")),
            },
            Failure::Denied => Refusal {
                status: StatusCode::FORBIDDEN,
                code: "DENIED",
                message: "requested access to the resource is denied".into(),
                headers: Vec::new(),
            },
            Failure::Throttled(wait) => Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "TOOMANYREQUESTS",
                message: "too many failed logins; retry later".into(),
                headers: vec![(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&wait.to_string()).expect("digits"),
                )],
            },
        }
    }

    /// What a token for `identity` may grant out of `requested`: for each scope, the
    /// requested actions the rules allow (asking for more yields less, never an error).
    pub fn grant(&self, identity: &Identity, requested: &[AccessEntry]) -> Vec<AccessEntry> {
        let mut out: Vec<AccessEntry> = Vec::new();
        for want in requested {
            let actions: Vec<String> = match (want.kind.as_str(), want.name.as_str()) {
                ("repository", name) if oci_core::validate_repository(name).is_ok() => want
                    .requested_actions()
                    .into_iter()
                    .filter(|a| self.rules.allows(identity, &Resource::Repository(name), *a))
                    .map(|a| a.as_str().to_string())
                    .collect(),
                ("registry", "admin")
                    if want.actions.iter().any(|a| a == "*")
                        && self.rules.allows(identity, &Resource::Admin, Action::Pull) =>
                {
                    vec!["*".to_string()]
                }
                ("registry", "catalog")
                    if want.actions.iter().any(|a| a == "*")
                        && self
                            .rules
                            .allows(identity, &Resource::Catalog, Action::Pull) =>
                {
                    vec!["*".to_string()]
                }
                _ => Vec::new(),
            };
            if actions.is_empty() {
                continue;
            }
            match out
                .iter_mut()
                .find(|e| e.kind == want.kind && e.name == want.name)
            {
                Some(e) => {
                    for a in actions {
                        if !e.actions.contains(&a) {
                            e.actions.push(a);
                        }
                    }
                }
                None => out.push(AccessEntry {
                    kind: want.kind.clone(),
                    name: want.name.clone(),
                    actions,
                }),
            }
        }
        out
    }

    fn token_response(
        &self,
        keys: &TokenKeys,
        identity: &Identity,
        requested: &[AccessEntry],
        refresh: bool,
    ) -> Response {
        let access = self.grant(identity, requested);
        let scope = access
            .iter()
            .map(AccessEntry::to_scope)
            .collect::<Vec<_>>()
            .join(" ");
        let sub = identity.user.clone().unwrap_or_default();
        let (token, iat) = match keys.issue(&sub, access) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "issuing a token");
                return token_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "could not issue a token",
                );
            }
        };
        let issued_at = time::OffsetDateTime::from_unix_timestamp(iat as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let mut body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": keys.expiration(),
            "issued_at": issued_at,
            "scope": scope,
        });
        if refresh && !sub.is_empty() {
            match keys.issue_refresh(&sub) {
                Ok(r) => body["refresh_token"] = r.into(),
                Err(e) => tracing::error!(error = %e, "issuing a refresh token"),
            }
        }
        tracing::info!(user = %sub, granted = %scope, "token issued");
        json_response(StatusCode::OK, body)
    }

    fn scopes_of(values: impl Iterator<Item = String>) -> Vec<AccessEntry> {
        values
            .flat_map(|v| v.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter_map(|s| AccessEntry::parse_scope(&s))
            .collect()
    }

    fn login_refused(&self, failure: Failure) -> Response {
        match failure {
            Failure::Throttled(_) => self
                .refusal(failure, &HeaderMap::new(), None)
                .into_response(),
            _ => {
                let mut r = token_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "invalid user name or password",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&format!("Basic realm=\"{}\"", quoted(&self.realm)))
                        .unwrap_or_else(|_| HeaderValue::from_static("Basic")),
                );
                r
            }
        }
    }

    /// `GET /token?service=&scope=&account=&offline_token=`: Basic credentials or anonymous.
    pub async fn token_get(
        &self,
        headers: &HeaderMap,
        query: &str,
        ip: Option<IpAddr>,
    ) -> Response {
        let Some(keys) = &self.tokens else {
            return token_error(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "the token service is not enabled",
            );
        };
        let q = pairs(query.as_bytes());
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if let Some(s) = get("service")
            && s != keys.service()
        {
            return token_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "unknown service");
        }
        let identity = match headers
            .get(header::AUTHORIZATION)
            .filter(|v| !v.to_str().is_ok_and(is_empty_basic))
        {
            None => Identity::anonymous(),
            Some(v) => match v.to_str().map_err(|_| ()).and_then(basic_credentials) {
                Ok((user, password)) => match self.login(&user, &password, ip).await {
                    Ok(i) => i,
                    Err(f) => return self.login_refused(f),
                },
                Err(()) => return self.login_refused(Failure::BadCredentials),
            },
        };
        if let Some(account) = get("account")
            && !account.is_empty()
            && identity.user.as_deref() != Some(account)
        {
            return token_error(
                StatusCode::BAD_REQUEST,
                "DENIED",
                "account does not match the credentials",
            );
        }
        let requested = Self::scopes_of(
            q.iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone()),
        );
        let refresh = get("offline_token") == Some("true");
        self.token_response(keys, &identity, &requested, refresh)
    }

    /// `POST /token` (OAuth2 form): `grant_type=password` with `username`/`password`, or
    /// `grant_type=refresh_token` with `refresh_token`; `scope` space-separated.
    pub async fn token_post(&self, body: &[u8], ip: Option<IpAddr>) -> Response {
        let Some(keys) = &self.tokens else {
            return token_error(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "the token service is not enabled",
            );
        };
        let f = pairs(body);
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if let Some(s) = get("service")
            && s != keys.service()
        {
            return token_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "unknown service");
        }
        let identity = match get("grant_type") {
            Some("password") => {
                let (Some(user), Some(password)) = (get("username"), get("password")) else {
                    return token_error(
                        StatusCode::BAD_REQUEST,
                        "UNSUPPORTED",
                        "username and password are required",
                    );
                };
                match self.login(user, password, ip).await {
                    Ok(i) => i,
                    Err(f) => return self.login_refused(f),
                }
            }
            Some("refresh_token") => {
                let Some(token) = get("refresh_token") else {
                    return token_error(
                        StatusCode::BAD_REQUEST,
                        "UNSUPPORTED",
                        "refresh_token is required",
                    );
                };
                match keys.verify_refresh(token).await {
                    Ok(sub) if self.users.contains(&sub) => self.rules.identity_of(&sub),
                    Ok(_) | Err(_) => {
                        return token_error(
                            StatusCode::UNAUTHORIZED,
                            "UNAUTHORIZED",
                            "invalid refresh token",
                        );
                    }
                }
            }
            _ => {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "unsupported grant_type",
                );
            }
        };
        let requested = Self::scopes_of(get("scope").map(str::to_string).into_iter());
        let refresh =
            get("grant_type") == Some("password") && get("access_type") == Some("offline");
        self.token_response(keys, &identity, &requested, refresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let p = pairs(b"a=1&scope=repository%3Ax%3Apull+repository:y:push&empty&pct=%zz%4");
        assert_eq!(p[0], ("a".into(), "1".into()));
        assert_eq!(p[1].1, "repository:x:pull repository:y:push");
        assert_eq!(p[2], ("empty".into(), String::new()));
        assert_eq!(p.len(), 4);
    }

    fn auth_with(dir: &Path, token: bool) -> Auth {
        let h = bcrypt::hash("pw", 4).unwrap();
        let path = dir.join("htpasswd");
        std::fs::write(&path, format!("ann:{h}\nben:{h}\n")).unwrap();
        let mut cfg = AuthConfig {
            htpasswd: Some(config::HtpasswdConfig {
                realm: "r".into(),
                path,
            }),
            ..AuthConfig::default()
        };
        cfg.groups.insert("ops".into(), vec!["ann".into()]);
        cfg.admins.groups = vec!["ops".into()];
        if token {
            cfg.token = Some(config::TokenConfig::default());
        }
        Auth::from_config(&cfg, dir).unwrap().unwrap()
    }

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn require_admin_for_the_management_api() {
        for token in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let auth = auth_with(dir.path(), token);
            let admin = auth.require_admin(&basic("ann", "pw"), None).await.unwrap();
            assert_eq!(admin.user.as_deref(), Some("ann"));
            let r = auth
                .require_admin(&basic("ben", "pw"), None)
                .await
                .unwrap_err();
            assert_eq!((r.status, r.code), (StatusCode::FORBIDDEN, "DENIED"));
            let r = auth
                .require_admin(&basic("ann", "bad"), None)
                .await
                .unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            let r = auth
                .require_admin(&HeaderMap::new(), None)
                .await
                .unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            let challenge = r.headers[0].1.to_str().unwrap().to_string();
            assert!(challenge.starts_with(if token {
                "Bearer realm="
            } else {
                "Basic realm=\"r\""
            }));
            if token {
                let keys = auth.tokens.as_ref().unwrap();
                let bearer = |sub: &str, access: Vec<AccessEntry>| {
                    let (t, _) = keys.issue(sub, access).unwrap();
                    let mut h = HeaderMap::new();
                    h.insert(
                        header::AUTHORIZATION,
                        HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
                    );
                    h
                };
                let admin_scope = || vec![AccessEntry::parse_scope(ADMIN_SCOPE).unwrap()];
                // An admin's token works with the admin scope only.
                assert!(
                    auth.require_admin(&bearer("ann", admin_scope()), None)
                        .await
                        .unwrap()
                        .admin
                );
                let narrow = vec![AccessEntry::parse_scope("repository:public/x:pull").unwrap()];
                let r = auth
                    .require_admin(&bearer("ann", narrow), None)
                    .await
                    .unwrap_err();
                assert_eq!(r.status, StatusCode::UNAUTHORIZED);
                let challenge = r.headers[0].1.to_str().unwrap();
                assert!(
                    challenge.contains("scope=\"registry:admin:*\"")
                        && challenge.contains("insufficient_scope"),
                    "{challenge}"
                );
                // The scope does not make a non-admin an admin.
                let r = auth
                    .require_admin(&bearer("ben", admin_scope()), None)
                    .await
                    .unwrap_err();
                assert_eq!(r.status, StatusCode::UNAUTHORIZED);
                // The token service grants it to admins who ask, and to no one else.
                let ann = auth.rules.identity_of("ann");
                let ben = auth.rules.identity_of("ben");
                assert_eq!(auth.grant(&ann, &admin_scope()), admin_scope());
                assert!(auth.grant(&ben, &admin_scope()).is_empty());
            }
        }
    }

    #[test]
    fn config_without_users_is_off_or_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Auth::from_config(&AuthConfig::default(), dir.path())
                .unwrap()
                .is_none()
        );
        let cfg = AuthConfig {
            token: Some(config::TokenConfig::default()),
            ..AuthConfig::default()
        };
        assert!(Auth::from_config(&cfg, dir.path()).is_err());
    }

    #[test]
    fn basic_header_parsing() {
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert_eq!(
            basic_credentials(&format!("Basic {enc}")).unwrap(),
            ("alice".to_string(), "pa:ss".to_string())
        );
        assert!(basic_credentials("Basic !!!").is_err());
        assert!(basic_credentials("Digest abc").is_err());
        let nouser = base64::engine::general_purpose::STANDARD.encode(":pw");
        assert!(basic_credentials(&format!("basic {nouser}")).is_err());
        let empty = base64::engine::general_purpose::STANDARD.encode(":");
        assert!(is_empty_basic(&format!("Basic {empty}")));
        assert!(!is_empty_basic(&format!("Basic {nouser}")));
    }
}
