#!/usr/bin/env bash
# Side-by-side load test: bentogate vs nginx vs HAProxy doing the same Bearer check and forwarding.
#
#   bench/compare.sh            # DURATION=10s CONNECTIONS=50 RUNS=1, the default MODES below
#   RUNS=3 bench/compare.sh     # three runs of each; the table shows medians and the CPU spread
#   MODES="valid-100k valid-1m" bench/compare.sh     # any subset, in any order
#   FEATURES=mimalloc bench/compare.sh                # bentogate built with a cargo feature
#
# Modes (default: valid unknown unknown-rotating wrong-scope h2 tls tls-new):
#   valid             forwarded, wrk rotating over the tokens allowed on /alpha (10,000 tokens)
#   unknown           one well-formed unknown token (401)
#   unknown-rotating  a different well-formed unknown token every request (bench/rotating.lua)
#   wrong-scope       a /beta token on /alpha (403)
#   valid-100k        valid with 100,000 tokens loaded (every proxy restarted on that set)
#   valid-1m          valid with 1,000,000 tokens loaded
#   h2                HTTP/2 over TLS from the client (h2load, one valid token, 10 streams per
#                     connection); the proxies forward over HTTP/1.1 as in every mode
#   tls               keep-alive HTTPS/1.1 (wrk), valid tokens
#   tls-new           a new TLS connection per request (wrk with Connection: close): new
#                     connections per second
# The TLS modes use one ECDSA P-256 certificate for all three; the client (OpenSSL) offers TLS 1.3
# with TLS_AES_256_GCM_SHA384 first and X25519, and every server takes the client's order; the
# suite each one negotiated is printed before its load.
#
# Installs wrk, nginx, HAProxy and h2load (nghttp2-client) from Debian's packages if missing,
# builds bentogate in release, starts one fast upstream (nginx returning 200), generates the token
# sets (two deployments, /alpha and /beta; a tenth of the tokens for All Deployments), configures
# each proxy with one worker, checks each answers 200, 401 and 403 correctly, then loads each in
# turn, pinned: the proxy on CPU 0, the load and the upstream on CPU 1. Access logs are off in
# every contender. Prints one table (bench/out/results.md): req/s, p50, p99, non-2xx, the proxy's
# CPU microseconds per request (utime+stime from /proc over the run / requests) and ratios to
# nginx; then bentogate's resident memory idle, under load, and under load with 100k / 1M tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/configs.sh
ROOT=$PWD
OUT=$ROOT/bench/out
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
RUNS=${RUNS:-1}
PROXIES=${PROXIES:-nginx haproxy bentogate}   # a subset, e.g. PROXIES=bentogate, while iterating
MODES=${MODES:-valid unknown unknown-rotating wrong-scope h2 tls tls-new}
UP=18081 NGINX=18080 HAPROXY=18082 GATE=18083 GATE_ADMIN=18093
NGINX_TLS=18443 HAPROXY_TLS=18444 GATE_TLS=18445
CPU_PROXY=0 CPU_LOAD=1

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need haproxy || ! need h2load; then
  echo "installing wrk, nginx, haproxy and h2load from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light haproxy nghttp2-client >/dev/null
fi
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (proxy on one, load on the other)" >&2; exit 1; }

cargo build --release --quiet --bin bentogate ${FEATURES:+--features "$FEATURES"}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/bentogate

# Everything but the other scripts' folders (instructions.sh, profile.sh) is this run's.
mkdir -p "$OUT" && find "$OUT" -mindepth 1 -maxdepth 1 ! -name instructions ! -name profile -exec rm -rf {} +
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# One certificate for all three TLS listeners.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$OUT/tls.key" -out "$OUT/tls.crt" 2>/dev/null
cat "$OUT/tls.crt" "$OUT/tls.key" > "$OUT/tls.pem"

# --- the upstream: nginx answering 200 from memory, on the load core ---
upstream_conf "$OUT" "$UP" > "$OUT/upstream.conf"
taskset -c $CPU_LOAD nginx -c "$OUT/upstream.conf" -p "$OUT" & PIDS+=($!)

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' ${2:+-H "Authorization: Bearer $2"} "http://127.0.0.1:$1/alpha/x"; }

# Each token set in its own folder: the tokens, nginx's and HAProxy's maps, bentogate's config
# and token file. Every proxy is configured from one folder at a time.
#   prepare SET COUNT
prepare() {
  local dir=$OUT/$1
  mkdir -p "$dir/gate"
  python3 bench/gen_tokens.py "$dir" "$2"
  nginx_gate_conf "$dir" "$NGINX" "$UP" "" "$NGINX_TLS" "$OUT/tls.crt" "$OUT/tls.key" > "$dir/nginx.conf"
  haproxy_gate_conf "$dir" "$HAPROXY" "$UP" "$HAPROXY_TLS" "$OUT/tls.pem" > "$dir/haproxy.cfg"
  bentogate_conf "$GATE" "$GATE_ADMIN" "$UP" "$GATE_TLS" "$OUT/tls.crt" "$OUT/tls.key" > "$dir/gate/bentogate.yaml"
  if [[ " $PROXIES " == *" bentogate "* ]]; then
    "$BIN" token import "$dir/import.json" --config "$dir/gate/bentogate.yaml" >/dev/null
  fi
}
start_nginx() { taskset -c $CPU_PROXY nginx -c "$1/nginx.conf" -p "$1" & PIDS+=($!); wait_port $NGINX; }
start_haproxy() { taskset -c $CPU_PROXY haproxy -f "$1/haproxy.cfg" -db & PIDS+=($!); wait_port $HAPROXY; }
start_bentogate() { taskset -c $CPU_PROXY "$BIN" serve --config "$1/gate/bentogate.yaml" 2>"$1/gate/err.log" & PIDS+=($!); wait_port $GATE; }

declare -A PORT=([nginx]=$NGINX [haproxy]=$HAPROXY [bentogate]=$GATE)
declare -A TLS_PORT=([nginx]=$NGINX_TLS [haproxy]=$HAPROXY_TLS [bentogate]=$GATE_TLS)

# One load of one mode against one proxy; writes wrk's or h2load's output to $2.
#   load MODE OUT_FILE DURATION PROXY SET_DIR
load() {
  local mode=$1 out=$2 duration=$3 port=${PORT[$4]} tport=${TLS_PORT[$4]} dir=$5
  local wrk=(taskset -c $CPU_LOAD wrk -t1 -c"$CONNECTIONS" -d"$duration" --latency)
  case $mode in
    valid | valid-100k | valid-1m)
      TOKENS="$dir/valid-alpha.txt" "${wrk[@]}" -s bench/tokens.lua "http://127.0.0.1:$port/alpha/x" > "$out" ;;
    unknown) TOKENS="$dir/unknown.txt" "${wrk[@]}" -s bench/tokens.lua "http://127.0.0.1:$port/alpha/x" > "$out" ;;
    wrong-scope) TOKENS="$dir/wrong-scope.txt" "${wrk[@]}" -s bench/tokens.lua "http://127.0.0.1:$port/alpha/x" > "$out" ;;
    unknown-rotating) "${wrk[@]}" -s bench/rotating.lua "http://127.0.0.1:$port/alpha/x" > "$out" ;;
    tls) TOKENS="$dir/valid-alpha.txt" "${wrk[@]}" -s bench/tokens.lua "https://127.0.0.1:$tport/alpha/x" > "$out" ;;
    tls-new)
      TOKENS="$dir/valid-alpha.txt" "${wrk[@]}" -H "Connection: close" -s bench/tokens.lua \
        "https://127.0.0.1:$tport/alpha/x" > "$out" ;;
    h2)
      # h2load has no percentiles of its own: it logs every request's duration (--log-file).
      taskset -c $CPU_LOAD h2load -t1 -c"$CONNECTIONS" -m10 -D"${duration%s}" --log-file="$out.log" \
        -H "authorization: Bearer $(head -1 "$dir/valid-alpha.txt")" "https://127.0.0.1:$tport/alpha/x" > "$out" ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
}

# The TLS version and suite a proxy negotiates with an OpenSSL client's defaults.
negotiated() {
  openssl s_client -connect "127.0.0.1:$1" -alpn h2,http/1.1 </dev/null 2>/dev/null \
    | awk '/^New, / {v=$2; c=$NF} /^ALPN/ {a=$NF} /Server Temp Key/ {k=$4} END {print v, c, k, "alpn", a}' | tr -d ','
}

set_of() { case $1 in valid-100k) echo t100k ;; valid-1m) echo t1m ;; *) echo t10k ;; esac; }
declare -A COUNT=([t10k]=10000 [t100k]=100000 [t1m]=1000000)
SETS=""
for mode in $MODES; do s=$(set_of "$mode"); [[ " $SETS " == *" $s "* ]] || SETS="$SETS $s"; done

wait_port $UP
RESULTS=$OUT/raw.tsv
: > "$RESULTS" && : > "$OUT/memory.tsv"
for set in $SETS; do
  dir=$OUT/$set
  prepare "$set" "${COUNT[$set]}"
  VALID=$(head -1 "$dir/valid-alpha.txt") UNKNOWN=$(cat "$dir/unknown.txt") WRONG=$(cat "$dir/wrong-scope.txt")
  for proxy in $PROXIES; do
    "start_$proxy" "$dir"
    port=${PORT[$proxy]}
    # Every contender must give the same answers before it is measured.
    got="$(code $port) $(code $port "$VALID") $(code $port "$UNKNOWN") $(code $port "$WRONG")"
    [ "$got" = "401 200 401 403" ] || { echo "$proxy answers $got, expected 401 200 401 403" >&2; exit 1; }
    echo "$proxy ($set): TLS $(negotiated "${TLS_PORT[$proxy]}")" | tee -a "$OUT/tls.txt"
    # The proxy's processes: the one we started and its children (nginx's worker).
    pids="${PIDS[-1]} $(pgrep -P "${PIDS[-1]}" | tr '\n' ' ' || true)"
    for mode in $MODES; do
      [ "$(set_of "$mode")" = "$set" ] || continue
      for run in $(seq "$RUNS"); do
        load "$mode" "$OUT/warm.txt" 2s "$proxy" "$dir"
        before=$(cpu_ticks $pids)
        load "$mode" "$OUT/load-$proxy-$mode-$run.txt" "$DURATION" "$proxy" "$dir"
        after=$(cpu_ticks $pids)
        if [ "$proxy" = bentogate ] && [[ $mode == valid* ]]; then
          printf '%s\t%s\n' "$mode" "$(rss_kib "${PIDS[-1]}")" >> "$OUT/memory.tsv"
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' "$proxy" "$mode" "$run" "$((after - before))" "$OUT/load-$proxy-$mode-$run.txt" >> "$RESULTS"
      done
    done
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
  done
done

# bentogate idle as a sidecar (no token yet).
if [[ " $PROXIES " == *" bentogate "* ]]; then
  mkdir -p "$OUT/idle/gate"
  bentogate_conf "$GATE" "$GATE_ADMIN" "$UP" > "$OUT/idle/gate/bentogate.yaml"
  start_bentogate "$OUT/idle"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$GATE_ADMIN/readyz" >/dev/null && break; sleep 0.1; done
  sleep 1
  printf 'idle\t%s\n' "$(rss_kib "${PIDS[-1]}")" >> "$OUT/memory.tsv"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
fi
python3 bench/report.py "$RESULTS" "$(getconf CLK_TCK)" "$OUT/memory.tsv" "$MODES" | tee "$OUT/results.md"
