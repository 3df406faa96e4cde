//! hyperregistry: an OCI Distribution v1.1 registry.
//!
//! With no configuration it keeps blobs and a SQLite database under `./registry-data` and
//! listens on `0.0.0.0:5000`.

mod config;
mod listener;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use registry_api::AppState;
use registry_coord::{Coordinator, RedisCoordinator};
use registry_core::Registry;
use registry_meta::MetaStore;
use registry_storage::{BlobStore, FsBlobStore, S3BlobStore};
use tracing_subscriber::EnvFilter;

use crate::config::{Backend, Config};

#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!("choose one allocator feature: jemalloc or mimalloc");

/// The default allocator: jemalloc, which returns freed pages to the system (see
/// bench/alloc.sh for the measurements against the system allocator and mimalloc).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread purges freed pages after about a second, so
/// that resident memory falls back after a burst even when the server then goes idle
/// (without it, purging waits for allocations that an idle server does not make).
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: JemallocConf =
    JemallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000".as_ptr());

/// A C string that jemalloc reads at start-up.
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: it points to a constant that nothing writes.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for JemallocConf {}

/// mimalloc, as measured against the others in bench/alloc.sh.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Purge upload sessions started longer ago than this, or `off` (default: gc.uploadage).
    #[arg(long, value_name = "AGE")]
    upload_age: Option<String>,
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
    let meta = open_metadata(&cfg).await?;
    // Upload files without a session row belong to monolithic uploads that a crash cut
    // short (they never get one): nothing can finish them. Those another replica may be
    // receiving right now are left alone.
    let leftover: Vec<String> = blobs
        .upload_ids()
        .context("listing upload sessions")?
        .into_iter()
        .filter(|id| !(cfg.redis.url.is_some() && recently_written(root, id)))
        .collect();
    let grace = cfg.gc.grace()?;
    let gc_interval = cfg.gc.interval()?;
    // Held (shared) while serving: an offline `hyperregistry gc` refuses to sweep under a
    // live server whose locks it cannot see.
    let _serving = serve_lock(root)?;
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
    let registry = Registry::new(blob_store(&cfg, blobs, meta.clone())?, meta.clone())
        .with_gc_grace(grace)
        .with_events(notifier.clone());
    let shared = redis_coordinator(&cfg).await?;
    let registry = match &shared {
        Some(coord) => registry.with_coordinator(coord.clone()),
        None => registry,
    };
    if matches!(cfg.backend()?, Backend::Filesystem) {
        let orphans = registry.drop_interrupted_uploads(leftover).await?;
        if orphans > 0 {
            tracing::info!(orphans, "removed data of interrupted monolithic uploads");
        }
    }
    let external = registry_external::External::start(
        registry.clone(),
        root,
        &cfg.external,
        &cfg.replication,
        &cfg.proxies,
    )
    .context("starting external registries, replication and pull-through caches")?;
    external.agree_secret_key().await?;
    let registry = match external.upstream() {
        Some(proxy) => registry.with_upstream(proxy),
        None => registry,
    };
    let state = AppState::new(registry, cfg.policy()).with_push_hook(external.push_hook());
    let state = match registry_auth::Auth::from_config(&cfg.auth, root)
        .context("setting up authentication")?
    {
        Some(auth) => {
            // Replicas sharing the database accept each other's tokens, and replicas
            // sharing Redis count failed logins together.
            auth.share_token_keys(Arc::new(MetaKeyDirectory(meta.clone())))
                .await
                .context("publishing the token signing key")?;
            if let Some(coord) = &shared {
                auth.share_throttle(Arc::new(CoordCounters(coord.clone())));
            }
            state.with_auth(Arc::new(auth))
        }
        None => state,
    };
    if let Some(every) = gc_interval {
        spawn_periodic_gc(
            state.registry.clone(),
            every,
            grace,
            cfg.gc.deleteuntagged,
            cfg.gc.upload_age()?,
        );
    }
    let mgmt = registry_mgmt::MgmtState::new(state.clone(), metrics.clone())
        .with_openapi(registry_external::openapi());
    // The management API and external registries are for administrators (when auth is on);
    // health, the OpenAPI document and metrics are open.
    let admin_only =
        axum::middleware::from_fn_with_state(state.clone(), registry_api::auth::admin_guard);
    let app = registry_mgmt::metrics::instrument(
        registry_api::router(state)
            .merge(registry_mgmt::open_router(&mgmt))
            .merge(
                registry_mgmt::admin_router(&mgmt)
                    .merge(external.router())
                    .layer(admin_only),
            ),
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(&cfg.http.addr)
        .await
        .with_context(|| format!("listening on {}", cfg.http.addr))?;
    tracing::info!(addr = %cfg.http.addr, root = %root.display(), "hyperregistry listening");
    let hygiene = listener::Hygiene {
        header: cfg.http.timeouts.header(),
        idle: cfg.http.timeouts.idle(),
        max_per_ip: cfg.http.maxconnsperip,
    };
    listener::serve(listener, app, hygiene, shutdown_signal())
        .await
        .context("serving HTTP")?;
    notifier.shutdown(std::time::Duration::from_secs(5)).await;
    meta.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The metadata database the configuration names (migrations applied).
async fn open_metadata(cfg: &Config) -> anyhow::Result<Arc<dyn MetaStore>> {
    let url = cfg.database_url();
    registry_meta::connect(&url).await.with_context(|| {
        format!(
            "opening the metadata database {}",
            registry_meta::redact(&url)
        )
    })
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
    registry: Registry,
    every: std::time::Duration,
    grace: std::time::Duration,
    delete_untagged: bool,
    upload_age: Option<std::time::Duration>,
) {
    tracing::info!(interval = ?every, ?grace, delete_untagged, ?upload_age, "periodic garbage collection on");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let opts = registry_gc::GcOptions {
                dry_run: false,
                delete_untagged,
                grace,
                upload_age,
            };
            match registry_gc::run(&registry, opts).await {
                Ok(report) => {
                    tracing::info!(
                        manifests_deleted = report.manifests_deleted,
                        links_removed = report.links_removed,
                        blobs_deleted = report.blobs_deleted,
                        bytes_freed = report.bytes_freed,
                        uploads_purged = report.uploads_purged,
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
        Some(g) => oci_core::duration::parse(g).with_context(|| format!("--grace {g:?}"))?,
        None => cfg.gc.grace()?,
    };
    let upload_age = match &args.upload_age {
        Some(a) => config::parse_age("--upload-age", a)?,
        None => cfg.gc.upload_age()?,
    };
    let root = &cfg.storage.filesystem.rootdirectory;
    anyhow::ensure!(
        root.is_dir(),
        "data directory {} does not exist",
        root.display()
    );
    // Sweeping needs the locks the servers take: shared through Redis when configured;
    // otherwise a separate process cannot see them and must not run beside a server.
    let shared = redis_coordinator(&cfg).await?;
    let _exclusive = if args.dry_run || shared.is_some() {
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
    let meta = open_metadata(&cfg).await?;
    let fs = FsBlobStore::open(root)
        .with_context(|| format!("opening blob storage in {}", root.display()))?;
    let blobs = blob_store(&cfg, fs, meta.clone())?;
    let coord: Arc<dyn Coordinator> =
        shared.unwrap_or_else(|| Arc::new(registry_coord::LocalCoordinator::new()));
    let opts = registry_gc::GcOptions {
        dry_run: args.dry_run,
        delete_untagged: args.delete_untagged,
        grace,
        upload_age,
    };
    let registry = Registry::new(blobs, meta.clone()).with_coordinator(coord);
    let report = registry_gc::run(&registry, opts)
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
            "{verb} {} bytes: {} blobs, {} manifests, {} repository links, {} abandoned \
             uploads ({:.3}s)",
            report.bytes_freed,
            report.blobs_deleted,
            report.manifests_deleted,
            report.links_removed,
            report.uploads_purged,
            report.duration.as_secs_f64()
        );
    }
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

/// The Redis coordinator when `redis.url` is set: locks, invalidation and lookups shared
/// with other replicas (and with `hyperregistry gc`).
async fn redis_coordinator(cfg: &Config) -> anyhow::Result<Option<Arc<dyn Coordinator>>> {
    let Some(url) = &cfg.redis.url else {
        tracing::info!(
            coordinator = "local",
            "coordinating within this process only (set redis.url to run replicas)"
        );
        return Ok(None);
    };
    let coord = RedisCoordinator::connect(url, &cfg.redis.prefix)
        .await
        .with_context(|| format!("redis.url {}", registry_meta::redact(url)))?;
    let shown = registry_meta::redact(url);
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
    Ok(Some(Arc::new(coord)))
}

/// Failed-login counters in the coordinator's (Redis) cache.
struct CoordCounters(Arc<dyn Coordinator>);

#[async_trait::async_trait]
impl registry_auth::throttle::SharedCounters for CoordCounters {
    async fn incr(&self, key: &str, ttl: std::time::Duration) -> Result<u64, String> {
        self.0.incr(key, ttl).await.map_err(|e| e.to_string())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: std::time::Duration) -> Result<(), String> {
        self.0
            .cache_set(key, value, ttl)
            .await
            .map_err(|e| e.to_string())
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        self.0.cache_get_many(keys).await.map_err(|e| e.to_string())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), String> {
        self.0.cache_delete(keys).await.map_err(|e| e.to_string())
    }
}

/// Token verification keys published in the metadata database (`token_keys`), which every
/// replica reads.
struct MetaKeyDirectory(Arc<dyn MetaStore>);

#[async_trait::async_trait]
impl registry_auth::token::KeyDirectory for MetaKeyDirectory {
    async fn publish(&self, kid: &str, algorithm: &str, public_key: &[u8]) -> Result<(), String> {
        self.0
            .put_token_key(kid, algorithm, public_key)
            .await
            .map_err(|e| e.to_string())
    }

    async fn lookup(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>, String> {
        self.0.token_key(kid).await.map_err(|e| e.to_string())
    }
}

/// The blob store the configuration selects (`fs` is the filesystem one, already open).
fn blob_store(
    cfg: &Config,
    fs: FsBlobStore,
    meta: Arc<dyn MetaStore>,
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
                S3BlobStore::new(s3, Arc::new(registry_core::MetaUploadState::new(meta)))
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
        Command::Gc(args) => gc(cfg, args).await,
    }
}

#[cfg(test)]
mod tests {
    use registry_meta::redact as redact_url;

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
