//! Platforms (`os/architecture[/variant]`), with containerd's normalisation of names
//! (`aarch64` → `arm64` with no variant, `armhf` → `arm/v7`, `x86_64` → `amd64`), and
//! choosing one manifest of an index for a platform.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Descriptor;

/// An OCI platform: `os/architecture[/variant]` with Go names (`linux/arm64`, `linux/arm/v7`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`, `windows`, ...
    #[serde(default)]
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, ...
    #[serde(default)]
    pub architecture: String,
    /// `v7`, `v6`, `v8`, ... when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `os.version` of an index entry (Windows builds).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features` of an index entry.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

/// A platform string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid platform {0:?}: expected os[/arch[/variant]] or arch")]
pub struct PlatformError(pub String);

const KNOWN_OS: [&str; 12] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "linux",
    "netbsd",
    "openbsd",
    "solaris",
    "windows",
];

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.map(str::to_ascii_lowercase);
    match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "i386" | "386" => ("386".into(), None),
        "aarch64" | "arm64" => ("arm64".into(), variant.filter(|v| v != "v8" && v != "8")),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7",
                Some("5") | Some("v5") => "v5",
                Some("6") | Some("v6") => "v6",
                Some("8") | Some("v8") => "v8",
                Some(other) => other,
            };
            ("arm".into(), Some(v.to_owned()))
        }
        other => (other.to_owned(), variant),
    }
}

impl Platform {
    /// Parses `linux/arm64`, `linux/arm/v7`, `windows/amd64`, or a lone `arm64` / `linux`
    /// (the missing part taken from the host), normalizing aliases like containerd does.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let lower = s.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        }) {
            return Err(PlatformError(s.to_owned()));
        }
        let host = Platform::host();
        let (os, arch, variant) = match parts.as_slice() {
            [one] if KNOWN_OS.contains(one) => (
                one.to_string(),
                host.architecture.clone(),
                host.variant.clone(),
            ),
            [one] => ("linux".to_owned(), one.to_string(), None),
            [os, arch] => (os.to_string(), arch.to_string(), None),
            [os, arch, variant] => (os.to_string(), arch.to_string(), Some(variant.to_string())),
            _ => return Err(PlatformError(s.to_owned())),
        };
        let (architecture, variant) = normalize_arch(&arch, variant.as_deref());
        Ok(Platform {
            os,
            architecture,
            variant,
            ..Platform::default()
        })
    }

    /// The platform this program runs on, with Go's architecture names.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: arch.to_owned(),
            variant: variant.map(str::to_owned),
            ..Platform::default()
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Whether an index entry's `platform` is this platform: os and architecture after
    /// normalisation, and the variant when both sides name one.
    pub fn matches(&self, p: &Platform) -> bool {
        if p.os.is_empty() || p.architecture.is_empty() {
            return false;
        }
        let (arch, variant) =
            normalize_arch(&p.architecture.to_ascii_lowercase(), p.variant.as_deref());
        p.os.eq_ignore_ascii_case(&self.os)
            && arch == self.architecture
            && match (&self.variant, variant) {
                (Some(want), Some(have)) => *want == have,
                _ => true,
            }
    }

    /// The first entry of an index for this platform.
    pub fn select<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| self.matches(p)))
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        let p = Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
            ..Platform::default()
        };
        Descriptor {
            media_type: "m".into(),
            digest: crate::Digest::sha256_of(&[n]),
            size: 1,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: Some(p),
        }
    }

    #[test]
    fn names_are_normalised_as_containerd_does() {
        let p = |s: &str| Platform::parse(s).unwrap().to_string();
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("Linux/X86_64"), "linux/amd64");
        assert_eq!(p("arm64"), "linux/arm64");
        assert!(Platform::parse("linux//v7").is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
        assert_ne!(
            Platform::host().variant.as_deref(),
            Some("v8"),
            "arm64 has no variant"
        );
    }

    #[test]
    fn an_index_entry_is_chosen_by_normalised_platform() {
        let list = vec![
            entry("arm", Some("v6"), 1),
            entry("arm", Some("v7"), 2),
            entry("amd64", None, 3),
            entry("arm64", Some("v8"), 4),
        ];
        let pick = |s: &str| {
            Platform::parse(s)
                .unwrap()
                .select(&list)
                .map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux/arm/v7"), Some(list[1].digest.clone()));
        assert_eq!(pick("linux/amd64"), Some(list[2].digest.clone()));
        assert_eq!(pick("linux/aarch64"), Some(list[3].digest.clone()));
        assert_eq!(pick("linux/arm64/v8"), Some(list[3].digest.clone()));
        assert_eq!(pick("linux/s390x"), None);
    }
}
