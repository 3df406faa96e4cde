//! PAX extended header records, parsed by their length prefix.
//!
//! The `tar` crate splits PAX data on newlines, which misreads binary values (a
//! `security.capability` xattr may contain `\n`) and can let a crafted value smuggle records.
//! This parser follows POSIX: `"%d %s=%s\n"` where the decimal length covers the whole record.

use rustix::fs::Timespec;

/// The PAX records of one entry that this crate uses.
#[derive(Debug, Default, Clone)]
pub(crate) struct PaxRecords {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<Timespec>,
    pub atime: Option<Timespec>,
    /// `SCHILY.xattr.NAME` records: (NAME, value), in archive order, later duplicates replace earlier.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One PAX record: (key, value).
pub(crate) type Record<'a> = (&'a [u8], &'a [u8]);

/// Split raw PAX data into records; `Err` describes malformed data.
pub(crate) fn records(mut data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data
            .iter()
            .take(21)
            .position(|b| *b == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if len <= sp + 1 || len > data.len() {
            return Err(format!("PAX record length {len} out of range"));
        }
        let rec = &data[sp + 1..len];
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or("PAX record not terminated by a newline")?;
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        if eq == 0 {
            return Err("PAX record with an empty key".into());
        }
        out.push((&rec[..eq], &rec[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// Parse the records this crate uses; later records override earlier ones.
pub(crate) fn parse(data: &[u8]) -> Result<PaxRecords, String> {
    let mut r = PaxRecords::default();
    for (key, value) in records(data)? {
        let num = || -> Result<u64, String> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!(
                        "PAX {} value {:?} is not a number",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value)
                    )
                })
        };
        match key {
            b"path" => r.path = Some(value.to_vec()),
            b"linkpath" => r.linkpath = Some(value.to_vec()),
            b"size" => r.size = Some(num()?),
            b"uid" => r.uid = Some(num()?),
            b"gid" => r.gid = Some(num()?),
            b"mtime" => r.mtime = Some(parse_time(value)?),
            b"atime" => r.atime = Some(parse_time(value)?),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if name.is_empty() {
                        return Err("PAX xattr record with an empty name".into());
                    }
                    r.xattrs.retain(|(n, _)| n.as_slice() != name);
                    r.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
        }
    }
    Ok(r)
}

/// The `size` record as the `tar` crate reads it (first well-formed `size` line, newline-split),
/// so the stream guard stays in step with the parser that actually walks the archive.
pub(crate) fn tar_crate_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse::<u64>().ok();
    }
    None
}

/// Parse a PAX time: `[-]seconds[.fraction]`.
pub(crate) fn parse_time(v: &[u8]) -> Result<Timespec, String> {
    let bad = || format!("bad PAX time {:?}", String::from_utf8_lossy(v));
    let s = std::str::from_utf8(v).map_err(|_| bad())?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    let (tv_sec, tv_nsec) = if neg {
        if nanos == 0 {
            (-secs, 0)
        } else {
            (-secs - 1, 1_000_000_000 - nanos)
        }
    } else {
        (secs, nanos)
    };
    Ok(Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &[u8]) -> Vec<u8> {
        let rest = 3 + key.len() + value.len();
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len += 1;
        }
        let mut v = format!("{len} {key}=").into_bytes();
        v.extend_from_slice(value);
        v.push(b'\n');
        assert_eq!(v.len(), len);
        v
    }

    #[test]
    fn binary_values_with_newlines() {
        let mut data = rec(
            "SCHILY.xattr.security.capability",
            b"\x01\n\x02\n30 path=evil\n",
        );
        data.extend(rec("path", b"good/name"));
        data.extend(rec("mtime", b"1700000000.25"));
        data.extend(rec("uid", b"4294967294"));
        let r = parse(&data).unwrap();
        assert_eq!(r.path.as_deref(), Some(&b"good/name"[..]));
        assert_eq!(
            r.xattrs,
            vec![(
                b"security.capability".to_vec(),
                b"\x01\n\x02\n30 path=evil\n".to_vec()
            )]
        );
        assert_eq!(r.uid, Some(4294967294));
        let t = r.mtime.unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 250_000_000));
    }

    #[test]
    fn malformed() {
        assert!(records(b"5 a=b\n").is_err()); // length too short for record
        assert!(records(b"7 a=b\n").is_err()); // length past the end
        assert!(records(b"x a=b\n").is_err());
        assert!(records(b"6 ab\n\n").is_err());
        assert!(records(b"6 =bc\n").is_err());
        assert!(parse(&rec("size", b"12x")).is_err());
        assert!(records(b"").unwrap().is_empty());
    }

    #[test]
    fn times() {
        let t = parse_time(b"-1.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
        let t = parse_time(b"12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        let t = parse_time(b"1.1234567899").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 123_456_789));
        assert!(parse_time(b"").is_err());
        assert!(parse_time(b"1.2.3").is_err());
        assert!(parse_time(b"abc").is_err());
    }
}
