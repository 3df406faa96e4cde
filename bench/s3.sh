#!/usr/bin/env bash
# 1 GiB blob push (POST + one PATCH with the whole body + PUT ?digest=, as docker does) into
# hyperregistry with the filesystem backend and with the S3 backend (s3s-fs on the same
# machine), side by side, with and without Content-Length on the PATCH. Target: s3/fs <= 2.0x.
#
#   bench/s3.sh [SIZE_MIB] [RUNS]      (defaults: 1024, 3)
#
# Needs: a release build of hyperregistry (built here), s3s-fs (cargo install s3s-fs@0.14.1
# --features binary --locked), curl, sha256sum.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${1:-1024}
RUNS=${2:-3}
export PATH="$HOME/.cargo/bin:$PATH"
command -v s3s-fs >/dev/null || { echo "s3s-fs missing: cargo install s3s-fs@0.14.1 --features binary --locked"; exit 1; }

cargo build --release -q -p hyperregistry
BIN=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/hyperregistry

TMP=$(mktemp -d /tmp/hyper-s3-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "$1 did not come up"; exit 1; }

S3_PORT=$(free_port)
mkdir -p "$TMP/s3/registry"
s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key bench --secret-key bench-secret-key "$TMP/s3" >/dev/null 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$S3_PORT/"

FS_PORT=$(free_port)
REGISTRY_HTTP_ADDR=127.0.0.1:$FS_PORT REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$TMP/fs RUST_LOG=${BENCH_LOG:-warn} \
    "$BIN" >/dev/null 2>"$TMP/fs.log" &
PIDS+=($!)
S3R_PORT=$(free_port)
REGISTRY_HTTP_ADDR=127.0.0.1:$S3R_PORT REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$TMP/s3meta RUST_LOG=${BENCH_LOG:-warn} \
    REGISTRY_STORAGE=s3 REGISTRY_STORAGE_S3_BUCKET=registry REGISTRY_STORAGE_S3_ENDPOINT=http://127.0.0.1:$S3_PORT \
    REGISTRY_STORAGE_S3_ACCESSKEY=bench REGISTRY_STORAGE_S3_SECRETKEY=bench-secret-key \
    REGISTRY_STORAGE_S3_FORCEPATHSTYLE=true "$BIN" >/dev/null 2>"$TMP/s3r.log" &
PIDS+=($!)
wait_up "http://127.0.0.1:$FS_PORT/v2/"
wait_up "http://127.0.0.1:$S3R_PORT/v2/"

echo "==> generating a ${SIZE_MIB} MiB blob"
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$TMP/blob"

# push PORT RUN MODE: prints "total_seconds put_seconds". MODE "length" sends the PATCH
# with Content-Length (skopeo, podman, buildah, hyperbuild); "chunked" without (docker).
push() {
    local base="http://127.0.0.1:$1" run=$2 mode=$3 digest loc t0 t1 t2 code te=()
    [ "$mode" = chunked ] && te=(-H 'Transfer-Encoding: chunked')
    # A different blob each run (first 8 bytes), so no run finds its blob already stored.
    printf '%08d' "$run$RANDOM" | dd of="$TMP/blob" bs=8 count=1 conv=notrunc status=none
    digest="sha256:$(sha256sum "$TMP/blob" | cut -d' ' -f1)"
    sync
    t0=$(date +%s.%N)
    loc=$(curl -sS -X POST -D - -o /dev/null "$base/v2/bench/s3/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    code=$(curl -sS -X PATCH -H 'Expect:' -H 'Content-Type: application/octet-stream' "${te[@]}" \
        -T "$TMP/blob" -o /dev/null -w '%{http_code}' "$base$loc")
    [ "$code" = 202 ] || { echo "PATCH answered $code"; exit 1; }
    t1=$(date +%s.%N)
    code=$(curl -sS -X PUT -o /dev/null -w '%{http_code}' "$base$loc?digest=$digest")
    [ "$code" = 201 ] || { echo "PUT answered $code"; exit 1; }
    t2=$(date +%s.%N)
    echo "$(echo "$t2 - $t0" | bc) $(echo "$t2 - $t1" | bc)"
}

declare -A best
for mode in ${BENCH_MODES:-length chunked}; do
    for backend in fs s3; do
        port=$FS_PORT
        [ "$backend" = s3 ] && port=$S3R_PORT
        key=$backend-$mode
        best[$key]=999999
        for run in $(seq 1 "$RUNS"); do
            read -r total put < <(push "$port" "$run" "$mode")
            printf '%-3s %-7s run %d: push %.2f s (PUT/commit %.2f s)\n' "$backend" "$mode" "$run" "$total" "$put"
            if (($(echo "$total < ${best[$key]}" | bc))); then best[$key]=$total; fi
        done
    done
    printf 'best (%s): fs %.2f s, s3 %.2f s, s3/fs %.2fx (target <= 2.0x)\n' "$mode" \
        "${best[fs-$mode]}" "${best[s3-$mode]}" "$(echo "${best[s3-$mode]} / ${best[fs-$mode]}" | bc -l)"
done
if [ -n "${BENCH_LOG:-}" ]; then grep -v "^$" "$TMP/s3r.log" | tail -20; fi
