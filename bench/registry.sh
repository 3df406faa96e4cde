#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup() and ge() are reached through trap / verdict
# bench/registry.sh -- side-by-side benchmark of hyperregistry vs CNCF Distribution 2.8.2
#
# One run does, for both registries on loopback, each with its own temp data dir:
#   1. manifest GET by tag      (wrk, req/s)              target: ours/dist >= 20x
#   2. 1 GiB monolithic push    (POST + PUT ?digest=)     target: dist/ours >= 3x
#   3. 1 GiB blob GET           (curl -o /dev/null)       target: dist/ours >= 1.0x
#   4. peak RSS of hyperregistry during N concurrent 1 GiB uploads   target: <= 100 MiB
# and ends with a summary table.
#
# Exit status: 0 when everything worked, even if a performance target was missed
# (this is a report); non-zero when something functionally broke (a request
# failed, a server did not start, a download was short, ...).
#
# Environment knobs (all optional):
#   BENCH_NO_BUILD=1          skip `cargo build --release -p hyperregistry`
#   BENCH_SECS=8              duration of each wrk run
#   BENCH_WRK_THREADS=2       wrk -t
#   BENCH_WRK_CONNS=32        wrk -c
#   BENCH_BLOB_BYTES=1073741824   size of the big blob (lower it for a quick smoke run)
#   BENCH_CONCURRENCY=8       concurrent uploads in the memory test
#   BENCH_ROUNDS=3            big-blob push/GET repetitions (median reported)
#   BENCH_RSS_LIMIT_MB=100    memory target
#   BENCH_KEEP=1              keep the temp dir (logs, data) instead of deleting it
#   HYPERREGISTRY_BIN=path    binary to test (default: <target dir>/release/hyperregistry)
#   HYPERREGISTRY_LOG=warn    RUST_LOG given to hyperregistry
#   TMPDIR                    where the temp dir goes (needs ~(3 + N) x blob size free)
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BENCH_SECS=${BENCH_SECS:-8}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-32}
BLOB_BYTES=${BENCH_BLOB_BYTES:-1073741824}
CONCURRENCY=${BENCH_CONCURRENCY:-8}
ROUNDS=${BENCH_ROUNDS:-3}
RSS_LIMIT_MB=${BENCH_RSS_LIMIT_MB:-100}
HYPER_LOG=${HYPERREGISTRY_LOG:-warn}

# Targets (see bench/README.md)
TARGET_MANIFEST_RATIO=20
TARGET_PUSH_RATIO=3
TARGET_GET_RATIO=1.0

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
OCI_CONFIG=application/vnd.oci.image.config.v1+json
OCI_LAYER=application/vnd.oci.image.layer.v1.tar+gzip

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"


# ---------------------------------------------------------------------------
# 0. tools, build, temp dir
# ---------------------------------------------------------------------------
ensure_tools() {
    # command -> Debian package
    local -A pkg=([docker-registry]=docker-registry [wrk]=wrk [curl]=curl [jq]=jq [sha256sum]=coreutils)
    local missing=() c
    for c in "${!pkg[@]}"; do command -v "$c" >/dev/null 2>&1 || missing+=("${pkg[$c]}"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing missing packages: ${missing[*]}"
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install ${missing[*]}"
        sudo=sudo
    fi
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
    for c in "${!pkg[@]}"; do command -v "$c" >/dev/null 2>&1 || die "$c still missing after apt-get install"; done
}

ensure_tools

release_binaries hyperregistry
BIN=${HYPERREGISTRY_BIN:-$RELEASE_DIR/hyperregistry}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/registry-bench.XXXXXX")

# Disk: big file + one copy per registry + CONCURRENCY in-flight uploads, plus slack.
need=$(( BLOB_BYTES * (3 + CONCURRENCY) + 512 * 1048576 ))
avail=$(( $(df --output=avail -k "$TMP" | tail -n 1) * 1024 ))
(( avail >= need )) || die "not enough disk in $TMP: need $((need / 1048576)) MiB, have $((avail / 1048576)) MiB"

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
log "distribution: $(docker-registry --version 2>&1 | head -n 1)"
log "hyperregistry: $BIN"

# ---------------------------------------------------------------------------
# 1. start both registries
# ---------------------------------------------------------------------------
DIST_PORT=$(free_port)
mkdir -p "$TMP/dist-data"
cat > "$TMP/dist-config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $TMP/dist-data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$DIST_PORT
EOF
SERVER_LOGS+=("$TMP/distribution.log")
docker-registry serve "$TMP/dist-config.yml" > "$TMP/distribution.log" 2>&1 &
DIST_PID=$!
SERVER_PIDS+=("$DIST_PID")
DIST=http://127.0.0.1:$DIST_PORT

HYPER_PORT=$(free_port)
while [[ $HYPER_PORT == "$DIST_PORT" ]]; do HYPER_PORT=$(free_port); done
mkdir -p "$TMP/hyper-data"
SERVER_LOGS+=("$TMP/hyperregistry.log")
REGISTRY_HTTP_ADDR=127.0.0.1:$HYPER_PORT \
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$TMP/hyper-data \
RUST_LOG=$HYPER_LOG \
    "$BIN" > "$TMP/hyperregistry.log" 2>&1 &
HYPER_PID=$!
SERVER_PIDS+=("$HYPER_PID")
HYPER=http://127.0.0.1:$HYPER_PORT

wait_ready distribution "$DIST" "$DIST_PID" "$TMP/distribution.log"
wait_ready hyperregistry "$HYPER" "$HYPER_PID" "$TMP/hyperregistry.log"
log "distribution  pid $DIST_PID on $DIST"
log "hyperregistry pid $HYPER_PID on $HYPER"

# ---------------------------------------------------------------------------
# 2. manifest GET by tag
# ---------------------------------------------------------------------------
# Small image: a config blob, a layer blob and an OCI image manifest tagged "bench".
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%064d"]}}' 0 > "$TMP/config.json"
head -c 4096 /dev/urandom > "$TMP/layer.bin"
CONFIG_DIGEST=$(sha256_of "$TMP/config.json")
LAYER_DIGEST=$(sha256_of "$TMP/layer.bin")
jq -cj -n \
    --arg mt "$OCI_MANIFEST" \
    --arg cmt "$OCI_CONFIG" --arg cd "$CONFIG_DIGEST" --argjson cs "$(stat -c %s "$TMP/config.json")" \
    --arg lmt "$OCI_LAYER" --arg ld "$LAYER_DIGEST" --argjson ls "$(stat -c %s "$TMP/layer.bin")" \
    '{schemaVersion: 2, mediaType: $mt,
      config: {mediaType: $cmt, digest: $cd, size: $cs},
      layers: [{mediaType: $lmt, digest: $ld, size: $ls}]}' > "$TMP/manifest.json"
MANIFEST_DIGEST=$(sha256_of "$TMP/manifest.json")

push_image() {
    local base=$1
    put_blob_monolithic "$base" bench/app "$TMP/config.json" "$CONFIG_DIGEST"
    put_blob_monolithic "$base" bench/app "$TMP/layer.bin" "$LAYER_DIGEST"
    req PUT "$base/v2/bench/app/manifests/bench" -H "Content-Type: $OCI_MANIFEST" \
        --data-binary "@$TMP/manifest.json"
    expect 201
    local got
    got=$(hdr Docker-Content-Digest)
    [[ -z $got || $got == "$MANIFEST_DIGEST" ]] \
        || die "$LAST_REQ: Docker-Content-Digest is $got, expected $MANIFEST_DIGEST"
    # the GET we are about to benchmark must work and return the exact bytes
    req GET "$base/v2/bench/app/manifests/bench" -H "Accept: $OCI_MANIFEST"
    expect 200
    cmp -s "$TMP/body" "$TMP/manifest.json" || die "$LAST_REQ: body differs from the pushed manifest"
    [[ $(hdr Docker-Content-Digest) == "$MANIFEST_DIGEST" ]] \
        || die "$LAST_REQ: Docker-Content-Digest '$(hdr Docker-Content-Digest)' != $MANIFEST_DIGEST"
}

# run_wrk NAME URL: prints req/s; dies on non-2xx responses or zero requests
run_wrk() {
    local name=$1 url=$2 out="$TMP/wrk-$1.txt"
    # short warm-up (JIT-free, but lets both servers size pools, caches, GC)
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d1s -H "Accept: $OCI_MANIFEST" "$url" > /dev/null
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${BENCH_SECS}s" --latency \
        -H "Accept: $OCI_MANIFEST" "$url" > "$out"
    sed "s/^/    [$name] /" "$out" >&2
    local non2xx reqs rps
    non2xx=$(awk -F: '/Non-2xx or 3xx responses/ { gsub(/ /, "", $2); print $2 }' "$out")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -z $non2xx ]] || die "wrk against $name: $non2xx non-2xx/3xx responses to GET $url"
    [[ -n $reqs && $reqs -gt 0 && -n $rps ]] || die "wrk against $name produced no requests"
    if grep -q 'Socket errors' "$out"; then
        warn "wrk against $name: $(grep 'Socket errors' "$out" | sed 's/^ *//')"
    fi
    echo "$rps"
}

log "== manifest GET by tag: pushing test image to both registries"
push_image "$DIST"
push_image "$HYPER"

log "== manifest GET by tag: wrk -t$WRK_THREADS -c$WRK_CONNS -d${BENCH_SECS}s"
DIST_RPS=$(run_wrk distribution "$DIST/v2/bench/app/manifests/bench")
HYPER_RPS=$(run_wrk hyperregistry "$HYPER/v2/bench/app/manifests/bench")
MANIFEST_RATIO=$(ratio "$HYPER_RPS" "$DIST_RPS")
log "manifest GET: hyperregistry $HYPER_RPS req/s, distribution $DIST_RPS req/s, ratio ${MANIFEST_RATIO}x (target >= ${TARGET_MANIFEST_RATIO}x)"

# ---------------------------------------------------------------------------
# 3. big monolithic blob push and GET
# ---------------------------------------------------------------------------
BIG=$TMP/big.bin
log "== big blob: generating $BLOB_BYTES random bytes"
head -c "$BLOB_BYTES" /dev/urandom > "$BIG"
[[ $(stat -c %s "$BIG") == "$BLOB_BYTES" ]] || die "short random file"
BIG_DIGEST=$(sha256_of "$BIG")
log "big blob digest $BIG_DIGEST"

# time_push NAME BASE REPO: prints seconds for POST + monolithic PUT of the big blob
time_push() {
    local name=$1 base=$2 repo=$3 t0 t1
    sync   # flush dirty pages of earlier phases so they do not land on this measurement
    t0=$(now)
    put_blob_monolithic "$base" "$repo" "$BIG" "$BIG_DIGEST"
    t1=$(now)
    # the registry must now know the blob with the right size
    req HEAD "$base/v2/$repo/blobs/$BIG_DIGEST" -I
    expect 200
    [[ $(hdr Content-Length) == "$BLOB_BYTES" ]] \
        || die "$LAST_REQ: Content-Length '$(hdr Content-Length)' != $BLOB_BYTES"
    elapsed "$t0" "$t1"
}

# time_get NAME BASE: prints seconds for a full GET of the big blob to /dev/null
time_get() {
    local name=$1 base=$2 t0 t1 res
    local url="$base/v2/bench/big/blobs/$BIG_DIGEST"
    t0=$(now)
    res=$(curl -sS -L -o /dev/null -w '%{http_code} %{size_download}' "$url") \
        || die "GET $url failed at transport level"
    t1=$(now)
    [[ ${res% *} == 200 ]] || die "GET $url ($name): status ${res% *}, expected 200"
    [[ ${res#* } == "$BLOB_BYTES" ]] || die "GET $url ($name): downloaded ${res#* } bytes, expected $BLOB_BYTES"
    elapsed "$t0" "$t1"
}

# Disk writeback makes single pushes noisy, so both measurements are repeated
# BENCH_ROUNDS times, interleaved (dist, ours, dist, ours, ...), and the median is
# reported. Round 1 pushes to bench/big, round N > 1 to bench/big-N.
log "== big blob: monolithic push ($ROUNDS rounds, median reported)"
DIST_PUSHES=(); HYPER_PUSHES=()
for r in $(seq 1 "$ROUNDS"); do
    repo=bench/big; [[ $r == 1 ]] || repo=bench/big-$r
    t=$(time_push distribution "$DIST" "$repo"); DIST_PUSHES+=("$t")
    log "round $r: distribution  push ${t}s ($(mib_s "$BLOB_BYTES" "$t") MiB/s)"
    t=$(time_push hyperregistry "$HYPER" "$repo"); HYPER_PUSHES+=("$t")
    log "round $r: hyperregistry push ${t}s ($(mib_s "$BLOB_BYTES" "$t") MiB/s)"
done
DIST_PUSH=$(median "${DIST_PUSHES[@]}")
HYPER_PUSH=$(median "${HYPER_PUSHES[@]}")
PUSH_RATIO=$(ratio "$DIST_PUSH" "$HYPER_PUSH")
log "push median: distribution ${DIST_PUSH}s, hyperregistry ${HYPER_PUSH}s, ratio ${PUSH_RATIO}x (target >= ${TARGET_PUSH_RATIO}x)"

log "== big blob: GET ($ROUNDS rounds, median reported)"
DIST_GETS=(); HYPER_GETS=()
for r in $(seq 1 "$ROUNDS"); do
    t=$(time_get distribution "$DIST"); DIST_GETS+=("$t")
    log "round $r: distribution  GET ${t}s ($(mib_s "$BLOB_BYTES" "$t") MiB/s)"
    t=$(time_get hyperregistry "$HYPER"); HYPER_GETS+=("$t")
    log "round $r: hyperregistry GET ${t}s ($(mib_s "$BLOB_BYTES" "$t") MiB/s)"
done
DIST_GET=$(median "${DIST_GETS[@]}")
HYPER_GET=$(median "${HYPER_GETS[@]}")
GET_RATIO=$(ratio "$DIST_GET" "$HYPER_GET")
log "GET median: distribution ${DIST_GET}s, hyperregistry ${HYPER_GET}s, ratio ${GET_RATIO}x (target >= ${TARGET_GET_RATIO}x)"

# Integrity (untimed): hyperregistry must serve back exactly the bytes we pushed.
got=$(curl -sS -L "$HYPER/v2/bench/big/blobs/$BIG_DIGEST" | sha256sum | awk '{print "sha256:" $1}')
[[ $got == "$BIG_DIGEST" ]] || die "hyperregistry served the big blob with digest $got, expected $BIG_DIGEST"

# Distribution is no longer needed: stop it and free its disk before the memory test.
kill "$DIST_PID" 2>/dev/null || true
wait "$DIST_PID" 2>/dev/null || true
rm -rf "$TMP/dist-data"

# ---------------------------------------------------------------------------
# 4. memory: CONCURRENCY concurrent big uploads to hyperregistry
# ---------------------------------------------------------------------------
log "== memory: $CONCURRENCY concurrent uploads of $BLOB_BYTES bytes to hyperregistry"
LIFETIME_HWM_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$HYPER_PID/status")

# one upload session per repo, opened before the clock starts
PUT_URLS=()
for i in $(seq 0 $((CONCURRENCY - 1))); do
    loc=$(start_upload "$HYPER" "bench/mem$i")
    PUT_URLS+=("$(with_digest "$loc" "$BIG_DIGEST")")
done

# Reset the kernel's peak-RSS counter so VmHWM covers this phase only
# (writing 5 to clear_refs resets VmHWM to the current RSS; Linux >= 4.0).
if ! echo 5 2>/dev/null > "/proc/$HYPER_PID/clear_refs"; then
    warn "could not reset VmHWM; it will include earlier phases"
fi
sync

# RSS sampler: VmRSS (kB) every 0.2 s while the server lives
(
    while awk '/^VmRSS:/ { print $2 }' "/proc/$HYPER_PID/status" 2>/dev/null; do sleep 0.2; done
) > "$TMP/rss.samples" &
SAMPLER_PID=$!
BG_PIDS+=("$SAMPLER_PID")

t0=$(now)
UP_PIDS=()
for i in $(seq 0 $((CONCURRENCY - 1))); do
    curl -sS -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$BIG" \
         -D "$TMP/mem$i.hdrs" -o "$TMP/mem$i.body" -w '%{http_code}' \
         "${PUT_URLS[$i]}" > "$TMP/mem$i.code" 2> "$TMP/mem$i.err" &
    UP_PIDS+=("$!")
    BG_PIDS+=("$!")
done
up_fail=0
for i in $(seq 0 $((CONCURRENCY - 1))); do
    wait "${UP_PIDS[$i]}" || { warn "upload $i: curl failed: $(cat "$TMP/mem$i.err")"; up_fail=1; }
done
t1=$(now)
sleep 0.3   # one more RSS sample after the last upload finished
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
MEM_SECS=$(elapsed "$t0" "$t1")

alive "$HYPER_PID" || die "hyperregistry died during the concurrent uploads"
HWM_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$HYPER_PID/status")
SAMPLED_KB=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$TMP/rss.samples")
NSAMPLES=$(wc -l < "$TMP/rss.samples")
PEAK_KB=$(( HWM_KB > SAMPLED_KB ? HWM_KB : SAMPLED_KB ))
PEAK_MB=$(awk -v k="$PEAK_KB" 'BEGIN { printf "%.1f", k / 1024 }')

# every upload must have been accepted, and every repo must now have the blob
for i in $(seq 0 $((CONCURRENCY - 1))); do
    code=$(cat "$TMP/mem$i.code" 2>/dev/null || true)
    if [[ $code != 201 ]]; then
        warn "concurrent upload $i: PUT ${PUT_URLS[$i]} -> ${code:-no status}"
        tr -d '\r' < "$TMP/mem$i.hdrs" >&2 || true
        head -c 2000 "$TMP/mem$i.body" >&2 || true; echo >&2
        up_fail=1
    fi
done
[[ $up_fail == 0 ]] || die "concurrent uploads to hyperregistry failed (see above)"
for i in $(seq 0 $((CONCURRENCY - 1))); do
    req HEAD "$HYPER/v2/bench/mem$i/blobs/$BIG_DIGEST" -I
    expect 200
    [[ $(hdr Content-Length) == "$BLOB_BYTES" ]] \
        || die "$LAST_REQ: Content-Length '$(hdr Content-Length)' != $BLOB_BYTES"
done
log "memory: $CONCURRENCY uploads in ${MEM_SECS}s ($(mib_s $((BLOB_BYTES * CONCURRENCY)) "$MEM_SECS") MiB/s aggregate)"
log "memory: VmHWM $((HWM_KB / 1024)) MiB, max sampled VmRSS $((SAMPLED_KB / 1024)) MiB ($NSAMPLES samples), lifetime VmHWM before this phase $((LIFETIME_HWM_KB / 1024)) MiB"

# ---------------------------------------------------------------------------
# 5. summary
# ---------------------------------------------------------------------------
verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }
R_MANIFEST=$(verdict ge "$MANIFEST_RATIO" "$TARGET_MANIFEST_RATIO")
R_PUSH=$(verdict ge "$PUSH_RATIO" "$TARGET_PUSH_RATIO")
R_GET=$(verdict ge "$GET_RATIO" "$TARGET_GET_RATIO")
R_MEM=$(verdict awk -v p="$PEAK_MB" -v l="$RSS_LIMIT_MB" 'BEGIN { exit !(p + 0 <= l + 0) }')

SIZE_LABEL=$(awk -v b="$BLOB_BYTES" 'BEGIN { if (b % 1073741824 == 0) printf "%d GiB", b / 1073741824; else printf "%.0f MiB", b / 1048576 }')
row() { printf '%-34s %14s %14s %9s %10s  %s\n' "$@"; }
echo
echo "=== registry benchmark summary ($(nproc) cores, wrk -t$WRK_THREADS -c$WRK_CONNS -d${BENCH_SECS}s) ==="
row "metric" "hyperregistry" "distribution" "ratio" "target" "result"
row "manifest GET by tag (req/s)" "$HYPER_RPS" "$DIST_RPS" "${MANIFEST_RATIO}x" ">= ${TARGET_MANIFEST_RATIO}x" "$R_MANIFEST"
row "$SIZE_LABEL monolithic push (s, median)" "$HYPER_PUSH" "$DIST_PUSH" "${PUSH_RATIO}x" ">= ${TARGET_PUSH_RATIO}x" "$R_PUSH"
row "$SIZE_LABEL blob GET (s, median)" "$HYPER_GET" "$DIST_GET" "${GET_RATIO}x" ">= ${TARGET_GET_RATIO}x" "$R_GET"
row "peak RSS, ${CONCURRENCY}x$SIZE_LABEL upload (MiB)" "$PEAK_MB" "-" "-" "<= $RSS_LIMIT_MB" "$R_MEM"
echo "(ratios: req/s ours/theirs; times theirs/ours -- higher is better for hyperregistry;"
echo " push/GET medians of $ROUNDS rounds: dist [${DIST_PUSHES[*]}] / [${DIST_GETS[*]}], ours [${HYPER_PUSHES[*]}] / [${HYPER_GETS[*]}])"
exit 0
