# shellcheck shell=bash
# The benchmarks' configurations, sourced by compare.sh and profile.sh so both measure the same
# setups.

# The upstream: nginx answering `200 ok` from memory.
#   upstream_conf OUT_DIR PORT > upstream.conf
upstream_conf() {
  cat <<CONF
worker_processes 1; daemon off; pid $1/upstream.pid; error_log $1/upstream.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } } }
CONF
}

# bentogate: two deployments (/alpha, /beta) on one upstream, one worker thread, access log off.
# nginx and HAProxy are not configured to throttle failures either; the unknown-token mode would
# otherwise measure 429s from one address.
#   bentogate_conf LISTEN_PORT ADMIN_PORT UPSTREAM_PORT [TLS_PORT CERT KEY] > bentogate.yaml
# With TLS_PORT, a second listener with TLS (HTTP/2 by ALPN) on CERT and KEY.
bentogate_conf() {
  local tls=""
  [ -z "${4:-}" ] || tls=", {address: \"127.0.0.1:$4\", tls: {certificates: [{cert: \"$5\", key: \"$6\"}]}}"
  cat <<CONF
listeners: [{address: "127.0.0.1:$1"}$tls]
admin: {address: "127.0.0.1:$2"}
log: {access: false, level: warn}
runtime: {worker_threads: 1}
throttle: {failures_per_minute: 0}
deployments:
  - {name: alpha, path_prefix: /alpha, upstream: "http://127.0.0.1:$3", policy: protected}
  - {name: beta, path_prefix: /beta, upstream: "http://127.0.0.1:$3", policy: protected}
CONF
}

# nginx doing bentogate's job: a map from the whole Authorization header to the token's
# deployment, 401/403 like bentogate's, forwarding with keep-alive.
#   nginx_gate_conf OUT_DIR LISTEN_PORT UPSTREAM_PORT [EXTRA_MAIN_DIRECTIVES [TLS_PORT CERT KEY]]
#
# OUT_DIR holds nginx-map.conf (bench/gen_tokens.py). nginx matches map strings ignoring case, so
# its check is weaker than the others' (a token with its case changed passes); exact-case matching
# would need 10,000 regexes. With TLS_PORT, the same server also listens there with TLS (1.2 and
# 1.3) and HTTP/2 by ALPN, on CERT and KEY.
nginx_gate_conf() {
  # The hash's largest size: 131072 for up to 32k tokens (what every earlier figure used), 4x the
  # count above that (nginx starts its search near this size when it is under 100x the count).
  local n hash=131072 tls=""
  n=$(wc -l < "$1/nginx-map.conf")
  [ $((4 * n)) -le $hash ] || hash=$((4 * n))
  [ -z "${5:-}" ] || tls="listen 127.0.0.1:$5 ssl http2; ssl_certificate $6; ssl_certificate_key $7;
    ssl_protocols TLSv1.2 TLSv1.3; http2_max_concurrent_streams 128;"
  cat <<CONF
${4:-} worker_processes 1; daemon off; pid $1/nginx.pid; error_log $1/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  map_hash_max_size $hash; map_hash_bucket_size 256;
  map \$http_authorization \$token_scope {
    default "";
    include $1/nginx-map.conf;
  }
  map \$token_scope \$alpha_ok { alpha 1; "*" 1; default 0; }
  upstream up { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    $tls
    location /alpha {
      if (\$token_scope = "") { add_header WWW-Authenticate 'Bearer realm="bench", error="invalid_token"' always; return 401; }
      if (\$alpha_ok = 0) { add_header WWW-Authenticate 'Bearer realm="bench", error="insufficient_scope"' always; return 403; }
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
}

# HAProxy doing bentogate's job: a map file from the token to its deployment, ACLs on it.
#   haproxy_gate_conf OUT_DIR LISTEN_PORT UPSTREAM_PORT [TLS_PORT PEM] > haproxy.cfg
# OUT_DIR holds haproxy.map (bench/gen_tokens.py). With TLS_PORT, a second bind with TLS and
# HTTP/2 by ALPN on PEM (certificate and key in one file).
haproxy_gate_conf() {
  cat <<CONF
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
  bind 127.0.0.1:$2
${4:+  bind 127.0.0.1:$4 ssl crt $5 alpn h2,http/1.1}
  http-request set-var(txn.scope) req.hdr(authorization),word(2,' '),map($1/haproxy.map) if { req.hdr(authorization) -m beg "Bearer " }
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
  server up 127.0.0.1:$3
CONF
}
