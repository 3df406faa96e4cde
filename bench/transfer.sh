#!/usr/bin/env bash
# bench/transfer.sh -- hyperbuild pull/push vs skopeo, side by side in one run.
#
# An image of BENCH_LAYERS layers totalling BENCH_IMAGE_BYTES (default 8 x 128 MiB) is put
# into a hyperregistry (the source) once. Then, for BENCH_ROUNDS rounds, alternating tools:
#   pull: `hyperbuild pull` into an empty store   vs  `skopeo copy docker://... oci:DIR`
#   push: `hyperbuild push` to an empty registry   vs  `skopeo copy oci:DIR docker://...`
# (every push goes to a fresh hyperregistry, so nothing can be skipped or mounted).
# Targets: hyperbuild no slower than skopeo for both (ratio skopeo/hyperbuild >= 1.0).
#
# Knobs: BENCH_NO_BUILD=1, BENCH_ROUNDS=3, BENCH_LAYERS=8, BENCH_IMAGE_BYTES=1073741824,
#        BENCH_KEEP=1 (keep the temp dir), TMPDIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
LAYERS=${BENCH_LAYERS:-8}
IMAGE_BYTES=${BENCH_IMAGE_BYTES:-1073741824}
LAYER_BYTES=$((IMAGE_BYTES / LAYERS))

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for tool in skopeo curl; do
    command -v "$tool" >/dev/null || { log "installing $tool"; apt-get install -y -qq "$tool" >/dev/null; }
done
release_binaries hyperregistry hyperbuild
HREG=$RELEASE_DIR/hyperregistry
HB=$RELEASE_DIR/hyperbuild

TMP=$(mktemp -d "${TMPDIR:-/tmp}/transfer-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ ${BENCH_KEEP:-} == 1 ]] && log "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT


# start_registry DIR -> prints "PID PORT"
start_registry() {
    local dir=$1 port
    port=$(free_port)
    REGISTRY_HTTP_ADDR=127.0.0.1:$port REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$dir RUST_LOG=warn \
        "$HREG" >"$dir.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && { echo "$pid $port"; return; }
        sleep 0.1
    done
    die "hyperregistry did not start (see $dir.log)"
}

log "== building a $LAYERS-layer image of $IMAGE_BYTES bytes"
LAYOUT=$TMP/layout
mkdir -p "$LAYOUT/blobs/sha256"
layers_json=""; diff_ids=""
for i in $(seq 1 "$LAYERS"); do
    mkdir -p "$TMP/l$i"
    head -c "$LAYER_BYTES" /dev/urandom >"$TMP/l$i/data$i.bin"
    tar -C "$TMP/l$i" -cf "$TMP/layer$i.tar" "data$i.bin"
    rm -rf "$TMP/l$i"
    d=$(sha256sum "$TMP/layer$i.tar" | cut -d' ' -f1)
    size=$(stat -c %s "$TMP/layer$i.tar")
    mv "$TMP/layer$i.tar" "$LAYOUT/blobs/sha256/$d"
    layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$d\",\"size\":$size}"
    diff_ids+="${diff_ids:+,}\"sha256:$d\""
done
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]}}"
printf '%s' "$config" >"$TMP/config.json"
cd_=$(sha256sum "$TMP/config.json" | cut -d' ' -f1)
mv "$TMP/config.json" "$LAYOUT/blobs/sha256/$cd_"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd_\",\"size\":${#config}},\"layers\":[$layers_json]}"
printf '%s' "$manifest" >"$TMP/manifest.json"
md=$(sha256sum "$TMP/manifest.json" | cut -d' ' -f1)
msize=$(stat -c %s "$TMP/manifest.json")
mv "$TMP/manifest.json" "$LAYOUT/blobs/sha256/$md"
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$md\",\"size\":$msize,\"annotations\":{\"org.opencontainers.image.ref.name\":\"1\"}}]}" >"$LAYOUT/index.json"

read -r SRC_PID SRC_PORT < <(start_registry "$TMP/source")
PIDS+=("$SRC_PID")
SRC=127.0.0.1:$SRC_PORT
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:1" "docker://$SRC/bench/big:1"
rm -rf "$LAYOUT"
log "source image at $SRC/bench/big:1 (manifest sha256:$md)"

timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>"$TMP/last.err" || { cat "$TMP/last.err" >&2; die "failed: $*"; }; t1=$(now); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }

HB_PULL=(); SK_PULL=(); HB_PUSH=(); SK_PUSH=()
for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$TMP/store" "$TMP/oci-out"; sync
    t=$(timed "$HB" --root "$TMP/store" -q pull "$SRC/bench/big:1"); HB_PULL+=("$t")
    log "round $r: hyperbuild pull ${t}s"
    sync
    t=$(timed skopeo copy -q --src-tls-verify=false "docker://$SRC/bench/big:1" "oci:$TMP/oci-out:1"); SK_PULL+=("$t")
    log "round $r: skopeo pull    ${t}s"

    sync
    read -r P PORT < <(start_registry "$TMP/dst-hb-$r"); PIDS+=("$P")
    t=$(timed "$HB" --root "$TMP/store" -q push "$SRC/bench/big:1" "127.0.0.1:$PORT/bench/big:1"); HB_PUSH+=("$t")
    kill "$P"; wait "$P" 2>/dev/null || true; rm -rf "$TMP/dst-hb-$r"
    log "round $r: hyperbuild push ${t}s"
    sync
    read -r P PORT < <(start_registry "$TMP/dst-sk-$r"); PIDS+=("$P")
    t=$(timed skopeo copy -q --dest-tls-verify=false "oci:$TMP/oci-out:1" "docker://127.0.0.1:$PORT/bench/big:1"); SK_PUSH+=("$t")
    kill "$P"; wait "$P" 2>/dev/null || true; rm -rf "$TMP/dst-sk-$r"
    log "round $r: skopeo push    ${t}s"
done

hp=$(median "${HB_PULL[@]}"); sp=$(median "${SK_PULL[@]}")
hu=$(median "${HB_PUSH[@]}"); su=$(median "${SK_PUSH[@]}")
pr=$(ratio "$sp" "$hp"); ur=$(ratio "$su" "$hu")
verdict() { awk -v r="$1" 'BEGIN { print (r >= 1.0) ? "PASS" : "FAIL" }'; }
echo
echo "=== transfer benchmark: $LAYERS layers, $IMAGE_BYTES bytes, median of $ROUNDS rounds ==="
printf '%-28s %12s %12s %8s %8s %6s\n' metric hyperbuild skopeo ratio target result
printf '%-28s %12s %12s %7sx %8s %6s\n' "pull into local store (s)" "$hp" "$sp" "$pr" ">= 1.0x" "$(verdict "$pr")"
printf '%-28s %12s %12s %7sx %8s %6s\n' "push to empty registry (s)" "$hu" "$su" "$ur" ">= 1.0x" "$(verdict "$ur")"
echo "(ratio = skopeo time / hyperbuild time; rounds: pull ${HB_PULL[*]} vs ${SK_PULL[*]}; push ${HB_PUSH[*]} vs ${SK_PUSH[*]})"
