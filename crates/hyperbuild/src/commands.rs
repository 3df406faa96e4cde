//! The subcommands.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use image_store::ImageStore;
use image_store::archive::ArchiveFormat;
use image_transfer::{PullOptions, PushOptions};
use oci_client::{ClientConfig, Credential, CredentialStore, Platform, Reference, RegistryClient};
use oci_core::{Descriptor, Digest, ParsedManifest};

use crate::progress::{display, human};
use crate::{Cli, Command, TransferArgs};

/// Where the image store lives unless told otherwise.
fn default_root() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("hyperbuild")
}

pub(crate) struct Ctx {
    pub(crate) store: Arc<ImageStore>,
    pub(crate) credentials: CredentialStore,
    pub(crate) insecure: Vec<String>,
    pub(crate) quiet: bool,
}

impl Ctx {
    pub(crate) fn client(&self, transfer: Option<&TransferArgs>) -> anyhow::Result<RegistryClient> {
        let cfg = ClientConfig {
            insecure_registries: self.insecure.clone(),
            credentials: self.credentials.clone(),
            max_retries: transfer.map_or(3, |t| t.retries),
            ..ClientConfig::default()
        };
        Ok(RegistryClient::new(cfg)?)
    }
}

/// Where builds keep their cache and unpacked base images: next to the store.
pub(crate) fn build_dir(ctx: &Ctx) -> PathBuf {
    ctx.store.root().join("build")
}

/// `--compression`.
pub(crate) fn parse_compression(s: &str) -> anyhow::Result<image_build::layer::Compression> {
    image_build::layer::Compression::parse(s)
        .with_context(|| format!("unknown compression {s:?}: use gzip, zstd or uncompressed"))
}

/// `--format`.
pub(crate) fn parse_format(s: &str) -> anyhow::Result<image_build::image::Format> {
    match s {
        "oci" => Ok(image_build::image::Format::Oci),
        "docker" => Ok(image_build::image::Format::Docker),
        other => bail!("unknown format {other:?}: use oci or docker"),
    }
}

/// The current time as RFC 3339 UTC, or SOURCE_DATE_EPOCH when set.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(oci_core::time::now);
    oci_core::time::rfc3339(secs)
}

/// Parse a user-given image name the way Docker does.
pub(crate) fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    s.parse::<Reference>()
        .with_context(|| format!("invalid image reference {s:?}"))
}

/// The store name of a user-given image: a digest as is, else the normalized reference.
pub(crate) fn local_name(s: &str) -> anyhow::Result<String> {
    if s.parse::<Digest>().is_ok() {
        return Ok(s.to_string());
    }
    Ok(parse_ref(s)?.to_string())
}

/// Run the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Absolute: build steps hand paths under the store to runc, which resolves relative
    // paths against its bundle directory.
    let root = std::path::absolute(cli.root.clone().unwrap_or_else(default_root))
        .context("resolving the store directory")?;
    let store = Arc::new(
        ImageStore::open(&root)
            .with_context(|| format!("opening the image store at {}", root.display()))?,
    );
    let ctx = Ctx {
        store,
        credentials: cli
            .authfile
            .clone()
            .map(CredentialStore::single)
            .unwrap_or_default(),
        insecure: cli.insecure.clone(),
        quiet: cli.quiet,
    };
    let command = match cli.command {
        Some(c) => c,
        None if cli.build.images.is_empty()
            && cli.build.context.is_none()
            && cli.build.context_pos.is_none()
            && cli.build.file.is_none() =>
        {
            bail!(
                "nothing to do: give a subcommand (see --help) or the build short form -c CONTEXT -f DOCKERFILE -i IMAGE"
            );
        }
        None => Command::Build(cli.build.clone()),
    };
    match command {
        Command::Build(args) => crate::build::build(&ctx, &args).await,
        Command::Push {
            image,
            dest,
            transfer,
        } => {
            let digest = push(&ctx, &image, dest.as_deref(), &transfer).await?;
            println!("{digest}");
            Ok(())
        }
        Command::Pull {
            image,
            platform,
            transfer,
        } => {
            let (_, digest) = pull(&ctx, &image, platform.as_deref(), &transfer).await?;
            println!("{digest}");
            Ok(())
        }
        Command::Login {
            registry,
            username,
            password,
            password_stdin,
        } => login(&ctx, &registry, username, password, password_stdin).await,
        Command::Logout { registry } => {
            if ctx.credentials.logout(&registry)? {
                println!("Removed login credentials for {registry}");
            } else {
                println!("Not logged in to {registry}");
            }
            Ok(())
        }
        Command::Images { digests, json } => images(&ctx, digests, json),
        Command::Tag { source, target } => {
            let desc = resolve_local(&ctx, &source)?;
            ctx.store.set_ref(&local_name(&target)?, desc)?;
            Ok(())
        }
        Command::Rmi { images } => rmi(&ctx, &images),
        Command::Inspect {
            image,
            remote,
            platform,
        } => inspect(&ctx, &image, remote, platform.as_deref()).await,
        Command::Save {
            images,
            output,
            format,
        } => {
            let format = match format.as_str() {
                "docker-archive" | "docker" => ArchiveFormat::Docker,
                "oci-archive" | "oci" => ArchiveFormat::Oci,
                other => {
                    bail!("unknown archive format {other:?}: use docker-archive or oci-archive")
                }
            };
            let names = images
                .iter()
                .map(|i| resolve_name(&ctx, i))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = ctx.store.clone();
            let out = output.clone();
            tokio::task::spawn_blocking(move || {
                image_store::archive::save(&store, &names, format, &out)
            })
            .await??;
            if !ctx.quiet {
                eprintln!("Saved {} image(s) to {}", images.len(), output.display());
            }
            Ok(())
        }
        Command::Load { input } => {
            let store = ctx.store.clone();
            let loaded =
                tokio::task::spawn_blocking(move || image_store::archive::load(&store, &input))
                    .await??;
            for name in loaded {
                println!("Loaded image: {name}");
            }
            Ok(())
        }
        Command::Unpack { image, dir } => unpack(&ctx, &image, &dir).await,
        Command::Import {
            tarball,
            image,
            compression,
            format,
            platform,
            cmd,
        } => {
            let platform = match platform {
                Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
                None => Platform::host(),
            };
            let opts = image_build::import::ImportOptions {
                compression: parse_compression(&compression)?,
                format: parse_format(&format)?,
                os: platform.os,
                architecture: platform.architecture,
                created: now_rfc3339(),
                cmd: (!cmd.is_empty()).then_some(cmd),
            };
            let name = local_name(&image)?;
            let store = ctx.store.clone();
            let (desc, id) = tokio::task::spawn_blocking(move || {
                image_build::import::import(&store, &tarball, &opts)
            })
            .await?
            .context("importing")?;
            ctx.store.set_ref(&name, desc)?;
            println!("{id}");
            Ok(())
        }
        Command::Convert {
            estargz: _,
            source,
            dest,
            format,
        } => {
            let mut desc = resolve_local(&ctx, &source)?;
            if oci_core::manifest::is_index(&desc.media_type) {
                let body = ctx.store.read_blob(&desc.digest, 4 << 20)?;
                let idx = ParsedManifest::parse(&body, Some(&desc.media_type))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                desc = Platform::host()
                    .select(&idx.manifests)
                    .cloned()
                    .context("no manifest for this platform in the image index")?;
            }
            let format = parse_format(&format)?;
            let store = ctx.store.clone();
            let converted = tokio::task::spawn_blocking(move || {
                image_build::convert::convert_to_estargz(&store, &desc, format)
            })
            .await?
            .context("converting to eStargz")?;
            ctx.store
                .set_ref(&local_name(&dest)?, converted.manifest.clone())?;
            if !ctx.quiet {
                eprintln!(
                    "{} layer(s) rewritten as eStargz, {} already eStargz",
                    converted.rewritten, converted.kept
                );
            }
            println!("{}", converted.manifest.digest);
            Ok(())
        }
        Command::Prune => {
            let build = build_dir(&ctx);
            let freed = image_build::cache::BuildCache::open(&build.join("cache"))?.prune()?;
            let rootfs = build.join("rootfs");
            if rootfs.exists() {
                std::fs::remove_dir_all(&rootfs)
                    .with_context(|| format!("removing {}", rootfs.display()))?;
            }
            let stats = ctx.store.gc()?;
            println!(
                "Build cache cleared ({} freed); {} unused blob(s) removed ({})",
                human(freed),
                stats.blobs_removed,
                human(stats.bytes_freed)
            );
            Ok(())
        }
    }
}

/// The store name an image is known under (its normalized name, or a digest).
fn resolve_name(ctx: &Ctx, image: &str) -> anyhow::Result<String> {
    let name = local_name(image)?;
    if ctx.store.resolve(&name)?.is_none() {
        bail!(
            "no image {image:?} in the local store ({})",
            ctx.store.root().display()
        );
    }
    Ok(name)
}

fn resolve_local(ctx: &Ctx, image: &str) -> anyhow::Result<Descriptor> {
    let name = local_name(image)?;
    ctx.store.resolve(&name)?.with_context(|| {
        format!(
            "no image {image:?} in the local store ({})",
            ctx.store.root().display()
        )
    })
}

pub(crate) async fn push(
    ctx: &Ctx,
    image: &str,
    dest: Option<&str>,
    t: &TransferArgs,
) -> anyhow::Result<String> {
    let local = resolve_name(ctx, image)?;
    let target = parse_ref(dest.unwrap_or(image))?;
    let client = ctx.client(Some(t))?;
    let shown = display(ctx.quiet);
    let opts = PushOptions {
        concurrency: t.concurrency,
        max_retries: t.retries,
        ..PushOptions::default()
    };
    let started = std::time::Instant::now();
    let pushed = image_transfer::push(&client, &ctx.store, &local, &target, &opts, &shown)
        .await
        .with_context(|| format!("pushing {target}"))?;
    let digest = pushed.digest.map(|d| d.to_string()).unwrap_or_default();
    if !ctx.quiet {
        eprintln!(
            "Pushed {target}: {} uploaded, {} blob(s) already there, {} mounted, in {:.1}s",
            human(pushed.uploaded),
            pushed.existing,
            pushed.mounted,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(digest)
}

pub(crate) async fn pull(
    ctx: &Ctx,
    image: &str,
    platform: Option<&str>,
    t: &TransferArgs,
) -> anyhow::Result<(String, oci_core::Digest)> {
    let r = parse_ref(image)?;
    let platform = match platform {
        Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let client = ctx.client(Some(t))?;
    let shown = display(ctx.quiet);
    let opts = PullOptions {
        platform,
        concurrency: t.concurrency,
        max_retries: t.retries,
    };
    let started = std::time::Instant::now();
    let pulled = image_transfer::pull(&client, &ctx.store, &r, &opts, &shown)
        .await
        .with_context(|| format!("pulling {r}"))?;
    if !ctx.quiet {
        eprintln!(
            "Pulled {}: {} downloaded, {}/{} blob(s) already present, in {:.1}s",
            pulled.name,
            human(pulled.downloaded),
            pulled.already_present,
            pulled.blobs,
            started.elapsed().as_secs_f64()
        );
    }
    Ok((pulled.name, pulled.manifest.digest))
}

async fn login(
    ctx: &Ctx,
    registry: &str,
    username: Option<String>,
    password: Option<String>,
    stdin: bool,
) -> anyhow::Result<()> {
    let username = match username {
        Some(u) => u,
        None => {
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    let password = match (password, stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => rpassword::prompt_password("Password: ")?,
    };
    if username.is_empty() || password.is_empty() {
        bail!("a user name and a password are required");
    }
    let credential = Credential::Basic { username, password };
    // Check the credentials against the registry before saving them.
    let cfg = ClientConfig {
        insecure_registries: ctx.insecure.clone(),
        credentials: ctx.credentials.clone(),
        explicit: Some(credential.clone()),
        ..ClientConfig::default()
    };
    let client = RegistryClient::new(cfg)?;
    let probe: Reference = format!("{registry}/login-probe")
        .parse()
        .context("invalid registry name")?;
    let url = format!("{}/v2/", client.base_url(&probe));
    let resp = client
        .send(&probe, &[], "checking credentials", &|http| {
            Ok(http.get(&url))
        })
        .await
        .with_context(|| format!("logging in to {registry}"))?;
    if !resp.status().is_success() {
        bail!(
            "logging in to {registry}: the registry answered {}",
            resp.status()
        );
    }
    ctx.credentials.login(registry, &credential)?;
    println!("Login Succeeded");
    Ok(())
}

/// Config digest, total size and creation time of an image manifest in the store.
fn summarize(store: &ImageStore, desc: &Descriptor) -> Option<(Digest, u64, String)> {
    let body = store.read_blob(&desc.digest, 4 << 20).ok()?;
    let m = ParsedManifest::parse(&body, Some(&desc.media_type)).ok()?;
    let config = m.config?;
    let size = config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    let created = store
        .read_blob(&config.digest, 4 << 20)
        .ok()
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
        .and_then(|v| {
            v.get("created")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    Some((config.digest, size, created))
}

fn images(ctx: &Ctx, digests: bool, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (name, desc) in ctx.store.list()? {
        let (repo, tag) = match name.parse::<Reference>() {
            Ok(r) => {
                let familiar = r.with_tag("x").familiar();
                (
                    familiar[..familiar.len() - 2].to_string(),
                    r.tag.clone().unwrap_or_else(|| "<none>".into()),
                )
            }
            Err(_) => (name.clone(), "<none>".into()),
        };
        let (id, size, created) =
            summarize(&ctx.store, &desc).unwrap_or((desc.digest.clone(), desc.size, String::new()));
        rows.push((repo, tag, desc.digest.clone(), id, size, created));
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(repo, tag, digest, id, size, created)| {
                serde_json::json!({"repository": repo, "tag": tag, "digest": digest.to_string(), "id": id.to_string(), "size": size, "created": created})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if digests {
        println!(
            "{:<40} {:<16} {:<72} {:<14} {:>10}",
            "REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "SIZE"
        );
    } else {
        println!(
            "{:<40} {:<16} {:<14} {:<22} {:>10}",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
        );
    }
    for (repo, tag, digest, id, size, created) in rows {
        let short_id = &id.hex()[..12];
        if digests {
            println!(
                "{repo:<40} {tag:<16} {:<72} {short_id:<14} {:>10}",
                digest.to_string(),
                human(size)
            );
        } else {
            println!(
                "{repo:<40} {tag:<16} {short_id:<14} {:<22} {:>10}",
                created.get(..19).unwrap_or(&created),
                human(size)
            );
        }
    }
    Ok(())
}

fn rmi(ctx: &Ctx, images: &[String]) -> anyhow::Result<()> {
    let mut failed = false;
    for image in images {
        let name = local_name(image)?;
        if ctx.store.remove_ref(&name)? {
            println!("Untagged: {name}");
        } else {
            eprintln!("Error: no image {image:?} in the local store");
            failed = true;
        }
    }
    let stats = ctx.store.gc()?;
    if stats.blobs_removed > 0 {
        println!(
            "Deleted {} blob(s), {} freed",
            stats.blobs_removed,
            human(stats.bytes_freed)
        );
    }
    if failed {
        bail!("some images were not found");
    }
    Ok(())
}

async fn inspect(
    ctx: &Ctx,
    image: &str,
    remote: bool,
    platform: Option<&str>,
) -> anyhow::Result<()> {
    let local = if remote {
        None
    } else {
        ctx.store.resolve(&local_name(image)?)?
    };
    let (name, digest, media_type, manifest, config) = match local {
        Some(desc) => {
            let body = ctx.store.read_blob(&desc.digest, 4 << 20)?;
            let config = config_of(&body, &desc.media_type, |d| {
                Ok(ctx.store.read_blob(d, 4 << 20)?)
            })
            .await?;
            (
                local_name(image)?,
                desc.digest,
                desc.media_type,
                body,
                config,
            )
        }
        None => {
            let r = parse_ref(image)?;
            let client = ctx.client(None)?;
            let (mut body, mut mt, mut digest) = client.get_manifest(&r).await?;
            let parsed =
                ParsedManifest::parse(&body, Some(&mt)).map_err(|e| anyhow::anyhow!("{r}: {e}"))?;
            if parsed.is_index() {
                let p = match platform {
                    Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
                    None => Platform::host(),
                };
                let child = p
                    .select(&parsed.manifests)
                    .with_context(|| format!("no manifest for {p} in {r}"))?;
                (body, mt, digest) = client
                    .get_manifest(&r.with_digest(child.digest.clone()))
                    .await?;
            }
            let parsed =
                ParsedManifest::parse(&body, Some(&mt)).map_err(|e| anyhow::anyhow!("{r}: {e}"))?;
            let config = match &parsed.config {
                Some(c) => Some(fetch_small_blob(&client, &r, c).await?),
                None => None,
            };
            (r.to_string(), digest, mt, body.to_vec(), config)
        }
    };
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let config: serde_json::Value = config
        .map(|c| serde_json::from_slice(&c))
        .transpose()?
        .unwrap_or_default();
    let layers: Vec<serde_json::Value> = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .map(|l| l.iter().filter_map(|d| d.get("digest").cloned()).collect())
        .unwrap_or_default();
    let out = serde_json::json!({
        "Name": name,
        "Digest": digest.to_string(),
        "MediaType": media_type,
        "Created": config.get("created"),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
        "Layers": layers,
        "Config": config.get("config"),
        "Manifest": manifest,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn config_of(
    body: &[u8],
    media_type: &str,
    read: impl Fn(&Digest) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let parsed =
        ParsedManifest::parse(body, Some(media_type)).map_err(|e| anyhow::anyhow!("{e}"))?;
    parsed.config.map(|c| read(&c.digest)).transpose()
}

async fn fetch_small_blob(
    client: &RegistryClient,
    r: &Reference,
    d: &Descriptor,
) -> anyhow::Result<Vec<u8>> {
    if d.size > 4 << 20 {
        bail!("config blob {} is larger than 4 MiB", d.digest);
    }
    let (resp, _) = client.get_blob(r, &d.digest, 0).await?;
    let bytes = resp.bytes().await.context("downloading the config")?;
    let got = Digest::of(d.digest.algorithm(), &bytes);
    if got != d.digest {
        bail!("config digest mismatch: expected {}, got {got}", d.digest);
    }
    Ok(bytes.to_vec())
}

async fn unpack(ctx: &Ctx, image: &str, dir: &Path) -> anyhow::Result<()> {
    let desc = match ctx.store.resolve(&local_name(image)?)? {
        Some(d) => d,
        None => {
            let t = TransferArgs {
                concurrency: 4,
                retries: 3,
            };
            let (name, _) = pull(ctx, image, None, &t).await?;
            ctx.store
                .resolve(&name)?
                .context("image vanished after pull")?
        }
    };
    let mut body = ctx.store.read_blob(&desc.digest, 4 << 20)?;
    let mut parsed =
        ParsedManifest::parse(&body, Some(&desc.media_type)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if parsed.is_index() {
        let host = Platform::host();
        let child = host
            .select(&parsed.manifests)
            .with_context(|| format!("no manifest for {host} in the image index"))?
            .clone();
        body = ctx.store.read_blob(&child.digest, 4 << 20)?;
        parsed = ParsedManifest::parse(&body, Some(&child.media_type))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config: serde_json::Value = match &parsed.config {
        Some(c) => serde_json::from_slice(&ctx.store.read_blob(&c.digest, 4 << 20)?)?,
        None => serde_json::Value::Null,
    };
    let layers: Vec<(PathBuf, String)> = parsed
        .layers
        .iter()
        .map(|l| (ctx.store.blob_path(&l.digest), l.media_type.clone()))
        .collect();
    let target = dir.to_path_buf();
    let stats = tokio::task::spawn_blocking(move || {
        let opts = image_unpack::UnpackOptions::default();
        image_unpack::unpack(
            layers.iter().map(|(p, m)| (p.as_path(), m.as_str())),
            &target,
            &opts,
        )
    })
    .await??;
    if let Some(diff_ids) = config
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
    {
        for (i, (got, want)) in stats.iter().zip(diff_ids).enumerate() {
            if want.as_str() != Some(got.diff_id.to_string().as_str()) {
                bail!(
                    "layer {i}: uncompressed digest {} does not match the config's diff_id {want}",
                    got.diff_id
                );
            }
        }
    }
    if !ctx.quiet {
        eprintln!("Unpacked {} layer(s) into {}", stats.len(), dir.display());
    }
    Ok(())
}
