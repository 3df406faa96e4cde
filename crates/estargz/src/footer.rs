//! The footer: an empty gzip member whose Extra field holds the TOC offset.
//!
//! eStargz (51 bytes): gzip header `1f 8b 08 04 00000000 00 ff`, XLEN = 26, subfield
//! `S` `G` with LEN = 22 and payload `%016xSTARGZ`, an empty final stored deflate block
//! `01 00 00 ff ff`, CRC32 = 0, ISIZE = 0. Legacy stargz (47 bytes) has XLEN = 22 and the
//! bare `%016xSTARGZ` as Extra field. Both are exactly what Go's `compress/gzip` writes at
//! `gzip.NoCompression`, which the Go implementation uses.

use crate::{Error, FOOTER_SIZE, LEGACY_FOOTER_SIZE};

const MAGIC: &[u8; 6] = b"STARGZ";
/// 16 hex digits + `STARGZ`.
const PAYLOAD_LEN: usize = 22;
/// Empty final stored block, then CRC32 = 0 and ISIZE = 0.
const EMPTY_BODY: [u8; 13] = [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];

/// A parsed footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Offset of the TOC gzip member in the blob.
    pub toc_offset: u64,
    /// Length of the footer: [`FOOTER_SIZE`] (eStargz) or [`LEGACY_FOOTER_SIZE`] (stargz).
    pub size: u64,
}

fn gzip_header(xlen: u16) -> [u8; 12] {
    let x = xlen.to_le_bytes();
    [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0x00, 0xff, x[0], x[1]]
}

fn payload(toc_offset: u64) -> String {
    format!("{toc_offset:016x}STARGZ")
}

/// The 51-byte eStargz footer pointing at `toc_offset`.
pub fn footer_bytes(toc_offset: u64) -> [u8; FOOTER_SIZE as usize] {
    let mut out = [0u8; FOOTER_SIZE as usize];
    out[..12].copy_from_slice(&gzip_header(4 + PAYLOAD_LEN as u16));
    out[12..16].copy_from_slice(&[b'S', b'G', PAYLOAD_LEN as u8, 0]);
    out[16..38].copy_from_slice(payload(toc_offset).as_bytes());
    out[38..].copy_from_slice(&EMPTY_BODY);
    out
}

/// The 47-byte legacy stargz footer pointing at `toc_offset` (for tests and tools; writers
/// produce [`footer_bytes`]).
pub fn legacy_footer_bytes(toc_offset: u64) -> [u8; LEGACY_FOOTER_SIZE as usize] {
    let mut out = [0u8; LEGACY_FOOTER_SIZE as usize];
    out[..12].copy_from_slice(&gzip_header(PAYLOAD_LEN as u16));
    out[12..34].copy_from_slice(payload(toc_offset).as_bytes());
    out[34..].copy_from_slice(&EMPTY_BODY);
    out
}

/// Checks the fixed gzip header of a footer and returns its Extra field.
fn extra_field(p: &[u8], xlen: usize) -> Result<&[u8], String> {
    if p[0] != 0x1f || p[1] != 0x8b {
        return Err("no gzip magic".into());
    }
    if p[2] != 0x08 {
        return Err(format!("gzip compression method {} is not deflate", p[2]));
    }
    if p[3] & 0x04 == 0 {
        return Err("gzip header has no Extra field".into());
    }
    let got = u16::from_le_bytes([p[10], p[11]]) as usize;
    if got != xlen {
        return Err(format!("gzip Extra field is {got} bytes, expected {xlen}"));
    }
    Ok(&p[12..12 + xlen])
}

/// `%016xSTARGZ` → offset.
fn parse_payload(s: &[u8]) -> Result<u64, String> {
    if s.len() != PAYLOAD_LEN || &s[16..] != MAGIC {
        return Err("STARGZ magic not found".into());
    }
    let hex = std::str::from_utf8(&s[..16])
        .ok()
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("TOC offset is not hexadecimal")?;
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|v| *v <= i64::MAX as u64)
        .ok_or_else(|| "TOC offset out of range".to_string())
}

fn parse_estargz(p: &[u8]) -> Result<u64, String> {
    let extra = extra_field(p, 4 + PAYLOAD_LEN)?;
    if extra[0] != b'S' || extra[1] != b'G' {
        return Err(format!(
            "subfield ID {:?}{:?}, expected \"SG\"",
            extra[0] as char, extra[1] as char
        ));
    }
    let len = u16::from_le_bytes([extra[2], extra[3]]) as usize;
    if len != PAYLOAD_LEN {
        return Err(format!("subfield is {len} bytes, expected {PAYLOAD_LEN}"));
    }
    parse_payload(&extra[4..])
}

fn parse_legacy(p: &[u8]) -> Result<u64, String> {
    parse_payload(extra_field(p, PAYLOAD_LEN)?)
}

/// Parse the footer at the end of `tail` (the last bytes of a blob, at least
/// [`LEGACY_FOOTER_SIZE`] of them): the 51-byte eStargz form is tried first, then the
/// 47-byte legacy stargz form, as the Go reader does.
pub fn parse_footer(tail: &[u8]) -> Result<Footer, Error> {
    let mut reasons = Vec::new();
    let n = tail.len();
    if n >= FOOTER_SIZE as usize {
        match parse_estargz(&tail[n - FOOTER_SIZE as usize..]) {
            Ok(toc_offset) => {
                return Ok(Footer {
                    toc_offset,
                    size: FOOTER_SIZE,
                });
            }
            Err(e) => reasons.push(format!("eStargz: {e}")),
        }
    }
    if n >= LEGACY_FOOTER_SIZE as usize {
        match parse_legacy(&tail[n - LEGACY_FOOTER_SIZE as usize..]) {
            Ok(toc_offset) => {
                return Ok(Footer {
                    toc_offset,
                    size: LEGACY_FOOTER_SIZE,
                });
            }
            Err(e) => reasons.push(format!("legacy stargz: {e}")),
        }
    } else {
        reasons.push(format!(
            "{n} bytes is shorter than any footer ({LEGACY_FOOTER_SIZE})"
        ));
    }
    Err(Error::InvalidFooter(reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The footer Go's `footerBytes(0x1234)` produces, written out from the Go source:
    /// `gzip.NewWriterLevel(buf, gzip.NoCompression)` with `Header.Extra` set and nothing
    /// else, then `Close`. Header: ID1 ID2 CM=8 FLG=FEXTRA MTIME=0 XFL=0 (not Best*) OS=255.
    #[test]
    fn footer_matches_go_bytes() {
        let mut want = vec![0x1f, 0x8b, 0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff];
        want.extend_from_slice(&[26, 0]); // XLEN
        want.extend_from_slice(&[b'S', b'G', 22, 0]); // SI1 SI2 LEN
        want.extend_from_slice(b"0000000000001234STARGZ");
        want.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]); // final empty stored block
        want.extend_from_slice(&[0; 8]); // CRC32, ISIZE
        let got = footer_bytes(0x1234);
        assert_eq!(got.len(), 51);
        assert_eq!(&got[..], &want[..]);
        assert_eq!(
            parse_footer(&got).unwrap(),
            Footer {
                toc_offset: 0x1234,
                size: 51
            }
        );
    }

    #[test]
    fn footer_is_a_valid_empty_gzip_member() {
        let f = footer_bytes(987_654_321);
        let mut d = flate2::read::GzDecoder::new(&f[..]);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        let h = d.header().unwrap();
        let mut extra = vec![b'S', b'G', 22, 0];
        extra.extend_from_slice(format!("{:016x}STARGZ", 987_654_321u64).as_bytes());
        assert_eq!(h.extra().unwrap(), &extra[..]);

        let l = legacy_footer_bytes(42);
        let mut d = flate2::read::GzDecoder::new(&l[..]);
        d.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(
            d.header().unwrap().extra().unwrap(),
            b"000000000000002aSTARGZ"
        );
    }

    #[test]
    fn parses_both_forms_over_many_offsets() {
        // As Go's TestGzipFooter: offsets 0..=200000 step 1023, both forms.
        let mut off = 0u64;
        while off <= 200_000 {
            assert_eq!(parse_footer(&footer_bytes(off)).unwrap().toc_offset, off);
            let legacy = parse_footer(&legacy_footer_bytes(off)).unwrap();
            assert_eq!((legacy.toc_offset, legacy.size), (off, 47));
            off += 1023;
        }
        // A legacy footer preceded by other bytes (a 51-byte tail) still parses.
        let mut tail = vec![0xaa; 4];
        tail.extend_from_slice(&legacy_footer_bytes(77));
        assert_eq!(
            parse_footer(&tail).unwrap(),
            Footer {
                toc_offset: 77,
                size: 47
            }
        );
        // Uppercase hex, as Go's strconv.ParseInt accepts.
        let mut upper = footer_bytes(0xabc);
        upper[16..32].copy_from_slice(b"0000000000000ABC");
        assert_eq!(parse_footer(&upper).unwrap().toc_offset, 0xabc);
    }

    #[test]
    fn rejects_malformed_footers() {
        let good = footer_bytes(100);
        for (i, mutate) in [
            (0usize, 0x00u8), // magic
            (2, 0x07),        // method
            (3, 0x00),        // no FEXTRA
            (10, 25),         // XLEN
            (12, b'X'),       // SI1
            (14, 21),         // LEN
            (20, b'g'),       // non-hex offset digit
            (33, b'X'),       // magic string
        ] {
            let mut bad = good;
            bad[i] = mutate;
            assert!(
                matches!(parse_footer(&bad), Err(Error::InvalidFooter(_))),
                "byte {i} = {mutate:#x} accepted"
            );
        }
        assert!(matches!(
            parse_footer(&good[..40]),
            Err(Error::InvalidFooter(_))
        ));
        assert!(matches!(
            parse_footer(&[0u8; 60]),
            Err(Error::InvalidFooter(_))
        ));
    }
}
