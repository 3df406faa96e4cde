//! hyperregistry: an OCI Distribution v1.1 registry.
//!
//! With no configuration it keeps blobs and a SQLite database under `./registry-data` and
//! listens on `0.0.0.0:5000`.

mod config;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand};
use registry_api::AppState;
use registry_storage::{BlobStore, FsBlobStore};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Command line.
#[derive(Parser)]
#[command(
    name = "hyperregistry",
    version,
    about = "An OCI Distribution v1.1 registry"
)]
struct Cli {
    /// YAML or TOML configuration file (keys as in Distribution: http.addr, storage.filesystem.rootdirectory, database.url).
    #[arg(long, short = 'c', global = true, env = "REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (the default).
    Serve,
    /// Collect garbage: delete what no tag (or, without --delete-untagged, no manifest)
    /// references and what is older than the grace period; print what was freed.
    Gc(GcArgs),
}

/// `hyperregistry gc` options.
#[derive(clap::Args)]
struct GcArgs {
    /// Report what would be freed, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete manifests that no tag reaches (index children and referrers of tagged
    /// manifests stay).
    #[arg(long)]
    delete_untagged: bool,
    /// Keep everything written or used more recently than this (default: gc.graceperiod).
    #[arg(long)]
    grace: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn init_logging(cfg: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let root = &cfg.storage.filesystem.rootdirectory;
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating data directory {}", root.display()))?;
    let blobs = FsBlobStore::open(root)
        .with_context(|| format!("opening blob storage in {}", root.display()))?
        .with_max_upload(cfg.storage.maxblobsize);
    let url = cfg.database_url();
    let meta = registry_meta::connect(&url).await.with_context(|| {
        format!(
            "opening the metadata database {}",
            registry_meta::redact(&url)
        )
    })?;
    // Upload files without a session row belong to monolithic uploads that a crash cut
    // short (they never get one): nothing can finish them.
    let mut orphans = 0;
    for id in blobs.upload_ids().context("listing upload sessions")? {
        if meta.upload_repo(&id).await?.is_none() {
            blobs.cancel_upload(&id).await?;
            orphans += 1;
        }
    }
    if orphans > 0 {
        tracing::info!(orphans, "removed data of interrupted monolithic uploads");
    }
    let grace = cfg.gc.grace()?;
    let gc_interval = cfg.gc.interval()?;
    // Held (shared) while serving: an offline `hyperregistry gc` refuses to sweep under a
    // live server whose locks it cannot see.
    let _serving = serve_lock(root)?;
    let state = AppState::new(Arc::new(blobs), meta.clone(), cfg.policy()).with_gc_grace(grace);
    let external = registry_external::External::start(
        state.clone(),
        root,
        &cfg.external,
        &cfg.replication,
        &cfg.proxies,
    )
    .context("starting external registries, replication and pull-through caches")?;
    let mut state = state.with_push_hook(external.push_hook());
    if let Some(proxy) = external.interceptor() {
        state = state.with_interceptor(proxy);
    }
    if let Some(every) = gc_interval {
        spawn_periodic_gc(state.clone(), every, grace, cfg.gc.deleteuntagged);
    }
    let metrics = Arc::new(
        registry_mgmt::metrics::Metrics::new(meta.clone()).context("creating the metrics")?,
    );
    let notifier = Arc::new(
        registry_mgmt::notify::Notifier::start(
            &cfg.notifications,
            registry_mgmt::notify::Source::new(&cfg.http.addr),
            Some(metrics.clone()),
        )
        .context("starting webhook notifications")?,
    );
    let state = state.with_events(notifier.clone());
    let mgmt = registry_mgmt::MgmtState::new(state.clone(), metrics.clone());
    let app = registry_mgmt::metrics::instrument(
        registry_api::router(state)
            .merge(external.router())
            .merge(registry_mgmt::router(mgmt)),
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(&cfg.http.addr)
        .await
        .with_context(|| format!("listening on {}", cfg.http.addr))?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(addr = %cfg.http.addr, root = %root.display(), "hyperregistry listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving HTTP")?;
    notifier.shutdown(std::time::Duration::from_secs(5)).await;
    meta.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The lock file marking a data directory that a server is using.
fn serve_lock_path(root: &std::path::Path) -> PathBuf {
    root.join("serve.lock")
}

/// Take the data directory's serve lock, shared (several servers may run on it).
fn serve_lock(root: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = serve_lock_path(root);
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock_shared()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Run GC inside the server every `every`, under the same locks as the API.
fn spawn_periodic_gc(
    state: AppState,
    every: std::time::Duration,
    grace: std::time::Duration,
    delete_untagged: bool,
) {
    tracing::info!(interval = ?every, ?grace, delete_untagged, "periodic garbage collection on");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let opts = registry_gc::GcOptions {
                dry_run: false,
                delete_untagged,
                grace,
            };
            match registry_gc::run(
                state.meta.clone(),
                state.blobs.clone(),
                state.coord.clone(),
                opts,
            )
            .await
            {
                Ok(report) => {
                    for (repo, digest) in &report.swept_manifests {
                        state.cache.invalidate(repo, [digest.to_string().as_str()]);
                    }
                    tracing::info!(
                        manifests_deleted = report.manifests_deleted,
                        links_removed = report.links_removed,
                        blobs_deleted = report.blobs_deleted,
                        bytes_freed = report.bytes_freed,
                        seconds = report.duration.as_secs_f64(),
                        "garbage collection done"
                    );
                }
                Err(registry_gc::GcError::Busy) => {
                    tracing::info!("garbage collection skipped: another one is running");
                }
                Err(e) => tracing::error!(error = %e, "garbage collection failed"),
            }
        }
    });
}

/// `hyperregistry gc`: open the storage and database `serve` uses, collect, report.
async fn gc(cfg: Config, args: GcArgs) -> anyhow::Result<()> {
    let grace = match &args.grace {
        Some(g) => humantime::parse_duration(g).with_context(|| format!("--grace {g:?}"))?,
        None => cfg.gc.grace()?,
    };
    let root = &cfg.storage.filesystem.rootdirectory;
    anyhow::ensure!(
        root.is_dir(),
        "data directory {} does not exist",
        root.display()
    );
    // Sweeping needs the locks the server takes; a separate process cannot see them.
    let _exclusive = if args.dry_run {
        None
    } else {
        let path = serve_lock_path(root);
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Some(file),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "a hyperregistry server is running on {}: stop it, or let it collect \
                 (gc.interval), or use --dry-run",
                root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    };
    let blobs = FsBlobStore::open(root)
        .with_context(|| format!("opening blob storage in {}", root.display()))?;
    let url = cfg.database_url();
    let meta = registry_meta::connect(&url).await.with_context(|| {
        format!(
            "opening the metadata database {}",
            registry_meta::redact(&url)
        )
    })?;
    let coord: Arc<dyn registry_coord::Coordinator> =
        Arc::new(registry_coord::LocalCoordinator::new());
    let opts = registry_gc::GcOptions {
        dry_run: args.dry_run,
        delete_untagged: args.delete_untagged,
        grace,
    };
    let report = registry_gc::run(meta.clone(), Arc::new(blobs), coord, opts)
        .await
        .context("garbage collection")?;
    meta.close().await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let verb = if report.dry_run {
            "would free"
        } else {
            "freed"
        };
        println!(
            "{verb} {} bytes: {} blobs, {} manifests, {} repository links ({:.3}s)",
            report.bytes_freed,
            report.blobs_deleted,
            report.manifests_deleted,
            report.links_removed,
            report.duration.as_secs_f64()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    init_logging(&cfg);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cfg).await,
        Command::Gc(args) => gc(cfg, args).await,
    }
}
