#!/usr/bin/env bash
# Side-by-side load test: bentogate vs nginx vs HAProxy doing the same Bearer check and forwarding.
#
#   bench/compare.sh            # DURATION=10s CONNECTIONS=50 TOKENS=10000 RUNS=1 by default
#   RUNS=3 bench/compare.sh     # three runs of each; the table shows medians and the CPU spread
#
# Installs wrk, nginx and HAProxy from Debian's packages if missing, builds bentogate in release,
# starts one fast upstream (nginx returning 200), generates the token set for two deployments
# (/alpha and /beta; a tenth of the tokens for All Deployments), configures each proxy with one
# worker, checks each answers 200, 401 and 403 correctly, then loads each in turn with wrk, pinned:
# the proxy on CPU 0, wrk and the upstream on CPU 1. Access logs are off in every contender.
# Prints one table (bench/out/results.md): req/s, p50, p99, non-2xx, the proxy's CPU microseconds
# per request (utime+stime from /proc over the run / requests) and ratios to nginx; then
# bentogate's resident memory idle, with 100,000 tokens loaded, and under load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/configs.sh
ROOT=$PWD
OUT=$ROOT/bench/out
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
COUNT=${TOKENS:-10000}
RUNS=${RUNS:-1}
PROXIES=${PROXIES:-nginx haproxy bentogate}   # a subset, e.g. PROXIES=bentogate, while iterating
UP=18081 NGINX=18080 HAPROXY=18082 GATE=18083 GATE_ADMIN=18093
CPU_PROXY=0 CPU_LOAD=1

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need haproxy; then
  echo "installing wrk, nginx and haproxy from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light haproxy >/dev/null
fi
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (proxy on one, load on the other)" >&2; exit 1; }

cargo build --release --quiet --bin bentogate
BIN=$ROOT/target/release/bentogate

rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

python3 bench/gen_tokens.py "$OUT" "$COUNT"

# --- the upstream: nginx answering 200 from memory, on the load core ---
upstream_conf "$OUT" "$UP" > "$OUT/upstream.conf"
taskset -c $CPU_LOAD nginx -c "$OUT/upstream.conf" -p "$OUT" & PIDS+=($!)

# --- nginx as the gateway: a map from the whole header to the token's deployment ---
# nginx matches map strings ignoring case, so its check is weaker than the others' (a token with
# its case changed passes); exact-case matching would need 10,000 regexes.
nginx_gate_conf "$OUT" "$NGINX" "$UP" > "$OUT/nginx.conf"

# --- HAProxy: a map file from the token to its deployment, ACLs on it ---
cat > "$OUT/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend gate
  bind 127.0.0.1:$HAPROXY
  http-request set-var(txn.scope) req.hdr(authorization),word(2,' '),map($OUT/haproxy.map) if { req.hdr(authorization) -m beg "Bearer " }
  acl known var(txn.scope) -m found
  acl alpha path_beg /alpha
  acl alpha_ok var(txn.scope) -m str alpha *
  http-request return status 401 hdr WWW-Authenticate "Bearer realm=\"bench\", error=\"invalid_token\"" unless known
  http-request return status 403 hdr WWW-Authenticate "Bearer realm=\"bench\", error=\"insufficient_scope\"" if alpha !alpha_ok
  http-request del-header authorization
  option forwardfor
  default_backend up
backend up
  http-reuse always
  server up 127.0.0.1:$UP
CONF

# --- bentogate: the same two deployments, one worker thread ---
mkdir -p "$OUT/gate"
bentogate_conf "$GATE" "$GATE_ADMIN" "$UP" > "$OUT/gate/bentogate.yaml"
"$BIN" token import "$OUT/import.json" --config "$OUT/gate/bentogate.yaml" >/dev/null

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' ${2:+-H "Authorization: Bearer $2"} "http://127.0.0.1:$1/alpha/x"; }

start_nginx() { taskset -c $CPU_PROXY nginx -c "$OUT/nginx.conf" -p "$OUT" & PIDS+=($!); wait_port $NGINX; }
start_haproxy() { taskset -c $CPU_PROXY haproxy -f "$OUT/haproxy.cfg" -db & PIDS+=($!); wait_port $HAPROXY; }
start_bentogate() { taskset -c $CPU_PROXY "$BIN" serve --config "$OUT/gate/bentogate.yaml" 2>"$OUT/gate/err.log" & PIDS+=($!); wait_port $GATE; }

wait_port $UP
VALID=$(head -1 "$OUT/valid-alpha.txt") UNKNOWN=$(cat "$OUT/unknown.txt") WRONG=$(cat "$OUT/wrong-scope.txt")
declare -A PORT=([nginx]=$NGINX [haproxy]=$HAPROXY [bentogate]=$GATE)
RESULTS=$OUT/raw.tsv
: > "$RESULTS"
for proxy in $PROXIES; do
  "start_$proxy"
  port=${PORT[$proxy]}
  # Every contender must give the same answers before it is measured.
  got="$(code $port) $(code $port "$VALID") $(code $port "$UNKNOWN") $(code $port "$WRONG")"
  [ "$got" = "401 200 401 403" ] || { echo "$proxy answers $got, expected 401 200 401 403" >&2; exit 1; }
  # The proxy's processes: the one we started and its children (nginx's worker).
  pids="${PIDS[-1]} $(pgrep -P "${PIDS[-1]}" | tr '\n' ' ' || true)"
  for mode in valid unknown wrong-scope; do
    case $mode in valid) file=valid-alpha.txt ;; unknown) file=unknown.txt ;; wrong-scope) file=wrong-scope.txt ;; esac
    for run in $(seq "$RUNS"); do
      TOKENS="$OUT/$file" taskset -c $CPU_LOAD wrk -t1 -c"$CONNECTIONS" -d2s -s bench/tokens.lua "http://127.0.0.1:$port/alpha/x" >/dev/null
      before=$(cpu_ticks $pids)
      TOKENS="$OUT/$file" taskset -c $CPU_LOAD wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/tokens.lua \
        "http://127.0.0.1:$port/alpha/x" > "$OUT/wrk-$proxy-$mode-$run.txt"
      after=$(cpu_ticks $pids)
      [ "$proxy" = bentogate ] && [ "$mode" = valid ] && LOAD_RSS=$(rss_kib "${PIDS[-1]}")
      printf '%s\t%s\t%s\t%s\t%s\n' "$proxy" "$mode" "$run" "$((after - before))" "$OUT/wrk-$proxy-$mode-$run.txt" >> "$RESULTS"
    done
  done
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
done

# bentogate idle as a sidecar (no token yet), then with 100,000 tokens loaded.
measure_idle() {
  start_bentogate
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$GATE_ADMIN/readyz" >/dev/null && break; sleep 0.1; done
  sleep 1
  rss_kib "${PIDS[-1]}"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
}
IDLE_RSS="" LOADED_RSS=""
if [[ " $PROXIES " == *" bentogate "* ]]; then
  rm -f "$OUT/gate/tokens.yaml"
  IDLE_RSS=$(measure_idle)
  python3 bench/gen_tokens.py "$OUT/gate" 100000 >/dev/null
  "$BIN" token import "$OUT/gate/import.json" --config "$OUT/gate/bentogate.yaml" >/dev/null
  LOADED_RSS=$(measure_idle)
fi
python3 bench/report.py "$RESULTS" "$(getconf CLK_TCK)" "$IDLE_RSS" "$LOADED_RSS" "${LOAD_RSS:-}" | tee "$OUT/results.md"
