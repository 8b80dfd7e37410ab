#!/usr/bin/env bash
# The long mixed run of make bench (run.sh calls it last; it also runs on its own):
# on its own cluster (every setting at its default but novu.request_timeout 2s)
# and a fast mock injecting faults, for MIXED_SECONDS:
#   - an app commits orders at a steady rate (pgbench -R), each order calling
#     novu.trigger in its transaction (transactionId ord-<order id>), to a random
#     subscriber among MIXED_SUBSCRIBERS, on FCM, APNs or Expo at random;
#   - the mock answers a share of the requests with faults (MIXED_FAULTS; see
#     fastmock.js): RST_STREAM, 503 with Retry-After, an answer slower than the
#     client's timeout, GOAWAY with a last-stream-id, the connection destroyed;
#   - at 25% of the run a broadcast to every subscriber (every device);
#   - at 30% a delivery worker is killed with SIGKILL (the postmaster then
#     restarts every process: crash recovery);
#   - at 65% the server is restarted (pg_ctl restart, fast shutdown).
# Then the load stops, the faults are turned off, and the run waits (at most
# MIXED_DRAIN_SECONDS) until nothing is pending.  It checks, per device token, that
# the requests the mock received equal the attempts recorded, that nothing is
# pending and every trigger was fanned out to one delivery per device, and it
# prints the throughput per 10 s.
#
#   MIXED_SECONDS=600 MIXED_RATE=300 (orders/s, all providers) MIXED_SUBSCRIBERS=50000
#   MIXED_FAULTS='{"rst":0.004,...}'  MIXED_DRAIN_SECONDS=300
#   MIXED_RESULTS=FILE (default /tmp/novu-mixed-results.md)  MIXED_NO_BUILD=1 (run.sh)
#   MIXED_KILL=0 / MIXED_RESTART=0 leave out the kill -9 / the restart (to tell faults apart)
#   MIXED_KEEP=1 leaves the cluster, the mock and the work directory for a look
# Exit status 1 when the accounting does not balance.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
. test/bench/lib.sh

SECONDS_=${MIXED_SECONDS:-600}
RATE=${MIXED_RATE:-300}
NSUBS=${MIXED_SUBSCRIBERS:-50000}
FAULTS=${MIXED_FAULTS:-'{"rst":0.004,"e5xx":0.004,"slow":0.002,"goaway":0.0005,"destroy":0.0005,"retryAfter":1,"slowMs":3000}'}
DRAIN=${MIXED_DRAIN_SECONDS:-300}
RESULTS=${MIXED_RESULTS:-/tmp/novu-mixed-results.md}
REQUEST_TIMEOUT=2s
# activity details of attempts that ended in a connection-level failure (see "How the counts are read")
CONN_LOST='connection lost before the answer|before end of the underlying stream|Error in the HTTP2 framing layer|Connection died|Send failure|Failure when receiving data|the request was not sent|the request was refused unprocessed'
# of those, attempts the extension says never reached the provider whole: the mock cannot have counted them
UNSENT='the request was (not sent|refused unprocessed)'
CONN_LOST_TEXT="connection lost before the answer, stream not closed before the end of the connection, HTTP/2 framing layer, send or receive failure, a request curl never sent (whole) or the provider refused unprocessed"
at() { awk -v s="$SECONDS_" -v f="$1" 'BEGIN { printf "%d", s * f }'; }
T_BROADCAST=$(at 0.25)
T_KILL=$(at 0.30)
T_RESTART=$(at 0.65)

ensure_packages
[ -n "${MIXED_NO_BUILD:-}" ] || build_and_install

tmp=$(mktemp -d /tmp/novu-mixed.XXXXXX)
chmod 755 "$tmp"
# the faults are fastmock.js's (the C mock has none)
BENCH_MOCK=node bench_start_mock "$tmp" "${BENCH_MOCK_PORT:-18600}"
export PGPORT=${PGPORT:-54331}
start_cluster "$tmp/pg" \
    "fsync = on" \
    "novu.database_name = 'postgres'" \
    "novu.ca_file = '$BENCH_CERTS/ca.pem'" \
    "novu.expo_receipt_delay = '1h'" \
    "novu.request_timeout = '$REQUEST_TIMEOUT'"
bg_pids=""
cleanup() {
    local p
    for p in $bg_pids; do kill "$p" 2>/dev/null || true; done
    if [ -n "${MIXED_KEEP:-}" ]; then log "kept: cluster $CLUSTER_DIR (port $PGPORT), mock pid $mock_pid, $tmp"; return; fi
    stop_cluster
    kill "$mock_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
bench_setup
log "mixed run: $SECONDS_ s, $RATE orders/s, $NSUBS subscribers, faults $FAULTS"
load_subscribers 1 "$NSUBS"
q <<'SQL'
CREATE TABLE app_orders (id bigserial PRIMARY KEY, subscriber_id text NOT NULL, provider text NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT clock_timestamp());
VACUUM ANALYZE;
SQL
cat > "$tmp/order.sql" <<'EOF'
\set sub random(1, :nsubs)
\set p random(1, 3)
WITH o AS (INSERT INTO app_orders (subscriber_id, provider) VALUES ('sub-' || :sub, (ARRAY['fcm', 'apns', 'expo'])[:p])
           RETURNING id, subscriber_id, provider)
SELECT novu.trigger('bench-' || o.provider, to_jsonb(o.subscriber_id),
                    jsonb_build_object('orderId', o.id, 't', extract(epoch FROM clock_timestamp())), '{}', 'ord-' || o.id)
  FROM o;
EOF

# a statement that may meet the server down (crash recovery, restart): retried for up to 120 s
qr() {
    local i
    for i in $(seq 240); do
        if out=$(q "$@" 2>/dev/null); then echo "$out"; return 0; fi
        sleep 0.5
    done
    log "WARNING: gave up on: $*"
    return 1
}
mark() { echo "$(date +%s.%N) $*" >> "$tmp/marks"; log "t=$(( $(date +%s) - t0 )) s: $*"; }
sleep_until() { local d; d=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; print (d > 0 ? d : 0) }'); sleep "$d"; }

# the app: pgbench at a steady rate until the end; started again whenever the server went away
load_loop() {
    local end=$1 left
    while :; do
        left=$(( end - $(date +%s) ))
        [ "$left" -le 0 ] && break
        pgbench -n -c 4 -j 2 -R "$RATE" -T "$left" -D nsubs="$NSUBS" -f "$tmp/order.sql" postgres >> "$tmp/pgbench.log" 2>&1 || true
        sleep 0.5
    done
}
# every 10 s: the backlog (pending + sending) and the outbox rows waiting
monitor_loop() {
    while :; do
        b=$(timeout 5 psql -XAtq -F ' ' -c "SELECT (SELECT count(*) FROM novu.deliveries WHERE status IN ('pending', 'sending')),
                                                  (SELECT count(*) FROM novu.events WHERE status IN ('pending', 'processing'))" 2>/dev/null || echo "down down")
        echo "$(date +%s) $b" >> "$tmp/monitor"
        sleep 10
    done
}

ctl _reset POST >/dev/null
ctl _faults POST "$FAULTS" >/dev/null
t0=$(date +%s)
mark "start: load at $RATE orders/s, faults on"
load_loop $((t0 + SECONDS_)) &
load_pid=$!
monitor_loop &
bg_pids="$load_pid $!"

sleep_until $((t0 + T_BROADCAST))
bc_devices=$(qr -c "SELECT count(*) FROM novu.device_tokens")
qr -c "SELECT novu.broadcast('bench-all', '{\"orderId\": 0}', '{}', 'mixed-broadcast')" >/dev/null
mark "broadcast to $NSUBS subscribers ($bc_devices devices)"

sleep_until $((t0 + T_KILL))
if [ "${MIXED_KILL:-1}" = 1 ]; then
wpid=$(qr -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'novu delivery worker' ORDER BY pid LIMIT 1")
backlog_at_kill=$(qr -c "SELECT count(*) FROM novu.deliveries WHERE status IN ('pending', 'sending')")
kill -9 "$wpid"
mark "kill -9 of delivery worker $wpid (backlog $backlog_at_kill)"
sleep 2
qr -c "SELECT 1" >/dev/null
mark "server accepting connections again after the crash"
fi

sleep_until $((t0 + T_RESTART))
if [ "${MIXED_RESTART:-1}" = 1 ]; then
    mark "pg_ctl restart (fast)"
    as_owner "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -m fast -w -t 120 restart >/dev/null
    mark "server restarted"
fi

wait "$load_pid" || true
ctl _faults POST '{}' >/dev/null
mark "load stopped, faults off; draining"
deadline=$(( $(date +%s) + DRAIN ))
drained_ok=0
while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$(qr -c "SELECT NOT EXISTS (SELECT FROM novu.events WHERE status IN ('pending', 'processing'))
                     AND NOT EXISTS (SELECT FROM novu.deliveries WHERE status IN ('pending', 'sending'))")" = t ]; then
        drained_ok=1
        break
    fi
    sleep 1
done
if [ "$drained_ok" = 1 ]; then mark "drained: nothing pending"; else mark "NOT drained after $DRAIN s"; fi
sleep 11   # one more monitor sample
for p in $bg_pids; do kill "$p" 2>/dev/null || true; done
bg_pids=""
t_end=$(date +%s)

# --- accounting
ctl _tokens > "$tmp/tokens.tsv"
ctl _stats > "$tmp/stats.json"
ctl _timeline | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const [k,v] of Object.entries(JSON.parse(s)))console.log(k+"\t"+v)})' > "$tmp/timeline.tsv"
awk '{print $1 "\t" $2 "\t" $3}' "$tmp/monitor" > "$tmp/monitor.tsv"
awk '{t=$1; $1=""; sub(/^ /, ""); print int(t) "\t" $0}' "$tmp/marks" > "$tmp/marks.tsv"
pgbench_ok=$(awk '/number of transactions actually processed/ {split($0, a, ": "); split(a[2], b, "/"); s += b[1]} END {print s + 0}' "$tmp/pgbench.log")
pgbench_runs=$(grep -c "number of transactions actually processed" "$tmp/pgbench.log" || true)
pgbench_aborted=$(grep -c "aborted\|terminated\|could not connect\|connection to server" "$tmp/pgbench.log" || true)
q <<SQL
CREATE TABLE mock_counts (token text PRIMARY KEY, n integer NOT NULL);
CREATE TABLE mock_timeline (sec bigint PRIMARY KEY, n integer NOT NULL);
CREATE TABLE monitor (sec bigint, backlog text, outbox text);
CREATE TABLE marks (sec bigint, what text);
\copy mock_counts FROM '$tmp/tokens.tsv'
\copy mock_timeline FROM '$tmp/timeline.tsv'
\copy monitor FROM '$tmp/monitor.tsv'
\copy marks FROM '$tmp/marks.tsv'
-- per delivery: attempts; the attempts whose outcome was recorded (an activity row
-- Success / Pending / Failed; a lease that expired at max_attempts is not an attempt);
-- and of those, the ones that ended in a connection-level failure, where the client
-- cannot know whether its request arrived
CREATE TABLE acct AS
SELECT d.device_token AS token, count(*) AS deliveries, sum(d.attempts) AS attempts,
       sum(coalesce(o.outcomes, 0)) AS outcomes, sum(coalesce(o.conn_lost, 0)) AS conn_lost,
       sum(coalesce(o.unsent, 0)) AS unsent
  FROM novu.deliveries d
  LEFT JOIN (SELECT message_id, count(*) AS outcomes,
                    count(*) FILTER (WHERE detail ~ '$CONN_LOST') AS conn_lost,
                    count(*) FILTER (WHERE detail ~ '$UNSENT') AS unsent
               FROM novu.execution_details
              WHERE status IN ('Success', 'Pending', 'Failed') AND detail NOT LIKE '%(lease expired)'
              GROUP BY message_id) o ON o.message_id = d.id
 WHERE d.channel = 'push' AND d.device_token IS NOT NULL
 GROUP BY d.device_token;
CREATE TABLE cmp AS
SELECT coalesce(a.token, m.token) AS token, coalesce(a.deliveries, 0) AS deliveries, coalesce(a.attempts, 0) AS attempts,
       coalesce(a.outcomes, 0) AS outcomes, coalesce(a.conn_lost, 0) AS conn_lost, coalesce(a.unsent, 0) AS unsent,
       coalesce(m.n, 0) AS received
  FROM acct a FULL JOIN mock_counts m ON m.token = a.token;
SQL

s() { q -c "$1"; }
tokens_total=$(s "SELECT count(*) FROM cmp")
tokens_equal=$(s "SELECT count(*) FROM cmp WHERE received = attempts")
tokens_dup=$(s "SELECT count(*) FROM cmp WHERE received > attempts")
tokens_short=$(s "SELECT count(*) FROM cmp WHERE received < attempts")
# fewer requests than attempts, by at most the attempts whose outcome was lost (crash,
# restart) plus those that ended in a connection-level failure
tokens_short_crash=$(s "SELECT count(*) FROM cmp WHERE received < attempts AND conn_lost = 0 AND received >= outcomes")
tokens_short_conn=$(s "SELECT count(*) FROM cmp WHERE received < attempts AND attempts = outcomes AND received >= outcomes - conn_lost")
tokens_short_both=$(s "SELECT count(*) FROM cmp WHERE received < attempts AND attempts > outcomes AND conn_lost > 0 AND received >= outcomes - conn_lost")
tokens_unexplained=$(s "SELECT count(*) FROM cmp WHERE received < outcomes - conn_lost")
# an attempt said never to have reached the provider whole, yet the mock counted it
tokens_false_unsent=$(s "SELECT count(*) FROM cmp WHERE received > attempts - unsent")
sum_unsent=$(s "SELECT sum(unsent) FROM cmp")
unsent_kinds=$(s "SELECT coalesce(string_agg(n || ' × ' || k, '; '), 'none') FROM (SELECT regexp_replace(detail, '^.*; (the request was [^;]*)\$', '\\1') k, count(*) n
                    FROM novu.execution_details WHERE detail ~ '$UNSENT' GROUP BY 1 ORDER BY 2 DESC) x")
sum_attempts=$(s "SELECT sum(attempts) FROM cmp")
sum_outcomes=$(s "SELECT sum(outcomes) FROM cmp")
sum_conn_lost=$(s "SELECT sum(conn_lost) FROM cmp")
sum_received=$(s "SELECT sum(received) FROM cmp")
sum_excess=$(s "SELECT coalesce(sum(received - attempts), 0) FROM cmp WHERE received > attempts")
sum_short=$(s "SELECT coalesce(sum(attempts - received), 0) FROM cmp WHERE received < attempts")
sum_short_crash=$(s "SELECT coalesce(sum(attempts - received), 0) FROM cmp WHERE received < attempts AND conn_lost = 0 AND received >= outcomes")
sum_short_conn=$(s "SELECT coalesce(sum(attempts - received), 0) FROM cmp WHERE received < attempts AND attempts = outcomes AND received >= outcomes - conn_lost")
sum_lost_outcome=$(s "SELECT sum(attempts - outcomes) FROM cmp")
# tokens with an attempt whose outcome was lost at the crash or restart: sent again after recovery
crash_tokens=$(s "SELECT count(*) FROM cmp WHERE attempts > outcomes")
crash_equal=$(s "SELECT count(*) FROM cmp WHERE attempts > outcomes AND received = attempts")
crash_short=$(s "SELECT count(*) FROM cmp WHERE attempts > outcomes AND received < attempts")
pending=$(s "SELECT count(*) FROM novu.deliveries WHERE status IN ('pending', 'sending')")
events_open=$(s "SELECT count(*) FROM novu.events WHERE status IN ('pending', 'processing')")
orders=$(s "SELECT count(*) FROM app_orders")
order_events=$(s "SELECT count(*) FROM novu.events WHERE transaction_id LIKE 'ord-%'")
orders_without_event=$(s "SELECT count(*) FROM app_orders o WHERE NOT EXISTS (SELECT FROM novu.events e WHERE e.transaction_id = 'ord-' || o.id)")
orders_bad_fanout=$(s "SELECT count(*) FROM (SELECT o.id FROM app_orders o LEFT JOIN novu.deliveries d ON d.transaction_id = 'ord-' || o.id
                                             GROUP BY o.id HAVING count(d.id) <> 1
                                                OR bool_or(d.provider_id IS DISTINCT FROM o.provider)) x")
bc_deliveries=$(s "SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'mixed-broadcast'")
bc_distinct=$(s "SELECT count(DISTINCT device_token) FROM novu.deliveries WHERE transaction_id = 'mixed-broadcast'")
statuses=$(s "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) n FROM novu.deliveries GROUP BY status) x")
failed_reasons=$(s "SELECT coalesce(string_agg(n || ' × ' || left(last_error, 120), '; '), 'none') FROM (SELECT last_error, count(*) n FROM novu.deliveries WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 5) x")
attempt_hist=$(s "SELECT string_agg(attempts || ': ' || n, ', ' ORDER BY attempts) FROM (SELECT attempts, count(*) n FROM novu.deliveries GROUP BY 1) x")
deliveries_total=$(s "SELECT count(*) FROM novu.deliveries")
retry_reasons=$(s "SELECT coalesce(string_agg(n || ' × ' || r, '; '), 'none') FROM (SELECT regexp_replace(regexp_replace(detail, '^Retry [0-9]+ scheduled in [0-9.]+ s: ', ''), '[0-9]+', 'N', 'g') r, count(*) n FROM novu.execution_details WHERE status = 'Pending' GROUP BY 1 ORDER BY 2 DESC LIMIT 8) x")
examples=$(s "SELECT coalesce(string_agg(token || ' received ' || received || ', attempts ' || attempts || ', recorded ' || outcomes
                                        || ' (' || conn_lost || ' connection lost)', '; '), 'none')
                FROM (SELECT * FROM cmp WHERE received > attempts OR received < outcomes - conn_lost OR received > attempts - unsent
                       ORDER BY token LIMIT 10) x")
crashes=$(grep -c "terminated by signal 9" "$CLUSTER_DIR/server.log" || true)
novu_warnings=$(grep -E "WARNING|ERROR|FATAL" "$CLUSTER_DIR/server.log" | grep -v "terminating connection because of crash\|the database system is\|connection to client lost" | sed -E 's/^[0-9-]+ [0-9:.]+ [A-Z]+ \[[0-9]+\] //' | sort | uniq -c | sort -rn | head -8 || true)
mjq() { jq_ "$1" < "$tmp/stats.json"; }

# the timeline: per 10 s since the start
timeline=$(q <<SQL
WITH b AS (SELECT g AS t FROM generate_series(0, $t_end - $t0, 10) g),
orders AS (SELECT (floor(extract(epoch FROM created_at)) - $t0)::bigint / 10 * 10 AS t, count(*) n FROM app_orders GROUP BY 1),
fin AS (SELECT (floor(extract(epoch FROM coalesce(sent_at, updated_at))) - $t0)::bigint / 10 * 10 AS t, count(*) n
          FROM novu.deliveries WHERE status IN ('sent', 'failed') GROUP BY 1),
recv AS (SELECT (sec - $t0) / 10 * 10 AS t, sum(n) n FROM mock_timeline GROUP BY 1),
mon AS (SELECT DISTINCT ON ((sec - $t0) / 10 * 10) (sec - $t0) / 10 * 10 AS t, backlog, outbox FROM monitor ORDER BY (sec - $t0) / 10 * 10, sec),
mk AS (SELECT (sec - $t0) / 10 * 10 AS t, string_agg(what, '; ' ORDER BY sec) w FROM marks GROUP BY 1)
SELECT format('| %s | %s | %s | %s | %s | %s | %s |', b.t, coalesce(orders.n, 0), coalesce(fin.n, 0), coalesce(recv.n, 0),
              coalesce(mon.backlog, '-'), coalesce(mon.outbox, '-'), coalesce(mk.w, ''))
  FROM b LEFT JOIN orders USING (t) LEFT JOIN fin USING (t) LEFT JOIN recv USING (t) LEFT JOIN mon USING (t) LEFT JOIN mk USING (t)
 ORDER BY b.t
SQL
)
# 10 s windows with a backlog at their start and no delivery finished in them (a stall)
stalls=$(q -c "WITH fin AS (SELECT (floor(extract(epoch FROM coalesce(sent_at, updated_at))) - $t0)::bigint / 10 * 10 AS t, count(*) n
                              FROM novu.deliveries WHERE status IN ('sent', 'failed') GROUP BY 1)
               SELECT coalesce(string_agg(((m.sec - $t0) / 10 * 10)::text || ' s', ', '), 'none')
                 FROM monitor m LEFT JOIN fin ON fin.t = (m.sec - $t0) / 10 * 10
                WHERE m.backlog ~ '^[0-9]+$' AND m.backlog::bigint > 0 AND coalesce(fin.n, 0) = 0")

balanced=1
[ "$tokens_dup" = 0 ] && [ "$tokens_unexplained" = 0 ] && [ "$tokens_false_unsent" = 0 ] && [ "$pending" = 0 ] && [ "$events_open" = 0 ] \
    && [ "$orders" = "$order_events" ] && [ "$orders_without_event" = 0 ] && [ "$orders_bad_fanout" = 0 ] \
    && [ "$bc_deliveries" = "$bc_devices" ] && [ "$bc_distinct" = "$bc_devices" ] \
    || balanced=0
verdict=$([ "$balanced" = 1 ] && echo "BALANCED" || echo "NOT BALANCED")

# Not balanced: keep the history of every token that does not add up (its
# deliveries, their activity, the mock's count) before the cluster goes, so
# that the cause can be found afterwards (a run takes 20 minutes to repeat and
# the imbalance may not come back)
evidence=""
if [ "$balanced" = 0 ]; then
    evidence="${MIXED_EVIDENCE_DIR:-/tmp}/novu-mixed-imbalance.$(date -u +%Y%m%dT%H%M%SZ).txt"
    q -c "\\copy (SELECT c.token, c.received, c.attempts, c.outcomes, c.conn_lost, c.unsent, d.id, d.status, d.attempts AS d_attempts,
                         d.created_at, d.updated_at, d.sent_at, d.last_error, x.status AS detail_status, x.detail, x.created_at AS detail_at
                    FROM cmp c
                    JOIN novu.deliveries d ON d.device_token = c.token
                    LEFT JOIN novu.execution_details x ON x.message_id = d.id
                   WHERE c.received > c.attempts OR c.received < c.outcomes - c.conn_lost OR c.received > c.attempts - c.unsent
                   ORDER BY c.token, d.id, x.id) TO '$evidence' WITH (FORMAT csv, HEADER)" >/dev/null 2>&1 || evidence=""
fi
evidence_note=""
[ -n "$evidence" ] && evidence_note=" (every such token's deliveries and activity: $evidence)"

cat > "$RESULTS" <<EOF
## Mixed run ($SECONDS_ s)

test/bench/mixed.sh, $(date -u +%Y-%m-%dT%H:%MZ): its own cluster, every setting at its default except
novu.request_timeout $REQUEST_TIMEOUT (so the slow answers time out); fsync on.
App: pgbench -R $RATE (4 clients), each transaction inserts an order and calls novu.trigger (transactionId
ord-<id>) for a random subscriber of $NSUBS, on FCM, APNs or Expo at random. A broadcast (every device of
every subscriber) at $T_BROADCAST s, kill -9 of a delivery worker at $T_KILL s, pg_ctl restart at $T_RESTART s.
Faults (share of message requests, fastmock.js): $FAULTS.
Injected: $(mjq 'faults.rst') RST_STREAM, $(mjq 'faults.e5xx') 503 + Retry-After, $(mjq 'faults.slow') slow answers,
$(mjq 'faults.goaway') GOAWAY ($(mjq 'faults.refused') held streams refused above a last-stream-id, $(mjq 'faults.lateStreams') streams that crossed a GOAWAY, not counted), $(mjq 'faults.destroy') destroyed
connections; connections drained before a GOAWAY or destroy: $(mjq 'faults.drainedQuiet') quiet, $(mjq 'faults.drainedTimeout') at the hold limit
with $(mjq 'faults.incomplete') request bodies incomplete (not counted by the mock).

**Accounting: $verdict.**

| check | result |
|---|---|
| drained | $([ "$drained_ok" = 1 ] && echo "yes, nothing pending" || echo "NO: $pending messages pending or sending, $events_open outbox rows open after $DRAIN s") |
| orders committed (app table) / their trigger events / orders without event | $orders / $order_events / $orders_without_event (pgbench counted $pgbench_ok successful transactions in $pgbench_runs runs: a commit whose answer was lost at the crash or restart is in the table, not in pgbench's count; its clients lost $pgbench_aborted connections) |
| orders not fanned out to exactly one delivery of their provider | $orders_bad_fanout |
| broadcast deliveries / distinct devices / devices at broadcast time | $bc_deliveries / $bc_distinct / $bc_devices |
| deliveries by status | $statuses (of $deliveries_total) |
| failed, top reasons | $failed_reasons |
| deliveries by attempts | $attempt_hist |
| retries recorded, top reasons | $retry_reasons |
| device tokens compared | $tokens_total |
| tokens where the mock's count = recorded attempts | $tokens_equal |
| tokens with an attempt whose outcome was lost at the crash or restart (and were sent again) | $crash_tokens: the mock's count equals the attempts for $crash_equal (the lost request had gone out: request and resend both counted), is lower for $crash_short (claimed, never sent) |
| tokens with more requests than attempts (hidden duplicates) | $tokens_dup (excess requests: $sum_excess) |
| tokens with fewer requests than attempts | $tokens_short ($sum_short attempts the mock never received) |
| ... explained by attempts whose outcome was lost at the crash or restart (claimed, not sent) | $tokens_short_crash tokens, $sum_short_crash attempts ($sum_lost_outcome attempts in all have no recorded outcome) |
| ... explained by attempts that ended in a connection-level failure (never reached the mock) | $tokens_short_conn tokens, $sum_short_conn attempts ($sum_conn_lost such outcomes in all) |
| ... within both kinds together | $tokens_short_both tokens |
| tokens with a recorded outcome the mock never saw, not explained by a connection-level failure | $tokens_unexplained |
| attempts the extension says never reached the provider whole (of the connection-level failures) | $sum_unsent: $unsent_kinds |
| tokens the mock received more often than their attempts less those (a false "not sent") | $tokens_false_unsent |
| totals: requests received / attempts / attempts with a recorded outcome | $sum_received / $sum_attempts / $sum_outcomes |
| examples of imbalance | $examples$evidence_note |
| mock latency, trigger to receipt (retries included) | p50 $(mjq 'latency.p50_ms.toFixed(1)') ms, p99 $(mjq 'latency.p99_ms.toFixed(1)') ms, n = $(mjq 'latency.n') |
| backend crashes in the server log | $crashes |
| 10 s windows with a backlog and nothing finished (stalls) | $stalls |

How the counts are read: an attempt is counted when a message is claimed (novu.deliveries.attempts), before
its request is sent. A request the mock received whose answer was lost at the crash or restart is claimed
again after recovery: a second attempt and a second request, so equality holds. A message claimed but not
yet sent (or its request not completely written) when the worker died has an attempt the mock never saw;
such attempts have no recorded outcome (no Success / Pending / Failed activity row). An attempt that ended
in a connection-level failure ($CONN_LOST_TEXT) may not have reached the mock either: libcurl 7.88 keeps
starting requests on a connection after its GOAWAY, nghttp2 never sends them, curl wants to resend them on
a new connection and the extension refuses every resend, recording the attempt as "connection lost before
the answer". The extension also says when a request certainly never reached the provider whole: "the
request was not sent" (no connection or free stream came for it within novu.request_timeout), "refused unprocessed and not sent again" (a
stream refused by a GOAWAY or RST_STREAM(REFUSED_STREAM) whose resend waited for a connection past the
timeout: an APNs pool keeps one connection, and it closes only when its last stream ends), "not sent
whole" (its END_STREAM never left). novu.request_timeout runs from the send, so a request that waited
for a stream is not sent moments before its timeout (which, before 0c04ae2, left requests the provider
got and answered too late recorded as failed and sent again). The mock counts a request once its whole body came (a stream the
client reset before that, at its timeout, is not counted: counts.unfinished $(mjq 'counts.unfinished')).
So a token may show fewer requests than attempts by at most its attempts without an outcome
plus its connection-level failures; any other shortfall, or more requests than attempts (a resend the
extension did not count: a hidden duplicate), is a fault of the extension.

Server log, WARNING/ERROR/FATAL lines (count, text; crash-restart noise left out):
\`\`\`
${novu_warnings:-none}
\`\`\`

Throughput per 10 s (orders committed; deliveries finished, sent or failed, by their time; message requests
received by the mock, retries included; backlog = pending + sending and outbox rows open, sampled at the window's start):

| t (s) | orders | finished | mock received | backlog | outbox | events |
|---|---|---|---|---|---|---|
$timeline
EOF
log "mixed run results in $RESULTS"
cat "$RESULTS"
[ "$balanced" = 1 ]
