//! The architecture's rules, checked: which workspace crate may depend on which (the table
//! in ARCHITECTURE.md, "Who may call whom"), and that registry content is written only
//! through `registry-core`.
//!
//! `cargo test -p test-support --test layers` is the command that shows a manifest PUT, a
//! pull-through miss and a build never climb back up a layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each workspace crate and the workspace crates its code may use (dev-dependencies are
/// free). A lower layer never names a higher one.
const ALLOWED: &[(&str, &[&str])] = &[
    // Shared vocabulary and leaves.
    ("oci-core", &[]),
    ("fs-confine", &[]),
    ("go-filepath", &[]),
    ("dockerfile", &["oci-core", "go-filepath"]),
    ("test-support", &["oci-core"]),
    // The registry, bottom up: stores, then the service, then its front ends.
    ("registry-storage", &["oci-core"]),
    ("registry-meta", &["oci-core"]),
    ("registry-coord", &["oci-core"]),
    ("registry-auth", &["oci-core"]),
    (
        "registry-core",
        &[
            "oci-core",
            "registry-storage",
            "registry-meta",
            "registry-coord",
        ],
    ),
    (
        "registry-api",
        &[
            "oci-core",
            "registry-core",
            "registry-auth",
            "registry-storage",
            "registry-meta",
            "registry-coord",
        ],
    ),
    (
        "registry-gc",
        &[
            "oci-core",
            "registry-core",
            "registry-meta",
            "registry-storage",
        ],
    ),
    (
        "registry-mgmt",
        &[
            "oci-core",
            "registry-core",
            "registry-api",
            "registry-auth",
            "registry-meta",
            "registry-storage",
        ],
    ),
    (
        "registry-external",
        &[
            "oci-core",
            "oci-client",
            "registry-core",
            "registry-api",
            "registry-meta",
            "registry-storage",
        ],
    ),
    (
        "hyperregistry",
        &[
            "oci-core",
            "registry-api",
            "registry-auth",
            "registry-coord",
            "registry-core",
            "registry-external",
            "registry-gc",
            "registry-meta",
            "registry-mgmt",
            "registry-storage",
        ],
    ),
    // Clients, images and builds.
    ("oci-client", &["oci-core"]),
    ("image-store", &["oci-core"]),
    ("image-unpack", &["oci-core", "fs-confine"]),
    ("image-transfer", &["oci-core", "oci-client", "image-store"]),
    ("estargz", &["oci-core"]),
    (
        "image-build",
        &[
            "oci-core",
            "dockerfile",
            "estargz",
            "fs-confine",
            "image-store",
            "image-unpack",
        ],
    ),
    (
        "hyperbuild",
        &[
            "oci-core",
            "oci-client",
            "dockerfile",
            "image-build",
            "image-store",
            "image-transfer",
            "image-unpack",
        ],
    ),
    (
        "starget",
        &[
            "oci-core",
            "oci-client",
            "estargz",
            "fs-confine",
            "go-filepath",
        ],
    ),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support sits two levels down")
        .to_path_buf()
}

/// Every workspace crate and the workspace crates it depends on (normal and build
/// dependencies), from `cargo metadata`.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|n| names.contains(n))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let graph = dependency_graph();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(c, deps)| (*c, deps.iter().copied().collect()))
        .collect();
    let mut wrong = Vec::new();
    for (krate, deps) in &graph {
        let Some(ok) = allowed.get(krate.as_str()) else {
            wrong.push(format!("{krate} is not in the layer table"));
            continue;
        };
        for d in deps {
            if !ok.contains(d.as_str()) {
                wrong.push(format!("{krate} depends on {d}"));
            }
        }
    }
    for krate in allowed.keys() {
        if !graph.contains_key(*krate) {
            wrong.push(format!(
                "{krate} is in the layer table but not in the workspace"
            ));
        }
    }
    println!("{} crates checked against the layer table", graph.len());
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// Writes to registry content: the `MetaStore` and `BlobStore` methods that change what a
/// repository serves.
const CONTENT_WRITES: &[&str] = &[
    ".link_blob(",
    ".unlink_blob(",
    ".put_manifest(",
    ".put_cached_manifest(",
    ".delete_manifest(",
    ".delete_tag(",
    ".delete_repository(",
    ".create_upload(",
    ".delete_upload(",
    ".touch_blob(",
    ".set_proxy_tag_checked(",
    ".gc_delete_manifest(",
    ".gc_unlink_blob(",
    ".gc_delete_blob(",
    ".put_bytes(",
    ".append_upload(",
    ".append_upload_sized(",
    ".commit_upload(",
    ".cancel_upload(",
    ".sweep_unreferenced(",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test part of a source file (everything before its `#[cfg(test)]` module).
fn non_test_source(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[test]
fn registry_content_is_written_only_through_registry_core() {
    let root = workspace_root();
    let mut wrong = Vec::new();
    let mut files = 0;
    for krate in [
        "registry-api",
        "registry-mgmt",
        "registry-external",
        "registry-gc",
        "hyperregistry",
    ] {
        let mut sources = Vec::new();
        rust_files(&root.join("crates").join(krate).join("src"), &mut sources);
        for path in sources {
            files += 1;
            let text = non_test_source(&path);
            for (n, line) in text.lines().enumerate() {
                // A Repository's own operations carry the same names; the stores are
                // reached as `meta`/`blobs` (fields, getters or locals).
                let store_call = line.contains("meta") || line.contains("blobs");
                for write in CONTENT_WRITES {
                    if store_call && line.contains(write) {
                        wrong.push(format!(
                            "{}:{}: {}",
                            path.strip_prefix(&root).unwrap().display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    println!("{files} source files of the registry's front ends checked");
    assert!(
        wrong.is_empty(),
        "content written past registry-core:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_pull_through_cache_and_replication_never_call_the_http_layer() {
    let root = workspace_root();
    for file in ["proxy.rs", "replicate.rs"] {
        let path = root.join("crates/registry-external/src").join(file);
        let text = non_test_source(&path);
        assert!(
            !text.contains("registry_api"),
            "{file} reaches into registry-api; it must go through registry-core"
        );
    }
    let core = root.join("crates/registry-core/Cargo.toml");
    let manifest = std::fs::read_to_string(core).unwrap();
    for http in ["axum", "hyper", "tower", "reqwest"] {
        assert!(
            !manifest.lines().any(|l| l.starts_with(http)),
            "registry-core depends on {http}: it must stay HTTP-free"
        );
    }
}
