# shellcheck shell=bash
# nginx doing bentogate's job for the benchmarks: a map from the whole Authorization header to the
# token's deployment, 401/403 like bentogate's, forwarding with keep-alive. Sourced by compare.sh
# and profile.sh so both measure the same nginx.
#
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
