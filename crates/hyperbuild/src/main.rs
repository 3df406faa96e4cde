//! hyperbuild: a daemonless image builder and registry client.
//!
//! Images live in a local OCI image layout (`--root`, `HYPERBUILD_ROOT`, or
//! `$XDG_DATA_HOME/hyperbuild`); `push`, `pull`, `save`, `load`, `unpack` move them between
//! that store, registries, tarballs and directories.

mod commands;
mod ctx;
mod progress;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Command line.
#[derive(Parser)]
#[command(
    name = "hyperbuild",
    version,
    about = "Daemonless OCI image builder and registry client"
)]
pub struct Cli {
    /// Local image store directory.
    #[arg(long, global = true, env = "HYPERBUILD_ROOT")]
    root: Option<PathBuf>,
    /// Credentials file to read and write instead of Docker's config.json and podman's auth.json.
    #[arg(long, global = true, env = "HYPERBUILD_AUTHFILE")]
    authfile: Option<PathBuf>,
    /// Registry reached over plain HTTP (repeatable; loopback hosts always are).
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
    /// No progress output.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    /// Debug logs (credentials are never logged).
    #[arg(long, global = true)]
    debug: bool,
    /// The short form `hyperbuild -c CONTEXT -f DOCKERFILE -i REF [--push]` builds.
    #[command(flatten)]
    build: BuildArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `hyperbuild build` options.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BuildArgs {
    /// Build context directory (also accepted as the last argument).
    #[arg(long = "context", short = 'c', value_name = "DIR")]
    context: Option<PathBuf>,
    /// Build context directory.
    #[arg(value_name = "CONTEXT")]
    context_pos: Option<PathBuf>,
    /// Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(long = "file", short = 'f')]
    file: Option<PathBuf>,
    /// Name of the result (repeatable).
    #[arg(long = "image", short = 'i', visible_alias = "tag", short_alias = 't')]
    images: Vec<String>,
    /// Push the result to its registry.
    #[arg(long)]
    push: bool,
    /// Build argument KEY=VALUE (KEY alone takes it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Build only up to this stage.
    #[arg(long)]
    target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    no_cache: bool,
    /// Label KEY=VALUE on the image (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Media types: oci or docker.
    #[arg(long, default_value = "oci")]
    format: String,
    /// Layer compression: gzip, zstd or uncompressed.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Timestamp for reproducible builds (seconds since the epoch).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<i64>,
    /// Network of RUN steps: default (the host's), none or host.
    #[arg(long, default_value = "default")]
    network: String,
    /// Build secret id=ID,src=FILE (repeatable).
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// Output: auto, plain or quiet.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Write the image ID to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
}

/// Transfer tuning shared by push and pull.
#[derive(clap::Args, Clone)]
pub struct TransferArgs {
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Retries per blob after the first attempt.
    #[arg(long, default_value_t = 3)]
    retries: u32,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(BuildArgs),
    /// Push a local image to a registry (to DEST when given, else to its own name).
    Push {
        /// Local image.
        image: String,
        /// Destination reference.
        dest: Option<String>,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Pull an image from a registry into the local store.
    Pull {
        /// Image reference.
        image: String,
        /// Platform to take from a multi-platform image (os/arch[/variant]); default: this host.
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Save credentials for a registry (Docker-compatible config.json).
    Login {
        /// Registry host[:port].
        registry: String,
        /// User name.
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Password (prefer --password-stdin).
        #[arg(long, short = 'p')]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove saved credentials for a registry.
    Logout {
        /// Registry host[:port].
        registry: String,
    },
    /// List local images.
    Images {
        /// Show manifest digests.
        #[arg(long)]
        digests: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give a local image another name.
    Tag {
        /// Existing local image.
        source: String,
        /// New name.
        target: String,
    },
    /// Remove local image names, and the blobs no image uses any more.
    Rmi {
        /// Images to remove.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's manifest and configuration (local first, else from its registry).
    Inspect {
        /// Image reference.
        image: String,
        /// Ask the registry even if the image is local.
        #[arg(long)]
        remote: bool,
        /// Platform for a multi-platform remote image.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Write local images to a tarball (docker load / podman load can read it).
    Save {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
        /// Output file.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// docker-archive or oci-archive.
        #[arg(long, default_value = "docker-archive")]
        format: String,
    },
    /// Read images from a docker-archive or oci-archive tarball.
    Load {
        /// Input file.
        #[arg(long, short = 'i')]
        input: PathBuf,
    },
    /// Make a base image from a root filesystem tarball (plain, gzip or zstd).
    Import {
        /// The tarball.
        tarball: PathBuf,
        /// Name of the new image.
        image: String,
        /// Layer compression: gzip, zstd or uncompressed.
        #[arg(long, default_value = "gzip")]
        compression: String,
        /// Media types: oci or docker.
        #[arg(long, default_value = "oci")]
        format: String,
        /// Platform recorded in the config (os/arch); default: this host.
        #[arg(long)]
        platform: Option<String>,
        /// Default command (repeat for each argument).
        #[arg(long = "cmd", allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Rewrite an image's layers as eStargz (for lazy pulls and `starget`).
    Convert {
        /// Convert to eStargz (the only conversion there is).
        #[arg(long, required = true)]
        estargz: bool,
        /// Existing local image.
        source: String,
        /// Name of the converted image.
        dest: String,
        /// Media types: oci or docker.
        #[arg(long, default_value = "oci")]
        format: String,
    },
    /// Remove the build cache and unpacked base images, and blobs no image uses.
    Prune,
    /// Assemble an image's root filesystem into a directory.
    Unpack {
        /// Local image (pulled first if missing and it names a registry image).
        image: String,
        /// Target directory (created; must be empty if it exists).
        dir: PathBuf,
    },
}

fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("HYPERBUILD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.debug);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
