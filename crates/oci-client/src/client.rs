//! The registry client: authentication (anonymous, Basic, Docker bearer tokens), retries with
//! exponential backoff, jitter and `Retry-After`, and the distribution API calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use oci_core::Digest;
use oci_core::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::credentials::{Challenge, Credential, CredentialStore, basic_header, parse_challenge};
use crate::error::{ClientError, Result};
use crate::reference::Reference;

/// Largest manifest the client will read.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The `Accept` header for manifests: every type the client understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How the client talks to registries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Registries reached over plain HTTP (loopback hosts always are).
    pub insecure_registries: Vec<String>,
    /// Where credentials come from.
    pub credentials: CredentialStore,
    /// Credentials that override the stores for every registry (`--credential`).
    pub explicit: Option<Credential>,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry, with jitter.
    pub base_delay: Duration,
    /// Timeout for connecting.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            insecure_registries: Vec::new(),
            credentials: CredentialStore::default(),
            explicit: None,
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// Scopes of a token: `repository:NAME:ACTIONS`.
fn repo_scope(repository: &str, push: bool) -> String {
    format!(
        "repository:{repository}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

#[derive(Clone)]
enum Auth {
    Basic(String),
    Bearer(String),
}

/// A registry client, cheap to clone and safe to share between tasks.
#[derive(Clone)]
pub struct RegistryClient {
    /// For `http://` registries: no TLS roots loaded (loading them costs a cold start).
    plain: reqwest::Client,
    /// For `https://`: built on first use, with the platform's roots.
    tls: Arc<std::sync::OnceLock<reqwest::Client>>,
    cfg: Arc<ClientConfig>,
    /// Authorization per (registry, scopes).
    auth: Arc<parking_lot::Mutex<HashMap<(String, String), Auth>>>,
    /// A fixed `Authorization: Bearer` token sent with every request, when set.
    static_bearer: Option<Arc<str>>,
    /// Accept any TLS certificate (an operator's explicit choice for one registry).
    accept_invalid_certs: bool,
}

/// One attempt's request, rebuilt for every retry.
pub type BuildRequest<'a> = dyn Fn(&reqwest::Client) -> Result<RequestBuilder> + Send + Sync + 'a;

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// The error a non-success response stands for, with the registry's code and message.
pub async fn status_error(context: &str, resp: Response) -> ClientError {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let (code, message) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("errors")?.get(0).cloned())
        .map(|e| {
            (
                e.get("code").and_then(|c| c.as_str()).map(str::to_string),
                e.get("message")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
            )
        })
        .unwrap_or((None, None));
    ClientError::Status {
        context: context.to_string(),
        status,
        code,
        message,
    }
}

/// What `Retry-After` asks for (seconds or an HTTP date), at most five minutes.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    oci_core::retry::retry_after(v, Duration::from_secs(300))
}

impl RegistryClient {
    /// A client with the given configuration.
    pub fn new(cfg: ClientConfig) -> Result<RegistryClient> {
        let plain = Self::builder(&cfg)
            .tls_certs_only(std::iter::empty())
            // It has no TLS roots: a redirect to https:// (blob storage) is stopped here and
            // followed with the TLS client (`follow_tls_redirect`).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.url().scheme() == "https" {
                    attempt.stop()
                } else if attempt.previous().len() >= 10 {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|source| ClientError::Http {
                context: "creating the HTTP client".into(),
                source,
            })?;
        Ok(RegistryClient {
            plain,
            tls: Arc::new(std::sync::OnceLock::new()),
            cfg: Arc::new(cfg),
            auth: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            static_bearer: None,
            accept_invalid_certs: false,
        })
    }

    /// Send `token` as `Authorization: Bearer` with every request instead of answering
    /// challenges (a pre-issued registry token); a 401 is then final.
    pub fn with_static_bearer(mut self, token: &str) -> RegistryClient {
        self.static_bearer = Some(Arc::from(token));
        self
    }

    /// Skip TLS certificate verification for `https://` registries.
    pub fn with_invalid_certs_accepted(mut self) -> RegistryClient {
        self.accept_invalid_certs = true;
        self.tls = Arc::new(std::sync::OnceLock::new());
        self
    }

    fn builder(cfg: &ClientConfig) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(concat!("hyper-oci-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.connect_timeout)
    }

    /// The HTTP client for a URL: TLS with the platform's roots for `https://`.
    fn http_for(&self, url: &str) -> Result<&reqwest::Client> {
        if !url.starts_with("https://") {
            return Ok(&self.plain);
        }
        if let Some(c) = self.tls.get() {
            return Ok(c);
        }
        let built = Self::builder(&self.cfg)
            .danger_accept_invalid_certs(self.accept_invalid_certs)
            .build()
            .map_err(|source| ClientError::Http {
                context: "creating the HTTPS client".into(),
                source,
            })?;
        Ok(self.tls.get_or_init(|| built))
    }

    /// Follow a redirect the plain-HTTP client stopped at (an `http://` registry sending blob
    /// reads to `https://` storage) with the TLS client: same method and `Range`, and no
    /// registry credentials (the target URL carries its own authorization).
    async fn follow_tls_redirect(
        &self,
        resp: Response,
        method: Method,
        range: Option<&str>,
        context: &str,
    ) -> Result<Response> {
        if !resp.status().is_redirection() {
            return Ok(resp);
        }
        let Some(target) = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| resp.url().join(l).ok())
        else {
            return Ok(resp);
        };
        tracing::debug!(
            host = target.host_str().unwrap_or(""),
            context,
            "following a redirect to TLS storage"
        );
        let mut rb = self.http_for(target.as_str())?.request(method, target);
        if let Some(r) = range {
            rb = rb.header(header::RANGE, r);
        }
        rb.send().await.map_err(|source| ClientError::Http {
            context: context.to_string(),
            source,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// `http(s)://host` for a registry.
    pub fn base_url(&self, reference: &Reference) -> String {
        let scheme = if is_loopback(&reference.registry)
            || self
                .cfg
                .insecure_registries
                .iter()
                .any(|r| r == &reference.registry)
        {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", reference.endpoint())
    }

    /// Make `url` absolute against the registry (Location headers may be relative).
    pub fn absolute(&self, reference: &Reference, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{}", self.base_url(reference), url)
        }
    }

    fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = &self.cfg.explicit {
            return Ok(Some(c.clone()));
        }
        Ok(self.cfg.credentials.get(registry)?)
    }

    /// Fetch a bearer token for `scopes` from the challenge's realm.
    async fn fetch_token(
        &self,
        reference: &Reference,
        challenge: &Challenge,
        scopes: &[String],
    ) -> Result<String> {
        let unauthorized = |message: String| ClientError::Unauthorized {
            registry: reference.registry.clone(),
            message,
        };
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| unauthorized("bearer challenge without a realm".into()))?;
        let service = challenge.params.get("service").cloned().unwrap_or_default();
        let mut all_scopes: Vec<String> = scopes.to_vec();
        if let Some(s) = challenge.params.get("scope") {
            for part in s.split(' ') {
                if !all_scopes.iter().any(|x| x == part) {
                    all_scopes.push(part.to_string());
                }
            }
        }
        let credential = self.credential(&reference.registry)?;
        let req = match &credential {
            Some(Credential::IdentityToken(token)) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token)
                    .append_pair("service", &service)
                    .append_pair("client_id", "hyperbuild");
                for s in &all_scopes {
                    form.append_pair("scope", s);
                }
                self.http_for(realm)?
                    .post(realm)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish())
            }
            other => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.append_pair("service", &service);
                for s in &all_scopes {
                    query.append_pair("scope", s);
                }
                let sep = if realm.contains('?') { '&' } else { '?' };
                let mut rb = self
                    .http_for(realm)?
                    .get(format!("{realm}{sep}{}", query.finish()));
                if let Some(Credential::Basic { username, password }) = other {
                    rb = rb.header(header::AUTHORIZATION, basic_header(username, password));
                }
                rb
            }
        };
        let resp = req.send().await.map_err(|source| ClientError::Http {
            context: format!("requesting a token from {realm}"),
            source,
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let err = status_error("token request", resp).await;
            return Err(unauthorized(format!(
                "token server answered {status}: {err}"
            )));
        }
        let v: serde_json::Value = resp.json().await.map_err(|source| ClientError::Http {
            context: "reading the token response".into(),
            source,
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| unauthorized("token response without a token".into()))
    }

    /// Send a request with authentication and retries. `build` is called once per attempt.
    /// Non-success statuses other than 401 and retryable ones are returned as responses.
    pub async fn send(
        &self,
        reference: &Reference,
        scopes: &[String],
        context: &str,
        build: &BuildRequest<'_>,
    ) -> Result<Response> {
        self.send_with(reference, scopes, context, true, build)
            .await
    }

    /// [`send`](Self::send), choosing whether a failed connection is retried here. Requests
    /// that change server state partway (an upload body cut off mid-way) must not be blindly
    /// repeated: the caller asks the registry where things stand instead.
    pub async fn send_with(
        &self,
        reference: &Reference,
        scopes: &[String],
        context: &str,
        retry_transport: bool,
        build: &BuildRequest<'_>,
    ) -> Result<Response> {
        let key = (reference.registry.clone(), scopes.join(" "));
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            let mut rb = build(self.http_for(&self.base_url(reference))?)?;
            if let Some(token) = &self.static_bearer {
                rb = rb.header(header::AUTHORIZATION, format!("Bearer {token}"));
            } else if let Some(auth) = self.auth.lock().get(&key).cloned() {
                rb = rb.header(
                    header::AUTHORIZATION,
                    match auth {
                        Auth::Basic(b) => b,
                        Auth::Bearer(t) => format!("Bearer {t}"),
                    },
                );
            }
            let outcome = rb.send().await;
            let delay = match outcome {
                Ok(resp)
                    if resp.status() == StatusCode::UNAUTHORIZED
                        && !reauthenticated
                        && self.static_bearer.is_none() =>
                {
                    reauthenticated = true;
                    let challenge = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    let auth = match challenge {
                        Some(c) if c.scheme == "bearer" => {
                            Auth::Bearer(self.fetch_token(reference, &c, scopes).await?)
                        }
                        Some(c) if c.scheme == "basic" => {
                            match self.credential(&reference.registry)? {
                                Some(Credential::Basic { username, password }) => {
                                    Auth::Basic(basic_header(&username, &password))
                                }
                                _ => {
                                    return Err(ClientError::Unauthorized {
                                    registry: reference.registry.clone(),
                                    message: "the registry wants a user name and password; run `hyperbuild login`".into(),
                                });
                                }
                            }
                        }
                        _ => {
                            return Err(ClientError::Unauthorized {
                                registry: reference.registry.clone(),
                                message: "401 without a usable WWW-Authenticate challenge".into(),
                            });
                        }
                    };
                    tracing::debug!(registry = %reference.registry, scopes = %key.1, "authenticated");
                    self.auth.lock().insert(key.clone(), auth);
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let err = status_error(context, resp).await;
                    return Err(ClientError::Unauthorized {
                        registry: reference.registry.clone(),
                        message: format!("credentials refused ({err})"),
                    });
                }
                Ok(resp)
                    if (resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error())
                        && attempt < self.cfg.max_retries =>
                {
                    let wait = retry_after(resp.headers());
                    tracing::warn!(status = %resp.status(), context, attempt, "registry busy or failing; retrying");
                    wait
                }
                Ok(resp) => return Ok(resp),
                Err(source) => {
                    let err = ClientError::Http {
                        context: context.to_string(),
                        source,
                    };
                    if !retry_transport || !err.is_retryable() || attempt >= self.cfg.max_retries {
                        return Err(err);
                    }
                    tracing::warn!(error = %err, attempt, "request failed; retrying");
                    None
                }
            };
            attempt += 1;
            tokio::time::sleep(delay.unwrap_or_else(|| self.backoff(attempt))).await;
        }
    }

    /// The wait before retry `attempt` (1-based): [`oci_core::retry::Backoff`] from twice
    /// the configured base delay, doubling up to 1,024 times it.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.base_delay;
        oci_core::retry::Backoff::new(base * 2, base * 1024).delay(attempt)
    }

    fn url(&self, r: &Reference, path: &str) -> String {
        format!("{}/v2/{}/{}", self.base_url(r), r.repository, path)
    }

    /// Fetch a manifest (any supported type). Returns bytes, media type and digest; a
    /// reference by digest is verified against the bytes.
    pub async fn get_manifest(&self, r: &Reference) -> Result<(Bytes, String, Digest)> {
        let url = self.url(r, &format!("manifests/{}", r.reference()));
        let context = format!("fetching manifest {r}");
        let scopes = [repo_scope(&r.repository, false)];
        let resp = self
            .send(r, &scopes, &context, &|http| {
                Ok(http.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&context, resp).await);
        }
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ClientError::Http {
                context: context.clone(),
                source,
            })?;
            if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(ClientError::Manifest(format!(
                    "{r}: manifest larger than {MAX_MANIFEST_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let algorithm = r
            .digest
            .as_ref()
            .map_or(oci_core::Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::of(algorithm, &body);
        if let Some(expected) = &r.digest
            && expected != &digest
        {
            return Err(ClientError::DigestMismatch {
                what: format!("manifest {r}"),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let media_type = media_type_of(&body, &media_type);
        Ok((Bytes::from(body), media_type, digest))
    }

    /// `HEAD` a manifest: its digest, media type and size, or `None` if absent.
    pub async fn head_manifest(&self, r: &Reference) -> Result<Option<(Digest, String, u64)>> {
        let url = self.url(r, &format!("manifests/{}", r.reference()));
        let context = format!("checking manifest {r}");
        let scopes = [repo_scope(&r.repository, false)];
        let resp = self
            .send(r, &scopes, &context, &|http| {
                Ok(http.head(&url).header(header::ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(&context, resp).await);
        }
        let h = resp.headers();
        let digest = h
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ClientError::Manifest(format!("{r}: HEAD without Docker-Content-Digest"))
            })?;
        let mt = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let size = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some((digest, mt, size)))
    }

    /// Push a manifest under the reference's tag (or digest). Returns the registry's digest.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        body: Bytes,
    ) -> Result<Digest> {
        let url = self.url(r, &format!("manifests/{}", r.reference()));
        let context = format!("pushing manifest {r}");
        let scopes = [repo_scope(&r.repository, true)];
        let mt = media_type.to_string();
        let resp = self
            .send(r, &scopes, &context, &|http| {
                Ok(http
                    .put(&url)
                    .header(header::CONTENT_TYPE, &mt)
                    .body(body.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&context, resp).await);
        }
        Ok(Digest::sha256_of(&body))
    }

    /// Size of a blob in the repository, or `None` when the registry lacks it.
    pub async fn blob_size(
        &self,
        r: &Reference,
        digest: &Digest,
        push: bool,
    ) -> Result<Option<u64>> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let context = format!("checking blob {digest}");
        let scopes = [repo_scope(&r.repository, push)];
        let resp = self
            .send(r, &scopes, &context, &|http| Ok(http.head(&url)))
            .await?;
        let resp = self
            .follow_tls_redirect(resp, Method::HEAD, None, &context)
            .await?;
        match resp.status() {
            // A HEAD response has no body, so read the header rather than the body's length.
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&context, resp).await),
        }
    }

    /// Start a `GET` of a blob from `offset`; the caller streams and verifies the body.
    /// Returns the response and whether it honoured the offset (206) or restarted (200).
    pub async fn get_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(Response, bool)> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let context = format!("downloading blob {digest}");
        let scopes = [repo_scope(&r.repository, false)];
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let resp = self
            .send(r, &scopes, &context, &|http| {
                let rb = http.get(&url);
                Ok(match &range {
                    Some(range) => rb.header(header::RANGE, range),
                    None => rb,
                })
            })
            .await?;
        let resp = self
            .follow_tls_redirect(resp, Method::GET, range.as_deref(), &context)
            .await?;
        match resp.status() {
            StatusCode::OK => Ok((resp, false)),
            StatusCode::PARTIAL_CONTENT => Ok((resp, true)),
            _ => Err(status_error(&context, resp).await),
        }
    }

    /// Try a cross-repository mount of `digest` from `from` into `r`'s repository.
    pub async fn mount_blob(&self, r: &Reference, digest: &Digest, from: &str) -> Result<bool> {
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount={digest}&from={}",
            self.base_url(r),
            r.repository,
            form_urlencoded::byte_serialize(from.as_bytes()).collect::<String>()
        );
        let context = format!("mounting blob {digest} from {from}");
        let scopes = [repo_scope(&r.repository, true), repo_scope(from, false)];
        let resp = self
            .send(r, &scopes, &context, &|http| Ok(http.post(&url)))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an upload session instead; close it.
                if let Some(loc) = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                {
                    let loc = self.absolute(r, loc);
                    let _ = self
                        .send(r, &scopes, "cancelling upload", &|http| {
                            Ok(http.delete(&loc))
                        })
                        .await;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Open an upload session; returns its absolute URL.
    pub async fn start_upload(&self, r: &Reference) -> Result<String> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base_url(r), r.repository);
        let context = format!("starting an upload to {}", r.name());
        let scopes = [repo_scope(&r.repository, true)];
        let resp = self
            .send(r, &scopes, &context, &|http| {
                Ok(http.post(&url).header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&context, resp).await);
        }
        location(self, r, &resp, &context)
    }

    /// Send one chunk (`offset` is where it starts). Returns the next upload URL.
    pub async fn upload_chunk(
        &self,
        r: &Reference,
        session: &str,
        offset: u64,
        len: u64,
        body: &BodyFactory<'_>,
    ) -> Result<String> {
        let context = format!("uploading bytes {offset}+{len} to {}", r.name());
        let scopes = [repo_scope(&r.repository, true)];
        let resp = self
            .send_with(r, &scopes, &context, false, &|http| {
                Ok(http
                    .patch(session)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(
                        header::CONTENT_RANGE,
                        format!("{offset}-{}", offset + len - 1),
                    )
                    .header(header::CONTENT_LENGTH, len.to_string())
                    .body(body()?))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&context, resp).await);
        }
        location(self, r, &resp, &context)
    }

    /// Where a session stands: the number of bytes the registry has.
    pub async fn upload_offset(&self, r: &Reference, session: &str) -> Result<u64> {
        let context = "checking upload status";
        let scopes = [repo_scope(&r.repository, true)];
        let resp = self
            .send(r, &scopes, context, &|http| Ok(http.get(session)))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(context, resp).await);
        }
        Ok(resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once('-'))
            .and_then(|(_, end)| end.parse::<u64>().ok())
            .map_or(0, |end| end + 1))
    }

    /// Finish a session with `PUT ?digest=`, optionally carrying the (whole) body.
    pub async fn finish_upload(
        &self,
        r: &Reference,
        session: &str,
        digest: &Digest,
        body: Option<(u64, &BodyFactory<'_>)>,
    ) -> Result<()> {
        let sep = if session.contains('?') { '&' } else { '?' };
        let url = format!("{session}{sep}digest={digest}");
        let context = format!("committing blob {digest}");
        let scopes = [repo_scope(&r.repository, true)];
        let resp = self
            .send_with(r, &scopes, &context, body.is_none(), &|http| {
                let rb = http
                    .put(&url)
                    .header(header::CONTENT_TYPE, "application/octet-stream");
                Ok(match &body {
                    Some((len, make)) => rb
                        .header(header::CONTENT_LENGTH, len.to_string())
                        .body(make()?),
                    None => rb.header(header::CONTENT_LENGTH, "0"),
                })
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&context, resp).await);
        }
        Ok(())
    }

    /// Fetch byte ranges (`(offset, length)`, sorted, non-overlapping) of a blob in one
    /// request: a single range as `206` with `Content-Range`, several as `206
    /// multipart/byteranges`. Returns the parts as `(offset, bytes)`. A registry that answers
    /// `200` (ignoring `Range`) gets [`ClientError::RangeIgnored`]; one that refuses several
    /// ranges (`400`/`416`) gets [`ClientError::MultiRangeRefused`], so callers can ask again
    /// one range at a time.
    pub async fn get_blob_ranges(
        &self,
        r: &Reference,
        digest: &Digest,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<(u64, Bytes)>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.url(r, &format!("blobs/{digest}"));
        let spec = ranges
            .iter()
            .map(|(o, l)| format!("{o}-{}", o + l - 1))
            .collect::<Vec<_>>()
            .join(",");
        let context = format!("reading ranges of blob {digest}");
        let scopes = [repo_scope(&r.repository, false)];
        let resp = self
            .send(r, &scopes, &context, &|http| {
                Ok(http
                    .get(&url)
                    .header(header::RANGE, format!("bytes={spec}")))
            })
            .await?;
        let range = format!("bytes={spec}");
        let resp = self
            .follow_tls_redirect(resp, Method::GET, Some(&range), &context)
            .await?;
        let status = resp.status();
        if status == StatusCode::OK {
            return Err(ClientError::RangeIgnored(digest.to_string()));
        }
        if ranges.len() > 1
            && (status == StatusCode::BAD_REQUEST || status == StatusCode::RANGE_NOT_SATISFIABLE)
        {
            return Err(ClientError::MultiRangeRefused(digest.to_string()));
        }
        if status != StatusCode::PARTIAL_CONTENT {
            return Err(status_error(&context, resp).await);
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let content_range = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let wanted: u64 = ranges.iter().map(|(_, l)| l).sum();
        let limit = wanted as usize + 4096 + ranges.len() * 512;
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ClientError::Http {
                context: context.clone(),
                source,
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ClientError::Manifest(format!(
                    "{context}: response larger than the ranges asked for"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let bad = |why: &str| ClientError::Manifest(format!("{context}: {why}"));
        if let Some(boundary) = content_type
            .strip_prefix("multipart/byteranges")
            .and_then(|rest| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_prefix("boundary="))
            })
        {
            let boundary = boundary.trim_matches('"');
            return parse_multipart(&body, boundary)
                .ok_or_else(|| bad("malformed multipart/byteranges body"));
        }
        let cr = content_range.ok_or_else(|| bad("206 without Content-Range"))?;
        let (start, _) = parse_content_range(&cr).ok_or_else(|| bad("malformed Content-Range"))?;
        Ok(vec![(start, Bytes::from(body))])
    }

    /// List tags of a repository (all pages).
    pub async fn list_tags(&self, r: &Reference) -> Result<Vec<String>> {
        let mut url = self.url(r, "tags/list");
        let scopes = [repo_scope(&r.repository, false)];
        let mut tags = Vec::new();
        loop {
            let resp = self
                .send(r, &scopes, "listing tags", &|http| Ok(http.get(&url)))
                .await?;
            if !resp.status().is_success() {
                return Err(status_error("listing tags", resp).await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_string()));
            let v: serde_json::Value = resp.json().await.map_err(|source| ClientError::Http {
                context: "listing tags".into(),
                source,
            })?;
            if let Some(arr) = v.get("tags").and_then(|t| t.as_array()) {
                tags.extend(arr.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
            match next {
                Some(n) => url = self.absolute(r, &n),
                None => return Ok(tags),
            }
        }
    }
}

/// `bytes START-END/SIZE` → (START, END).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim().strip_prefix("bytes")?.trim();
    let (range, _) = v.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Split a `multipart/byteranges` body into `(offset, bytes)` parts.
fn parse_multipart(body: &[u8], boundary: &str) -> Option<Vec<(u64, Bytes)>> {
    let delim = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0)?;
    loop {
        pos += delim.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(parts);
        }
        let headers_end = find(body, b"\r\n\r\n", pos)?;
        let headers = std::str::from_utf8(&body[pos..headers_end]).ok()?;
        let range = headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-range")
                .then(|| parse_content_range(v))?
        })?;
        let data_start = headers_end + 4;
        let len = (range.1 - range.0 + 1) as usize;
        let data = body.get(data_start..data_start + len)?;
        parts.push((range.0, Bytes::copy_from_slice(data)));
        pos = find(body, delim.as_bytes(), data_start + len)?;
    }
}

/// Makes a fresh request body for each attempt.
pub type BodyFactory<'a> = dyn Fn() -> Result<reqwest::Body> + Send + Sync + 'a;

fn location(
    client: &RegistryClient,
    r: &Reference,
    resp: &Response,
    context: &str,
) -> Result<String> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| client.absolute(r, l))
        .ok_or_else(|| ClientError::Manifest(format!("{context}: response without Location")))
}

/// The media type of a manifest: its `mediaType` field, else the `Content-Type`, else by shape.
pub fn media_type_of(body: &[u8], content_type: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return mt.to_string();
    }
    if [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .contains(&content_type)
    {
        return content_type.to_string();
    }
    if v.get("manifests").is_some() {
        OCI_INDEX.to_string()
    } else {
        OCI_MANIFEST.to_string()
    }
}

/// Build a header value, failing loudly on non-ASCII.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("ASCII header value")
}

/// The HTTP method type, re-exported for callers building requests.
pub type HttpMethod = Method;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_split_into_parts() {
        let body = b"--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/10\r\n\r\nab\r\n--B\r\nContent-Range: bytes 5-7/10\r\n\r\nfgh\r\n--B--\r\n";
        let parts = parse_multipart(body, "B").unwrap();
        assert_eq!(
            parts,
            vec![
                (0, Bytes::from_static(b"ab")),
                (5, Bytes::from_static(b"fgh"))
            ]
        );
        assert!(parse_multipart(b"--B\r\nContent-Range: bytes 0-9/10\r\n\r\nshort", "B").is_none());
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, 199)));
    }

    #[test]
    fn loopback_registries_use_http() {
        let c = RegistryClient::new(ClientConfig::default()).unwrap();
        let r: Reference = "localhost:5000/a".parse().unwrap();
        assert_eq!(c.base_url(&r), "http://localhost:5000");
        let r: Reference = "127.0.0.1:5000/a".parse().unwrap();
        assert_eq!(c.base_url(&r), "http://127.0.0.1:5000");
        let r: Reference = "ghcr.io/a".parse().unwrap();
        assert_eq!(c.base_url(&r), "https://ghcr.io");
        let r: Reference = "debian".parse().unwrap();
        assert_eq!(c.base_url(&r), "https://registry-1.docker.io");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let future =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(10));
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(&future).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(10) && d >= Duration::from_secs(8),
            "{d:?}"
        );
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let c = RegistryClient::new(ClientConfig::default()).unwrap();
        for attempt in 1..5 {
            let cap = Duration::from_millis(200) * 2u32.pow(attempt);
            let d = c.backoff(attempt);
            assert!(d <= cap && d >= cap / 2, "{attempt}: {d:?}");
        }
    }
}
