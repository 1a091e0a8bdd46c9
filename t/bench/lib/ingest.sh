# t/bench/lib/ingest.sh - lift readings ingest through nginx vs. COPY of the
# same rows into the same table (issue 8).  Sourced by t/bench/ingest-1 and
# t/bench/ingest-50 after setting $name and $per (readings per request).
#
#   ours:     wrk -t2 -c$CONNS -d$DURATION --latency (keep-alive) posting
#             MessagePack bodies of $per readings (t/bench/lib/ingest.lua
#             builds them: a new seq each, 1000 lifts' device tokens round
#             robin) to /api/ingest; nginx: worker_processes 2,
#             platform_pg pool_size $POOL.  Figure: readings stored in
#             lifts.readings during the run / duration (every stored
#             reading was acknowledged or is about to be).
#   baseline: the rows stored, copied out, the table emptied, and the same
#             rows loaded with psql's \copy into the same table; rows/s.
#
# Prints:
#   bench NAME: ours <readings/s> readings/s, baseline <rows/s> rows/s (COPY), ratio <x.xx>
#   bench NAME: p99 <ms> ms, <req/s> req/s, non-2xx <n>; worker RSS <kB> kB, ...
#
# Environment (defaults): BENCH_POOL=4, BENCH_CONNS=64 (ingest-50: 16),
# BENCH_DURATION=10, PLATFORM_NGINX, PLATFORM_MODULE; BENCH_LIFT_RULES=1
# adds two alert rules evaluated with every batch (sql/024).

pool=${BENCH_POOL:-4}

. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

head -c 32 /dev/urandom > "$tmp/device.key"
keyhex=$(od -An -tx1 "$tmp/device.key" | tr -d ' \n')

PGUSER=postgres psql -X -q -v ON_ERROR_STOP=1 -d platform <<SQL
INSERT INTO app.organisations (name) VALUES ('Bench');
INSERT INTO lifts.buildings (org_id, name)
SELECT id, 'Tower' FROM app.organisations;
INSERT INTO lifts.lifts (org_id, building_id, serial, model, floors)
SELECT b.org_id, b.id, 'SN-' || g, 'M', 20
FROM lifts.buildings AS b, generate_series(1, 1000) AS g;
SQL

# BENCH_LIFT_RULES=1: two organisation-wide alert rules that are
# evaluated with every batch but never fire (the cost of evaluation).
if [ -n "${BENCH_LIFT_RULES:-}" ]; then
    PGUSER=postgres psql -X -q -v ON_ERROR_STOP=1 -d platform <<SQL
INSERT INTO lifts.alert_rules (org_id, name, scope, metric, comparison, threshold)
SELECT id, 'hot', 'org', 'temperature', '>', 100 FROM app.organisations
UNION ALL
SELECT id, 'worn', 'org', 'trips', '>', 1e12 FROM app.organisations;
SQL
fi

PGUSER=postgres psql -X -q -A -t -d platform -c \
    "SELECT lifts.device_token(id, 0, '$keyhex') FROM lifts.lifts ORDER BY id" \
    > "$tmp/tokens"

bench_nginx_start "
    platform_pg main {
        server \"host=$PGHOST port=$PGPORT dbname=platform user=platform_app\";
        pool_size $pool;
    }

    platform_device_key $tmp/device.key;

    server {
        listen 127.0.0.1:@PORT@;

        location = /api/ingest {
            platform_ingest main;
        }
    }"

url="http://127.0.0.1:$port/api/ingest"
lua="$root/t/bench/lib/ingest.lua"

# one request must be accepted before anything is measured
ok=""
for _ in $(seq 1 50); do
    code=$(curl -s -o "$tmp/answer" -w '%{http_code}' \
               -H 'Content-Type: application/json' \
               -H "Authorization: Bearer $(head -n 1 "$tmp/tokens")" \
               --data "{\"seq\": 1, \"ts\": $(($(date +%s) * 1000)), \"kind\": \"status\"}" \
               "$url" || true)
    if [ "$code" = 200 ]; then
        ok=1
        break
    fi
    sleep 0.2
done
[ -n "$ok" ] || die "POST $url answered $code: $(head -c 300 "$tmp/answer")"

count() {
    PGUSER=postgres psql -X -q -A -t -d platform \
        -c 'SELECT count(*) FROM lifts.readings'
}

# warm up without counting
wrk -t2 -c"$conns" -d2s -s "$lua" "$url" -- "$tmp/tokens" "$per" 2 > /dev/null

before=$(count)
out=$(wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$lua" "$url" \
          -- "$tmp/tokens" "$per" 2)
sleep 1                             # the last batches commit
after=$(count)

rss=$(ps -o rss= --ppid "$nginx_pid" | awk '{ s = s (s ? "+" : "") $1 } END { print s }')

rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<< "$out")
p99=$(awk '$1 == "99%" { v = $2;
                         if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
                         else if (v ~ /ms$/) { sub(/ms$/, "", v) }
                         else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
                         printf "%.1f", v }' <<< "$out")
non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<< "$out")
ours=$(awk -v a="$before" -v b="$after" -v d="$duration" \
           'BEGIN { printf "%.0f", (b - a) / d }')

bench_check_log

# --- baseline: the same rows, COPY into the same table -----------------

PGUSER=postgres psql -X -q -v ON_ERROR_STOP=1 -d platform <<SQL
\copy (SELECT lift_id, seq, ts, kind, floor_from, floor_to, direction, load_kg, temperature, fault_code, trips, floors, door_cycles, faults, run_seconds FROM lifts.readings) TO '$tmp/rows.copy'
TRUNCATE lifts.readings;
CHECKPOINT;
SQL

rows=$(wc -l < "$tmp/rows.copy")
t0=$(date +%s.%N)
PGUSER=postgres psql -X -q -v ON_ERROR_STOP=1 -d platform \
    -c "\\copy lifts.readings (lift_id, seq, ts, kind, floor_from, floor_to, direction, load_kg, temperature, fault_code, trips, floors, door_cycles, faults, run_seconds) FROM '$tmp/rows.copy'"
t1=$(date +%s.%N)
baseline=$(awk -v n="$rows" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')

ratio=$(awk -v a="$ours" -v b="$baseline" 'BEGIN { printf "%.2f", a / b }')

echo "bench $name: ours $ours readings/s, baseline $baseline rows/s (COPY), ratio $ratio"
echo "bench $name: p99 $p99 ms, $rps req/s x $per readings, non-2xx ${non2xx:-0};" \
     "worker RSS $rss kB; wrk -t2 -c$conns -d${duration}s," \
     "pool_size $pool x 2 workers, 1000 lifts, COPY of $rows rows"
