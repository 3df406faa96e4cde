//! `hyperbuild build`: parse the Dockerfile, run the build engine on a blocking thread,
//! name the result, optionally push it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use image_build::frontend::{BuildRequest, FrontendError};
use image_build::sandbox::Network;
use image_build::stage::{Builder, StepOptions};
use oci_client::Platform;
use oci_core::{Descriptor, ParsedManifest};

use crate::BuildArgs;
use crate::ctx::{Ctx, build_dir, local_name, parse_compression, parse_format};

fn key_values(
    list: &[String],
    what: &str,
    from_env: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for item in list {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), v.to_string());
            }
            None if from_env && !item.is_empty() => {
                if let Ok(v) = std::env::var(item) {
                    m.insert(item.clone(), v);
                }
            }
            _ => bail!("invalid {what} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(m)
}

fn secrets(list: &[String]) -> anyhow::Result<HashMap<String, PathBuf>> {
    let mut m = HashMap::new();
    for s in list {
        let mut id = None;
        let mut src = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("type", "file")) => {}
                _ => bail!("invalid --secret {s:?}: expected id=ID,src=FILE"),
            }
        }
        let id = id.with_context(|| format!("--secret {s:?} has no id"))?;
        let src = src.with_context(|| format!("--secret {s:?} has no src"))?;
        if !src.is_file() {
            bail!("secret {id}: {} is not a readable file", src.display());
        }
        m.insert(id, src);
    }
    Ok(m)
}

/// Run a build.
pub async fn build(ctx: &Ctx, args: &BuildArgs) -> anyhow::Result<()> {
    let context_dir = args
        .context
        .clone()
        .or_else(|| args.context_pos.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let context_dir = context_dir
        .canonicalize()
        .with_context(|| format!("build context {}", context_dir.display()))?;
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| context_dir.join("Dockerfile"));
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "Dockerfile".into());
    let dockerfile = dockerfile::parse(&text, &name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ignore = match dockerfile::find_ignore_file(&context_dir, &file) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                dockerfile::DockerIgnore::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let quiet = ctx.quiet || args.progress == "quiet";
    let network = match args.network.as_str() {
        "default" | "host" => Network::Host,
        "none" => Network::None,
        other => bail!("unknown --network {other:?}: use default, none or host"),
    };
    let epoch = args.source_date_epoch;
    let created = match epoch {
        Some(e) => oci_core::time::rfc3339(e),
        None => crate::ctx::now_rfc3339(),
    };
    let build_args = key_values(&args.build_args, "--build-arg", true)?;
    let labels = key_values(&args.labels, "--label", false)?;
    let secrets = secrets(&args.secrets)?;
    let names: Vec<String> = args
        .images
        .iter()
        .map(|i| local_name(i))
        .collect::<anyhow::Result<_>>()?;
    let host = Platform::host();
    let dir = build_dir(ctx);
    let echo: Arc<dyn Fn(&str) + Send + Sync> = if quiet {
        Arc::new(|_: &str| {})
    } else {
        Arc::new(|l: &str| eprintln!("{l}"))
    };
    let builder = Builder {
        store: ctx.store.clone(),
        cache: image_build::cache::BuildCache::open(&dir.join("cache"))?,
        rootfs_dir: dir.join("rootfs"),
        opts: StepOptions {
            compression: parse_compression(&args.compression)?,
            format: parse_format(&args.format)?,
            epoch,
            no_cache: args.no_cache,
            created,
        },
        echo,
    };
    std::fs::create_dir_all(&builder.rootfs_dir)?;
    let runtime = tokio::runtime::Handle::current();
    let started = std::time::Instant::now();
    let store = ctx.store.clone();
    let pull_ctx = Ctx {
        store: ctx.store.clone(),
        credentials: ctx.credentials.clone(),
        insecure: ctx.insecure.clone(),
        quiet,
    };
    let target = args.target.clone();
    let (result, failure) = tokio::task::spawn_blocking(move || {
        // FROM and COPY --from images: local first, else pulled for this host's platform.
        let resolve = |image: &str| -> Result<Descriptor, String> {
            let name = local_name(image).map_err(|e| e.to_string())?;
            let desc = match store.resolve(&name).map_err(|e| e.to_string())? {
                Some(d) => d,
                None => {
                    let t = crate::TransferArgs {
                        concurrency: 4,
                        retries: 3,
                    };
                    let pulled = runtime
                        .block_on(crate::commands::pull::pull(&pull_ctx, image, None, &t))
                        .map(|(name, _)| name)
                        .map_err(|e| format!("{e:#}"))?;
                    store
                        .resolve(&pulled)
                        .map_err(|e| e.to_string())?
                        .ok_or("image vanished after pull")?
                }
            };
            if oci_core::manifest::is_index(&desc.media_type) {
                let body = store
                    .read_blob(&desc.digest, 4 << 20)
                    .map_err(|e| e.to_string())?;
                let idx = ParsedManifest::parse(&body, Some(&desc.media_type))
                    .map_err(|e| e.to_string())?;
                let child = Platform::host()
                    .select(&idx.manifests)
                    .cloned()
                    .ok_or("no manifest for this platform in the image index")?;
                return Ok(child);
            }
            Ok(desc)
        };
        let ignored = |rel: &str| ignore.as_ref().is_some_and(|i| i.matches(rel));
        let req = BuildRequest {
            dockerfile: &dockerfile,
            dockerfile_name: name,
            context: context_dir,
            ignored: &ignored,
            build_args,
            target,
            labels,
            platform: host.clone(),
            network,
            secrets,
            resolve_image: &resolve,
            cache_mounts: dir.join("cache-mounts"),
        };
        match image_build::frontend::build(&builder, &req) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        }
    })
    .await?;
    let result = match (result, failure) {
        (Some(r), _) => r,
        (
            None,
            Some(FrontendError::At {
                file,
                line,
                instruction,
                message,
                output,
                ..
            }),
        ) => {
            // Quiet builds did not show the step's output as it ran: show its end now.
            if quiet && !output.is_empty() {
                eprintln!("{output}");
            }
            bail!("{file}:{line}: {instruction}: {message}");
        }
        (None, Some(e)) => bail!("{e}"),
        (None, None) => unreachable!("build returned nothing"),
    };
    for n in &names {
        ctx.store.set_ref(n, result.manifest.clone())?;
    }
    if names.is_empty() {
        ctx.store.add_untagged(result.manifest.clone())?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, result.id.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !quiet {
        eprintln!(
            "Built {} in {:.1}s: {} step(s) run, {} cached",
            result.id,
            started.elapsed().as_secs_f64(),
            result.executed,
            result.cached
        );
    }
    if args.push {
        if args.images.is_empty() {
            bail!("--push needs a name (-i/-t)");
        }
        for image in &args.images {
            let t = crate::TransferArgs {
                concurrency: 4,
                retries: 3,
            };
            crate::commands::push::push(ctx, image, None, &t).await?;
        }
    }
    println!("{}", result.id);
    Ok(())
}
