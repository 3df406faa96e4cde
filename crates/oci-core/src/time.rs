//! RFC 3339 timestamps in UTC (`2006-01-02T15:04:05Z`), the form OCI configs, eStargz TOCs,
//! webhook envelopes and the management API carry.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix seconds as RFC 3339 in UTC, whole seconds; a time outside years 0 to 9999 is
/// clamped to the nearest end of that range.
pub fn rfc3339(secs: i64) -> String {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN: i64 = -62_167_219_200;
    const MAX: i64 = 253_402_300_799;
    OffsetDateTime::from_unix_timestamp(secs.clamp(MIN, MAX))
        .expect("within the representable range")
        .format(&Rfc3339)
        .expect("years 0 to 9999 format as RFC 3339")
}

/// Parse an RFC 3339 timestamp (`Z` or `±hh:mm`, an optional fraction, which is dropped)
/// to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_back_like_go() {
        for (t, s) in [
            (0, "1970-01-01T00:00:00Z"),
            (1, "1970-01-01T00:00:01Z"),
            (1_566_297_043, "2019-08-20T10:30:43Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
        ] {
            assert_eq!(rfc3339(t), s);
            assert_eq!(parse_rfc3339(s), Some(t));
        }
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(
            parse_rfc3339("2019-08-20T12:30:43.5+02:00"),
            Some(1_566_297_043)
        );
        for bad in [
            "",
            "2019-08-20",
            "2019-13-01T00:00:00Z",
            "2019-08-20T10:30:43",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
