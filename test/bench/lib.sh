# test/bench/lib.sh: helpers shared by run.sh and mixed.sh (sourced after test/lib.sh).
#   bench_start_mock DIR PORT   certificates in DIR/certs, the fast mock on PORT (https)
#                               and PORT+1 (plain); sets mock, mock_pid, mock_desc.
#                               BENCH_MOCK=c (default): test/bench/fastmock.c, compiled
#                               into DIR (about 20 us of CPU per request in a P2 burst);
#                               BENCH_MOCK=node: test/bench/fastmock.js (170-200 us per
#                               request; the only one injecting faults: mixed.sh uses it)
#   bench_setup                 CREATE EXTENSION, integrations on the mock, workflows
#                               bench-fcm, bench-apns, bench-expo, bench-web-push and
#                               bench-one-signal (one provider each; OneSignal's content is
#                               the same for everyone, as a campaign's) and bench-all
#                               (every push device of the subscriber)
#   load_subscribers FROM TO [PROVIDERS]   sub-FROM..sub-TO, one token per provider
#   workers N|default           set novu.workers (ALTER SYSTEM) and wait for that many
#   drained [SLEEP]             wait until nothing is pending, processing or sending
#   hog_start / hog_stop        the CPU hog: one busy loop per core (see hog_start)

q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }
# The mock's control endpoints over HTTP/1.1: the curl 7.88 command line stalls part way
# through an HTTP/2 answer of many megabytes (/_tokens after 1M messages: 28 MB); Node's
# http2 client reads the same answer from the same mock whole.
ctl() { curl -s --http1.1 --cacert "$BENCH_CERTS/ca.pem" "$mock/$1" -X "${2:-GET}" ${3:+-d "$3"}; }
jq_() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const o=JSON.parse(s);console.log(eval("o."+process.argv[1]))})' "$1"; }

bench_start_mock() {
    local dir=$1 port=$2
    BENCH_CERTS="$dir/certs"
    sh test/certs/make-certs.sh "$BENCH_CERTS" "$port" >/dev/null
    chmod -R a+rX "$BENCH_CERTS"
    if [ "${BENCH_MOCK:-c}" = node ]; then
        node test/bench/fastmock.js --certs "$BENCH_CERTS" --port "$port" --plain-port $((port + 1)) > "$dir/mock.out" 2>&1 &
        mock_pid=$!
        mock_desc="test/bench/fastmock.js, Node http2"
    else
        # shellcheck disable=SC2086
        cc -O2 ${NOVU_CFLAGS:-} -o "$dir/fastmock" test/bench/fastmock.c -lnghttp2 -lssl -lcrypto -lz ||
            { log "the C fast mock did not build (libnghttp2-dev, libssl-dev, zlib1g-dev; or BENCH_MOCK=node)"; exit 1; }
        "$dir/fastmock" --certs "$BENCH_CERTS" --port "$port" --plain-port $((port + 1)) > "$dir/mock.out" 2>&1 &
        mock_pid=$!
        mock_desc="test/bench/fastmock.c: C, epoll, OpenSSL, libnghttp2"
    fi
    for _ in $(seq 100); do [ -s "$dir/mock.out" ] && break; sleep 0.1; done
    grep -q ready "$dir/mock.out" || { cat "$dir/mock.out" >&2; log "the fast mock did not start"; exit 1; }
    mock="https://127.0.0.1:$port"
}

bench_setup() {
    local vapid
    vapid=$(node -e "const e=require('crypto').createECDH('prime256v1');e.generateKeys();const k=e.getPrivateKey();console.log(e.getPublicKey('base64url')+' '+Buffer.concat([Buffer.alloc(32-k.length),k]).toString('base64url'))")
    q -c "CREATE EXTENSION novu"
    q -v sa="$(cat "$BENCH_CERTS/fcm-service-account.json")" -v p8="$(cat "$BENCH_CERTS/apns-key.p8")" -v mock="$mock" \
      -v vapid_pub="${vapid% *}" -v vapid_priv="${vapid#* }" >/dev/null <<'SQL'
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount',
    (:'sa'::jsonb) || jsonb_build_object('token_uri', :'mock' || '/token'), 'endpoint', :'mock'), 'fcm-bench');
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', :'p8', 'apiKey', 'ABC123DEFG',
    'projectName', 'TEAM123456', 'applicationId', 'com.novu.bench', 'endpoint', :'mock'), 'apns-bench');
SELECT novu.create_integration('expo', jsonb_build_object('endpoint', :'mock'), 'expo-bench');
SELECT novu.create_integration('web-push', jsonb_build_object('vapidPublicKey', :'vapid_pub', 'vapidPrivateKey', :'vapid_priv',
    'subject', 'mailto:bench@example.com'), 'web-push-bench');
SELECT novu.create_integration('one-signal', jsonb_build_object('applicationId', '0b5e1a2c-3d4f-4a6b-8c7d-9e0f1a2b3c4d',
    'apiKey', 'os_v2_app_novubench', 'endpoint', :'mock'), 'one-signal-bench');
SELECT novu.create_workflow('bench-' || p, jsonb_build_array(jsonb_build_object('type', 'push',
    'title', 'Order {{payload.orderId}}', 'content', 'Hi {{subscriber.firstName}}', 'providers', jsonb_build_array(p))))
  FROM unnest(ARRAY['fcm', 'apns', 'expo', 'web-push']) p;
SELECT novu.create_workflow('bench-one-signal', '[{"type": "push", "title": "Flash sale",
    "content": "Everything is 20% off today", "providers": ["one-signal"]}]');
SELECT novu.create_workflow('bench-all', jsonb_build_array(jsonb_build_object('type', 'push',
    'title', 'News {{payload.orderId}}', 'content', 'Hi {{subscriber.firstName}}')));
CREATE TABLE bench_plain (id bigserial PRIMARY KEY, payload jsonb NOT NULL, recipient jsonb);
SQL
}

# bulk-load subscribers sub-FROM..sub-TO with one token per provider given (set-based, not the API)
load_subscribers() {
    local from=$1 to=$2 providers=${3:-fcm,apns,expo}
    # a browser subscription per subscriber: its own endpoint on the mock; the keys (a
    # P-256 point and an auth secret, RFC 8291's) may be shared: each message still gets
    # its own ECDH key and salt
    q <<SQL
INSERT INTO novu.subscribers (subscriber_id, first_name)
SELECT 'sub-' || i, 'User' || i FROM generate_series($from, $to) i ON CONFLICT DO NOTHING;
INSERT INTO novu.subscriber_channels (subscriber_id, integration_id)
SELECT 'sub-' || i, ig.id FROM generate_series($from, $to) i, novu.integrations ig
 WHERE ig.provider_id = ANY (string_to_array('$providers', ',')) ON CONFLICT DO NOTHING;
INSERT INTO novu.device_tokens (integration_id, device_token, subscriber_id)
SELECT ig.id, CASE ig.provider_id WHEN 'apns' THEN md5(i::text) || md5(ig.provider_id)
                                  WHEN 'expo' THEN 'ExponentPushToken[' || i || ']'
                                  WHEN 'web-push' THEN jsonb_build_object('endpoint', '$mock/push/' || i, 'keys', jsonb_build_object(
                                      'p256dh', 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4',
                                      'auth', 'BTBZMqHH6r4Tts7J_aSIgg'))::text
                                  WHEN 'one-signal' THEN '00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0')
                                  ELSE 'fcm-' || i END, 'sub-' || i
  FROM generate_series($from, $to) i, novu.integrations ig
 WHERE ig.provider_id = ANY (string_to_array('$providers', ',')) ON CONFLICT DO NOTHING;
SQL
}

# stop/start delivery (the launcher follows novu.workers on reload); "default" resets it
workers() {
    local want=$1
    if [ "$want" = default ]; then
        q -c "ALTER SYSTEM RESET novu.workers" -c "SELECT pg_reload_conf()" >/dev/null
        sleep 0.2
        want=$(q -c "SHOW novu.workers")
    else
        q -c "ALTER SYSTEM SET novu.workers = $want" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    for _ in $(seq 100); do
        [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'")" = "$want" ] && return
        sleep 0.1
    done
    log "WARNING: novu.workers = $want did not take effect in 10 s"
}

# wait until every outbox row is fanned out and every message is final (partial indexes: cheap)
drained() {
    # One psql session answers every poll (a psql started per poll cost a tenth of a
    # core, taken from the run being timed), and each test reads its partial index
    # (a status IN (...) test scanned the whole table, 17 ms a poll).
    if [ -z "${DRAIN_POLL_PID:-}" ] || ! kill -0 "$DRAIN_POLL_PID" 2>/dev/null; then
        coproc DRAIN_POLL { psql -XAtq 2>&1; }
    fi
    local answer
    while :; do
        echo "SELECT NOT EXISTS (SELECT FROM novu.events WHERE status IN ('pending', 'processing'))
                     AND NOT EXISTS (SELECT FROM novu.deliveries WHERE status = 'pending')
                     AND NOT EXISTS (SELECT FROM novu.deliveries WHERE status = 'sending');" >&"${DRAIN_POLL[1]}"
        read -r answer <&"${DRAIN_POLL[0]}" || { log "drained: the polling session ended"; return 1; }
        [ "$answer" = t ] && return 0
        sleep "${1:-0.1}"
    done
}

# The CPU hog: one busy loop per core, each `nice -n 0 bash -c 'while :; do :; done'`
# (same priority as PostgreSQL and the mock), started before a measurement and
# killed (by pid) after it.
HOG_CMD="nice -n 0 bash -c 'while :; do :; done'"
hog_pids=""
hog_start() {
    local i
    for i in $(seq "$(nproc)"); do
        nice -n 0 bash -c 'while :; do :; done' &
        hog_pids="$hog_pids $!"
    done
    sleep 1
}
hog_stop() {
    local p
    for p in $hog_pids; do kill "$p" 2>/dev/null || true; done
    for p in $hog_pids; do wait "$p" 2>/dev/null || true; done
    hog_pids=""
}
# What the machine itself gives, beside the hog or not: one SCHED_FIFO thread per core
# (cyclictest; it preempts every process of this machine, the hog included) sleeps 1 ms
# at a time for SECONDS and counts how late it wakes.  Ten milliseconds late or more is
# time its core did not run at all (the hypervisor gave the vCPU to someone else): no
# process here can be faster than that.  -> "late_10ms late_50ms max_ms wakeups"
# ("- - - 0" without cyclictest or the right to use SCHED_FIFO)
machine_stalls() {
    local f
    f=$(mktemp)
    if ! $SUDO cyclictest -q -m -t"$(nproc)" -a "0-$(($(nproc) - 1))" -p 80 -i 1000 -D "$1" -h 120000 > "$f" 2>/dev/null; then
        rm -f "$f"; echo "- - - 0"; return
    fi
    # histogram rows: microseconds, then one count per thread; past 120 ms: the overflows
    awk '/^[0-9]/ && NF > 2 { b = $1 + 0; for (c = 2; c <= NF; c++) { v = $c + 0; n += v; if (b >= 10000) l10 += v; if (b >= 50000) l50 += v } }
         /^# Histogram Overflows:/ { for (c = 4; c <= NF; c++) { v = $c + 0; n += v; l10 += v; l50 += v } }
         /^# Max Latencies:/ { for (c = 4; c <= NF; c++) if ($c + 0 > mx) mx = $c + 0 }
         END { printf "%d %d %.1f %d\n", l10, l50, mx / 1000, n }' "$f"
    rm -f "$f"
}
