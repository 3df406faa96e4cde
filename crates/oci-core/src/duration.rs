//! Durations in configuration files, environment variables and flags: `500ms`, `30s`,
//! `10m`, `1h30m`, `7d` (humantime's syntax, as Distribution's Go durations plus days), or a
//! bare number of seconds. (Dockerfile flags such as `HEALTHCHECK --interval` follow Go's
//! `time.ParseDuration` exactly; the `dockerfile` crate parses those.)

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid duration {0:?}: expected e.g. 500ms, 30s, 10m, 1h30m, 7d or a number of seconds")]
pub struct DurationError(pub String);

/// Parse a duration (see the module documentation).
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| DurationError(s.to_string()));
    }
    humantime::parse_duration(t).map_err(|_| DurationError(s.to_string()))
}

/// Parse an optional duration: `None` for `off`, `0` or an empty value.
pub fn parse_optional(s: &str) -> Result<Option<Duration>, DurationError> {
    match s.trim() {
        "" | "off" => Ok(None),
        t => parse(t).map(|d| (!d.is_zero()).then_some(d)),
    }
}

/// A serde field holding a duration: a string as [`parse`] reads it, or a number of
/// seconds.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Seconds(u64),
        Text(String),
    }
    match Value::deserialize(d)? {
        Value::Seconds(s) => Ok(Duration::from_secs(s)),
        Value::Text(t) => parse(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_the_configuration_uses() {
        let secs = |s: &str| parse(s).unwrap().as_secs();
        assert_eq!(secs("10m"), 600);
        assert_eq!(secs("2"), 2);
        assert_eq!(secs(" 30s "), 30);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("168h"), 604_800);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(parse("500ms").unwrap().as_millis(), 500);
        for bad in ["ten", "", "5 parsecs", "-1s"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_optional("off").unwrap(), None);
        assert_eq!(parse_optional("0").unwrap(), None);
        assert_eq!(parse_optional("").unwrap(), None);
        assert_eq!(
            parse_optional("1h").unwrap(),
            Some(Duration::from_secs(3600))
        );
        #[derive(Deserialize)]
        struct C {
            #[serde(deserialize_with = "deserialize")]
            d: Duration,
        }
        let c: C = serde_json::from_str(r#"{"d": 5}"#).unwrap();
        assert_eq!(c.d, Duration::from_secs(5));
        let c: C = serde_json::from_str(r#"{"d": "2m"}"#).unwrap();
        assert_eq!(c.d, Duration::from_secs(120));
        assert!(serde_json::from_str::<C>(r#"{"d": "soon"}"#).is_err());
    }
}
