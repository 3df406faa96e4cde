//! The Dockerfile frontend: interprets a parsed Dockerfile stage by stage, with ARG and ENV
//! scoping and variable expansion, and drives [`crate::stage::Builder`] for every step.
//!
//! Stages the target does not need are skipped; stages that do not depend on each other are
//! built in parallel threads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use dockerfile::{
    CommandLine, Dockerfile, Healthcheck, Instruction, MountType, NetworkMode, PROXY_ARGS,
    PortSpec, Stage as DStage,
};
use oci_core::{Descriptor, Digest};
use serde_json::{Value, json};

use crate::cache::chain;
use crate::image::{Image, write_image};
use crate::sandbox::{Bind, Network};
use crate::stage::{Builder, RunError, RunParams, Stage};
use crate::{BuildError, context};

/// Everything a build needs besides the Dockerfile.
pub struct BuildRequest<'a> {
    /// The parsed Dockerfile.
    pub dockerfile: &'a Dockerfile,
    /// Its file name, for messages.
    pub dockerfile_name: String,
    /// The build context directory.
    pub context: PathBuf,
    /// Whether a context-relative path is excluded by `.dockerignore`.
    pub ignored: &'a (dyn Fn(&str) -> bool + Sync),
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--label` values.
    pub labels: BTreeMap<String, String>,
    /// Target platform: os, architecture, variant.
    pub platform: oci_core::Platform,
    /// Default network of RUN steps (`--network`).
    pub network: Network,
    /// `--secret id=...,src=...`.
    pub secrets: HashMap<String, PathBuf>,
    /// Resolves an image reference to a manifest in the store (pulling it if needed).
    pub resolve_image: &'a (dyn Fn(&str) -> Result<Descriptor, String> + Sync),
    /// Directory for RUN --mount=type=cache directories.
    pub cache_mounts: PathBuf,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image manifest in the store.
    pub manifest: Descriptor,
    /// The image ID (config digest).
    pub id: Digest,
    /// Steps answered from the cache.
    pub cached: usize,
    /// Steps executed.
    pub executed: usize,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A problem at a line of the Dockerfile.
    #[error("{file}:{line}: {instruction}: {message}")]
    At {
        /// Dockerfile name.
        file: String,
        /// Line.
        line: usize,
        /// The instruction keyword and a short form of its arguments.
        instruction: String,
        /// What went wrong.
        message: String,
        /// For a failed RUN: its exit code.
        code: Option<i32>,
        /// For a failed RUN: the last lines of its output.
        output: String,
    },
    /// A problem not tied to a line.
    #[error("{0}")]
    Other(String),
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build the target stage of `req.dockerfile`.
pub fn build(builder: &Builder, req: &BuildRequest<'_>) -> Result<BuildResult, FrontendError> {
    let df = req.dockerfile;
    let esc = df.escape();
    // Global ARGs (before the first FROM): usable in FROM lines.
    // This builder does not cross-build: the build platform is the target platform.
    let mut globals: BTreeMap<String, String> =
        dockerfile::platform_args(&req.platform, &req.platform)
            .into_iter()
            .collect();
    for a in &df.global_args {
        let value = match req.build_args.get(&a.name) {
            Some(v) => Some(v.clone()),
            None => match &a.default {
                Some(d) => Some(expand(d, &globals, esc).map_err(|e| at(req, a.line, "ARG", &e))?),
                None => None,
            },
        };
        if let Some(v) = value {
            globals.insert(a.name.clone(), v);
        } else {
            globals.remove(&a.name);
        }
    }
    let target = match &req.target {
        Some(t) => {
            df.stage(t)
                .ok_or_else(|| {
                    FrontendError::Other(format!("target stage {t:?} could not be found"))
                })?
                .index
        }
        None => df.stages.len() - 1,
    };
    // Dependencies between stages, and the set the target needs.
    let stage_ref = |name: &str, before: usize| -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        df.stages[..before]
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .map(|s| s.index)
            .or_else(|| name.parse::<usize>().ok().filter(|&i| i < before))
    };
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); df.stages.len()];
    for s in &df.stages {
        let base = expand(&s.base, &globals, esc).unwrap_or_default();
        if let Some(d) = stage_ref(&base, s.index) {
            deps[s.index].insert(d);
        }
        for ins in &s.instructions {
            let from = match &ins.node {
                Instruction::Copy(c) => c.from.clone(),
                Instruction::Run(r) => r.mounts.iter().find_map(|m| m.from.clone()),
                _ => None,
            };
            if let Some(f) = from
                && let Some(d) = stage_ref(&f, s.index)
            {
                deps[s.index].insert(d);
            }
        }
    }
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(deps[i].iter().copied());
        }
    }
    // Build in waves: every stage whose dependencies are done, in parallel.
    let done: Mutex<HashMap<usize, Stage>> = Mutex::new(HashMap::new());
    let mut remaining: BTreeSet<usize> = needed.clone();
    while !remaining.is_empty() {
        let ready: Vec<usize> = {
            let d = done.lock().expect("lock");
            remaining
                .iter()
                .copied()
                .filter(|i| deps[*i].iter().all(|x| d.contains_key(x)))
                .collect()
        };
        if ready.is_empty() {
            return Err(FrontendError::Other(
                "circular dependency between stages".into(),
            ));
        }
        let results: Vec<Result<(usize, Stage), FrontendError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ready
                .iter()
                .map(|&i| {
                    let done = &done;
                    let globals = &globals;
                    let stage_ref = &stage_ref;
                    scope.spawn(move || {
                        build_stage(builder, req, &df.stages[i], globals, done, stage_ref)
                            .map(|s| (i, s))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("stage thread panicked"))
                .collect()
        });
        for r in results {
            let (i, st) = r?;
            done.lock().expect("lock").insert(i, st);
            remaining.remove(&i);
        }
    }
    let mut done = done.into_inner().expect("lock");
    let mut final_stage = done.remove(&target).expect("target built");
    let cached: usize = needed
        .iter()
        .filter_map(|i| done.get(i))
        .map(|s| s.cached)
        .sum::<usize>()
        + final_stage.cached;
    let executed: usize = needed
        .iter()
        .filter_map(|i| done.get(i))
        .map(|s| s.executed)
        .sum::<usize>()
        + final_stage.executed;
    if !req.labels.is_empty() {
        let labels = labels_of(&mut final_stage.image);
        for (k, v) in &req.labels {
            labels.insert(k.clone(), json!(v));
        }
    }
    final_stage.image.config["created"] = json!(final_stage.last_created);
    let (manifest, id) = write_image(&builder.store, &final_stage.image, builder.opts.format)
        .map_err(|e| FrontendError::Other(e.to_string()))?;
    Ok(BuildResult {
        manifest,
        id,
        cached,
        executed,
    })
}

fn at(
    req: &BuildRequest<'_>,
    line: usize,
    instruction: &str,
    message: &dyn std::fmt::Display,
) -> FrontendError {
    FrontendError::At {
        file: req.dockerfile_name.clone(),
        line,
        instruction: instruction.to_string(),
        message: message.to_string(),
        code: None,
        output: String::new(),
    }
}

fn expand(
    word: &str,
    vars: &BTreeMap<String, String>,
    esc: char,
) -> Result<String, dockerfile::ExpandError> {
    dockerfile::expand(word, &|k: &str| vars.get(k).cloned(), esc)
}

fn expand_words(
    word: &str,
    vars: &BTreeMap<String, String>,
    esc: char,
) -> Result<Vec<String>, dockerfile::ExpandError> {
    dockerfile::expand_words(word, &|k: &str| vars.get(k).cloned(), esc)
}

fn labels_of(image: &mut Image) -> &mut serde_json::Map<String, Value> {
    image.runtime_map("Labels")
}

fn env_map(image: &Image) -> BTreeMap<String, String> {
    image
        .env()
        .into_iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn str_vec(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

fn short(s: &str) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() > 80 {
        one_line.chars().take(77).collect::<String>() + "..."
    } else {
        one_line
    }
}

/// Build one stage.
fn build_stage(
    builder: &Builder,
    req: &BuildRequest<'_>,
    ds: &DStage,
    globals: &BTreeMap<String, String>,
    done: &Mutex<HashMap<usize, Stage>>,
    stage_ref: &(dyn Fn(&str, usize) -> Option<usize> + Sync),
) -> Result<Stage, FrontendError> {
    let esc = req.dockerfile.escape();
    let label = match &ds.name {
        Some(n) => format!("stage {} ({n})", ds.index),
        None => format!("stage {}", ds.index),
    };
    let echo = |s: &str| (builder.echo)(s);
    let base = expand(&ds.base, globals, esc).map_err(|e| at(req, ds.line, "FROM", &e))?;
    let from_image = stage_ref(&base, ds.index).is_none() && !base.eq_ignore_ascii_case("scratch");
    let mut st = if let Some(dep) = stage_ref(&base, ds.index) {
        done.lock()
            .expect("lock")
            .get(&dep)
            .cloned()
            .expect("dependency built first")
    } else if base.eq_ignore_ascii_case("scratch") {
        let image = Image::scratch(&req.platform.os, &req.platform.architecture);
        builder
            .stage(image, Digest::sha256_of(b"scratch"))
            .map_err(|e| at(req, ds.line, "FROM", &e))?
    } else {
        let desc = (req.resolve_image)(&base).map_err(|e| at(req, ds.line, "FROM", &e))?;
        let image = Image::load(&builder.store, &desc).map_err(|e| at(req, ds.line, "FROM", &e))?;
        builder
            .stage(
                image,
                chain(&Digest::sha256_of(b"image"), &desc.digest.to_string()),
            )
            .map_err(|e| at(req, ds.line, "FROM", &e))?
    };
    st.cached = 0;
    st.executed = 0;
    // ONBUILD triggers of a base image run first, in order; the new image does not inherit them.
    let mut instructions: Vec<dockerfile::Spanned<Instruction>> = Vec::new();
    if from_image && let Some(triggers) = str_vec(st.image.config.pointer("/config/OnBuild")) {
        for t in &triggers {
            let parsed = dockerfile::parse(
                &format!("FROM scratch\n{t}\n"),
                &format!("ONBUILD trigger of {base}"),
            )
            .map_err(|e| at(req, ds.line, "FROM", &format!("ONBUILD trigger {t:?}: {e}")))?;
            for mut ins in parsed.stages.into_iter().flat_map(|s| s.instructions) {
                ins.span.line = ds.line;
                instructions.push(ins);
            }
        }
        st.image.runtime().remove("OnBuild");
    }
    instructions.extend(ds.instructions.iter().cloned());
    let total = instructions.len() + 1;
    echo(&format!("[{label} 1/{total}] FROM {base}"));
    // Scope: ARGs declared in this stage, and the image's ENV (which wins).
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for p in PROXY_ARGS {
        if let Some(v) = req.build_args.get(p) {
            args.insert(p.to_string(), v.clone());
        }
    }
    let mut shell: Vec<String> = str_vec(st.image.config.pointer("/config/Shell"))
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    let mut cmd_from_base = st.image.runtime().contains_key("Cmd");
    for (n, ins) in instructions.iter().enumerate() {
        let line = ins.span.line;
        let kw = ins.node.keyword();
        let vars = {
            let mut v = args.clone();
            v.extend(env_map(&st.image));
            v
        };
        let err = |e: &dyn std::fmt::Display| at(req, line, kw, e);
        let step = format!("[{label} {}/{total}]", n + 2);
        match &ins.node {
            Instruction::Arg(list) => {
                for a in list {
                    let value = match req.build_args.get(&a.name) {
                        Some(v) => Some(v.clone()),
                        None => match &a.default {
                            Some(d) => Some(expand(d, &vars, esc).map_err(|e| err(&e))?),
                            None => globals.get(&a.name).cloned(),
                        },
                    };
                    let shown = format!("ARG {}", a.name);
                    echo(&format!("{step} {shown}"));
                    match value {
                        Some(v) => {
                            builder.metadata(
                                &mut st,
                                &format!("ARG {}={v}", a.name),
                                &shown,
                                |_| {},
                            );
                            args.insert(a.name.clone(), v);
                        }
                        None => {
                            builder.metadata(&mut st, &format!("ARG {}", a.name), &shown, |_| {});
                            args.remove(&a.name);
                        }
                    }
                }
            }
            Instruction::Env(kvs) => {
                let mut pairs = Vec::new();
                let mut scope = vars.clone();
                for kv in kvs {
                    let k = expand(&kv.key, &scope, esc).map_err(|e| err(&e))?;
                    let v = expand(&kv.value, &scope, esc).map_err(|e| err(&e))?;
                    scope.insert(k.clone(), v.clone());
                    pairs.push((k, v));
                }
                let shown = format!(
                    "ENV {}",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                echo(&format!("{step} {}", short(&shown)));
                builder.metadata(&mut st, &shown, &shown, |img| {
                    for (k, v) in &pairs {
                        img.set_env(k, v);
                    }
                });
            }
            Instruction::Label(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    pairs.push((
                        expand(&kv.key, &vars, esc).map_err(|e| err(&e))?,
                        expand(&kv.value, &vars, esc).map_err(|e| err(&e))?,
                    ));
                }
                let shown = format!(
                    "LABEL {}",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                echo(&format!("{step} {}", short(&shown)));
                builder.metadata(&mut st, &shown, &shown, |img| {
                    let labels = labels_of(img);
                    for (k, v) in &pairs {
                        labels.insert(k.clone(), json!(v));
                    }
                });
            }
            Instruction::Workdir(w) => {
                let w = expand(w, &vars, esc).map_err(|e| err(&e))?;
                let current = st
                    .image
                    .runtime_str("WorkingDir")
                    .unwrap_or_else(|| "/".into());
                let dir = if w.starts_with('/') {
                    w.clone()
                } else {
                    format!("{}/{w}", current.trim_end_matches('/'))
                };
                let dir = format!("/{}", crate::fsops::clean_in_root(&dir).display());
                echo(&format!("{step} WORKDIR {dir}"));
                builder.metadata(
                    &mut st,
                    &format!("WORKDIR {dir}"),
                    &format!("WORKDIR {dir}"),
                    |img| {
                        img.runtime().insert("WorkingDir".into(), json!(dir));
                    },
                );
            }
            Instruction::User(u) => {
                let u = expand(u, &vars, esc).map_err(|e| err(&e))?;
                echo(&format!("{step} USER {u}"));
                builder.metadata(&mut st, &format!("USER {u}"), &format!("USER {u}"), |img| {
                    img.runtime().insert("User".into(), json!(u));
                });
            }
            Instruction::Expose(words) => {
                let mut ports = Vec::new();
                for w in words {
                    for p in expand_words(w, &vars, esc).map_err(|e| err(&e))? {
                        ports.extend(PortSpec::parse(&p).map_err(|e| err(&e))?.config_keys());
                    }
                }
                let shown = format!("EXPOSE {}", ports.join(" "));
                echo(&format!("{step} {shown}"));
                builder.metadata(&mut st, &shown, &shown, |img| {
                    let m = img.runtime_map("ExposedPorts");
                    for p in &ports {
                        m.insert(p.clone(), json!({}));
                    }
                });
            }
            Instruction::Volume(paths) => {
                let mut vols = Vec::new();
                for p in paths {
                    vols.push(expand(p, &vars, esc).map_err(|e| err(&e))?);
                }
                let shown = format!("VOLUME {vols:?}");
                echo(&format!("{step} {shown}"));
                builder.metadata(&mut st, &shown, &shown, |img| {
                    let m = img.runtime_map("Volumes");
                    for v in &vols {
                        m.insert(v.clone(), json!({}));
                    }
                });
            }
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let argv = match c {
                    CommandLine::Exec(v) => v.clone(),
                    CommandLine::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
                };
                let key = if kw == "CMD" { "Cmd" } else { "Entrypoint" };
                let shown = format!("{kw} {}", serde_json::to_string(&argv).expect("json"));
                echo(&format!("{step} {}", short(&shown)));
                let reset_cmd = kw == "ENTRYPOINT" && cmd_from_base;
                builder.metadata(&mut st, &shown, &shown, |img| {
                    img.runtime().insert(key.into(), json!(argv));
                    if reset_cmd {
                        // An ENTRYPOINT resets a CMD inherited from the base image.
                        img.runtime().remove("Cmd");
                    }
                });
                if kw == "CMD" {
                    cmd_from_base = false;
                }
            }
            Instruction::Shell(s) => {
                shell = s.clone();
                let shown = format!("SHELL {}", serde_json::to_string(s).expect("json"));
                echo(&format!("{step} {shown}"));
                builder.metadata(&mut st, &shown, &shown, |img| {
                    img.runtime().insert("Shell".into(), json!(s));
                });
            }
            Instruction::StopSignal(s) => {
                let s = expand(s, &vars, esc).map_err(|e| err(&e))?;
                echo(&format!("{step} STOPSIGNAL {s}"));
                builder.metadata(
                    &mut st,
                    &format!("STOPSIGNAL {s}"),
                    &format!("STOPSIGNAL {s}"),
                    |img| {
                        img.runtime().insert("StopSignal".into(), json!(s));
                    },
                );
            }
            Instruction::Maintainer(m) => {
                echo(&format!("{step} MAINTAINER {m}"));
                builder.metadata(
                    &mut st,
                    &format!("MAINTAINER {m}"),
                    &format!("MAINTAINER {m}"),
                    |img| {
                        img.config["author"] = json!(m);
                    },
                );
            }
            Instruction::Onbuild(o) => {
                echo(&format!("{step} ONBUILD {}", short(&o.expression)));
                let expr = o.expression.clone();
                builder.metadata(
                    &mut st,
                    &format!("ONBUILD {expr}"),
                    &format!("ONBUILD {expr}"),
                    |img| {
                        let rt = img.runtime();
                        let mut list = str_vec(rt.get("OnBuild")).unwrap_or_default();
                        list.push(expr.clone());
                        rt.insert("OnBuild".into(), json!(list));
                    },
                );
            }
            Instruction::Healthcheck(h) => {
                let value = match h {
                    Healthcheck::None => json!({"Test": ["NONE"]}),
                    Healthcheck::Cmd {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let test: Vec<String> = match command {
                            CommandLine::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.iter().cloned())
                                .collect(),
                            CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        let mut v = json!({"Test": test});
                        let ns = |d: &std::time::Duration| json!(d.as_nanos() as u64);
                        if let Some(d) = interval {
                            v["Interval"] = ns(d);
                        }
                        if let Some(d) = timeout {
                            v["Timeout"] = ns(d);
                        }
                        if let Some(d) = start_period {
                            v["StartPeriod"] = ns(d);
                        }
                        if let Some(d) = start_interval {
                            v["StartInterval"] = ns(d);
                        }
                        if let Some(r) = retries {
                            v["Retries"] = json!(r);
                        }
                        v
                    }
                };
                let shown = format!("HEALTHCHECK {value}");
                echo(&format!("{step} {}", short(&shown)));
                builder.metadata(&mut st, &shown, &shown, |img| {
                    img.runtime().insert("Healthcheck".into(), value.clone());
                });
            }
            Instruction::Run(r) => {
                let mut env: BTreeMap<String, String> = args.clone();
                env.extend(env_map(&st.image));
                env.entry("PATH".into())
                    .or_insert_with(|| DEFAULT_PATH.into());
                let argv: Vec<String> = match &r.command {
                    CommandLine::Exec(v) => v.clone(),
                    // `RUN <<EOF` with nothing but the heredoc: its body is the script.
                    CommandLine::Shell(s)
                        if r.heredocs.len() == 1
                            && s.trim()
                                .trim_start_matches("<<")
                                .trim_start_matches('-')
                                .trim_matches(['"', '\''])
                                == r.heredocs[0].name =>
                    {
                        shell
                            .iter()
                            .cloned()
                            .chain([r.heredocs[0].content.clone()])
                            .collect()
                    }
                    CommandLine::Shell(s) => {
                        let mut script = s.clone();
                        for h in &r.heredocs {
                            script.push('\n');
                            script.push_str(&h.content);
                            if !h.content.ends_with('\n') && !h.content.is_empty() {
                                script.push('\n');
                            }
                            script.push_str(&h.name);
                        }
                        shell.iter().cloned().chain([script]).collect()
                    }
                };
                let network = match r.network {
                    Some(NetworkMode::None) => Network::None,
                    Some(NetworkMode::Host) => Network::Host,
                    Some(NetworkMode::Default) | None => req.network,
                };
                let cwd = st
                    .image
                    .runtime_str("WorkingDir")
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into());
                let user = st.image.runtime_str("User").unwrap_or_default();
                let mut binds = Vec::new();
                let mut tmpfs = Vec::new();
                let mut mount_keys = Vec::new();
                let mut scratch_dirs: Vec<PathBuf> = Vec::new();
                for m in &r.mounts {
                    let m = if m.needs_expansion {
                        dockerfile::Mount::parse_expanded(&m.spec, &|w: &str| expand(w, &vars, esc))
                            .map_err(|e| err(&e))?
                    } else {
                        m.clone()
                    };
                    let target = m
                        .target
                        .clone()
                        .map(|t| expand(&t, &vars, esc))
                        .transpose()
                        .map_err(|e| err(&e))?;
                    match m.kind {
                        MountType::Cache => {
                            let target =
                                target.ok_or_else(|| err(&"cache mount needs a target"))?;
                            let id = m.id.clone().unwrap_or_else(|| target.clone());
                            let dir = req
                                .cache_mounts
                                .join(Digest::sha256_of(id.as_bytes()).hex());
                            std::fs::create_dir_all(&dir).map_err(|e| err(&e))?;
                            if let (Some(uid), gid) = (m.uid, m.gid) {
                                let _ = std::os::unix::fs::chown(
                                    &dir,
                                    Some(uid),
                                    Some(gid.unwrap_or(0)),
                                );
                            }
                            binds.push(Bind {
                                source: dir,
                                target,
                                readonly: false,
                            });
                        }
                        MountType::Tmpfs => {
                            tmpfs.push(target.ok_or_else(|| err(&"tmpfs mount needs a target"))?);
                        }
                        MountType::Bind => {
                            let target = target.ok_or_else(|| err(&"bind mount needs a target"))?;
                            let source = m.source.clone().unwrap_or_else(|| "/".into());
                            if let Some(from) = &m.from {
                                // From another stage (its root, staged since the view is
                                // unmounted afterwards) or an image (its unpacked root).
                                let staged = builder.cache.tmp_dir("bind-from");
                                scratch_dirs.push(staged.clone());
                                let src = if let Some(idx) = stage_ref(from, ds.index) {
                                    let other =
                                        done.lock().expect("lock").get(&idx).cloned().ok_or_else(
                                            || err(&format!("stage {from} is not built")),
                                        )?;
                                    builder
                                        .with_root(&other, from, |root| {
                                            let inner = crate::fsops::source_in_root(
                                                root,
                                                &crate::fsops::clean_in_root(&source),
                                                true,
                                            )?;
                                            context::stage_tree(&inner, &staged, &|_| false)?;
                                            Ok(staged.clone())
                                        })
                                        .map_err(|e| err(&e))?
                                } else {
                                    let desc = (req.resolve_image)(from).map_err(|e| err(&e))?;
                                    let image =
                                        Image::load(&builder.store, &desc).map_err(|e| err(&e))?;
                                    let root = crate::rootfs::base_rootfs(
                                        &builder.store,
                                        &image,
                                        &builder.rootfs_dir,
                                    )
                                    .map_err(|e| err(&e))?
                                    .ok_or_else(|| err(&format!("image {from} has no layers")))?;
                                    crate::fsops::source_in_root(
                                        &root,
                                        &crate::fsops::clean_in_root(&source),
                                        true,
                                    )
                                    .map_err(|e| err(&e))?
                                };
                                mount_keys.push(format!(
                                    "bind-from {from} {target} {}",
                                    context::hash_tree(&src, &|_| false, &src)
                                        .map_err(|e| err(&e))?
                                ));
                                binds.push(Bind {
                                    source: src,
                                    target,
                                    readonly: true,
                                });
                                continue;
                            }
                            context::context_path(&req.context, &source).map_err(|e| err(&e))?;
                            let src = crate::fsops::source_in_root(
                                &req.context,
                                &crate::fsops::clean_in_root(&source),
                                true,
                            )
                            .map_err(|e| err(&e))?;
                            mount_keys.push(format!(
                                "bind {target} {}",
                                context::hash_tree(&src, req.ignored, &req.context)
                                    .map_err(|e| err(&e))?
                            ));
                            binds.push(Bind {
                                source: src,
                                target,
                                readonly: true,
                            });
                        }
                        MountType::Secret => {
                            let id =
                                m.id.clone()
                                    .or_else(|| {
                                        target
                                            .as_deref()
                                            .and_then(|t| t.rsplit('/').next())
                                            .map(str::to_string)
                                    })
                                    .ok_or_else(|| err(&"secret mount needs an id"))?;
                            match req.secrets.get(&id) {
                                Some(src) => {
                                    if let Some(var) = &m.env {
                                        let v =
                                            std::fs::read_to_string(src).map_err(|e| err(&e))?;
                                        env.insert(
                                            var.clone(),
                                            v.trim_end_matches('\n').to_string(),
                                        );
                                    }
                                    if m.env.is_none() || target.is_some() {
                                        let t = target
                                            .clone()
                                            .unwrap_or_else(|| format!("/run/secrets/{id}"));
                                        binds.push(Bind {
                                            source: src.clone(),
                                            target: t,
                                            readonly: true,
                                        });
                                    }
                                }
                                None if m.required => {
                                    return Err(err(&format!(
                                        "secret {id} is required but was not given (--secret id={id},src=FILE)"
                                    )));
                                }
                                None => {}
                            }
                        }
                        MountType::Ssh => {
                            return Err(err(&"RUN --mount=type=ssh is not supported"));
                        }
                    }
                }
                let env_list: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                // Secrets and proxies never enter the cache key or the history.
                let key_env: Vec<&String> = env_list
                    .iter()
                    .filter(|e| !PROXY_ARGS.iter().any(|p| e.starts_with(&format!("{p}="))))
                    .collect();
                let desc = format!(
                    "RUN {} env={key_env:?} user={user} cwd={cwd} net={network:?} mounts={mount_keys:?} tmpfs={tmpfs:?} cache_mounts={:?}",
                    serde_json::to_string(&argv).expect("json"),
                    binds
                        .iter()
                        .filter(|b| !b.readonly)
                        .map(|b| &b.target)
                        .collect::<Vec<_>>()
                );
                let shown = match &r.command {
                    CommandLine::Exec(v) => {
                        format!("RUN {}", serde_json::to_string(v).expect("json"))
                    }
                    CommandLine::Shell(s) => format!("RUN {}", s),
                };
                let created_by = match &r.command {
                    CommandLine::Shell(s) => format!("RUN {} {}", shell.join(" "), s),
                    CommandLine::Exec(_) => shown.clone(),
                };
                echo(&format!("{step} {}", short(&shown)));
                let p = RunParams {
                    argv,
                    env: env_list,
                    cwd,
                    user,
                    network,
                    binds,
                    tmpfs,
                };
                let outcome = builder.run(&mut st, &desc, &created_by, &p);
                for d in scratch_dirs {
                    let _ = std::fs::remove_dir_all(d);
                }
                match outcome {
                    Ok(true) => echo(&format!("{step} CACHED")),
                    Ok(false) => {}
                    Err(RunError::Failed(f)) => {
                        return Err(FrontendError::At {
                            file: req.dockerfile_name.clone(),
                            line,
                            instruction: short(&shown),
                            message: f.message,
                            code: f.code,
                            output: f.output,
                        });
                    }
                    Err(RunError::Build(e)) => return Err(err(&e)),
                }
            }
            Instruction::Copy(c) => {
                let plan = context::plan_copy(
                    builder,
                    req,
                    &st,
                    &vars,
                    context::CopySpec {
                        add: false,
                        sources: &c.sources,
                        dest: &c.dest,
                        heredocs: &c.heredocs,
                        from: c.from.as_deref(),
                        chown: c.chown.as_deref(),
                        chmod: c.chmod.as_ref(),
                        excludes: &c.excludes,
                        parents: c.parents,
                        checksum: None,
                        link: c.link,
                    },
                    done,
                    stage_ref,
                    ds.index,
                )
                .map_err(|e| err(&e))?;
                copy_step(builder, &mut st, &step, &plan, &echo).map_err(|e| err(&e))?;
            }
            Instruction::Add(a) => {
                let plan = context::plan_copy(
                    builder,
                    req,
                    &st,
                    &vars,
                    context::CopySpec {
                        add: true,
                        sources: &a.sources,
                        dest: &a.dest,
                        heredocs: &a.heredocs,
                        from: None,
                        chown: a.chown.as_deref(),
                        chmod: a.chmod.as_ref(),
                        excludes: &a.excludes,
                        parents: false,
                        checksum: a.checksum.as_deref(),
                        link: a.link,
                    },
                    done,
                    stage_ref,
                    ds.index,
                )
                .map_err(|e| err(&e))?;
                copy_step(builder, &mut st, &step, &plan, &echo).map_err(|e| err(&e))?;
            }
        }
    }
    Ok(st)
}

fn copy_step(
    builder: &Builder,
    st: &mut Stage,
    step: &str,
    plan: &context::CopyPlan,
    echo: &dyn Fn(&str),
) -> Result<(), BuildError> {
    echo(&format!("{step} {}", short(&plan.shown)));
    let cached = builder.copy(st, &plan.key, &plan.shown, &plan.params);
    plan.cleanup();
    if cached? {
        echo(&format!("{step} CACHED"));
    }
    Ok(())
}
