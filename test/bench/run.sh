#!/usr/bin/env bash
# make bench: measure trigger cost, delivery throughput, latency, fan-out, import
# and backlog, side by side with baselines, on a throwaway cluster and a fast
# local mock provider.  Never part of the tests or CI.
#
#   BENCH_SCALE=1      sizes of the issue (100k deliveries, 1M fan-out and import,
#                      10M backlog); 0.1 for a quick run
#   PG_NET_SRC=DIR     a checkout of supabase/pg_net, built outside the project for
#                      the P2 baseline (not found: the table says so)
#   BENCH_RESULTS=FILE where the table goes (default test/bench/results.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

SCALE=${BENCH_SCALE:-1}
RESULTS=${BENCH_RESULTS:-test/bench/results.md}
n() { awk -v s="$SCALE" -v v="$1" 'BEGIN { x = int(v * s); if (x < 1) x = 1; print x }'; }
N_DELIVERY=$(n 100000)
N_FANOUT=$(n 1000000)
N_IMPORT=$(n 1000000)
N_BACKLOG=$(n 10000000)
P1_SECONDS=${BENCH_P1_SECONDS:-15}
P3_RATE=1000
P3_SECONDS=30

ensure_packages
command -v h2load >/dev/null || { $SUDO apt-get install -y -qq nghttp2-client >/dev/null; }
build_and_install

tmp=$(mktemp -d /tmp/novu-bench.XXXXXX)
chmod 755 "$tmp"
mock_port=${BENCH_MOCK_PORT:-18600}
sh test/certs/make-certs.sh "$tmp/certs" "$mock_port"
chmod -R a+rX "$tmp/certs"
node test/bench/fastmock.js --certs "$tmp/certs" --port "$mock_port" --plain-port $((mock_port + 1)) > "$tmp/mock.out" &
mock_pid=$!
for _ in $(seq 100); do [ -s "$tmp/mock.out" ] && break; sleep 0.1; done
mock="https://127.0.0.1:$mock_port"
ctl() { curl -s --cacert "$tmp/certs/ca.pem" "$mock/$1" -X "${2:-GET}"; }
jq_() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const o=JSON.parse(s);console.log(eval("o."+process.argv[1]))})' "$1"; }

# pg_net (the baseline) is preloaded too when its source is given and builds
pgnet_note=""
preload="novu"
if [ -n "${PG_NET_SRC:-}" ] && [ -d "$PG_NET_SRC" ]; then
    log "building pg_net from $PG_NET_SRC (outside the project)"
    rm -rf "$tmp/pg_net" && cp -r "$PG_NET_SRC" "$tmp/pg_net"
    if (cd "$tmp/pg_net" && make -s >/dev/null 2>&1 && $SUDO make -s install >/dev/null 2>&1); then
        preload="novu,pg_net"
        pgnet_version=$(cd "$PG_NET_SRC" && git log -1 --format=%h 2>/dev/null || echo "?")
    else
        pgnet_note="pg_net did not build on this machine"
    fi
else
    pgnet_note="PG_NET_SRC not set"
fi

export PGPORT=${PGPORT:-54331}
start_cluster "$tmp/pg" \
    "fsync = on" \
    "shared_preload_libraries = '$preload'" \
    "shared_buffers = '2GB'" \
    "max_wal_size = '20GB'" \
    "checkpoint_timeout = '30min'" \
    "max_worker_processes = 16" \
    "novu.database_name = 'postgres'" \
    "novu.ca_file = '$tmp/certs/ca.pem'" \
    "novu.batch_size = 2000" \
    "novu.workers = 2" \
    "novu.expo_receipt_delay = '1h'" \
    "pg_net.database_name = 'postgres'"
# the cluster holds gigabytes after P4 and P6: nothing of it is kept
trap 'stop_cluster; kill $mock_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
q -c "CREATE EXTENSION novu"

# integrations on the fast mock, one workflow per provider, subscribers with a device each
q -v sa="$(cat "$tmp/certs/fcm-service-account.json")" -v p8="$(cat "$tmp/certs/apns-key.p8")" -v mock="$mock" <<'SQL'
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount',
    (:'sa'::jsonb) || jsonb_build_object('token_uri', :'mock' || '/token'), 'endpoint', :'mock'), 'fcm-bench');
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', :'p8', 'apiKey', 'ABC123DEFG',
    'projectName', 'TEAM123456', 'applicationId', 'com.novu.bench', 'endpoint', :'mock'), 'apns-bench');
SELECT novu.create_integration('expo', jsonb_build_object('endpoint', :'mock'), 'expo-bench');
SELECT novu.create_workflow('bench-' || p, jsonb_build_array(jsonb_build_object('type', 'push',
    'title', 'Order {{payload.orderId}}', 'content', 'Hi {{subscriber.firstName}}', 'providers', jsonb_build_array(p))))
  FROM unnest(ARRAY['fcm', 'apns', 'expo']) p;
CREATE TABLE bench_plain (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
SQL

# bulk-load subscribers sub-FROM..sub-TO with one token per provider given (set-based, not the API)
load_subscribers() {
    local from=$1 to=$2 providers=${3:-fcm,apns,expo}
    q <<SQL
INSERT INTO novu.subscribers (subscriber_id, first_name)
SELECT 'sub-' || i, 'User' || i FROM generate_series($from, $to) i ON CONFLICT DO NOTHING;
INSERT INTO novu.subscriber_channels (subscriber_id, integration_id)
SELECT 'sub-' || i, ig.id FROM generate_series($from, $to) i, novu.integrations ig
 WHERE ig.provider_id = ANY (string_to_array('$providers', ',')) ON CONFLICT DO NOTHING;
INSERT INTO novu.device_tokens (integration_id, device_token, subscriber_id)
SELECT ig.id, CASE ig.provider_id WHEN 'apns' THEN md5(i::text) || md5(ig.provider_id)
                                  WHEN 'expo' THEN 'ExponentPushToken[' || i || ']'
                                  ELSE 'fcm-' || i END, 'sub-' || i
  FROM generate_series($from, $to) i, novu.integrations ig
 WHERE ig.provider_id = ANY (string_to_array('$providers', ',')) ON CONFLICT DO NOTHING;
SQL
}

# stop/start delivery (the launcher follows novu.workers on reload)
workers() {
    q -c "ALTER SYSTEM SET novu.workers = $1" -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 100); do
        [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'")" = "$1" ] && return
        sleep 0.1
    done
}

now() { date +%s.%N; }
# wait until every outbox row is fanned out and every message is final (partial indexes: cheap)
drained() {
    until [ "$(q -c "SELECT NOT EXISTS (SELECT FROM novu.events WHERE status IN ('pending', 'processing'))
                        AND NOT EXISTS (SELECT FROM novu.deliveries WHERE status IN ('pending', 'sending'))")" = t ]; do
        sleep "${1:-0.1}"
    done
}
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }
declare -A R

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), PostgreSQL $(pg_config --version | awk '{print $2}'), $(curl-config --version), node $(node --version)"
log "machine: $machine; scale $SCALE"

# --- fast mock ceiling (h2load, same machine)
echo '{"message":{"token":"x","notification":{"title":"t","body":"b"}}}' > "$tmp/body.json"
R[mock]=$(h2load -n 200000 -c 4 -m 100 -d "$tmp/body.json" -H 'content-type: application/json' \
    "$mock/v1/projects/bench/messages:send" 2>/dev/null | awk '/finished in/ {printf "%.0f", $4}')
log "mock ceiling: ${R[mock]} req/s"

# --- P1 trigger cost: pgbench, same clients, trigger vs plain INSERT of the same jsonb
workers 0
load_subscribers 1 1
payload='{"orderId": 1234, "items": ["book", "lamp"], "note": "hello from pgbench", "total": 42.5}'
echo "SELECT novu.trigger('bench-fcm', '\"sub-1\"', '$payload');" > "$tmp/p1_trigger.sql"
echo "INSERT INTO bench_plain (payload) VALUES ('$payload');" > "$tmp/p1_insert.sql"
p1() {  # p1 SCRIPT SYNC -> tps
    PGOPTIONS="-c synchronous_commit=$2" pgbench -n -c 4 -j 2 -T "$P1_SECONDS" -f "$1" postgres 2>/dev/null \
        | awk '/^tps/ {printf "%.0f", $3}'
}
for sync in on off; do
    ins=$(p1 "$tmp/p1_insert.sql" $sync)
    trg=$(p1 "$tmp/p1_trigger.sql" $sync)
    R[p1_$sync]="$trg / $ins = $(awk -v a="$trg" -v b="$ins" 'BEGIN { printf "%.2f", a / b }')"
    log "P1 synchronous_commit=$sync: trigger $trg tps, plain insert $ins tps"
done
q -c "TRUNCATE bench_plain" -c "DELETE FROM novu.events"

# --- P2 delivery throughput per provider: N triggers in one commit, until all sent
load_subscribers 1 "$N_DELIVERY"
q -c "VACUUM ANALYZE"
workers 2
for p in fcm apns expo; do
    ctl _reset POST >/dev/null
    q -c "SELECT count(novu.trigger('bench-$p', to_jsonb('sub-' || i), jsonb_build_object('orderId', i))) FROM generate_series(1, $N_DELIVERY) i" >/dev/null
    t0=$(now)
    drained
    t1=$(now)
    sent=$(q -c "SELECT count(*) FROM novu.deliveries WHERE status = 'sent' AND provider_id = '$p'")
    [ "$sent" = "$N_DELIVERY" ] || log "WARNING: $p: only $sent of $N_DELIVERY sent"
    R[p2_$p]=$(rate "$N_DELIVERY" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    log "P2 $p: $N_DELIVERY deliveries at ${R[p2_$p]}/s"
    q -c "DELETE FROM novu.deliveries" -c "DELETE FROM novu.events" -c "DELETE FROM novu.execution_details"
done

# --- P3 latency: a steady 1,000 triggers/s for 30 s, commit-to-mock-receipt percentiles
ctl _reset POST >/dev/null
echo "SELECT novu.trigger('bench-fcm', '\"sub-1\"', jsonb_build_object('t', extract(epoch FROM clock_timestamp())));" > "$tmp/p3.sql"
pgbench -n -c 4 -j 2 -R "$P3_RATE" -T "$P3_SECONDS" -f "$tmp/p3.sql" postgres >/dev/null 2>&1
sleep 2
s=$(ctl _stats)
R[p3]="$(echo "$s" | jq_ 'latency.p50_ms.toFixed(1)') ms / $(echo "$s" | jq_ 'latency.p99_ms.toFixed(1)') ms (n = $(echo "$s" | jq_ 'latency.n'))"
log "P3 latency p50/p99: ${R[p3]}"
q -c "DELETE FROM novu.deliveries" -c "DELETE FROM novu.events" -c "DELETE FROM novu.execution_details"

# --- P5 import: CSV of N subscribers with COPY + one set-based validate-and-upsert
node -e 'const n=+process.argv[1];const o=[];for(let i=1;i<=n;i++)o.push(`imp-${i},First${i},Last${i},user${i}@example.com,+1555${i},en-US,`);process.stdout.write(o.join("\n")+"\n")' "$N_IMPORT" > "$tmp/import.csv"
t0=$(now)
q -c "\\copy novu.subscriber_import (\"subscriberId\",\"firstName\",\"lastName\",email,phone,locale,avatar) FROM '$tmp/import.csv' (FORMAT csv)" \
  -c "SELECT novu.import_subscribers()" >/dev/null
t1=$(now)
R[p5]=$(rate "$N_IMPORT" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
log "P5 import: ${R[p5]} rows/s"

# --- P4 fan-out: broadcast to N subscribers with one device each; worker peak RssAnon
workers 0
q -c "DELETE FROM novu.device_tokens WHERE integration_id <> (SELECT id FROM novu.integrations WHERE identifier = 'fcm-bench')" \
  -c "DELETE FROM novu.subscribers WHERE subscriber_id LIKE 'imp-%'"
[ "$N_FANOUT" -gt "$N_DELIVERY" ] && load_subscribers $((N_DELIVERY + 1)) "$N_FANOUT" fcm
q -c "VACUUM ANALYZE"
workers 2
wpids=$(q -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'")
ctl _reset POST >/dev/null
q -c "SELECT novu.broadcast('bench-fcm', '{\"orderId\": 1}', '{}', 'bench-broadcast')" >/dev/null
t0=$(now)
peak=0
nsubs=$(q -c "SELECT count(*) FROM novu.subscribers")
until [ "$(q -c "SELECT NOT EXISTS (SELECT FROM novu.events WHERE status IN ('pending', 'processing'))
                    AND NOT EXISTS (SELECT FROM novu.deliveries WHERE status IN ('pending', 'sending'))")" = t ]; do
    for wpid in $wpids; do
        rss=$(awk '/RssAnon/ {print $2}' /proc/$wpid/status 2>/dev/null || echo 0)
        [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    done
    sleep 0.2
done
t1=$(now)
R[p4]="$(rate "$nsubs" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')") deliveries/s, peak RssAnon of a worker $(awk -v k="$peak" 'BEGIN { printf "%.1f MB", k / 1024 }')"
log "P4 fan-out to $nsubs subscribers: ${R[p4]}"
workers 0
q -c "TRUNCATE novu.deliveries, novu.execution_details" -c "DELETE FROM novu.events"

# --- P6 backlog: claim one batch with N pending vs with one batch pending
# the worker's claim of due messages (queue.c), without the context joins
claim_sql="BEGIN;
WITH c AS (SELECT id FROM novu.deliveries WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT 2000 FOR UPDATE SKIP LOCKED)
UPDATE novu.deliveries d SET status = 'sending', attempts = d.attempts + 1, claimed_by = pg_backend_pid(),
       lease_until = now() + interval '1 min', updated_at = now()
  FROM c WHERE d.id = c.id;
ROLLBACK;"
echo "$claim_sql" > "$tmp/claim.sql"
backlog() {  # backlog ROWS -> mean claim latency in ms
    q -c "TRUNCATE novu.deliveries" -c "INSERT INTO novu.deliveries (transaction_id, workflow_id, subscriber_id, channel, integration_id, provider_id, device_token, next_attempt_at)
        SELECT 'backlog', 'bench-fcm', 'sub-1', 'push', (SELECT id FROM novu.integrations WHERE identifier = 'fcm-bench'), 'fcm', 'fcm-' || i,
               now() - interval '1 hour' + i * interval '1 microsecond' FROM generate_series(1, $1) i" -c "VACUUM ANALYZE novu.deliveries"
    pgbench -n -c 1 -t 50 -f "$tmp/claim.sql" postgres 2>/dev/null | awk '/latency average/ {print $4}'
}
big=$(backlog "$N_BACKLOG")
small=$(backlog 2000)
R[p6]="$big ms / $small ms = $(awk -v a="$big" -v b="$small" 'BEGIN { printf "%.2f", a / b }')"
log "P6 claim with $N_BACKLOG pending vs one batch: ${R[p6]}"

# --- P2 baseline: pg_net posting 10k requests to the mock's HTTP/1.1 port.
# Run last: pg_net's worker disturbs what runs after it (P3 collapsed when it ran first).
if [ "$preload" = "novu,pg_net" ]; then
    q -c "CREATE EXTENSION pg_net"
    ctl _reset POST >/dev/null
    q -c "SELECT count(net.http_post(url := 'http://127.0.0.1:$((mock_port + 1))/pgnet', body := '{\"n\": 1}'::jsonb)) FROM generate_series(1, 10000)" >/dev/null
    t0=$(now)
    for _ in $(seq 600); do
        [ "$(q -c "SELECT count(*) FROM net._http_response")" -ge 10000 ] && break
        sleep 0.5
    done
    t1=$(now)
    got=$(q -c "SELECT count(*) FROM net._http_response")
    R[pgnet]=$(rate "$got" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    log "P2 baseline pg_net ($pgnet_version, default settings): ${R[pgnet]} requests/s"
else
    R[pgnet]="not run ($pgnet_note); its documentation promises about 200 requests/s (documented, not measured)"
fi

pgnet_ratio="n/a"
if [[ "${R[pgnet]}" =~ ^[0-9]+$ ]]; then pgnet_ratio="$(awk -v a="${R[p2_fcm]}" -v b="${R[pgnet]}" 'BEGIN { printf "%.0fx", a / b }')"; fi

cat > "$RESULTS" <<EOF
# make bench results

Machine: $machine. Scale $SCALE. Run $(date -u +%Y-%m-%dT%H:%MZ).
Fast mock (test/bench/fastmock.js, Node http2) ceiling measured with h2load on the same machine: ${R[mock]} requests/s.
Settings: fsync on, shared_buffers 2GB, novu.workers 2, novu.batch_size 2000 (P1 runs with the workers stopped).

| figure | how | measured | target |
|---|---|---|---|
| P1 trigger cost | pgbench, 4 clients, ${P1_SECONDS} s each: TPS of \`novu.trigger\` to an existing subscriber / TPS of a plain INSERT of the same jsonb into a table with a bigserial primary key; synchronous_commit=on | ${R[p1_on]} | ratio ≥ 0.8 |
| P1 (sync off) | the same with synchronous_commit=off | ${R[p1_off]} | ratio ≥ 0.8 |
| P2 FCM | $N_DELIVERY triggers (one device each) in one commit, until all are sent (fan-out included) | ${R[p2_fcm]} deliveries/s | ≥ 10,000/s |
| P2 APNs | same, APNs (HTTP/2, ES256) | ${R[p2_apns]} deliveries/s | ≥ 10,000/s |
| P2 Expo | same, Expo (100 per request) | ${R[p2_expo]} deliveries/s | ≥ 10,000/s |
| P2 baseline | pg_net posting 10k requests to the mock's HTTP/1.1 port, default settings | ${R[pgnet]} requests/s; FCM above is $pgnet_ratio | ≥ 50× |
| P3 latency | pgbench at $P3_RATE triggers/s for $P3_SECONDS s; commit to mock receipt, p50 / p99 | ${R[p3]} | ≤ 5 ms / ≤ 50 ms |
| P4 fan-out | broadcast to every subscriber (one FCM device each) | ${R[p4]} | ≥ P2, < 100 MB |
| P5 import | CSV of $N_IMPORT subscribers: \\copy + novu.import_subscribers() | ${R[p5]} rows/s | ≥ 100,000/s |
| P6 backlog | claim of one batch (2000) with $N_BACKLOG pending vs with 2000 pending (mean of 50) | ${R[p6]} | ratio ≤ 1.2 |
EOF
log "results written to $RESULTS"
cat "$RESULTS"
