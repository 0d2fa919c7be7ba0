#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each, with cargo-fuzz (libFuzzer)
# on the nightly toolchain, and prints each target's executions and findings.
#   fuzz/run.sh                 # 60 s per target
#   fuzz/run.sh 600 route       # 10 minutes of the route target
# Seeds are in fuzz/seeds/<target> (committed); the growing corpus in fuzz/corpus/<target> and
# crashes in fuzz/artifacts/<target> are not committed. A crash makes this script fail: turn it
# into a regression test, then fix it.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=${*:-bearer token_check route config token_file introspect_answer normalize}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo fuzz has no --locked: a stale fuzz/Cargo.lock fails here instead of being rewritten by
# the build (.ci/run requires the checkout unchanged at its end).
cargo +nightly metadata --locked --format-version 1 >/dev/null ||
    { echo "fuzz/Cargo.lock is out of date: run 'cargo +nightly update -w' in fuzz/ and commit it" >&2; exit 1; }
mkdir -p logs
status=0
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$t.log" 2>&1; then
        result="no finding"
    else
        result="FINDING (see fuzz/logs/$t.log and fuzz/artifacts/$t)"
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    echo "$t: $runs executions in ${SECONDS_PER_TARGET}s: $result"
done
exit $status
