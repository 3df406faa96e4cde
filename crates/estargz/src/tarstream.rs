//! A sequential tar reader that keeps every header block verbatim.
//!
//! Each call to [`TarReader::next_entry`] returns one logical entry: the raw bytes of all
//! its header blocks (PAX `x` records and GNU `L`/`K` long names included, so the output
//! tar reproduces them byte for byte) and the metadata the TOC needs, with PAX and GNU
//! overrides applied as Go's `archive/tar` does. The caller then reads the payload from
//! [`TarReader::inner`] and calls [`TarReader::skip_padding`].

use std::collections::BTreeMap;
use std::io::{self, Read};

use crate::Error;
use crate::toc::EntryKind;

pub(crate) const BLOCK: u64 = 512;
/// Largest total size of the extension records (PAX, GNU long names) of one entry.
const MAX_EXTENSION: u64 = 16 << 20;

/// Metadata of one tar entry, as the TOC records it.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryMeta {
    /// Name as stored (PAX `path`, GNU long name or `prefix/name`), lossily UTF-8.
    pub name: String,
    pub kind: Option<EntryKind>,
    /// Payload bytes following the header (regular files only).
    pub size: u64,
    pub mode: i64,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    /// Seconds since the epoch, rounded as Go rounds (half up).
    pub mtime: i64,
    pub link_name: String,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryMeta {
    pub(crate) fn kind(&self) -> &EntryKind {
        self.kind.as_ref().unwrap_or(&EntryKind::Reg)
    }
}

/// One entry: verbatim header blocks and parsed metadata.
#[derive(Debug)]
pub(crate) struct TarEntry {
    pub header: Vec<u8>,
    pub meta: EntryMeta,
}

/// Padding after `size` payload bytes up to the next block.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Go's `parseNumeric`: base-256 when the high bit is set, else octal with leading and
/// trailing spaces and NULs ignored (an empty field is 0).
fn parse_numeric(b: &[u8]) -> Result<i64, String> {
    if b.first().is_some_and(|c| c & 0x80 != 0) {
        let inv = if b[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return Err("base-256 number overflows".into());
            }
            x = (x << 8) | c as u64;
        }
        if x >> 63 != 0 {
            return Err("base-256 number overflows".into());
        }
        return Ok(if inv == 0xff { !(x as i64) } else { x as i64 });
    }
    let t = trim(b);
    if t.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(t).map_err(|_| "numeric field is not ASCII".to_string())?;
    i64::from_str_radix(s, 8).map_err(|_| format!("numeric field {s:?} is not octal"))
}

fn trim(b: &[u8]) -> &[u8] {
    let is_pad = |c: &u8| *c == b' ' || *c == 0;
    let start = b.iter().position(|c| !is_pad(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_pad(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

/// A NUL-terminated string field.
fn cstr(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|c| *c == 0).unwrap_or(b.len())]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Verify a header block's checksum (unsigned or signed sums, as Go accepts).
fn checksum_ok(block: &[u8]) -> bool {
    let Ok(stored) = parse_numeric(&block[148..156]) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &c) in block.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as i64;
        signed += c as i8 as i64;
    }
    stored == unsigned || stored == signed
}

/// PAX records that matter here.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    uname: Option<Vec<u8>>,
    gname: Option<Vec<u8>>,
    mtime: Option<i64>,
    xattrs: BTreeMap<String, Vec<u8>>,
    sparse: bool,
}

/// Split PAX data into `(key, value)` records by their length prefix (values may hold
/// newlines or any byte).
/// One PAX record: (key, value).
type Record<'a> = (&'a [u8], &'a [u8]);

fn pax_records(mut data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // Trailing NUL padding some writers leave.
        if data.iter().all(|c| *c == 0) {
            break;
        }
        let sp = data
            .iter()
            .take(20)
            .position(|c| *c == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("PAX record with a bad length".into());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|c| *c == b'=')
            .ok_or("PAX record without '='")?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// PAX time `secs[.frac]`, rounded to the nearest second (halves up, as Go's
/// `time.Round`).
fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let first = frac.bytes().next().map_or(0, |c| c - b'0');
    let rest_nonzero = frac.bytes().skip(1).any(|c| c != b'0');
    Some(if neg {
        // -(secs + f): rounding half up means -secs when f <= 0.5.
        if first > 5 || (first == 5 && rest_nonzero) {
            -secs - 1
        } else {
            -secs
        }
    } else if first >= 5 {
        secs + 1
    } else {
        secs
    })
}

fn parse_pax(data: &[u8], pax: &mut Pax) -> Result<(), String> {
    for (k, v) in pax_records(data)? {
        let num = || -> Result<u64, String> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("PAX record {} is not a number", lossy(k)))
        };
        // An empty value deletes the record (POSIX).
        let set = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        match k {
            b"path" => pax.path = set(v),
            b"linkpath" => pax.linkpath = set(v),
            b"uname" => pax.uname = set(v),
            b"gname" => pax.gname = set(v),
            b"size" if !v.is_empty() => pax.size = Some(num()?),
            b"uid" if !v.is_empty() => pax.uid = Some(num()?),
            b"gid" if !v.is_empty() => pax.gid = Some(num()?),
            b"mtime" if !v.is_empty() => {
                pax.mtime =
                    Some(parse_pax_time(v).ok_or_else(|| "PAX mtime is malformed".to_string())?)
            }
            _ if k.starts_with(b"SCHILY.xattr.") => {
                pax.xattrs
                    .insert(lossy(&k[b"SCHILY.xattr.".len()..]), v.to_vec());
            }
            _ if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {}
        }
    }
    Ok(())
}

/// Reads a tar stream one logical entry at a time.
pub(crate) struct TarReader<R> {
    inner: R,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader { inner, done: false }
    }

    /// The underlying stream, positioned at the payload of the entry just returned.
    pub(crate) fn inner(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Read one 512-byte block; `None` on a clean end of stream.
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK as usize]>, Error> {
        let mut b = [0u8; BLOCK as usize];
        let mut got = 0;
        while got < b.len() {
            match self.inner.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        match got {
            0 => Ok(None),
            512 => Ok(Some(b)),
            _ => Err(Error::InvalidTar(
                "stream ends inside a header block".into(),
            )),
        }
    }

    /// Read `n` bytes (extension data) plus padding, appending everything to `raw`.
    fn read_extension(&mut self, n: u64, raw: &mut Vec<u8>) -> Result<Vec<u8>, Error> {
        let total = n + padding(n);
        let start = raw.len();
        let got = (&mut self.inner).take(total).read_to_end(raw)?;
        if got as u64 != total {
            return Err(Error::InvalidTar(
                "stream ends inside an extended header".into(),
            ));
        }
        Ok(raw[start..start + n as usize].to_vec())
    }

    /// Skip the padding after a payload of `size` bytes.
    pub(crate) fn skip_padding(&mut self, size: u64) -> Result<(), Error> {
        let pad = padding(size);
        let got = io::copy(&mut (&mut self.inner).take(pad), &mut io::sink())?;
        if got != pad {
            return Err(Error::InvalidTar(
                "stream ends inside payload padding".into(),
            ));
        }
        Ok(())
    }

    /// Read the rest of the stream (the end-of-archive blocks and record padding), so a
    /// producer writing into a pipe is not cut off.
    pub(crate) fn drain(&mut self) -> Result<(), Error> {
        io::copy(&mut self.inner, &mut io::sink())?;
        Ok(())
    }

    /// The next entry, or `None` at the end of the archive.
    pub(crate) fn next_entry(&mut self) -> Result<Option<TarEntry>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut raw = Vec::new();
        let mut pax = Pax::default();
        let mut gnu_name: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        loop {
            let Some(block) = self.read_block()? else {
                if raw.is_empty() {
                    // EOF at an entry boundary without end-of-archive blocks: accepted,
                    // as Go's reader does.
                    self.done = true;
                    return Ok(None);
                }
                return Err(Error::InvalidTar(
                    "stream ends after an extended header".into(),
                ));
            };
            if block.iter().all(|c| *c == 0) {
                if !raw.is_empty() {
                    return Err(Error::InvalidTar(
                        "end of archive right after an extended header".into(),
                    ));
                }
                // End of archive: the next block must be zero too (or absent).
                if let Some(next) = self.read_block()?
                    && next.iter().any(|c| *c != 0)
                {
                    return Err(Error::InvalidTar(
                        "a single zero block inside the archive".into(),
                    ));
                }
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(&block) {
                return Err(Error::InvalidTar(format!(
                    "header checksum mismatch (entry {:?})",
                    lossy(cstr(&block[..100]))
                )));
            }
            raw.extend_from_slice(&block);
            if raw.len() as u64 > MAX_EXTENSION {
                return Err(Error::InvalidTar("extended headers are too large".into()));
            }
            let flag = block[156];
            let field_size = |b: &[u8]| -> Result<u64, Error> {
                let v = parse_numeric(&b[124..136]).map_err(Error::InvalidTar)?;
                u64::try_from(v).map_err(|_| Error::InvalidTar("negative size".into()))
            };
            match flag {
                b'x' | b'L' | b'K' => {
                    let n = field_size(&block)?;
                    if n + raw.len() as u64 > MAX_EXTENSION {
                        return Err(Error::InvalidTar("extended headers are too large".into()));
                    }
                    let data = self.read_extension(n, &mut raw)?;
                    match flag {
                        b'x' => parse_pax(&data, &mut pax).map_err(Error::InvalidTar)?,
                        b'L' => gnu_name = Some(cstr(&data).to_vec()),
                        _ => gnu_link = Some(cstr(&data).to_vec()),
                    }
                    continue;
                }
                _ => {}
            }
            let meta = self.parse_main(&block, flag, pax, gnu_name, gnu_link)?;
            return Ok(Some(TarEntry { header: raw, meta }));
        }
    }

    fn parse_main(
        &self,
        b: &[u8; BLOCK as usize],
        flag: u8,
        pax: Pax,
        gnu_name: Option<Vec<u8>>,
        gnu_link: Option<Vec<u8>>,
    ) -> Result<EntryMeta, Error> {
        let ustar = &b[257..263] == b"ustar\0";
        let gnu = &b[257..263] == b"ustar ";
        let header_name = if ustar {
            let star = &b[508..512] == b"tar\0";
            let prefix = cstr(if star { &b[345..476] } else { &b[345..500] });
            let name = cstr(&b[..100]);
            if prefix.is_empty() {
                name.to_vec()
            } else {
                [prefix, b"/", name].concat()
            }
        } else {
            cstr(&b[..100]).to_vec()
        };
        let name = lossy(&pax.path.or(gnu_name).unwrap_or(header_name));
        let num = |r: std::ops::Range<usize>, what: &str| -> Result<i64, Error> {
            parse_numeric(&b[r]).map_err(|e| Error::InvalidTar(format!("{what} of {name:?}: {e}")))
        };
        let unsigned = |v: i64, what: &str| -> Result<u64, Error> {
            u64::try_from(v).map_err(|_| Error::InvalidTar(format!("negative {what} in {name:?}")))
        };
        let unsupported = |reason: String| Error::UnsupportedEntry {
            name: name.clone(),
            reason,
        };
        if pax.sparse {
            return Err(unsupported("sparse files are not supported".into()));
        }
        let kind = match flag {
            b'0' | b'7' => EntryKind::Reg,
            0 if name.ends_with('/') => EntryKind::Dir,
            0 => EntryKind::Reg,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::Char,
            b'4' => EntryKind::Block,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            b'g' => return Err(unsupported("global PAX headers are not supported".into())),
            b'S' => return Err(unsupported("GNU sparse files are not supported".into())),
            other => {
                return Err(unsupported(format!(
                    "tar entry type {:?} is not supported",
                    other as char
                )));
            }
        };
        let size = match pax.size {
            Some(s) => s,
            None => unsigned(num(124..136, "size")?, "size")?,
        };
        if kind != EntryKind::Reg && size != 0 {
            return Err(Error::InvalidTar(format!(
                "{name:?} is a {} entry with {size} bytes of data",
                kind.as_str()
            )));
        }
        let uid = match pax.uid {
            Some(v) => v,
            None => unsigned(num(108..116, "uid")?, "uid")?,
        };
        let gid = match pax.gid {
            Some(v) => v,
            None => unsigned(num(116..124, "gid")?, "gid")?,
        };
        let mtime = match pax.mtime {
            Some(v) => v,
            None => num(136..148, "mtime")?,
        };
        let (uname, gname) = if ustar || gnu {
            (lossy(cstr(&b[265..297])), lossy(cstr(&b[297..329])))
        } else {
            (String::new(), String::new())
        };
        let (dev_major, dev_minor) =
            if matches!(kind, EntryKind::Char | EntryKind::Block) && (ustar || gnu) {
                (
                    unsigned(num(329..337, "devmajor")?, "devmajor")?,
                    unsigned(num(337..345, "devminor")?, "devminor")?,
                )
            } else {
                (0, 0)
            };
        let link_name = match kind {
            EntryKind::Hardlink | EntryKind::Symlink => lossy(
                &pax.linkpath
                    .or(gnu_link)
                    .unwrap_or_else(|| cstr(&b[157..257]).to_vec()),
            ),
            _ => String::new(),
        };
        let mode = num(100..108, "mode")?;
        Ok(EntryMeta {
            name,
            kind: Some(kind),
            size,
            mode,
            uid,
            gid,
            uname: pax.uname.map(|v| lossy(&v)).unwrap_or(uname),
            gname: pax.gname.map(|v| lossy(&v)).unwrap_or(gname),
            mtime,
            link_name,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
        })
    }
}

/// A USTAR header for a regular file with no metadata, byte for byte what Go's
/// `tar.Writer` writes for `tar.Header{Name, Typeflag: TypeReg, Size}` (used for the
/// landmarks and the TOC entry). `name` must fit in 100 bytes.
pub(crate) fn synth_header(name: &str, size: u64) -> [u8; BLOCK as usize] {
    let mut b = [0u8; BLOCK as usize];
    b[..name.len()].copy_from_slice(name.as_bytes());
    let mut put = |at: usize, s: String| b[at..at + s.len()].copy_from_slice(s.as_bytes());
    put(100, "0000000\0".into()); // mode
    put(108, "0000000\0".into()); // uid
    put(116, "0000000\0".into()); // gid
    put(124, format!("{size:011o}\0"));
    put(136, "00000000000\0".into()); // mtime
    put(156, "0".into());
    put(257, "ustar\0".into());
    put(263, "00".into());
    put(329, "0000000\0".into()); // devmajor
    put(337, "0000000\0".into()); // devminor
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                *c as u32
            }
        })
        .sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0").unwrap(), 0o644);
        assert_eq!(parse_numeric(b"  644 \0\0").unwrap(), 0o644);
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0").unwrap(), 0);
        let mut b256 = [0u8; 8];
        b256[0] = 0x80;
        b256[7] = 0x10;
        assert_eq!(parse_numeric(&b256).unwrap(), 16);
        // -1 in base-256.
        assert_eq!(parse_numeric(&[0xff; 8]).unwrap(), -1);
        assert!(parse_numeric(b"0009\0").is_err());
    }

    #[test]
    fn pax_records_keep_binary_values() {
        let v = b"a\nb=c";
        let body = [b"SCHILY.xattr.user.x=".as_slice(), v, b"\n"].concat();
        let len = body.len() + 3; // "NN " prefix
        let data = [format!("{len} ").as_bytes(), &body].concat();
        let mut pax = Pax::default();
        parse_pax(&data, &mut pax).unwrap();
        assert_eq!(pax.xattrs["user.x"], v.to_vec());
        assert!(parse_pax(b"5 a=b\n", &mut pax).is_err()); // length too short
        assert!(parse_pax(b"99 a=b\n", &mut pax).is_err()); // length too long
    }

    #[test]
    fn pax_time_rounds_like_go() {
        assert_eq!(parse_pax_time(b"1700000000"), Some(1_700_000_000));
        assert_eq!(parse_pax_time(b"1700000000.4999"), Some(1_700_000_000));
        assert_eq!(parse_pax_time(b"1700000000.5"), Some(1_700_000_001));
        assert_eq!(parse_pax_time(b"-1.5"), Some(-1));
        assert_eq!(parse_pax_time(b"-1.51"), Some(-2));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn synthesized_header_is_valid_ustar() {
        let h = synth_header(".no.prefetch.landmark", 1);
        assert!(checksum_ok(&h));
        // Go's checksum field: six octal digits, NUL, space.
        assert_eq!(h[154], 0);
        assert_eq!(h[155], b' ');
        let th = tar::Header::from_byte_slice(&h);
        assert_eq!(&*th.path_bytes(), b".no.prefetch.landmark");
        assert_eq!(th.entry_size().unwrap(), 1);
        assert_eq!(th.mode().unwrap(), 0);
        assert_eq!(th.cksum().unwrap(), {
            let mut s = 0u32;
            for (i, c) in h.iter().enumerate() {
                s += if (148..156).contains(&i) {
                    32
                } else {
                    *c as u32
                };
            }
            s
        });
    }
}
