//! Predefined build arguments: platform ARGs and proxy ARGs.

/// Proxy variables that are predefined build args without an ARG, and left out of the
/// image history (`docker history`) unless declared with ARG.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Names of the platform args, in the order [`platform_args`] returns them.
pub const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Whether `name` is one of [`PROXY_ARGS`].
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

pub use oci_core::{Platform, PlatformError};

/// The automatic platform ARGs for a build on `build` producing `target`, in the order of
/// [`PLATFORM_ARGS`]. Variants are empty strings when absent.
///
/// They are in scope for FROM lines; inside a stage, a stage must declare `ARG NAME`
/// (without a value) to use one.
pub fn platform_args(build: &Platform, target: &Platform) -> Vec<(String, String)> {
    let v = |p: &Platform| p.variant.clone().unwrap_or_default();
    vec![
        ("TARGETPLATFORM".into(), target.to_string()),
        ("TARGETOS".into(), target.os.clone()),
        ("TARGETARCH".into(), target.architecture.clone()),
        ("TARGETVARIANT".into(), v(target)),
        ("BUILDPLATFORM".into(), build.to_string()),
        ("BUILDOS".into(), build.os.clone()),
        ("BUILDARCH".into(), build.architecture.clone()),
        ("BUILDVARIANT".into(), v(build)),
    ]
}
