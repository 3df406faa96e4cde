//! S3-compatible object storage backend (AWS S3, MinIO, Garage, s3s, …) on `object_store`.
//!
//! Keys under the configured prefix:
//! - `blobs/<algorithm>/<first two hex>/<hex>`: committed blobs, immutable. Either the
//!   content itself (blobs shorter than one part, manifests) or a *link*: an empty object
//!   whose user metadata (`x-amz-meta-hyper-location`, `x-amz-meta-hyper-size`) names the
//!   `data/` object holding the verified bytes.
//! - `data/<session id>`: the object an upload's bytes are stored in (one streaming PUT, or
//!   the completion of its multipart upload). Once verified it stays where it is and a link
//!   points to it; it is never written again.
//! - `uploads/<session id>/tail-<n>`: bytes of a session not yet making up a whole part.
//!
//! An upload session streams through an S3 multipart upload on its data key: the body is
//! cut into parts of at least [`MIN_PART`] (one part filling while the previous one is sent,
//! so a request holds at most two parts in memory). What is left at the end of a request
//! (shorter than a part) is kept as a small tail object and prepended to the next request's
//! bytes. The session's state (multipart upload id, parts with their ETags and sizes, tail)
//! lives in an [`UploadStateStore`], so any replica sharing it and the bucket continues the
//! session from persisted state only.
//!
//! Commit: the digest comes from the running hash when this process saw every byte in order,
//! else the completed data object is read back and hashed (streaming). Only then is the link
//! written under `blobs/` (a conditional create: when two sessions commit the same digest,
//! one link wins and the other session's data is removed), so nothing appears there
//! unverified, and a commit costs one small PUT whatever the blob's size (no server-side
//! copy, which S3 performs at a fraction of its upload speed).
//!
//! Data objects left without a link (a crash between deleting a link and its data; two
//! commits of one digest on a server whose `If-None-Match` is not atomic) are removed by
//! [`BlobStore::sweep_unreferenced`], which garbage collection calls.
//!
//! Readers resolve a digest to the object holding its bytes (one HEAD) and remember the
//! answer for a while ([`LOCATION_TTL`]); a read that finds a remembered object gone
//! resolves again, so a blob deleted and pushed again elsewhere is still found.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload,
};
use oci_core::{Algorithm, Digest, Hasher};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::state::UploadStateStore;
use crate::{BlobStore, ByteStream, Result, StorageError};

/// S3's smallest part (every part but the last must be at least this long).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest object for a single CopyObject.
pub const MAX_COPY_OBJECT: u64 = 5 << 30;
/// How long presigned blob URLs stay valid (Distribution uses the same).
const PRESIGN_TTL: Duration = Duration::from_secs(20 * 60);
/// UploadPartCopy requests in flight while a staged object becomes parts.
const COPY_CONCURRENCY: usize = 8;
/// User metadata key of a link object: the data object's key (relative to the prefix).
const LINK_LOCATION: &str = "hyper-location";
/// User metadata key of a link object: the blob's size in bytes.
const LINK_SIZE: &str = "hyper-size";
/// How long a resolved blob location is reused before it is looked up again.
pub const LOCATION_TTL: Duration = Duration::from_secs(60);
/// Reads of a link just written, while the key holds a half-written one.
const LINK_READ_BACK_ATTEMPTS: u32 = 50;
/// Most resolved locations remembered (the memory is cleared when it is full).
const LOCATION_CACHE_ENTRIES: usize = 100_000;

/// Settings of an S3 blob store.
#[derive(Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL (`http://127.0.0.1:9000`); AWS's regional endpoint when `None`.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Access key id; credentials come from the environment (`AWS_*`, instance role) when `None`.
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Allow plain-HTTP endpoints.
    pub allow_http: bool,
    /// Key prefix every object goes under (`registry` → `registry/blobs/...`); may be empty.
    pub prefix: String,
    /// Answer blob reads with redirects to presigned URLs.
    pub redirect: bool,
    /// Target size of upload parts (at least [`MIN_PART`]); grows after every 1000 parts so
    /// that S3's 10,000-part limit allows blobs of hundreds of GiB.
    pub part_size: u64,
    /// Parts of one upload request sent at once (at least 1); memory per request is about
    /// `(parts_in_flight + 1) * part_size`.
    pub parts_in_flight: usize,
    /// Store a first body of known length (5 MiB to 5 GiB) with one streaming PUT instead
    /// of parallel parts: faster on servers where completing a multipart upload rewrites
    /// the object (s3s-fs), slower where it does not (S3, garage).
    pub single_put: bool,
    /// Range size of each UploadPartCopy when a staged object becomes parts.
    pub copy_part_size: u64,
    /// Largest blob accepted, in bytes.
    pub max_upload: Option<u64>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("prefix", &self.prefix)
            .field("redirect", &self.redirect)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .field("single_put", &self.single_put)
            .field("copy_part_size", &self.copy_part_size)
            .field("max_upload", &self.max_upload)
            .finish()
    }
}

impl S3Config {
    /// Defaults for a bucket: AWS endpoint, `us-east-1`, virtual-hosted, 16 MiB parts.
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key: None,
            secret_key: None,
            path_style: false,
            allow_http: false,
            prefix: String::new(),
            redirect: false,
            part_size: 16 << 20,
            parts_in_flight: 4,
            single_put: true,
            copy_part_size: 512 << 20,
            max_upload: None,
        }
    }
}

/// One finished part of a session's multipart upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartRecord {
    etag: String,
    size: u64,
}

/// A session's bytes after its last whole part, kept as `uploads/<id>/tail-<generation>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TailRecord {
    generation: u64,
    size: u64,
}

/// What replicas share about a session (JSON in the [`UploadStateStore`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SessionState {
    /// The staging multipart upload, created with the first whole part.
    multipart: Option<String>,
    /// Parts uploaded so far, in order.
    parts: Vec<PartRecord>,
    /// Bytes after the last part.
    tail: Option<TailRecord>,
    /// Generation of the next tail object (tails are never overwritten in place).
    next_tail: u64,
    /// The multipart upload was completed into the staging object (a commit was interrupted
    /// after that point).
    completed: bool,
    /// Bytes held by a plain staging object (a first request of known length, stored with
    /// one streaming PUT); turned into the first parts if more bytes follow.
    #[serde(default)]
    staged: u64,
    /// The session's bytes go to `data/<id>` (sessions begun by earlier versions, without
    /// this field, used `uploads/<id>/data`).
    #[serde(default)]
    data_key: bool,
    /// The digest whose link may point to this session's data object: recorded before the
    /// link is written, so that a session ended after a crash past that point (cancelled,
    /// purged, or committed again) never deletes data a link points to.
    #[serde(default)]
    linking: Option<String>,
}

impl SessionState {
    fn size(&self) -> u64 {
        self.staged
            + self.parts.iter().map(|p| p.size).sum::<u64>()
            + self.tail.as_ref().map_or(0, |t| t.size)
    }
}

/// Where a committed blob's bytes are.
#[derive(Debug, Clone)]
struct Located {
    /// The object holding the bytes: the blob key itself, or a linked data object.
    path: Path,
    /// Blob size in bytes.
    size: u64,
    /// The blob key is a link to `path`.
    linked: bool,
}

/// A resolved location and when it was looked up.
struct Remembered {
    located: Located,
    at: std::time::Instant,
}

/// What this process knows beyond the shared state: the running hash, valid while `hashed`
/// equals the session's size.
struct Local {
    hasher: Option<Hasher>,
    hashed: u64,
}

/// A blob store on an S3-compatible bucket.
pub struct S3BlobStore {
    s3: Arc<AmazonS3>,
    cfg: S3Config,
    prefix: String,
    states: Arc<dyn UploadStateStore>,
    locals: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Local>>>>,
    locations: parking_lot::Mutex<HashMap<String, Remembered>>,
    http: reqwest::Client,
}

fn io_err(e: object_store::Error) -> StorageError {
    StorageError::Io(e.into())
}

fn other(msg: String) -> StorageError {
    StorageError::Io(std::io::Error::other(msg))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Insert the bucket as a subdomain of an endpoint URL (virtual-hosted-style requests).
fn virtual_hosted(endpoint: &str, bucket: &str) -> Result<String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| other(format!("S3 endpoint {endpoint:?} has no scheme")))?;
    Ok(format!(
        "{scheme}://{bucket}.{}",
        rest.trim_end_matches('/')
    ))
}

impl S3BlobStore {
    /// Connect to a bucket (no request is made until the first operation).
    pub fn new(cfg: S3Config, states: Arc<dyn UploadStateStore>) -> Result<S3BlobStore> {
        if cfg.part_size < MIN_PART {
            return Err(other(format!(
                "S3 part size {} is below the minimum of {MIN_PART}",
                cfg.part_size
            )));
        }
        if cfg.copy_part_size < MIN_PART || cfg.copy_part_size > MAX_COPY_OBJECT {
            return Err(other(format!(
                "S3 copy part size {} must be between {MIN_PART} and {MAX_COPY_OBJECT}",
                cfg.copy_part_size
            )));
        }
        let prefix = cfg.prefix.trim_matches('/').to_string();
        let prefix_ok = prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            && !prefix
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..");
        if !prefix.is_empty() && !prefix_ok {
            return Err(other(format!(
                "S3 key prefix {prefix:?} must be path segments of [A-Za-z0-9._-]"
            )));
        }
        // Bodies of large reads stream for as long as the client takes: no overall request
        // timeout, but a stalled read fails.
        let options = ClientOptions::new()
            .with_allow_http(cfg.allow_http)
            .with_timeout_disabled()
            .with_connect_timeout(Duration::from_secs(10))
            .with_read_timeout(Duration::from_secs(300));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_allow_http(cfg.allow_http)
            // Payloads are verified by digest at commit; signing them would hash every byte
            // twice more (client and server) for nothing.
            .with_unsigned_payload(true)
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_client_options(options);
        if let Some(endpoint) = &cfg.endpoint {
            let endpoint = if cfg.path_style {
                endpoint.trim_end_matches('/').to_string()
            } else {
                virtual_hosted(endpoint, &cfg.bucket)?
            };
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &cfg.access_key {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &cfg.secret_key {
            builder = builder.with_secret_access_key(secret);
        }
        let s3 = builder.build().map_err(io_err)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| other(format!("creating the S3 copy client: {e}")))?;
        Ok(S3BlobStore {
            s3: Arc::new(s3),
            cfg,
            prefix,
            states,
            locals: parking_lot::Mutex::new(HashMap::new()),
            locations: parking_lot::Mutex::new(HashMap::new()),
            http,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    fn key(&self, rel: &str) -> Path {
        prefixed(&self.prefix, rel)
    }

    /// The key of a committed blob.
    pub fn blob_key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        self.key(&format!(
            "blobs/{}/{}/{hex}",
            digest.algorithm().as_str(),
            &hex[..2]
        ))
        .to_string()
    }

    fn blob_path(&self, digest: &Digest) -> Path {
        Path::from(self.blob_key(digest))
    }

    fn check_id(id: &str) -> Result<()> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(StorageError::UploadUnknown(id.to_string()))
        }
    }

    /// The object a session's bytes are stored in (and, once committed, kept in).
    fn staging_path(&self, id: &str, state: &SessionState) -> Path {
        if state.data_key {
            self.key(&format!("data/{id}"))
        } else {
            self.key(&format!("uploads/{id}/data"))
        }
    }

    fn tail_path(&self, id: &str, generation: u64) -> Path {
        self.key(&format!("uploads/{id}/tail-{generation}"))
    }

    fn local(&self, id: &str) -> Arc<tokio::sync::Mutex<Local>> {
        self.locals
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Local {
                    hasher: None,
                    hashed: 0,
                }))
            })
            .clone()
    }

    fn forget_local(&self, id: &str) {
        self.locals.lock().remove(id);
    }

    async fn load_state(&self, id: &str) -> Result<Option<SessionState>> {
        let Some(raw) = self.states.load(id).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| other(format!("upload {id}: corrupt session state: {e}")))
    }

    async fn save_state(&self, id: &str, state: &SessionState) -> Result<()> {
        let raw = serde_json::to_vec(state).expect("session state serializes");
        self.states.save(id, &raw).await
    }

    /// Target size of the part with 0-based index `n`.
    fn part_target(&self, n: usize) -> u64 {
        self.cfg.part_size * (1 + (n / 1000) as u64)
    }

    async fn read_tail(&self, id: &str, tail: &TailRecord) -> Result<Bytes> {
        let bytes = self
            .s3
            .get(&self.tail_path(id, tail.generation))
            .await
            .map_err(io_err)?
            .bytes()
            .await
            .map_err(io_err)?;
        if bytes.len() as u64 != tail.size {
            return Err(other(format!(
                "upload {id}: tail object has {} bytes, the session state says {}",
                bytes.len(),
                tail.size
            )));
        }
        Ok(bytes)
    }

    async fn ensure_multipart(&self, id: &str, state: &mut SessionState) -> Result<String> {
        if let Some(m) = &state.multipart {
            return Ok(m.clone());
        }
        let m = self
            .s3
            .create_multipart(&self.staging_path(id, state))
            .await
            .map_err(io_err)?;
        state.multipart = Some(m.clone());
        Ok(m)
    }

    fn spawn_part(
        &self,
        path: Path,
        multipart: &str,
        index: usize,
        chunks: Vec<Bytes>,
        size: u64,
    ) -> tokio::task::JoinHandle<Result<PartRecord>> {
        let s3 = self.s3.clone();
        let multipart = multipart.to_string();
        tokio::spawn(async move {
            let payload: PutPayload = chunks.into_iter().collect();
            let part = s3
                .put_part(&path, &multipart, index, payload)
                .await
                .map_err(io_err)?;
            Ok(PartRecord {
                etag: part.content_id,
                size,
            })
        })
    }

    /// Remove everything a session left in the bucket and its state (`keep_data`: all but
    /// its data object, which a link now points to).
    async fn discard(&self, id: &str, state: &SessionState, keep_data: bool) -> Result<()> {
        let staging = self.staging_path(id, state);
        if let Some(m) = &state.multipart
            && !state.completed
        {
            match self.s3.abort_multipart(&staging, m).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        if let Some(t) = &state.tail {
            self.s3
                .delete(&self.tail_path(id, t.generation))
                .await
                .map_err(io_err)?;
        }
        if !keep_data && !self.linked_to(state, &staging).await? {
            self.s3.delete(&staging).await.map_err(io_err)?;
        }
        self.states.remove(id).await
    }

    /// Whether the link of the digest a session was committing points to its data object.
    async fn linked_to(&self, state: &SessionState, staging: &Path) -> Result<bool> {
        let Some(digest) = state.linking.as_deref() else {
            return Ok(false);
        };
        let digest: Digest = digest
            .parse()
            .map_err(|e| other(format!("session state names a bad digest {digest:?}: {e}")))?;
        Ok(self
            .resolve(&digest, true)
            .await?
            .is_some_and(|at| at.linked && &at.path == staging))
    }

    /// One UploadPartCopy (`object_store` has no call for it): a presigned `PUT` whose
    /// signature covers the part number, upload id and copy-source headers.
    async fn upload_part_copy(
        &self,
        from: &Path,
        to: &Path,
        multipart: &str,
        index: usize,
        start: u64,
        end: u64,
    ) -> Result<PartId> {
        use reqwest::header::{HeaderName, HeaderValue};
        let source = HeaderValue::from_str(&format!("/{}/{from}", self.cfg.bucket))
            .map_err(|e| other(format!("copy source header: {e}")))?;
        let range = HeaderValue::from_str(&format!("bytes={start}-{end}")).expect("ascii");
        let source_name = HeaderName::from_static("x-amz-copy-source");
        let range_name = HeaderName::from_static("x-amz-copy-source-range");
        let options = SignedUrlOptions::new()
            .with_query([
                ("partNumber", (index + 1).to_string()),
                ("uploadId", multipart.to_string()),
            ])
            .with_signed_header(source_name.clone(), source.clone())
            .with_signed_header(range_name.clone(), range.clone());
        let url = self
            .s3
            .signed_url_opts(Method::PUT, to, Duration::from_secs(3600), &options)
            .await
            .map_err(io_err)?;
        let resp = self
            .http
            .put(url.as_str())
            .header(source_name, source)
            .header(range_name, range)
            .send()
            .await
            .map_err(|e| other(format!("UploadPartCopy {}: {e}", index + 1)))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| other(format!("UploadPartCopy {} response: {e}", index + 1)))?;
        if !status.is_success() {
            return Err(other(format!(
                "UploadPartCopy {} answered {status}: {body}",
                index + 1
            )));
        }
        // <CopyPartResult><ETag>"…"</ETag>…; S3 may also answer 200 with an <Error> body.
        let etag = body
            .split_once("<ETag>")
            .and_then(|(_, rest)| rest.split_once("</ETag>"))
            .map(|(etag, _)| etag.replace("&quot;", "\"").replace("&#34;", "\""))
            .ok_or_else(|| other(format!("UploadPartCopy {}: {body}", index + 1)))?;
        Ok(PartId { content_id: etag })
    }

    /// Store a whole request body of known length as the plain staging object, with one
    /// streaming PUT (no part buffers, and nothing to assemble at commit).
    async fn put_staged(
        &self,
        id: &str,
        state: &SessionState,
        len: u64,
        body: ByteStream,
        hasher: Option<Hasher>,
    ) -> Result<Option<Hasher>> {
        let hasher = Arc::new(parking_lot::Mutex::new(hasher));
        let body_error: Arc<parking_lot::Mutex<Option<std::io::Error>>> = Arc::default();
        let (h, be) = (hasher.clone(), body_error.clone());
        let stream = body.map(move |item| match item {
            Ok(chunk) => {
                if let Some(h) = h.lock().as_mut() {
                    h.update(&chunk);
                }
                Ok(chunk)
            }
            Err(e) => {
                let msg = e.to_string();
                *be.lock() = Some(e);
                Err(std::io::Error::other(msg))
            }
        });
        let url = self
            .s3
            .signed_url(
                Method::PUT,
                &self.staging_path(id, state),
                Duration::from_secs(3600),
            )
            .await
            .map_err(io_err)?;
        let sent = self
            .http
            .put(url.as_str())
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        if let Some(e) = body_error.lock().take() {
            return Err(StorageError::Body(e));
        }
        let resp =
            sent.map_err(|e| other(format!("upload {id}: PUT of the staging object: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(other(format!(
                "upload {id}: PUT of the staging object answered {status}: {text}"
            )));
        }
        Ok(hasher.lock().take())
    }

    /// Turn a plain staging object into the first parts of a multipart upload on the same
    /// key (server-side UploadPartCopy), so that more bytes can follow.
    async fn convert_staged(&self, id: &str, state: &mut SessionState) -> Result<()> {
        let staging = self.staging_path(id, state);
        let multipart = self.ensure_multipart(id, state).await?;
        let step = self.cfg.copy_part_size;
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < state.staged {
            let mut end = (start + step).min(state.staged);
            if state.staged - end < MIN_PART {
                end = state.staged; // no part below the minimum
            }
            ranges.push((start, end));
            start = end;
        }
        let etags: Vec<PartId> = futures::stream::iter(ranges.clone().into_iter().enumerate())
            .map(|(i, (a, b))| self.upload_part_copy(&staging, &staging, &multipart, i, a, b - 1))
            .buffered(COPY_CONCURRENCY)
            .try_collect()
            .await?;
        state.parts = ranges
            .iter()
            .zip(etags)
            .map(|((a, b), p)| PartRecord {
                etag: p.content_id,
                size: b - a,
            })
            .collect();
        state.staged = 0;
        self.save_state(id, state).await
    }

    /// Append to a session; `single` is the body's length when it may go as one object.
    async fn append(
        &self,
        id: &str,
        at: Option<u64>,
        single: Option<u64>,
        mut body: ByteStream,
    ) -> Result<u64> {
        Self::check_id(id)?;
        let local = self.local(id);
        let mut local = local.lock().await;
        let Some(mut state) = self.load_state(id).await? else {
            drop(local);
            self.forget_local(id);
            return Err(StorageError::UploadUnknown(id.to_string()));
        };
        if state.completed {
            return Err(other(format!("upload {id} is being committed")));
        }
        let start = state.size();
        if let Some(at) = at
            && at != start
        {
            return Err(StorageError::OutOfOrder {
                have: start,
                got: at,
            });
        }
        // The running hash continues only if it covers exactly the stored bytes (another
        // replica may have appended since).
        let mut hasher = match local.hasher.take() {
            Some(h) if local.hashed == start => Some(h),
            _ => None,
        };
        local.hashed = 0;
        // An empty body (a PUT that only commits) changes nothing: in particular it must not
        // turn a staged object into parts.
        let first = loop {
            match body.next().await {
                Some(Ok(c)) if c.is_empty() => continue,
                other => break other,
            }
        };
        match first {
            None => {
                local.hasher = hasher;
                local.hashed = start;
                return Ok(start);
            }
            Some(Err(e)) => {
                local.hasher = hasher;
                local.hashed = start;
                return Err(StorageError::Body(e));
            }
            Some(Ok(chunk)) => {
                body = Box::pin(futures::stream::once(async move { Ok(chunk) }).chain(body));
            }
        }
        if let Some(len) = single
            && start == 0
            && state.multipart.is_none()
        {
            if let Some(max) = self.cfg.max_upload
                && len > max
            {
                return Err(StorageError::TooLarge(max));
            }
            let hasher = self.put_staged(id, &state, len, body, hasher).await?;
            state.staged = len;
            self.save_state(id, &state).await?;
            if let Some(h) = hasher {
                local.hasher = Some(h);
                local.hashed = len;
            }
            return Ok(len);
        }
        if state.staged > 0 {
            self.convert_staged(id, &mut state).await?;
        }
        let (size, failure) = self
            .append_parts(id, state, start, &mut hasher, &mut body)
            .await?;
        // Every byte received is stored (also when the body was cut short): the hash holds.
        if let Some(h) = hasher {
            local.hasher = Some(h);
            local.hashed = size;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(size),
        }
    }

    /// Stream a body into parts of the session's multipart upload (one filling here, up to
    /// `parts_in_flight` being sent), keeping what is left as the tail. Returns the new size and, for
    /// a body cut short, its error (what arrived is kept).
    async fn append_parts(
        &self,
        id: &str,
        mut state: SessionState,
        start: u64,
        hasher: &mut Option<Hasher>,
        body: &mut ByteStream,
    ) -> Result<(u64, Option<StorageError>)> {
        let old_tail = state.tail.take();
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut buffered = 0u64;
        if let Some(t) = &old_tail {
            let bytes = self.read_tail(id, t).await?;
            buffered = bytes.len() as u64;
            chunks.push(bytes);
        }
        let mut in_flight: std::collections::VecDeque<tokio::task::JoinHandle<Result<PartRecord>>> =
            std::collections::VecDeque::new();
        let max_in_flight = self.cfg.parts_in_flight.max(1);
        let mut received = 0u64;
        let mut failure: Option<StorageError> = None;

        // Stream the body into parts: one filling here, up to `max_in_flight` being sent;
        // finished parts are recorded in order.
        let streamed: Result<()> = async {
            while let Some(item) = body.next().await {
                let chunk = match item {
                    Ok(c) => c,
                    Err(e) => {
                        failure = Some(StorageError::Body(e));
                        break;
                    }
                };
                received += chunk.len() as u64;
                if let Some(max) = self.cfg.max_upload
                    && start + received > max
                {
                    failure = Some(StorageError::TooLarge(max));
                    break;
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                buffered += chunk.len() as u64;
                chunks.push(chunk);
                let index = state.parts.len() + in_flight.len();
                if buffered >= self.part_target(index) {
                    if in_flight.len() >= max_in_flight
                        && let Some(task) = in_flight.pop_front()
                    {
                        state.parts.push(task.await.expect("part upload panicked")?);
                    }
                    let multipart = self.ensure_multipart(id, &mut state).await?;
                    let index = state.parts.len() + in_flight.len();
                    in_flight.push_back(self.spawn_part(
                        self.staging_path(id, &state),
                        &multipart,
                        index,
                        std::mem::take(&mut chunks),
                        buffered,
                    ));
                    buffered = 0;
                }
            }
            while let Some(task) = in_flight.pop_front() {
                state.parts.push(task.await.expect("part upload panicked")?);
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            // The saved state still describes what is stored; parts sent beyond it are
            // replaced by the next request's parts of the same numbers.
            for task in in_flight.drain(..) {
                task.abort();
            }
            return Err(e);
        }
        if matches!(failure, Some(StorageError::TooLarge(_))) {
            return Err(failure.expect("checked"));
        }
        // What is left: a last part when long enough, else the new tail. A body cut short
        // keeps every byte received, as the filesystem backend does.
        if buffered >= MIN_PART {
            let multipart = self.ensure_multipart(id, &mut state).await?;
            let index = state.parts.len();
            let task = self.spawn_part(
                self.staging_path(id, &state),
                &multipart,
                index,
                std::mem::take(&mut chunks),
                buffered,
            );
            state.parts.push(task.await.expect("part upload panicked")?);
        } else if buffered > 0 {
            let generation = state.next_tail;
            state.next_tail += 1;
            let payload: PutPayload = std::mem::take(&mut chunks).into_iter().collect();
            self.s3
                .put(&self.tail_path(id, generation), payload)
                .await
                .map_err(io_err)?;
            state.tail = Some(TailRecord {
                generation,
                size: buffered,
            });
        }
        self.save_state(id, &state).await?;
        if let Some(t) = old_tail
            && state.tail.as_ref().map(|n| n.generation) != Some(t.generation)
            && let Err(e) = self.s3.delete(&self.tail_path(id, t.generation)).await
        {
            tracing::warn!(upload = id, error = %e, "removing a replaced tail object");
        }
        Ok((state.size(), failure))
    }

    /// Hash a stored object from the start, streaming.
    async fn hash_object(&self, path: &Path, algorithm: Algorithm) -> Result<Digest> {
        let mut stream = self.s3.get(path).await.map_err(io_err)?.into_stream();
        let mut hasher = algorithm.hasher();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(io_err)?);
        }
        Ok(hasher.finish())
    }

    /// Where a digest's bytes are: remembered for [`LOCATION_TTL`] unless `fresh`, else
    /// one HEAD of the blob key (which also reads a link's metadata).
    async fn resolve(&self, digest: &Digest, fresh: bool) -> Result<Option<Located>> {
        let name = digest.to_string();
        if !fresh
            && let Some(r) = self.locations.lock().get(&name)
            && r.at.elapsed() < LOCATION_TTL
        {
            return Ok(Some(r.located.clone()));
        }
        let Some(located) = head_located(&self.s3, &self.prefix, self.blob_path(digest)).await?
        else {
            self.forget_location(digest);
            return Ok(None);
        };
        let mut cache = self.locations.lock();
        if cache.len() >= LOCATION_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            name,
            Remembered {
                located: located.clone(),
                at: std::time::Instant::now(),
            },
        );
        Ok(Some(located))
    }

    fn forget_location(&self, digest: &Digest) {
        self.locations.lock().remove(&digest.to_string());
    }

    /// Write the link `dest` → `data`. Returns false when `mode` is [`PutMode::Create`] and
    /// another commit of the same digest linked its own data (the blob is stored; `data` is
    /// not needed). Read back after writing, because some servers check `If-None-Match`
    /// apart from the write: two commits racing there may both write, and the one whose
    /// link was overwritten drops its data. (A loser that already read back its own link
    /// keeps data nothing points to; S3 and MinIO create atomically.)
    async fn put_link(&self, dest: &Path, data: &Path, size: u64, mode: PutMode) -> Result<bool> {
        let rel = data
            .as_ref()
            .strip_prefix(self.prefix.as_str())
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(data.as_ref())
            .to_string();
        let attributes = Attributes::from_iter([
            (Attribute::Metadata(LINK_LOCATION.into()), rel),
            (Attribute::Metadata(LINK_SIZE.into()), size.to_string()),
        ]);
        let options = |mode| PutOptions {
            mode,
            attributes: attributes.clone(),
            ..Default::default()
        };
        let put = |mode| self.s3.put_opts(dest, PutPayload::default(), options(mode));
        let create = mode == PutMode::Create;
        match put(mode).await {
            Ok(_) => {}
            // Another commit's link (or the content) is there: the read-back tells.
            Err(object_store::Error::AlreadyExists { .. }) if create => {}
            // A server without conditional writes, whichever way it says so: the HEAD just
            // before found no blob, so a plain write is right (a commit racing this one may
            // leave unreferenced data, which GC sweeps).
            Err(e) if create => {
                tracing::warn!(error = %e, key = %dest, "conditional write of a link refused; writing it plainly");
                put(PutMode::Overwrite).await.map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        }
        // Read back: whose link, or what content, holds the key now. An empty object
        // without link metadata is a racing commit's link half written (s3s-fs stores an
        // object's bytes and its metadata one after the other): look again shortly.
        let mut attempts = 0;
        let now = loop {
            let now = head_located(&self.s3, &self.prefix, dest.clone())
                .await?
                .ok_or_else(|| other(format!("{dest}: gone right after its link was written")))?;
            attempts += 1;
            if now.linked || now.size == size || attempts == LINK_READ_BACK_ATTEMPTS {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if now.linked && &now.path == data {
            Ok(true)
        } else if now.size == size {
            Ok(false)
        } else {
            Err(other(format!(
                "{dest}: after linking, the key holds a blob of {} bytes, not {size}",
                now.size
            )))
        }
    }

    /// Open `len` bytes of a blob from `offset`, resolving its location again once if a
    /// remembered data object is gone.
    async fn open(&self, digest: &Digest, offset: u64, len: u64) -> Result<ByteStream> {
        let mut fresh = false;
        loop {
            let Some(at) = self.resolve(digest, fresh).await? else {
                return Err(StorageError::BlobUnknown(digest.clone()));
            };
            if len == 0 {
                // S3 has no empty ranges; an empty read only needs the blob to exist.
                return Ok(Box::pin(futures::stream::empty()));
            }
            let options = GetOptions {
                range: Some(GetRange::Bounded(offset..offset + len)),
                ..Default::default()
            };
            match self.s3.get_opts(&at.path, options).await {
                Ok(result) => {
                    return Ok(Box::pin(result.into_stream().map_err(std::io::Error::from)));
                }
                Err(e) if is_not_found(&e) && !fresh => fresh = true,
                Err(e) if is_not_found(&e) => {
                    return Err(StorageError::BlobUnknown(digest.clone()));
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

/// The digest a listed key under `blobs/` stands for: the last three path segments,
/// reversed, are hex, its first two characters, and the algorithm.
fn listed_digest(key: &Path) -> Option<Digest> {
    let parts: Vec<String> = key.parts().map(|p| p.as_ref().to_string()).collect();
    match parts.as_slice() {
        [.., alg, xx, hex] if hex.starts_with(xx.as_str()) => format!("{alg}:{hex}").parse().ok(),
        _ => None,
    }
}

/// The location a blob key's HEAD describes: the key itself, or the data object its link
/// metadata names (checked to be one this store writes, under the same prefix).
fn located(prefix: &str, blob: Path, size: u64, attributes: &Attributes) -> Result<Located> {
    let Some(location) = attributes.get(&Attribute::Metadata(LINK_LOCATION.into())) else {
        return Ok(Located {
            path: blob,
            size,
            linked: false,
        });
    };
    // Exactly `data/<id>` or `uploads/<id>/data`, with a valid session id.
    let location = location.as_ref();
    let valid = location
        .strip_prefix("data/")
        .or_else(|| {
            location
                .strip_prefix("uploads/")
                .and_then(|r| r.strip_suffix("/data"))
        })
        .is_some_and(|id| S3BlobStore::check_id(id).is_ok());
    if !valid {
        return Err(other(format!(
            "{blob}: link to an unexpected key {location:?}"
        )));
    }
    let size = attributes
        .get(&Attribute::Metadata(LINK_SIZE.into()))
        .and_then(|v| v.as_ref().parse::<u64>().ok())
        .ok_or_else(|| other(format!("{blob}: link without a valid size")))?;
    Ok(Located {
        path: prefixed(prefix, location),
        size,
        linked: true,
    })
}

/// `rel` under the key prefix (which may be empty).
fn prefixed(prefix: &str, rel: &str) -> Path {
    if prefix.is_empty() {
        Path::from(rel)
    } else {
        Path::from(format!("{prefix}/{rel}"))
    }
}

/// One HEAD of a blob key, read as a [`Located`]; `None` when the key is absent.
async fn head_located(s3: &AmazonS3, prefix: &str, blob: Path) -> Result<Option<Located>> {
    let options = GetOptions {
        head: true,
        ..Default::default()
    };
    match s3.get_opts(&blob, options).await {
        Ok(r) => located(prefix, blob, r.meta.size, &r.attributes).map(Some),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn list_blobs(&self) -> crate::BlobInfoStream {
        // Keys are `<prefix>/blobs/<algorithm>/<xx>/<hex>`; anything else under `blobs/`
        // (not written by this store) is skipped. ListObjectsV2 pages as the stream goes;
        // links (empty objects) are asked for their size, a few at a time.
        let prefix = self.key("blobs");
        let s3 = self.s3.clone();
        let store_prefix = self.prefix.clone();
        let stream = self
            .s3
            .list(Some(&prefix))
            .filter_map(|item| {
                let out = match item {
                    Err(e) => Some(Err(io_err(e))),
                    Ok(meta) => listed_digest(&meta.location).map(|digest| Ok((digest, meta))),
                };
                futures::future::ready(out)
            })
            .map(move |item| {
                let (s3, store_prefix) = (s3.clone(), store_prefix.clone());
                async move {
                    let (digest, meta) = item?;
                    let mut size = meta.size;
                    if size == 0 && digest != Digest::sha256_of(b"") {
                        match head_located(&s3, &store_prefix, meta.location).await? {
                            Some(at) => size = at.size,
                            // Deleted since the page was listed.
                            None => return Ok(None),
                        }
                    }
                    Ok(Some(crate::BlobInfo {
                        digest,
                        size,
                        modified: meta.last_modified.into(),
                    }))
                }
            })
            .buffered(8)
            .filter_map(|r: Result<Option<crate::BlobInfo>>| futures::future::ready(r.transpose()));
        Box::pin(stream)
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        // Always asked of the bucket: existence answers decide whether clients upload.
        Ok(self.resolve(digest, true).await?.map(|l| l.size))
    }

    async fn read(&self, digest: &Digest, offset: u64, len: u64) -> Result<ByteStream> {
        self.open(digest, offset, len).await
    }

    async fn put_bytes(&self, digest: &Digest, data: Bytes) -> Result<()> {
        self.s3
            .put(&self.blob_path(digest), PutPayload::from(data))
            .await
            .map_err(io_err)?;
        self.forget_location(digest);
        Ok(())
    }

    async fn get_bytes(&self, digest: &Digest) -> Result<Bytes> {
        let Some(at) = self.resolve(digest, false).await? else {
            return Err(StorageError::BlobUnknown(digest.clone()));
        };
        let mut out = bytes::BytesMut::with_capacity(at.size as usize);
        let mut stream = self.open(digest, 0, at.size).await?;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        // S3 deletes of missing keys succeed; the trait reports them.
        let Some(at) = self.resolve(digest, true).await? else {
            return Err(StorageError::BlobUnknown(digest.clone()));
        };
        // The link first: a crash in between leaves unreferenced data, never a link to
        // nothing.
        self.s3
            .delete(&self.blob_path(digest))
            .await
            .map_err(io_err)?;
        self.forget_location(digest);
        if at.linked {
            self.s3.delete(&at.path).await.map_err(io_err)?;
        }
        Ok(())
    }

    async fn create_upload(&self, id: &str) -> Result<()> {
        Self::check_id(id)?;
        if self.states.load(id).await?.is_some() {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("upload {id} exists"),
            )));
        }
        let state = SessionState {
            data_key: true,
            ..SessionState::default()
        };
        self.save_state(id, &state).await?;
        *self.local(id).lock().await = Local {
            hasher: Some(Algorithm::Sha256.hasher()),
            hashed: 0,
        };
        Ok(())
    }

    async fn upload_size(&self, id: &str) -> Result<Option<u64>> {
        Self::check_id(id)?;
        Ok(self.load_state(id).await?.map(|s| s.size()))
    }

    async fn append_upload(&self, id: &str, at: Option<u64>, body: ByteStream) -> Result<u64> {
        self.append(id, at, None, body).await
    }

    async fn append_upload_sized(
        &self,
        id: &str,
        at: Option<u64>,
        len: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        // One streaming PUT for a large first body (S3 caps single PUTs at 5 GiB).
        let single = len
            .filter(|_| self.cfg.single_put)
            .filter(|l| (MIN_PART..=MAX_COPY_OBJECT).contains(l));
        self.append(id, at, single, body).await
    }

    async fn commit_upload(&self, id: &str, digest: &Digest) -> Result<u64> {
        Self::check_id(id)?;
        let local = self.local(id);
        let local_guard = local.lock().await;
        let Some(mut state) = self.load_state(id).await? else {
            drop(local_guard);
            self.forget_local(id);
            return Err(StorageError::UploadUnknown(id.to_string()));
        };
        let size = state.size();
        let running = match &local_guard.hasher {
            Some(h) if local_guard.hashed == size && h.algorithm() == digest.algorithm() => {
                Some(h.clone().finish())
            }
            _ => None,
        };
        let mismatch = |computed: Digest| StorageError::DigestMismatch {
            expected: digest.clone(),
            computed,
        };
        let dest = self.blob_path(digest);

        if state.parts.is_empty() && !state.completed && state.staged == 0 {
            // Shorter than one part: the tail holds every byte.
            let bytes = match &state.tail {
                Some(t) => self.read_tail(id, t).await?,
                None => Bytes::new(),
            };
            let computed = Digest::of(digest.algorithm(), &bytes);
            if &computed != digest {
                self.discard(id, &state, false).await?;
                drop(local_guard);
                self.forget_local(id);
                return Err(mismatch(computed));
            }
            self.s3
                .put(&dest, PutPayload::from(bytes))
                .await
                .map_err(io_err)?;
            self.forget_location(digest);
            self.discard(id, &state, false).await?;
            drop(local_guard);
            self.forget_local(id);
            return Ok(size);
        }

        let staging = self.staging_path(id, &state);
        // A plain staging object (one streaming PUT) already holds every byte.
        if !state.completed && state.staged == 0 {
            if let Some(computed) = &running
                && computed != digest
            {
                // Known bad before completing: abort, nothing is assembled.
                self.discard(id, &state, false).await?;
                drop(local_guard);
                self.forget_local(id);
                return Err(mismatch(computed.clone()));
            }
            let multipart = state
                .multipart
                .clone()
                .ok_or_else(|| other(format!("upload {id}: parts without a multipart upload")))?;
            let mut parts: Vec<PartId> = state
                .parts
                .iter()
                .map(|p| PartId {
                    content_id: p.etag.clone(),
                })
                .collect();
            if let Some(t) = &state.tail {
                let bytes = self.read_tail(id, t).await?;
                let part = self
                    .s3
                    .put_part(&staging, &multipart, parts.len(), PutPayload::from(bytes))
                    .await
                    .map_err(io_err)?;
                parts.push(part);
            }
            let started = std::time::Instant::now();
            self.s3
                .complete_multipart(&staging, &multipart, parts)
                .await
                .map_err(io_err)?;
            tracing::debug!(
                upload = id,
                ms = started.elapsed().as_millis() as u64,
                "multipart upload completed"
            );
            state.completed = true;
            self.save_state(id, &state).await?;
        }
        let started = std::time::Instant::now();
        let from_running = running.is_some();
        let computed = match running {
            Some(d) => d,
            None => self.hash_object(&staging, digest.algorithm()).await?,
        };
        tracing::debug!(
            upload = id,
            from_running,
            ms = started.elapsed().as_millis() as u64,
            "digest computed"
        );
        if &computed != digest {
            self.discard(id, &state, false).await?;
            drop(local_guard);
            self.forget_local(id);
            return Err(mismatch(computed));
        }
        let started = std::time::Instant::now();
        let linked = match self.resolve(digest, true).await? {
            // Linked already (this commit was cut short after linking, and is retried).
            Some(existing) if existing.linked && existing.path == staging => true,
            // Content-addressed: the blob is already stored, this copy is not needed.
            Some(existing) if existing.size == size => false,
            Some(_) => {
                tracing::warn!(%digest, "stored blob has the wrong size; replacing it");
                state.linking = Some(digest.to_string());
                self.save_state(id, &state).await?;
                self.put_link(&dest, &staging, size, PutMode::Overwrite)
                    .await?
            }
            None => {
                state.linking = Some(digest.to_string());
                self.save_state(id, &state).await?;
                self.put_link(&dest, &staging, size, PutMode::Create)
                    .await?
            }
        };
        tracing::debug!(
            upload = id,
            linked,
            ms = started.elapsed().as_millis() as u64,
            "blob in place"
        );
        self.discard(id, &state, linked).await?;
        drop(local_guard);
        self.forget_local(id);
        Ok(size)
    }

    async fn cancel_upload(&self, id: &str) -> Result<()> {
        Self::check_id(id)?;
        let local = self.local(id);
        let guard = local.lock().await;
        let state = self.load_state(id).await?;
        let result = match state {
            Some(state) => self.discard(id, &state, false).await,
            None => Err(StorageError::UploadUnknown(id.to_string())),
        };
        drop(guard);
        self.forget_local(id);
        result
    }

    async fn sweep_unreferenced(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<(u64, u64)> {
        // 1. Data objects old enough, 2. whose session is gone (checked now: a session's
        // state is removed only after its link is written), 3. that no link listed after
        // that check points to.
        let mut candidates: HashMap<String, u64> = HashMap::new();
        let mut listing = self.s3.list(Some(&self.key("data")));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(io_err)?;
            if std::time::SystemTime::from(meta.last_modified) < before {
                candidates.insert(meta.location.to_string(), meta.size);
            }
        }
        let mut orphans = HashMap::new();
        for (key, size) in candidates {
            let id = key.rsplit('/').next().unwrap_or_default().to_string();
            if Self::check_id(&id).is_ok() && self.states.load(&id).await?.is_none() {
                orphans.insert(key, size);
            }
        }
        if orphans.is_empty() {
            return Ok((0, 0));
        }
        let mut links = self.s3.list(Some(&self.key("blobs")));
        while let Some(meta) = links.next().await {
            let meta = meta.map_err(io_err)?;
            if meta.size != 0 {
                continue;
            }
            // Any doubt (an unreadable link, a failed HEAD) stops the sweep: nothing is
            // deleted on a guess. (`list_blobs`, which GC runs first, fails alike.)
            if let Some(at) = head_located(&self.s3, &self.prefix, meta.location).await?
                && at.linked
            {
                orphans.remove(at.path.as_ref());
            }
        }
        let (count, bytes) = (orphans.len() as u64, orphans.values().sum());
        if !dry_run {
            for key in orphans.keys() {
                tracing::info!(key, "deleting a data object nothing references");
                match self.s3.delete(&Path::from(key.as_str())).await {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        Ok((count, bytes))
    }

    async fn presigned_url(&self, digest: &Digest, head: bool) -> Result<Option<String>> {
        if !self.cfg.redirect {
            return Ok(None);
        }
        let method = if head { Method::HEAD } else { Method::GET };
        let Some(at) = self.resolve(digest, false).await? else {
            return Err(StorageError::BlobUnknown(digest.clone()));
        };
        let url = self
            .s3
            .signed_url(method, &at.path, PRESIGN_TTL)
            .await
            .map_err(io_err)?;
        Ok(Some(url.to_string()))
    }
}
