//! Executing steps of one stage: metadata steps change the config; RUN and COPY/ADD steps
//! run over an overlay of the stage's layers so far and turn the upper directory into a
//! layer, or reuse the cached layer for the same key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image_store::ImageStore;
use oci_core::Digest;
use serde_json::json;

use crate::cache::{BuildCache, CachedLayer, chain};
use crate::fsops::{self, Attrs};
use crate::image::{Format, Image};
use crate::layer::{Compression, LayerOptions, write_layer};
use crate::overlay::Overlay;
use crate::sandbox::{self, Bind, Network, RunSpec};
use crate::{BuildError, Result, users};

/// Options shared by every step of a build.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// Layer compression.
    pub compression: Compression,
    /// Output media types.
    pub format: Format,
    /// SOURCE_DATE_EPOCH: clamps file mtimes and timestamps.
    pub epoch: Option<i64>,
    /// Do not look up the cache.
    pub no_cache: bool,
    /// `created` of history entries and the image.
    pub created: String,
}

/// Shared state of a build: where things go and how output is shown.
pub struct Builder {
    /// The image store.
    pub store: Arc<ImageStore>,
    /// The step cache.
    pub cache: BuildCache,
    /// Where base root filesystems are unpacked.
    pub rootfs_dir: PathBuf,
    /// Step options.
    pub opts: StepOptions,
    /// Receives progress and RUN output lines.
    pub echo: Arc<dyn Fn(&str) + Send + Sync>,
}

/// A stage being built.
#[derive(Clone)]
pub struct Stage {
    /// The image so far.
    pub image: Image,
    /// The unpacked base image, bottom lower dir.
    pub base_rootfs: Option<PathBuf>,
    /// Snapshots of this build's layers, bottom first.
    pub lowers: Vec<PathBuf>,
    /// Cache key of the state so far.
    pub key: Digest,
    /// Steps answered from the cache.
    pub cached: usize,
    /// Steps executed.
    pub executed: usize,
    /// `created` of the newest layer so far: metadata steps and the image take it.
    pub last_created: String,
}

impl Stage {
    /// Lower dirs for an overlay: topmost first.
    pub fn lower_stack(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.lowers.iter().rev().cloned().collect();
        v.extend(self.base_rootfs.iter().cloned());
        v
    }
}

/// What a RUN step executes.
#[derive(Debug, Clone)]
pub struct RunParams {
    /// Full argv (shell form already wrapped in the SHELL).
    pub argv: Vec<String>,
    /// Environment (`KEY=value`).
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// `USER` value (empty: root).
    pub user: String,
    /// Network mode.
    pub network: Network,
    /// Extra bind mounts.
    pub binds: Vec<Bind>,
    /// Extra tmpfs mounts.
    pub tmpfs: Vec<String>,
}

/// One item of a COPY/ADD: a host path copied to a destination inside the root.
#[derive(Debug, Clone)]
pub struct CopyItem {
    /// Source on the host (a context file, a path in another stage's root, a download).
    pub source: PathBuf,
    /// Destination path inside the root (absolute).
    pub dest: String,
    /// Copy a directory's contents rather than the directory itself.
    pub contents: bool,
}

/// A COPY/ADD.
#[derive(Debug, Clone)]
pub struct CopyParams {
    /// What to copy.
    pub items: Vec<CopyItem>,
    /// `--chown` value.
    pub chown: Option<String>,
    /// `--chmod` bits.
    pub chmod: Option<u32>,
    /// Tarballs to extract at a destination (ADD of a local archive).
    pub extract: Vec<(PathBuf, String)>,
    /// `--link`: the layer is made on an empty root, independent of the layers below.
    pub link: bool,
}

/// Why a step failed, with what the user needs to see.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepFailed {
    /// One-line summary.
    pub message: String,
    /// Exit code of a RUN.
    pub code: Option<i32>,
    /// The last lines of output.
    pub output: String,
}

impl Builder {
    fn history(&self, created: &str, created_by: &str, empty: bool) -> serde_json::Value {
        let mut h = json!({"created": created, "created_by": created_by});
        if empty {
            h["empty_layer"] = json!(true);
        }
        h
    }

    /// Start a stage from an image already in the store (`base_key` identifies it).
    pub fn stage(&self, image: Image, base_key: Digest) -> Result<Stage> {
        let base_rootfs = crate::rootfs::base_rootfs(&self.store, &image, &self.rootfs_dir)?;
        let last_created = match self.opts.epoch {
            Some(_) => self.opts.created.clone(),
            None => image
                .config
                .get("created")
                .and_then(|c| c.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| self.opts.created.clone()),
        };
        Ok(Stage {
            image,
            base_rootfs,
            lowers: Vec::new(),
            key: base_key,
            cached: 0,
            executed: 0,
            last_created,
        })
    }

    /// A step that only changes the config.
    pub fn metadata(
        &self,
        st: &mut Stage,
        desc: &str,
        created_by: &str,
        f: impl FnOnce(&mut Image),
    ) {
        st.key = chain(&st.key, desc);
        f(&mut st.image);
        let h = self.history(&st.last_created, created_by, true);
        st.image.push_history(h);
    }

    /// A step producing a layer: `action` gets the merged root, the upper directory and
    /// the scratch directory. Returns whether the cache answered.
    fn layered(
        &self,
        st: &mut Stage,
        desc: &str,
        created_by: &str,
        action: impl FnOnce(&Path, &Path, &Path) -> Result<()>,
    ) -> Result<bool> {
        self.layered_with(st, desc, created_by, false, action)
    }

    /// [`layered`](Self::layered); an `independent` step (`COPY --link`) sees an empty root,
    /// so its layer and its cache entry do not depend on the layers below it.
    fn layered_with(
        &self,
        st: &mut Stage,
        desc: &str,
        created_by: &str,
        independent: bool,
        action: impl FnOnce(&Path, &Path, &Path) -> Result<()>,
    ) -> Result<bool> {
        // The layer's bytes depend on the compression too.
        let step = format!("{desc} compression={:?}", self.opts.compression);
        let (key, next_key) = if independent {
            let key = chain(&Digest::sha256_of(b"independent layer"), &step);
            let next = chain(&st.key, &format!("link {key}"));
            (key, next)
        } else {
            let key = chain(&st.key, &step);
            (key.clone(), key)
        };
        let media_type = match self.opts.format {
            Format::Oci => self.opts.compression.oci_media_type(),
            Format::Docker => self
                .opts
                .compression
                .docker_media_type()
                .ok_or_else(|| BuildError::Invalid("zstd layers need --format oci".into()))?,
        };
        if !self.opts.no_cache
            && let Some(hit) = self.cache.get(&key, &self.store)
        {
            st.lowers.push(self.cache.snapshot(&key));
            if !hit.created.is_empty() && self.opts.epoch.is_none() {
                st.last_created = hit.created.clone();
            }
            let h = self.history(&st.last_created, created_by, false);
            st.image.push_layer(&hit.blob(), &hit.media_type, h);
            st.key = next_key;
            st.cached += 1;
            return Ok(true);
        }
        let tmp = self.cache.tmp_dir(key.hex());
        let _ = std::fs::remove_dir_all(&tmp);
        let upper = tmp.join("upper");
        let lowers = if independent {
            Vec::new()
        } else {
            st.lower_stack()
        };
        let overlay = Overlay::mount(&lowers, &upper, &tmp.join("work"), &tmp.join("merged"))?;
        let result = action(overlay.path(), &upper, &tmp);
        overlay.unmount()?;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let blob = write_layer(
            &self.store,
            &upper,
            LayerOptions {
                compression: self.opts.compression,
                epoch: self.opts.epoch,
            },
        )?;
        let entry = CachedLayer {
            digest: blob.digest.clone(),
            size: blob.size,
            diff_id: blob.diff_id.clone(),
            media_type: media_type.to_string(),
            created: self.opts.created.clone(),
            annotations: blob.annotations.clone(),
        };
        let snapshot = self.cache.put(&key, &upper, &entry)?;
        let _ = std::fs::remove_dir_all(&tmp);
        st.lowers.push(snapshot);
        st.last_created = self.opts.created.clone();
        let h = self.history(&st.last_created, created_by, false);
        st.image.push_layer(&blob, media_type, h);
        st.key = next_key;
        st.executed += 1;
        Ok(false)
    }

    /// Execute a RUN step. Fails with [`StepFailed`] (inside `BuildError::Invalid`'s
    /// message) when the command exits non-zero.
    pub fn run(
        &self,
        st: &mut Stage,
        desc: &str,
        created_by: &str,
        p: &RunParams,
    ) -> std::result::Result<bool, RunError> {
        let echo = self.echo.clone();
        let mut failure: Option<StepFailed> = None;
        let cached = self.layered(st, desc, created_by, |merged, upper, tmp| {
            let ids = if p.user.is_empty() {
                users::Ids {
                    uid: 0,
                    gid: 0,
                    groups: vec![],
                }
            } else {
                users::resolve(merged, &p.user)?
            };
            let cwd_in_root = fsops::resolve_in_root(merged, &fsops::clean_in_root(&p.cwd))?;
            if !cwd_in_root.exists() {
                fsops::mkdir_p(&cwd_in_root)?;
            }
            // Mount targets that do not exist are created for the run and removed after it
            // (with the parents created for them), so they do not end up in the layer.
            let mut created: Vec<PathBuf> = Vec::new();
            let targets = p
                .binds
                .iter()
                .map(|b| (b.target.as_str(), b.source.is_dir()))
                .chain(p.tmpfs.iter().map(|t| (t.as_str(), true)));
            for (target, is_dir) in targets {
                let rel = fsops::clean_in_root(target);
                let mut missing = Vec::new();
                let mut anc = rel.clone();
                while !anc.as_os_str().is_empty()
                    && std::fs::symlink_metadata(merged.join(&anc)).is_err()
                {
                    missing.push(anc.clone());
                    anc = anc.parent().map(Path::to_path_buf).unwrap_or_default();
                }
                let t = fsops::resolve_in_root(merged, &rel)?;
                if !t.exists() {
                    if is_dir {
                        fsops::mkdir_p(&t)?;
                    } else {
                        if let Some(parent) = t.parent() {
                            fsops::mkdir_p(parent)?;
                        }
                        std::fs::write(&t, b"").map_err(|e| BuildError::io(&t, e))?;
                    }
                }
                created.extend(missing);
            }
            let spec = RunSpec {
                rootfs: merged.to_path_buf(),
                args: p.argv.clone(),
                env: p.env.clone(),
                cwd: p.cwd.clone(),
                uid: ids.uid,
                gid: ids.gid,
                additional_gids: ids.groups,
                network: p.network,
                binds: p.binds.clone(),
                tmpfs: p.tmpfs.clone(),
            };
            let outcome = sandbox::run(&spec, &tmp.join("bundle"), upper, &mut |line| echo(line))?;
            if outcome.code != 0 {
                failure = Some(StepFailed {
                    message: format!(
                        "process \"{}\" did not complete successfully: exit code: {}",
                        p.argv.join(" "),
                        outcome.code
                    ),
                    code: Some(outcome.code),
                    output: outcome.tail,
                });
                return Err(BuildError::Invalid("step failed".into()));
            }
            // Deepest first: mount points, then the parents created for them, when empty.
            created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for rel in created {
                let in_upper = upper.join(&rel);
                if let Ok(m) = std::fs::symlink_metadata(&in_upper) {
                    let _ = if m.is_dir() {
                        std::fs::remove_dir(&in_upper)
                    } else if m.len() == 0 {
                        std::fs::remove_file(&in_upper)
                    } else {
                        Ok(())
                    };
                }
            }
            Ok(())
        });
        match (cached, failure) {
            (_, Some(f)) => Err(RunError::Failed(f)),
            (Ok(c), None) => Ok(c),
            (Err(e), None) => Err(RunError::Build(e)),
        }
    }

    /// Execute a COPY/ADD step.
    pub fn copy(
        &self,
        st: &mut Stage,
        desc: &str,
        created_by: &str,
        p: &CopyParams,
    ) -> Result<bool> {
        // A --link layer sees an empty root: user names are looked up in the stage's root.
        let owner = match (&p.chown, p.link) {
            (Some(spec), true) => {
                let ids = self.with_root(st, "chown", |root| users::resolve(root, spec))?;
                Some((ids.uid, ids.gid))
            }
            _ => None,
        };
        self.layered_with(st, desc, created_by, p.link, |merged, _upper, _tmp| {
            let owner = match (&p.chown, owner) {
                (_, Some(ids)) => Some(ids),
                (Some(spec), None) => {
                    let ids = users::resolve(merged, spec)?;
                    Some((ids.uid, ids.gid))
                }
                (None, None) => None,
            };
            let attrs = Attrs {
                owner,
                mode: p.chmod,
            };
            for item in &p.items {
                let dest = fsops::resolve_in_root(merged, &fsops::clean_in_root(&item.dest))?;
                if item.contents {
                    fsops::mkdir_p(&dest)?;
                    let mut entries: Vec<_> = std::fs::read_dir(&item.source)
                        .map_err(|e| BuildError::io(&item.source, e))?
                        .flatten()
                        .collect();
                    entries.sort_by_key(|e| e.file_name());
                    for e in entries {
                        fsops::copy_tree(&e.path(), &dest.join(e.file_name()), attrs)?;
                    }
                } else {
                    fsops::copy_tree(&item.source, &dest, attrs)?;
                }
            }
            for (tarball, dest) in &p.extract {
                let dest = fsops::resolve_in_root(merged, &fsops::clean_in_root(dest))?;
                fsops::mkdir_p(&dest)?;
                let mt = "";
                image_unpack::unpack(
                    [(tarball.as_path(), mt)],
                    &dest,
                    &image_unpack::UnpackOptions::default(),
                )
                .map_err(|e| {
                    BuildError::Invalid(format!("extracting {}: {e}", tarball.display()))
                })?;
            }
            Ok(())
        })
    }

    /// Give `f` a read-only look at a stage's root filesystem (for `COPY --from`).
    pub fn with_root<R>(
        &self,
        st: &Stage,
        name: &str,
        f: impl FnOnce(&Path) -> Result<R>,
    ) -> Result<R> {
        let lowers = st.lower_stack();
        if lowers.len() == 1 {
            return f(&lowers[0]);
        }
        let tmp = self.cache.tmp_dir(&format!("view-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        let overlay = Overlay::mount(
            &lowers,
            &tmp.join("upper"),
            &tmp.join("work"),
            &tmp.join("merged"),
        )?;
        let r = f(overlay.path());
        overlay.unmount()?;
        let _ = std::fs::remove_dir_all(&tmp);
        r
    }
}

/// A RUN failed: the command, or the machinery.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command exited non-zero.
    #[error(transparent)]
    Failed(StepFailed),
    /// Mounting, the runtime, the layer.
    #[error(transparent)]
    Build(#[from] BuildError),
}
