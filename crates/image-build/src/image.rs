//! Image configs and manifests: reading a base image from the store, and writing the
//! result (OCI or Docker media types).

use image_store::ImageStore;
use oci_core::manifest::{DOCKER_MANIFEST, OCI_MANIFEST};
use oci_core::{Descriptor, Digest, ParsedManifest};
use serde_json::{Value, json};

use crate::layer::{Compression, LayerBlob};
use crate::{BuildError, Result};

/// Output format of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI media types.
    Oci,
    /// Docker schema 2 media types.
    Docker,
}

/// An image as the builder sees it: config JSON and layer descriptors.
#[derive(Debug, Clone)]
pub struct Image {
    /// The OCI image config (unknown fields kept).
    pub config: Value,
    /// Layer descriptors, bottom first.
    pub layers: Vec<Descriptor>,
}

impl Image {
    /// An empty image (`FROM scratch`).
    pub fn scratch(os: &str, architecture: &str) -> Image {
        Image {
            config: json!({
                "architecture": architecture,
                "os": os,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": []
            }),
            layers: Vec::new(),
        }
    }

    /// Load an image manifest (not an index) and its config from the store.
    pub fn load(store: &ImageStore, manifest: &Descriptor) -> Result<Image> {
        let body = store.read_blob(&manifest.digest, 4 << 20)?;
        let parsed = ParsedManifest::parse(&body, Some(&manifest.media_type))
            .map_err(|e| BuildError::Invalid(format!("manifest {}: {e}", manifest.digest)))?;
        let config_desc = parsed.config.ok_or_else(|| {
            BuildError::Invalid(format!("{} is not an image manifest", manifest.digest))
        })?;
        let config: Value = serde_json::from_slice(&store.read_blob(&config_desc.digest, 4 << 20)?)
            .map_err(|e| {
                BuildError::Invalid(format!("image config {}: {e}", config_desc.digest))
            })?;
        Ok(Image {
            config,
            layers: parsed.layers,
        })
    }

    /// The layers' uncompressed digests, from the config.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.config
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|d| d.as_str()?.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The runtime config object (`config`), created if absent.
    pub fn runtime(&mut self) -> &mut serde_json::Map<String, Value> {
        if !self.config.get("config").is_some_and(Value::is_object) {
            self.config["config"] = json!({});
        }
        self.config["config"].as_object_mut().expect("object")
    }

    /// An object-valued field of the runtime config (`Labels`, `ExposedPorts`, `Volumes`),
    /// created empty if absent.
    pub fn runtime_map(&mut self, key: &str) -> &mut serde_json::Map<String, Value> {
        let rt = self.runtime();
        if !rt.get(key).is_some_and(Value::is_object) {
            rt.insert(key.into(), json!({}));
        }
        rt.get_mut(key)
            .and_then(Value::as_object_mut)
            .expect("object")
    }

    /// `Env` as `KEY=value` strings.
    pub fn env(&self) -> Vec<String> {
        self.config
            .pointer("/config/Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Set one environment variable (replacing an earlier value).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(format!("{key}={value}"));
        self.runtime().insert("Env".into(), json!(env));
    }

    /// A string field of the runtime config.
    pub fn runtime_str(&self, key: &str) -> Option<String> {
        self.config
            .get("config")?
            .get(key)?
            .as_str()
            .map(str::to_string)
    }

    /// Add a layer and its history entry.
    pub fn push_layer(&mut self, blob: &LayerBlob, media_type: &str, history: Value) {
        self.layers.push(Descriptor {
            media_type: media_type.to_string(),
            digest: blob.digest.clone(),
            size: blob.size,
            urls: None,
            annotations: (!blob.annotations.is_empty()).then(|| blob.annotations.clone()),
            artifact_type: None,
            platform: None,
        });
        let mut diff_ids = self.diff_ids();
        diff_ids.push(blob.diff_id.clone());
        self.config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()});
        self.push_history(history);
    }

    /// Add a history entry.
    pub fn push_history(&mut self, entry: Value) {
        if !self.config.get("history").is_some_and(Value::is_array) {
            self.config["history"] = json!([]);
        }
        self.config["history"]
            .as_array_mut()
            .expect("array")
            .push(entry);
    }
}

/// Write config and manifest into the store; returns the manifest descriptor and the config
/// digest (the image ID).
pub fn write_image(
    store: &ImageStore,
    image: &Image,
    format: Format,
) -> Result<(Descriptor, Digest)> {
    let config_bytes = serde_json::to_vec(&image.config).expect("json serializes");
    let config_digest = store.put_blob(&config_bytes)?;
    let (manifest_type, config_type) = match format {
        Format::Oci => (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json"),
        Format::Docker => (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
        ),
    };
    let layers: Vec<Value> = image
        .layers
        .iter()
        .map(|l| {
            let media_type = match format {
                Format::Oci => oci_layer_type(&l.media_type),
                Format::Docker => docker_layer_type(&l.media_type),
            };
            let mut d =
                json!({"mediaType": media_type, "digest": l.digest.to_string(), "size": l.size});
            if let Some(a) = &l.annotations {
                d["annotations"] = json!(a);
            }
            d
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).expect("json serializes");
    let digest = store.put_blob(&bytes)?;
    Ok((
        Descriptor {
            media_type: manifest_type.to_string(),
            digest,
            size: bytes.len() as u64,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        },
        config_digest,
    ))
}

fn oci_layer_type(mt: &str) -> String {
    match mt {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Compression::Gzip.oci_media_type().into()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => Compression::None.oci_media_type().into(),
        other => other.into(),
    }
}

fn docker_layer_type(mt: &str) -> String {
    match mt {
        "application/vnd.oci.image.layer.v1.tar+gzip" => {
            Compression::Gzip.docker_media_type().expect("gzip").into()
        }
        "application/vnd.oci.image.layer.v1.tar" => {
            Compression::None.docker_media_type().expect("tar").into()
        }
        other => other.into(),
    }
}

/// The chain ID of a list of diff_ids (OCI image spec): identifies a stack of layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut it = diff_ids.iter();
    let mut chain = it.next()?.clone();
    for d in it {
        chain = Digest::sha256_of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        assert_eq!(
            chain_id(&[a.clone(), b.clone()]),
            Some(Digest::sha256_of(format!("{a} {b}").as_bytes()))
        );
    }

    #[test]
    fn env_replaces_earlier_values() {
        let mut i = Image::scratch("linux", "amd64");
        i.set_env("A", "1");
        i.set_env("B", "2");
        i.set_env("A", "3");
        assert_eq!(i.env(), vec!["B=2", "A=3"]);
    }
}
