//! Shared helpers: synthetic tars and blob inspection.
#![allow(dead_code)]

use std::io::{self, Read};

use estargz::{Built, WriterOptions, build};
use tar::{EntryType, Header};

/// Header flavour of a synthetic tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ustar,
    Gnu,
    /// USTAR headers, each preceded by a PAX header carrying the path (and mtime).
    Pax,
}

/// Builds a tar in memory, one helper per entry type.
pub struct TarMaker {
    b: tar::Builder<Vec<u8>>,
    pub format: Format,
    pub prefix: String,
    pub mtime: u64,
}

/// Encode PAX records, each `"%d key=value\n"` with the length covering the record.
pub fn pax_data(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body_len = k.len() + 1 + v.len() + 1;
        let mut len = body_len + 2;
        while len != body_len + 1 + len.to_string().len() {
            len = body_len + 1 + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

impl TarMaker {
    pub fn new(format: Format, prefix: &str) -> Self {
        TarMaker {
            b: tar::Builder::new(Vec::new()),
            format,
            prefix: prefix.to_string(),
            mtime: 1_700_000_000,
        }
    }

    fn header(&self) -> Header {
        let mut h = match self.format {
            Format::Gnu => Header::new_gnu(),
            _ => Header::new_ustar(),
        };
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) {
        let data = pax_data(records);
        let mut h = Header::new_ustar();
        h.set_path("PaxHeaders.0/x").unwrap();
        h.set_entry_type(EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.b.append(&h, &data[..]).unwrap();
    }

    /// Append an entry; long names go through the tar crate's GNU long-name extension
    /// (or a PAX `path` record in PAX mode).
    pub fn raw(&mut self, mut h: Header, name: &str, data: &[u8], extra: &[(&str, &[u8])]) {
        let full = format!("{}{}", self.prefix, name);
        let mut records: Vec<(&str, &[u8])> = extra.to_vec();
        let mtime = format!("{}.25", self.mtime);
        if self.format == Format::Pax {
            records.push(("path", full.as_bytes()));
            records.push(("mtime", mtime.as_bytes()));
        }
        if !records.is_empty() {
            self.pax(&records);
        }
        h.set_size(data.len() as u64);
        if self.format == Format::Pax {
            // The PAX path wins; the header keeps a short stand-in.
            let short = &full.as_bytes()[..full.len().min(90)];
            h.as_old_mut().name[..short.len()].copy_from_slice(short);
            h.set_cksum();
            self.b.append(&h, data).unwrap();
        } else if full.len() > 99 {
            self.b.append_data(&mut h, &full, data).unwrap();
        } else {
            h.as_old_mut().name[..full.len()].copy_from_slice(full.as_bytes());
            h.set_cksum();
            self.b.append(&h, data).unwrap();
        }
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let mut h = self.header();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(mode);
        self.raw(h, name, &[], &[]);
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_with(name, data, 0o644, &[])
    }

    pub fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let mut h = self.header();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(mode);
        let keys: Vec<String> = xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        let recs: Vec<(&str, &[u8])> = keys
            .iter()
            .zip(xattrs)
            .map(|(k, (_, v))| (k.as_str(), *v))
            .collect();
        self.raw(h, name, data, &recs);
        self
    }

    pub fn owned_file(
        &mut self,
        name: &str,
        data: &[u8],
        uid: u64,
        gid: u64,
        user: &str,
    ) -> &mut Self {
        let mut h = self.header();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o600);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_username(user).unwrap();
        h.set_groupname(user).unwrap();
        self.raw(h, name, data, &[]);
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = self.header();
        h.set_entry_type(EntryType::Symlink);
        h.set_mode(0o777);
        h.set_link_name_literal(target.as_bytes()).unwrap();
        self.raw(h, name, &[], &[]);
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = self.header();
        h.set_entry_type(EntryType::Link);
        h.set_mode(0o644);
        let t = format!("{}{}", self.prefix, target);
        h.set_link_name_literal(t.as_bytes()).unwrap();
        self.raw(h, name, &[], &[]);
        self
    }

    pub fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = self.header();
        h.set_entry_type(kind);
        h.set_mode(0o600);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, name, &[], &[]);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// Deterministic pseudo-random bytes (xorshift), poorly compressible.
#[allow(unused_imports)] // not every test binary uses it
pub use test_support::noise;

pub fn build_blob(input: &[u8], opts: &WriterOptions) -> (Vec<u8>, Built) {
    let mut blob = Vec::new();
    let built = build(input, &mut blob, opts).unwrap();
    (blob, built)
}

pub fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Start offsets of the gzip members of `blob`, found by inflating them one by one.
pub fn member_starts(blob: &[u8]) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut pos = 0usize;
    while pos < blob.len() {
        starts.push(pos as u64);
        let mut d = flate2::bufread::GzDecoder::new(&blob[pos..]);
        io::copy(&mut d, &mut io::sink()).unwrap();
        let rest = d.into_inner();
        pos = blob.len() - rest.len();
    }
    starts
}

/// One entry of a tar as a standard reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub kind: EntryType,
    pub data: Vec<u8>,
    pub link: Option<String>,
    pub mode: u32,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Parse PAX records by their length prefix (values may contain newlines, which the
/// `tar` crate's own PAX iterator does not support).
pub fn parse_pax(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|c| *c == b' ').unwrap();
        let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|c| *c == b'=').unwrap();
        out.push((
            String::from_utf8(rec[..eq].to_vec()).unwrap(),
            rec[eq + 1..].to_vec(),
        ));
        data = &data[len..];
    }
    out
}

/// List a tar with the `tar` crate in raw mode (an independent reader), applying PAX and
/// GNU long-name records to the entry that follows them.
pub fn list_tar(tar_bytes: &[u8]) -> Vec<Seen> {
    let mut a = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let entries = a.entries().unwrap().raw(true);
    for e in entries {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let kind = e.header().entry_type();
        let cstr = |d: &[u8]| d[..d.iter().position(|c| *c == 0).unwrap_or(d.len())].to_vec();
        match kind {
            EntryType::XHeader => {
                pax.extend(parse_pax(&data));
                continue;
            }
            EntryType::GNULongName => {
                long_name = Some(cstr(&data));
                continue;
            }
            EntryType::GNULongLink => {
                long_link = Some(cstr(&data));
                continue;
            }
            _ => {}
        }
        let rec = |k: &str| {
            pax.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let path = rec("path")
            .or(long_name.take())
            .unwrap_or_else(|| e.path_bytes().into_owned());
        let link = rec("linkpath")
            .or(long_link.take())
            .or_else(|| e.link_name_bytes().map(|l| l.into_owned()))
            .map(|l| String::from_utf8(l).unwrap());
        let xattrs = pax
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("SCHILY.xattr.")
                    .map(|k| (k.to_string(), v.clone()))
            })
            .collect();
        out.push(Seen {
            path: String::from_utf8(path).unwrap(),
            kind,
            data,
            link,
            mode: e.header().mode().unwrap(),
            mtime: e.header().mtime().unwrap(),
            xattrs,
        });
        pax.clear();
    }
    out
}
