//! RFC 3339 UTC timestamps as the TOC writes them (`2006-01-02T15:04:05Z`), without a date
//! library: Howard Hinnant's civil-from-days algorithms.

/// Days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Format Unix seconds as the TOC `modtime`; `None` for 0, which the TOC leaves out
/// (Go's `formatModtime` treats the zero time and the Unix epoch as unknown).
pub(crate) fn format_modtime(secs: i64) -> Option<String> {
    if secs == 0 {
        return None;
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Parse an RFC 3339 timestamp (`Z` or `±hh:mm`, optional fraction, truncated) to Unix
/// seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let v = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *c == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(format_modtime(0), None);
        assert_eq!(format_modtime(1).unwrap(), "1970-01-01T00:00:01Z");
        assert_eq!(
            format_modtime(1_566_297_043).unwrap(),
            "2019-08-20T10:30:43Z"
        );
        assert_eq!(format_modtime(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(format_modtime(-1).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_modtime(4_102_444_800).unwrap(),
            "2100-01-01T00:00:00Z"
        );
    }

    #[test]
    fn parses_back() {
        for t in [
            1i64,
            1_566_297_043,
            951_782_400,
            -1,
            4_102_444_800,
            1_700_000_000,
        ] {
            assert_eq!(parse_rfc3339(&format_modtime(t).unwrap()), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2019-08-20T12:30:43.5+02:00"),
            Some(1_566_297_043)
        );
        assert_eq!(parse_rfc3339("2019-08-20"), None);
        assert_eq!(parse_rfc3339("2019-13-20T10:30:43Z"), None);
        assert_eq!(parse_rfc3339("2019-08-20T10:30:43"), None);
    }
}
