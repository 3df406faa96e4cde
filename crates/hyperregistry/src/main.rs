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
use registry_coord::RedisCoordinator;
use registry_meta::{MetaStore, SqliteMeta};
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
        if cfg.redis.url.is_some() && recently_written(root, &id) {
            continue; // another replica may be receiving it right now
        }
        if meta.upload_repo(&id).await?.is_none() {
            blobs.cancel_upload(&id).await?;
            orphans += 1;
        }
    }
    if orphans > 0 {
        tracing::info!(orphans, "removed data of interrupted monolithic uploads");
    }
    let state = AppState::new(Arc::new(blobs), meta.clone(), cfg.policy());
    let state = coordinate(state, &cfg).await?;
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

/// With replicas sharing the data directory, an upload file without a session row may be a
/// monolithic upload that another replica is receiving: only files untouched for this long
/// count as left over by a crash.
const ORPHAN_UPLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Whether upload `id`'s file was written to within [`ORPHAN_UPLOAD_AGE`].
fn recently_written(root: &std::path::Path, id: &str) -> bool {
    std::fs::metadata(root.join("uploads").join(id))
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < ORPHAN_UPLOAD_AGE))
}

/// A Redis URL fit for logs: any password replaced.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Share locks, invalidation and lookups with other replicas when `redis.url` is set.
async fn coordinate(state: AppState, cfg: &Config) -> anyhow::Result<AppState> {
    let Some(url) = &cfg.redis.url else {
        tracing::info!(
            coordinator = "local",
            "coordinating within this process only (set redis.url to run replicas)"
        );
        return Ok(state);
    };
    let coord = RedisCoordinator::connect(url, &cfg.redis.prefix)
        .await
        .with_context(|| format!("redis.url {}", redact_url(url)))?;
    let shown = redact_url(url);
    match coord.ping().await {
        Ok(()) => {
            tracing::info!(coordinator = "redis", url = %shown, prefix = %cfg.redis.prefix, "coordinating replicas through redis")
        }
        Err(e) => tracing::warn!(
            coordinator = "redis",
            url = %shown,
            error = %e,
            "redis is not reachable yet: reads use the database, writes that need a lock answer 503 until it is"
        ),
    }
    Ok(state.with_coordinator(Arc::new(coord)))
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

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redis_passwords_stay_out_of_logs() {
        assert_eq!(
            redact_url("redis://:s3cret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:s3cret@cache:6380"),
            "rediss://app:***@cache:6380"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }
}
