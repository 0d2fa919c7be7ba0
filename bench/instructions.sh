#!/usr/bin/env bash
# Instructions per request: bentogate, nginx and HAProxy doing the same job, counted by valgrind's
# callgrind on the same fixed request mix. Instruction counts do not depend on the CPU or on what
# else the machine runs, so this is the figure that travels between machines.
#
#   bench/instructions.sh                        # every proxy, every mode, N=2000
#   PROXIES=bentogate MODES="valid unknown" N=1000 bench/instructions.sh   # while iterating
#   ACCESS_LOG=on PROXIES=bentogate bench/instructions.sh    # bentogate with its access log on
#   FEATURES=mimalloc PROXIES=bentogate bench/instructions.sh  # built with a cargo feature
#   PROXIES="nginx floor-refuse floor-forward" N=1000 bench/instructions.sh   # hyper's floor
#   FLOOR_ARGS="--server http1 --date off" PROXIES="floor-refuse floor-forward" bench/instructions.sh
#
# Per proxy, one process under `valgrind --tool=callgrind --instr-atstart=no` (nginx with
# `master_process off`, HAProxy `-db`, bentogate serve; configs from bench/configs.sh, as in
# compare.sh: one worker, access log off, throttle off, 10,000 tokens, upstream an nginx answering
# 200 from memory, not counted). Per mode, one keep-alive client (bench/send.py) sends 200 warm-up
# requests uncounted (valid: every valid token once first, so the measured rotation hits the cache
# as the load test's steady state does), then, counted: IDLE seconds with no request, a dump,
# N requests, a dump, 2N requests, a dump. Each dump zeroes the counters, so the 2N dump minus the
# N dump is N requests' work with start-up and the instrumentation switch cancelled out; the idle
# rate times each phase's duration is taken off each first, so work done per second rather than per
# request (timers, file watchers, moka's and the file source's housekeeping: real, but spread over
# ~100k requests a second natively, and over ~1k under valgrind) is not charged to requests. The
# idle rates and the figures before that subtraction are printed too.
#
# Modes: valid (forwarded; rotating over the 5,500 tokens allowed on /alpha), unknown (one unknown
# token: 401), unknown-rotating (a new well-formed unknown token every request: 401), wrong-scope
# (a /beta token on /alpha: 403).
#
# floor-refuse and floor-forward are bench/floor.rs (an example, built here): hyper + tokio alone,
# answering every request 401 (counted in the modes that are refused: unknown, unknown-rotating,
# wrong-scope, where it answers 401 instead of 403) or forwarding every request unchanged (valid
# only). Not in the default PROXIES; FLOOR_ARGS passes its builder knobs (see its --help).
#
# Prints a table (bench/out/instructions/results.md): instructions per request per mode and proxy
# and each one's ratio to nginx; then bentogate's top 15 functions by inclusive cost per forwarded
# request. The raw profiles stay in bench/out/instructions/ for callgrind_annotate.
# Where `perf stat -e instructions true` works, hardware counters would do the same job faster;
# callgrind is used everywhere so figures from different machines compare.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/configs.sh
ROOT=$PWD
OUT=$ROOT/bench/out/instructions
N=${N:-2000}
WARMUP=${WARMUP:-200}
PROXIES=${PROXIES:-nginx haproxy bentogate}
MODES=${MODES:-valid unknown unknown-rotating wrong-scope}
TOP=${TOP:-15}
IDLE=${IDLE:-3}   # seconds of idle measured per mode
# Ports: override (PORT_BASE=...) so two checkouts can measure at once.
PORT_BASE=${PORT_BASE:-18280}
UP=$((PORT_BASE + 1)) GATE=$((PORT_BASE + 3)) GATE_ADMIN=$((PORT_BASE + 13))

need() { command -v "$1" >/dev/null 2>&1; }
if ! need valgrind || ! need nginx || ! need haproxy; then
  echo "installing valgrind, nginx and haproxy from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nginx-light haproxy >/dev/null
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/bentogate
[[ " $PROXIES " != *" bentogate "* ]] || cargo build --release --quiet --bin bentogate ${FEATURES:+--features "$FEATURES"}
FLOOR=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/floor
[[ " $PROXIES " != *" floor-"* ]] || cargo build --release --quiet --example floor

rm -rf "$OUT" && mkdir -p "$OUT/gate"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

python3 bench/gen_tokens.py "$OUT" 10000 >/dev/null
upstream_conf "$OUT" "$UP" > "$OUT/upstream.conf"
nginx -c "$OUT/upstream.conf" -p "$OUT" & PIDS+=($!)
wait_port $UP
nginx_gate_conf "$OUT" "$GATE" "$UP" "master_process off;" > "$OUT/nginx.conf"
haproxy_gate_conf "$OUT" "$GATE" "$UP" > "$OUT/haproxy.cfg"
bentogate_conf "$GATE" "$GATE_ADMIN" "$UP" > "$OUT/gate/bentogate.yaml"
# The last-use flush rewrites a file of every used token every 5 s (10.7 M instructions at 5,700
# used tokens): work per second, not per request, and too bursty for the idle subtraction to
# cancel from a few seconds' sample. It is moved out of the measured minutes.
echo "tokens: {usage_flush: 1h}" >> "$OUT/gate/bentogate.yaml"
# ACCESS_LOG=on: bentogate writes its access log (JSON, to the valgrind log), to count its cost.
if [ "${ACCESS_LOG:-off}" = on ]; then
  sed -i 's/^log: {access: false, level: warn}/log: {access: true, level: info, format: json}/' "$OUT/gate/bentogate.yaml"
fi
[[ " $PROXIES " != *" bentogate "* ]] || "$BIN" token import "$OUT/import.json" --config "$OUT/gate/bentogate.yaml" >/dev/null

# The dump's instruction count ("totals:"; its "summary:" line can wrap below zero after an
# instrumentation switch).
total() { awk '/^totals:/ {print $2; exit}' "$1"; }

RAW=$OUT/raw.tsv
: > "$RAW"
for proxy in $PROXIES; do
  prof=$OUT/$proxy.callgrind
  case $proxy in
    nginx) cmd=(nginx -c "$OUT/nginx.conf" -p "$OUT") ;;
    haproxy) cmd=(haproxy -f "$OUT/haproxy.cfg" -db) ;;
    bentogate) cmd=("$BIN" serve --config "$OUT/gate/bentogate.yaml") ;;
    # shellcheck disable=SC2206  # FLOOR_ARGS is split into flags on purpose
    floor-refuse | floor-forward) cmd=("$FLOOR" --listen 127.0.0.1:$GATE --upstream 127.0.0.1:$UP
                                        --mode "${proxy#floor-}" ${FLOOR_ARGS:-}) ;;
    *) echo "unknown proxy $proxy" >&2; exit 2 ;;
  esac
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$prof" "${cmd[@]}" \
    2>"$OUT/$proxy.valgrind.log" & PIDS+=($!)
  pid=${PIDS[-1]}
  wait_port $GATE
  next=0   # where each phase starts in the rotating sequences: no token is sent twice
  for mode in $MODES; do
    # The floor counts only the modes it answers as the others do (floor-refuse's 401 for 403).
    case $proxy:$mode in
      floor-refuse:valid | floor-forward:unknown* | floor-forward:wrong-scope) continue ;;
      floor-refuse:*) export EXPECT_STATUS=401 ;;
      *) unset EXPECT_STATUS ;;
    esac
    # Warm: every valid token once (the load test's steady state is all cache hits), then more.
    warm=$WARMUP
    [ "$mode" != valid ] || warm=$((WARMUP + $(wc -l < "$OUT/valid-alpha.txt")))
    python3 bench/send.py $GATE "$mode" "$warm" "$OUT" $next; next=$((next + warm))
    rm -f "$prof".*
    callgrind_control -i on "$pid" >/dev/null
    # Idle first: what the process does per second with no request (timers, file watchers,
    # housekeeping), subtracted below in proportion to each phase's duration.
    callgrind_control -d "$pid" >/dev/null
    t0=$(date +%s.%N); sleep "$IDLE"
    callgrind_control -d "$pid" >/dev/null
    t1=$(date +%s.%N)
    python3 bench/send.py $GATE "$mode" "$N" "$OUT" $next; next=$((next + N))
    callgrind_control -d "$pid" >/dev/null
    t2=$(date +%s.%N)
    python3 bench/send.py $GATE "$mode" "$((2 * N))" "$OUT" $next; next=$((next + 2 * N))
    callgrind_control -d "$pid" >/dev/null
    t3=$(date +%s.%N)
    callgrind_control -i off "$pid" >/dev/null
    mapfile -t dumps < <(ls -tr "$prof".* 2>/dev/null)
    [ "${#dumps[@]}" -eq 4 ] || { echo "$proxy $mode: expected 4 dumps, found ${#dumps[*]}" >&2; exit 1; }
    idle=$(total "${dumps[1]}") one=$(total "${dumps[2]}") two=$(total "${dumps[3]}")
    printf '%s\t%s\t%s\n' "$proxy" "$mode" "$(python3 -c "
idle_rate = $idle / ($t1 - $t0)
print(round(($two - idle_rate * ($t3 - $t2) - ($one - idle_rate * ($t2 - $t1))) / $N), round(idle_rate), round(($two - $one) / $N), sep='\t')")" >> "$RAW"
    mv "${dumps[3]}" "$OUT/$proxy-$mode.callgrind"   # 2N requests, for the function table
    if [ -n "${KEEP:-}" ]; then mv "${dumps[1]}" "$OUT/$proxy-$mode.idle.callgrind"; mv "${dumps[2]}" "$OUT/$proxy-$mode.first.callgrind"; fi
    rm -f "$prof".*
  done
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; unset 'PIDS[-1]'
done

{
  echo "Instructions per request (callgrind, N=$N: a 2N dump minus an N dump, each less the idle rate"
  echo "times its duration)."
  [ -z "${FLOOR_ARGS:-}" ] || echo "floor: $FLOOR_ARGS"
  echo
  python3 - "$RAW" "$MODES" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
modes = sys.argv[2].split()
got = {(p, m): int(v) for p, m, v, *_ in rows}
idle = {}
for p, m, _v, rate, raw in rows:
    idle.setdefault(p, []).append((m, int(rate), int(raw)))
proxies = [p for p in ("nginx", "haproxy", "bentogate", "floor-refuse", "floor-forward") if any(k[0] == p for k in got)]
others = [p for p in proxies if p != "nginx"] if "nginx" in proxies else []
print("| mode | " + " | ".join(proxies + [f"{p} / nginx" for p in others]) + " |")
print("|---|" + "---:|" * (len(proxies) + len(others)))
for m in modes:
    base = got.get(("nginx", m))
    cells = [f"{got[(p, m)]:,}" if (p, m) in got else "-" for p in proxies]
    ratios = [f"{got[(p, m)] / base:.2f}" if (p, m) in got else "-" for p in others]
    print(f"| {m} | " + " | ".join(cells + ratios) + " |")
print()
print("Idle work subtracted (instructions per second with no request; the figure per request")
print("before subtraction in brackets):")
for p, xs in idle.items():
    print(f"- {p}: " + "; ".join(f"{m} {r:,}/s ({raw:,})" for m, r, raw in xs))
PY
  for run in bentogate-valid bentogate-unknown floor-forward-valid floor-refuse-unknown; do
    f=$OUT/$run.callgrind
    [ -f "$f" ] || continue
    echo
    echo "${run%-*}, ${run##*-}: top $TOP functions by inclusive instructions per request"
    echo
    callgrind_annotate --inclusive=yes "$f" 2>/dev/null \
      | awk -v n=$((2 * N)) '/file:function/ {on=1; next}
          on && NF && match($0, /^ *[0-9,]+/) {
            c = substr($0, RSTART, RLENGTH); gsub(/[ ,]/, "", c);
            rest = substr($0, RLENGTH + 1); sub(/^ *\([^)]*\) */, "", rest);
            printf "%10d  %s\n", c / n, rest }' \
      | sed 's|/root/.cargo/registry/src/[^/]*/||; s|/rustc/[0-9a-f]*/||' \
      | grep -v -E '\?\?\?:0x|_start|__libc_start|start_thread|clone3|std::rt::lang_start|std::sys::.*thread|::main$|main$' \
      | head -"$TOP" || true   # head closing the pipe early is not a failure (pipefail)
  done
} | tee "$OUT/results.md"
