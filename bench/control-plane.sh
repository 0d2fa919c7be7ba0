#!/usr/bin/env bash
# The control plane at scale: creates, gets, list pages, searches and deletes against the running
# binary at several token counts, for the file source and the PostgreSQL source, with p50/p99, the
# server's RSS before, peak and after, and the data plane's p99 quiet and under 100 creates/s.
#
#   bench/control-plane.sh                          # SIZES="10000 100000 1000000" SOURCES="file postgres"
#   SIZES=100000 SOURCES=file bench/control-plane.sh
#   ALLOCATORS="system mimalloc" bench/control-plane.sh   # the same runs with each global allocator
#
# Needs PostgreSQL (BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432/postgres) for the
# postgres source; installs wrk and nginx (the upstream) from Debian's packages if missing.
# Writes bench/out/control-plane.jsonl and prints a table (bench/out/control-plane.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/configs.sh
ROOT=$PWD
OUT=$ROOT/bench/out
SIZES=${SIZES:-10000 100000 1000000}
SOURCES=${SOURCES:-file postgres}
ALLOCATORS=${ALLOCATORS:-system}
export BENCH_POSTGRES=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
UP=18181

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  echo "installing wrk and nginx from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
upstream_conf "$OUT" "$UP" > "$OUT/cp-upstream.conf"
taskset -c 1 nginx -c "$OUT/cp-upstream.conf" -p "$OUT" & PIDS+=($!)

: > "$OUT/control-plane.jsonl"
for alloc in $ALLOCATORS; do
  if [ "$alloc" = system ]; then
    cargo build --release --quiet --bin bentogate
  else
    cargo build --release --quiet --bin bentogate --features "$alloc"
  fi
  cp target/release/bentogate "$OUT/bentogate-$alloc"
  for source in $SOURCES; do
    for n in $SIZES; do
      echo "== $alloc $source $n" >&2
      python3 bench/control_plane.py "$OUT/bentogate-$alloc" "$OUT" "$UP" "$source" "$n" "-$alloc" \
        | tee -a "$OUT/control-plane.jsonl"
      rm -rf "$OUT/cp-$source-$n-$alloc"
    done
  done
done
python3 - "$OUT/control-plane.jsonl" <<'PY' | tee "$OUT/control-plane.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ops = ["create", "delete", "get", "list first page", "list by cursor", "list at offset N/2", "search"]
print("| source | tokens | alloc | " + " | ".join(f"{o} p50/p99 ms" for o in ops) +
      " | RSS before/peak/after MiB | data-plane p99 quiet/busy ms (creates/s) |")
print("|" + " --- |" * (len(ops) + 5))
for r in rows:
    cells = [f"{r['ops'][o]['p50']}/{r['ops'][o]['p99']}" for o in ops]
    m, d = r["rss_mib"], r["data_plane_p99_ms"]
    print(f"| {r['source']} | {r['tokens']:,} | {r['label'].lstrip('-')} | " + " | ".join(cells) +
          f" | {m['before']}/{m['peak']}/{m['after']} | {d['quiet']:.2f}/{d['busy']:.2f} ({d['creates_per_s']}) |")
PY
