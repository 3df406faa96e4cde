#!/usr/bin/env bash
# bench/starget.sh -- one file from a large eStargz image with `starget get` vs a full
# `hyperbuild pull` of the same image, in one run.
#
# Set-up (untimed): a hyperregistry on a free loopback port; a busybox base image made with
# `hyperbuild import`; a Dockerfile FROM it whose RUN steps write BENCH_LAYERS (4) layers of
# BENCH_FILES_PER_LAYER (55) x 1 MiB files from /dev/urandom, the second layer also holding
# the 1 MiB /target/file.bin and its sha256 (/target/file.sha256, written by `sha256sum` in
# the same RUN). Built with `--compression estargz`, the whole image (base included) is
# converted with `convert --estargz` and pushed; its compressed layers must total >= 200 MB.
# Then, for BENCH_ROUNDS rounds, alternating which goes first:
#   starget:   `starget get IMAGE target/file.bin -o FRESH_DIR --no-progress` (time, and the
#              bytes transferred from its last line; the file's sha256 checked, untimed)
#   full pull: `hyperbuild --root FRESH_STORE -q pull IMAGE`
# Targets (medians): starget bytes / image bytes <= 2 %; starget time / pull time <= 0.10.
#
# Knobs: BENCH_NO_BUILD=1, BENCH_ROUNDS=3, BENCH_LAYERS=4, BENCH_FILES_PER_LAYER=55,
#        BENCH_DROP_CACHES=0 (keep the page cache; default: drop it before every timed run
#        when root can), BENCH_KEEP=1 (keep the temp dir), TMPDIR, CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
LAYERS=${BENCH_LAYERS:-4}
FILES_PER_LAYER=${BENCH_FILES_PER_LAYER:-55}
MIN_IMAGE_BYTES=200000000
TARGET_FILE=target/file.bin
FILE_BYTES=1048576
RUNC_STATE=/run/hyperbuild-runc   # where hyperbuild keeps runc's state

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $LAYERS =~ ^[2-9][0-9]*$ ]] || die "BENCH_LAYERS must be an integer >= 2"
[[ $FILES_PER_LAYER =~ ^[1-9][0-9]*$ ]] || die "BENCH_FILES_PER_LAYER must be a positive integer"
[[ $(id -u) == 0 ]] || die "needs root (RUN steps mount overlays and start runc)"

for tool in runc curl python3 findmnt sha256sum; do
    command -v "$tool" >/dev/null || { log "installing $tool"; apt-get install -y -qq "$tool" >/dev/null; }
done
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    log "installing busybox-static"
    apt-get install -y -qq busybox-static >/dev/null
fi
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (package busybox-static)"

release_binaries hyperregistry hyperbuild starget
HREG=$RELEASE_DIR/hyperregistry
HB=$RELEASE_DIR/hyperbuild
SG=$RELEASE_DIR/starget

# Page cache: dropped before every timed run of either tool, or for neither.
DROP=0
if [[ ${BENCH_DROP_CACHES:-1} == 1 ]] && (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    DROP=1
fi
drop_caches() { sync; if ((DROP)); then echo 3 >/proc/sys/vm/drop_caches; fi; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/starget-bench.XXXXXX")
REG_PID=""
cleanup() {
    local rc=$? id
    set +e
    trap - EXIT INT TERM
    if [[ -n $REG_PID ]]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null; fi
    # RUN containers of builds interrupted here (their bundles live under $TMP).
    if [[ -d $RUNC_STATE ]]; then
        runc --root "$RUNC_STATE" list --format json 2>/dev/null \
            | python3 -c 'import json,sys
t = sys.argv[1] + "/"
for c in json.load(sys.stdin) or []:
    if c.get("bundle", "").startswith(t): print(c["id"])' "$TMP" \
            | while read -r id; do runc --root "$RUNC_STATE" delete -f "$id"; done
    fi
    # Overlays of interrupted RUN steps: deepest first.
    findmnt -rn -o TARGET | awk -v t="$TMP/" 'index($0, t) == 1' | sort -r \
        | while read -r m; do umount -R "$m" 2>/dev/null || umount -l "$m"; done
    if [[ ${BENCH_KEEP:-} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# timed CMD... -> seconds on stdout; the command's stdout in $TMP/last.out, stderr in $TMP/last.err
timed() {
    local t0 t1
    drop_caches
    t0=$(now)
    "$@" >"$TMP/last.out" 2>"$TMP/last.err" || { tail -n 40 "$TMP/last.err" >&2; die "failed: $*"; }
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
quiet() { "$@" >"$TMP/quiet.log" 2>&1 || { tail -n 40 "$TMP/quiet.log" >&2; die "failed: $*"; }; }
# capture CMD... -> the command's stdout in $TMP/cap.out (stderr shown only if it fails)
capture() { "$@" >"$TMP/cap.out" 2>"$TMP/cap.err" || { tail -n 40 "$TMP/cap.err" >&2; die "failed: $*"; }; }

log "== registry"
PORT=$(free_port)
mkdir -p "$TMP/registry"
REGISTRY_HTTP_ADDR=127.0.0.1:$PORT REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$TMP/registry RUST_LOG=warn \
    "$HREG" >"$TMP/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break
    kill -0 "$REG_PID" 2>/dev/null || { cat "$TMP/registry.log" >&2; die "hyperregistry exited"; }
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null || die "hyperregistry did not start (see $TMP/registry.log)"
REG=127.0.0.1:$PORT
BASE=$REG/bench/busybox:1
IMAGE=$REG/bench/stargz:1
STORE=$TMP/build-store

log "== busybox base image"
RFS=$TMP/rootfs
mkdir -p "$RFS/bin" "$RFS/etc" "$RFS/tmp"
chmod 1777 "$RFS/tmp"
cp "$BUSYBOX" "$RFS/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$RFS/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$RFS/etc/passwd"
echo 'root:x:0:' >"$RFS/etc/group"
tar -C "$RFS" -cf "$TMP/busybox.tar" .
rm -rf "$RFS"
quiet "$HB" --root "$STORE" -q import "$TMP/busybox.tar" "$BASE"
rm -f "$TMP/busybox.tar"

log "== eStargz image: $LAYERS layers x $FILES_PER_LAYER x 1 MiB random files + /$TARGET_FILE"
CTX=$TMP/context
mkdir -p "$CTX"
{
    echo "FROM $BASE"
    for l in $(seq 1 "$LAYERS"); do
        # shellcheck disable=SC2016 # $(seq) and $i are for the RUN step's shell
        printf 'RUN mkdir -p /data/d%s && for i in $(seq 1 %s); do head -c 1048576 /dev/urandom > /data/d%s/f$i.bin; done' \
            "$l" "$FILES_PER_LAYER" "$l"
        # The known file goes into the second layer, among that layer's bulk.
        if ((l == 2)); then
            printf ' && mkdir -p /target && head -c %s /dev/urandom > /target/file.bin && cd /target && sha256sum file.bin > file.sha256' \
                "$FILE_BYTES"
        fi
        echo
    done
} >"$CTX/Dockerfile"
t0=$(now)
quiet "$HB" --root "$STORE" build -c "$CTX" --compression estargz -i bench/built:1 --progress plain
quiet "$HB" --root "$STORE" convert --estargz bench/built:1 "$IMAGE"
quiet "$HB" --root "$STORE" -q push "$IMAGE"
log "built, converted and pushed $IMAGE in $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')s"

# The pushed image, as the registry has it.
capture "$HB" --root "$STORE" -q inspect --remote "$IMAGE"
read -r N_LAYERS IMAGE_BYTES < <(python3 -c 'import json,sys
ls = json.load(open(sys.argv[1]))["Manifest"]["layers"]
print(len(ls), sum(l["size"] for l in ls))' "$TMP/cap.out") || die "no Manifest.layers in: $(head -c 2000 "$TMP/cap.out")"
log "pushed image: $N_LAYERS layers, $IMAGE_BYTES bytes compressed"
((IMAGE_BYTES >= MIN_IMAGE_BYTES)) || die "image is only $IMAGE_BYTES bytes (< $MIN_IMAGE_BYTES); raise BENCH_LAYERS or BENCH_FILES_PER_LAYER"
# Every layer eStargz: starget info prints one "N  sha256:...  TYPE  SIZE  estargz|-  ..." line per layer.
capture "$SG" --no-progress info "$IMAGE"
stargz=$(grep -E '^ *[0-9]+  sha256:' "$TMP/cap.out" | grep -c '  estargz  ' || true)
((stargz == N_LAYERS)) || { cat "$TMP/cap.out" >&2; die "starget info: $stargz of $N_LAYERS layers are eStargz"; }
rm -rf "$STORE"

# The expected digest, written at build time inside the image (fetched untimed).
quiet "$SG" --no-progress get "$IMAGE" target/file.sha256 -o "$TMP/expected"
EXPECTED=$(cut -d' ' -f1 "$TMP/expected/target/file.sha256")
[[ $EXPECTED =~ ^[0-9a-f]{64}$ ]] || die "bad target/file.sha256: $(cat "$TMP/expected/target/file.sha256")"
log "/$TARGET_FILE sha256 $EXPECTED"

SG_TIME=(); SG_BYTES=(); PULL_TIME=(); PULL_DIGEST=""

run_starget() {
    local r=$1 t line bytes sum
    local out=$TMP/get-$r
    rm -rf "$out"
    t=$(timed "$SG" --no-progress get "$IMAGE" "$TARGET_FILE" -o "$out")
    line=$(tail -n 1 "$TMP/last.err")
    [[ $line == "fetched 1 file(s): "* ]] || { cat "$TMP/last.err" >&2; die "unexpected last line from starget: $line"; }
    bytes=$(sed -n 's/.* transferred (\([0-9]*\) bytes), from layers of .*/\1/p' <<<"$line")
    [[ -n $bytes ]] || die "no byte count in: $line"
    [[ $(stat -c %s "$out/$TARGET_FILE") == "$FILE_BYTES" ]] || die "fetched $TARGET_FILE has the wrong size"
    sum=$(sha256sum "$out/$TARGET_FILE" | cut -d' ' -f1)
    [[ $sum == "$EXPECTED" ]] || die "fetched $TARGET_FILE: sha256 $sum, expected $EXPECTED"
    SG_TIME+=("$t"); SG_BYTES+=("$bytes")
    log "round $r: starget get   ${t}s, $bytes bytes (${line#*: })"
    rm -rf "$out"
}

run_pull() {
    local r=$1 t digest
    local store=$TMP/pull-store-$r
    rm -rf "$store"
    t=$(timed "$HB" --root "$store" -q pull "$IMAGE")
    digest=$(grep -o 'sha256:[0-9a-f]\{64\}' "$TMP/last.out" | tail -n 1) || die "no digest from hyperbuild pull: $(cat "$TMP/last.out")"
    [[ -z $PULL_DIGEST || $digest == "$PULL_DIGEST" ]] || die "pull gave $digest, earlier $PULL_DIGEST"
    PULL_DIGEST=$digest
    PULL_TIME+=("$t")
    log "round $r: full pull     ${t}s ($(du -sb "$store" | cut -f1) bytes in the store)"
    rm -rf "$store"
}

log "== $ROUNDS round(s); page cache $( ((DROP)) && echo "dropped before every timed run" || echo "not dropped")"
for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then run_starget "$r"; run_pull "$r"; else run_pull "$r"; run_starget "$r"; fi
done

st=$(median "${SG_TIME[@]}"); sb=$(median "${SG_BYTES[@]}"); pt=$(median "${PULL_TIME[@]}")
bytes_pct=$(awk -v a="$sb" -v b="$IMAGE_BYTES" 'BEGIN { printf "%.3f", 100 * a / b }')
time_ratio=$(awk -v a="$st" -v b="$pt" 'BEGIN { printf "%.3f", a / b }')

echo
echo "=== starget benchmark: 1 MiB /$TARGET_FILE from a $N_LAYERS-layer eStargz image of $IMAGE_BYTES bytes, median of $ROUNDS rounds ==="
echo "($("$SG" --version), $("$HB" --version); page cache $( ((DROP)) && echo "dropped before every timed run of both tools" || echo "not dropped for either tool"))"
printf '%-40s %14s %10s %6s\n' metric value target result
printf '%-40s %14s %10s %6s\n' "starget get: bytes transferred" "$sb" "-" "-"
printf '%-40s %13s%% %10s %6s\n' "bytes transferred / image bytes" "$bytes_pct" "<= 2%" "$(at_most "$bytes_pct" 2)"
printf '%-40s %14s %10s %6s\n' "starget get (s)" "$st" "-" "-"
printf '%-40s %14s %10s %6s\n' "hyperbuild pull, full image (s)" "$pt" "-" "-"
printf '%-40s %13sx %10s %6s\n' "starget time / full pull time" "$time_ratio" "<= 0.10x" "$(at_most "$time_ratio" 0.1)"
echo "(rounds: starget ${SG_TIME[*]} s, ${SG_BYTES[*]} bytes; pull ${PULL_TIME[*]} s; image $PULL_DIGEST)"
