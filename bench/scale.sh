#!/usr/bin/env bash
# bench/scale.sh -- hyperregistry at scale: replicas and S3, measured side by side in one run.
#
#   1. manifest GET by tag through two replicas vs one            target: two/one >= 1.6x
#      (PostgreSQL + Redis + S3; each replica runs like a container with a CPU limit: its
#      own core (taskset), one tokio worker, and a CPU quota of BENCH_REPLICA_CPU cores
#      (cgroup cpu controller), so that the load generator -- one wrk per replica, on the
#      same 2-core machine -- is not what the replicas compete with)
#   2. 1 GiB push (POST, one PATCH, PUT ?digest=, as docker does)  target: s3/fs <= 2.0x
#      to the S3 backend (s3s-fs on this machine) vs the filesystem backend; alongside,
#      the same bytes straight into s3s-fs by curl (one PUT; a multipart upload), which
#      shows what the S3 server alone takes and what the registry adds to it
#
# Services are started here from their Debian packages / cargo install: PostgreSQL 15,
# redis-server, s3s-fs. Exit status: 0 when everything worked, even if a target was missed
# (this is a report); non-zero when something broke.
#
# Knobs: BENCH_NO_BUILD=1, BENCH_SECS=8, BENCH_REPLICA_CPU=0.5, BENCH_WRK_CONNS=32, BENCH_BLOB_BYTES=1073741824,
#        BENCH_ROUNDS=3, BENCH_KEEP=1, HYPERREGISTRY_BIN=path, TMPDIR.
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

BENCH_SECS=${BENCH_SECS:-8}
WRK_CONNS=${BENCH_WRK_CONNS:-32}
BLOB_BYTES=${BENCH_BLOB_BYTES:-1073741824}
ROUNDS=${BENCH_ROUNDS:-3}
REPLICA_CPU=${BENCH_REPLICA_CPU:-0.5}
CPU_CGROUP_ROOT=/sys/fs/cgroup/cpu
TARGET_REPLICA_RATIO=1.6
TARGET_S3_RATIO=2.0
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
S3_KEY=benchaccess
S3_SECRET=benchsecret1234
# Replicas with their own data directories share this key (they refuse to start otherwise).
EXTERNAL_KEY=$(head -c 32 /dev/urandom | base64)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

# --- tools -------------------------------------------------------------------------------
missing=()
for entry in wrk:wrk curl:curl jq:jq redis-server:redis-server taskset:util-linux; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
[[ -x $PGBIN/postgres ]] || missing+=(postgresql)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
export PATH=$HOME/.cargo/bin:$PATH
if ! command -v s3s-fs >/dev/null 2>&1; then
    log "cargo install s3s-fs"
    cargo install s3s-fs@0.14.1 --features binary --locked >/dev/null 2>&1 || die "cargo install s3s-fs failed"
fi
release_binaries hyperregistry
BIN=${HYPERREGISTRY_BIN:-$RELEASE_DIR/hyperregistry}
(( $(nproc) >= 2 )) || die "the replica benchmark needs at least 2 cores"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/scale-bench.XXXXXX")
chmod 755 "$TMP"
log "machine: $(nproc) cores; hyperregistry: $BIN"

# --- services ----------------------------------------------------------------------------
PG_PORT=$(free_port)
mkdir -p "$TMP/pg"
chown postgres:postgres "$TMP/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$TMP/pg/data" -A trust -U postgres >/dev/null
SERVER_LOGS+=("$TMP/pg.log")
runuser -u postgres -- "$PGBIN/postgres" -D "$TMP/pg/data" -p "$PG_PORT" -k "$TMP/pg" \
    -c listen_addresses=127.0.0.1 -c max_connections=200 > "$TMP/pg.log" 2>&1 &
SERVER_PIDS+=("$!")
for _ in $(seq 1 100); do
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
done
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'create database registry' || die "PostgreSQL did not start"
PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/registry

REDIS_PORT=$(free_port)
SERVER_LOGS+=("$TMP/redis.log")
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no > "$TMP/redis.log" 2>&1 &
SERVER_PIDS+=("$!")

S3_PORT=$(free_port)
mkdir -p "$TMP/s3/registry"
SERVER_LOGS+=("$TMP/s3.log")
s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET" \
    "$TMP/s3" > "$TMP/s3.log" 2>&1 &
SERVER_PIDS+=("$!")
sleep 0.5

# start_registry NAME CPUS STORAGE [VAR=VALUE...]: a hyperregistry on a free port, pinned
# to CPUS ("all" = unpinned); STORAGE is fs (own data dir, SQLite) or s3 (PostgreSQL, Redis,
# the shared bucket). Sets REG_URL and REG_PID.
start_registry() {
    local name=$1 cpus=$2 storage=$3; shift 3
    local port env=()
    port=$(free_port)
    env=(REGISTRY_HTTP_ADDR=127.0.0.1:$port RUST_LOG=warn
         REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$TMP/data-$name)
    if [[ $storage == s3 ]]; then
        env+=(REGISTRY_STORAGE=s3 REGISTRY_STORAGE_S3_BUCKET=registry
              REGISTRY_STORAGE_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
              REGISTRY_STORAGE_S3_REGION=us-east-1 REGISTRY_STORAGE_S3_ACCESSKEY=$S3_KEY
              REGISTRY_STORAGE_S3_SECRETKEY=$S3_SECRET REGISTRY_STORAGE_S3_FORCEPATHSTYLE=true
              REGISTRY_DATABASE_URL=$PG_URL REGISTRY_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
              REGISTRY_EXTERNAL_SECRETKEY=$EXTERNAL_KEY)
    fi
    local pin=()
    [[ $cpus == all ]] || pin=(taskset -c "$cpus")
    SERVER_LOGS+=("$TMP/$name.log")
    env "${env[@]}" "$@" "${pin[@]}" "$BIN" > "$TMP/$name.log" 2>&1 &
    REG_PID=$!
    SERVER_PIDS+=("$REG_PID")
    REG_URL=http://127.0.0.1:$port
    wait_ready "$name" "$REG_URL" "$REG_PID" "$TMP/$name.log"
}

# limit_cpu PID NAME CORES: a CPU quota for a process (cgroup v1 cpu controller, or the
# unified hierarchy's cpu.max), as a container's CPU limit.
limit_cpu() {
    local pid=$1 name=$2 cores=$3 dir quota
    quota=$(awk -v c="$cores" 'BEGIN { printf "%d", c * 100000 }')
    if [[ -w $CPU_CGROUP_ROOT ]]; then
        dir=$CPU_CGROUP_ROOT/scale-bench-$$-$name
        mkdir "$dir" && CGROUP_DIRS+=("$dir")
        echo 100000 > "$dir/cpu.cfs_period_us"
        echo "$quota" > "$dir/cpu.cfs_quota_us"
    elif [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        dir=/sys/fs/cgroup/scale-bench-$$-$name
        mkdir "$dir" && CGROUP_DIRS+=("$dir")
        echo "$quota 100000" > "$dir/cpu.max"
    else
        die "no writable cgroup cpu controller for the replicas' CPU limit"
    fi
    echo "$pid" > "$dir/cgroup.procs"
}

# --- 1. replicas -------------------------------------------------------------------------
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$TMP/config.json"
head -c 4096 /dev/urandom > "$TMP/layer.bin"
CONFIG_DIGEST=$(sha256_of "$TMP/config.json")
LAYER_DIGEST=$(sha256_of "$TMP/layer.bin")
jq -cj -n --arg mt "$OCI_MANIFEST" --arg cd "$CONFIG_DIGEST" --arg ld "$LAYER_DIGEST" \
    --argjson cs "$(stat -c %s "$TMP/config.json")" --argjson ls "$(stat -c %s "$TMP/layer.bin")" \
    '{schemaVersion: 2, mediaType: $mt,
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]}' \
    > "$TMP/manifest.json"

one_core=(TOKIO_WORKER_THREADS=1)
start_registry replica-a 0 s3 "${one_core[@]}"
A=$REG_URL
limit_cpu "$REG_PID" replica-a "$REPLICA_CPU"
put_blob_monolithic "$A" bench/app "$TMP/config.json" "$CONFIG_DIGEST"
put_blob_monolithic "$A" bench/app "$TMP/layer.bin" "$LAYER_DIGEST"
req PUT "$A/v2/bench/app/manifests/bench" -H "Content-Type: $OCI_MANIFEST" --data-binary "@$TMP/manifest.json"
expect 201

# wrk_rps NAME URL OUT: one wrk run against URL (after a 1 s warm-up), req/s on stdout.
wrk_rps() {
    local name=$1 url=$2 out=$3 non2xx rps
    wrk -t1 -c"$WRK_CONNS" -d1s -H "Accept: $OCI_MANIFEST" "$url" > /dev/null
    wrk -t1 -c"$WRK_CONNS" -d"${BENCH_SECS}s" -H "Accept: $OCI_MANIFEST" "$url" > "$out"
    non2xx=$(awk -F: '/Non-2xx or 3xx responses/ { gsub(/ /, "", $2); print $2 }' "$out")
    [[ -z $non2xx ]] || die "wrk against $name: $non2xx non-2xx responses"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -n $rps ]] || die "wrk against $name produced no result"
    echo "$rps"
}

log "== manifest GET by tag, one replica (core 0, $REPLICA_CPU CPU)"
ONE_RPS=$(wrk_rps replica-a "$A/v2/bench/app/manifests/bench" "$TMP/wrk-one.txt")
log "one replica: $ONE_RPS req/s"

start_registry replica-b 1 s3 "${one_core[@]}"
B=$REG_URL
limit_cpu "$REG_PID" replica-b "$REPLICA_CPU"
req GET "$B/v2/bench/app/manifests/bench" -H "Accept: $OCI_MANIFEST"
expect 200
cmp -s "$TMP/body" "$TMP/manifest.json" || die "replica B serves a different manifest"

log "== manifest GET by tag, two replicas (cores 0 and 1, $REPLICA_CPU CPU each), one wrk each"
wrk_rps replica-a "$A/v2/bench/app/manifests/bench" "$TMP/wrk-two-a.txt" > "$TMP/rps-a" &
WA=$!
wrk_rps replica-b "$B/v2/bench/app/manifests/bench" "$TMP/wrk-two-b.txt" > "$TMP/rps-b" &
WB=$!
wait "$WA" || die "wrk against replica A failed"
wait "$WB" || die "wrk against replica B failed"
TWO_RPS=$(awk '{ s += $1 } END { printf "%.2f", s }' "$TMP/rps-a" "$TMP/rps-b")
REPLICA_RATIO=$(ratio "$TWO_RPS" "$ONE_RPS")
log "two replicas: $(cat "$TMP/rps-a") + $(cat "$TMP/rps-b") = $TWO_RPS req/s; ratio ${REPLICA_RATIO}x (target >= ${TARGET_REPLICA_RATIO}x)"
for p in "${SERVER_PIDS[@]: -2}"; do kill "$p"; done
wait "${SERVER_PIDS[@]: -2}" 2>/dev/null || true

# --- 2. 1 GiB push: S3 vs filesystem ------------------------------------------------------
start_registry push-fs all fs
FS=$REG_URL
start_registry push-s3 all s3
S3=$REG_URL
head -c "$BLOB_BYTES" /dev/urandom > "$TMP/big.bin"

# time_push BASE [CURL_ARGS...]: POST, one PATCH with the whole body, PUT ?digest= for a
# fresh blob (first 16 bytes changed each time); prints seconds. curl sends Content-Length
# (as skopeo, podman and hyperbuild do) unless told `-H Transfer-Encoding: chunked` (docker).
time_push() {
    local base=$1 digest loc t0 t1
    shift
    head -c 16 /dev/urandom | dd of="$TMP/big.bin" conv=notrunc status=none
    digest=$(sha256_of "$TMP/big.bin")
    # Earlier rounds' dirty pages are written back first, so that no round pays for another.
    sync
    t0=$(now)
    loc=$(start_upload "$base" bench/big)
    req PATCH "$loc" -T "$TMP/big.bin" -H 'Content-Type: application/octet-stream' "$@"
    expect 202
    loc=$(abs_url "$base" "$(hdr Location)")
    req PUT "$(with_digest "$loc" "$digest")" -H 'Content-Length: 0'
    expect 201
    t1=$(now)
    # Then its bytes leave the disk (behind the registry's back: every round pushes a fresh
    # blob), so that the page cache and the disk do not fill up round after round.
    local hex=${digest#sha256:}
    rm -f "$TMP/data-push-fs/blobs/sha256/${hex:0:2}/$hex" \
        "$TMP/s3/registry/blobs/sha256/${hex:0:2}/$hex"
    rm -rf "$TMP/s3/registry/data"
    elapsed "$t0" "$t1"
}

# time_floor N: the same bytes PUT straight into the S3 server by curl (SigV4, unsigned
# payload, as hyperregistry sends them), no registry in between: the server's own speed.
time_floor() {
    local t0 t1 code
    sync
    t0=$(now)
    code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$S3_KEY:$S3_SECRET" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        -T "$TMP/big.bin" "http://127.0.0.1:$S3_PORT/registry/bench-floor/$1")
    t1=$(now)
    [[ $code == 200 ]] || die "PUT straight into s3s-fs answered $code"
    rm -f "$TMP/s3/registry/bench-floor/$1"
    elapsed "$t0" "$t1"
}

# time_floor_multipart N: the same bytes as a multipart upload straight into the S3 server
# (16 MiB parts, 4 in flight: hyperregistry's defaults for a body of unknown length), then
# CompleteMultipartUpload.
S3_CURL=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
time_floor_multipart() {
    local key=registry/bench-floor/mp$1 t0 t1 uid code n=0 etag
    rm -rf "$TMP/parts" && mkdir "$TMP/parts"
    split -b 16M -d -a 5 "$TMP/big.bin" "$TMP/parts/p"
    sync
    t0=$(now)
    uid=$(curl -s -X POST "${S3_CURL[@]}" "http://127.0.0.1:$S3_PORT/$key?uploads=" |
        sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p')
    [[ -n $uid ]] || die "CreateMultipartUpload straight into s3s-fs failed"
    export S3_PORT S3_KEY S3_SECRET key uid TMP
    find "$TMP/parts" -type f -name 'p*' ! -name '*.h' -printf '%f\n' | sort | awk '{ print $1, NR }' |
        xargs -P4 -n2 sh -c 'curl -sf -o /dev/null -D "$TMP/parts/$0.h" -T "$TMP/parts/$0" \
            --aws-sigv4 aws:amz:us-east-1:s3 --user "$S3_KEY:$S3_SECRET" \
            -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
            "http://127.0.0.1:$S3_PORT/$key?partNumber=$1&uploadId=$uid"' \
        || die "UploadPart straight into s3s-fs failed"
    {
        echo "<CompleteMultipartUpload>"
        for part in $(find "$TMP/parts" -type f -name 'p*' ! -name '*.h' -printf '%f\n' | sort); do
            n=$((n + 1))
            etag=$(grep -i '^etag:' "$TMP/parts/$part.h" | cut -d' ' -f2 | tr -d '\r')
            echo "<Part><PartNumber>$n</PartNumber><ETag>$etag</ETag></Part>"
        done
        echo "</CompleteMultipartUpload>"
    } > "$TMP/complete.xml"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "${S3_CURL[@]}" \
        -H 'Content-Type: application/xml' --data-binary "@$TMP/complete.xml" \
        "http://127.0.0.1:$S3_PORT/$key?uploadId=$uid")
    t1=$(now)
    [[ $code == 200 ]] || die "CompleteMultipartUpload straight into s3s-fs answered $code"
    rm -rf "$TMP/parts" "$TMP/s3/$key"
    elapsed "$t0" "$t1"
}

FS_T=(); S3_T=(); FSC_T=(); S3C_T=(); FLOOR_T=(); FLOORC_T=()
chunked=(-H 'Transfer-Encoding: chunked')
for r in $(seq 1 "$ROUNDS"); do
    FS_T+=("$(time_push "$FS")")
    S3_T+=("$(time_push "$S3")")
    FSC_T+=("$(time_push "$FS" "${chunked[@]}")")
    S3C_T+=("$(time_push "$S3" "${chunked[@]}")")
    FLOOR_T+=("$(time_floor "$r")")
    FLOORC_T+=("$(time_floor_multipart "$r")")
    log "round $r: with Content-Length: filesystem ${FS_T[-1]} s, s3 ${S3_T[-1]} s; chunked: filesystem ${FSC_T[-1]} s, s3 ${S3C_T[-1]} s; s3s-fs alone: PUT ${FLOOR_T[-1]} s, multipart ${FLOORC_T[-1]} s"
done
FS_MED=$(median "${FS_T[@]}")
S3_MED=$(median "${S3_T[@]}")
S3_RATIO=$(ratio "$S3_MED" "$FS_MED")
FSC_MED=$(median "${FSC_T[@]}")
S3C_MED=$(median "${S3C_T[@]}")
S3C_RATIO=$(ratio "$S3C_MED" "$FSC_MED")
FLOOR_MED=$(median "${FLOOR_T[@]}")
FLOOR_RATIO=$(ratio "$FLOOR_MED" "$FS_MED")
FLOORC_MED=$(median "${FLOORC_T[@]}")
FLOORC_RATIO=$(ratio "$FLOORC_MED" "$FSC_MED")

# --- summary -----------------------------------------------------------------------------
verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "n/a" && a + 0 <= b + 0) }'; }
printf '\n%-44s %14s %14s %8s  %s\n' "measure" "scaled/S3" "one/fs" "ratio" "target"
printf '%-44s %14s %14s %8s  %s\n' "manifest GET req/s, 2 replicas vs 1" "$TWO_RPS" "$ONE_RPS" "${REPLICA_RATIO}x" \
    ">= ${TARGET_REPLICA_RATIO}x $(verdict ge "$REPLICA_RATIO" "$TARGET_REPLICA_RATIO")"
printf '%-44s %14s %14s %8s  %s\n' "$((BLOB_BYTES >> 20)) MiB push s, S3 vs fs (Content-Length)" "$S3_MED" "$FS_MED" "${S3_RATIO}x" \
    "<= ${TARGET_S3_RATIO}x $(verdict le "$S3_RATIO" "$TARGET_S3_RATIO")"
printf '%-44s %14s %14s %8s  %s\n' "$((BLOB_BYTES >> 20)) MiB push s, S3 vs fs (chunked)" "$S3C_MED" "$FSC_MED" "${S3C_RATIO}x" \
    "<= ${TARGET_S3_RATIO}x $(verdict le "$S3C_RATIO" "$TARGET_S3_RATIO")"
printf '%-44s %14s %14s %8s  %s\n' "  s3s-fs alone: one PUT by curl, vs fs" "$FLOOR_MED" "$FS_MED" "${FLOOR_RATIO}x" \
    "(the server's own time; registry adds $(ratio "$S3_MED" "$FLOOR_MED")x)"
printf '%-44s %14s %14s %8s  %s\n' "  s3s-fs alone: multipart by curl, vs fs" "$FLOORC_MED" "$FSC_MED" "${FLOORC_RATIO}x" \
    "(the server's own time; registry adds $(ratio "$S3C_MED" "$FLOORC_MED")x)"
printf '(medians of %s rounds; S3 server: s3s-fs on this machine)\n' "$ROUNDS"
