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
    redis-server:redis-server
)
missing=()
for entry in "${needed[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
# PostgreSQL's server programs are not on PATH: look in Debian's versioned directory.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
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
pg_dir=""
pg_as=()
cleanup() {
    if [ -n "$started_dockerd" ]; then
        kill "$started_dockerd" 2>/dev/null || true
        wait "$started_dockerd" 2>/dev/null || true
    fi
    if [ -n "$pg_dir" ]; then
        if [ -e "$pg_dir/data/postmaster.pid" ]; then
            "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$pg_dir"
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

# One PostgreSQL server for the whole run; tests create a fresh database each on it
# (HYPER_TEST_POSTGRES_URL). Trust authentication on a loopback port, data in a temporary
# directory, fsync off; as root it runs as the postgres user (it refuses to run as root).
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
pg_dir=$(mktemp -d /tmp/hyper-ci-pg.XXXXXX)
if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$pg_dir"
    pg_as=(runuser -u postgres --)
fi
echo "==> starting PostgreSQL ($pg_bin)"
"${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$pg_dir/initdb.log" 2>&1 || { echo "initdb failed:"; cat "$pg_dir/initdb.log"; exit 1; }
pg_port=""
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 30000))
    if "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null 2>&1; then
        pg_port=$port
        break
    fi
done
[ -n "$pg_port" ] || { echo "PostgreSQL did not start:"; tail -20 "$pg_dir/postgres.log"; exit 1; }
export HYPER_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"

export HYPER_REQUIRE_TOOLS=1
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
# Integration tests need every binary of the workspace (hyperbuild's tests drive hyperregistry).
cargo build --workspace --locked --bins
cargo test --workspace --locked
