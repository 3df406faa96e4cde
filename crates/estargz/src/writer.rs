//! Converting a tar stream into an eStargz blob.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use flate2::write::GzEncoder;
use oci_core::{Algorithm, Digest, Hasher};

use crate::tarstream::{EntryMeta, TarEntry, TarReader, padding, synth_header};
use crate::toc::{EntryKind, Toc, TocEntry, clean_entry_name, parent_of};
use crate::{
    DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESSION_LEVEL, Error, LANDMARK_CONTENTS, NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK, TOC_DIGEST_ANNOTATION, TOC_TAR_NAME, UNCOMPRESSED_SIZE_ANNOTATION,
    footer_bytes,
};

/// How [`build`] lays out the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Largest uncompressed chunk of a regular file in one gzip member (default 4 MiB).
    pub chunk_size: u64,
    /// gzip level, 0..=9 (default 9, as the Go implementation).
    pub compression_level: u32,
    /// Files to place first, in this order, followed by `.prefetch.landmark` (a
    /// snapshotter prefetches them). Names are normalized (`/a`, `./a`, `a` are the same).
    /// Each one's parent directories (when present in the tar) and hard link targets are
    /// moved along. When empty, `.no.prefetch.landmark` is written first and the entries
    /// keep their input order.
    pub prioritized_files: Vec<String>,
    /// Skip prioritized files absent from the input (reported in
    /// [`Built::missed_prioritized_files`]) instead of failing.
    pub allow_prioritized_not_found: bool,
    /// Directory for the spool file used when reordering (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            prioritized_files: Vec::new(),
            allow_prioritized_not_found: false,
            temp_dir: None,
        }
    }
}

/// The result of [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Digest of the blob (the layer descriptor's digest).
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// SHA-256 of the uncompressed tar, i.e. of what a plain gunzip of the blob yields (the
    /// layer's diff_id).
    pub diff_id: Digest,
    /// SHA-256 of the TOC JSON (the `containerd.io/snapshot/stargz/toc.digest` annotation).
    pub toc_digest: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Offset of the TOC member in the blob.
    pub toc_offset: u64,
    /// Prioritized files that were not in the input (only with
    /// [`WriterOptions::allow_prioritized_not_found`]).
    pub missed_prioritized_files: Vec<String>,
}

/// The two layer annotations an eStargz layer descriptor carries:
/// `containerd.io/snapshot/stargz/toc.digest` and `io.containers.estargz.uncompressed-size`.
pub fn annotations(built: &Built) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            TOC_DIGEST_ANNOTATION.to_string(),
            built.toc_digest.to_string(),
        ),
        (
            UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
            built.uncompressed_size.to_string(),
        ),
    ])
}

/// Counts and hashes the compressed output.
struct Counting<W: Write> {
    inner: BufWriter<W>,
    written: u64,
    hasher: Hasher,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// One value per build, moved only at member boundaries: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Sink<W: Write> {
    Idle(Counting<W>),
    Member(GzEncoder<Counting<W>>),
    Poisoned,
}

/// Writes the uncompressed tar stream as a sequence of gzip members; a new member is
/// opened lazily on the first byte after [`Members::boundary`].
struct Members<W: Write> {
    sink: Sink<W>,
    level: flate2::Compression,
    diff: Hasher,
    uncompressed: u64,
}

impl<W: Write> Members<W> {
    fn new(out: W, level: u32) -> Self {
        Members {
            sink: Sink::Idle(Counting {
                inner: BufWriter::with_capacity(256 << 10, out),
                written: 0,
                hasher: Algorithm::Sha256.hasher(),
            }),
            level: flate2::Compression::new(level),
            diff: Algorithm::Sha256.hasher(),
            uncompressed: 0,
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if let Sink::Idle(_) = self.sink {
            let Sink::Idle(c) = std::mem::replace(&mut self.sink, Sink::Poisoned) else {
                unreachable!()
            };
            self.sink = Sink::Member(flate2::GzBuilder::new().write(c, self.level));
        }
        let Sink::Member(enc) = &mut self.sink else {
            return Err(io::Error::other("eStargz writer failed earlier"));
        };
        enc.write_all(data)?;
        self.diff.update(data);
        self.uncompressed += data.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, mut n: u64) -> io::Result<()> {
        const Z: [u8; 1024] = [0; 1024];
        while n > 0 {
            let k = n.min(Z.len() as u64);
            self.write(&Z[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    /// End the current member (if any); returns the compressed offset where the next one
    /// starts.
    fn boundary(&mut self) -> io::Result<u64> {
        match std::mem::replace(&mut self.sink, Sink::Poisoned) {
            Sink::Idle(c) => {
                let at = c.written;
                self.sink = Sink::Idle(c);
                Ok(at)
            }
            Sink::Member(enc) => {
                let c = enc.finish()?;
                let at = c.written;
                self.sink = Sink::Idle(c);
                Ok(at)
            }
            Sink::Poisoned => Err(io::Error::other("eStargz writer failed earlier")),
        }
    }

    /// Close the last member, append raw bytes (the footer), flush. Returns (blob size,
    /// blob digest, uncompressed size, diff_id).
    fn finish(mut self, trailer: &[u8]) -> io::Result<(u64, Digest, u64, Digest)> {
        self.boundary()?;
        let Sink::Idle(mut c) = self.sink else {
            unreachable!()
        };
        c.write_all(trailer)?;
        c.flush()?;
        Ok((
            c.written,
            c.hasher.finish(),
            self.uncompressed,
            self.diff.finish(),
        ))
    }
}

/// Builds the TOC while entries are written.
struct Emitter<W: Write> {
    out: Members<W>,
    toc: Toc,
    chunk_size: u64,
    last_uname: HashMap<u64, String>,
    last_gname: HashMap<u64, String>,
    buf: Vec<u8>,
}

/// Go's `nameIfChanged`: record a name only when it differs from the last one recorded for
/// the same id.
fn name_if_changed(last: &mut HashMap<u64, String>, id: u64, name: &str) -> String {
    if name.is_empty() || last.get(&id).is_some_and(|n| n == name) {
        return String::new();
    }
    last.insert(id, name.to_string());
    name.to_string()
}

impl<W: Write> Emitter<W> {
    /// Write one entry: its header blocks, then (regular files) its payload, one gzip
    /// member per chunk, then the padding.
    fn entry(
        &mut self,
        header: &[u8],
        meta: &EntryMeta,
        payload: &mut dyn Read,
    ) -> Result<(), Error> {
        let kind = meta.kind().clone();
        let mut e = TocEntry {
            name: meta.name.clone(),
            kind: kind.clone(),
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            user_name: name_if_changed(&mut self.last_uname, meta.uid, &meta.uname),
            group_name: name_if_changed(&mut self.last_gname, meta.gid, &meta.gname),
            modtime: crate::time::format_modtime(meta.mtime).unwrap_or_default(),
            xattrs: meta.xattrs.clone(),
            ..Default::default()
        };
        match kind {
            EntryKind::Hardlink | EntryKind::Symlink => e.link_name = meta.link_name.clone(),
            EntryKind::Char | EntryKind::Block => {
                e.dev_major = meta.dev_major;
                e.dev_minor = meta.dev_minor;
            }
            EntryKind::Reg => e.size = meta.size,
            _ => {}
        }
        self.out.write(header)?;
        if kind != EntryKind::Reg {
            self.toc.entries.push(e);
            return Ok(());
        }
        let size = meta.size;
        let mut file_hash = Algorithm::Sha256.hasher();
        let reg_index = self.toc.entries.len();
        let mut written = 0u64;
        let mut current = e;
        while written < size {
            let remain = size - written;
            let n = remain.min(self.chunk_size);
            if remain >= self.chunk_size {
                current.chunk_size = self.chunk_size;
            }
            current.offset = self.out.boundary()?;
            current.chunk_offset = written;
            let mut chunk_hash = Algorithm::Sha256.hasher();
            let mut left = n;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let got = match payload.read(&mut self.buf[..want]) {
                    Ok(0) => {
                        return Err(Error::InvalidTar(format!(
                            "stream ends inside the payload of {:?}",
                            meta.name
                        )));
                    }
                    Ok(k) => k,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err.into()),
                };
                let data = &self.buf[..got];
                chunk_hash.update(data);
                file_hash.update(data);
                self.out.write(data)?;
                left -= got as u64;
            }
            current.chunk_digest = Some(chunk_hash.finish());
            self.toc.entries.push(current);
            written += n;
            current = TocEntry {
                name: meta.name.clone(),
                kind: EntryKind::Chunk,
                ..Default::default()
            };
        }
        if size == 0 {
            self.toc.entries.push(current);
        }
        self.toc.entries[reg_index].digest = Some(file_hash.finish());
        self.out.write_zeros(padding(size))?;
        Ok(())
    }

    fn landmark(&mut self, name: &str) -> Result<(), Error> {
        let meta = EntryMeta {
            name: name.to_string(),
            kind: Some(EntryKind::Reg),
            size: 1,
            ..Default::default()
        };
        self.entry(&synth_header(name, 1), &meta, &mut &[LANDMARK_CONTENTS][..])
    }
}

/// Input entries the writer drops: an existing TOC (a blob converted twice) and landmarks
/// (the writer places its own), as the Go implementation does.
fn is_reserved(meta: &EntryMeta) -> bool {
    let n = clean_entry_name(&meta.name);
    n == TOC_TAR_NAME || n == PREFETCH_LANDMARK || n == NO_PREFETCH_LANDMARK
}

/// Reads from a file at an offset (positioned reads on the spool).
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An entry stored in the spool file.
struct Spooled {
    meta: EntryMeta,
    header_at: u64,
    header_len: u64,
    payload_at: u64,
}

/// Go's `sortEntries`/`moveRec`, over entry indices: for each prioritized name, its
/// ancestors (those present), then its hard link targets (with their ancestors), then the
/// entries with that name. Returns (moved entries in order, missed names).
fn prioritize(
    metas: &[&EntryMeta],
    prioritized: &[String],
    allow_missing: bool,
) -> Result<(Vec<usize>, Vec<String>), Error> {
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, m) in metas.iter().enumerate() {
        by_name
            .entry(clean_entry_name(&m.name))
            .or_default()
            .push(i);
    }
    let mut moved = vec![false; metas.len()];
    let mut order = Vec::new();
    let mut missed = Vec::new();
    let mut take = |name: &str, order: &mut Vec<usize>| {
        if let Some(ids) = by_name.get(name) {
            for &i in ids {
                if !moved[i] {
                    moved[i] = true;
                    order.push(i);
                }
            }
        }
    };
    for p in prioritized {
        let name = clean_entry_name(p);
        if name.is_empty() {
            take("", &mut order);
            continue;
        }
        if !by_name.contains_key(&name) {
            if allow_missing {
                missed.push(p.clone());
                continue;
            }
            return Err(Error::PrioritizedFileNotFound(p.clone()));
        }
        // The chain name -> hard link target -> its target ..., stopping at cycles.
        let mut chain = vec![name.clone()];
        let mut seen: HashSet<String> = HashSet::from([name]);
        loop {
            let cur = chain.last().expect("chain is never empty");
            let target = by_name.get(cur).and_then(|ids| {
                ids.iter()
                    .map(|&i| metas[i])
                    .find(|m| *m.kind() == EntryKind::Hardlink)
                    .map(|m| clean_entry_name(&m.link_name))
            });
            match target {
                Some(t) if by_name.contains_key(&t) && seen.insert(t.clone()) => chain.push(t),
                _ => break,
            }
        }
        for name in &chain {
            let mut ancestors = Vec::new();
            let mut a = parent_of(name);
            loop {
                ancestors.push(a);
                if a.is_empty() {
                    break;
                }
                a = parent_of(a);
            }
            for a in ancestors.iter().rev() {
                take(a, &mut order);
            }
        }
        for name in chain.iter().rev() {
            take(name, &mut order);
        }
    }
    Ok((order, missed))
}

/// Convert a tar stream into an eStargz blob written to `out`.
///
/// The input (an uncompressed tar; a gzip-compressed one is detected and inflated) is read
/// once, sequentially. Entry headers are copied verbatim (PAX and GNU extension records
/// included), so a plain gunzip of the blob yields the input's entries, in order, with
/// `.no.prefetch.landmark` first and `stargz.index.json` last (with prioritized files:
/// those first, then `.prefetch.landmark`, then the rest). Existing TOC and landmark
/// entries in the input are dropped. When reordering, the input is spooled to an unnamed
/// temporary file rather than memory. The output is deterministic: the same input and
/// options give the same bytes.
pub fn build<R: Read, W: Write>(input: R, out: W, opts: &WriterOptions) -> Result<Built, Error> {
    if opts.chunk_size == 0 {
        return Err(Error::InvalidOption("chunk_size must be positive".into()));
    }
    if opts.compression_level > 9 {
        return Err(Error::InvalidOption(format!(
            "compression_level {} is not in 0..=9",
            opts.compression_level
        )));
    }
    let mut buffered = BufReader::with_capacity(1 << 20, input);
    let head = buffered.fill_buf()?;
    let reader: Box<dyn Read + '_> = if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    };
    let mut tar = TarReader::new(reader);
    let mut em = Emitter {
        out: Members::new(out, opts.compression_level),
        toc: Toc::new(),
        chunk_size: opts.chunk_size,
        last_uname: HashMap::new(),
        last_gname: HashMap::new(),
        buf: vec![0; 256 << 10],
    };
    let mut missed = Vec::new();
    if opts.prioritized_files.is_empty() {
        em.landmark(NO_PREFETCH_LANDMARK)?;
        while let Some(TarEntry { header, meta }) = tar.next_entry()? {
            if is_reserved(&meta) {
                io::copy(&mut tar.inner().take(meta.size), &mut io::sink())?;
            } else {
                let mut payload = tar.inner().take(meta.size);
                em.entry(&header, &meta, &mut payload)?;
            }
            tar.skip_padding(meta.size)?;
        }
    } else {
        let spool = match &opts.temp_dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        let mut w = BufWriter::with_capacity(1 << 20, &spool);
        let mut pos = 0u64;
        let mut entries = Vec::new();
        while let Some(TarEntry { header, meta }) = tar.next_entry()? {
            if is_reserved(&meta) {
                io::copy(&mut tar.inner().take(meta.size), &mut io::sink())?;
                tar.skip_padding(meta.size)?;
                continue;
            }
            w.write_all(&header)?;
            let copied = io::copy(&mut tar.inner().take(meta.size), &mut w)?;
            if copied != meta.size {
                return Err(Error::InvalidTar(format!(
                    "stream ends inside the payload of {:?}",
                    meta.name
                )));
            }
            tar.skip_padding(meta.size)?;
            entries.push(Spooled {
                header_at: pos,
                header_len: header.len() as u64,
                payload_at: pos + header.len() as u64,
                meta,
            });
            pos += header.len() as u64 + copied;
        }
        w.flush()?;
        drop(w);
        let metas: Vec<&EntryMeta> = entries.iter().map(|e| &e.meta).collect();
        let (front, miss) = prioritize(
            &metas,
            &opts.prioritized_files,
            opts.allow_prioritized_not_found,
        )?;
        missed = miss;
        let mut is_front = vec![false; entries.len()];
        for &i in &front {
            is_front[i] = true;
        }
        let rest = (0..entries.len()).filter(|i| !is_front[*i]);
        let mut header = Vec::new();
        let mut emit = |em: &mut Emitter<W>, e: &Spooled| -> Result<(), Error> {
            header.resize(e.header_len as usize, 0);
            spool.read_exact_at(&mut header, e.header_at)?;
            let mut payload = ReadAt {
                file: &spool,
                pos: e.payload_at,
            }
            .take(e.meta.size);
            em.entry(&header, &e.meta, &mut payload)
        };
        for &i in &front {
            emit(&mut em, &entries[i])?;
        }
        em.landmark(PREFETCH_LANDMARK)?;
        for i in rest {
            emit(&mut em, &entries[i])?;
        }
    }
    tar.drain()?;

    // The TOC: its own member holding the tar entry and the end-of-archive blocks.
    let json = em.toc.to_json();
    let toc_digest = Digest::sha256_of(&json);
    let toc_offset = em.out.boundary()?;
    em.out
        .write(&synth_header(TOC_TAR_NAME, json.len() as u64))?;
    em.out.write(&json)?;
    em.out.write_zeros(padding(json.len() as u64) + 1024)?;
    let entries = em.toc.entries.len();
    let (size, digest, uncompressed_size, diff_id) = em.out.finish(&footer_bytes(toc_offset))?;
    tracing::debug!(
        %digest, size, %diff_id, %toc_digest, toc_offset, entries,
        "built eStargz blob"
    );
    Ok(Built {
        digest,
        size,
        diff_id,
        toc_digest,
        uncompressed_size,
        toc_offset,
        missed_prioritized_files: missed,
    })
}
