#!/usr/bin/env bash
# make bench: measure trigger cost, delivery throughput, latency, fan-out, import
# and backlog, side by side with baselines, on a throwaway cluster and a fast
# local mock provider, then the long mixed run (test/bench/mixed.sh).  Never part
# of the tests or CI.
#
# The headline figures (P2 throughput, P3 latency) are measured with every
# PostgreSQL and novu setting at its default (fsync on); only wiring is set:
# shared_preload_libraries, novu.database_name, novu.ca_file, the secrets key,
# novu.allowed_private_networks for the local mock, and novu.expo_receipt_delay
# (receipts are not part of these figures).  Each is measured quiet and again
# beside a CPU hog (one busy loop per core), side by side.  P1 and P4-P6 then run
# on the same cluster restarted with the settings they were always measured with
# (TUNED below), and the table says so.
#
#   BENCH_SCALE=1      sizes of the issue (100k deliveries, 1M fan-out and import,
#                      10M backlog); 0.05 for a quick run
#   BENCH_RUNS=1       how many times P2 and P3 are measured (every run is reported)
#   BENCH_P2_PROVIDERS="fcm apns expo web-push one-signal"   the P2 rows (each subscriber
#                      gets one device per provider measured)
#   BENCH_ONLY=        comma-separated parts to run: p2p3, tuned, p1, p5, p4, p6, render, feed,
#                      engine, pgnet, mixed (default: all of them); feed and engine run on
#                      their own clusters (test/bench/feed.sh, test/bench/engine.sh)
#   BENCH_P3_RATE=200 BENCH_P3_SECONDS=30   the steady trigger rate of P3, per provider
#   BENCH_P1_RUNS=3 BENCH_P1_SECONDS=15     P1 repeated (every run is reported)
#   BENCH_P1_SLICES=3  each P1 pair alternates in that many slices (P1_SECONDS in all per statement),
#                      then runs interleaved in one pgbench run (P1_SECONDS more)
#   PG_NET_SRC=DIR     a checkout of supabase/pg_net, built outside the project for
#                      the P2 baseline (not found: the table says so)
#   BENCH_RESULTS=FILE where the table goes (default test/bench/results.md for a
#                      full run, /tmp/novu-bench-results.md with BENCH_ONLY)
#   MIXED_SECONDS=600  length of the mixed run (see test/bench/mixed.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
. test/bench/lib.sh

started=$(now)
SCALE=${BENCH_SCALE:-1}
RUNS=${BENCH_RUNS:-1}
ONLY=${BENCH_ONLY:-}
if [ -n "$ONLY" ]; then RESULTS=${BENCH_RESULTS:-/tmp/novu-bench-results.md}; else RESULTS=${BENCH_RESULTS:-test/bench/results.md}; fi
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
[ "$ONLY" = mixed ] && exec bash test/bench/mixed.sh
n() { awk -v s="$SCALE" -v v="$1" 'BEGIN { x = int(v * s); if (x < 1) x = 1; print x }'; }
N_DELIVERY=$(n 100000)
N_FANOUT=$(n 1000000)
N_IMPORT=$(n 1000000)
N_BACKLOG=$(n 10000000)
P1_SECONDS=${BENCH_P1_SECONDS:-15}
P1_RUNS=${BENCH_P1_RUNS:-3}
P1_SLICES=${BENCH_P1_SLICES:-3}
P3_RATE=${BENCH_P3_RATE:-200}
P3_SECONDS=${BENCH_P3_SECONDS:-30}
PROVIDERS="fcm apns expo"
P2_PROVIDERS=${BENCH_P2_PROVIDERS:-"fcm apns expo web-push one-signal"}
# what P1 and P4-P6 have always run with (and the optional tuned P2 row)
TUNED_SETTINGS="shared_buffers = '2GB', max_wal_size = '20GB', checkpoint_timeout = '30min', max_worker_processes = 16, novu.workers = 2, novu.batch_size = 2000"

ensure_packages
command -v h2load >/dev/null || { $SUDO apt-get install -y -qq nghttp2-client >/dev/null; }
# cyclictest: what the machine itself gives (machine_stalls); without it that line says "-"
command -v cyclictest >/dev/null || $SUDO apt-get install -y -qq rt-tests >/dev/null || true
build_and_install

tmp=$(mktemp -d /tmp/novu-bench.XXXXXX)
chmod 755 "$tmp"
bench_start_mock "$tmp" "${BENCH_MOCK_PORT:-18600}"

# pg_net (the baseline) is preloaded too when its source is given and builds
pgnet_note=""
preload="novu"
if want pgnet && [ -n "${PG_NET_SRC:-}" ] && [ -d "$PG_NET_SRC" ]; then
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

# defaults: nothing but wiring (start_cluster adds the secrets key, the mock's
# private network and log_min_messages; its fsync = off is overridden here)
export PGPORT=${PGPORT:-54331}
start_cluster "$tmp/pg" \
    "fsync = on" \
    "shared_preload_libraries = '$preload'" \
    "novu.database_name = 'postgres'" \
    "novu.ca_file = '$BENCH_CERTS/ca.pem'" \
    "novu.expo_receipt_delay = '1h'" \
    "pg_net.database_name = 'postgres'"
# the cluster holds gigabytes after P4 and P6: nothing of it is kept
trap 'hog_stop; stop_cluster; kill $mock_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
bench_setup

declare -A R
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), PostgreSQL $(pg_config --version | awk '{print $2}'), $(curl-config --version), node $(node --version)"
log "machine: $machine; scale $SCALE; runs $RUNS; parts ${ONLY:-all}"
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# --- fast mock ceiling (h2load, same machine) and the mock's own CPU per request
echo '{"message":{"token":"x","notification":{"title":"t","body":"b"}}}' > "$tmp/body.json"
mock_cpu() { awk '{print $14 + $15}' "/proc/$mock_pid/stat"; }
c0=$(mock_cpu)
R[mock]=$(h2load -n 200000 -c 4 -m 100 -d "$tmp/body.json" -H 'content-type: application/json' \
    "$mock/v1/projects/bench/messages:send" 2>/dev/null | awk '/finished in/ {printf "%.0f", $4}')
R[mock_us]=$(awk -v a="$c0" -v b="$(mock_cpu)" -v h="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", (b - a) / h / 200000 * 1e6 }')
log "mock ceiling: ${R[mock]} req/s; the mock's CPU ${R[mock_us]} us per request"
ctl _reset POST >/dev/null

workers 0
load_subscribers 1 "$N_DELIVERY" "$(echo $PROVIDERS $P2_PROVIDERS | tr ' ' '\n' | sort -u | paste -sd,)"
q -c "VACUUM ANALYZE"
clean() { q -c "TRUNCATE novu.deliveries, novu.execution_details, novu.events" >/dev/null; }

# Requests the mock received for each token against the attempts novu recorded for
# that token (a request reaches the provider once per recorded attempt): "extra
# missing", both 0 when they are equal for every token, into $tmp/exact.  A Web
# Push token is its subscription's endpoint, which the mock knows by its path.
exactness() {  # exactness PROVIDER
    local p=$1
    ctl _tokens > "$tmp/tokens.tsv"
    q > "$tmp/exact" <<SQL
CREATE TEMP TABLE mock_tokens (token text, n bigint);
\copy mock_tokens FROM '$tmp/tokens.tsv'
SELECT COALESCE(sum(GREATEST(COALESCE(m.n, 0) - COALESCE(d.a, 0), 0)), 0) || ' ' ||
       COALESCE(sum(GREATEST(COALESCE(d.a, 0) - COALESCE(m.n, 0), 0)), 0)
  FROM (SELECT CASE provider_id WHEN 'web-push' THEN regexp_replace(device_token::jsonb ->> 'endpoint', '^.*/push/', '')
                                ELSE device_token END AS token, sum(attempts) AS a
          FROM novu.deliveries WHERE provider_id = '$p' GROUP BY 1) d
  FULL JOIN mock_tokens m ON m.token = d.token;
SQL
}

# P2: N triggers (one device each) in one commit, timed from the commit until all are sent
p2() {  # p2 PROVIDER -> deliveries/s
    local p=$1 t0 t1 sent
    ctl _reset POST >/dev/null
    # OneSignal's row is a campaign: the same content for everyone, so it batches
    local payload="jsonb_build_object('orderId', i)"
    [ "$p" = one-signal ] && payload="'{\"campaign\": \"sale\"}'::jsonb"
    q -c "SELECT count(novu.trigger('bench-$p', to_jsonb('sub-' || i), $payload)) FROM generate_series(1, $N_DELIVERY) i" >/dev/null
    t0=$(now)
    drained
    t1=$(now)
    sent=$(q -c "SELECT count(*) FROM novu.deliveries WHERE status = 'sent' AND provider_id = '$p'")
    [ "$sent" = "$N_DELIVERY" ] || log "WARNING: $p: only $sent of $N_DELIVERY sent"
    exactness "$p"
    clean
    rate "$N_DELIVERY" "$(elapsed "$t0" "$t1")"
}
# P3: a steady rate of triggers to random subscribers, each in its own transaction.
# Two latencies per message: from the trigger call (its "t", taken inside the
# statement: it includes the trigger's own commit, fsync and all) to the mock's
# receipt, and from the moment the commit returned to the application (pgbench's
# log: the end of transaction "rid" = client.transaction) to the mock's receipt,
# which is novu's own commit-to-provider time.
p3() {  # p3 PROVIDER -> "p50 p99 n commit_p50 commit_p99 commit_n io_waits samples"
    local p=$1 s c w
    ctl _reset POST >/dev/null
    # the burst before (P2) leaves dirty buffers: its checkpoint is not P3's latency
    q -c "CHECKPOINT" >/dev/null
    rm -f "$tmp"/p3_log.*
    printf '%s\n' "\\set sub random(1, $N_DELIVERY)" "\\set n :n + 1" \
        "SELECT novu.trigger('bench-$p', to_jsonb('sub-' || :sub), jsonb_build_object('t', extract(epoch FROM clock_timestamp()), 'rid', :client_id || '.' || :n));" > "$tmp/p3.sql"
    waits_start
    (cd "$tmp" && pgbench -n -c 4 -j 2 -R "$P3_RATE" -T "$P3_SECONDS" -D n=0 -l --log-prefix=p3_log -f "$tmp/p3.sql" postgres >/dev/null 2>&1)
    w=$(waits_stop)
    drained
    sleep 0.5
    s=$(ctl _stats)
    # pgbench's log: client transaction_no latency_us script epoch us [lag]; the mock's: rid epoch
    cat "$tmp"/p3_log.* | awk '{ printf "%s.%s %d.%06d\n", $1, $2, $5, $6 }' > "$tmp/p3_commits"
    ctl _receipts > "$tmp/p3_receipts"
    exactness "$p"
    c=$(awk 'NR == FNR { done[$1] = $2; next } ($1 in done) { printf "%.3f\n", ($2 - done[$1]) * 1000 }' \
            "$tmp/p3_commits" "$tmp/p3_receipts" | sort -n |
        awk '{ a[NR] = $1 } END { if (NR == 0) { print "- - 0"; exit }
                                  i = int(NR * 0.5); j = int(NR * 0.99); if (i < 1) i = 1; if (j < 1) j = 1
                                  printf "%.1f %.1f %d\n", a[i], a[j], NR }')
    clean
    echo "$(echo "$s" | jq_ 'latency.p50_ms.toFixed(1)') $(echo "$s" | jq_ 'latency.p99_ms.toFixed(1)') $(echo "$s" | jq_ 'latency.n') $c $w"
}
# Where the delivery workers wait during a P3 row: one psql session samples
# pg_stat_activity every 20 ms; the row reports how many worker samples waited
# on I/O (a data page read: the page in neither shared_buffers nor the OS page
# cache) out of all worker samples.  A P3 row's tail with many such samples is
# the machine's storage, not novu's CPU (results.md, session 17).
# psql's own \watch repeats the query: a shell loop forking sleep(1) 50 times a second
# took 30% of a core of this 2-core machine, beside the P3 it measured (psql's query
# itself and \watch: 2%).
waits_start() {
    ( printf '%s\n' "SELECT count(*) FILTER (WHERE wait_event_type = 'IO'), count(*) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'" \
          '\watch 0.02' | psql -XAtq -F ' ' > "$tmp/waits" ) 2>/dev/null &
    waits_pid=$!
}
waits_stop() {  # -> "io_samples worker_samples"
    pkill -P "$waits_pid" 2>/dev/null; kill "$waits_pid" 2>/dev/null; wait "$waits_pid" 2>/dev/null
    awk '{ io += $1; n += $2 } END { printf "%d %d", io, n }' "$tmp/waits"
}
# What the machine gives P3 before novu does anything: a plain INSERT's commit
# (fsync on, like the trigger's) at the same rate and concurrency, timed the way
# pgbench times a transaction; P3's latency includes its trigger's commit.
p3_floor() {  # p3_floor -> "p50 p99 n"
    q -c "CHECKPOINT" >/dev/null
    rm -f "$tmp"/floor_log.*
    echo "INSERT INTO bench_plain (payload) VALUES ('{}');" > "$tmp/floor.sql"
    (cd "$tmp" && pgbench -n -c 4 -j 2 -R "$P3_RATE" -T "$P3_SECONDS" -l --log-prefix=floor_log -f "$tmp/floor.sql" postgres >/dev/null 2>&1)
    q -c "TRUNCATE bench_plain" >/dev/null
    cat "$tmp"/floor_log.* | awk '{ print $3 }' | sort -n |
        awk '{ a[NR] = $1 } END { printf "%.1f %.1f %d\n", a[int(NR * 0.5)] / 1000, a[int(NR * 0.99)] / 1000, NR }'
}
p2p3_round() {  # p2p3_round quiet|hog RUN
    local mode=$1 r=$2 p
    R[p3_floor_${mode}_$r]=$(p3_floor)
    log "run $r $mode: P3 floor (a plain INSERT's commit) p50/p99/n ${R[p3_floor_${mode}_$r]}"
    for p in $P2_PROVIDERS; do
        R[p2_${p}_${mode}_$r]=$(p2 "$p")
        R[x2_${p}_${mode}_$r]=$(cat "$tmp/exact")
        log "run $r $mode: P2 $p ${R[p2_${p}_${mode}_$r]} deliveries/s; requests beyond / short of the recorded attempts: ${R[x2_${p}_${mode}_$r]}"
    done
    for p in $PROVIDERS; do
        R[p3_${p}_${mode}_$r]=$(p3 "$p")
        R[x3_${p}_${mode}_$r]=$(cat "$tmp/exact")
        log "run $r $mode: P3 $p trigger-call p50/p99/n, commit-to-provider p50/p99/n, worker samples waiting on I/O / all: ${R[p3_${p}_${mode}_$r]}"
    done
}

if want p2p3; then
    R[stalls_quiet]=$(machine_stalls 30)
    hog_start
    R[stalls_hog]=$(machine_stalls 30)
    hog_stop
    log "vCPU stalls (cyclictest, 30 s): late >= 10 ms / >= 50 ms / max ms / wakeups: quiet ${R[stalls_quiet]}, beside the hog ${R[stalls_hog]}"
    workers default
    for r in $(seq "$RUNS"); do
        p2p3_round quiet "$r"
        hog_start
        p2p3_round hog "$r"
        hog_stop
    done
fi

# --- from here on, the settings P1 and P4-P6 were always measured with
if want tuned || want p1 || want p5 || want p4 || want p6 || want pgnet; then
    workers 0
    for s in $(echo "$TUNED_SETTINGS" | tr -d ' ' | tr ',' ' '); do
        q -c "ALTER SYSTEM SET ${s%%=*} = ${s#*=}"
    done
    as_owner "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -m fast -w -t 120 restart >/dev/null
    workers 0
fi

# --- P2 tuned (optional row): the same measurement with TUNED_SETTINGS
if want tuned; then
    workers 2
    for p in $PROVIDERS; do
        R[p2tuned_$p]=$(p2 "$p")
        log "P2 tuned $p: ${R[p2tuned_$p]} deliveries/s"
    done
    workers 0
fi

# --- P1 trigger cost: pgbench, same clients, trigger vs plain INSERT of the same jsonb
if want p1; then
    payload='{"orderId": 1234, "items": ["book", "lamp"], "note": "hello from pgbench", "total": 42.5}'
    echo "SELECT novu.trigger('bench-fcm', '\"sub-1\"', '$payload');" > "$tmp/p1_trigger.sql"
    echo "INSERT INTO bench_plain (payload) VALUES ('$payload');" > "$tmp/p1_insert.sql"
    # as applications trigger: a recipient drawn at random from N_FANOUT subscribers (1M)
    [ "$N_FANOUT" -gt "$N_DELIVERY" ] && load_subscribers $((N_DELIVERY + 1)) "$N_FANOUT" fcm && fanout_loaded=1
    q -c "VACUUM ANALYZE novu.subscribers, novu.device_tokens" >/dev/null
    printf '%s\n' "\\set sub random(1, $N_FANOUT)" \
        "SELECT novu.trigger('bench-fcm', to_jsonb('sub-' || :sub), '$payload');" > "$tmp/p1_random.sql"
    # its baseline: the application's own row with the same random recipient (the
    # same statement-level work: pgbench's variable, the expression planned per call)
    printf '%s\n' "\\set sub random(1, $N_FANOUT)" \
        "INSERT INTO bench_plain (payload, recipient) VALUES ('$payload', to_jsonb('sub-' || :sub));" > "$tmp/p1_insert_random.sql"
    p1() {  # p1 SCRIPT SYNC SECONDS -> tps
        PGOPTIONS="-c synchronous_commit=$2" pgbench -n -c 4 -j 2 -T "$3" -f "$1" postgres 2>/dev/null \
            | awk '/^tps/ {printf "%.0f", $3}'
    }
    # A ratio of two pgbench runs one after the other also measures what changed in
    # between (a checkpoint, the WAL device, the tables growing): the two statements
    # run in P1_SLICES alternating slices (baseline first, then the trigger first,
    # ...), P1_SECONDS each in all, and each one's TPS is the mean of its slices.
    p1_pair() {  # p1_pair BASELINE SCRIPT SYNC -> "baseline_tps script_tps"
        local s=$(( (P1_SECONDS + P1_SLICES - 1) / P1_SLICES )) b=0 t=0 i
        for i in $(seq "$P1_SLICES"); do
            if [ $((i % 2)) = 1 ]; then
                b=$((b + $(p1 "$1" "$3" "$s"))); t=$((t + $(p1 "$2" "$3" "$s")))
            else
                t=$((t + $(p1 "$2" "$3" "$s"))); b=$((b + $(p1 "$1" "$3" "$s")))
            fi
        done
        echo "$((b / P1_SLICES)) $((t / P1_SLICES))"
    }
    # The same pair interleaved: one pgbench run draws each transaction from the two
    # scripts alike (weights 1:1), on the same connections at the same moments, so
    # what the machine does meanwhile (the CPU's speed drifting, the first pass of
    # new backends over the WAL buffers) falls on both alike; each one's cost is
    # its mean latency, and the ratio is the baseline's over the trigger's.
    p1_mixed() {  # p1_mixed BASELINE SCRIPT SYNC -> "baseline_ms script_ms"
        PGOPTIONS="-c synchronous_commit=$3" pgbench -n -c 4 -j 2 -T "$P1_SECONDS" -f "$1@1" -f "$2@1" postgres 2>/dev/null \
            | awk '/^SQL script/ { s = $3 + 0 } /^ - latency average/ { l[s] = $5 } END { printf "%s %s", l[1], l[2] }'
    }
    # each run measures the four pairs back to back; every run is reported
    for r in $(seq "$P1_RUNS"); do
        for sync in on off; do
            set -- $(p1_pair "$tmp/p1_insert.sql" "$tmp/p1_trigger.sql" $sync); ins=$1 trg=$2
            set -- $(p1_pair "$tmp/p1_insert_random.sql" "$tmp/p1_random.sql" $sync); insr=$1 rnd=$2
            R[p1_$sync]="${R[p1_$sync]:+${R[p1_$sync]}; }$trg / $ins = $(awk -v a="$trg" -v b="$ins" 'BEGIN { printf "%.2f", a / b }')"
            R[p1r_$sync]="${R[p1r_$sync]:+${R[p1r_$sync]}; }$rnd / $insr = $(awk -v a="$rnd" -v b="$insr" 'BEGIN { printf "%.2f", a / b }')"
            log "P1 run $r synchronous_commit=$sync: trigger $trg tps (random recipients $rnd), plain insert $ins tps (with the random recipient $insr)"
            set -- $(p1_mixed "$tmp/p1_insert.sql" "$tmp/p1_trigger.sql" $sync)
            R[p1m_$sync]="${R[p1m_$sync]:+${R[p1m_$sync]}; }$1 / $2 ms = $(awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }')"
            set -- $(p1_mixed "$tmp/p1_insert_random.sql" "$tmp/p1_random.sql" $sync)
            R[p1mr_$sync]="${R[p1mr_$sync]:+${R[p1mr_$sync]}; }$1 / $2 ms = $(awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }')"
            log "P1 run $r synchronous_commit=$sync interleaved: ${R[p1m_$sync]##*; } (random ${R[p1mr_$sync]##*; })"
        done
    done
    q -c "TRUNCATE bench_plain" -c "TRUNCATE novu.events"
fi

# --- P5 import: CSV of N subscribers with COPY + one set-based validate-and-upsert
if want p5; then
    node -e 'const n=+process.argv[1];const o=[];for(let i=1;i<=n;i++)o.push(`imp-${i},First${i},Last${i},user${i}@example.com,+1555${i},en-US,`);process.stdout.write(o.join("\n")+"\n")' "$N_IMPORT" > "$tmp/import.csv"
    t0=$(now)
    q -c "\\copy novu.subscriber_import (\"subscriberId\",\"firstName\",\"lastName\",email,phone,locale,avatar) FROM '$tmp/import.csv' (FORMAT csv)" \
      -c "SELECT novu.import_subscribers()" >/dev/null
    t1=$(now)
    R[p5]=$(rate "$N_IMPORT" "$(elapsed "$t0" "$t1")")
    log "P5 import: ${R[p5]} rows/s"
fi

# --- P4 fan-out: broadcast to N subscribers with one device each; worker peak RssAnon
if want p4; then
    q -c "DELETE FROM novu.device_tokens WHERE integration_id <> (SELECT id FROM novu.integrations WHERE identifier = 'fcm-bench')" \
      -c "DELETE FROM novu.subscribers WHERE subscriber_id LIKE 'imp-%'"
    [ "$N_FANOUT" -gt "$N_DELIVERY" ] && [ -z "${fanout_loaded:-}" ] && load_subscribers $((N_DELIVERY + 1)) "$N_FANOUT" fcm
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
    R[p4]="$(rate "$nsubs" "$(elapsed "$t0" "$t1")") deliveries/s, peak RssAnon of a worker $(awk -v k="$peak" 'BEGIN { printf "%.1f MB", k / 1024 }')"
    log "P4 fan-out to $nsubs subscribers: ${R[p4]}"
    workers 0
    q -c "TRUNCATE novu.deliveries, novu.execution_details, novu.events"
fi

# --- P6 backlog: claim one batch with N pending vs with one batch pending
# the worker's claim of due messages (queue.c), without the context joins
if want p6; then
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
    q -c "TRUNCATE novu.deliveries"
fi

# --- P2 baseline: pg_net posting 10k requests to the mock's HTTP/1.1 port.
# Run last: pg_net's worker disturbs what runs after it (P3 collapsed when it ran first).
if want pgnet && [ "$preload" = "novu,pg_net" ]; then
    q -c "CREATE EXTENSION pg_net"
    ctl _reset POST >/dev/null
    q -c "SELECT count(net.http_post(url := 'http://127.0.0.1:$((${BENCH_MOCK_PORT:-18600} + 1))/pgnet', body := '{\"n\": 1}'::jsonb)) FROM generate_series(1, 10000)" >/dev/null
    t0=$(now)
    for _ in $(seq 600); do
        [ "$(q -c "SELECT count(*) FROM net._http_response")" -ge 10000 ] && break
        sleep 0.5
    done
    t1=$(now)
    got=$(q -c "SELECT count(*) FROM net._http_response")
    R[pgnet]=$(rate "$got" "$(elapsed "$t0" "$t1")")
    log "P2 baseline pg_net ($pgnet_version, default settings): ${R[pgnet]} requests/s"
else
    R[pgnet]="not run ($pgnet_note); its documentation promises about 200 requests/s (documented, not measured)"
fi

# --- the results
stop_cluster
kill "$mock_pid" 2>/dev/null || true
wait "$mock_pid" 2>/dev/null || true
load1=$(cut -d' ' -f1-3 /proc/loadavg)

provider_name() { case $1 in fcm) echo FCM ;; apns) echo APNs ;; expo) echo Expo ;; web-push) echo "Web Push" ;; one-signal) echo "OneSignal" ;; *) echo "$1" ;; esac; }
p2_target() { case $1 in fcm|apns|one-signal) echo "≥ 10,000/s; hog ≥ 0.5" ;; web-push) echo "≥ 5,000/s" ;; *) echo "-" ;; esac; }
p2_min() { case $1 in web-push) echo 5000 ;; *) echo 10000 ;; esac; }

# P2/P3 table: every run, quiet and beside the hog, and the ratio
p2p3_table() {
    local p r q h P name
    echo "| figure | run | quiet | with CPU hog | hog vs quiet | target |"
    echo "|---|---|---|---|---|---|"
    for p in $P2_PROVIDERS; do
        P=$(provider_name "$p")
        for r in $(seq "$RUNS"); do
            q=${R[p2_${p}_quiet_$r]}; h=${R[p2_${p}_hog_$r]}
            echo "| P2 $P deliveries/s | $r | $q | $h | $(awk -v a="$h" -v b="$q" 'BEGIN { printf "%.2f", a / b }') | $(p2_target "$p") |"
        done
    done
    for r in $(seq "$RUNS"); do
        set -- ${R[p3_floor_quiet_$r]}; local f50=$1 f99=$2 fn=$3
        set -- ${R[p3_floor_hog_$r]}; local g50=$1 g99=$2 gn=$3
        echo "| P3 floor: a plain INSERT's commit, same rate, p50 / p99 (n) | $r | $f50 / $f99 ms ($fn) | $g50 / $g99 ms ($gn) | p99 $(awk -v a="$g99" -v b="$f99" 'BEGIN { printf "%.2f", a / b }')x | (in the trigger-call rows) |"
    done
    for p in $PROVIDERS; do
        P=$(provider_name "$p")
        for r in $(seq "$RUNS"); do
            set -- ${R[p3_${p}_quiet_$r]}; local q50=$1 q99=$2 qn=$3 c50=$4 c99=$5 cn=$6 qio=${7:--} qs=${8:--}
            set -- ${R[p3_${p}_hog_$r]}; local h50=$1 h99=$2 hn=$3 d50=$4 d99=$5 dn=$6 hio=${7:--} hs=${8:--}
            echo "| P3 $P commit-to-provider p50 / p99 (n) | $r | $c50 / $c99 ms ($cn) | $d50 / $d99 ms ($dn) | p99 $(awk -v a="$d99" -v b="$c99" 'BEGIN { printf "%.2f", a / b }')x | p99 ≤ 5 ms; hog ≤ 2x |"
            echo "| P3 $P trigger-call-to-provider (its commit included) p50 / p99 (n) | $r | $q50 / $q99 ms ($qn) | $h50 / $h99 ms ($hn) | p99 $(awk -v a="$h99" -v b="$q99" 'BEGIN { printf "%.2f", a / b }')x | - |"
            echo "| P3 $P delivery workers waiting on I/O (samples every 20 ms) | $r | $qio of $qs | $hio of $hs | - | - |"
        done
    done
    for r in $(seq "$RUNS"); do
        echo "| requests beyond / short of the attempts recorded, per token, P2 then P3 of each provider | $r | $(exact_row quiet "$r") | $(exact_row hog "$r") | - | 0 / 0 |"
    done
}
exact_row() {  # exact_row MODE RUN -> "fcm 0/0, 0/0; apns ..."
    local mode=$1 r=$2 p out=""
    for p in $P2_PROVIDERS; do
        set -- ${R[x2_${p}_${mode}_$r]:-- -}; out="$out${out:+; }$p $1/$2"
        case " $PROVIDERS " in *" $p "*) set -- ${R[x3_${p}_${mode}_$r]:-- -}; out="$out, $1/$2" ;; esac
    done
    echo "$out"
}
# how many runs meet the targets
p2p3_verdict() {
    local p r ok_q ok_h
    for p in fcm apns web-push one-signal; do
        case " $P2_PROVIDERS " in *" $p "*) ;; *) continue ;; esac
        ok_q=0; ok_h=0
        for r in $(seq "$RUNS"); do
            awk -v a="${R[p2_${p}_quiet_$r]}" -v m="$(p2_min "$p")" 'BEGIN { exit !(a >= m) }' && ok_q=$((ok_q + 1))
            awk -v a="${R[p2_${p}_hog_$r]}" -v b="${R[p2_${p}_quiet_$r]}" -v m="$(p2_min "$p")" 'BEGIN { exit !(a >= m && a * 2 >= b) }' && ok_h=$((ok_h + 1))
        done
        echo "- P2 $p ≥ $(p2_min "$p")/s: $ok_q of $RUNS runs quiet, $ok_h of $RUNS beside the hog (and within 2x of quiet)"
    done
    for p in $PROVIDERS; do
        ok_q=0; ok_h=0
        for r in $(seq "$RUNS"); do
            set -- ${R[p3_${p}_quiet_$r]}; local q99=$5
            set -- ${R[p3_${p}_hog_$r]}; local h99=$5
            awk -v a="$q99" 'BEGIN { exit !(a <= 5) }' && ok_q=$((ok_q + 1))
            awk -v a="$h99" -v b="$q99" 'BEGIN { exit !(a <= 5 && a <= 2 * b) }' && ok_h=$((ok_h + 1))
        done
        echo "- P3 $p commit-to-provider p99 ≤ 5 ms: $ok_q of $RUNS runs quiet, $ok_h of $RUNS beside the hog (and within 2x of quiet)"
    done
    local k v exact=0 all=0
    for k in "${!R[@]}"; do
        case $k in x2_*|x3_*) v=${R[$k]}; all=$((all + 1)); [ "$v" = "0 0" ] && exact=$((exact + 1)) ;; esac
    done
    echo "- requests per token equal to the attempts recorded (no duplicate, none missing): $exact of $all measurements"
}

{
    echo "# make bench results"
    echo
    echo "Machine: $machine. Scale $SCALE. Run $(date -u +%Y-%m-%dT%H:%MZ). Parts: ${ONLY:-all}."
    echo "Load average (1/5/15 min) at the start: $load0; at the end of the figures: $load1 (the machine is shared)."
    echo "Fast mock ($mock_desc) ceiling measured with h2load on the same machine: ${R[mock]} requests/s; the mock's own CPU ${R[mock_us]} us per request."
    if want p2p3; then
        echo
        echo "## P2 and P3 at default settings"
        echo
        echo "Every PostgreSQL and novu setting at its default (novu.workers 2, novu.batch_size 500, shared_buffers 128MB, fsync on);"
        echo "set are only shared_preload_libraries, novu.database_name, novu.ca_file, novu.secret_key_file,"
        echo "novu.allowed_private_networks (the local mock) and novu.expo_receipt_delay 1h (receipts are not measured)."
        echo "P2: $N_DELIVERY triggers (one device each) in one commit, timed from the commit until all are sent (fan-out included)."
        echo "P3: pgbench (4 clients) at $P3_RATE triggers/s for $P3_SECONDS s to random subscribers, one provider at a time;"
        echo "Two latencies per message: commit-to-provider, from the moment the trigger's commit returned to the application"
        echo "(pgbench's per-transaction log; the payload's \"rid\" names the transaction) to the mock's receipt; and from the trigger"
        echo "call (clock_timestamp() in the payload's \"t\", taken before the commit) to the mock's receipt, which includes the"
        echo "trigger's own commit (WAL fsync: see the floor row)."
        echo "CPU hog: one \`$HOG_CMD\` per core ($(nproc)), started 1 s before the round and killed after it."
        echo "Each run measures quiet, then beside the hog; $RUNS run(s)."
        set -- ${R[stalls_quiet]}; sq10=$1 sq50=$2 sqmax=$3 sqn=$4
        set -- ${R[stalls_hog]}; sh10=$1 sh50=$2 shmax=$3 shn=$4
        echo "The machine itself (machine_stalls in test/bench/lib.sh: cyclictest, one SCHED_FIFO thread per core"
        echo "waking every 1 ms for 30 s; it preempts every process here, so waking 10 ms late or more is its core"
        echo "not running at all): quiet $sq10 of $sqn wakeups ≥ 10 ms late ($sq50 ≥ 50 ms, the latest $sqmax ms);"
        echo "beside the hog $sh10 of $shn ($sh50 ≥ 50 ms, the latest $shmax ms). Every process on a core that stops"
        echo "that long waits as long: the P3 rows beside the hog cannot be shorter."
        echo
        p2p3_table
        echo
        p2p3_verdict
    fi
    if want tuned || want p1 || want p5 || want p4 || want p6 || want pgnet; then
    echo
    echo "## Other figures"
    echo
    echo "P1 and P4-P6 run on the same cluster restarted with the settings they were always measured with"
    echo "(\"tuned\"): $TUNED_SETTINGS; P1 with the workers stopped."
    echo
    echo "| figure | how | settings | measured | target |"
    echo "|---|---|---|---|---|"
    if want tuned; then
        for p in $PROVIDERS; do
            echo "| P2 $p, tuned | as P2 above, quiet, one run | tuned | ${R[p2tuned_$p]} deliveries/s | - |"
        done
    fi
    want p1 && echo "| P1 trigger cost | $P1_RUNS run(s), each: pgbench, 4 clients, ${P1_SECONDS} s each in $P1_SLICES alternating slices (the mean of each one's slices): TPS of \`novu.trigger\` to an existing subscriber / TPS of a plain INSERT of the same jsonb into a table with a bigserial primary key; synchronous_commit=on | tuned, workers stopped | ${R[p1_on]} | ratio ≥ 0.8 |"
    want p1 && echo "| P1 (sync off) | the same with synchronous_commit=off | tuned, workers stopped | ${R[p1_off]} | ratio ≥ 0.8 |"
    want p1 && echo "| P1 random recipients | the same, each trigger to a subscriber drawn at random from $N_FANOUT, against the plain INSERT of the same row with that random recipient (\`to_jsonb('sub-' || :sub)\` in both statements); synchronous_commit=on | tuned, workers stopped | ${R[p1r_on]} | ratio ≥ 0.8 |"
    want p1 && echo "| P1 random (sync off) | the same with synchronous_commit=off | tuned, workers stopped | ${R[p1r_off]} | ratio ≥ 0.8 |"
    want p1 && echo "| P1 interleaved | each pair of the rows above in one pgbench run instead ($P1_SECONDS s, 4 clients, each transaction drawn from the two statements 1:1): the plain INSERT's mean latency / the trigger's, hot subscriber; synchronous_commit on, then off | tuned, workers stopped | on: ${R[p1m_on]}; off: ${R[p1m_off]} | ratio ≥ 0.8 |"
    want p1 && echo "| P1 interleaved, random recipients | the same with the random-recipient pair | tuned, workers stopped | on: ${R[p1mr_on]}; off: ${R[p1mr_off]} | ratio ≥ 0.8 |"
    want pgnet && echo "| P2 baseline | pg_net posting 10k requests to the mock's HTTP/1.1 port, pg_net's default settings | tuned | ${R[pgnet]} | P2 ≥ 50× |"
    want p4 && echo "| P4 fan-out | broadcast to every subscriber ($N_FANOUT, one FCM device each) | tuned | ${R[p4]} | ≥ P2 (tuned row), < 100 MB |"
    want p5 && echo "| P5 import | CSV of $N_IMPORT subscribers: \\copy + novu.import_subscribers() | tuned | ${R[p5]} rows/s | ≥ 100,000/s |"
    want p6 && echo "| P6 backlog | claim of one batch (2000) with $N_BACKLOG pending vs with 2000 pending (mean of 50) | tuned | ${R[p6]} | ratio ≤ 1.2 |"
    fi
} > "$RESULTS.tmp"

# --- template render throughput (test/bench/render.sh: this engine and 0.6.0's, one backend)
if want render; then
    render_row=$(PGHOST="$PGHOST" PGPORT="$PGPORT" bash test/bench/render.sh 2>/dev/null | grep '^| Template render' || true)
    {
        echo
        echo "## Template render"
        echo
        echo "| figure | this engine | earlier engine | ratio | target |"
        echo "|---|---|---|---|---|"
        echo "${render_row:-| Template render | render.sh failed | | | |}"
    } >> "$RESULTS.tmp"
fi

# --- the in-app feed at 10M messages x scale (test/bench/feed.sh, its own cluster)
if want feed; then
    if ! (PGPORT=$((PGPORT + 7)) bash test/bench/feed.sh "$SCALE" > "$tmp/feed.md"); then
        printf '\n## In-app feed\n\nfeed.sh failed; see the log above.\n' > "$tmp/feed.md"
    fi
    cat "$tmp/feed.md" >> "$RESULTS.tmp"
fi

# --- the workflow engine at scale (test/bench/engine.sh, its own cluster and mock):
# topic fan-out to 1M x scale, 1M x scale delays due at one second, the claim with
# 10M x scale waiting steps, a digest of 100k x scale events over 10k x scale keys
if want engine; then
    if ! (PGPORT=$((PGPORT + 8)) ENGINE_NO_BUILD=1 ENGINE_MOCK_PORT=${ENGINE_MOCK_PORT:-$((${BENCH_MOCK_PORT:-18600} + 10))} \
          bash test/bench/engine.sh "$SCALE" > "$tmp/engine.md"); then
        printf '\n## Workflow engine\n\nengine.sh failed; see the log above.\n' > "$tmp/engine.md"
    fi
    cat "$tmp/engine.md" >> "$RESULTS.tmp"
fi

# --- the long mixed run, on its own cluster and mock
if want mixed; then
    mixed_rc=0
    MIXED_NO_BUILD=1 MIXED_RESULTS="$tmp/mixed.md" BENCH_MOCK_PORT=${BENCH_MOCK_PORT:-18600} bash test/bench/mixed.sh || mixed_rc=$?
    if [ -s "$tmp/mixed.md" ]; then { echo; cat "$tmp/mixed.md"; } >> "$RESULTS.tmp"
    else printf '\n## Mixed run\n\nmixed.sh failed (exit %s) before writing its results; see the log above.\n' "$mixed_rc" >> "$RESULTS.tmp"; fi
fi
took=$(awk -v a="$started" -v b="$(now)" 'BEGIN { printf "%.1f", (b - a) / 60 }')
echo >> "$RESULTS.tmp"
echo "make bench took $took minutes (build included)." >> "$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
log "results written to $RESULTS"
cat "$RESULTS"
[ "${mixed_rc:-0}" = 0 ]
