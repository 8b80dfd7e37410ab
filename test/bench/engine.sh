#!/usr/bin/env bash
# test/bench/engine.sh: the workflow engine at scale (issue 12).
#   bash test/bench/engine.sh [SCALE]     SCALE 1 (default) = the sizes below; 0.05 for a quick run
#
# On a throwaway cluster (fsync on; for 10M rows, the PostgreSQL settings run.sh measures P4-P6 with:
# shared_buffers 2GB; novu.workers 2 and novu.batch_size 500, their defaults) and the fast mock
# (bench_start_mock: test/bench/fastmock.c), with 1M x SCALE subscribers, one Expo device each
# (Expo: the mock's cheapest push provider, up to 100 messages a request):
#   1. topic fan-out: a topic of all of them (members filled set-based), one
#      novu.trigger of bench-expo to the topic; deliveries/s from the commit to
#      the last recorded 'sent', the delivery workers' peak RssAnon (every
#      0.2 s from /proc/<pid>/status), and that each subscriber got exactly one
#      message (the queue's rows and the mock's count per device token)
#   2. delays due at the same second: one trigger to the same topic of a
#      workflow [delay (delayPath sendAt, a whole second some seconds ahead),
#      push (Expo)]: 1M x SCALE waiting steps with one due time; from the due
#      time to the first and to the last message sent, and the rate
#   4. digest: 100k x SCALE triggers (batched, 5,000 a transaction, the workers
#      running) of [digest (a window of some seconds, digestKey postId), in_app
#      "{{step.total_count}}:{% for e in step.events %}{{e.n}},{% endfor %}"]
#      over 10k x SCALE keys (1k x SCALE subscribers, 10 postIds each): trigger
#      rate, from each window's end to its message, the number of messages
#      (= keys) and that every event is listed once, in its key's message
#   3. claim cost, run last with the workers stopped: the claim of
#      novu._continue (its SELECT ... FOR UPDATE SKIP LOCKED of batch_size due
#      rows, pgbench -M prepared as the worker's plpgsql runs it, in a rolled
#      back transaction) with only that batch waiting, then with 10M x SCALE
#      more step rows waiting (due later; inserted set-based, shaped as real
#      delays); median of ENGINE_CLAIM_TX each, and the ratio
# Prints a markdown section.  Never part of the tests.
#   ENGINE_ONLY=topic,delay,digest,claim   the parts to run (default all)
#   ENGINE_NO_BUILD=1                      do not build and install first
#   ENGINE_MOCK_PORT=18610                 the fast mock's port (and +1)
#   ENGINE_BATCH=500                       novu.batch_size (default: its default, 500)
#   ENGINE_DELAY_LEAD / ENGINE_DIGEST_WINDOW   seconds (default: from the sizes)
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
. test/bench/lib.sh

SCALE=${1:-${ENGINE_BENCH_SCALE:-1}}
ONLY=${ENGINE_ONLY:-}
CLAIM_TX=${ENGINE_CLAIM_TX:-300}
BATCH=${ENGINE_BATCH:-500}
n() { awk -v s="$SCALE" -v v="$1" 'BEGIN { x = int(v * s); if (x < 1) x = 1; print x }'; }
N_SUBS=$(n 1000000)
N_WAIT=$(n 10000000)
N_EVENTS=$(n 100000)
N_KEYS=$(n 10000)
N_DSUBS=$(( N_KEYS >= 10 ? N_KEYS / 10 : 1 ))
N_KEYS=$(( N_DSUBS * (N_KEYS >= 10 ? 10 : N_KEYS) ))
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# the delays' due time must come after their fan-out (staged: 3,200/s at scale
# 0.05, 2,900/s at scale 1 on 2 busy cores) and the digest window after the last trigger's fan-out
DELAY_LEAD=${ENGINE_DELAY_LEAD:-$(awk -v n="$N_SUBS" 'BEGIN { printf "%d", 20 + n / 2400 }')}
DIGEST_WINDOW=${ENGINE_DIGEST_WINDOW:-$(awk -v n="$N_EVENTS" 'BEGIN { printf "%d", 15 + n / 2000 }')}
SETTINGS="fsync = on, shared_buffers = '2GB', max_wal_size = '20GB', checkpoint_timeout = '30min', max_worker_processes = 16, novu.workers = 2, novu.batch_size = $BATCH"

[ -n "${ENGINE_NO_BUILD:-}" ] || build_and_install
tmp=$(mktemp -d /tmp/novu-engine-bench.XXXXXX)
chmod 755 "$tmp"
bench_start_mock "$tmp" "${ENGINE_MOCK_PORT:-18610}"
conf=()
IFS=',' read -ra parts <<< "$SETTINGS"
for s in "${parts[@]}"; do conf+=("$(echo "$s" | sed 's/^ *//')"); done
start_cluster "$tmp/pg" "${conf[@]}" \
    "novu.database_name = 'postgres'" \
    "novu.ca_file = '$BENCH_CERTS/ca.pem'" \
    "novu.expo_receipt_delay = '1h'"
trap 'stop_cluster; kill $mock_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
bench_setup
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), PostgreSQL $(pg_config --version | awk '{print $2}')"
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)
declare -A R L

# One psql session answers every poll (a psql per poll costs CPU the run needs).
coproc POLL { psql -XAtq 2>&1; }
ask() {  # ask SQL: the one-line answer in ANS
    printf '%s;\n' "$1" >&"${POLL[1]}"
    read -r ANS <&"${POLL[0]}" || { log "the polling session ended"; exit 1; }
}
worker_pids() { WPIDS=$(q -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'"); }
PEAK=0
sample_rss() {  # the largest RssAnon (kB) of the delivery workers so far, in PEAK
    local p k v _
    for p in $WPIDS; do
        while read -r k v _; do
            if [ "$k" = RssAnon: ]; then [ "$v" -gt "$PEAK" ] && PEAK=$v; break; fi
        done < /proc/"$p"/status 2>/dev/null || true
    done
}
wait_until() {  # wait_until SQL TIMEOUT: poll SQL (until 't') and sample RssAnon every 0.2 s
    local deadline
    deadline=$(awk -v t="$(now)" -v d="$2" 'BEGIN { printf "%.3f", t + d }')
    while :; do
        sample_rss
        ask "$1"
        [ "$ANS" = t ] && return 0
        if awk -v t="$(now)" -v d="$deadline" 'BEGIN { exit !(t > d) }'; then
            log "WARNING: timed out after $2 s waiting for: $1"
            return 1
        fi
        sleep 0.2
    done
}
# messages sent per second of a transaction from FROM (epoch) to its last:
# "median min max seconds" (min: of the whole seconds, the first and last left out)
per_second() {  # per_second TRANSACTION FROM
    q -c "WITH d AS (SELECT floor(extract(epoch FROM sent_at))::bigint AS s, count(*) AS c FROM novu.deliveries
                      WHERE transaction_id = '$1' AND status = 'sent' GROUP BY 1),
               g AS (SELECT g.s, COALESCE(d.c, 0) AS c FROM generate_series(floor($2)::bigint, (SELECT max(s) FROM d)) g(s)
                      LEFT JOIN d ON d.s = g.s)
          SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY c), COALESCE(min(c) FILTER (WHERE s > floor($2) AND s < (SELECT max(s) FROM d)), 0),
                 max(c), count(*) FROM g" | tr '|' ' '
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
fmt() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
quiet_sql="NOT EXISTS (SELECT FROM novu.events WHERE status IN ('pending', 'processing'))
           AND NOT EXISTS (SELECT FROM novu.deliveries WHERE status = 'pending')
           AND NOT EXISTS (SELECT FROM novu.deliveries WHERE status = 'sending')"
# the mock's count per device token: "tokens seen, tokens seen more than once, messages"
mock_tokens() { ctl _tokens | awk -F'\t' 'NF == 2 { n++; m += $2; if ($2 != 1) d++ } END { printf "%d %d %d", n, d, m }'; }

log "engine bench: scale $SCALE; $N_SUBS subscribers (Expo), topic of $N_SUBS, $N_WAIT waiting rows, $N_EVENTS digest events over $N_KEYS keys"
t0=$(now)
load_subscribers 1 "$N_SUBS" expo
q <<SQL >/dev/null
SELECT novu.create_topic('eng-all', 'Everyone');
INSERT INTO novu.topic_subscribers (topic_id, subscriber_id)
SELECT (SELECT id FROM novu.topics WHERE key = 'eng-all'), 'sub-' || i FROM generate_series(1, $N_SUBS) i;
SELECT novu.create_workflow('eng-scheduled', '[{"type": "delay", "delayPath": "sendAt"},
    {"type": "push", "title": "Reminder", "content": "Hi {{subscriber.firstName}}", "providers": ["expo"]}]');
SELECT novu.create_workflow('eng-digest', '[{"type": "digest", "amount": $DIGEST_WINDOW, "unit": "seconds", "digestKey": "postId"},
    {"type": "in_app", "content": "{{step.total_count}}:{% for e in step.events %}{{e.n}},{% endfor %}"}]');
SQL
q -c "VACUUM ANALYZE"
members=$(q -c "SELECT (novu.topic_subscribers('eng-all', 0, 1) ->> 'totalCount')")
R[setup]=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
log "setup: $N_SUBS subscribers, topic of $members members, in ${R[setup]} s"

# --- 1. topic fan-out
if want topic; then
    L[topic]=$(load)
    worker_pids
    PEAK=0; sample_rss; rss0=$PEAK
    ctl _reset POST >/dev/null
    q -c "SELECT novu.trigger('bench-expo', '[{\"type\": \"Topic\", \"topicKey\": \"eng-all\"}]', '{\"orderId\": 1}', '{}', 'eng-topic')" >/dev/null
    tc=$(now)
    wait_until "SELECT (SELECT status = 'processed' FROM novu.events WHERE transaction_id = 'eng-topic') AND $quiet_sql" 3600 || true
    IFS='|' read -r rows subs sent last <<< "$(q -c "SELECT count(*), count(DISTINCT subscriber_id), count(*) FILTER (WHERE status = 'sent'),
        extract(epoch FROM max(sent_at)) FROM novu.deliveries WHERE transaction_id = 'eng-topic'")"
    sleep 0.5
    read -r mt md mm <<< "$(mock_tokens)"
    reqs=$(ctl _stats | jq_ 'counts.expo')
    secs=$(elapsed "$tc" "$last")
    R[topic]="$(rate "$sent" "$secs") deliveries/s ($sent in $(fmt "$secs") s)"
    read -r p50 pmin pmax pn <<< "$(per_second eng-topic "$tc")"
    R[topic]="${R[topic]}; sent per second: median $p50, min $pmin, max $pmax (over $pn s)"
    R[topic_rss]="$(mb "$PEAK") (at the start $(mb "$rss0"))"
    R[topic_once]="queue: $rows messages, $subs distinct subscribers, $sent sent; mock: $mt tokens, $md of them more than once, $mm messages in $reqs requests"
    ok=no; [ "$rows" = "$N_SUBS" ] && [ "$subs" = "$N_SUBS" ] && [ "$sent" = "$N_SUBS" ] && [ "$mt" = "$N_SUBS" ] && [ "$md" = 0 ] && [ "$mm" = "$N_SUBS" ] && ok=yes
    R[topic_ok]=$ok
    L[topic]="${L[topic]} → $(load)"
    log "1. topic fan-out: ${R[topic]}; peak RssAnon ${R[topic_rss]}; ${R[topic_once]}; exactly once: $ok"
fi

# --- 2. delays due at the same second
if want delay; then
    L[delay]=$(load)
    worker_pids
    PEAK=0; sample_rss; rss0=$PEAK
    ctl _reset POST >/dev/null
    due=$(( $(date +%s) + 1 + DELAY_LEAD ))
    due_iso=$(date -u -d "@$due" +%Y-%m-%dT%H:%M:%SZ)
    q -c "SELECT novu.trigger('eng-scheduled', '[{\"type\": \"Topic\", \"topicKey\": \"eng-all\"}]', '{\"sendAt\": \"$due_iso\"}', '{}', 'eng-scheduled')" >/dev/null
    tc=$(now)
    wait_until "SELECT (SELECT status = 'processed' FROM novu.events WHERE transaction_id = 'eng-scheduled')" 3600 || true
    tf=$(now)
    waiting=$(q -c "SELECT count(*) FROM novu.step_runs WHERE transaction_id = 'eng-scheduled' AND status = 'waiting'")
    same=$(q -c "SELECT count(DISTINCT due_at) FROM novu.step_runs WHERE transaction_id = 'eng-scheduled'")
    fan_s=$(elapsed "$tc" "$tf")
    R[delay_fanout]="$waiting waiting steps written in $(fmt "$fan_s") s ($(rate "$waiting" "$fan_s")/s), $same distinct due time(s)"
    if awk -v t="$tf" -v d="$due" 'BEGIN { exit !(t >= d) }'; then
        R[delay_fanout]="${R[delay_fanout]}; the fan-out ended after the due time (ENGINE_DELAY_LEAD too short): the figures below are not valid"
    fi
    log "2. fan-out of the delayed notifications: ${R[delay_fanout]}; due at $due_iso"
    wait_until "SELECT now() > to_timestamp($due) AND NOT EXISTS (SELECT FROM novu.step_runs WHERE status = 'waiting') AND $quiet_sql" 3600 || true
    IFS='|' read -r rows subs sent first last <<< "$(q -c "SELECT count(*), count(DISTINCT subscriber_id), count(*) FILTER (WHERE status = 'sent'),
        extract(epoch FROM min(sent_at)), extract(epoch FROM max(sent_at)) FROM novu.deliveries WHERE transaction_id = 'eng-scheduled'")"
    sleep 0.5
    read -r mt md mm <<< "$(mock_tokens)"
    R[delay_first]="$(fmt "$(elapsed "$due" "$first")") s"
    R[delay_last]="$(fmt "$(elapsed "$due" "$last")") s"
    R[delay_rate]="$(rate "$sent" "$(elapsed "$due" "$last")") deliveries/s"
    read -r p50 pmin pmax pn <<< "$(per_second eng-scheduled "$due")"
    R[delay_rate]="${R[delay_rate]}; sent per second: median $p50, min $pmin, max $pmax (over $pn s)"
    R[delay_rss]="$(mb "$PEAK") (at the start $(mb "$rss0"))"
    R[delay_once]="queue: $rows messages, $subs distinct subscribers, $sent sent; mock: $mt tokens, $md more than once, $mm messages"
    L[delay]="${L[delay]} → $(load)"
    log "2. delays: first ${R[delay_first]}, last ${R[delay_last]} after the due time, ${R[delay_rate]}; peak RssAnon ${R[delay_rss]}; ${R[delay_once]}"
fi

# --- 4. digest of N_EVENTS events over N_KEYS keys
if want digest; then
    L[digest]=$(load)
    worker_pids
    PEAK=0; sample_rss
    # event i: key k = i mod N_KEYS; subscriber sub-(k mod N_DSUBS + 1), postId k div N_DSUBS
    : > "$tmp/digest.sql"
    for a in $(seq 1 5000 "$N_EVENTS"); do
        b=$(( a + 4999 )); [ "$b" -gt "$N_EVENTS" ] && b=$N_EVENTS
        echo "SELECT count(novu.trigger('eng-digest', to_jsonb('sub-' || (i % $N_KEYS % $N_DSUBS + 1)),
              jsonb_build_object('postId', i % $N_KEYS / $N_DSUBS, 'n', i), '{}', 'dg-' || i)) FROM generate_series($a, $b) i;" >> "$tmp/digest.sql"
    done
    t0=$(now)
    q -f "$tmp/digest.sql" >/dev/null
    t1=$(now)
    R[digest_rate]="$(rate "$N_EVENTS" "$(elapsed "$t0" "$t1")") triggers/s ($N_EVENTS in $(fmt "$(elapsed "$t0" "$t1")") s, the workers fanning out meanwhile)"
    log "4. digest: ${R[digest_rate]}"
    wait_until "SELECT NOT EXISTS (SELECT FROM novu.step_runs WHERE status = 'waiting') AND $quiet_sql" 3600 || true
    IFS='|' read -r windows msgs total listed distinct misplaced short <<< "$(q <<SQL
WITH m AS (
    SELECT i.subscriber_id, (i.payload ->> 'postId')::int AS post,
           split_part(i.content, ':', 1)::int AS total,
           string_to_array(rtrim(split_part(i.content, ':', 2), ','), ',')::int[] AS ns
      FROM novu.in_app_messages i WHERE i.workflow_id = 'eng-digest')
SELECT (SELECT count(*) FROM novu.step_runs WHERE workflow_id = 'eng-digest' AND kind = 'digest'),
       (SELECT count(*) FROM m), (SELECT sum(total) FROM m),
       (SELECT count(*) FROM m, unnest(m.ns) n),
       (SELECT count(DISTINCT n) FROM m, unnest(m.ns) n),
       -- an event listed in another key's message
       (SELECT count(*) FROM m, unnest(m.ns) n
         WHERE n % $N_KEYS <> m.post * $N_DSUBS + substr(m.subscriber_id, 5)::int - 1),
       -- a message listing fewer events than its total_count
       (SELECT count(*) FROM m WHERE cardinality(m.ns) <> m.total)
SQL
)"
    IFS='|' read -r joined margin <<< "$(q -c "SELECT extract(epoch FROM max(m.created_at)), round(extract(epoch FROM min(r.due_at) - max(m.created_at))::numeric, 2)
      FROM novu.step_runs r JOIN novu.digest_events m ON m.digest_id = r.id WHERE r.workflow_id = 'eng-digest'")"
    R[digest_fanout]="all $N_EVENTS in their windows $(fmt "$(elapsed "$t0" "$joined")") s after the first trigger ($(rate "$N_EVENTS" "$(elapsed "$t0" "$joined")")/s), $margin s before the first window ended"
    IFS='|' read -r lag50 lagmax lastlag spread crate <<< "$(q -c "SELECT round(extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY d.sent_at - r.due_at))::numeric, 2),
           round(extract(epoch FROM max(d.sent_at - r.due_at))::numeric, 2),
           round(extract(epoch FROM max(d.sent_at) - max(r.due_at))::numeric, 2),
           round(extract(epoch FROM max(r.due_at) - min(r.due_at))::numeric, 2),
           round(count(*) / extract(epoch FROM max(d.sent_at) - min(r.due_at)))
      FROM novu.step_runs r JOIN novu.deliveries d ON d.digest_id = r.id
     WHERE r.workflow_id = 'eng-digest' AND r.kind = 'digest'")"
    R[digest_end]="the windows end within $spread s; last window's end to the last message $lastlag s; per window, its end to its message: median $lag50 s, max $lagmax s; $crate windows closed/s (first end to last message)"
    R[digest_count]="$msgs messages for $N_KEYS keys ($windows windows)"
    R[digest_events]="sum of total_count $total of $N_EVENTS; listed $listed events, $distinct distinct, $misplaced in another key's message, $short messages listing fewer than their total_count"
    ok=no; [ "$msgs" = "$N_KEYS" ] && [ "$total" = "$N_EVENTS" ] && [ "$distinct" = "$N_EVENTS" ] && [ "$listed" = "$N_EVENTS" ] && [ "$misplaced" = 0 ] && [ "$short" = 0 ] && ok=yes
    R[digest_ok]=$ok
    R[digest_rss]=$(mb "$PEAK")
    L[digest]="${L[digest]} → $(load)"
    log "4. digest: ${R[digest_fanout]}; ${R[digest_end]}; ${R[digest_count]}; ${R[digest_events]}; all listed once: $ok; workers' RssAnon peak ${R[digest_rss]}"
fi

# --- 3. claim cost with N_WAIT waiting vs one batch (the workers stopped)
if want claim; then
    workers 0
    cat > "$tmp/claim.sql" <<SQL
\\set lim $BATCH
BEGIN;
SELECT array_agg(c.id ORDER BY c.due_at)
  FROM (SELECT x.id, x.due_at FROM novu.step_runs x
         WHERE x.status = 'waiting' AND x.due_at <= now()
         ORDER BY x.due_at LIMIT :lim
         FOR UPDATE SKIP LOCKED) c;
ROLLBACK;
SQL
    # rows shaped as the engine writes a delay's (novu._advance)
    insert_rows() {  # insert_rows FROM TO DUE_SQL
        q -c "INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, due_at, created_at, updated_at, last_event_at)
              SELECT 'delay', 'wait-' || i, 'eng-scheduled', 'sub-' || (i % $N_SUBS + 1), 0, $3, now(), now(), now()
                FROM generate_series($1, $2) i" >/dev/null
    }
    claim() {  # claim NAME -> "median p90" in ms of the claim (pgbench per-transaction log)
        local dir="$tmp/claim-$1"
        mkdir -p "$dir"
        (cd "$dir" && pgbench -n -M prepared -c 1 -t 20 -f "$tmp/claim.sql" postgres >/dev/null 2>&1)
        (cd "$dir" && pgbench -n -M prepared -c 1 -t "$CLAIM_TX" -l -f "$tmp/claim.sql" postgres >/dev/null 2>&1)
        cat "$dir"/pgbench_log.* | awk '{print $3 / 1000}' | sort -n |
            awk '{a[NR] = $1} END { printf "%.2f %.2f", a[int(NR * 0.5 + 0.5)], a[int(NR * 0.9 + 0.5)] }'
    }
    plan() {  # the generic plan to the log; PLAN_BUFFERS: the buffers it touched
        q -c "SET plan_cache_mode = force_generic_plan" -c "PREPARE p(int) AS SELECT x.id FROM novu.step_runs x WHERE x.status = 'waiting' AND x.due_at <= now() ORDER BY x.due_at LIMIT \$1 FOR UPDATE SKIP LOCKED" \
          -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) EXECUTE p($BATCH)" > "$tmp/plan.txt"
        sed 's/^/   /' "$tmp/plan.txt" >&2
        PLAN_BUFFERS=$(awk '/Buffers:/ { sub(/.*Buffers: /, ""); print; exit }' "$tmp/plan.txt")
    }
    L[claim]=$(load)
    q -c "TRUNCATE novu.step_runs CASCADE" >/dev/null
    insert_rows 1 "$BATCH" "now() - interval '1 minute' + i * interval '1 millisecond'"
    q -c "VACUUM ANALYZE novu.step_runs"
    read -r s50 s90 <<< "$(claim small)"
    log "3. claim of $BATCH with $BATCH waiting: median $s50 ms (p90 $s90); the generic plan:"; plan
    sbuf=$PLAN_BUFFERS
    t0=$(now)
    for a in $(seq "$(( BATCH + 1 ))" 1000000 "$(( BATCH + N_WAIT ))"); do
        b=$(( a + 999999 )); [ "$b" -gt "$(( BATCH + N_WAIT ))" ] && b=$(( BATCH + N_WAIT ))
        insert_rows "$a" "$b" "now() + interval '1 hour' + i * interval '1 millisecond'"
    done
    t1=$(now)
    q -c "VACUUM ANALYZE novu.step_runs"
    t2=$(now)
    R[claim_fill]="$N_WAIT rows inserted in $(fmt "$(elapsed "$t0" "$t1")") s ($(rate "$N_WAIT" "$(elapsed "$t0" "$t1")")/s), VACUUM ANALYZE $(fmt "$(elapsed "$t1" "$t2")") s"
    log "3. ${R[claim_fill]}"
    read -r b50 b90 <<< "$(claim big)"
    log "3. claim of $BATCH with $N_WAIT more waiting: median $b50 ms (p90 $b90); the generic plan:"; plan
    bbuf=$PLAN_BUFFERS
    waiting=$(q -c "SELECT count(*) FROM novu.step_runs WHERE status = 'waiting'")
    R[claim]="$b50 ms / $s50 ms = $(awk -v a="$b50" -v b="$s50" 'BEGIN { printf "%.2f", a / b }') (p90 $b90 / $s90 ms; buffers of one claim, EXPLAIN of the generic plan: $bbuf / $sbuf)"
    R[claim_waiting]=$waiting
    L[claim]="${L[claim]} → $(load)"
    log "3. claim: ${R[claim]}"
fi

load_end=$(load)
cat <<EOF

## Workflow engine (test/bench/engine.sh, scale $SCALE)

Machine: $machine; load average (1/5/15 min) at the start $load_start, at the end $load_end (the machine is shared).
A throwaway cluster with $SETTINGS; the fast mock (Expo); $N_SUBS subscribers with one Expo device each and a topic
of all of them ($members members), loaded set-based in ${R[setup]} s. Load averages per row: before → after.

| figure | how | measured | target | load |
|---|---|---|---|---|
EOF
if want topic; then
cat <<EOF
| Topic fan-out | one novu.trigger of bench-expo (one push step, Expo) to a topic of $N_SUBS; from the commit to the last recorded 'sent' | ${R[topic]} | - | ${L[topic]} |
| Topic fan-out: memory | peak RssAnon of a delivery worker (2 workers, sampled every 0.2 s) | ${R[topic_rss]} | < 100 MB | |
| Topic fan-out: exactly once | ${R[topic_once]} | $( [ "${R[topic_ok]}" = yes ] && echo "every subscriber one message" || echo "NOT exactly once" ) | one each | |
EOF
fi
if want delay; then
cat <<EOF
| Delays due at one second: fan-out | one trigger to the topic of [delay (delayPath sendAt), push (Expo)]; the trigger's commit to its outbox row processed | ${R[delay_fanout]} | | ${L[delay]} |
| Delays due at one second: first | from the due time to the first message sent | ${R[delay_first]} | a due step starts within novu.poll_interval (1 s) | |
| Delays due at one second: last | from the due time to the last message sent (all $N_SUBS) | ${R[delay_last]}, ${R[delay_rate]} | | |
| Delays: memory, exactly once | peak RssAnon of a worker ${R[delay_rss]}; ${R[delay_once]} | | < 100 MB | |
EOF
fi
if want claim; then
cat <<EOF
| Claim with $N_WAIT waiting vs one batch | novu._continue's claim (SELECT ... FOR UPDATE SKIP LOCKED of $BATCH due step rows, pgbench -M prepared, rolled back; median of $CLAIM_TX) with ${R[claim_waiting]} waiting (due later) vs $BATCH waiting; ${R[claim_fill]} | ${R[claim]} | ratio ≤ 1.2 | ${L[claim]} |
EOF
fi
if want digest; then
cat <<EOF
| Digest: triggers | $N_EVENTS novu.trigger of [digest ($DIGEST_WINDOW s window, digestKey postId), in_app], 5,000 a transaction, over $N_KEYS keys ($N_DSUBS subscribers × $(( N_KEYS / N_DSUBS )) postIds) | ${R[digest_rate]} | | ${L[digest]} |
| Digest: fan-out | the triggers' events merged into their windows (the workers' fan-out, staged) | ${R[digest_fanout]} | before the windows end | |
| Digest: window end to message | ${R[digest_end]} | | a due step starts within novu.poll_interval (1 s) | |
| Digest: messages and events | ${R[digest_count]}; ${R[digest_events]}; the workers' largest RssAnon ${R[digest_rss]} | $( [ "${R[digest_ok]}" = yes ] && echo "one message per key, every event listed once" || echo "NOT one message per key with every event" ) | one per key, all events | |
EOF
fi
