#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests that drive
# real programs (skopeo) against a running hyperregistry.
#
# It installs what the tests need first (idempotently: only what is missing), and sets
# HYPER_REQUIRE_TOOLS=1 so that a test whose program is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive, as "command:package".
needed=(skopeo:skopeo curl:curl)
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

export HYPER_REQUIRE_TOOLS=1
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
