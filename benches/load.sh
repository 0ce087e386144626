#!/usr/bin/env bash
# Load script: the same trivial /v1 request (GET /v1/contacts?limit=1), first straight at the
# backend (with a valid gateway proof), then through the gateway (key checks, limits, proxying),
# in one run, one after the other. The proof is valid for 30 s: keep the duration under that. Prints throughput and p50/p99 of both and their ratio.
#
#   benches/load.sh [seconds per run, default 10] [connections, default 32]
#
# Uses wrk (Debian package `wrk`, installed if missing) and release builds of both programs.
# Everything listens on 127.0.0.1 only and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages wrk curl openssl cmake

duration="${1:-10}"
connections="${2:-32}"
cargo build --release --locked --workspace --bins >/dev/null

work=$(mktemp -d)
token="load-test-internal-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
backend_port=18481
gateway_port=18480
metrics_port=18491
cleanup() {
    kill "${gateway_pid:-}" "${backend_pid:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

(
    cd "$work"
    WIZ_BACKEND__INTERNAL_TOKEN="$token" \
    WIZ_BACKEND__LISTEN="127.0.0.1:$backend_port" \
    WIZ_BACKEND__DATABASE_URL="sqlite://$work/wiz.db" \
    WIZ_BACKEND__LOG__LEVEL=warn \
    WIZ_ADMIN_EMAIL=load@example.test WIZ_ADMIN_PASSWORD=load-password-123 \
        exec "$OLDPWD/target/release/wiz-backend" >"$work/backend.log" 2>&1
) &
backend_pid=$!
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$backend_port/healthz" >/dev/null && break; sleep 0.05; done

(
    cd "$work"
    WIZ_GATEWAY__INTERNAL_TOKEN="$token" \
    WIZ_GATEWAY__LISTEN="127.0.0.1:$gateway_port" \
    WIZ_GATEWAY__METRICS_LISTEN="127.0.0.1:$metrics_port" \
    WIZ_GATEWAY__BACKEND_URL="http://127.0.0.1:$backend_port" \
    WIZ_GATEWAY__LOG__LEVEL=warn \
        exec "$OLDPWD/target/release/wiz-gateway" >"$work/gateway.log" 2>&1
) &
gateway_pid=$!
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$gateway_port/healthz" >/dev/null && break; sleep 0.05; done

# A console session, then five keys with limits far above what the run can reach, so every
# request is accepted and the gateway does the full check path.
jar="$work/cookies"
csrf=$(curl -fs -c "$jar" -H 'content-type: application/json' \
    -d '{"email":"load@example.test","password":"load-password-123"}' \
    "http://127.0.0.1:$gateway_port/admin/session" | sed -E 's/.*"csrf_token":"([^"]+)".*/\1/')
keys_lua="$work/keys.lua"
echo "local keys = {" >"$keys_lua"
for i in 1 2 3 4 5; do
    created=$(curl -fs -b "$jar" -H "x-csrf-token: $csrf" -H 'content-type: application/json' \
        -d "{\"name\":\"load $i\",\"rate_limit_per_minute\":100000,\"daily_limit\":100000000}" \
        "http://127.0.0.1:$gateway_port/admin/keys")
    key=$(sed -E 's/.*"key":"([^"]+)".*/\1/' <<<"$created")
    secret=$(sed -E 's/.*"secret":"([^"]+)".*/\1/' <<<"$created")
    key_id=$(sed -E 's/.*"id":"(key_[^"]+)".*/\1/' <<<"$created")
    echo "  {\"$key\", \"$secret\"}," >>"$keys_lua"
done
account_id=$(curl -fs -b "$jar" "http://127.0.0.1:$gateway_port/admin/session" | sed -E 's/.*"account":\{[^}]*"id":"([^"]+)".*/\1/')
cat >>"$keys_lua" <<'LUA'
}
local i = 0
request = function()
  i = i % #keys + 1
  wrk.headers["Authorization"] = "Bearer " .. keys[i][1]
  wrk.headers["X-Api-Secret"] = keys[i][2]
  return wrk.format("GET", "/v1/contacts?limit=1")
end
LUA
sleep 1 # the gateway's key table follows within a second

# The backend accepts a /v1 request only with the gateway's proof (docs/internal-api.md): v2,
# HMAC-SHA256 under a key HKDF-derived from the token, over the request's scheme, method, target,
# client IP, key, account and request id, valid for 30 s: computed just before the direct run.
proof_key=$(openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt key:"$token" \
    -kdfopt info:"wiz gateway-proof v2" HKDF | tr -d ':\n')
prove() { # path-and-query; prints the header value
    local t msg
    t=$(date +%s)
    msg=$(printf 'v2\n%s\nhttp\nGET\n%s\n127.0.0.1\n%s\n%s\nload' "$t" "$1" "$key_id" "$account_id")
    printf 'v2,%s,%s' "$t" "$(printf '%s' "$msg" \
        | openssl dgst -sha256 -mac HMAC -macopt hexkey:"$proof_key" -r | cut -d' ' -f1)"
}

run() { # name, then wrk arguments
    local name=$1; shift
    wrk -t1 -c"$connections" -d"${duration}s" --latency "$@" >"$work/$name.txt"
    local rps p50 p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.txt")
    p50=$(awk '$1=="50%" {print $2}' "$work/$name.txt")
    p99=$(awk '$1=="99%" {print $2}' "$work/$name.txt")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$name.txt")
    printf '%-22s %12s %10s %10s %10s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
    echo "$rps" >"$work/$name.rps"
}

printf '%-22s %12s %10s %10s %10s\n' "path" "requests/s" "p50" "p99" "non-2xx"
run direct-backend \
    -H "x-wiz-key-id: $key_id" -H "x-wiz-account-id: $account_id" -H "x-request-id: load" \
    -H "x-wiz-client-ip: 127.0.0.1" -H "x-wiz-scheme: http" \
    -H "x-wiz-gateway-proof: $(prove '/v1/contacts?limit=1')" \
    "http://127.0.0.1:$backend_port/v1/contacts?limit=1"
run through-gateway -s "$keys_lua" "http://127.0.0.1:$gateway_port"
awk -v d="$(cat "$work/direct-backend.rps")" -v g="$(cat "$work/through-gateway.rps")" \
    'BEGIN { printf "gateway/direct throughput ratio: %.2f\n", g / d }'
