//! Manifests, tags and referrers of a [`Repository`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use oci_core::{Algorithm, Digest, ManifestError, ParsedManifest, validate_tag};
use registry_meta::{ManifestRecord, MetaError, NewManifest, RemovedRepository};

use crate::cache::CachedManifest;
use crate::error::{CoreError, Result, lock_failed};
use crate::events::{Action, Event, Target};
use crate::{Repository, lookups};

/// What a manifest is asked for by: a tag, or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl Reference {
    /// Parse a reference: a digest when it contains `:`, else a tag.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.contains(':') {
            s.parse()
                .map(Reference::Digest)
                .map_err(|e: oci_core::DigestError| CoreError::ManifestInvalid(e.to_string()))
        } else {
            validate_tag(s).map_err(|e| CoreError::TagInvalid(e.to_string()))?;
            Ok(Reference::Tag(s.to_string()))
        }
    }

    /// The tag, if it is one.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A manifest [`Repository::put_manifest`] stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The manifest it refers to, when it is a referrer.
    pub subject: Option<Digest>,
    /// The tags it was stored under.
    pub tags: Vec<String>,
}

fn manifest_error(e: ManifestError) -> CoreError {
    match e {
        ManifestError::Unsupported(mt) => CoreError::UnsupportedMediaType(mt),
        other => CoreError::ManifestInvalid(other.to_string()),
    }
}

/// The metadata of a parsed manifest: its row, what it references.
fn new_manifest(digest: &Digest, size: u64, parsed: &ParsedManifest) -> NewManifest {
    NewManifest {
        record: ManifestRecord {
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            size,
            artifact_type: parsed.effective_artifact_type(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            annotations: parsed
                .annotations
                .as_ref()
                .map(|a| serde_json::to_string(a).expect("string maps serialize")),
        },
        blobs: parsed.required_blobs().map(|d| d.digest.clone()).collect(),
        children: parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
    }
}

impl Repository {
    fn manifest_unknown(&self, reference: &Reference) -> CoreError {
        CoreError::ManifestUnknown {
            name: self.name.clone(),
            reference: reference.to_string(),
        }
    }

    /// A manifest by tag or digest, from the in-process cache when warm. A pull-through
    /// repository asks its upstream first ([`crate::Upstream::refresh_manifest`]).
    pub async fn get_manifest(&self, reference: &Reference) -> Result<Arc<CachedManifest>> {
        if let Some(up) = &self.upstream {
            up.refresh_manifest(self, reference).await;
        }
        let key = reference.to_string();
        let cache = &self.inner().cache;
        if let Some(hit) = cache.get(&self.name, &key) {
            return Ok(hit);
        }
        let epoch = cache.epoch();
        let found = match reference {
            Reference::Tag(tag) => lookups::resolve_tag(&self.reg, &self.name, tag).await?,
            Reference::Digest(d) => self
                .inner()
                .meta
                .get_manifest(&self.name, d)
                .await?
                .map(|r| (r.digest, r.media_type)),
        };
        let (digest, media_type) = found.ok_or_else(|| self.manifest_unknown(reference))?;
        // The bytes of a digest never change: take them from the cache when it has them.
        let body = match cache.get(&self.name, &digest.to_string()) {
            Some(hit) => hit.body.clone(),
            None => self.inner().blobs.get_bytes(&digest).await?,
        };
        let entry = Arc::new(CachedManifest {
            digest,
            media_type,
            body,
        });
        cache.insert_if_current(epoch, &self.name, &key, entry.clone());
        Ok(entry)
    }

    /// The metadata of the manifest `digest`, if the repository has it.
    pub async fn manifest_record(&self, digest: &Digest) -> Result<Option<ManifestRecord>> {
        Ok(self.inner().meta.get_manifest(&self.name, digest).await?)
    }

    /// What `tag` points to, straight from the database.
    pub async fn resolve_tag(&self, tag: &str) -> Result<Option<ManifestRecord>> {
        Ok(self.inner().meta.resolve_tag(&self.name, tag).await?)
    }

    /// Store a manifest pushed by a client (or copied by replication) under `reference` and
    /// the extra `tags`: parsed and checked against `content_type`, its digest checked
    /// against a digest reference, every blob and child present with the declared size.
    pub async fn put_manifest(
        &self,
        reference: &Reference,
        tags: &[String],
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<StoredManifest> {
        self.writable()?;
        let mut all_tags: Vec<String> = reference.tag().map(str::to_string).into_iter().collect();
        for t in tags {
            validate_tag(t).map_err(|e| CoreError::TagInvalid(e.to_string()))?;
            if !all_tags.contains(t) {
                all_tags.push(t.clone());
            }
        }
        let parsed = ParsedManifest::parse(&body, content_type).map_err(manifest_error)?;
        let pinned = match reference {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => None,
        };
        let algorithm = pinned.map_or(Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::of(algorithm, &body);
        if let Some(p) = pinned
            && p != &digest
        {
            return Err(CoreError::ManifestDigestMismatch {
                expected: p.clone(),
                computed: digest,
            });
        }
        let meta = &self.inner().meta;
        for d in parsed.required_blobs() {
            match meta.repo_blob(&self.name, &d.digest).await? {
                None => return Err(CoreError::ManifestBlobUnknown(d.digest.clone())),
                Some(size) if size != d.size => {
                    return Err(CoreError::ReferenceSizeMismatch {
                        digest: d.digest.clone(),
                        declared: d.size,
                        actual: size,
                    });
                }
                Some(_) => {}
            }
        }
        for child in &parsed.manifests {
            match meta.get_manifest(&self.name, &child.digest).await? {
                None => return Err(CoreError::ManifestBlobUnknown(child.digest.clone())),
                Some(rec) if rec.size != child.size => {
                    return Err(CoreError::ReferenceSizeMismatch {
                        digest: child.digest.clone(),
                        declared: child.size,
                        actual: rec.size,
                    });
                }
                Some(_) => {}
            }
        }
        let new = new_manifest(&digest, body.len() as u64, &parsed);
        self.commit_manifest(&new, body, &all_tags, false).await?;
        tracing::info!(repository = %self.name, digest = %digest, tags = ?all_tags, "manifest stored");
        let stored = StoredManifest {
            digest,
            media_type: parsed.media_type,
            size: new.record.size,
            subject: new.record.subject,
            tags: all_tags,
        };
        self.emit_push(&stored);
        Ok(stored)
    }

    /// Store a manifest fetched from a pull-through repository's upstream under `tags`.
    /// Unlike a push, its blobs need not be here yet: they are fetched when first asked for.
    pub async fn store_upstream_manifest(
        &self,
        tags: &[String],
        digest: &Digest,
        media_type: &str,
        body: Bytes,
    ) -> Result<()> {
        let parsed = ParsedManifest::parse(&body, Some(media_type))
            .map_err(|e| CoreError::ManifestInvalid(format!("upstream manifest: {e}")))?;
        let new = new_manifest(digest, body.len() as u64, &parsed);
        self.commit_manifest(&new, body, tags, true).await
    }

    /// Content, then metadata, under the digest's lock (so that GC cannot delete the content
    /// between the write and the metadata that references it) and the tags' locks; then the
    /// caches are told.
    async fn commit_manifest(
        &self,
        new: &NewManifest,
        body: Bytes,
        tags: &[String],
        from_upstream: bool,
    ) -> Result<()> {
        let digest = &new.record.digest;
        let inner = self.inner();
        let lock = self.reg.blob_lock(digest).await?;
        inner.blobs.put_bytes(digest, body).await?;
        let tag_locks = registry_coord::locks::tags(&*inner.coord, &self.name, tags)
            .await
            .map_err(|e| lock_failed(e, "a tag of this manifest"))?;
        let stored = if from_upstream {
            inner.meta.put_cached_manifest(&self.name, new, tags).await
        } else {
            inner.meta.put_manifest(&self.name, new, tags).await
        };
        match stored {
            Ok(()) => {}
            // A reference disappeared since the checks (garbage collection swept it).
            Err(MetaError::MissingReference(d)) => return Err(CoreError::ManifestBlobUnknown(d)),
            Err(e) => return Err(e.into()),
        }
        drop(lock);
        let digest_str = digest.to_string();
        inner.cache.invalidate(
            &self.name,
            tags.iter().map(String::as_str).chain([digest_str.as_str()]),
        );
        self.changed().await;
        drop(tag_locks);
        Ok(())
    }

    /// One push event per tag the manifest was stored under (one without a tag when pushed
    /// by digest only).
    fn emit_push(&self, m: &StoredManifest) {
        let target = |tag: Option<&String>| Target {
            repository: self.name.clone(),
            media_type: Some(m.media_type.clone()),
            digest: Some(m.digest.clone()),
            size: Some(m.size),
            tag: tag.cloned(),
        };
        let events = &self.inner().events;
        if m.tags.is_empty() {
            events.emit(Event::new(Action::Push, target(None)));
        }
        for tag in &m.tags {
            events.emit(Event::new(Action::Push, target(Some(tag))));
        }
    }

    /// Delete the manifest `digest` with every tag pointing to it; returns those tags.
    pub async fn delete_manifest(&self, digest: &Digest) -> Result<Vec<String>> {
        let reference = Reference::Digest(digest.clone());
        let inner = self.inner();
        let tags = inner
            .meta
            .delete_manifest(&self.name, digest)
            .await?
            .ok_or_else(|| self.manifest_unknown(&reference))?;
        let digest_str = digest.to_string();
        inner.cache.invalidate(
            &self.name,
            tags.iter().map(String::as_str).chain([digest_str.as_str()]),
        );
        self.changed().await;
        tracing::info!(repository = %self.name, digest = %digest, tags = ?tags, "manifest deleted");
        inner.events.emit(Event::new(
            Action::Delete,
            Target {
                repository: self.name.clone(),
                digest: Some(digest.clone()),
                ..Target::default()
            },
        ));
        Ok(tags)
    }

    /// Remove `tag` (the manifest stays, reachable by digest); returns what it pointed to.
    pub async fn untag(&self, tag: &str) -> Result<ManifestRecord> {
        let reference = Reference::Tag(tag.to_string());
        let inner = self.inner();
        let _tag_lock = registry_coord::locks::tag(&*inner.coord, &self.name, tag)
            .await
            .map_err(|e| lock_failed(e, "this tag"))?;
        let record = inner
            .meta
            .resolve_tag(&self.name, tag)
            .await?
            .ok_or_else(|| self.manifest_unknown(&reference))?;
        if !inner.meta.delete_tag(&self.name, tag).await? {
            return Err(self.manifest_unknown(&reference));
        }
        inner.cache.invalidate(&self.name, [tag]);
        self.changed().await;
        tracing::info!(repository = %self.name, tag = %tag, "tag deleted");
        inner.events.emit(Event::new(
            Action::Delete,
            Target {
                repository: self.name.clone(),
                media_type: Some(record.media_type.clone()),
                digest: Some(record.digest.clone()),
                size: Some(record.size),
                tag: Some(tag.to_string()),
            },
        ));
        Ok(record)
    }

    /// Tags in order, after `last`, at most `limit`; `NameUnknown` for an empty repository.
    pub async fn tags(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let meta = &self.inner().meta;
        if !meta.repository_exists(&self.name).await? {
            return Err(CoreError::NameUnknown(self.name.clone()));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(meta.list_tags(&self.name, last, limit).await?)
    }

    /// The manifests whose subject is `subject`, only those of `artifact_type` when given.
    pub async fn referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>> {
        let records = self.inner().meta.referrers(&self.name, subject).await?;
        Ok(records
            .into_iter()
            .filter(|r| artifact_type.is_none() || r.artifact_type.as_deref() == artifact_type)
            .collect())
    }

    /// When GC last checked `tag` against the upstream (ms since the epoch).
    pub async fn upstream_checked(&self, tag: &str) -> Result<Option<i64>> {
        Ok(self.inner().meta.proxy_tag_checked(&self.name, tag).await?)
    }

    /// Record that `tag` was checked against the upstream at `at` (ms since the epoch).
    pub async fn set_upstream_checked(&self, tag: &str, at: i64) -> Result<()> {
        Ok(self
            .inner()
            .meta
            .set_proxy_tag_checked(&self.name, tag, at)
            .await?)
    }

    /// Delete the whole repository: tags, manifests, blob links (content stays until GC).
    pub async fn delete(&self) -> Result<RemovedRepository> {
        let inner = self.inner();
        let removed = inner
            .meta
            .delete_repository(&self.name)
            .await?
            .ok_or_else(|| CoreError::NameUnknown(self.name.clone()))?;
        let digests: Vec<String> = removed
            .manifests
            .iter()
            .map(|m| m.digest.to_string())
            .collect();
        inner.cache.invalidate(
            &self.name,
            removed
                .tags
                .iter()
                .map(String::as_str)
                .chain(digests.iter().map(String::as_str)),
        );
        self.changed().await;
        tracing::info!(repository = %self.name, tags = removed.tags.len(), manifests = digests.len(), "repository deleted");
        inner.events.emit(Event::new(
            Action::Delete,
            Target {
                repository: self.name.clone(),
                ..Target::default()
            },
        ));
        Ok(removed)
    }
}
