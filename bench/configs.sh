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
#   bentogate_conf LISTEN_PORT ADMIN_PORT UPSTREAM_PORT > bentogate.yaml
bentogate_conf() {
  cat <<CONF
listeners: [{address: "127.0.0.1:$1"}]
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
#   nginx_gate_conf OUT_DIR LISTEN_PORT UPSTREAM_PORT [EXTRA_MAIN_DIRECTIVES] > nginx.conf
#
# OUT_DIR holds nginx-map.conf (bench/gen_tokens.py). nginx matches map strings ignoring case, so
# its check is weaker than the others' (a token with its case changed passes); exact-case matching
# would need 10,000 regexes.
nginx_gate_conf() {
  cat <<CONF
${4:-} worker_processes 1; daemon off; pid $1/nginx.pid; error_log $1/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  map_hash_max_size 131072; map_hash_bucket_size 256;
  map \$http_authorization \$token_scope {
    default "";
$(cat "$1/nginx-map.conf")
  }
  map \$token_scope \$alpha_ok { alpha 1; "*" 1; default 0; }
  upstream up { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
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
