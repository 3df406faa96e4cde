//! hyperregistry: an OCI Distribution v1.1 registry.
//!
//! With no configuration it keeps blobs and a SQLite database under `./registry-data` and
//! listens on `0.0.0.0:5000`.

mod config;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand};
use registry_api::AppState;
use registry_meta::{MetaStore, SqliteMeta};
use registry_storage::{
    BlobStore, FsBlobStore, MemoryUploadStateStore, S3BlobStore, UploadStateStore,
};
use tracing_subscriber::EnvFilter;

use crate::config::{Backend, Config};

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
    if !url.starts_with("sqlite:") {
        bail!("unsupported database URL {url:?}: this build supports sqlite:// URLs");
    }
    let meta = Arc::new(
        SqliteMeta::connect(&url)
            .await
            .context("opening the metadata database")?,
    );
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
    let state = AppState::new(
        blob_store(&cfg, blobs, meta.as_ref())?,
        meta.clone(),
        cfg.policy(),
    );
    let listener = tokio::net::TcpListener::bind(&cfg.http.addr)
        .await
        .with_context(|| format!("listening on {}", cfg.http.addr))?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(addr = %cfg.http.addr, root = %root.display(), "hyperregistry listening");
    axum::serve(listener, registry_api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    meta.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Where the S3 backend keeps upload sessions between requests. In memory for now: sessions
/// then belong to one process (a replica cannot continue another's upload) until the
/// metadata-backed store is wired in here.
fn upload_state_store(_meta: &dyn MetaStore) -> Arc<dyn UploadStateStore> {
    Arc::new(MemoryUploadStateStore::new())
}

/// The blob store the configuration selects (`fs` is the filesystem one, already open).
fn blob_store(
    cfg: &Config,
    fs: FsBlobStore,
    meta: &dyn MetaStore,
) -> anyhow::Result<Arc<dyn BlobStore>> {
    Ok(match cfg.backend()? {
        Backend::Filesystem => Arc::new(fs),
        Backend::S3 => {
            let s3 = cfg.s3()?;
            tracing::info!(
                bucket = %s3.bucket,
                endpoint = s3.endpoint.as_deref().unwrap_or("AWS"),
                prefix = %s3.prefix,
                redirect = s3.redirect,
                "blobs in S3"
            );
            Arc::new(
                S3BlobStore::new(s3, upload_state_store(meta))
                    .context("configuring S3 blob storage")?,
            )
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    init_logging(&cfg);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cfg).await,
    }
}
