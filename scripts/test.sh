#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests that drive
# real programs (skopeo) against a running hyperregistry.
#
# It installs what the tests need first (idempotently: only what is missing), and sets
# HYPER_REQUIRE_TOOLS=1 so that a test whose program is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive, as "command:package".
needed=(
    skopeo:skopeo curl:curl docker-registry:docker-registry
    dockerd:docker.io podman:podman runc:runc busybox:busybox-static
    debootstrap:debootstrap openssl:openssl
)
missing=()
for entry in "${needed[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Services the tests use: a Docker engine (no iptables, no bridge: the tests only talk to
# loopback registries and run containers with --network none). Stopped again on exit if
# this script started it.
started_dockerd=""
cleanup() {
    if [ -n "$started_dockerd" ]; then
        kill "$started_dockerd" 2>/dev/null || true
        wait "$started_dockerd" 2>/dev/null || true
    fi
}
trap cleanup EXIT
if ! docker info >/dev/null 2>&1; then
    echo "==> starting dockerd"
    dockerd --iptables=false --bridge=none >/tmp/hyper-ci-dockerd.log 2>&1 &
    started_dockerd=$!
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/hyper-ci-dockerd.log; exit 1; }
fi

# s3s-fs: the S3 server the S3 storage tests run against (cargo install puts it in
# ~/.cargo/bin, which must be on PATH).
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v s3s-fs >/dev/null 2>&1; then
    echo "==> installing s3s-fs"
    cargo install s3s-fs@0.14.1 --features binary --locked
fi

export HYPER_REQUIRE_TOOLS=1
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
# Integration tests need every binary of the workspace (hyperbuild's tests drive hyperregistry).
cargo build --workspace --locked --bins
cargo test --workspace --locked
