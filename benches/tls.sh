#!/usr/bin/env bash
# TLS at the edge: wiz-gateway against nginx terminating TLS with the same certificate in front
# of the same upstream (one wiz-backend), in one run, one after the other:
#
#   handshakes/s   a new TLS connection per request (wrk, `Connection: close`) on /healthz,
#                  answered at the edge by both (no upstream)
#   h1 req/s       keep-alive HTTP/1.1 over TLS (wrk) on GET /v1/contacts?limit=1, proxied
#   h2 req/s       HTTP/2 over TLS (h2load, 10 streams per connection) on the same request
#
# The gateway does its whole check path (key, secret, limits) on the proxied request; nginx sends
# the backend a fixed, valid gateway proof instead, so the backend does the same work for both.
#
#   benches/tls.sh [seconds per run, default 8] [connections, default 32]
#
# Installs nginx, wrk and nghttp2-client (h2load) if missing; release builds of both programs.
# Everything listens on 127.0.0.1 and stops at the end. Same worker count for both (2).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages nginx wrk nghttp2-client curl openssl cmake

duration="${1:-8}"
connections="${2:-32}"
workers=2
cargo build --release --locked --workspace --bins >/dev/null

work=$(mktemp -d)
token="tls-bench-internal-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
backend_port=18581
gateway_port=18580
gateway_tls_port=18543
metrics_port=18591
nginx_port=18544
cleanup() {
    kill "${gateway_pid:-}" "${backend_pid:-}" 2>/dev/null || true
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# One ECDSA P-256 certificate for both.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null

(
    cd "$work"
    WIZ_BACKEND__INTERNAL_TOKEN="$token" \
    WIZ_BACKEND__LISTEN="127.0.0.1:$backend_port" \
    WIZ_BACKEND__DATABASE_URL="sqlite://$work/wiz.db" \
    WIZ_BACKEND__LOG__LEVEL=warn \
    WIZ_ADMIN_EMAIL=tls@example.test WIZ_ADMIN_PASSWORD=tls-bench-password-123 \
        exec "$OLDPWD/target/release/wiz-backend" >"$work/backend.log" 2>&1
) &
backend_pid=$!
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$backend_port/healthz" >/dev/null && break; sleep 0.05; done

(
    cd "$work"
    WIZ_GATEWAY__INTERNAL_TOKEN="$token" \
    WIZ_GATEWAY__LISTEN="127.0.0.1:$gateway_port" \
    WIZ_GATEWAY__TLS__LISTEN="127.0.0.1:$gateway_tls_port" \
    WIZ_GATEWAY__TLS__CERT="$work/cert.pem" \
    WIZ_GATEWAY__TLS__KEY="$work/key.pem" \
    WIZ_GATEWAY__METRICS_LISTEN="127.0.0.1:$metrics_port" \
    WIZ_GATEWAY__BACKEND_URL="http://127.0.0.1:$backend_port" \
    WIZ_GATEWAY__THREADS=$workers \
    WIZ_GATEWAY__LOG__LEVEL=warn \
        exec "$OLDPWD/target/release/wiz-gateway" >"$work/gateway.log" 2>&1
) &
gateway_pid=$!
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$gateway_port/healthz" >/dev/null && break; sleep 0.05; done

# A key with limits far above what the run reaches, so every request is accepted.
jar="$work/cookies"
csrf=$(curl -fs -c "$jar" -H 'content-type: application/json' \
    -d '{"email":"tls@example.test","password":"tls-bench-password-123"}' \
    "http://127.0.0.1:$gateway_port/admin/session" | sed -E 's/.*"csrf_token":"([^"]+)".*/\1/')
created=$(curl -fs -b "$jar" -H "x-csrf-token: $csrf" -H 'content-type: application/json' \
    -d '{"name":"tls bench","rate_limit_per_minute":100000,"daily_limit":100000000}' \
    "http://127.0.0.1:$gateway_port/admin/keys")
key=$(sed -E 's/.*"key":"([^"]+)".*/\1/' <<<"$created")
secret=$(sed -E 's/.*"secret":"([^"]+)".*/\1/' <<<"$created")
key_id=$(sed -E 's/.*"id":"(key_[^"]+)".*/\1/' <<<"$created")
account_id=$(curl -fs -b "$jar" "http://127.0.0.1:$gateway_port/admin/session" \
    | sed -E 's/.*"account":\{[^}]*"id":"([^"]+)".*/\1/')
sleep 1 # the gateway's key table follows within a second

# nginx: the same certificate, protocols and worker count, proxying to the same backend over
# kept-alive connections, with a valid proof (docs/internal-api.md) in place of the gateway's.
# The proof (v2) is bound to the request and valid for 30 s, so the config is written anew, with
# a fresh proof, and nginx reloaded before each proxied phase.
proof_key=$(openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt key:"$token" \
    -kdfopt info:"wiz gateway-proof v2" HKDF | tr -d ':\n')
write_nginx_conf() {
local t msg proof
t=$(date +%s)
msg=$(printf 'v2\n%s\nhttp\nGET\n/v1/contacts?limit=1\n127.0.0.1\n%s\n%s\ntls-bench' "$t" "$key_id" "$account_id")
proof=$(printf '%s' "$msg" | openssl dgst -sha256 -mac HMAC -macopt hexkey:"$proof_key" -r | cut -d' ' -f1)
cat >"$work/nginx.conf" <<NGINX
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream backend { server 127.0.0.1:$backend_port; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_port ssl http2;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location = /healthz { default_type application/json; return 200 '{"status":"ok"}'; }
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header x-request-id tls-bench;
            proxy_set_header x-wiz-key-id $key_id;
            proxy_set_header x-wiz-account-id $account_id;
            proxy_set_header x-wiz-client-ip 127.0.0.1;
            proxy_set_header x-wiz-scheme http;
            proxy_set_header x-wiz-gateway-proof "v2,$t,$proof";
        }
    }
}
NGINX
}
write_nginx_conf
nginx -c "$work/nginx.conf" -p "$work"
fresh_proof() { # before each nginx phase
    write_nginx_conf
    nginx -c "$work/nginx.conf" -p "$work" -s reload
    sleep 0.5
}
for _ in $(seq 100); do curl -fsk "https://127.0.0.1:$nginx_port/healthz" >/dev/null && break; sleep 0.05; done

curl -fsk "https://127.0.0.1:$nginx_port/v1/contacts?limit=1" >/dev/null \
    || { echo "nginx → backend request failed" >&2; exit 1; }
curl -fsk -H "Authorization: Bearer $key" -H "X-Api-Secret: $secret" \
    "https://127.0.0.1:$gateway_tls_port/v1/contacts?limit=1" >/dev/null \
    || { echo "gateway → backend request failed" >&2; exit 1; }

wrk_rps() { # output file → "requests/s p99 errors"
    awk '/Requests\/sec/ {rps=$2} $1=="99%" {p99=$2} /Non-2xx|Socket errors/ {err=err $0 "; "}
         END {printf "%s %s %s", rps, p99, (err == "" ? "-" : err)}' "$1"
}
h2_rps() { # output file → "requests/s errors"
    awk '/^finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) rps=$(i-1)}
         /^requests:/ {failed=$10; errored=$12}
         /^status codes:/ {codes=$0}
         END {printf "%s failed=%s errored=%s (%s)", rps, failed, errored, codes}' "$1"
}

results="$work/results.txt"
for server in gateway nginx; do
    if [ "$server" = gateway ]; then port=$gateway_tls_port; auth=(-H "Authorization: Bearer $key" -H "X-Api-Secret: $secret"); else port=$nginx_port; auth=(); fi
    wrk -t2 -c"$connections" -d"${duration}s" --latency -H 'Connection: close' \
        "https://127.0.0.1:$port/healthz" >"$work/$server-handshakes.txt" 2>&1
    [ "$server" = nginx ] && fresh_proof
    wrk -t2 -c"$connections" -d"${duration}s" --latency "${auth[@]}" \
        "https://127.0.0.1:$port/v1/contacts?limit=1" >"$work/$server-h1.txt" 2>&1
    [ "$server" = nginx ] && fresh_proof
    h2load -D "$duration" -c "$connections" -m 10 -t 2 "${auth[@]}" \
        "https://127.0.0.1:$port/v1/contacts?limit=1" >"$work/$server-h2.txt" 2>&1
    {
        echo "$server handshakes/s (new TLS connection per request, /healthz): $(wrk_rps "$work/$server-handshakes.txt")"
        echo "$server h1 req/s over TLS (keep-alive, proxied): $(wrk_rps "$work/$server-h1.txt")"
        echo "$server h2 req/s over TLS (10 streams/conn, proxied): $(h2_rps "$work/$server-h2.txt")"
    } | tee -a "$results"
done
echo "(requests/s, then wrk's p99 latency and any errors; $connections connections, ${duration}s per run, $workers workers each)"
