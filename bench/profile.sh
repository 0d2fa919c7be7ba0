#!/usr/bin/env bash
# Instruction counts per request, by function: bentogate under valgrind's callgrind.
#
#   bench/profile.sh                  # MODE=valid N=2000; also MODE=unknown, MODE=wrong-scope
#   PROXY=nginx bench/profile.sh      # the same count for nginx doing the same job (its map)
#
# Counts instructions, not seconds, so the figure repeats on a busy shared VM. One keep-alive
# client sends 200 warm-up requests with collection off, then N measured ones; the count is
# divided by N. Same configuration as bench/compare.sh (one worker, access log off, throttle
# off, 10,000 tokens, the upstream an nginx answering 200 from memory).
# Prints the per-request total and the top functions (self cost; INCLUSIVE=yes for inclusive); the raw profile stays in
# bench/out/profile/callgrind.out for callgrind_annotate or kcachegrind.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/configs.sh
ROOT=$PWD
OUT=$ROOT/bench/out/profile
MODE=${MODE:-valid}
N=${N:-2000}
PROXY=${PROXY:-bentogate}
UP=18181 GATE=18183 GATE_ADMIN=18193

need() { command -v "$1" >/dev/null 2>&1; }
if ! need valgrind || ! need nginx; then
  echo "installing valgrind and nginx from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nginx-light >/dev/null
fi
cargo build --release --quiet --bin bentogate
BIN=$ROOT/target/release/bentogate

rm -rf "$OUT" && mkdir -p "$OUT/gate"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

python3 bench/gen_tokens.py "$OUT" 10000 >/dev/null
upstream_conf "$OUT" "$UP" > "$OUT/upstream.conf"
nginx -c "$OUT/upstream.conf" -p "$OUT" & PIDS+=($!)
bentogate_conf "$GATE" "$GATE_ADMIN" "$UP" > "$OUT/gate/bentogate.yaml"
"$BIN" token import "$OUT/import.json" --config "$OUT/gate/bentogate.yaml" >/dev/null
case $MODE in
  valid) TOKEN=$(head -1 "$OUT/valid-alpha.txt") EXPECT=200 ;;
  unknown) TOKEN=$(cat "$OUT/unknown.txt") EXPECT=401 ;;
  wrong-scope) TOKEN=$(cat "$OUT/wrong-scope.txt") EXPECT=403 ;;
  *) echo "MODE must be valid, unknown or wrong-scope" >&2; exit 2 ;;
esac

if [ "$PROXY" = nginx ]; then
  # One process (no master), otherwise as bench/compare.sh configures it.
  nginx_gate_conf "$OUT" "$GATE" "$UP" "master_process off;" > "$OUT/nginx.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    nginx -c "$OUT/nginx.conf" -p "$OUT" 2>"$OUT/valgrind.log" & PIDS+=($!)
else
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" serve --config "$OUT/gate/bentogate.yaml" 2>"$OUT/valgrind.log" & PIDS+=($!)
fi
GATE_PID=${PIDS[-1]}
wait_port $UP
wait_port $GATE
send() {
  TOKEN=$TOKEN python3 - "$GATE" "$1" "$EXPECT" <<'PY'
import http.client, os, sys
port, n, expect = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
h = {"Authorization": "Bearer " + os.environ["TOKEN"]}
for _ in range(n):
    c.request("GET", "/alpha/x", headers=h)
    r = c.getresponse(); r.read()
    if r.status != expect:
        sys.exit(f"got {r.status}, expected {expect}")
PY
}
send 200
callgrind_control -i on "$GATE_PID" >/dev/null
send "$N"
callgrind_control -i off "$GATE_PID" >/dev/null
kill -TERM "$GATE_PID"; wait "$GATE_PID" 2>/dev/null || true; unset 'PIDS[-1]'

total=$(callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done=1}')
echo "$PROXY, mode $MODE: $((total / N)) instructions per request ($total over $N requests)"
callgrind_annotate --inclusive="${INCLUSIVE:-no}" "$OUT/callgrind.out" 2>/dev/null \
  | awk '/file:function/ {on=1; next} on && NF' | sed 's|/root/.cargo/registry/src/[^/]*/||; s|/rustc/[0-9a-f]*/||' \
  | head -"${TOP:-60}" || true
