#!/usr/bin/env bash
# bench/abuse.sh -- slow clients and a burst of large manifest PUTs, at scale, against
# hyperregistry (its default limits) and CNCF Distribution side by side, on loopback only.
#
#   bench/abuse.sh                       # builds hyperregistry (release) first
#   BENCH_NO_BUILD=1 bench/abuse.sh
#
# Knobs: BENCH_TRICKLE (500 connections sending a head one byte every 2 s), BENCH_SILENT
# (500 connections sending nothing), BENCH_SLOW_SECS (70: past the 60 s idle timeout),
# BENCH_BURST (256 concurrent ~4 MiB manifest PUTs). Bounded: about 2 x BENCH_SLOW_SECS
# plus two bursts, a few minutes in all.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

TRICKLE=${BENCH_TRICKLE:-500}
SILENT=${BENCH_SILENT:-500}
SLOW_SECS=${BENCH_SLOW_SECS:-70}
BURST=${BENCH_BURST:-256}
command -v docker-registry >/dev/null || die "docker-registry (Debian package) is needed as the anchor"
command -v python3 >/dev/null || die "python3 is needed for the clients"
ulimit -n 65536 2>/dev/null || ulimit -n 8192

release_binaries hyperregistry
BIN=$RELEASE_DIR/hyperregistry
TMP=$(mktemp -d "${TMPDIR:-/tmp}/abuse-bench.XXXXXX")

start_distribution() {
    local port=$1
    mkdir -p "$TMP/dist-data-$port"
    cat > "$TMP/dist-$port.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/dist-data-$port
http:
  addr: 127.0.0.1:$port
YML
    SERVER_LOGS+=("$TMP/dist-$port.log")
    docker-registry serve "$TMP/dist-$port.yml" > "$TMP/dist-$port.log" 2>&1 &
    LAST_PID=$!
    SERVER_PIDS+=("$LAST_PID")
    wait_ready distribution "http://127.0.0.1:$port" "$LAST_PID" "$TMP/dist-$port.log"
}

start_hyper() {
    local port=$1
    mkdir -p "$TMP/hyper-data-$port"
    SERVER_LOGS+=("$TMP/hyper-$port.log")
    REGISTRY_HTTP_ADDR=127.0.0.1:$port REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$TMP/hyper-data-$port \
        RUST_LOG=warn "$BIN" > "$TMP/hyper-$port.log" 2>&1 &
    LAST_PID=$!
    SERVER_PIDS+=("$LAST_PID")
    wait_ready hyperregistry "http://127.0.0.1:$port" "$LAST_PID" "$TMP/hyper-$port.log"
}

declare -A RESULT
for server in hyperregistry distribution; do
    for phase in slow burst; do
        port=$(free_port)
        if [[ $server == hyperregistry ]]; then start_hyper "$port"; else start_distribution "$port"; fi
        pid=$LAST_PID
        if [[ $phase == slow ]]; then
            log "$server: $TRICKLE trickling + $SILENT silent connections for $SLOW_SECS s"
            RESULT[$server-slow]=$(python3 "$ROOT/bench/abuse.py" slow 127.0.0.1 "$port" "$pid" "$TRICKLE" "$SILENT" "$SLOW_SECS")
        else
            log "$server: $BURST concurrent ~4 MiB manifest PUTs"
            RESULT[$server-burst]=$(python3 "$ROOT/bench/abuse.py" burst 127.0.0.1 "$port" "$pid" "$BURST")
        fi
        log "$server $phase: ${RESULT[$server-$phase]}"
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done

get() { jq -r "${@:2}" <<< "${RESULT[$1]}"; }
h_held=$(get hyperregistry-slow .held_after); d_held=$(get distribution-slow .held_after)
h_p99=$(get hyperregistry-slow .p99_ms); d_p99=$(get distribution-slow .p99_ms)
h_err=$(get hyperregistry-slow .errors); d_err=$(get distribution-slow .errors)
h_peak=$(awk -v p="$(get hyperregistry-burst .rss_peak_mib)" -v b="$(get hyperregistry-burst .rss_baseline_mib)" 'BEGIN{printf "%.0f", p-b}')
d_peak=$(awk -v p="$(get distribution-burst .rss_peak_mib)" -v b="$(get distribution-burst .rss_baseline_mib)" 'BEGIN{printf "%.0f", p-b}')
h_after=$(awk -v p="$(get hyperregistry-burst .rss_after_5s_mib)" -v b="$(get hyperregistry-burst .rss_baseline_mib)" 'BEGIN{printf "%.0f", p-b}')
d_after=$(awk -v p="$(get distribution-burst .rss_after_5s_mib)" -v b="$(get distribution-burst .rss_baseline_mib)" 'BEGIN{printf "%.0f", p-b}')

printf '\n%-44s %16s %16s %10s\n' "metric" "hyperregistry" "distribution" "ratio"
printf '%-44s %16s %16s %10s\n' "slow conns still held after ${SLOW_SECS}s (of $((TRICKLE + SILENT)))" "$h_held" "$d_held" "-"
printf '%-44s %16s %16s %10s\n' "p99 ms of GET /v2/ meanwhile" "$h_p99" "$d_p99" "$(ratio "$d_p99" "$h_p99")"
printf '%-44s %16s %16s %10s\n' "failed GET /v2/ meanwhile" "$h_err" "$d_err" "-"
printf '%-44s %16s %16s %10s\n' "burst of $BURST: answers" "$(get hyperregistry-burst -c .answers)" "$(get distribution-burst -c .answers)" "-"
printf '%-44s %16s %16s %10s\n' "burst: 429 answers (retried)" "$(get hyperregistry-burst .refused_429)" "$(get distribution-burst .refused_429)" "-"
printf '%-44s %16s %16s %10s\n' "burst: seconds" "$(get hyperregistry-burst .secs)" "$(get distribution-burst .secs)" "$(ratio "$(get distribution-burst .secs)" "$(get hyperregistry-burst .secs)")"
printf '%-44s %16s %16s %10s\n' "burst: peak RssAnon growth MiB" "$h_peak" "$d_peak" "$(ratio "$d_peak" "$h_peak")"
printf '%-44s %16s %16s %10s\n' "burst: RssAnon growth 5 s after, MiB" "$h_after" "$d_after" "-"
