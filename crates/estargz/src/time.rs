//! The TOC's `modtime`: RFC 3339 in UTC ([`oci_core::time`]), left out for 0.

/// Format Unix seconds as the TOC `modtime`; `None` for 0, which the TOC leaves out
/// (Go's `formatModtime` treats the zero time and the Unix epoch as unknown).
pub(crate) fn format_modtime(secs: i64) -> Option<String> {
    (secs != 0).then(|| oci_core::time::rfc3339(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_left_out() {
        assert_eq!(format_modtime(0), None);
        assert_eq!(format_modtime(1).as_deref(), Some("1970-01-01T00:00:01Z"));
    }
}
