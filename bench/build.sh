#!/usr/bin/env bash
# bench/build.sh -- `hyperbuild build` vs `buildah bud`, side by side in one run.
#
# Both tools build bench/build-context/Dockerfile over the same generated context (src/:
# BENCH_SMALL_FILES small files and three 5-10 MB files; app/: three tiny files) on a busybox
# base image. The base is made with `hyperbuild import`, pushed to a hyperregistry on
# loopback, and pulled (untimed) into each tool's fresh store before every round.
# For BENCH_ROUNDS rounds, alternating which tool goes first:
#   cold build:       `hyperbuild build --no-cache` (fresh --root)  vs  `buildah bud --layers=false`
#   cached rebuild:   the same build again                         vs  `buildah bud --layers`, 2nd run
#   one-file change:  app/VERSION changed, rebuilt with the cache   vs  `buildah bud --layers`
# buildah runs as `buildah --root R --runroot RR --storage-driver vfs bud --isolation chroot`
# with a fresh R/RR pair per round. Medians are reported.
# Targets: cold <= 0.5x buildah's time; cached rebuild <= 0.1x buildah's; the one-file change
# runs exactly the layer steps (COPY/ADD/RUN) from the last COPY to the end.
#
# Knobs: BENCH_NO_BUILD=1, BENCH_ROUNDS=3, BENCH_SMALL_FILES=2000, BENCH_KEEP=1 (keep the
#        temp dir), TMPDIR, CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
SMALL_FILES=${BENCH_SMALL_FILES:-2000}
DOCKERFILE_SRC=$ROOT/bench/build-context/Dockerfile
RUNC_STATE=/run/hyperbuild-runc   # where hyperbuild keeps runc's state

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $SMALL_FILES =~ ^[1-9][0-9]*$ ]] || die "BENCH_SMALL_FILES must be a positive integer"
[[ -f $DOCKERFILE_SRC ]] || die "missing $DOCKERFILE_SRC"
[[ $(id -u) == 0 ]] || die "needs root (RUN steps mount overlays and start runc)"

for tool in buildah runc curl python3 findmnt; do
    command -v "$tool" >/dev/null || { log "installing $tool"; apt-get install -y -qq "$tool" >/dev/null; }
done
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    log "installing busybox-static"
    apt-get install -y -qq busybox-static >/dev/null
fi
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (package busybox-static)"

release_binaries hyperbuild hyperregistry
HB=$RELEASE_DIR/hyperbuild
HREG=$RELEASE_DIR/hyperregistry

TMP=$(mktemp -d "${TMPDIR:-/tmp}/build-bench.XXXXXX")
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
    # Overlays of interrupted RUN/COPY steps, anything buildah left mounted: deepest first.
    findmnt -rn -o TARGET | awk -v t="$TMP/" 'index($0, t) == 1' | sort -r \
        | while read -r m; do umount -R "$m" 2>/dev/null || umount -l "$m"; done
    if [[ ${BENCH_KEEP:-} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# timed CMD... -> seconds on stdout; the command's stdout in $TMP/last.out, stderr in $TMP/last.err
timed() {
    local t0 t1
    sync
    t0=$(now)
    "$@" >"$TMP/last.out" 2>"$TMP/last.err" || { tail -n 40 "$TMP/last.err" >&2; die "failed: $*"; }
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
quiet() { "$@" >"$TMP/quiet.log" 2>&1 || { tail -n 40 "$TMP/quiet.log" >&2; die "failed: $*"; }; }
# Steps hyperbuild ran, from its "Built sha256:... in Xs: N step(s) run, M cached" line.
hb_steps() {
    sed -n 's/^Built sha256:[0-9a-f]* in [0-9.]*s: \([0-9]*\) step(s) run, [0-9]* cached$/\1/p' "$TMP/last.err" \
        | tail -n 1 | grep . || { cat "$TMP/last.err" >&2; die "no summary line from hyperbuild"; }
}

log "== registry and busybox base image"
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
BASE=127.0.0.1:$PORT/busybox:latest

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
quiet "$HB" --root "$TMP/seed-store" -q import "$TMP/busybox.tar" "$BASE"
quiet "$HB" --root "$TMP/seed-store" -q push "$BASE"
rm -rf "$TMP/seed-store" "$TMP/busybox.tar"
log "base image $BASE"

log "== context: $SMALL_FILES small files + 3 large files"
CTX=$TMP/context
mkdir -p "$CTX"
python3 - "$CTX/src" "$SMALL_FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"pkg{i % 40:02d}", f"mod{i % 7}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:05d}.txt"), "w") as f:
        f.write(os.urandom(rnd.randint(100, 2000)).hex() + "\n")
os.makedirs(os.path.join(root, "assets"), exist_ok=True)
for name, mib in (("model.bin", 5), ("textures.bin", 8), ("archive.bin", 10)):
    with open(os.path.join(root, "assets", name), "wb") as f:
        f.write(os.urandom(mib << 20))
PY
mkdir -p "$CTX/app"
cat >"$CTX/app/build.sh" <<'SH'
#!/bin/sh
echo "built $(cat /app/VERSION) from $(cat /count) files"
SH
printf '#!/bin/sh\ncat /app/build-info\n' >"$CTX/app/run.sh"
cp "$DOCKERFILE_SRC" "$CTX/Dockerfile"
CTX_BYTES=$(du -sb "$CTX" | cut -f1)
reset_context() { echo "1.0.0" >"$CTX/app/VERSION"; }
change_context() { echo "1.0.$1-changed" >"$CTX/app/VERSION"; }
# Layer-producing steps (COPY/ADD/RUN) from the last COPY to the end: all a rebuild after a
# change to app/ may run. (Metadata steps like CMD make no layer and are not counted.)
EXPECTED_STEPS=$(awk '/^COPY[[:space:]]/ { n = 0; seen = 1 } seen && /^(COPY|ADD|RUN)[[:space:]]/ { n++ } END { print n + 0 }' "$CTX/Dockerfile")
log "context $CTX_BYTES bytes; a change to app/VERSION should run $EXPECTED_STEPS step(s)"

HB_COLD=(); HB_CACHED=(); HB_CHANGE=(); HB_CACHED_STEPS=(); HB_CHANGE_STEPS=()
BH_COLD=(); BH_CACHED=(); BH_CHANGE=()

run_hyperbuild() {
    local r=$1 t n id_cached id_changed
    local store=$TMP/hb-store-$r
    local build=("$HB" --root "$store" build -c "$CTX" -f "$CTX/Dockerfile" -i bench/app:1 --build-arg "BASE=$BASE" --progress plain)
    reset_context
    rm -rf "$store"
    quiet "$HB" --root "$store" -q pull "$BASE"
    t=$(timed "${build[@]}" --no-cache); n=$(hb_steps); HB_COLD+=("$t")
    log "round $r: hyperbuild cold build      ${t}s ($n steps run)"
    t=$(timed "${build[@]}"); n=$(hb_steps); HB_CACHED+=("$t"); HB_CACHED_STEPS+=("$n")
    id_cached=$(cat "$TMP/last.out")
    log "round $r: hyperbuild cached rebuild  ${t}s ($n steps run)"
    change_context "$r"
    t=$(timed "${build[@]}"); n=$(hb_steps); HB_CHANGE+=("$t"); HB_CHANGE_STEPS+=("$n")
    id_changed=$(cat "$TMP/last.out")
    log "round $r: hyperbuild one-file change ${t}s ($n steps run)"
    [[ $id_changed != "$id_cached" ]] || die "hyperbuild: changing app/VERSION did not change the image ($id_cached)"
    rm -rf "$store"
}

run_buildah() {
    local r=$1 t
    local dir=$TMP/bh-$r
    local bh=(buildah --root "$dir/root" --runroot "$dir/runroot" --storage-driver vfs)
    local bud=("${bh[@]}" bud --isolation chroot --pull=false -f "$CTX/Dockerfile" -t bench/app:1 --build-arg "BASE=$BASE")
    reset_context
    rm -rf "$dir"
    quiet "${bh[@]}" pull -q --tls-verify=false "docker://$BASE"
    t=$(timed "${bud[@]}" --layers=false "$CTX"); BH_COLD+=("$t")
    log "round $r: buildah cold build         ${t}s"
    quiet "${bud[@]}" --layers "$CTX"   # fills the layer cache
    t=$(timed "${bud[@]}" --layers "$CTX"); BH_CACHED+=("$t")
    log "round $r: buildah cached rebuild     ${t}s"
    change_context "$r"
    t=$(timed "${bud[@]}" --layers "$CTX"); BH_CHANGE+=("$t")
    log "round $r: buildah one-file change    ${t}s"
    rm -rf "$dir"
}

for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then run_hyperbuild "$r"; run_buildah "$r"; else run_buildah "$r"; run_hyperbuild "$r"; fi
done

hc=$(median "${HB_COLD[@]}"); bc=$(median "${BH_COLD[@]}")
hr=$(median "${HB_CACHED[@]}"); br=$(median "${BH_CACHED[@]}")
hx=$(median "${HB_CHANGE[@]}"); bx=$(median "${BH_CHANGE[@]}")
cr=$(ratio "$hc" "$bc"); rr=$(ratio "$hr" "$br"); xr=$(ratio "$hx" "$bx")
max_change=$(printf '%s\n' "${HB_CHANGE_STEPS[@]}" | sort -n | tail -n 1)
max_cached=$(printf '%s\n' "${HB_CACHED_STEPS[@]}" | sort -n | tail -n 1)
steps_ok=PASS
for s in "${HB_CHANGE_STEPS[@]}"; do [[ $s == "$EXPECTED_STEPS" ]] || steps_ok=FAIL; done
cached_ok=PASS
for s in "${HB_CACHED_STEPS[@]}"; do [[ $s == 0 ]] || cached_ok=FAIL; done

echo
echo "=== build benchmark: $SMALL_FILES small + 3 large files ($CTX_BYTES bytes of context), median of $ROUNDS rounds ==="
echo "($("$HB" --version), $(buildah --version | cut -d' ' -f1-3), vfs + chroot)"
printf '%-34s %12s %12s %8s %9s %6s\n' metric hyperbuild buildah ratio target result
printf '%-34s %12s %12s %7sx %9s %6s\n' "cold build (s)" "$hc" "$bc" "$cr" "<= 0.50x" "$(at_most "$cr" 0.5)"
printf '%-34s %12s %12s %7sx %9s %6s\n' "fully cached rebuild (s)" "$hr" "$br" "$rr" "<= 0.10x" "$(at_most "$rr" 0.1)"
printf '%-34s %12s %12s %7sx %9s %6s\n' "one-file change rebuild (s)" "$hx" "$bx" "$xr" "-" "-"
printf '%-34s %12s %12s %8s %9s %6s\n' "one-file change: steps run (max)" "$max_change" "-" "-" "== $EXPECTED_STEPS" "$steps_ok"
printf '%-34s %12s %12s %8s %9s %6s\n' "cached rebuild: steps run (max)" "$max_cached" "-" "-" "== 0" "$cached_ok"
echo "(ratio = hyperbuild time / buildah time; rounds: cold ${HB_COLD[*]} vs ${BH_COLD[*]};" \
    "cached ${HB_CACHED[*]} vs ${BH_CACHED[*]}; one-file ${HB_CHANGE[*]} vs ${BH_CHANGE[*]};" \
    "one-file steps run ${HB_CHANGE_STEPS[*]})"
