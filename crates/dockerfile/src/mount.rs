//! `RUN --mount=...` options (BuildKit's `commands_runmount.go` semantics).

use thiserror::Error;

use crate::ast::{Mount, MountType, Sharing};
use crate::expand::ExpandError;

/// An invalid `--mount` option.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MountError {
    /// The CSV list is malformed (bad quoting).
    #[error("failed to parse csv mounts: {0}")]
    Csv(String),
    /// A field without `=` that is not a flag (`ro`, `rw`, `required`).
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    /// `type=` not bind, cache, tmpfs, secret or ssh.
    #[error("unsupported mount type {0:?}")]
    UnsupportedType(String),
    /// `sharing=` not shared, private or locked.
    #[error("unsupported sharing value {0:?}")]
    UnsupportedSharing(String),
    /// An unknown key.
    #[error("unexpected key '{key}' in '{field}'")]
    UnknownKey {
        /// The key.
        key: String,
        /// The whole field.
        field: String,
    },
    /// A key that does not apply to the mount type.
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyNotForType {
        /// The key.
        key: String,
        /// The mount type.
        kind: &'static str,
    },
    /// A value that does not parse (bool, octal mode, id, size).
    #[error("invalid value for {key}: {value}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `from=` with a variable (BuildKit refuses it).
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromVariable,
    /// mode/uid/gid on a bind or tmpfs mount.
    #[error("{key} not allowed for {kind:?} type mounts")]
    FileInfoNotAllowed {
        /// `mode`, `uid` or `gid`.
        key: &'static str,
        /// The mount type.
        kind: &'static str,
    },
    /// A secret mount with from/sharing, or none of source/target/id/env.
    #[error("invalid secret mount: {0}")]
    InvalidSecret(&'static str),
    /// `sharing` on a mount that is not a cache.
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(&'static str),
    /// Variable expansion failed.
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

/// Splits one CSV record like Go's `encoding/csv` (comma separated, `"` quoting, `""` escape).
fn csv_fields(s: &str) -> Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(MountError::Csv(
                            "extraneous or missing \" in quoted-field".into(),
                        ));
                    }
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => {
                            return Err(MountError::Csv(
                                "extraneous or missing \" in quoted-field".into(),
                            ));
                        }
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(MountError::Csv("bare \" in non-quoted-field".into()));
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    Ok(fields)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, MountError> {
    // Go's strconv.ParseBool.
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(MountError::InvalidValue {
            key: key.to_owned(),
            value: v.to_owned(),
        }),
    }
}

/// Parses a size like docker's `units.RAMInBytes`: `512`, `64k`, `1.5g`, `10MiB` (powers of 1024).
pub(crate) fn ram_in_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    if num.is_empty() || !num.as_bytes()[0].is_ascii_digit() || num.ends_with('.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut u = unit.as_str();
    let mult: f64 = match u.chars().next() {
        Some('k') => 1024.0,
        Some('m') => 1024.0 * 1024.0,
        Some('g') => 1024.0f64.powi(3),
        Some('t') => 1024.0f64.powi(4),
        Some('p') => 1024.0f64.powi(5),
        _ => 1.0,
    };
    if mult != 1.0 {
        u = &u[1..];
    }
    let u = u.strip_prefix('i').unwrap_or(u);
    let u = u.strip_prefix('b').unwrap_or(u);
    if !u.is_empty() {
        return None;
    }
    let bytes = value * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return None;
    }
    Some(bytes as u64)
}

impl Mount {
    /// Parses a `--mount` value as written, deferring fields that hold variables.
    pub fn parse(spec: &str) -> Result<Mount, MountError> {
        parse_mount(spec, None)
    }

    /// Parses a `--mount` value expanding every field value (but `from`) with `expand`.
    pub fn parse_expanded(
        spec: &str,
        expand: &dyn Fn(&str) -> Result<String, ExpandError>,
    ) -> Result<Mount, MountError> {
        parse_mount(spec, Some(expand))
    }
}

/// Expands one option value.
type Expander<'a> = &'a dyn Fn(&str) -> Result<String, ExpandError>;

fn parse_mount(spec: &str, expand: Option<Expander<'_>>) -> Result<Mount, MountError> {
    let fields = csv_fields(spec)?;
    let mut m = Mount {
        spec: spec.to_owned(),
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        readonly: false,
        required: false,
        size: None,
        env: None,
        needs_expansion: false,
    };
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" => {
                    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        m.required = true;
                    } else {
                        return Err(MountError::KeyNotForType {
                            key,
                            kind: m.kind.as_str(),
                        });
                    }
                }
                _ => return Err(MountError::NotKeyValue(field.clone())),
            }
            continue;
        };
        let value = if key == "from" {
            if has_variable(value) {
                return Err(MountError::FromVariable);
            }
            value.to_owned()
        } else if let Some(exp) = expand {
            exp(value)?
        } else if has_variable(value) {
            match key.as_str() {
                "source" | "src" | "target" | "dst" | "destination" | "id" | "env" => {
                    value.to_owned()
                }
                _ => {
                    // A typed field with a variable: decided once the value is known.
                    m.needs_expansion = true;
                    continue;
                }
            }
        } else {
            value.to_owned()
        };
        let invalid = |key: &str, value: &str| MountError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(MountError::UnsupportedType(value)),
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" => {
                if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    m.required = parse_bool(&key, &value)?;
                } else {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
            }
            "size" => {
                if m.kind == MountType::Tmpfs {
                    m.size = Some(ram_in_bytes(&value).ok_or_else(|| invalid(&key, &value))?);
                } else {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
            }
            "id" => m.id = Some(value),
            "env" => m.env = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(MountError::UnsupportedSharing(value)),
                })
            }
            "mode" => {
                m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| invalid(&key, &value))?);
            }
            "uid" => m.uid = Some(parse_u32(&value).ok_or_else(|| invalid(&key, &value))?),
            "gid" => m.gid = Some(parse_u32(&value).ok_or_else(|| invalid(&key, &value))?),
            _ => {
                return Err(MountError::UnknownKey {
                    key,
                    field: field.clone(),
                });
            }
        }
    }
    if m.needs_expansion {
        // Type-dependent checks wait until the deferred fields are known.
        return Ok(m);
    }
    validate(&mut m, ro_auto)?;
    Ok(m)
}

fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// BuildKit's check for variables in `from=` (`\$.`), used for every deferred field.
fn has_variable(v: &str) -> bool {
    v.find('$').is_some_and(|i| i + 1 < v.len())
}

fn validate(m: &mut Mount, ro_auto: bool) -> Result<(), MountError> {
    let kind = m.kind.as_str();
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        if m.mode.is_some() {
            return Err(MountError::FileInfoNotAllowed { key: "mode", kind });
        }
        if m.uid.is_some() {
            return Err(MountError::FileInfoNotAllowed { key: "uid", kind });
        }
        if m.gid.is_some() {
            return Err(MountError::FileInfoNotAllowed { key: "gid", kind });
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(MountError::InvalidSecret(
                "secret mount should not have a from",
            ));
        }
        if m.sharing.is_some() {
            return Err(MountError::InvalidSecret(
                "secret mount should not define sharing",
            ));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
            return Err(MountError::InvalidSecret(
                "one of source, target, id or env required",
            ));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountError::InvalidSecret("both source and id can't be set"));
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(MountError::SharingNotCache(kind));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a,b,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(csv_fields("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields("\"x\"\"y\"").unwrap(), ["x\"y"]);
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("512"), Some(512));
        assert_eq!(ram_in_bytes("64k"), Some(65536));
        assert_eq!(ram_in_bytes("1.5g"), Some(1_610_612_736));
        assert_eq!(ram_in_bytes("10MiB"), Some(10 * 1024 * 1024));
        assert_eq!(ram_in_bytes("10 MB"), Some(10 * 1024 * 1024));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("10q"), None);
        assert_eq!(ram_in_bytes(""), None);
    }
}
