//! Platforms (`os/arch[/variant]`) and picking one manifest from an index.

use std::fmt;
use std::str::FromStr;

use oci_core::Descriptor;

/// A target platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v7`, `v8`, ... when it matters.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this program runs on, in Go's names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an index entry's `platform` matches (a missing variant on either side matches).
    pub fn matches(&self, p: &serde_json::Value) -> bool {
        let get = |k: &str| p.get(k).and_then(|v| v.as_str());
        get("os") == Some(self.os.as_str())
            && get("architecture") == Some(self.architecture.as_str())
            && match (&self.variant, get("variant")) {
                (Some(want), Some(have)) => want == have,
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

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_platform() {
        let d = |arch: &str, variant: Option<&str>, n: u8| -> Descriptor {
            let mut p = serde_json::json!({"os":"linux","architecture":arch});
            if let Some(v) = variant {
                p["variant"] = v.into();
            }
            Descriptor {
                media_type: "m".into(),
                digest: oci_core::Digest::sha256_of(&[n]),
                size: 1,
                urls: None,
                annotations: None,
                artifact_type: None,
                platform: Some(p),
            }
        };
        let list = vec![
            d("arm", Some("v6"), 1),
            d("arm", Some("v7"), 2),
            d("amd64", None, 3),
        ];
        let arm7: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(arm7.select(&list).unwrap().digest, list[1].digest);
        let amd: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(amd.select(&list).unwrap().digest, list[2].digest);
        assert!(
            "linux/s390x"
                .parse::<Platform>()
                .unwrap()
                .select(&list)
                .is_none()
        );
        assert!("linux".parse::<Platform>().is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
