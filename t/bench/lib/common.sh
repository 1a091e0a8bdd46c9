# t/bench/lib/common.sh - what every benchmark shares: a private cluster
# with the migrated schema, nginx started with the module, wrk figures and
# cleanup.  Sourced by t/bench/* after setting $name.
#
# After sourcing: $tmp, $PGHOST/$PGPORT (database "platform", migrated),
# $conns, $duration; functions die, free_port, bench_nginx_start BODY
# [WORKERS], wrk_rps URL [HEADER], bench_check_log.

root=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"

conns=${BENCH_CONNS:-64}
duration=${BENCH_DURATION:-10}
nginx=${PLATFORM_NGINX:-/usr/sbin/nginx}
module=${PLATFORM_MODULE:-$root/build/ngx_platform_module.so}
module=$(realpath -- "$module")

die() {
    echo "bench $name: $*" >&2
    exit 1
}

for cmd in wrk pgbench psql curl ss; do
    command -v "$cmd" > /dev/null 2>&1 || die "$cmd not found (make deps)"
done
[ -x "$nginx" ] || die "$nginx not found"
[ -f "$module" ] || die "$module not found (make)"

tmp=$(mktemp -d /tmp/platform-bench.XXXXXX)
chmod 0755 "$tmp"                   # the cluster runs as postgres under root
cluster=$tmp/pg
nginx_pid=""

cleanup() {
    local status=$?
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2> /dev/null; then
        kill -QUIT "$nginx_pid" 2> /dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$nginx_pid" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL "$nginx_pid" 2> /dev/null || true
    fi
    tools/pg-cluster stop "$cluster" > /dev/null 2>&1 || true
    rm -rf -- "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1 (nothing listening on it now).
free_port() {
    local port used
    used=$(ss -Htln | awk '{print $4}' | sed 's/.*://')
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 20000))
        grep -qx "$port" <<< "$used" || { echo "$port"; return 0; }
    done
    die "no free port"
}

# --- PostgreSQL: cluster and schema -------------------------------------

PLATFORM_PG_FAST=1 tools/pg-cluster init "$cluster" 5432 > /dev/null
tools/pg-cluster start "$cluster"

env_lines=$(tools/pg-cluster env "$cluster")
export PGHOST PGPORT
PGHOST=$(sed -n 's/^PGHOST=//p' <<< "$env_lines")
PGPORT=$(sed -n 's/^PGPORT=//p' <<< "$env_lines")

PGUSER=postgres psql -X -q -d postgres -c 'CREATE DATABASE platform'
PGUSER=postgres PGDATABASE=platform tools/migrate > /dev/null

# --- nginx --------------------------------------------------------------

# Starts nginx with the module, WORKERS (default 2) worker processes and the
# http{} BODY given, in which @PORT@ stands for a free port; sets $port and
# $nginx_pid.
bench_nginx_start() {
    local body=$1 workers=${2:-2} user_line=""

    port=$(free_port)
    mkdir -p "$tmp/nginx/logs" "$tmp/nginx/tmp"
    [ "$(id -u)" -ne 0 ] || user_line="user root;"

    cat > "$tmp/nginx/nginx.conf" <<EOF
load_module $module;
$user_line
worker_processes $workers;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $tmp/nginx/tmp/body;
    proxy_temp_path $tmp/nginx/tmp/proxy;
    fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
    uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
    scgi_temp_path $tmp/nginx/tmp/scgi;
    keepalive_requests 1000000;

${body//@PORT@/$port}
}
EOF

    "$nginx" -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" \
             -e "$tmp/nginx/logs/error.log" \
        || die "nginx did not start: $(tail -n 5 "$tmp/nginx/logs/error.log" 2> /dev/null)"
    nginx_pid=$(cat "$tmp/nginx/nginx.pid")
}

# --- measurements -------------------------------------------------------

# wrk's "Requests/sec:" figure, rounded; non-2xx answers make it invalid.
wrk_rps() {
    local url=$1 header=${2:-} out
    if [ -n "$header" ]; then
        out=$(wrk -t2 -c"$conns" -d"${duration}s" -H "$header" "$url")
    else
        out=$(wrk -t2 -c"$conns" -d"${duration}s" "$url")
    fi
    if grep -q 'Non-2xx or 3xx responses' <<< "$out"; then
        die "wrk $url: error responses: $(grep -E 'Non-2xx|Socket errors' <<< "$out")"
    fi
    awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }' <<< "$out"
}

bench_check_log() {
    if grep -E '\[(alert|emerg|crit)\]' "$tmp/nginx/logs/error.log" > /dev/null; then
        grep -E '\[(alert|emerg|crit)\]' "$tmp/nginx/logs/error.log" | head -n 5 >&2
        die "nginx logged alerts during the run"
    fi
}
