//! Fetching files: the chunks they need, adjacent ranges merged, several ranges per request,
//! requests in parallel with retries; every chunk inflated and checked against its digest,
//! written in place into `FILE.partial`, which is renamed when complete. A `.partial` left by
//! an interrupted run is reused: chunks already in it that verify are not fetched again.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs_confine::Root;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use oci_client::Reference;
use oci_core::Digest;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::StargetError;
use crate::remote::Remote;
use crate::view::{Chunk, FileEntry, Kind};

/// Bytes asked for in one request, at most (one chunk may exceed it alone).
const MAX_REQUEST_BYTES: u64 = 8 << 20;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Requests in flight.
    pub concurrency: usize,
    /// Retries per request.
    pub max_retries: u32,
    /// Skip digest checks.
    pub skip_verify: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Ranges per request.
    pub ranges_per_request: usize,
}

/// What a fetch did.
#[derive(Debug, Default, Clone)]
pub struct FetchStats {
    /// Files written (regular files, links and directories).
    pub files: usize,
    /// Chunks reused from `.partial` files.
    pub resumed_chunks: usize,
}

/// A regular file being filled: its `.partial` in the directory (inside the output root)
/// that will hold it, renamed into place once complete and verified.
struct Partial<'e> {
    dir: OwnedFd,
    partial_name: OsString,
    name: OsString,
    shown: PathBuf,
    entry: &'e FileEntry,
}

struct Job {
    file: usize,
    chunk: Chunk,
}

/// One range request: the layer, its `(offset, length)` ranges, and the chunks they carry.
type Request = (usize, Vec<(u64, u64)>, Vec<Job>);

/// Write `entries` (from `layers`' blobs) under `out`.
pub async fn fetch(
    remote: &Remote,
    r: &Reference,
    layer_digests: &[Digest],
    entries: &[&FileEntry],
    out: &Path,
    opts: &FetchOptions,
) -> Result<FetchStats, StargetError> {
    let io = |p: &Path, e: std::io::Error| StargetError::Io(format!("{}: {e}", p.display()));
    let mut stats = FetchStats::default();
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    // Every write goes through the output directory's root: a TOC entry whose path crosses a
    // symlink written by an earlier entry (`lnk -> /outside`, then `lnk/file`) lands inside
    // `out`, re-rooted there, never outside it.
    let root = Root::open(out).map_err(|e| io(out, e))?;
    // Directories and links first; regular files get a .partial to fill.
    let mut partials: Vec<Partial> = Vec::new();
    let mut files: Vec<std::fs::File> = Vec::new();
    let mut jobs_by_layer: BTreeMap<usize, Vec<Job>> = BTreeMap::new();
    for e in entries {
        let rel = Path::new(&e.path);
        let shown = out.join(rel);
        match e.kind {
            Kind::Dir => {
                let comps = fs_confine::components(rel);
                let refs: Vec<&OsStr> = comps.iter().map(|c| c.as_os_str()).collect();
                root.dir(&refs, true).map_err(|er| io(&shown, er))?;
                stats.files += 1;
            }
            Kind::Symlink => {
                let (dir, name) = root.create_parent(rel).map_err(|er| io(&shown, er))?;
                match rustix::fs::unlinkat(&dir.fd, &name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(er) => return Err(io(&shown, er.into())),
                }
                rustix::fs::symlinkat(e.link.clone().unwrap_or_default(), &dir.fd, &name)
                    .map_err(|er| io(&shown, er.into()))?;
                stats.files += 1;
            }
            Kind::Hardlink | Kind::Other => {
                tracing::debug!(path = %e.path, "skipped (hard link or special file)");
            }
            Kind::File => {
                let (dir, name) = root.create_parent(rel).map_err(|er| io(&shown, er))?;
                let mut partial_name = name.clone();
                partial_name.push(".partial");
                let fd = rustix::fs::openat(
                    &dir.fd,
                    &partial_name,
                    OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|er| io(&shown, er.into()))?;
                let f = std::fs::File::from(fd);
                let existing = f.metadata().map_err(|er| io(&shown, er))?.len();
                f.set_len(e.size).map_err(|er| io(&shown, er))?;
                let idx = partials.len();
                for c in &e.chunks {
                    if existing >= c.chunk_offset + c.chunk_size && chunk_present(&f, c) {
                        stats.resumed_chunks += 1;
                        continue;
                    }
                    jobs_by_layer.entry(e.layer).or_default().push(Job {
                        file: idx,
                        chunk: c.clone(),
                    });
                }
                partials.push(Partial {
                    dir: dir.fd,
                    partial_name,
                    name,
                    shown,
                    entry: e,
                });
                files.push(f);
            }
        }
    }
    // Requests: per layer, chunks sorted by offset, touching ranges merged, batched.
    let mut requests: Vec<Request> = Vec::new();
    for (layer, mut jobs) in jobs_by_layer {
        jobs.sort_by_key(|j| j.chunk.compressed_offset);
        jobs.dedup_by_key(|j| (j.file, j.chunk.compressed_offset));
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut batch: Vec<Job> = Vec::new();
        let mut batch_bytes = 0u64;
        for j in jobs {
            let (o, l) = (j.chunk.compressed_offset, j.chunk.compressed_len);
            // A request carries up to `ranges_per_request` ranges and about MAX_REQUEST_BYTES,
            // so a failure loses little and finished requests are written right away.
            if !ranges.is_empty() && batch_bytes + l > MAX_REQUEST_BYTES {
                requests.push((
                    layer,
                    std::mem::take(&mut ranges),
                    std::mem::take(&mut batch),
                ));
                batch_bytes = 0;
            }
            match ranges.last_mut() {
                Some(last) if last.0 + last.1 >= o => {
                    last.1 = (o + l).max(last.0 + last.1) - last.0
                }
                _ => {
                    if ranges.len() == opts.ranges_per_request.max(1) {
                        requests.push((
                            layer,
                            std::mem::take(&mut ranges),
                            std::mem::take(&mut batch),
                        ));
                        batch_bytes = 0;
                    }
                    ranges.push((o, l));
                }
            }
            batch_bytes += l;
            batch.push(j);
        }
        if !ranges.is_empty() {
            requests.push((layer, ranges, batch));
        }
    }
    let total: u64 = requests
        .iter()
        .flat_map(|(_, r, _)| r.iter().map(|(_, l)| *l))
        .sum();
    let bar = if opts.progress {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let files = Arc::new(files);
    let results: Vec<Result<(), StargetError>> = futures::stream::iter(requests)
        .map(|(layer, ranges, jobs)| {
            let files = files.clone();
            let bar = bar.clone();
            let digest = layer_digests[layer].clone();
            async move {
                let mut attempt = 0;
                let parts = loop {
                    match remote.ranges(r, &digest, &ranges).await {
                        Ok(p) => break p,
                        Err(StargetError::Registry(e))
                            if e.is_retryable() && attempt < opts.max_retries =>
                        {
                            attempt += 1;
                            tracing::warn!(error = %e, attempt, "range request failed; retrying");
                            tokio::time::sleep(remote.client.backoff(attempt)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                bar.inc(ranges.iter().map(|(_, l)| *l).sum());
                let skip_verify = opts.skip_verify;
                tokio::task::spawn_blocking(move || {
                    for j in jobs {
                        let c = &j.chunk;
                        let (base, bytes) = parts
                            .iter()
                            .find(|(o, b)| {
                                *o <= c.compressed_offset
                                    && c.compressed_offset + c.compressed_len <= o + b.len() as u64
                            })
                            .ok_or_else(|| {
                                StargetError::Corrupt(format!(
                                    "the registry did not return bytes {}+{}",
                                    c.compressed_offset, c.compressed_len
                                ))
                            })?;
                        let src = crate::remote::Slice {
                            base: *base,
                            bytes,
                            size: u64::MAX,
                        };
                        let mut chunk = c.clone();
                        if skip_verify {
                            chunk.chunk_digest = None;
                        }
                        let data = estargz::read_chunk(&src, &chunk)?;
                        files[j.file]
                            .write_all_at(&data, c.chunk_offset)
                            .map_err(|e| StargetError::Io(e.to_string()))?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| StargetError::Io(e.to_string()))?
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    for r in results {
        r?;
    }
    for (p, f) in partials.iter().zip(files.iter()) {
        f.sync_all().map_err(|er| io(&p.shown, er))?;
        if !opts.skip_verify
            && let Some(want) = &p.entry.digest
        {
            let got = digest_of_file(f, want.algorithm()).map_err(|er| io(&p.shown, er))?;
            if &got != want {
                return Err(StargetError::Corrupt(format!(
                    "{}: file digest {got} does not match the TOC's {want}",
                    p.entry.path
                )));
            }
        }
        rustix::fs::fchmod(f, Mode::from_raw_mode(p.entry.mode & 0o7777))
            .map_err(|er| io(&p.shown, er.into()))?;
        rustix::fs::renameat(&p.dir, &p.partial_name, &p.dir, &p.name)
            .map_err(|er| io(&p.shown, er.into()))?;
        stats.files += 1;
    }
    Ok(stats)
}

/// The digest of a whole file, read in pieces (never held in memory at once).
fn digest_of_file(f: &std::fs::File, alg: oci_core::Algorithm) -> std::io::Result<Digest> {
    let mut h = alg.hasher();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = f.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finish())
}

/// Whether a `.partial` already holds a chunk (its digest verifies).
fn chunk_present(f: &std::fs::File, c: &Chunk) -> bool {
    let Some(d) = &c.chunk_digest else {
        return false;
    };
    let mut buf = vec![0u8; c.chunk_size as usize];
    f.read_exact_at(&mut buf, c.chunk_offset).is_ok() && &Digest::of(d.algorithm(), &buf) == d
}
