//! JSON read under fixed bounds, the same when a document is accepted and when it is read
//! back: a document deeper than [`MAX_DEPTH`] is refused at the door, so everything stored
//! can be parsed by every reader (the management API, inspect, the UI).
//!
//! serde_json skips unknown fields without a depth limit but parses values it keeps with a
//! limit of 128 levels; a manifest with a deep unknown field would be accepted by a typed
//! parse and then break a reader that keeps the whole value. [`check_depth`] closes that
//! gap in one pass without allocating.

use serde::de::DeserializeOwned;

/// Deepest nesting of arrays and objects accepted anywhere in a document (serde_json's own
/// limit, 128, leaves headroom above it).
pub const MAX_DEPTH: usize = 64;

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Larger than the reader's limit.
    #[error("JSON document of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The document's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON, or not of the expected shape.
    #[error(transparent)]
    Syntax(#[from] serde_json::Error),
}

/// Check that `bytes` nest no deeper than [`MAX_DEPTH`] (brackets inside strings do not
/// count). It does not validate the syntax otherwise: the parse that follows does.
pub fn check_depth(bytes: &[u8]) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parse `bytes` as `T` within the bounds: at most `limit` bytes and [`MAX_DEPTH`] levels.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, JsonError> {
    if bytes.len() > limit {
        return Err(JsonError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    check_depth(bytes)?;
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    }

    #[test]
    fn depth_is_bounded_and_strings_do_not_count() {
        assert!(check_depth(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(matches!(
            check_depth(nested(MAX_DEPTH + 1).as_bytes()),
            Err(JsonError::TooDeep)
        ));
        assert!(matches!(
            check_depth(nested(5000).as_bytes()),
            Err(JsonError::TooDeep)
        ));
        let in_string = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(check_depth(in_string.as_bytes()).is_ok());
        // Whatever passes the check, serde_json can keep whole.
        let v: serde_json::Value = from_slice(nested(MAX_DEPTH).as_bytes(), 1 << 20).unwrap();
        assert!(v.is_object());
    }

    #[test]
    fn size_is_bounded() {
        let e = from_slice::<serde_json::Value>(b"[1,2,3]", 3).unwrap_err();
        assert!(matches!(e, JsonError::TooLarge { size: 7, limit: 3 }));
        assert!(matches!(
            from_slice::<serde_json::Value>(b"{", 10),
            Err(JsonError::Syntax(_))
        ));
    }
}
