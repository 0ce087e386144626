#!/usr/bin/env bash
# The gateway beside nginx and HAProxy, in one run, against the same upstream (issue 11):
#
#   upstream-direct    an nginx answering /v1/* with a fixed JSON body (the limit)
#   haproxy            HAProxy in front of it, no checks, no log
#   nginx-log          nginx proxy_pass in front of it, access log on (buffered, 64k)
#   nginx-nolog        the same, access log off
#   pingora-bare       Pingora alone (benches/pingora_bare.rs): one worker, no checks, no log
#   gateway-info       wiz-gateway, every check on (credentials, SHA-256 lookup, secret, plan,
#                      whitelist, both limits, proof), access log at info
#   gateway-warn       the same, log level warn (no access log)
#   gateway-redis      the same as gateway-info with the Redis limit store
#   <label>            any binaries named in EXTRA_GATEWAYS="label=/path/to/wiz-gateway ...",
#                      configured like gateway-info (to compare builds side by side in one run;
#                      a wrapper script that execs the gateway works too, e.g. with LD_PRELOAD)
#
# GATEWAY_BIN overrides the gateway binary (default target/release/wiz-gateway); NO_BUILD=1
# skips the release build.
# Each proxy has one worker (nginx worker_processes 1, HAProxy nbthread 1, gateway threads 1;
# EXTRA_GATEWAY_ENV="WIZ_GATEWAY__THREADS=2 ..." is added to every gateway's environment). The
# upstream nginx also passes every other path to a real wiz-backend, so the gateways sync their
# key table and create keys through it as usual; only /v1 answers are fixed. Every target gets
# the same request with the same headers (wrk -t1, Lua script rotating over 60 keys).
#
#   benches/proxy.sh [seconds per run, default 5] [rounds, default 3] [connections, default 32]
#
# Rounds run every target again in the same order; the machine is shared, so compare the ratios
# within a round and report their range over rounds. Prints req/s, p50, p99, the CPU time the
# target used per request (steadier than req/s on a busy machine), RSS after the run, then the
# ratios. Installs nginx, haproxy, wrk and redis-server if missing; release builds.
# Everything listens on 127.0.0.1 only and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages nginx haproxy wrk redis-server curl

duration="${1:-5}"
rounds="${2:-3}"
connections="${3:-32}"
[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace --bins >/dev/null
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
gateway_bin="${GATEWAY_BIN:-$bin/wiz-gateway}"
# Pingora alone (benches/pingora_bare.rs), built with the release profile: what Pingora's own
# per-request work costs, so the gateway's share of the gap shows.
bare_bin=${BARE_BIN:-}
[ -n "$bare_bin" ] || bare_bin=$(cargo bench --bench pingora_bare --no-run 2>&1 \
    | sed -nE 's/.*Executable .*\((.*pingora_bare-[0-9a-f]+)\).*/\1/p' | tail -1)

work=$(mktemp -d)
token="proxy-bench-internal-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
upstream_port=18701
backend_port=18702
nginx_log_port=18703
nginx_nolog_port=18704
haproxy_port=18705
redis_port=18730
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$work"/*.nginx.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
wait_http() { # url
    for _ in $(seq 400); do curl -fs "$1" >/dev/null && return 0; sleep 0.05; done
    echo "not answering: $1" >&2
    exit 1
}

(
    cd "$work"
    WIZ_BACKEND__INTERNAL_TOKEN="$token" \
    WIZ_BACKEND__LISTEN="127.0.0.1:$backend_port" \
    WIZ_BACKEND__DATABASE_URL="sqlite://$work/wiz.db" \
    WIZ_BACKEND__LOG__LEVEL=warn \
    WIZ_ADMIN_EMAIL=bench@example.test WIZ_ADMIN_PASSWORD=bench-password-123 \
        exec "$bin/wiz-backend" >"$work/backend.log" 2>&1
) &
pids+=($!)
wait_http "http://127.0.0.1:$backend_port/healthz"

body='{"data":[{"id":"ct_01","phone":"+14155550100","name":"Ada"}],"has_more":false}'
cat >"$work/upstream.conf" <<NGINX
worker_processes 1;
pid $work/upstream.nginx.pid;
error_log $work/upstream-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    upstream backend { server 127.0.0.1:$backend_port; keepalive 16; }
    server {
        listen 127.0.0.1:$upstream_port backlog=4096;
        keepalive_requests 1000000;
        location /v1/ { default_type application/json; return 200 '$body'; }
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 120s;
            proxy_buffering off;
        }
    }
}
NGINX
nginx -c "$work/upstream.conf" -p "$work"
wait_http "http://127.0.0.1:$upstream_port/v1/x"

cat >"$work/proxy.conf" <<NGINX
worker_processes 1;
pid $work/proxy.nginx.pid;
error_log $work/proxy-error.log warn;
events { worker_connections 8192; }
http {
    log_format main '\$remote_addr - \$remote_user [\$time_local] "\$request" \$status '
                    '\$body_bytes_sent "\$http_user_agent" \$request_time \$upstream_response_time';
    upstream up { server 127.0.0.1:$upstream_port; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_log_port backlog=4096;
        keepalive_requests 1000000;
        access_log $work/nginx-access.log main buffer=64k flush=1s;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    server {
        listen 127.0.0.1:$nginx_nolog_port backlog=4096;
        keepalive_requests 1000000;
        access_log off;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX
nginx -c "$work/proxy.conf" -p "$work"

cat >"$work/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend bench
    bind 127.0.0.1:$haproxy_port
    default_backend upstream
backend upstream
    http-reuse always
    server up 127.0.0.1:$upstream_port
HAPROXY
bare_port=18706
"$bare_bin" "127.0.0.1:$bare_port" "127.0.0.1:$upstream_port" >"$work/pingora-bare.log" 2>&1 &
bare_pid=$!
pids+=($!)

haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=($!)

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)

# Gateways: name, port, then extra environment. Each proxies /v1 to the upstream nginx.
gateway_names=()
declare -A gateway_port gateway_pid
next_port=18710
start_gateway() { # name binary env...
    local name=$1 binary=$2 port=$next_port
    shift 2
    next_port=$((next_port + 1))
    # shellcheck disable=SC2086 # EXTRA_GATEWAY_ENV is a list of NAME=value words
    (
        cd "$work"
        exec env WIZ_GATEWAY__INTERNAL_TOKEN="$token" \
            WIZ_GATEWAY__LISTEN="127.0.0.1:$port" \
            WIZ_GATEWAY__METRICS_LISTEN="127.0.0.1:$((port + 100))" \
            WIZ_GATEWAY__BACKEND_URL="http://127.0.0.1:$upstream_port" \
            WIZ_GATEWAY__THREADS=1 \
            WIZ_GATEWAY__UPGRADE_SOCK="$work/upgrade-$name.sock" \
            WIZ_GATEWAY__USAGE__JOURNAL="$work/usage-$name.journal" \
            "$@" ${EXTRA_GATEWAY_ENV:-} \
            "$binary" >"$work/$name.log" 2>&1
    ) &
    pids+=($!)
    gateway_pid[$name]=$!
    gateway_names+=("$name")
    gateway_port[$name]=$port
}
start_gateway gateway-info "$gateway_bin" WIZ_GATEWAY__LOG__LEVEL=info
start_gateway gateway-warn "$gateway_bin" WIZ_GATEWAY__LOG__LEVEL=warn
start_gateway gateway-redis "$gateway_bin" WIZ_GATEWAY__LOG__LEVEL=info \
    WIZ_GATEWAY__LIMITS__STORE=redis WIZ_GATEWAY__LIMITS__REDIS_URL="redis://127.0.0.1:$redis_port"
for extra in ${EXTRA_GATEWAYS:-}; do
    start_gateway "${extra%%=*}" "${extra#*=}" WIZ_GATEWAY__LOG__LEVEL=info
done
for name in "${gateway_names[@]}"; do
    wait_http "http://127.0.0.1:${gateway_port[$name]}/healthz"
done
wait_http "http://127.0.0.1:$bare_port/v1/x"

# A console session (through the first gateway, the upstream nginx and the backend), then 60
# keys at the highest limits a key may have (100,000 a minute each: 60 keys carry 100k req/s),
# so every request passes every check and is counted.
first=${gateway_port[gateway-info]}
jar="$work/cookies"
csrf=$(curl -fs -c "$jar" -H 'content-type: application/json' \
    -d '{"email":"bench@example.test","password":"bench-password-123"}' \
    "http://127.0.0.1:$first/admin/session" | sed -E 's/.*"csrf_token":"([^"]+)".*/\1/')
keys_lua="$work/keys.lua"
echo "local keys = {" >"$keys_lua"
for i in $(seq 60); do
    created=$(curl -fs -b "$jar" -H "x-csrf-token: $csrf" -H 'content-type: application/json' \
        -d "{\"name\":\"bench $i\",\"rate_limit_per_minute\":100000,\"daily_limit\":100000000}" \
        "http://127.0.0.1:$first/admin/keys")
    key=$(sed -E 's/.*"key":"([^"]+)".*/\1/' <<<"$created")
    secret=$(sed -E 's/.*"secret":"([^"]+)".*/\1/' <<<"$created")
    echo "  {\"$key\", \"$secret\"}," >>"$keys_lua"
done
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
check_200() { # port
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
        -H "X-Api-Secret: $secret" "http://127.0.0.1:$1/v1/contacts?limit=1")
    [ "$code" = 200 ]
}
for name in "${gateway_names[@]}"; do
    for _ in $(seq 100); do check_200 "${gateway_port[$name]}" && break; sleep 0.1; done
    check_200 "${gateway_port[$name]}" || { echo "$name does not serve the bench key" >&2; exit 1; }
done

rss_kb() { # the process and its children (nginx: master + worker)
    ps -o rss= -p "$1" --ppid "$1" 2>/dev/null | awk '{ n += $1 } END { print n + 0 }'
}
to_ms() { # wrk latency (123.45us, 1.23ms, 1.02s) → ms
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0;
        else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
cpu_ticks() { # utime + stime of the process (all its threads) and its children, in ticks
    local p total=0
    for p in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
run() { # name port pid
    local name=$1 port=$2 pid=$3 out="$work/$1.txt" before after
    before=$(cpu_ticks "$pid")
    wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$keys_lua" \
        "http://127.0.0.1:$port" >"$out" 2>&1
    after=$(cpu_ticks "$pid")
    local rps p50 p99 errors requests cpu_us
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$out")")
    errors=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {n += 1} END {print n + 0}' "$out")
    requests=$(awk '/requests in/ {print $1}' "$out")
    # CPU time the target spent per request: far steadier than req/s on a shared machine, since
    # it does not count the time the target waited for a core.
    cpu_us=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="${requests:-0}" \
        'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
    printf '%-16s %10s %9s %9s %9s %9s %9s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" \
        "$(rss_kb "$pid")" "$errors"
    echo "$rps $p99 $cpu_us" >"$work/$name.result"
}
cpu_ratio() { # a b → b/a of CPU per request (>1: a is cheaper per request)
    awk -v a="$(cut -d' ' -f3 "$work/$1.result")" -v b="$(cut -d' ' -f3 "$work/$2.result")" \
        'BEGIN { printf "%.2f", (a > 0 ? b / a : 0) }'
}
ratio() { # a b → a/b of req/s
    awk -v a="$(cut -d' ' -f1 "$work/$1.result")" -v b="$(cut -d' ' -f1 "$work/$2.result")" \
        'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'
}
added_p99() { # name → its p99 minus the direct path's, ms
    awk -v a="$(cut -d' ' -f2 "$work/$1.result")" -v b="$(cut -d' ' -f2 "$work/upstream-direct.result")" \
        'BEGIN { printf "%.2f", a - b }'
}

echo "load: $(cut -d' ' -f1-3 /proc/loadavg); ${duration}s per run, $connections connections, wrk -t1, $(nproc) cores"
for round in $(seq "$rounds"); do
    echo
    echo "round $round"
    printf '%-16s %10s %9s %9s %9s %9s %9s\n' target "req/s" "p50 ms" "p99 ms" "CPU µs/r" \
        "RSS KiB" "errors"
    run upstream-direct "$upstream_port" "$(cat "$work/upstream.nginx.pid")"
    run haproxy "$haproxy_port" "$haproxy_pid"
    run nginx-log "$nginx_log_port" "$(cat "$work/proxy.nginx.pid")"
    run nginx-nolog "$nginx_nolog_port" "$(cat "$work/proxy.nginx.pid")"
    run pingora-bare "$bare_port" "$bare_pid"
    for name in "${gateway_names[@]}"; do
        run "$name" "${gateway_port[$name]}" "${gateway_pid[$name]}"
    done
    echo "ratios: gateway-info/nginx-log $(ratio gateway-info nginx-log)," \
        "gateway-warn/nginx-nolog $(ratio gateway-warn nginx-nolog)," \
        "gateway-info/haproxy $(ratio gateway-info haproxy)," \
        "gateway-warn/haproxy $(ratio gateway-warn haproxy)," \
        "redis/memory $(ratio gateway-redis gateway-info)," \
        "pingora-bare/nginx-nolog $(ratio pingora-bare nginx-nolog)," \
        "gateway-warn/pingora-bare $(ratio gateway-warn pingora-bare)"
    echo "CPU-per-request ratios (nginx's CPU per request / the gateway's): info vs nginx-log" \
        "$(cpu_ratio gateway-info nginx-log), warn vs nginx-nolog $(cpu_ratio gateway-warn nginx-nolog)," \
        "warn vs haproxy $(cpu_ratio gateway-warn haproxy), redis vs memory $(cpu_ratio gateway-redis gateway-info)"
    echo "p99 added over upstream-direct (ms): gateway-info $(added_p99 gateway-info)," \
        "gateway-warn $(added_p99 gateway-warn), nginx-log $(added_p99 nginx-log)"
    for extra in ${EXTRA_GATEWAYS:-}; do
        echo "  ${extra%%=*}/gateway-info $(ratio "${extra%%=*}" gateway-info)," \
            "${extra%%=*}/nginx-log $(ratio "${extra%%=*}" nginx-log)," \
            "CPU per request gateway-info/${extra%%=*} $(cpu_ratio "${extra%%=*}" gateway-info)"
    done
done

# Every target by name: its port and the process to measure (nginx: its worker).
nginx_worker=$(pgrep -P "$(cat "$work/proxy.nginx.pid")" | head -1)
declare -A target_port=([nginx-log]=$nginx_log_port [nginx-nolog]=$nginx_nolog_port
    [haproxy]=$haproxy_port [pingora-bare]=$bare_port)
declare -A target_pid=([nginx-log]=$nginx_worker [nginx-nolog]=$nginx_worker
    [haproxy]=$haproxy_pid [pingora-bare]=$bare_pid)
for name in "${gateway_names[@]}"; do
    target_port[$name]=${gateway_port[$name]}
    target_pid[$name]=${gateway_pid[$name]}
done
measured="${MEASURE_TARGETS:-nginx-log pingora-bare gateway-warn gateway-info}"

# SYSCALLS=1: system calls and context switches per request of each of MEASURE_TARGETS under the
# same load. Context switches are counted in a run of their own (strace's stops add their own);
# `strace -c` slows the target, but its counts per request hold.
switches() { # pid → voluntary + involuntary switches of all its threads so far
    awk '/ctxt_switches/ { n += $2 } END { print n }' /proc/"$1"/task/*/status
}
if [ -n "${SYSCALLS:-}" ]; then
    ensure_packages strace
    for name in $measured; do
        port=${target_port[$name]} pid=${target_pid[$name]}
        before=$(switches "$pid")
        wrk -t1 -c"$connections" -d"${duration}s" -s "$keys_lua" "http://127.0.0.1:$port" \
            >"$work/$name.switch-wrk" 2>&1
        after=$(switches "$pid")
        requests=$(awk '/requests in/ {print $1}' "$work/$name.switch-wrk")
        strace -c -f -p "$pid" -o "$work/$name.strace" 2>/dev/null &
        strace_pid=$!
        sleep 0.5
        wrk -t1 -c"$connections" -d"${duration}s" -s "$keys_lua" "http://127.0.0.1:$port" \
            >"$work/$name.strace-wrk" 2>&1
        kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
        traced=$(awk '/requests in/ {print $1}' "$work/$name.strace-wrk")
        echo
        echo "$name: context switches per request" \
            "$(awk -v a="$before" -v b="$after" -v n="$requests" 'BEGIN { printf "%.2f", (b - a) / n }');" \
            "system calls per request:"
        awk -v n="$traced" '$1 ~ /^[0-9.]+$/ && NF >= 5 { calls = $4; name = $NF;
            if (calls ~ /^[0-9]+$/ && name != "total" && calls / n >= 0.01) printf "  %-16s %6.2f\n", name, calls / n }' \
            "$work/$name.strace" | sort -k2 -rn
    done
fi

# PROFILE=1: `perf record -g` of PROFILE_TARGET (default gateway-info; any target name, e.g.
# pingora-bare) under the same load, then its top entries (self time by symbol). The call graphs
# stay in PROFILE_OUT (default: not kept) for `perf report -i`.
if [ -n "${PROFILE:-}" ]; then
    data="${PROFILE_OUT:-$work/perf.data}"
    profiled="${PROFILE_TARGET:-gateway-info}"
    perf record -F 999 -g -o "$data" -p "${target_pid[$profiled]}" -- sleep "$duration" \
        >/dev/null 2>&1 &
    perf_pid=$!
    wrk -t1 -c"$connections" -d"${duration}s" -s "$keys_lua" \
        "http://127.0.0.1:${target_port[$profiled]}" >/dev/null 2>&1
    wait "$perf_pid" || true
    echo
    echo "perf: $profiled, self time by shared object and symbol (top entries)"
    perf report -i "$data" --stdio --no-children --sort dso,symbol --percent-limit 1 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -30
    echo "perf: by shared object"
    perf report -i "$data" --stdio --no-children --sort dso 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -8
fi
