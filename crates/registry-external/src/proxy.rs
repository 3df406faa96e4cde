//! The pull-through cache: repositories under a configured prefix are served from local
//! storage, fetched from an upstream registry when missing (or when a tag is older than its
//! TTL and the upstream moved it).
//!
//! It is the registry's [`Upstream`](registry_core::Upstream): a [`Repository`] under a proxied prefix asks it to
//! fetch a missing manifest (or revalidate a tag) before a read, and to fetch a missing
//! blob. A first whole-body read of a blob streams the upstream body to the client while it
//! is stored; the blob is committed (digest verified) before the client receives the last
//! chunk, and discarded on any failure.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use oci_core::Digest;
use registry_core::{BlobRead, BlobWant, Reference, Repository};

use crate::config::ProxySpec;
use crate::error::{ExternalError, Result};
use crate::registries::{Registries, auth_from_spec};
use crate::remote::{Endpoint, RegistryType, Remote};
use crate::replicate::fetch_blob;

/// Retries per upstream request: few, so an unreachable upstream costs little latency.
const PROXY_RETRIES: u32 = 1;

/// Where a proxy's upstream comes from.
enum Source {
    /// A stored external registry (looked up per request: edits apply at once).
    Stored(String),
    /// Configured inline.
    Inline(Arc<Remote>),
}

/// One proxied prefix.
struct Entry {
    prefix: String,
    upstream: Source,
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
            let ttl = oci_core::duration::parse(&spec.ttl).map_err(|_| {
                ExternalError::Invalid(format!("proxy {prefix}: bad ttl {:?}", spec.ttl))
            })?;
            let upstream = match (&spec.registry_id, &spec.endpoint) {
                (Some(id), None) => Source::Stored(id.clone()),
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
                    Source::Inline(Arc::new(Remote::new(
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
            Source::Inline(r) => Ok(r.clone()),
            Source::Stored(id) => self.registries.remote(id, PROXY_RETRIES).await,
        }
    }

    /// Make a manifest available locally if it can be: fetch it when missing, revalidate a
    /// tag older than the TTL. Upstream failures leave the local state as it is.
    async fn ensure_manifest(
        &self,
        repo: &Repository,
        entry: &Entry,
        rest: &str,
        reference: &Reference,
    ) -> Result<()> {
        let name = repo.name();
        let tag = match reference {
            Reference::Digest(digest) => {
                if repo.manifest_record(digest).await?.is_some() {
                    return Ok(());
                }
                let remote = self.remote(entry).await?;
                let source =
                    remote.reference(&remote.source_repository(rest), &digest.to_string())?;
                let (body, mt, d) = remote.client.get_manifest(&source).await?;
                repo.store_upstream_manifest(&[], &d, &mt, body).await?;
                return Ok(());
            }
            Reference::Tag(tag) => tag.as_str(),
        };
        let local = repo.resolve_tag(tag).await?;
        let checked = repo.upstream_checked(tag).await?;
        let t = now_ms();
        if local.is_some()
            && checked.is_some_and(|c| t.saturating_sub(c) < entry.ttl.as_millis() as i64)
        {
            tracing::debug!(
                repository = name,
                tag,
                "pull-through: fresh, served locally"
            );
            return Ok(());
        }
        let remote = self.remote(entry).await?;
        let source = remote.reference(&remote.source_repository(rest), tag)?;
        let upstream = match remote.client.head_manifest(&source).await {
            Ok(Some((d, _, _))) => Some(d),
            Ok(None) => {
                tracing::info!(
                    repository = name,
                    tag,
                    "pull-through: upstream has no such tag"
                );
                return Ok(());
            }
            Err(oci_client::ClientError::Manifest(_)) => None, // HEAD without a digest
            Err(e) if local.is_some() => {
                tracing::warn!(repository = name, tag, error = %e, "pull-through: upstream unreachable; serving the cached copy");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if let (Some(l), Some(u)) = (&local, &upstream)
            && l.digest == *u
        {
            repo.set_upstream_checked(tag, t).await?;
            tracing::debug!(
                repository = name,
                tag,
                "pull-through: revalidated, unchanged"
            );
            return Ok(());
        }
        let fetch = match upstream {
            Some(d) => source.with_digest(d),
            None => source,
        };
        let (body, mt, digest) = remote.client.get_manifest(&fetch).await?;
        repo.store_upstream_manifest(&[tag.to_string()], &digest, &mt, body)
            .await?;
        repo.set_upstream_checked(tag, t).await?;
        tracing::info!(repository = name, tag, digest = %digest, "pull-through: fetched manifest from upstream");
        Ok(())
    }

    /// Fetch a blob the repository does not have.
    async fn blob(
        &self,
        repo: &Repository,
        entry: &Entry,
        rest: &str,
        digest: &Digest,
        want: BlobWant,
    ) -> Option<BlobRead> {
        let name = repo.name();
        let remote = match self.remote(entry).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "pull-through: no upstream");
                return None;
            }
        };
        let source = remote
            .reference(&remote.source_repository(rest), &digest.to_string())
            .ok()?;
        // HEAD and ranged reads: fetch the whole blob first, then answer locally.
        if want == BlobWant::Stored {
            return match fetch_blob(repo, &remote, &source, digest).await {
                Ok(size) => Some(BlobRead::Local { size }),
                Err(e) => {
                    tracing::warn!(repository = name, digest = %digest, error = %e, "pull-through: blob fetch failed");
                    None
                }
            };
        }
        match remote.client.get_blob(&source, digest, 0).await {
            Ok((resp, _)) => {
                tracing::info!(repository = name, digest = %digest, "pull-through: streaming blob from upstream");
                Some(tee(repo.clone(), digest.clone(), resp))
            }
            Err(e) => {
                tracing::warn!(repository = name, digest = %digest, error = %e, "pull-through: upstream blob unavailable");
                None
            }
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A blob's upstream body, stored in `repo` as it streams to the client.
fn tee(repo: Repository, digest: Digest, resp: reqwest::Response) -> BlobRead {
    let length = resp.content_length();
    let (mut to_store, store_rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(4);
    let (mut to_client, client_rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(4);
    let store = {
        let (repo, d) = (repo.clone(), digest.clone());
        tokio::spawn(async move { repo.ingest_blob(&d, None, Box::pin(store_rx)).await })
    };
    tokio::spawn(async move {
        let name = repo.name();
        let d = digest;
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
        let outcome = match (failure, store.await) {
            (Some(f), _) => Err(f),
            (None, Err(e)) => Err(format!("storage task: {e}")),
            (None, Ok(Err(e))) => Err(e.to_string()),
            (None, Ok(Ok(size))) => Ok(size),
        };
        match outcome {
            Ok(size) => {
                tracing::info!(repository = %name, digest = %d, size, "pull-through: blob cached");
                if let (Some(last), true) = (held, client_alive) {
                    let _ = to_client.send(Ok(last)).await;
                }
            }
            Err(why) => {
                tracing::warn!(repository = %name, digest = %d, error = %why, "pull-through: blob not cached");
                let _ = to_client.send(Err(std::io::Error::other(why))).await;
            }
        }
    });
    BlobRead::Streaming {
        size: length,
        body: Box::pin(client_rx),
    }
}

#[async_trait]
impl registry_core::Upstream for Proxy {
    fn covers(&self, repo: &str) -> bool {
        self.entry_for(repo).is_some()
    }

    async fn refresh_manifest(&self, repo: &Repository, reference: &Reference) {
        let Some((entry, rest)) = self.entry_for(repo.name()) else {
            return;
        };
        if let Err(e) = self.ensure_manifest(repo, entry, rest, reference).await {
            tracing::warn!(repository = %repo.name(), reference = %reference, error = %e, "pull-through: manifest not fetched");
        }
    }

    async fn fetch_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        want: BlobWant,
    ) -> Option<BlobRead> {
        let (entry, rest) = self.entry_for(repo.name())?;
        self.blob(repo, entry, rest, digest, want).await
    }
}
