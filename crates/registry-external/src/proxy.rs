//! The pull-through cache: repositories under a configured prefix are served from local
//! storage, fetched from an upstream registry when missing (or when a tag is older than its
//! TTL and the upstream moved it).
//!
//! It runs as the /v2 API's [`Interceptor`]: it prepares local state (fetches a manifest,
//! links or downloads a blob) and lets the API answer, except for a first `GET` of a blob,
//! which it answers itself by streaming the upstream body to the client while writing it to
//! an upload session; the blob is committed (digest verified) before the client receives
//! the last chunk, and discarded on any failure.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use oci_core::{Digest, ParsedManifest};
use registry_api::AppState;
use registry_api::error::{ApiError, ErrorCode};
use registry_api::hooks::Interceptor;
use registry_api::route::Route;
use registry_meta::{ManifestRecord, NewManifest};

use crate::config::{ProxySpec, parse_duration};
use crate::error::{ExternalError, Result};
use crate::registries::{Registries, auth_from_spec};
use crate::remote::{Endpoint, RegistryType, Remote};
use crate::replicate::fetch_blob;

/// Retries per upstream request: few, so an unreachable upstream costs little latency.
const PROXY_RETRIES: u32 = 1;

/// Where a proxy's upstream comes from.
enum Upstream {
    /// A stored external registry (looked up per request: edits apply at once).
    Stored(String),
    /// Configured inline.
    Inline(Arc<Remote>),
}

/// One proxied prefix.
struct Entry {
    prefix: String,
    upstream: Upstream,
    ttl: Duration,
}

/// The pull-through cache for every configured prefix.
pub struct Proxy {
    entries: Vec<Entry>,
    registries: Arc<Registries>,
}

impl Proxy {
    /// Build from configuration; fails on a malformed entry.
    pub fn new(specs: &[ProxySpec], registries: Arc<Registries>) -> Result<Proxy> {
        let mut entries = Vec::new();
        for spec in specs {
            let prefix = spec.prefix.trim_matches('/').to_string();
            oci_core::validate_repository(&prefix)
                .map_err(|e| ExternalError::Invalid(format!("proxy prefix {prefix:?}: {e}")))?;
            let ttl = parse_duration(&spec.ttl).ok_or_else(|| {
                ExternalError::Invalid(format!("proxy {prefix}: bad ttl {:?}", spec.ttl))
            })?;
            let upstream = match (&spec.registry_id, &spec.endpoint) {
                (Some(id), None) => Upstream::Stored(id.clone()),
                (None, endpoint) => {
                    let kind = RegistryType::parse(spec.kind.as_deref().unwrap_or("generic"))?;
                    let endpoint =
                        endpoint
                            .as_deref()
                            .or(kind.default_endpoint())
                            .ok_or_else(|| {
                                ExternalError::Invalid(format!("proxy {prefix}: no endpoint"))
                            })?;
                    let auth = auth_from_spec(kind, spec.auth.as_ref())?;
                    Upstream::Inline(Arc::new(Remote::new(
                        kind,
                        Endpoint::parse(endpoint)?,
                        auth,
                        spec.insecure,
                        PROXY_RETRIES,
                    )?))
                }
                (Some(_), Some(_)) => {
                    return Err(ExternalError::Invalid(format!(
                        "proxy {prefix}: give registry_id or endpoint, not both"
                    )));
                }
            };
            tracing::info!(prefix = %prefix, ttl = ?ttl, "pull-through cache configured");
            entries.push(Entry {
                prefix,
                upstream,
                ttl,
            });
        }
        Ok(Proxy {
            entries,
            registries,
        })
    }

    /// Whether any prefix is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry serving `repo` (longest prefix) and the path below the prefix.
    fn entry_for<'a>(&self, repo: &'a str) -> Option<(&Entry, &'a str)> {
        self.entries
            .iter()
            .filter_map(|e| {
                repo.strip_prefix(e.prefix.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .filter(|r| !r.is_empty())
                    .map(|r| (e, r))
            })
            .max_by_key(|(e, _)| e.prefix.len())
    }

    async fn remote(&self, entry: &Entry) -> Result<Arc<Remote>> {
        match &entry.upstream {
            Upstream::Inline(r) => Ok(r.clone()),
            Upstream::Stored(id) => self.registries.remote(id, PROXY_RETRIES).await,
        }
    }

    /// Make a manifest available locally if it can be: fetch it when missing, revalidate a
    /// tag older than the TTL. Upstream failures leave the local state as it is.
    async fn ensure_manifest(
        &self,
        st: &AppState,
        entry: &Entry,
        name: &str,
        rest: &str,
        reference: &str,
    ) -> Result<()> {
        if reference.contains(':') {
            let Ok(digest) = reference.parse::<Digest>() else {
                return Ok(());
            };
            if st.meta.get_manifest(name, &digest).await?.is_some() {
                return Ok(());
            }
            let remote = self.remote(entry).await?;
            let source = remote.reference(&remote.source_repository(rest), reference)?;
            let (body, mt, d) = remote.client.get_manifest(&source).await?;
            store_manifest(st, name, &[], d, &mt, body).await?;
            return Ok(());
        }
        if oci_core::validate_tag(reference).is_err() {
            return Ok(());
        }
        let local = st.meta.resolve_tag(name, reference).await?;
        let checked = st.meta.proxy_tag_checked(name, reference).await?;
        let t = now_ms();
        if local.is_some()
            && checked.is_some_and(|c| t.saturating_sub(c) < entry.ttl.as_millis() as i64)
        {
            tracing::debug!(
                repository = name,
                tag = reference,
                "pull-through: fresh, served locally"
            );
            return Ok(());
        }
        let remote = self.remote(entry).await?;
        let source = remote.reference(&remote.source_repository(rest), reference)?;
        let upstream = match remote.client.head_manifest(&source).await {
            Ok(Some((d, _, _))) => Some(d),
            Ok(None) => {
                tracing::info!(
                    repository = name,
                    tag = reference,
                    "pull-through: upstream has no such tag"
                );
                return Ok(());
            }
            Err(oci_client::ClientError::Manifest(_)) => None, // HEAD without a digest
            Err(e) if local.is_some() => {
                tracing::warn!(repository = name, tag = reference, error = %e, "pull-through: upstream unreachable; serving the cached copy");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if let (Some(l), Some(u)) = (&local, &upstream)
            && l.digest == *u
        {
            st.meta.set_proxy_tag_checked(name, reference, t).await?;
            tracing::debug!(
                repository = name,
                tag = reference,
                "pull-through: revalidated, unchanged"
            );
            return Ok(());
        }
        let fetch = match upstream {
            Some(d) => source.with_digest(d),
            None => source,
        };
        let (body, mt, digest) = remote.client.get_manifest(&fetch).await?;
        store_manifest(
            st,
            name,
            &[reference.to_string()],
            digest.clone(),
            &mt,
            body,
        )
        .await?;
        st.meta.set_proxy_tag_checked(name, reference, t).await?;
        tracing::info!(repository = name, tag = reference, digest = %digest, "pull-through: fetched manifest from upstream");
        Ok(())
    }

    /// Prepare or answer a blob request.
    async fn blob(
        &self,
        st: &AppState,
        entry: &Entry,
        name: &str,
        rest: &str,
        digest: &str,
        req: Request,
    ) -> std::result::Result<Request, Response> {
        let Ok(digest) = digest.parse::<Digest>() else {
            return Ok(req);
        };
        let local = async {
            if st.meta.repo_blob(name, &digest).await?.is_some() {
                return Ok::<bool, ExternalError>(true);
            }
            if let Some(size) = st.meta.any_blob(&digest).await?
                && st.blobs.stat(&digest).await?.is_some()
            {
                let _lock = st.blob_lock(&digest).await?;
                st.meta.link_blob(name, &digest, size).await?;
                return Ok(true);
            }
            Ok(false)
        };
        match local.await {
            Ok(true) => return Ok(req),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "pull-through: local lookup failed");
                return Ok(req);
            }
        }
        let remote = match self.remote(entry).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "pull-through: no upstream");
                return Ok(req);
            }
        };
        let source = match remote.reference(&remote.source_repository(rest), &digest.to_string()) {
            Ok(s) => s,
            Err(_) => return Ok(req),
        };
        // HEAD and ranged reads: fetch the whole blob first, then the API answers locally.
        if req.method() == Method::HEAD || req.headers().contains_key(header::RANGE) {
            if let Err(e) = fetch_blob(st, &remote, &source, &digest, name).await {
                tracing::warn!(repository = name, digest = %digest, error = %e, "pull-through: blob fetch failed");
            }
            return Ok(req);
        }
        match remote.client.get_blob(&source, &digest, 0).await {
            Ok((resp, _)) => {
                tracing::info!(repository = name, digest = %digest, "pull-through: streaming blob from upstream");
                Err(tee(st, name, digest, resp).await)
            }
            Err(e) => {
                tracing::warn!(repository = name, digest = %digest, error = %e, "pull-through: upstream blob unavailable");
                Ok(req)
            }
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Store a manifest fetched from upstream. Unlike a push, its blobs need not be here yet:
/// they are fetched when first asked for.
async fn store_manifest(
    st: &AppState,
    name: &str,
    tags: &[String],
    digest: Digest,
    media_type: &str,
    body: Bytes,
) -> Result<()> {
    let parsed = ParsedManifest::parse(&body, Some(media_type))
        .map_err(|e| ExternalError::Invalid(format!("upstream manifest: {e}")))?;
    // Stored under the blob lock, as a client push is (see `AppState::blob_lock`).
    let _lock = st.blob_lock(&digest).await?;
    st.blobs.put_bytes(&digest, body.clone()).await?;
    let record = ManifestRecord {
        digest: digest.clone(),
        media_type: parsed.media_type.clone(),
        size: body.len() as u64,
        artifact_type: parsed.effective_artifact_type(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        annotations: parsed
            .annotations
            .as_ref()
            .map(|a| serde_json::to_string(a).unwrap_or_default()),
    };
    let new = NewManifest {
        record,
        blobs: parsed.required_blobs().map(|d| d.digest.clone()).collect(),
        children: parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
    };
    st.meta.put_cached_manifest(name, &new, tags).await?;
    let digest_str = digest.to_string();
    st.cache.invalidate(
        name,
        tags.iter().map(String::as_str).chain([digest_str.as_str()]),
    );
    registry_api::shared::repository_changed(st, name).await;
    Ok(())
}

/// Answer a blob `GET` from the upstream response while writing it to local storage.
async fn tee(st: &AppState, name: &str, digest: Digest, resp: reqwest::Response) -> Response {
    let length = resp.content_length();
    let id = format!("proxy-{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = st.blobs.create_upload(&id).await {
        return ApiError::from(e).into_response();
    }
    let (mut to_store, store_rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(4);
    let (mut to_client, client_rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(4);
    let blobs = st.blobs.clone();
    let meta = st.meta.clone();
    let locks = st.clone();
    let name = name.to_string();
    let store = {
        let (blobs, id) = (blobs.clone(), id.clone());
        tokio::spawn(async move { blobs.append_upload(&id, None, Box::pin(store_rx)).await })
    };
    let d = digest.clone();
    tokio::spawn(async move {
        let mut upstream = resp.bytes_stream();
        // One chunk is held back until the digest is verified, so a client never receives a
        // complete body that does not match.
        let mut held: Option<Bytes> = None;
        let mut client_alive = true;
        let mut failure: Option<String> = None;
        while let Some(chunk) = upstream.next().await {
            match chunk {
                Ok(c) => {
                    if to_store.send(Ok(c.clone())).await.is_err() {
                        failure = Some("local storage stopped reading".into());
                        break;
                    }
                    if let Some(prev) = held.replace(c)
                        && client_alive
                        && to_client.send(Ok(prev)).await.is_err()
                    {
                        // The client left; finish the download for the next one.
                        client_alive = false;
                    }
                }
                Err(e) => {
                    failure = Some(format!("upstream body: {e}"));
                    break;
                }
            }
        }
        if let Some(f) = &failure {
            let _ = to_store.send(Err(std::io::Error::other(f.clone()))).await;
        }
        drop(to_store);
        let appended = store.await;
        // Commit and link under the blob lock, as a client push does.
        let mut lock = None;
        let outcome = match (failure, appended) {
            (Some(f), _) => Err(f),
            (None, Err(e)) => Err(format!("storage task: {e}")),
            (None, Ok(Err(e))) => Err(e.to_string()),
            (None, Ok(Ok(_))) => match locks.blob_lock(&d).await {
                Ok(guard) => {
                    lock = Some(guard);
                    blobs
                        .commit_upload(&id, &d)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.message),
            },
        };
        match outcome {
            Ok(size) => {
                if let Err(e) = meta.link_blob(&name, &d, size).await {
                    tracing::warn!(error = %e, "pull-through: linking the cached blob failed");
                }
                drop(lock);
                tracing::info!(repository = %name, digest = %d, size, "pull-through: blob cached");
                if let (Some(last), true) = (held, client_alive) {
                    let _ = to_client.send(Ok(last)).await;
                }
            }
            Err(why) => {
                let _ = blobs.cancel_upload(&id).await;
                tracing::warn!(repository = %name, digest = %d, error = %why, "pull-through: blob not cached");
                let _ = to_client.send(Err(std::io::Error::other(why))).await;
            }
        }
    });
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(registry_api::blobs::CONTENT_DIGEST, digest.to_string())
        .header(header::ETAG, format!("\"{digest}\""));
    if let Some(len) = length {
        builder = builder.header(header::CONTENT_LENGTH, len);
    }
    builder
        .body(Body::from_stream(client_rx))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn denied(name: &str) -> Response {
    ApiError::new(
        ErrorCode::Denied,
        format!("{name} is a pull-through cache of an upstream registry: pushes are refused"),
    )
    .into_response()
}

impl Interceptor for Proxy {
    fn before<'a>(
        &'a self,
        st: &'a AppState,
        route: &'a Route,
        req: Request,
    ) -> BoxFuture<'a, std::result::Result<Request, Response>> {
        Box::pin(async move {
            let name = match route {
                Route::Manifest { name, .. }
                | Route::Blob { name, .. }
                | Route::UploadStart { name }
                | Route::Upload { name, .. } => name,
                _ => return Ok(req),
            };
            let Some((entry, rest)) = self.entry_for(name) else {
                return Ok(req);
            };
            let method = req.method().clone();
            match route {
                Route::UploadStart { .. } | Route::Upload { .. } => Err(denied(name)),
                Route::Manifest { .. } if method == Method::PUT => Err(denied(name)),
                Route::Manifest { reference, .. }
                    if method == Method::GET || method == Method::HEAD =>
                {
                    if let Err(e) = self.ensure_manifest(st, entry, name, rest, reference).await {
                        tracing::warn!(repository = %name, reference = %reference, error = %e, "pull-through: manifest not fetched");
                    }
                    Ok(req)
                }
                Route::Blob { digest, .. } if method == Method::GET || method == Method::HEAD => {
                    self.blob(st, entry, name, rest, digest, req).await
                }
                _ => Ok(req),
            }
        })
    }
}
