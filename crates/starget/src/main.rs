//! starget: list and fetch single files from eStargz images in a registry, with HTTP Range
//! requests: the TOC first, then only the chunks the files need.

mod config;
mod error;
mod fetch;
mod remote;
mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{CommandFactory, Parser, Subcommand};
use oci_client::{ClientConfig, Credential, CredentialStore, Platform, Reference, RegistryClient};
use tracing_subscriber::EnvFilter;

use crate::error::StargetError;
use crate::view::Kind;

/// Command line.
#[derive(Parser)]
#[command(
    name = "starget",
    version,
    about = "Fetch single files from eStargz images without pulling layers"
)]
struct Cli {
    /// Range requests in flight.
    #[arg(long, global = true)]
    concurrency: Option<usize>,
    /// Retries per request (exponential backoff with jitter, Retry-After honoured).
    #[arg(long, global = true)]
    max_retries: Option<u32>,
    /// Do not verify chunk and file digests against the TOC.
    #[arg(long, global = true)]
    skip_verify: bool,
    /// USER:PASSWORD for the registry (else Docker's config.json and the config file).
    #[arg(
        long,
        global = true,
        env = "STARGET_CREDENTIAL",
        hide_env_values = true
    )]
    credential: Option<String>,
    /// Configuration file (default ~/.stargz-get/config.yaml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Registry reached over plain HTTP (repeatable; loopback always is).
    #[arg(long = "insecure-registry", global = true)]
    insecure: Vec<String>,
    /// Platform of a multi-platform image (os/arch[/variant]).
    #[arg(long, global = true)]
    platform: Option<String>,
    /// No progress bar.
    #[arg(long, global = true)]
    no_progress: bool,
    /// More logs (secrets are redacted).
    #[arg(long, short = 'v', global = true)]
    verbose: bool,
    /// Debug logs (secrets are redacted).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Layers with digest, media type, size, whether eStargz, and file counts.
    Info {
        /// Image reference.
        image: String,
    },
    /// List files from the TOCs (the merged view of all layers).
    Ls {
        /// Image reference.
        image: String,
        /// Only this layer.
        #[arg(long)]
        layer: Option<String>,
        /// Mode, owner, size and time.
        #[arg(long, short = 'l')]
        long: bool,
        /// Path, directory or glob.
        pattern: Option<String>,
    },
    /// Fetch files, directories or patterns (`.`, `/`, `bin/`, `bin/echo`, `*.conf`).
    Get {
        /// Image reference.
        image: String,
        /// What to fetch.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Output directory.
        #[arg(long, short = 'o', default_value = ".")]
        output: PathBuf,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },
}

use oci_core::units::human_bytes as human;

async fn run(cli: Cli) -> Result<(), StargetError> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "starget",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let file = config::load(cli.config.as_deref())?;
    let image = match &cli.command {
        Command::Info { image } | Command::Ls { image, .. } | Command::Get { image, .. } => {
            image.clone()
        }
        Command::Completions { .. } => unreachable!(),
    };
    let r: Reference = image
        .parse()
        .map_err(|e| StargetError::Usage(format!("{e}")))?;
    let settings = file
        .registries
        .get(&r.registry)
        .cloned()
        .unwrap_or_default();
    let explicit = match &cli.credential {
        Some(c) => Some(
            oci_client::credentials::parse_user_password(c)
                .ok_or_else(|| StargetError::Usage("--credential must be USER:PASSWORD".into()))?,
        ),
        None => match (&settings.username, &settings.password) {
            (Some(u), Some(p)) => Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }),
            _ => None,
        },
    };
    let mut insecure = cli.insecure.clone();
    if settings.insecure {
        insecure.push(r.registry.clone());
    }
    let max_retries = cli.max_retries.or(file.max_retries).unwrap_or(3);
    let client = RegistryClient::new(ClientConfig {
        insecure_registries: insecure,
        credentials: CredentialStore::default(),
        explicit,
        max_retries,
        ..ClientConfig::default()
    })?;
    let remote = remote::Remote {
        client,
        transferred: Arc::new(AtomicU64::new(0)),
    };
    let platform = match &cli.platform {
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| StargetError::Usage(e.to_string()))?,
        None => Platform::host(),
    };
    let img = remote.open(&r, &platform, !cli.skip_verify).await?;
    match cli.command {
        Command::Info { .. } => {
            println!("{}  {}", img.reference, img.digest);
            for (i, l) in img.layers.iter().enumerate() {
                let (kind, files) = match &l.files {
                    Some(f) => (
                        "estargz",
                        f.iter()
                            .filter(|e| e.kind == Kind::File)
                            .count()
                            .to_string(),
                    ),
                    None => ("-", "-".into()),
                };
                println!(
                    "{i:>3}  {}  {:<48}  {:>10}  {kind:<7}  {files} files",
                    l.desc.digest,
                    l.desc.media_type,
                    human(l.desc.size)
                );
            }
        }
        Command::Ls {
            layer,
            long,
            pattern,
            ..
        } => {
            let mut per_layer = Vec::new();
            for (i, l) in img.layers.iter().enumerate() {
                if layer.as_deref().is_some_and(|d| {
                    !l.desc.digest.to_string().starts_with(d) && d != i.to_string()
                }) {
                    continue;
                }
                let files = l
                    .files
                    .clone()
                    .ok_or_else(|| StargetError::NotEstargz(l.desc.digest.to_string()))?;
                per_layer.push(
                    files
                        .into_iter()
                        .map(|mut f| {
                            f.layer = i;
                            f
                        })
                        .collect(),
                );
            }
            let merged = view::merge(per_layer);
            let selected = view::select(&merged, pattern.as_deref().unwrap_or("/"));
            for e in selected {
                let name = match (&e.kind, &e.link) {
                    (Kind::Dir, _) => format!("{}/", e.path),
                    (Kind::Symlink, Some(t)) => format!("{} -> {t}", e.path),
                    _ => e.path.clone(),
                };
                if long {
                    println!(
                        "{:o}  {:>5}:{:<5}  {:>10}  {}  {name}",
                        e.mode & 0o7777,
                        e.uid,
                        e.gid,
                        e.size,
                        e.modtime
                    );
                } else {
                    println!("{name}");
                }
            }
        }
        Command::Get { paths, output, .. } => {
            let mut per_layer = Vec::new();
            for (i, l) in img.layers.iter().enumerate() {
                match &l.files {
                    Some(files) => per_layer.push(
                        files
                            .iter()
                            .cloned()
                            .map(|mut f| {
                                f.layer = i;
                                f
                            })
                            .collect(),
                    ),
                    None => return Err(StargetError::NotEstargz(l.desc.digest.to_string())),
                }
            }
            let merged = view::merge(per_layer);
            let mut selected = Vec::new();
            for p in &paths {
                let s = view::select(&merged, p);
                if s.is_empty() {
                    return Err(StargetError::NotFound(p.clone()));
                }
                selected.extend(s);
            }
            selected.sort_by(|a, b| a.path.cmp(&b.path));
            selected.dedup_by(|a, b| a.path == b.path);
            let layer_digests: Vec<_> = img.layers.iter().map(|l| l.desc.digest.clone()).collect();
            let opts = fetch::FetchOptions {
                concurrency: cli.concurrency.or(file.concurrency).unwrap_or(4),
                max_retries,
                skip_verify: cli.skip_verify,
                progress: !cli.no_progress && std::io::stderr().is_terminal(),
                ranges_per_request: 16,
            };
            let stats =
                fetch::fetch(&remote, &r, &layer_digests, &selected, &output, &opts).await?;
            let layers_total: u64 = selected
                .iter()
                .map(|e| e.layer)
                .collect::<std::collections::BTreeSet<_>>()
                .iter()
                .map(|i| img.layers[*i].desc.size)
                .sum();
            let moved = remote.transferred.load(Ordering::Relaxed);
            eprintln!(
                "fetched {} file(s): {} transferred ({moved} bytes), from layers of {} ({layers_total} bytes){}",
                stats.files,
                human(moved),
                human(layers_total),
                if stats.resumed_chunks > 0 {
                    format!(
                        ", {} chunk(s) resumed from .partial files",
                        stats.resumed_chunks
                    )
                } else {
                    String::new()
                }
            );
        }
        Command::Completions { .. } => unreachable!(),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = if cli.debug {
        "debug"
    } else if cli.verbose {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("STARGET_LOG").unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("starget: error[{}]: {e}", e.exit_code());
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
