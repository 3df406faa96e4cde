# bench/lib.sh -- helpers shared by the benchmark scripts (sourced, not run).
# Logging, arithmetic on timings, a cleanup trap for server processes and the temp dir,
# free ports, readiness polling, and curl wrappers for the registry HTTP API.
# shellcheck shell=bash
# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '\n[%s] FATAL: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

now()     { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio()   { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
ge()      { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "n/a" && a + 0 >= b + 0) }'; }
median()  { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : sprintf("%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
at_most() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "n/a" && r + 0 <= t + 0) ? "PASS" : "FAIL" }'; }
mib_s()   { awk -v bytes="$1" -v s="$2" 'BEGIN { if (s + 0 == 0) print "n/a"; else printf "%.0f", bytes / 1048576 / s }'; }

# release_binaries PKG...: build the packages in release mode (unless BENCH_NO_BUILD=1), set
# RELEASE_DIR to cargo's release directory, and die unless every PKG's binary is there.
release_binaries() {
    if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
        log "cargo build --release $*"
        local args=() p
        for p in "$@"; do args+=(-p "$p"); done
        (cd "$ROOT" && cargo build --release -q "${args[@]}") || die "cargo build failed"
    fi
    local target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$ROOT/$target
    RELEASE_DIR=$target/release
    for p in "$@"; do
        [[ -x $RELEASE_DIR/$p ]] || die "$p not found in $RELEASE_DIR (run without BENCH_NO_BUILD)"
    done
}

# Processes and temp dir that cleanup() must take care of.
SERVER_PIDS=()
BG_PIDS=()
TMP=""
SERVER_LOGS=()
CGROUP_DIRS=()   # cgroups (v1 cpu controller) created for CPU limits, removed on exit

cleanup() {
    local rc=$?
    set +e
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    # give servers a moment to exit, then make sure they are gone
    for p in "${SERVER_PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    for d in "${CGROUP_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
    if [[ $rc -ne 0 ]]; then
        for f in "${SERVER_LOGS[@]}"; do
            [[ -s $f ]] || continue
            printf '\n----- last lines of %s -----\n' "$(basename "$f")" >&2
            tail -n 30 "$f" >&2
        done
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then
            log "keeping temp dir $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback TCP port: random candidates, rejected if something accepts a connection.
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    die "could not find a free loopback port"
}

# alive PID: process exists and is not a zombie
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# wait_ready NAME BASE_URL PID LOGFILE: poll GET /v2/ until it answers 200 (max 20 s).
wait_ready() {
    local name=$1 base=$2 pid=$3 logf=$4 code
    for _ in $(seq 1 100); do
        alive "$pid" || die "$name exited during startup (log: $logf, tail printed below)"
        code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v2/" 2>/dev/null || true)
        [[ $code == 200 ]] && return 0
        sleep 0.2
    done
    die "$name did not answer 200 on $base/v2/ within 20 s (last status: ${code:-none})"
}

# req METHOD URL [curl args...]: one request; sets CODE, response headers in $TMP/hdrs,
# body in $TMP/body. Transport-level errors are fatal.
req() {
    local method=$1 url=$2; shift 2
    CODE=$(curl -sS -X "$method" -H 'Expect:' -D "$TMP/hdrs" -o "$TMP/body" \
                -w '%{http_code}' "$@" "$url") \
        || die "curl $method $url failed at transport level"
    LAST_REQ="$method $url"
}

# hdr NAME: value of a header of the last response (last occurrence, CR stripped)
hdr() {
    awk -v n="$1" '
        { sub(/\r$/, "") ; i = index($0, ":")
          if (i > 0 && tolower(substr($0, 1, i - 1)) == tolower(n)) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); val = v } }
        END { print val }' "$TMP/hdrs"
}

# expect CODE...: die with the full response if the last status is not one of them
expect() {
    local c
    for c in "$@"; do [[ $CODE == "$c" ]] && return 0; done
    {
        printf '\nrequest : %s\nexpected: %s, got: %s\n--- response headers ---\n' "$LAST_REQ" "$*" "$CODE"
        tr -d '\r' < "$TMP/hdrs"
        printf -- '--- response body (first 2000 bytes) ---\n'
        head -c 2000 "$TMP/body"; echo
    } >&2
    die "unexpected response to $LAST_REQ"
}

# abs_url BASE LOCATION: resolve a Location header (absolute, or absolute-path relative)
abs_url() {
    case $2 in
        http://*|https://*) echo "$2" ;;
        /*)                 echo "$1$2" ;;
        "")                 die "empty Location header in response to $LAST_REQ" ;;
        *)                  die "unsupported relative Location '$2' in response to $LAST_REQ" ;;
    esac
}

# with_digest URL DIGEST: append digest= with ? or & as needed
with_digest() {
    case $1 in
        *\?*) echo "$1&digest=$2" ;;
        *)    echo "$1?digest=$2" ;;
    esac
}

sha256_of() { sha256sum "$1" | awk '{print "sha256:" $1}'; }

# start_upload BASE REPO: POST an upload session; prints the absolute upload URL
start_upload() {
    local base=$1 repo=$2
    req POST "$base/v2/$repo/blobs/uploads/" -H 'Content-Length: 0'
    expect 202
    abs_url "$base" "$(hdr Location)"
}

# put_blob_monolithic BASE REPO FILE DIGEST: POST + PUT ?digest= with the whole file
put_blob_monolithic() {
    local base=$1 repo=$2 file=$3 digest=$4 loc
    loc=$(start_upload "$base" "$repo")
    req PUT "$(with_digest "$loc" "$digest")" -T "$file" -H 'Content-Type: application/octet-stream'
    expect 201
    local got
    got=$(hdr Docker-Content-Digest)
    [[ -z $got || $got == "$digest" ]] \
        || die "$LAST_REQ: Docker-Content-Digest is $got, expected $digest"
}
