//! The table of contents (`stargz.index.json`) and views over it.

use std::collections::{BTreeMap, HashMap};

use oci_core::Digest;
use serde::{Deserialize, Serialize};

use crate::{Error, PREFETCH_LANDMARK};

/// Type of a TOC entry (`type` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EntryKind {
    /// `dir`: a directory.
    Dir,
    /// `reg`: a regular file (its first chunk when chunked).
    #[default]
    Reg,
    /// `symlink`: a symbolic link (`linkName` is the target).
    Symlink,
    /// `hardlink`: a hard link to the entry named by `linkName`.
    Hardlink,
    /// `char`: a character device.
    Char,
    /// `block`: a block device.
    Block,
    /// `fifo`: a named pipe.
    Fifo,
    /// `chunk`: the second and later chunks of the preceding `reg` entry.
    Chunk,
    /// A type this crate does not know, kept as written.
    Other(String),
}

impl EntryKind {
    /// The name written in the TOC.
    pub fn as_str(&self) -> &str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::Reg => "reg",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::Char => "char",
            EntryKind::Block => "block",
            EntryKind::Fifo => "fifo",
            EntryKind::Chunk => "chunk",
            EntryKind::Other(s) => s,
        }
    }

    /// `reg` or `chunk`: entries that locate file data.
    pub fn is_data(&self) -> bool {
        matches!(self, EntryKind::Reg | EntryKind::Chunk)
    }
}

impl From<String> for EntryKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "dir" => EntryKind::Dir,
            "reg" => EntryKind::Reg,
            "symlink" => EntryKind::Symlink,
            "hardlink" => EntryKind::Hardlink,
            "char" => EntryKind::Char,
            "block" => EntryKind::Block,
            "fifo" => EntryKind::Fifo,
            "chunk" => EntryKind::Chunk,
            _ => EntryKind::Other(s),
        }
    }
}

impl From<EntryKind> for String {
    fn from(k: EntryKind) -> Self {
        k.as_str().to_string()
    }
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `xattrs`: values are base64 (standard alphabet, padded), as Go encodes `[]byte`.
mod xattrs_b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let m: Option<BTreeMap<String, Option<String>>> = Option::deserialize(d)?;
        m.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let v = v.unwrap_or_default();
                STANDARD
                    .decode(v.as_bytes())
                    .map(|b| (k, b))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// Optional digests: absent, `null` and `""` all mean none (Go writes `omitempty` strings).
mod opt_digest {
    use oci_core::Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(d),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One TOC entry: a tar entry, or one chunk of a regular file. Field names and
/// omit-when-empty rules follow Go's `estargz.TOCEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TocEntry {
    /// Name exactly as stored in the tar (may start with `./` or end with `/`); use
    /// [`clean_entry_name`] to compare. Chunk entries repeat the file's name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Regular files: the logical file size.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size: u64,
    /// Modification time, RFC 3339 UTC (`2006-01-02T15:04:05Z`); empty when zero or unknown.
    #[serde(
        rename = "modtime",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub modtime: String,
    /// Symlink target, or the name a hard link points to.
    #[serde(
        rename = "linkName",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub link_name: String,
    /// The tar header's mode field (permission bits, often with the file type bits).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub mode: i64,
    /// Owner user ID.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub uid: u64,
    /// Owner group ID.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub gid: u64,
    /// Owner user name; writers may record it only on the first entry of each uid.
    #[serde(
        rename = "userName",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user_name: String,
    /// Owner group name; writers may record it only on the first entry of each gid.
    #[serde(
        rename = "groupName",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub group_name: String,
    /// Non-empty `reg` and `chunk`: offset in the blob of the gzip member holding the data.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Uncompressed offset of the data inside the member at `offset` (several small
    /// payloads may share one member); 0 when the data starts the member.
    #[serde(rename = "innerOffset", default, skip_serializing_if = "is_zero_u64")]
    pub inner_offset: u64,
    /// Device major number (`char`, `block`).
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero_u64")]
    pub dev_major: u64,
    /// Device minor number (`char`, `block`).
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero_u64")]
    pub dev_minor: u64,
    /// Extended attributes (base64 values in the JSON).
    #[serde(
        default,
        with = "xattrs_b64",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// `reg`: digest of the whole file content.
    #[serde(default, with = "opt_digest", skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Offset of this chunk in the file.
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero_u64")]
    pub chunk_offset: u64,
    /// Size of this chunk; 0 on the last (or only) chunk means "to the end of the file".
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero_u64")]
    pub chunk_size: u64,
    /// Digest of this chunk's uncompressed bytes.
    #[serde(
        rename = "chunkDigest",
        default,
        with = "opt_digest",
        skip_serializing_if = "Option::is_none"
    )]
    pub chunk_digest: Option<Digest>,
    /// Number of names referring to this entry (directories: 2 + subdirectories), computed
    /// by [`crate::read_toc`] as the Go reader does. Never written: Go's field is `json:"-"`
    /// (`numLink` / `NumLink` are read if present).
    #[serde(rename = "numLink", alias = "NumLink", default, skip_serializing)]
    pub num_link: u64,
}

impl TocEntry {
    /// `modtime` as Unix seconds; `None` when empty (zero or unknown) or malformed.
    pub fn modtime_unix(&self) -> Option<i64> {
        oci_core::time::parse_rfc3339(&self.modtime)
    }
}

/// The TOC: `{"version":1,"entries":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toc {
    /// Format version; 1.
    pub version: u32,
    /// Entries in blob order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub entries: Vec<TocEntry>,
    /// Offset of the TOC member in the blob (set by [`crate::read_toc`]); it ends the
    /// compressed range of the last payload.
    #[serde(skip)]
    toc_offset: Option<u64>,
}

/// The compressed location and the verification data of one chunk of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRange {
    /// Start of the gzip member holding the chunk.
    pub compressed_offset: u64,
    /// Bytes to fetch: up to the next member that starts a payload (or the TOC).
    pub compressed_len: u64,
    /// Uncompressed bytes to skip inside the member before the chunk (usually 0).
    pub inner_offset: u64,
    /// Offset of the chunk in the file.
    pub chunk_offset: u64,
    /// Uncompressed size of the chunk (resolved: never 0 for a non-empty file).
    pub chunk_size: u64,
    /// Expected digest of the uncompressed chunk.
    pub chunk_digest: Option<Digest>,
}

/// One name in the merged view of [`Toc::files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocFile<'a> {
    /// Cleaned name ([`clean_entry_name`]); `""` is the root directory.
    pub name: String,
    /// The entry (the last one with this name; a hard link's own entry).
    pub entry: &'a TocEntry,
    /// Regular files and hard links to them: the chunks, in file order.
    pub chunks: Vec<ChunkRange>,
}

/// Normalize a tar name as Go's `cleanEntryName`: `path.Clean("/" + name)` without the
/// leading slash, so `./a/b/`, `/a/b` and `../a/b` are all `a/b`, and `./` is `""`.
pub fn clean_entry_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Parent of a cleaned name (`""` for top-level names).
pub(crate) fn parent_of(name: &str) -> &str {
    name.rfind('/').map_or("", |i| &name[..i])
}

impl Default for Toc {
    fn default() -> Self {
        Toc::new()
    }
}

impl Toc {
    /// An empty version-1 TOC.
    pub fn new() -> Toc {
        Toc {
            version: 1,
            entries: Vec::new(),
            toc_offset: None,
        }
    }

    /// Parse TOC JSON.
    pub fn from_json(json: &[u8]) -> Result<Toc, Error> {
        serde_json::from_slice(json).map_err(|e| Error::InvalidToc(format!("JSON: {e}")))
    }

    /// Serialize as the Go writer does (`json.MarshalIndent(toc, "", "\t")`, with Go's
    /// escaping of `<`, `>`, `&`, U+2028 and U+2029).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser)
            .expect("serializing a TOC to memory cannot fail");
        let s = String::from_utf8(out).expect("serde_json writes UTF-8");
        if !s.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
            return s.into_bytes();
        }
        // These characters only occur inside JSON strings, so replacing them everywhere is
        // exactly Go's HTML-safe escaping.
        s.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .into_bytes()
    }

    /// Offset of the TOC member in the blob, when known.
    pub fn toc_offset(&self) -> Option<u64> {
        self.toc_offset
    }

    /// Record the offset of the TOC member (done by [`crate::read_toc`]); needed to compute
    /// the compressed range of the last payload.
    pub fn set_toc_offset(&mut self, offset: u64) {
        self.toc_offset = Some(offset);
    }

    /// Index of the last non-chunk entry per cleaned name.
    fn name_index(&self) -> HashMap<String, usize> {
        let mut m = HashMap::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            if e.kind != EntryKind::Chunk {
                m.insert(clean_entry_name(&e.name), i);
            }
        }
        m
    }

    fn find(&self, clean: &str) -> Option<usize> {
        self.entries
            .iter()
            .rposition(|e| e.kind != EntryKind::Chunk && clean_entry_name(&e.name) == clean)
    }

    /// The entry with this name (compared after [`clean_entry_name`]; the last one wins, as
    /// in tar), without following hard links.
    pub fn entry(&self, name: &str) -> Option<&TocEntry> {
        self.find(&clean_entry_name(name)).map(|i| &self.entries[i])
    }

    /// Like [`Toc::entry`], but a hard link resolves to the entry it points to.
    pub fn lookup(&self, name: &str) -> Option<&TocEntry> {
        let e = self.entry(name)?;
        if e.kind == EntryKind::Hardlink {
            return self.entry(&e.link_name);
        }
        Some(e)
    }

    /// Offset where the prioritized files end (the payload of `.prefetch.landmark`): a
    /// snapshotter prefetches `[0, offset)`. `None` when the blob has no prefetch landmark.
    pub fn prefetch_end(&self) -> Option<u64> {
        self.entry(PREFETCH_LANDMARK)
            .filter(|e| e.kind == EntryKind::Reg && e.offset != 0)
            .map(|e| e.offset)
    }

    /// For each entry, the end of its compressed range: the offset of the next entry that
    /// starts a member (non-zero `offset`, zero `innerOffset`), or the TOC offset.
    fn next_offsets(&self) -> Result<Vec<u64>, Error> {
        let toc_offset = self.toc_offset.ok_or_else(|| {
            Error::InvalidToc("TOC offset unknown (read it with read_toc or set_toc_offset)".into())
        })?;
        let mut next = vec![0; self.entries.len()];
        let mut last = toc_offset;
        for (i, e) in self.entries.iter().enumerate().rev() {
            if e.kind.is_data() {
                next[i] = last;
            }
            if e.offset != 0 && e.inner_offset == 0 {
                last = e.offset;
            }
        }
        Ok(next)
    }

    /// Chunks of the `reg` entry at `i` and the `chunk` entries after it.
    fn chunks_at(&self, i: usize, next: &[u64]) -> Result<Vec<ChunkRange>, Error> {
        let reg = &self.entries[i];
        let mut out = Vec::new();
        if reg.size == 0 {
            return Ok(out);
        }
        let bad = |why: String| Error::InvalidToc(format!("{:?}: {why}", reg.name));
        let mut expect_offset = 0u64;
        let mut j = i;
        loop {
            let e = &self.entries[j];
            if e.chunk_offset != expect_offset {
                return Err(bad(format!(
                    "chunk at {} where {expect_offset} was expected",
                    e.chunk_offset
                )));
            }
            let size = if e.chunk_size != 0 {
                e.chunk_size
            } else {
                reg.size
                    .checked_sub(e.chunk_offset)
                    .ok_or_else(|| bad("chunk beyond the end of the file".into()))?
            };
            let end = e
                .chunk_offset
                .checked_add(size)
                .filter(|end| *end <= reg.size && size > 0)
                .ok_or_else(|| bad("chunk size out of range".into()))?;
            if e.offset == 0 || next[j] <= e.offset {
                return Err(bad(format!(
                    "chunk at {} has compressed range [{}, {})",
                    e.chunk_offset, e.offset, next[j]
                )));
            }
            out.push(ChunkRange {
                compressed_offset: e.offset,
                compressed_len: next[j] - e.offset,
                inner_offset: e.inner_offset,
                chunk_offset: e.chunk_offset,
                chunk_size: size,
                chunk_digest: e.chunk_digest.clone(),
            });
            expect_offset = end;
            j += 1;
            if j == self.entries.len() || self.entries[j].kind != EntryKind::Chunk {
                break;
            }
        }
        if expect_offset != reg.size {
            return Err(bad(format!(
                "chunks cover {expect_offset} of {} bytes",
                reg.size
            )));
        }
        Ok(out)
    }

    /// The chunks of a regular file (a hard link is followed), in file order, with their
    /// compressed ranges `[offset, next offset)`. Empty for an empty file.
    pub fn chunks_of(&self, name: &str) -> Result<Vec<ChunkRange>, Error> {
        let clean = clean_entry_name(name);
        let mut i = self
            .find(&clean)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if self.entries[i].kind == EntryKind::Hardlink {
            let target = clean_entry_name(&self.entries[i].link_name);
            i = self
                .find(&target)
                .ok_or_else(|| Error::NotFound(self.entries[i].link_name.clone()))?;
        }
        if self.entries[i].kind != EntryKind::Reg {
            return Err(Error::NotRegularFile(name.to_string()));
        }
        let next = self.next_offsets()?;
        self.chunks_at(i, &next)
    }

    /// Merged view: one item per name, in TOC order (an entry overridden by a later one with
    /// the same name is left out), with chunk ranges for regular files and hard links.
    pub fn files(&self) -> Result<Vec<TocFile<'_>>, Error> {
        let next = self.next_offsets()?;
        let index = self.name_index();
        let mut out = Vec::with_capacity(index.len());
        for (i, e) in self.entries.iter().enumerate() {
            if e.kind == EntryKind::Chunk {
                continue;
            }
            let name = clean_entry_name(&e.name);
            if index.get(&name) != Some(&i) {
                continue;
            }
            let chunks = match e.kind {
                EntryKind::Reg => self.chunks_at(i, &next)?,
                EntryKind::Hardlink => match index.get(&clean_entry_name(&e.link_name)) {
                    Some(&t) if self.entries[t].kind == EntryKind::Reg => {
                        self.chunks_at(t, &next)?
                    }
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            out.push(TocFile {
                name,
                entry: e,
                chunks,
            });
        }
        Ok(out)
    }

    /// The eStargz verification rule: every non-empty `reg` and every `chunk` entry has a
    /// `chunkDigest`, and no two of them share a compressed location.
    pub fn verify_chunk_digests(&self) -> Result<(), Error> {
        let mut seen = std::collections::HashSet::new();
        for e in &self.entries {
            if !e.kind.is_data() || (e.kind == EntryKind::Reg && e.size == 0) {
                continue;
            }
            if !seen.insert((e.offset, e.inner_offset)) {
                return Err(Error::InvalidToc(format!(
                    "offset {} (inner {}) appears twice",
                    e.offset, e.inner_offset
                )));
            }
            if e.chunk_digest.is_none() {
                return Err(Error::MissingChunkDigest {
                    name: e.name.clone(),
                    offset: e.offset,
                });
            }
        }
        Ok(())
    }

    /// Compute `num_link` as Go's reader does: 1 per name referring to an entry (hard links
    /// count on their target), plus, for directories, 1 for the parent's link and 1 per
    /// subdirectory. Directories implied by paths but absent from the TOC count as present.
    pub(crate) fn fill_link_counts(&mut self) {
        let index = self.name_index();
        let mut counts = vec![0u64; self.entries.len()];
        // Implicit directories: name -> count (start at 2: "." and the parent's link).
        let mut implicit: HashMap<String, u64> = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.kind == EntryKind::Dir {
                counts[i] += 1;
            }
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.kind == EntryKind::Chunk {
                continue;
            }
            let name = clean_entry_name(&e.name);
            if name.is_empty() {
                continue;
            }
            // Make sure the parent chain exists; each newly implied directory is a
            // subdirectory of its own parent.
            let mut missing = Vec::new();
            let mut p = parent_of(&name);
            loop {
                if index.contains_key(p) || implicit.contains_key(p) {
                    break;
                }
                missing.push(p.to_string());
                if p.is_empty() {
                    break;
                }
                p = parent_of(p);
            }
            for d in missing.iter().rev() {
                implicit.insert(d.clone(), 2);
                if !d.is_empty() {
                    bump(&index, &mut implicit, &mut counts, parent_of(d));
                }
            }
            counts[i] += 1;
            let mut child = i;
            if e.kind == EntryKind::Hardlink {
                match index.get(&clean_entry_name(&e.link_name)) {
                    Some(&t) => {
                        counts[t] += 1;
                        child = t;
                    }
                    None => continue,
                }
            }
            if self.entries[child].kind == EntryKind::Dir {
                bump(&index, &mut implicit, &mut counts, parent_of(&name));
            }
        }
        for (e, c) in self.entries.iter_mut().zip(counts) {
            if e.kind != EntryKind::Chunk {
                e.num_link = c;
            }
        }

        fn bump(
            index: &HashMap<String, usize>,
            implicit: &mut HashMap<String, u64>,
            counts: &mut [u64],
            dir: &str,
        ) {
            if let Some(&i) = index.get(dir) {
                counts[i] += 1;
            } else if let Some(c) = implicit.get_mut(dir) {
                *c += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names_like_go() {
        for (input, want) in [
            ("foo/bar", "foo/bar"),
            ("/foo/bar", "foo/bar"),
            ("./foo/bar", "foo/bar"),
            ("../foo/bar", "foo/bar"),
            ("foo/bar/", "foo/bar"),
            ("./", ""),
            ("/", ""),
            ("a/./b/../c", "a/c"),
        ] {
            assert_eq!(clean_entry_name(input), want, "{input}");
        }
    }

    #[test]
    fn json_round_trip_and_go_names() {
        let json = br#"{
            "version": 1,
            "entries": [
                {"name": "bin/", "type": "dir", "modtime": "2019-08-20T10:30:43Z", "mode": 16877, "NumLink": 0},
                {"name": "bin/busybox", "type": "reg", "size": 833104, "modtime": "2019-06-12T17:52:45Z",
                 "mode": 33261, "offset": 126, "NumLink": 0,
                 "digest": "sha256:8b7c559b8cccca0d30d01bc4b5dc944766208a53d18a03aa8afe97252207521f",
                 "chunkDigest": "sha256:8b7c559b8cccca0d30d01bc4b5dc944766208a53d18a03aa8afe97252207521f",
                 "xattrs": {"user.a": "aGk="}},
                {"name": "x", "type": "whiteout", "linkName": null, "digest": ""}
            ]
        }"#;
        let toc = Toc::from_json(json).unwrap();
        assert_eq!(toc.entries.len(), 3);
        assert_eq!(toc.entries[0].kind, EntryKind::Dir);
        assert_eq!(toc.entries[1].size, 833_104);
        assert_eq!(toc.entries[1].xattrs["user.a"], b"hi");
        assert_eq!(toc.entries[2].kind, EntryKind::Other("whiteout".into()));
        assert_eq!(toc.entries[2].digest, None);
        let out = String::from_utf8(toc.to_json()).unwrap();
        assert!(out.starts_with("{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{\n\t\t\t\"name\": \"bin/\",\n\t\t\t\"type\": \"dir\",\n\t\t\t\"modtime\""), "{out}");
        assert!(out.contains("\"xattrs\": {\n\t\t\t\t\"user.a\": \"aGk=\"\n\t\t\t}"));
        assert!(!out.contains("umLink"));
        assert!(!out.contains("\"size\": 0"));
        assert_eq!(Toc::from_json(&out.into_bytes()).unwrap(), toc);
    }

    #[test]
    fn go_html_escaping() {
        let mut toc = Toc::new();
        toc.entries.push(TocEntry {
            name: "a<b>&c\u{2028}".into(),
            kind: EntryKind::Reg,
            ..Default::default()
        });
        let s = String::from_utf8(toc.to_json()).unwrap();
        assert!(s.contains(r#""a\u003cb\u003e\u0026c\u2028""#), "{s}");
        assert_eq!(
            Toc::from_json(s.as_bytes()).unwrap().entries[0].name,
            "a<b>&c\u{2028}"
        );
    }

    #[test]
    fn ranges_need_the_toc_offset_and_consistent_chunks() {
        let mut toc = Toc::new();
        toc.entries.push(TocEntry {
            name: "f".into(),
            kind: EntryKind::Reg,
            size: 10,
            offset: 100,
            chunk_size: 4,
            ..Default::default()
        });
        toc.entries.push(TocEntry {
            name: "f".into(),
            kind: EntryKind::Chunk,
            offset: 150,
            chunk_offset: 4,
            ..Default::default()
        });
        assert!(matches!(toc.chunks_of("f"), Err(Error::InvalidToc(_))));
        toc.set_toc_offset(200);
        let c = toc.chunks_of("./f").unwrap();
        assert_eq!(
            c.iter()
                .map(|c| (
                    c.compressed_offset,
                    c.compressed_len,
                    c.chunk_offset,
                    c.chunk_size
                ))
                .collect::<Vec<_>>(),
            vec![(100, 50, 0, 4), (150, 50, 4, 6)]
        );
        // A gap in the chunk list is rejected.
        toc.entries[1].chunk_offset = 5;
        assert!(matches!(toc.chunks_of("f"), Err(Error::InvalidToc(_))));
        assert!(matches!(toc.chunks_of("nope"), Err(Error::NotFound(_))));
    }
}
