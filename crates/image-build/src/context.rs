//! COPY and ADD planning: which files, from where (build context with `.dockerignore`,
//! another stage, an image, a URL, a heredoc), where to, and the content hash that goes into
//! the step's cache key (paths, modes and contents; never mtimes).
//!
//! Sources are staged first (hard links where possible) into a scratch directory holding
//! exactly what will be copied, so ignore and exclude rules are applied once, and the
//! content hash covers exactly the staged bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use dockerfile::{Chmod, Heredoc};
use fs_confine::Root;
use oci_core::Digest;
use sha2::Digest as _;

use crate::frontend::BuildRequest;
use crate::image::Image;
use crate::stage::{Builder, CopyItem, CopyParams, Stage};
use crate::{BuildError, Result};

/// The parts of a COPY or ADD the planner needs.
pub struct CopySpec<'a> {
    /// ADD (URLs, archive extraction) rather than COPY.
    pub add: bool,
    /// Sources, unexpanded.
    pub sources: &'a [String],
    /// Destination, unexpanded.
    pub dest: &'a str,
    /// Inline files.
    pub heredocs: &'a [Heredoc],
    /// `--from`.
    pub from: Option<&'a str>,
    /// `--chown`.
    pub chown: Option<&'a str>,
    /// `--chmod`.
    pub chmod: Option<&'a Chmod>,
    /// `--exclude` patterns.
    pub excludes: &'a [String],
    /// `--parents`.
    pub parents: bool,
    /// ADD `--checksum`.
    pub checksum: Option<&'a str>,
    /// `--link`.
    pub link: bool,
}

/// A planned COPY/ADD.
pub struct CopyPlan {
    /// What the stage copies.
    pub params: CopyParams,
    /// Cache key description.
    pub key: String,
    /// How the step is shown and recorded in history.
    pub shown: String,
    staging: PathBuf,
}

impl CopyPlan {
    /// Remove the staging directory.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// A context-relative source path, refusing to leave the context.
pub fn context_path(context: &Path, rel: &str) -> Result<PathBuf> {
    let mut depth = 0i32;
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => {
                depth += 1;
                out.push(n);
            }
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(BuildError::Invalid(format!(
                        "{rel}: forbidden path outside the build context"
                    )));
                }
                out.pop();
            }
            _ => {}
        }
    }
    Ok(context.join(out))
}

/// Hash a tree (for bind mounts of the context): relative paths, modes, link targets, contents.
pub fn hash_tree(
    path: &Path,
    ignored: &(dyn Fn(&str) -> bool + Sync),
    context: &Path,
) -> Result<String> {
    let mut h = sha2::Sha256::new();
    hash_into(&mut h, path, path, &|p: &Path| {
        p.strip_prefix(context)
            .ok()
            .and_then(|r| r.to_str())
            .is_some_and(ignored)
    })?;
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash_into(
    h: &mut sha2::Sha256,
    root: &Path,
    p: &Path,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(p).map_err(|e| BuildError::io(p, e))?;
    let rel = p
        .strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .to_string();
    h.update(format!("{rel}\0{:o}\0", meta.mode() & 0o7777).as_bytes());
    if meta.is_dir() {
        h.update(b"d\0");
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| BuildError::io(p, e))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            if skip(&path) {
                continue;
            }
            hash_into(h, root, &path, skip)?;
        }
    } else if meta.file_type().is_symlink() {
        h.update(b"l\0");
        h.update(
            std::fs::read_link(p)
                .map_err(|e| BuildError::io(p, e))?
                .as_os_str()
                .as_encoded_bytes(),
        );
    } else {
        h.update(b"f\0");
        let mut f = std::fs::File::open(p).map_err(|e| BuildError::io(p, e))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(|e| BuildError::io(p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    h.update(b"\0");
    Ok(())
}

/// Copy `src` into `dest` for staging: hard links for files where possible, skipping what
/// `skip` says (paths relative to `rel_base`).
pub(crate) fn stage_tree(src: &Path, dest: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| BuildError::io(src, e))?;
    if meta.is_dir() {
        std::fs::create_dir_all(dest).map_err(|e| BuildError::io(dest, e))?;
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| BuildError::io(src, e))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if skip(&p) {
                continue;
            }
            stage_tree(&p, &dest.join(e.file_name()), skip)?;
        }
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| BuildError::io(dest, e))?;
        let t = rustix::fs::Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        };
        let _ = rustix::fs::utimensat(
            rustix::fs::CWD,
            dest,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        );
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| BuildError::io(src, e))?;
        std::os::unix::fs::symlink(target, dest).map_err(|e| BuildError::io(dest, e))?;
    } else if meta.is_file() {
        if std::fs::hard_link(src, dest).is_err() {
            std::fs::copy(src, dest).map_err(|e| BuildError::io(dest, e))?;
        }
    } else {
        return Err(BuildError::Invalid(format!(
            "{}: only files, directories and symlinks can be copied",
            src.display()
        )));
    }
    Ok(())
}

/// Expand the matches of a source pattern (Go `filepath.Match` per component) under `root`.
/// Directories are listed through `root`, so a symlink on the way resolves inside it: matches
/// below `lnk -> /host/dir` are looked for at `ROOT/host/dir`, never on the host.
fn glob(root: &Root, pattern: &str) -> Result<Vec<String>> {
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let io = |p: &str, e| BuildError::io(&root.path().join(p), e);
    let mut found = vec![String::new()];
    for part in parts {
        let mut next = Vec::new();
        for base in &found {
            let join = |n: &str| {
                if base.is_empty() {
                    n.to_string()
                } else {
                    format!("{base}/{n}")
                }
            };
            if dockerfile::has_wildcards(part) {
                let Some(names) = root.read_dir(Path::new(base)).map_err(|e| io(base, e))? else {
                    continue;
                };
                let mut names: Vec<String> = names
                    .into_iter()
                    .filter_map(|n| n.into_string().ok())
                    .collect();
                names.sort();
                for n in names {
                    if dockerfile::glob_match(part, &n)
                        .map_err(|e| BuildError::Invalid(e.to_string()))?
                    {
                        next.push(join(&n));
                    }
                }
            } else {
                let candidate = join(part);
                if root
                    .exists(Path::new(&candidate))
                    .map_err(|e| io(&candidate, e))?
                {
                    next.push(candidate);
                }
            }
        }
        found = next;
    }
    Ok(found)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Whether a file is a tar archive ADD should extract (plain, gzip, bzip2, xz or zstd).
fn is_archive(path: &Path) -> bool {
    // A symlink is copied as a symlink, never followed to what it names.
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    let Ok(n) = f.read(&mut head) else {
        return false;
    };
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &head[257..262] == b"ustar")
}

/// Stages one matched source: (source root, relative path, from the context?, items, key parts).
type AddItem<'a> =
    dyn FnMut(&Root, &str, bool, &mut Vec<CopyItem>, &mut Vec<String>) -> Result<()> + 'a;

/// Plan a COPY or ADD.
#[allow(clippy::too_many_arguments)]
pub fn plan_copy(
    builder: &Builder,
    req: &BuildRequest<'_>,
    st: &Stage,
    vars: &BTreeMap<String, String>,
    spec: CopySpec<'_>,
    done: &Mutex<HashMap<usize, Stage>>,
    stage_ref: &(dyn Fn(&str, usize) -> Option<usize> + Sync),
    stage_index: usize,
) -> Result<CopyPlan> {
    let esc = req.dockerfile.escape();
    let x = |w: &str| {
        dockerfile::expand(w, &|k: &str| vars.get(k).cloned(), esc)
            .map_err(|e| BuildError::Invalid(e.to_string()))
    };
    let kw = if spec.add { "ADD" } else { "COPY" };
    let sources: Vec<String> = spec.sources.iter().map(|s| x(s)).collect::<Result<_>>()?;
    let dest_raw = x(spec.dest)?;
    let workdir = st
        .image
        .runtime_str("WorkingDir")
        .unwrap_or_else(|| "/".into());
    let dest_is_dir = dest_raw.ends_with('/') || dest_raw.ends_with("/.") || dest_raw == ".";
    let dest = if dest_raw.starts_with('/') {
        dest_raw.clone()
    } else {
        format!("{}/{dest_raw}", workdir.trim_end_matches('/'))
    };
    let dest = format!("/{}", crate::fsops::clean_in_root(&dest).display());
    let count = sources.len() + spec.heredocs.len();
    if count > 1 && !dest_is_dir {
        return Err(BuildError::Invalid(format!(
            "When using {kw} with more than one source file, the destination must be a directory and end with a /"
        )));
    }
    let chmod = match spec.chmod {
        Some(c) => Some(match c.mode {
            Some(m) => m,
            None => u32::from_str_radix(&x(&c.raw)?, 8)
                .map_err(|_| BuildError::Invalid(format!("invalid --chmod value {:?}", c.raw)))?,
        }),
        None => None,
    };
    let chown = spec.chown.map(&x).transpose()?;
    let excludes: Vec<String> = spec.excludes.iter().map(|e| x(e)).collect::<Result<_>>()?;
    let staging = builder.cache.tmp_dir(&format!(
        "copy-{}",
        Digest::sha256_of(format!("{stage_index}{dest}{sources:?}").as_bytes()).hex()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| BuildError::io(&staging, e))?;
    let mut items = Vec::new();
    let mut extract = Vec::new();
    let mut key_parts = Vec::new();
    let excluded = |rel: &str| -> bool {
        excludes.iter().any(|p| {
            dockerfile::glob_match(p, rel).unwrap_or(false)
                || rel.starts_with(&format!("{}/", p.trim_end_matches('/')))
        })
    };
    let mut n = 0usize;
    let mut add_item = |root: &Root,
                        rel: &str,
                        from_context: bool,
                        items: &mut Vec<CopyItem>,
                        key_parts: &mut Vec<String>|
     -> Result<()> {
        // Every directory on the way resolves inside the root; the source itself, when it is
        // a symlink, is copied as a symlink.
        let src_root = root.path();
        let src = crate::fsops::source_in_root(src_root, Path::new(rel), false)?;
        let meta = std::fs::symlink_metadata(&src).map_err(|e| BuildError::io(&src, e))?;
        let staged = staging.join(format!("{n}"));
        n += 1;
        let skip = |p: &Path| -> bool {
            let Ok(r) = p.strip_prefix(src_root) else {
                return false;
            };
            let r = r.to_string_lossy();
            (from_context && (req.ignored)(&r)) || excluded(&r)
        };
        // Hash what will be copied: the source minus ignored and excluded paths.
        let skipped = std::cell::Cell::new(0usize);
        let counting_skip = |p: &Path| -> bool {
            let s = skip(p);
            if s {
                skipped.set(skipped.get() + 1);
            }
            s
        };
        let mut h = sha2::Sha256::new();
        hash_into(&mut h, &src, &src, &counting_skip)?;
        // Context files are copied from where they are unless some must be left out; other
        // sources (stage views that are unmounted before the copy) are always staged.
        let source = if from_context && skipped.get() == 0 {
            src.clone()
        } else {
            stage_tree(&src, &staged, &skip)?;
            staged
        };
        let base = Path::new(rel)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        let (target, contents) = if meta.is_dir() {
            let t = if spec.parents {
                format!("{}/{rel}", dest.trim_end_matches('/'))
            } else {
                dest.clone()
            };
            (t, true)
        } else if spec.parents {
            (format!("{}/{rel}", dest.trim_end_matches('/')), false)
        } else if dest_is_dir {
            (format!("{}/{base}", dest.trim_end_matches('/')), false)
        } else {
            (dest.clone(), false)
        };
        key_parts.push(format!("{rel}->{target}:{}", hex(&h.finalize())));
        items.push(CopyItem {
            source,
            dest: target,
            contents,
        });
        Ok(())
    };
    // Where the sources come from.
    let from = spec.from.map(&x).transpose()?;
    let from_stage = from.as_deref().and_then(|f| stage_ref(f, stage_index));
    let resolve_all = |root_dir: &Path,
                       from_context: bool,
                       items: &mut Vec<CopyItem>,
                       key_parts: &mut Vec<String>,
                       add_item: &mut AddItem<'_>|
     -> Result<()> {
        let root = Root::open(root_dir).map_err(|e| BuildError::io(root_dir, e))?;
        for s in &sources {
            if is_url(s) {
                continue;
            }
            let cleaned = dockerfile::clean_path(s);
            let rel = cleaned.trim_start_matches('/');
            if from_context {
                context_path(root_dir, rel)?;
            }
            let matches = if rel.is_empty() || rel == "." {
                vec![String::new()]
            } else {
                glob(&root, rel)?
            };
            let matches: Vec<String> = matches
                .into_iter()
                .filter(|m| m.is_empty() || !(from_context && (req.ignored)(m)))
                .collect();
            if matches.is_empty() {
                return Err(BuildError::Invalid(format!(
                    "failed to compute cache key: \"/{rel}\": not found"
                )));
            }
            for m in matches {
                add_item(&root, &m, from_context, items, key_parts)?;
            }
        }
        Ok(())
    };
    match (&from, from_stage) {
        (Some(name), Some(idx)) => {
            let other = done
                .lock()
                .expect("lock")
                .get(&idx)
                .cloned()
                .ok_or_else(|| BuildError::Invalid(format!("stage {name} is not built")))?;
            builder.with_root(&other, name, |root| {
                resolve_all(root, false, &mut items, &mut key_parts, &mut add_item)
            })?;
        }
        (Some(image_ref), None) => {
            let desc = (req.resolve_image)(image_ref).map_err(BuildError::Invalid)?;
            let image = Image::load(&builder.store, &desc)?;
            let root = crate::rootfs::base_rootfs(&builder.store, &image, &builder.rootfs_dir)?
                .ok_or_else(|| BuildError::Invalid(format!("image {image_ref} has no layers")))?;
            resolve_all(&root, false, &mut items, &mut key_parts, &mut add_item)?;
        }
        (None, _) => resolve_all(
            &req.context,
            true,
            &mut items,
            &mut key_parts,
            &mut add_item,
        )?,
    }
    // ADD of URLs: downloaded, checked against --checksum.
    for s in sources.iter().filter(|s| is_url(s)) {
        if !spec.add {
            return Err(BuildError::Invalid(format!(
                "COPY does not support URLs ({s}); use ADD"
            )));
        }
        let name = s
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && !n.contains('?'))
            .unwrap_or("download")
            .to_string();
        let path = staging.join(format!("url-{n}-{name}"));
        n += 1;
        let digest = download(s, &path)?;
        if let Some(c) = spec.checksum {
            let want: Digest = x(c)?
                .parse()
                .map_err(|e| BuildError::Invalid(format!("invalid --checksum: {e}")))?;
            let got = if want.algorithm() == digest.algorithm() {
                digest.clone()
            } else {
                Digest::of(
                    want.algorithm(),
                    &std::fs::read(&path).map_err(|e| BuildError::io(&path, e))?,
                )
            };
            if got != want {
                return Err(BuildError::Invalid(format!(
                    "checksum mismatch for {s}: expected {want}, got {got}"
                )));
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| BuildError::io(&path, e))?;
        let target = if dest_is_dir {
            format!("{}/{name}", dest.trim_end_matches('/'))
        } else {
            dest.clone()
        };
        key_parts.push(format!("{s}->{target}:{digest}"));
        items.push(CopyItem {
            source: path,
            dest: target,
            contents: false,
        });
    }
    // Heredoc files.
    for h in spec.heredocs {
        let content = if h.expand {
            x(&h.content)?
        } else {
            h.content.clone()
        };
        let path = staging.join(format!("heredoc-{n}"));
        n += 1;
        std::fs::write(&path, &content).map_err(|e| BuildError::io(&path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| BuildError::io(&path, e))?;
        let target = if dest_is_dir {
            format!("{}/{}", dest.trim_end_matches('/'), h.name)
        } else {
            dest.clone()
        };
        key_parts.push(format!(
            "heredoc {}->{target}:{}",
            h.name,
            Digest::sha256_of(content.as_bytes())
        ));
        items.push(CopyItem {
            source: path,
            dest: target,
            contents: false,
        });
    }
    // ADD extracts local tar archives (never downloaded ones).
    if spec.add {
        let mut kept = Vec::new();
        for item in items {
            if !item.contents
                && item.source.file_name().is_some_and(|f| {
                    !f.to_string_lossy().starts_with("url-")
                        && !f.to_string_lossy().starts_with("heredoc-")
                })
                && is_archive(&item.source)
            {
                let d = if dest_is_dir
                    || !item.dest.ends_with(
                        &*item
                            .source
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy(),
                    ) {
                    dest.clone()
                } else {
                    item.dest.clone()
                };
                extract.push((item.source, d));
            } else {
                kept.push(item);
            }
        }
        items = kept;
    }
    let shown = format!(
        "{kw} {}{} {dest_raw}",
        from.as_ref()
            .map(|f| format!("--from={f} "))
            .unwrap_or_default(),
        sources.join(" ")
    );
    let key = format!(
        "{kw} chown={chown:?} chmod={chmod:?} parents={} items={key_parts:?}",
        spec.parents
    );
    Ok(CopyPlan {
        params: CopyParams {
            items,
            chown,
            chmod,
            extract,
            link: spec.link,
        },
        key,
        shown,
        staging,
    })
}

/// Download a URL to a file; returns its sha256.
fn download(url: &str, path: &Path) -> Result<Digest> {
    let resp = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .and_then(|c| c.get(url).send())
        .map_err(|e| BuildError::Invalid(format!("downloading {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(BuildError::Invalid(format!(
            "downloading {url}: HTTP {}",
            resp.status()
        )));
    }
    let mut resp = resp;
    let mut f = std::fs::File::create(path).map_err(|e| BuildError::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = resp
            .read(&mut buf)
            .map_err(|e| BuildError::Invalid(format!("downloading {url}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).map_err(|e| BuildError::io(path, e))?;
    }
    Ok(Digest::from_bytes(
        oci_core::Algorithm::Sha256,
        &h.finalize(),
    ))
}
