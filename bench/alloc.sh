#!/usr/bin/env bash
# bench/alloc.sh -- hyperregistry's resident memory through a burst of 64 concurrent 4 MiB
# manifest PUTs, with each global allocator: jemalloc (the default, with a purging
# background thread), mimalloc, and the system's (glibc). It runs the integration test
# `a_burst_of_large_manifest_puts_stays_within_a_memory_bound` (tests/hygiene.rs) against a
# binary built with each; the test prints RssAnon at baseline, at the peak, and once it has
# settled within 128 MiB of the baseline (or after 30 s). A variant that misses the test's
# bounds is reported, not fatal. Debug builds (the test profile); about 2 minutes per
# variant on 2 cores after the first build.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TEST=a_burst_of_large_manifest_puts_stays_within_a_memory_bound
for variant in jemalloc mimalloc system; do
    case $variant in
        jemalloc) flags=() ;;
        mimalloc) flags=(--no-default-features --features mimalloc) ;;
        system) flags=(--no-default-features) ;;
    esac
    out=$(cargo test -q -p hyperregistry "${flags[@]}" --test hygiene -- --nocapture --exact "$TEST" 2>&1)
    line=$(grep -m1 '^64 x' <<< "$out" || echo "no figures (see cargo output)")
    verdict=$(grep -q 'test result: ok' <<< "$out" && echo "within bounds" || echo "OUT OF BOUNDS")
    printf '%-9s %-14s %s\n' "$variant" "$verdict" "$line"
done
