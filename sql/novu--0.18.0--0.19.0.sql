/*
 * novu--0.18.0--0.19.0.sql
 *		Upgrade from 0.18.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.19.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.18.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.19.0'" to load this file. \quit

-- No advisory locks: any role can take one and hold it, and a worker that
-- waited for it (a digest key) stalled, or one that tried it (an idempotency
-- key's request) never took that request again.  A digest key's lock is a row
-- of novu.digest_locks, which only the workers write; a request goes to the
-- worker that locks its first message.
CREATE TABLE novu.digest_locks (
    key_hash    integer PRIMARY KEY
);
COMMENT ON TABLE novu.digest_locks IS 'Workflow engine: one row per digest key hash, locked while a worker merges events of that key';
REVOKE ALL ON novu.digest_locks FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON novu.digest_locks TO novu_worker;

CREATE FUNCTION novu._lock_digest_keys(p_keys integer[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO novu.digest_locks AS l (key_hash)
    SELECT DISTINCT u.k FROM unnest(p_keys) AS u(k) WHERE u.k IS NOT NULL ORDER BY 1
    ON CONFLICT (key_hash) DO UPDATE SET key_hash = excluded.key_hash WHERE false
$$;
COMMENT ON FUNCTION novu._lock_digest_keys(integer[]) IS 'Internal (workers): lock digest keys, in key order, until the transaction ends';
REVOKE EXECUTE ON FUNCTION novu._lock_digest_keys(integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._lock_digest_keys(integer[]) TO novu_worker;

-- The workers wait for no application transaction left open: a trigger naming
-- a subscriber another transaction is creating is set aside (retry_at) after
-- novu.fanout_lock_wait; a message being sent is not deleted; a dead token a
-- transaction holds is not pruned then.
ALTER TABLE novu.events ADD COLUMN retry_at timestamptz;
GRANT UPDATE (created_at) ON novu.device_tokens TO novu_worker;

-- Housekeeping walks each table from its oldest row by id (the block range
-- indexes on created_at read the whole table once reused space mixed old and
-- new rows), and keeps a digest window that a delay or a message still needs.
DROP INDEX novu.deliveries_created_idx, novu.step_runs_created_idx, novu.execution_details_created_idx;
CREATE INDEX events_done_idx ON novu.events (id) WHERE status IN ('processed', 'canceled');
CREATE INDEX deliveries_digest_idx ON novu.deliveries (digest_id)
    WHERE digest_id IS NOT NULL AND status IN ('pending', 'sending');
CREATE INDEX step_runs_digest_ref_idx ON novu.step_runs (digest_id) WHERE status = 'waiting' AND digest_id IS NOT NULL;
GRANT UPDATE (deleted_at) ON novu.subscriber_deletions TO novu_worker;
CREATE TABLE novu.housekeeping_cursor (
    table_name  text PRIMARY KEY,
    after_id    bigint NOT NULL DEFAULT 0
);
INSERT INTO novu.housekeeping_cursor (table_name)
VALUES ('deliveries'), ('execution_details'), ('events'), ('step_runs');
COMMENT ON TABLE novu.housekeeping_cursor IS 'Housekeeping: where the walk of each history table goes on';
REVOKE ALL ON novu.housekeeping_cursor FROM PUBLIC;
GRANT SELECT, UPDATE ON novu.housekeeping_cursor TO novu_worker;

-- A digestKey value over 200 bytes is kept as its sha256 (novu._digest_key):
-- the windows and backoff records made before keep matching theirs.
UPDATE novu.step_runs SET digest_key = 'sha256:' || encode(sha256(convert_to(digest_key, 'UTF8')), 'hex')
 WHERE kind = 'digest' AND octet_length(digest_key) > 200;

-- step.events keeps to 1 MiB of JSON text (the stored, compressed size let
-- through payloads that compress well, 90 MB of them in one window)
ALTER TABLE novu.digest_events ADD COLUMN payload_bytes integer GENERATED ALWAYS AS (octet_length(payload::text)) STORED;

CREATE FUNCTION novu._digest_key(p_payload jsonb, p_step jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN octet_length(x.v) > 200 THEN 'sha256:' || encode(sha256(convert_to(x.v, 'UTF8')), 'hex') ELSE x.v END
      FROM (SELECT CASE WHEN p_step ? 'digestKey'
                        THEN COALESCE(p_payload #>> novu._payload_path(p_step ->> 'digestKey'), '') ELSE '' END AS v) x
$$;
COMMENT ON FUNCTION novu._digest_key(jsonb, jsonb) IS 'Internal (workers): the digest key of a notification at a digest step (a value over 200 bytes as its sha256)';
REVOKE EXECUTE ON FUNCTION novu._digest_key(jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._digest_key(jsonb, jsonb) TO novu_worker;

CREATE FUNCTION novu._create_subscribers(p_ids text[])
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = 0
AS $$
DECLARE
    ids text[] := ARRAY(SELECT DISTINCT u.s FROM unnest(p_ids) AS u(s) WHERE u.s IS NOT NULL ORDER BY 1);
    wait text := COALESCE(current_setting('novu.fanout_lock_wait', true), '100ms');
    blocked text[] := '{}';
    until timestamptz;
    k integer;
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN blocked;
    END IF;
    PERFORM set_config('lock_timeout', wait, true);
    BEGIN
        INSERT INTO novu.subscribers (subscriber_id) SELECT u.s FROM unnest(ids) AS u(s) ON CONFLICT DO NOTHING;
        RETURN blocked;
    EXCEPTION WHEN lock_not_available THEN
        NULL;
    END;
    until := clock_timestamp() + wait::interval;
    PERFORM set_config('lock_timeout', '1ms', true);
    FOR k IN 1 .. cardinality(ids) LOOP
        IF clock_timestamp() >= until THEN
            RETURN blocked || ids[k:];
        END IF;
        BEGIN
            INSERT INTO novu.subscribers (subscriber_id) VALUES (ids[k]) ON CONFLICT DO NOTHING;
        EXCEPTION WHEN lock_not_available THEN
            blocked := blocked || ids[k];
        END;
    END LOOP;
    RETURN blocked;
END
$$;
COMMENT ON FUNCTION novu._create_subscribers(text[]) IS 'Internal (workers): create missing recipients with an empty profile, waiting at most twice novu.fanout_lock_wait in all for other transactions creating them; returns the ids not created';
REVOKE EXECUTE ON FUNCTION novu._create_subscribers(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._create_subscribers(text[]) TO novu_worker;

CREATE OR REPLACE FUNCTION novu.update_subscriber(subscriber_id text, profile jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(update_subscriber.subscriber_id, 'subscriberId');
    -- FOR NO KEY UPDATE: the key does not change, and a worker storing an
    -- in-app message for this subscriber (its foreign key check) does not wait
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = update_subscriber.subscriber_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', update_subscriber.subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with novu.identify().';
    END IF;
    PERFORM novu._upsert_subscriber(update_subscriber.subscriber_id, profile);
    RETURN novu.get_subscriber(update_subscriber.subscriber_id);
END
$$;
COMMENT ON FUNCTION novu.update_subscriber(text, jsonb) IS 'Update an existing subscriber; only given keys change; unknown subscriberId is an error';

CREATE OR REPLACE FUNCTION novu._digest_context(p_digest_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('digest', true,
                              'events', COALESCE(jsonb_agg(x.payload ORDER BY x.event_id) FILTER (WHERE x.keep), '[]'),
                              'total_count', count(*))
      FROM (SELECT m.payload, m.event_id,
                   row_number() OVER w <= 1000 AND sum(m.payload_bytes) OVER w <= 1048576 AS keep
              FROM novu.digest_events m
             WHERE m.digest_id = p_digest_id AND m.status = 'merged'
            WINDOW w AS (ORDER BY m.event_id)) x
$$;
COMMENT ON FUNCTION novu._digest_context(bigint) IS 'Internal (workers): step.digest, step.events (oldest first) and step.total_count of a digest';

CREATE OR REPLACE FUNCTION novu._run_steps(p_ids bigint[], p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    r novu.step_runs;
    leased integer := 0;
    n integer;
    leader text;
    total integer;
    plain bigint[];
    tx text[];
    wf text[];
    sub text[];
    st integer[];
    wins bigint[];
    others bigint[];
    dg bigint[];
    cx jsonb[];
BEGIN
    -- The batch's rows still waiting, in its order, sorted out in one pass:
    -- delays and digest windows followed by channel steps without filters
    -- only (set-based below), and the others (step by step, at the end).
    SELECT array_agg(x.id ORDER BY u.n) FILTER (WHERE x.kind = 'delay' AND x.digest_id IS NULL AND w.plain),
           array_agg(x.id ORDER BY u.n) FILTER (WHERE x.kind = 'digest' AND w.plain),
           array_agg(x.id ORDER BY u.n) FILTER (WHERE NOT (w.plain AND (x.kind = 'digest' OR x.digest_id IS NULL)))
      INTO plain, wins, others
      FROM unnest(p_ids) WITH ORDINALITY AS u(id, n)
      CROSS JOIN LATERAL (SELECT y.* FROM novu.step_runs y WHERE y.id = u.id OFFSET 0) x
      CROSS JOIN LATERAL (SELECT COALESCE(novu._plain_after(v.steps, x.step_index), false) AS plain
                            FROM (SELECT) one LEFT JOIN novu.workflows v ON v.workflow_id = x.workflow_id OFFSET 0) w
     WHERE x.status = 'waiting';
    -- Delays followed by channel steps without filters only (the usual "wait,
    -- then send"): all of them done and expanded together, in one statement
    -- of novu._expand (a row per notification and step).  The others go one
    -- by one, step by step (novu._advance).
    IF plain IS NOT NULL THEN
        WITH d AS (
            UPDATE novu.step_runs x SET status = 'done', updated_at = now()
             WHERE x.id = ANY (plain)
            RETURNING x.id, x.transaction_id, x.workflow_id, x.subscriber_id, x.step_index),
        logged AS (
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            SELECT d.transaction_id, d.subscriber_id, d.workflow_id, 'delay', 'Success', 'Delay finished',
                   jsonb_build_object('stepIndex', d.step_index)
              FROM d)
        SELECT array_agg(d.transaction_id ORDER BY array_position(plain, d.id), s.n),
               array_agg(d.workflow_id ORDER BY array_position(plain, d.id), s.n),
               array_agg(d.subscriber_id ORDER BY array_position(plain, d.id), s.n),
               array_agg((s.n - 1)::integer ORDER BY array_position(plain, d.id), s.n)
          INTO tx, wf, sub, st
          FROM d
          CROSS JOIN LATERAL (SELECT v.steps FROM novu.workflows v WHERE v.workflow_id = d.workflow_id OFFSET 0) w
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
         WHERE s.n > d.step_index + 1;
        IF tx IS NOT NULL THEN
            RETURN QUERY SELECT * FROM novu._expand(tx, wf, sub, p_lease_limit, p_lease_ms, st);
            GET DIAGNOSTICS leased = ROW_COUNT;
        END IF;
    END IF;
    -- Digest windows followed by channel steps without filters only: closed
    -- together, set-based.  Each window's merged events are read by the key
    -- (digest_id first), window by window: its leader (the oldest event; a
    -- window left without events is canceled), its total and the step
    -- context of novu._digest_context (the same bounds: memory stays bounded
    -- however large a window).  The windows are marked done, each leader
    -- gets its activity row ("Digest finished: <n> events"; the other events
    -- have theirs from the merge, "Merged into the digest of transaction
    -- <leader>", with the window's id in raw: a row per event here made the
    -- close a third slower), and the steps after them are expanded in one
    -- statement of novu._expand, with the window and its context.
    IF wins IS NOT NULL THEN
        tx := NULL;
        WITH win AS MATERIALIZED (
            SELECT u.id, u.n, (SELECT y.ctid FROM novu.step_runs y WHERE y.id = u.id) AS tid, a.total, a.leader, a.ctx
              FROM unnest(wins) WITH ORDINALITY AS u(id, n)
              CROSS JOIN LATERAL (
                  SELECT count(*) AS total, min(e.transaction_id) FILTER (WHERE e.k = 1) AS leader,
                         jsonb_build_object('digest', true,
                                            'events', COALESCE(jsonb_agg(e.payload ORDER BY e.event_id)
                                                               FILTER (WHERE e.k <= 1000 AND e.bytes <= 1048576), '[]'),
                                            'total_count', count(*)) AS ctx
                    FROM (SELECT m.transaction_id, m.event_id, m.payload,
                                 row_number() OVER w AS k, sum(m.payload_bytes) OVER w AS bytes
                            FROM novu.digest_events m
                           WHERE m.digest_id = u.id AND m.status = 'merged'
                          WINDOW w AS (ORDER BY m.event_id)) e) a),
        closed AS (
            UPDATE novu.step_runs x
               SET status = CASE WHEN l.total = 0 THEN 'canceled' ELSE 'done' END,
                   transaction_id = COALESCE(l.leader, x.transaction_id),
                   updated_at = now()
              FROM win l
             WHERE x.ctid = l.tid
            RETURNING x.id, l.n, x.transaction_id, x.workflow_id, x.subscriber_id, x.step_index, x.status, l.ctx,
                      format('Digest finished: %s event%s', l.total, CASE WHEN l.total = 1 THEN '' ELSE 's' END) AS lead_detail,
                      jsonb_build_object('stepIndex', x.step_index, 'digestId', x.id, 'digestKey', x.digest_key) AS raw),
        logged AS (
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            SELECT c.transaction_id, c.subscriber_id, c.workflow_id, 'digest', 'Success', c.lead_detail, c.raw
              FROM closed c WHERE c.status = 'done' ORDER BY c.id)
        SELECT array_agg(c.transaction_id ORDER BY c.n, s.n), array_agg(c.workflow_id ORDER BY c.n, s.n),
               array_agg(c.subscriber_id ORDER BY c.n, s.n), array_agg((s.n - 1)::integer ORDER BY c.n, s.n),
               array_agg(c.id ORDER BY c.n, s.n), array_agg(c.ctx ORDER BY c.n, s.n)
          INTO tx, wf, sub, st, dg, cx
          FROM closed c
          CROSS JOIN LATERAL (SELECT v.steps FROM novu.workflows v WHERE v.workflow_id = c.workflow_id OFFSET 0) w
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
         WHERE c.status = 'done' AND s.n > c.step_index + 1;
        IF tx IS NOT NULL THEN
            RETURN QUERY
            SELECT * FROM novu._expand(tx, wf, sub, GREATEST(p_lease_limit - leased, 0), p_lease_ms, st, dg, cx);
            GET DIAGNOSTICS n = ROW_COUNT;
            leased := leased + n;
        END IF;
    END IF;
    FOR r IN SELECT x.* FROM unnest(others) WITH ORDINALITY AS u(id, n)
               CROSS JOIN LATERAL (SELECT y.* FROM novu.step_runs y WHERE y.id = u.id OFFSET 0) x
              ORDER BY u.n LOOP
        UPDATE novu.step_runs x SET status = 'done', updated_at = now() WHERE x.id = r.id;
        IF r.kind = 'delay' THEN
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            VALUES (r.transaction_id, r.subscriber_id, r.workflow_id, 'delay', 'Success', 'Delay finished',
                    jsonb_build_object('stepIndex', r.step_index));
            RETURN QUERY
            SELECT * FROM novu._advance(ARRAY[r.transaction_id], ARRAY[r.workflow_id], ARRAY[r.subscriber_id],
                                        ARRAY[r.step_index + 1], ARRAY[r.digest_id],
                                        GREATEST(p_lease_limit - leased, 0), p_lease_ms);
        ELSE
            leader := NULL;
            SELECT m.transaction_id, count(*) OVER () INTO leader, total
              FROM novu.digest_events m WHERE m.digest_id = r.id AND m.status = 'merged'
             ORDER BY m.event_id LIMIT 1;
            IF leader IS NULL THEN
                UPDATE novu.step_runs x SET status = 'canceled' WHERE x.id = r.id;
                CONTINUE;
            END IF;
            UPDATE novu.step_runs x SET transaction_id = leader WHERE x.id = r.id AND x.transaction_id <> leader;
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            VALUES (leader, r.subscriber_id, r.workflow_id, 'digest', 'Success',
                    format('Digest finished: %s event%s', total, CASE WHEN total = 1 THEN '' ELSE 's' END),
                    jsonb_build_object('stepIndex', r.step_index, 'digestId', r.id, 'digestKey', r.digest_key));
            RETURN QUERY
            SELECT * FROM novu._advance(ARRAY[leader], ARRAY[r.workflow_id], ARRAY[r.subscriber_id],
                                        ARRAY[r.step_index + 1], ARRAY[r.id],
                                        GREATEST(p_lease_limit - leased, 0), p_lease_ms);
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        leased := leased + n;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._run_steps(bigint[], integer, integer) IS 'Internal (workers): run the steps after locked delays and digest windows; returns the messages leased to the caller';

CREATE OR REPLACE FUNCTION novu._digest_first(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[])
RETURNS TABLE (t text, w text, s text, n bigint, event_id bigint, payload jsonb, k text, window_len interval,
               keyed boolean, raw jsonb, g bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.*, dense_rank() OVER (ORDER BY c.w, c.s, c.k) AS g
      FROM (SELECT z.t, z.w, z.s, z.n, e.id, COALESCE(e.payload, '{}'),
                   novu._digest_key(e.payload, wf.steps -> 0) AS k,
                   novu._step_interval(wf.steps -> 0 -> 'amount', wf.steps -> 0 -> 'unit'),
                   (wf.steps -> 0) ? 'digestKey',
                   jsonb_build_object('stepId', novu._step_id(wf.steps -> 0, 0), 'stepIndex', 0)
              FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids) WITH ORDINALITY AS z(t, w, s, n)
              JOIN novu.workflows wf ON wf.workflow_id = z.w
              LEFT JOIN novu.events e ON e.transaction_id = z.t
             WHERE jsonb_typeof(wf.steps) = 'array' AND wf.steps -> 0 ->> 'type' = 'digest'
               AND NOT (wf.steps -> 0) ? 'filters'
               AND NOT COALESCE((wf.steps -> 0 ->> 'backoff')::boolean, false)) c
$$;
COMMENT ON FUNCTION novu._digest_first(text[], text[], text[]) IS 'Internal (workers): the notifications that start with a plain digest step, with their key group';

CREATE OR REPLACE FUNCTION novu._refresh_queue_stats() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a quick look, on the workers' path: the planner needs the tables' sizes and
-- the shape of the queue columns, not fine histograms (autovacuum's ANALYZE
-- brings those).  A sample of 3,000 rows instead of 30,000: 20,000 deliveries
-- took 211 ms to analyze, now 33 ms.
SET default_statistics_target = 10
-- the count of waiting steps below reads a partial index, never the table
SET enable_seqscan = off
AS $$
DECLARE
    t regclass;
    analyzed integer := 0;
    believed double precision;
BEGIN
    FOREACH t IN ARRAY ARRAY['novu.events'::regclass, 'novu.deliveries'::regclass] LOOP
        -- one worker analyzes a table at a time, the others go on: the lock
        -- ANALYZE takes, tried (a VACUUM running on the table, a DBA's never
        -- canceled for us, does not hold the worker up either; the next check
        -- tries again).  Not an advisory lock: any role could hold one.
        IF pg_stat_get_live_tuples(t) > 2 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = t), 0) + 1000 THEN
            BEGIN
                IF t = 'novu.events'::regclass THEN
                    LOCK TABLE novu.events IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
                    ANALYZE novu.events (id, transaction_id, status, kind);
                ELSE
                    LOCK TABLE novu.deliveries IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
                    ANALYZE novu.deliveries;
                END IF;
                analyzed := analyzed + 1;
            EXCEPTION WHEN lock_not_available THEN
                NULL;
            END;
        END IF;
    END LOOP;
    -- The engine's waiting steps.  What matters is how many are waiting, not
    -- the table's size: analyzed while none waited (empty, or only done
    -- steps), the partial indexes on waiting steps look empty, and the look-up
    -- of a digest window by its key (novu._start, novu._digest_join) was
    -- planned through the due-time index, reading every waiting step per
    -- event: 100,000 events over 10,000 keys fanned out at 1,431/s instead of
    -- 8,817/s.  Counted only up to twice the belief plus 1,000, and only while
    -- the belief is small (a large one already keeps the planner off that path).
    -- A few waiting steps in a long history of done ones may escape a sample:
    -- this table's is 30,000 rows, and it is analyzed again only after 1,000
    -- rows and a thousandth of the table changed (not once a second on a
    -- belief that its sample cannot correct).
    believed := GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'novu.step_runs_due_idx'::regclass), 0);
    IF believed < 1000
       AND pg_stat_get_mod_since_analyze('novu.step_runs'::regclass)
           > 1000 + 0.001 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'novu.step_runs'::regclass), 0)
       AND (SELECT count(*) FROM (SELECT FROM novu.step_runs x WHERE x.status = 'waiting'
                                   LIMIT (2 * believed + 1001)::bigint) w) > 2 * believed + 1000 THEN
        BEGIN
            LOCK TABLE novu.step_runs IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
            PERFORM set_config('default_statistics_target', '100', true);
            ANALYZE novu.step_runs;
            analyzed := analyzed + 1;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END IF;
    RETURN analyzed;
END
$$;
COMMENT ON FUNCTION novu._refresh_queue_stats() IS 'Worker helper: ANALYZE the outbox and the delivery queue when they hold far more rows than their statistics say, and the engine''s steps when far more wait than the statistics say';

CREATE OR REPLACE FUNCTION novu._step_interval(amount jsonb, unit jsonb)
RETURNS interval
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- at most a year: 366 days, or 12 months (each unit's count is capped
    -- before it is multiplied: 999999999 weeks overflowed an interval, and
    -- interval '1 year' compares as 360 days, which refused 52 weeks)
    SELECT CASE WHEN jsonb_typeof(amount) = 'number' AND jsonb_typeof(unit) = 'string'
                     AND (amount #>> '{}') ~ '^[0-9]{1,9}$'
                     AND (amount #>> '{}')::integer <= CASE unit #>> '{}' WHEN 'seconds' THEN 31622400 WHEN 'minutes' THEN 527040
                                                                          WHEN 'hours' THEN 8784 WHEN 'days' THEN 366
                                                                          WHEN 'weeks' THEN 52 WHEN 'months' THEN 12 END
                THEN (amount #>> '{}')::integer * ('1 ' || (unit #>> '{}'))::interval END
$$;
COMMENT ON FUNCTION novu._step_interval(jsonb, jsonb) IS 'Internal: amount and unit of a delay or digest as an interval; NULL if not one or longer than a year';

CREATE OR REPLACE FUNCTION novu._check_amount(amount jsonb, unit jsonb, field text, amount_key text, unit_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d interval;
BEGIN
    IF jsonb_typeof(amount) IS DISTINCT FROM 'number' OR NOT (amount #>> '{}') ~ '^[0-9]{1,9}$' OR (amount #>> '{}')::integer < 1 THEN
        RAISE EXCEPTION '%.% must be a positive integer', field, amount_key
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Example: "%s": 5, "%s": "minutes".', amount_key, unit_key);
    END IF;
    IF jsonb_typeof(unit) IS DISTINCT FROM 'string'
       OR NOT unit #>> '{}' IN ('seconds', 'minutes', 'hours', 'days', 'weeks', 'months') THEN
        RAISE EXCEPTION '%.% must be one of seconds, minutes, hours, days, weeks, months', field, unit_key
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Example: "%s": 5, "%s": "minutes".', amount_key, unit_key);
    END IF;
    d := novu._step_interval(amount, unit);
    IF d IS NULL THEN
        RAISE EXCEPTION '%.% is longer than a year', field, amount_key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A delay or digest window is at most one year: 366 days, 52 weeks or 12 months.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_amount(jsonb, jsonb, text, text, text) IS 'Internal: validate an amount and unit of a delay or digest step';

CREATE OR REPLACE FUNCTION novu._check_filter_child(c jsonb, f text, steps jsonb, step_index integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    allowed text[];
    op text;
    v jsonb;
    target integer;
BEGIN
    IF jsonb_typeof(c) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', f
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"on": "payload", "field": "plan", "operator": "EQUAL", "value": "pro"}.';
    END IF;
    allowed := CASE c ->> 'on'
        WHEN 'payload' THEN ARRAY['on', 'field', 'operator', 'value']
        WHEN 'subscriber' THEN ARRAY['on', 'field', 'operator', 'value']
        WHEN 'isOnline' THEN ARRAY['on', 'operator', 'value']   -- operator: EQUAL (Novu's editor writes it) or NOT_EQUAL
        WHEN 'isOnlineInLast' THEN ARRAY['on', 'operator', 'value', 'timeOperator']
        WHEN 'previousStep' THEN ARRAY['on', 'step', 'stepType'] END;
    IF allowed IS NULL THEN
        RAISE EXCEPTION '%.on must be one of payload, subscriber, isOnline, isOnlineInLast, previousStep', f
            USING ERRCODE = CASE WHEN jsonb_typeof(c -> 'on') = 'string' THEN 'feature_not_supported' ELSE 'invalid_parameter_value' END,
                  HINT = 'Other Novu filter sources (webhook, tenant, actor) are not run by this engine.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(c) LOOP
        IF NOT k = ANY (allowed) THEN
            RAISE EXCEPTION 'unknown key "%" in %', k, f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('A filter on %s has %s.', c ->> 'on', array_to_string(allowed, ', '));
        END IF;
    END LOOP;
    v := c -> 'value';
    CASE c ->> 'on'
    WHEN 'payload', 'subscriber' THEN
        IF jsonb_typeof(c -> 'field') IS DISTINCT FROM 'string'
           OR NOT (c ->> 'field') ~ '^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$' THEN
            RAISE EXCEPTION '%.field must be a dot path', f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE c ->> 'on' WHEN 'payload' THEN 'A key of the payload, e.g. "plan" or "order.total".'
                             ELSE 'A subscriber key, e.g. "firstName", "locale" or "data.plan".' END;
        END IF;
        op := c ->> 'operator';
        IF jsonb_typeof(c -> 'operator') IS DISTINCT FROM 'string'
           OR op NOT IN ('EQUAL', 'NOT_EQUAL', 'LARGER', 'SMALLER', 'LARGER_EQUAL', 'SMALLER_EQUAL', 'IN', 'NOT_IN',
                         'BETWEEN', 'NOT_BETWEEN', 'LIKE', 'NOT_LIKE', 'IS_DEFINED') THEN
            RAISE EXCEPTION '%.operator must be one of EQUAL, NOT_EQUAL, LARGER, SMALLER, LARGER_EQUAL, SMALLER_EQUAL, IN, NOT_IN, BETWEEN, NOT_BETWEEN, LIKE, NOT_LIKE, IS_DEFINED', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Novu''s filter operators, in capitals.';
        END IF;
        IF op = 'IS_DEFINED' THEN
            IF v IS NOT NULL AND jsonb_typeof(v) NOT IN ('boolean', 'string') THEN
                RAISE EXCEPTION '%.value of IS_DEFINED must be omitted or a boolean', f
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'IS_DEFINED is true when the field exists and is not null.';
            END IF;
        ELSIF op IN ('BETWEEN', 'NOT_BETWEEN') THEN
            IF jsonb_typeof(v) IS DISTINCT FROM 'array' OR jsonb_array_length(v) <> 2
               OR jsonb_typeof(v -> 0) <> 'number' OR jsonb_typeof(v -> 1) <> 'number' THEN
                RAISE EXCEPTION '%.value of % must be [low, high] (numbers)', f, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Both ends are included, e.g. [10, 20].';
            END IF;
        ELSIF op IN ('IN', 'NOT_IN') THEN
            IF NOT (jsonb_typeof(v) = 'string'
                    OR (jsonb_typeof(v) = 'array' AND jsonb_array_length(v) BETWEEN 1 AND 1000
                        AND NOT EXISTS (SELECT FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) NOT IN ('string', 'number', 'boolean')))) THEN
                RAISE EXCEPTION '%.value of % must be an array of values or a comma-separated string', f, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ["pro", "team"] or "pro,team".';
            END IF;
        ELSIF jsonb_typeof(v) IS NULL OR jsonb_typeof(v) NOT IN ('string', 'number', 'boolean') THEN
            RAISE EXCEPTION '%.value must be a string, a number or a boolean', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The value the field is compared with.';
        END IF;
    WHEN 'isOnline' THEN
        IF jsonb_typeof(v) IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '%.value must be true or false', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnline", "value": true}.';
        END IF;
        IF c ? 'operator' AND (jsonb_typeof(c -> 'operator') IS DISTINCT FROM 'string' OR c ->> 'operator' NOT IN ('EQUAL', 'NOT_EQUAL')) THEN
            RAISE EXCEPTION '%.operator must be EQUAL or NOT_EQUAL', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnline", "value": true} is the same as with "operator": "EQUAL".';
        END IF;
    WHEN 'isOnlineInLast' THEN
        IF jsonb_typeof(v) IS DISTINCT FROM 'number' OR NOT (v #>> '{}') ~ '^[0-9]{1,9}$' OR (v #>> '{}')::integer < 1 THEN
            RAISE EXCEPTION '%.value must be a positive integer', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnlineInLast", "timeOperator": "minutes", "value": 5}.';
        END IF;
        IF c ->> 'timeOperator' IS NULL OR c ->> 'timeOperator' NOT IN ('seconds', 'minutes', 'hours', 'days') THEN
            RAISE EXCEPTION '%.timeOperator must be one of seconds, minutes, hours, days', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnlineInLast", "timeOperator": "minutes", "value": 5}.';
        END IF;
        IF c ? 'operator' AND c -> 'operator' IS DISTINCT FROM '"EQUAL"' THEN
            RAISE EXCEPTION '%.operator of isOnlineInLast can only be EQUAL', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Online now or within the last "value" "timeOperator"; leave "operator" out.';
        END IF;
    WHEN 'previousStep' THEN
        IF c ->> 'stepType' IS NULL OR c ->> 'stepType' NOT IN ('read', 'unread', 'seen', 'unseen') THEN
            RAISE EXCEPTION '%.stepType must be one of read, unread, seen, unseen', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The state of the earlier in_app step''s message.';
        END IF;
        SELECT s.n - 1 INTO target
          FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(step, n)
         WHERE jsonb_typeof(c -> 'step') = 'string' AND novu._step_id(s.step, (s.n - 1)::integer) = c ->> 'step'
         LIMIT 1;
        IF target IS NULL OR target >= step_index OR steps -> target ->> 'type' <> 'in_app' THEN
            RAISE EXCEPTION '%.step must be the stepId of an earlier in_app step', f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'previousStep reads the read/seen state of an in_app message sent before this step.';
        END IF;
    END CASE;
END
$$;
COMMENT ON FUNCTION novu._check_filter_child(jsonb, text, jsonb, integer) IS 'Internal: validate one step filter condition';

CREATE OR REPLACE FUNCTION novu._filter_matches(actual jsonb, op text, value jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    num_re constant text := '^-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?$';
    a text;
    a_num numeric;
    v text;
    v_num numeric;
    list text[];
    cmp integer;
BEGIN
    IF op = 'IS_DEFINED' THEN
        RETURN (actual IS NOT NULL AND jsonb_typeof(actual) <> 'null') = (value IS NULL OR value::text NOT IN ('false', '"false"'));
    END IF;
    IF actual IS NULL OR jsonb_typeof(actual) = 'null' THEN
        RETURN op IN ('NOT_EQUAL', 'NOT_IN', 'NOT_BETWEEN', 'NOT_LIKE');
    END IF;
    a := actual #>> '{}';
    -- a JSON number compares as a number whatever its size (jsonb writes 1e31
    -- with 32 digits); a string as a number only when it reads as one
    IF jsonb_typeof(actual) = 'number' THEN
        a_num := actual::numeric;
    ELSIF a ~ num_re THEN
        a_num := a::numeric;
    END IF;
    CASE op
    WHEN 'IN', 'NOT_IN' THEN
        IF jsonb_typeof(value) = 'array' THEN
            list := ARRAY(SELECT e #>> '{}' FROM jsonb_array_elements(value) e);
        ELSE
            list := ARRAY(SELECT btrim(x) FROM unnest(string_to_array(value #>> '{}', ',')) x);
        END IF;
        RETURN (a = ANY (list)
                OR (a_num IS NOT NULL AND EXISTS (SELECT FROM unnest(list) x WHERE x ~ num_re AND x::numeric = a_num)))
               = (op = 'IN');
    WHEN 'BETWEEN', 'NOT_BETWEEN' THEN
        RETURN COALESCE(a_num BETWEEN (value ->> 0)::numeric AND (value ->> 1)::numeric, false) = (op = 'BETWEEN');
    WHEN 'LIKE', 'NOT_LIKE' THEN
        RETURN (strpos(a, value #>> '{}') > 0) = (op = 'LIKE');
    ELSE
        v := value #>> '{}';
        IF a_num IS NOT NULL AND (jsonb_typeof(value) = 'number' OR v ~ num_re) THEN
            v_num := v::numeric;
            cmp := CASE WHEN a_num < v_num THEN -1 WHEN a_num > v_num THEN 1 ELSE 0 END;
        ELSE
            cmp := CASE WHEN a COLLATE "C" < v COLLATE "C" THEN -1 WHEN a = v THEN 0 ELSE 1 END;
        END IF;
        RETURN CASE op WHEN 'EQUAL' THEN cmp = 0 WHEN 'NOT_EQUAL' THEN cmp <> 0
                       WHEN 'LARGER' THEN cmp > 0 WHEN 'SMALLER' THEN cmp < 0
                       WHEN 'LARGER_EQUAL' THEN cmp >= 0 WHEN 'SMALLER_EQUAL' THEN cmp <= 0 END;
    END CASE;
END
$$;
COMMENT ON FUNCTION novu._filter_matches(jsonb, text, jsonb) IS 'Internal (workers): one step filter condition on a field''s value';

CREATE OR REPLACE FUNCTION novu._filters_pass(p_filters jsonb, p_steps jsonb, p_payload jsonb, p_subscriber jsonb,
                                   p_is_online boolean, p_last_online_at timestamptz,
                                   p_transaction_id text, p_subscriber_id text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g jsonb;
    c jsonb;
    ok boolean;
    res boolean;
    is_or boolean;
    st jsonb;
    target integer;
BEGIN
    IF p_filters IS NULL OR jsonb_array_length(p_filters) = 0 THEN
        RETURN true;
    END IF;
    FOR g IN SELECT * FROM jsonb_array_elements(p_filters) LOOP
        is_or := COALESCE(g ->> 'value' = 'OR', false);
        res := NOT is_or OR jsonb_array_length(g -> 'children') = 0;
        FOR c IN SELECT * FROM jsonb_array_elements(g -> 'children') LOOP
            CASE c ->> 'on'
            WHEN 'payload' THEN
                ok := novu._filter_matches(p_payload #> string_to_array(c ->> 'field', '.'), c ->> 'operator', c -> 'value');
            WHEN 'subscriber' THEN
                ok := novu._filter_matches(p_subscriber #> string_to_array(c ->> 'field', '.'), c ->> 'operator', c -> 'value');
            WHEN 'isOnline' THEN
                ok := (COALESCE(p_is_online, false) = (c ->> 'value')::boolean) = (c ->> 'operator' IS DISTINCT FROM 'NOT_EQUAL');
            WHEN 'isOnlineInLast' THEN
                ok := COALESCE(p_is_online, false)
                      OR COALESCE(p_last_online_at >= now() - (c ->> 'value')::integer * ('1 ' || (c ->> 'timeOperator'))::interval, false);
            WHEN 'previousStep' THEN
                SELECT s.n - 1 INTO target FROM jsonb_array_elements(p_steps) WITH ORDINALITY AS s(step, n)
                 WHERE novu._step_id(s.step, (s.n - 1)::integer) = c ->> 'step' LIMIT 1;
                st := novu._previous_step_state(p_transaction_id, p_subscriber_id, target);
                ok := st IS NOT NULL AND CASE c ->> 'stepType'
                        WHEN 'read' THEN (st ->> 'read')::boolean WHEN 'unread' THEN NOT (st ->> 'read')::boolean
                        WHEN 'seen' THEN (st ->> 'seen')::boolean ELSE NOT (st ->> 'seen')::boolean END;
            ELSE
                ok := false;
            END CASE;
            ok := COALESCE(ok, false);
            IF is_or AND ok THEN res := true; EXIT; END IF;
            IF NOT is_or AND NOT ok THEN res := false; EXIT; END IF;
        END LOOP;
        IF COALESCE((g ->> 'isNegated')::boolean, false) THEN
            res := NOT res;
        END IF;
        IF res THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
COMMENT ON FUNCTION novu._filters_pass(jsonb, jsonb, jsonb, jsonb, boolean, timestamptz, text, text) IS 'Internal (workers): whether a step''s filters pass for a notification';

CREATE OR REPLACE FUNCTION novu._digest_join(p_transaction_id text, p_event_id bigint, p_workflow_id text, p_subscriber_id text,
                                  p_step_index integer, p_step jsonb, p_payload jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text := '';
    r novu.step_runs;
    backoff interval;
    window_len interval := novu._step_interval(p_step -> 'amount', p_step -> 'unit');
    raw jsonb := jsonb_build_object('stepId', novu._step_id(p_step, p_step_index), 'stepIndex', p_step_index);
BEGIN
    IF p_step ? 'digestKey' THEN
        k := novu._digest_key(p_payload, p_step);
        raw := raw || jsonb_build_object('digestKey', k);
    END IF;
    PERFORM novu._lock_digest_keys(ARRAY[hashtext(p_workflow_id || '/' || p_subscriber_id || '/' || p_step_index || '/' || k)]);
    SELECT * INTO r FROM novu.step_runs x
     WHERE x.kind = 'digest' AND x.status = 'waiting' AND x.workflow_id = p_workflow_id
       AND x.subscriber_id = p_subscriber_id AND x.step_index = p_step_index AND x.digest_key = k
       FOR UPDATE;
    IF FOUND THEN
        INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
        VALUES (r.id, p_transaction_id, COALESCE(p_event_id, 0), COALESCE(p_payload, '{}'))
        ON CONFLICT DO NOTHING;
        UPDATE novu.step_runs x SET last_event_at = now(), updated_at = now() WHERE x.id = r.id;
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        VALUES (p_transaction_id, p_subscriber_id, p_workflow_id, 'digest', 'Pending',
                'Merged into the digest of transaction ' || r.transaction_id, raw || jsonb_build_object('digestId', r.id));
        RETURN 'merged';
    END IF;
    IF COALESCE((p_step ->> 'backoff')::boolean, false) THEN
        backoff := COALESCE(novu._step_interval(p_step -> 'backoffAmount', p_step -> 'backoffUnit'), window_len);
        IF NOT EXISTS (SELECT FROM novu.step_runs x
                        WHERE x.kind = 'digest' AND x.workflow_id = p_workflow_id AND x.subscriber_id = p_subscriber_id
                          AND x.step_index = p_step_index AND x.digest_key = k AND x.last_event_at > now() - backoff) THEN
            -- recorded (done at once) so that the next event within the backoff window opens a digest
            INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, status, due_at)
            VALUES ('digest', p_transaction_id, p_workflow_id, p_subscriber_id, p_step_index, k, 'done', now())
            RETURNING * INTO r;
            INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
            VALUES (r.id, p_transaction_id, COALESCE(p_event_id, 0), COALESCE(p_payload, '{}'));
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            VALUES (p_transaction_id, p_subscriber_id, p_workflow_id, 'digest', 'Success',
                    'Digest skipped: no event in the backoff window, sent at once', raw || jsonb_build_object('digestId', r.id));
            RETURN 'through';
        END IF;
    END IF;
    INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, due_at)
    VALUES ('digest', p_transaction_id, p_workflow_id, p_subscriber_id, p_step_index, k, now() + window_len)
    RETURNING * INTO r;
    INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
    VALUES (r.id, p_transaction_id, COALESCE(p_event_id, 0), COALESCE(p_payload, '{}'));
    INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
    VALUES (p_transaction_id, p_subscriber_id, p_workflow_id, 'digest', 'Pending',
            'Digest started: events until ' || novu._iso(r.due_at) || ' are merged',
            raw || jsonb_build_object('digestId', r.id, 'dueAt', novu._iso(r.due_at)));
    RETURN 'opened';
END
$$;
COMMENT ON FUNCTION novu._digest_join(text, bigint, text, text, integer, jsonb, jsonb) IS 'Internal (workers): merge a notification into its digest window, open one, or let it through (backoff)';

CREATE OR REPLACE FUNCTION novu._advance(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                              p_from_steps integer[], p_digest_ids bigint[], p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    k integer;
    v_tx text;
    v_wf text;
    v_sub text;
    v_digest bigint;
    ctx jsonb;
    w novu.workflows;
    ev novu.events;
    sub novu.subscribers;
    profile jsonb;
    st jsonb;
    stype text;
    i integer;
    nsteps integer;
    leased integer := 0;
    n integer;
    due timestamptz;
    err text;
    t text;
    d interval;
    raw jsonb;
BEGIN
    -- The digest keys these notifications may reach, locked now in one order
    -- (novu._digest_join takes them again, already held): two workers fanning
    -- out events of the same keys in different orders never wait on each
    -- other in a cycle.
    PERFORM novu._lock_digest_keys(ARRAY(
             SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' || novu._digest_key(e.payload, s.step))
               FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_from_steps) AS z(t, w, s, f)
               JOIN novu.workflows wf ON wf.workflow_id = z.w AND jsonb_typeof(wf.steps) = 'array'
               CROSS JOIN LATERAL jsonb_array_elements(wf.steps) WITH ORDINALITY AS s(step, n)
               LEFT JOIN novu.events e ON e.transaction_id = z.t
              WHERE s.step ->> 'type' = 'digest' AND s.n > COALESCE(z.f, 0)
             ));
    FOR k IN 1 .. COALESCE(cardinality(p_transaction_ids), 0) LOOP
        v_tx := p_transaction_ids[k];
        v_wf := p_workflow_ids[k];
        v_sub := p_subscriber_ids[k];
        v_digest := p_digest_ids[k];
        ctx := CASE WHEN v_digest IS NOT NULL THEN jsonb_build_object('_digest', novu._digest_context(v_digest)) END;
        SELECT * INTO w FROM novu.workflows x WHERE x.workflow_id = v_wf;
        IF NOT FOUND THEN
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, status, detail)
            VALUES (v_tx, v_sub, v_wf, 'Failed', 'Workflow not found');
            CONTINUE;
        END IF;
        SELECT * INTO ev FROM novu.events e WHERE e.transaction_id = v_tx;
        SELECT * INTO sub FROM novu.subscribers s WHERE s.subscriber_id = v_sub;
        profile := CASE WHEN sub.subscriber_id IS NOT NULL THEN jsonb_build_object(
                       'subscriberId', sub.subscriber_id, 'firstName', sub.first_name, 'lastName', sub.last_name,
                       'email', sub.email, 'phone', sub.phone, 'avatar', sub.avatar, 'locale', sub.locale,
                       'timezone', sub.timezone, 'data', sub.data, 'isOnline', sub.is_online,
                       'lastOnlineAt', novu._iso(sub.last_online_at)) END;
        nsteps := jsonb_array_length(w.steps);
        i := COALESCE(p_from_steps[k], 0);
        WHILE i < nsteps LOOP
            st := w.steps -> i;
            stype := st ->> 'type';
            raw := jsonb_build_object('stepId', novu._step_id(st, i), 'stepIndex', i);
            IF st ? 'filters' AND NOT novu._filters_pass(st -> 'filters', w.steps, COALESCE(ev.payload, '{}'), profile,
                                                         sub.is_online, sub.last_online_at, v_tx, v_sub) THEN
                INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                VALUES (v_tx, v_sub, v_wf, stype, 'Warning', 'Step was filtered based on steps filters', raw);
                i := i + 1;
                CONTINUE;
            END IF;
            IF stype = 'delay' THEN
                due := NULL;
                err := NULL;
                IF st ? 'delayPath' THEN
                    t := ev.payload #>> novu._payload_path(st ->> 'delayPath');
                    IF t IS NULL THEN
                        err := format('Delay failed: payload.%s is missing', regexp_replace(st ->> 'delayPath', '^payload\.', ''));
                    ELSIF NOT t ~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$' THEN
                        err := format('Delay failed: payload.%s is not an ISO time', regexp_replace(st ->> 'delayPath', '^payload\.', ''));
                    ELSE
                        BEGIN
                            due := t::timestamptz;
                        EXCEPTION WHEN OTHERS THEN
                            err := format('Delay failed: payload.%s is not an ISO time', regexp_replace(st ->> 'delayPath', '^payload\.', ''));
                        END;
                        IF due <= now() THEN
                            err := format('Delay failed: payload.%s (%s) is in the past',
                                          regexp_replace(st ->> 'delayPath', '^payload\.', ''), t);
                        END IF;
                    END IF;
                ELSE
                    d := novu._step_interval(st -> 'amount', st -> 'unit');
                    IF ev.overrides ? 'delay' THEN
                        d := novu._step_interval(ev.overrides -> 'delay' -> 'amount', ev.overrides -> 'delay' -> 'unit');
                        IF d IS NULL THEN
                            err := 'Delay failed: overrides.delay must be {"amount": a positive integer, "unit": seconds ... months}, at most a year';
                        END IF;
                    END IF;
                    due := now() + d;
                END IF;
                IF err IS NOT NULL THEN
                    INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                    VALUES (v_tx, v_sub, v_wf, 'delay', 'Failed', err, raw);
                    EXIT;
                END IF;
                INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_id, due_at)
                VALUES ('delay', v_tx, v_wf, v_sub, i, v_digest, due);
                INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                VALUES (v_tx, v_sub, v_wf, 'delay', 'Pending', 'Step delayed until ' || novu._iso(due),
                        raw || jsonb_build_object('dueAt', novu._iso(due)));
                EXIT;
            ELSIF stype = 'digest' THEN
                EXIT WHEN novu._digest_join(v_tx, ev.id, v_wf, v_sub, i, st, COALESCE(ev.payload, '{}')) <> 'through';
                -- let through at once (backoff): the steps after it see no digest
                v_digest := NULL;
                ctx := NULL;
            ELSE
                RETURN QUERY
                SELECT x.id, x.attempts, x.transaction_id, x.workflow_id, x.subscriber_id, x.device_token,
                       x.integration_id, x.payload, x.overrides, x.actor,
                       CASE WHEN ctx IS NULL THEN x.step ELSE x.step || ctx END,
                       x.step_key || COALESCE('/' || v_digest, ''), x.subscriber
                  FROM novu._expand(ARRAY[v_tx], ARRAY[v_wf], ARRAY[v_sub], GREATEST(p_lease_limit - leased, 0),
                                    p_lease_ms, ARRAY[i]) x;
                GET DIAGNOSTICS n = ROW_COUNT;
                leased := leased + n;
                IF v_digest IS NOT NULL THEN
                    UPDATE novu.deliveries dl SET digest_id = v_digest
                     WHERE dl.transaction_id = v_tx AND dl.subscriber_id = v_sub AND dl.step_index = i
                       AND dl.digest_id IS NULL;
                END IF;
            END IF;
            i := i + 1;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._advance(text[], text[], text[], integer[], bigint[], integer, integer) IS 'Internal (workers): run notifications of staged workflows step by step from a step on, up to the next delay or digest';

CREATE OR REPLACE FUNCTION novu._start(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                            p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    pt text[];
    pw text[];
    ps text[];
    st text[];
    sw text[];
    ss text[];
    n integer := 0;
    done_n bigint[];
    gid bigint[];
    glead text[];
    gdue timestamptz[];
    gnew boolean[];
    cn bigint[];
    ct text[];
    cw text[];
    cs text[];
    cg bigint[];
    cev bigint[];
    cpay jsonb[];
    craw jsonb[];
BEGIN
    IF NOT EXISTS (SELECT FROM novu.workflows w WHERE w.workflow_id = ANY (p_workflow_ids) AND w.staged) THEN
        RETURN QUERY SELECT * FROM novu._expand(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_lease_limit, p_lease_ms);
        RETURN;
    END IF;
    SELECT array_agg(z.t ORDER BY z.n) FILTER (WHERE NOT COALESCE(w.staged, false)),
           array_agg(z.w ORDER BY z.n) FILTER (WHERE NOT COALESCE(w.staged, false)),
           array_agg(z.s ORDER BY z.n) FILTER (WHERE NOT COALESCE(w.staged, false)),
           array_agg(z.t ORDER BY z.n) FILTER (WHERE w.staged),
           array_agg(z.w ORDER BY z.n) FILTER (WHERE w.staged),
           array_agg(z.s ORDER BY z.n) FILTER (WHERE w.staged)
      INTO pt, pw, ps, st, sw, ss
      FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids) WITH ORDINALITY AS z(t, w, s, n)
      LEFT JOIN novu.workflows w ON w.workflow_id = z.w;
    IF pt IS NOT NULL THEN
        RETURN QUERY SELECT * FROM novu._expand(pt, pw, ps, p_lease_limit, p_lease_ms);
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    IF st IS NULL THEN
        RETURN;
    END IF;
    -- Workflows that begin with a delay (no filters on it, no overrides.delay
    -- in the trigger; a scheduled one whose payload time is valid and ahead):
    -- the delay rows of all those notifications are written together; the
    -- others go step by step (novu._advance, which also says what is wrong).
    WITH first AS (
        SELECT z.t, z.w, z.s, z.n, w.steps -> 0 AS d,
               CASE WHEN (w.steps -> 0) ? 'delayPath'
                    THEN novu._delay_time(e.payload #>> novu._payload_path(w.steps -> 0 ->> 'delayPath'))
                    ELSE now() + novu._step_interval(w.steps -> 0 -> 'amount', w.steps -> 0 -> 'unit') END AS due
          FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
          JOIN novu.workflows w ON w.workflow_id = z.w
          LEFT JOIN novu.events e ON e.transaction_id = z.t
         WHERE jsonb_typeof(w.steps) = 'array' AND w.steps -> 0 ->> 'type' = 'delay'
           AND NOT (w.steps -> 0) ? 'filters'
           AND NOT COALESCE(e.overrides ? 'delay', false)),
    cand AS (
        SELECT * FROM first f WHERE f.due > now()),
    ins AS (
        INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, due_at)
        SELECT 'delay', c.t, c.w, c.s, 0, c.due
          FROM cand c
        RETURNING novu.step_runs.transaction_id, novu.step_runs.workflow_id, novu.step_runs.subscriber_id,
                  novu.step_runs.due_at),
    logged AS (
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        SELECT i.transaction_id, i.subscriber_id, i.workflow_id, 'delay', 'Pending', 'Step delayed until ' || novu._iso(i.due_at),
               jsonb_build_object('stepId', novu._step_id(w.steps -> 0, 0), 'stepIndex', 0, 'dueAt', novu._iso(i.due_at))
          FROM ins i JOIN novu.workflows w ON w.workflow_id = i.workflow_id)
    SELECT array_agg(c.n) INTO done_n FROM cand c;
    IF done_n IS NOT NULL THEN
        SELECT array_agg(z.t ORDER BY z.n), array_agg(z.w ORDER BY z.n), array_agg(z.s ORDER BY z.n)
          INTO st, sw, ss
          FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
         WHERE NOT z.n = ANY (done_n);
    END IF;
    IF st IS NULL THEN
        RETURN;
    END IF;
    -- Workflows that begin with a digest (no filters on it, not a backoff
    -- digest): every notification merges into the open window of its key or
    -- opens one, together in one statement (as novu._digest_join does one by
    -- one).  First the digest keys that any of these notifications may reach
    -- are locked in one order, as novu._advance does (it takes them again,
    -- already held): two workers never wait on each other in a cycle.
    PERFORM novu._lock_digest_keys(ARRAY(
             SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' || novu._digest_key(e.payload, s.step))
               FROM unnest(st, sw, ss) AS z(t, w, s)
               JOIN novu.workflows wf ON wf.workflow_id = z.w AND jsonb_typeof(wf.steps) = 'array'
               CROSS JOIN LATERAL jsonb_array_elements(wf.steps) WITH ORDINALITY AS s(step, n)
               LEFT JOIN novu.events e ON e.transaction_id = z.t
              WHERE s.step ->> 'type' = 'digest'
             ));
    -- The key groups of these notifications (g, by workflow, subscriber and
    -- key): each group's open window, locked (a window being closed by
    -- novu._continue is waited for, then no longer waiting), or a new one
    -- whose leader is the group's first notification.  Windows are numbered
    -- by group in arrays: no join between the batch's rows (the planner has no
    -- estimate for them, and a nested loop over them is quadratic).  The
    -- notifications and their groups are kept in arrays too, from this
    -- statement's snapshot, for the merge below: looked up again there, in a
    -- new snapshot, a workflow changed while this statement waited for a
    -- window would add or drop notifications, the groups would be numbered
    -- otherwise, and an event would merge into another subscriber's window.
    WITH cand AS (
        SELECT * FROM novu._digest_first(st, sw, ss)),
    grp AS (
        SELECT c.g, min(c.w) AS w, min(c.s) AS s, min(c.k) AS k, (array_agg(c.t ORDER BY c.n))[1] AS lt,
               min(c.window_len) AS wl
          FROM cand c GROUP BY c.g),
    found AS (
        SELECT g.*, r.id AS rid, r.transaction_id AS rt, r.due_at AS rdue,
               CASE WHEN r.id IS NULL THEN nextval('novu.step_runs_id_seq') ELSE r.id END AS did,
               now() + g.wl AS due
          FROM grp g
          LEFT JOIN LATERAL (
              SELECT x.id, x.transaction_id, x.due_at FROM novu.step_runs x
               WHERE x.kind = 'digest' AND x.status = 'waiting' AND x.workflow_id = g.w
                 AND x.subscriber_id = g.s AND x.step_index = 0 AND x.digest_key = g.k
                 FOR UPDATE) r ON true),
    opened AS (
        INSERT INTO novu.step_runs (id, kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, due_at)
        SELECT f.did, 'digest', f.lt, f.w, f.s, 0, f.k, f.due
          FROM found f WHERE f.rid IS NULL),
    touched AS (
        UPDATE novu.step_runs x SET last_event_at = now(), updated_at = now()
          FROM found f WHERE x.id = f.rid)
    SELECT w.*, c.*
      INTO gid, glead, gdue, gnew, cn, ct, cw, cs, cg, cev, cpay, craw
      FROM (SELECT array_agg(f.did ORDER BY f.g), array_agg(COALESCE(f.rt, f.lt) ORDER BY f.g),
                   array_agg(COALESCE(f.rdue, f.due) ORDER BY f.g), array_agg(f.rid IS NULL ORDER BY f.g)
              FROM found f) w,
           (SELECT array_agg(c.n ORDER BY c.n), array_agg(c.t ORDER BY c.n), array_agg(c.w ORDER BY c.n),
                   array_agg(c.s ORDER BY c.n), array_agg(c.g ORDER BY c.n), array_agg(c.event_id ORDER BY c.n),
                   array_agg(c.payload ORDER BY c.n),
                   array_agg(c.raw || CASE WHEN c.keyed THEN jsonb_build_object('digestKey', c.k) ELSE '{}' END
                             ORDER BY c.n)
              FROM cand c) c;
    -- every notification merged into its group's window, and logged
    WITH cand AS (
        SELECT * FROM unnest(cn, ct, cw, cs, cg, cev, cpay, craw) AS c(n, t, w, s, g, event_id, payload, raw)),
    merged AS (
        INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
        SELECT gid[c.g], c.t, COALESCE(c.event_id, 0), c.payload FROM cand c
        ON CONFLICT DO NOTHING),
    logged AS (
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        SELECT c.t, c.s, c.w, 'digest', 'Pending',
               CASE WHEN gnew[c.g] AND glead[c.g] = c.t
                    THEN 'Digest started: events until ' || novu._iso(gdue[c.g]) || ' are merged'
                    ELSE 'Merged into the digest of transaction ' || glead[c.g] END,
               c.raw || CASE WHEN gnew[c.g] AND glead[c.g] = c.t
                             THEN jsonb_build_object('digestId', gid[c.g], 'dueAt', novu._iso(gdue[c.g]))
                             ELSE jsonb_build_object('digestId', gid[c.g]) END
          FROM cand c
         ORDER BY c.n)
    SELECT array_agg(c.n) INTO done_n FROM cand c;
    IF done_n IS NOT NULL THEN
        SELECT array_agg(z.t ORDER BY z.n), array_agg(z.w ORDER BY z.n), array_agg(z.s ORDER BY z.n)
          INTO st, sw, ss
          FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
         WHERE NOT z.n = ANY (done_n);
    END IF;
    IF st IS NOT NULL THEN
        RETURN QUERY SELECT * FROM novu._advance(st, sw, ss, NULL, NULL, GREATEST(p_lease_limit - n, 0), p_lease_ms);
    END IF;
END
$$;
COMMENT ON FUNCTION novu._start(text[], text[], text[], integer, integer) IS 'Internal (workers): start notifications: plain workflows and those that begin with a delay or a digest set-based, the other staged ones step by step';

CREATE OR REPLACE FUNCTION novu._claim_groups(p_limit integer, p_pids integer[], p_recover boolean,
                                   p_orphan_before timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
-- planned once: a custom plan of the query below took 1-6 ms at every claim
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- most queues hold no request with an idempotency key: one probe of the
    -- partial index (empty then) and nothing is planned
    IF p_limit <= 0 OR NOT EXISTS (SELECT FROM novu.deliveries d
                                    WHERE d.request_key IS NOT NULL AND d.status IN ('pending', 'sending')) THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH due AS MATERIALIZED (
        -- the requests of the first p_limit messages due (deliveries_request_due_idx)
        SELECT x.request_key, min(x.due_at) AS due_at
          FROM ((SELECT d.request_key, d.next_attempt_at AS due_at FROM novu.deliveries d
                  WHERE d.request_key IS NOT NULL AND d.status = 'pending' AND d.next_attempt_at <= now()
                  ORDER BY d.next_attempt_at LIMIT p_limit)
                UNION ALL
                (SELECT d.request_key, d.lease_until FROM novu.deliveries d
                  WHERE d.request_key IS NOT NULL AND d.status = 'sending' AND d.lease_until < now()
                  ORDER BY d.lease_until LIMIT p_limit)
                UNION ALL
                (SELECT d.request_key, d.lease_until FROM novu.deliveries d
                  WHERE p_recover AND d.request_key IS NOT NULL AND d.status = 'sending'
                    AND d.lease_until >= now() AND d.lease_until < p_orphan_before
                    AND d.claimed_by <> ALL (p_pids)
                  LIMIT p_limit)) x
         GROUP BY x.request_key
    ),
    requests AS MATERIALIZED (
        -- their messages not final yet (deliveries_request_idx): how many, whether
        -- all can be taken now, and when the last can
        SELECT due.request_key, due.due_at, count(*) AS size,
               bool_and((d.status = 'pending' AND d.next_attempt_at <= now())
                        OR (d.status = 'sending' AND d.lease_until < now())
                        OR (p_recover AND d.status = 'sending' AND d.lease_until < p_orphan_before
                            AND d.claimed_by <> ALL (p_pids))) AS ready,
               max(CASE WHEN d.status = 'pending' THEN d.next_attempt_at ELSE d.lease_until END) AS last_due
          FROM due JOIN novu.deliveries d ON d.request_key = due.request_key
         WHERE d.status IN ('pending', 'sending')
         GROUP BY due.request_key, due.due_at
    ),
    early AS MATERIALIZED (
        SELECT d.id, r.last_due
          FROM requests r JOIN novu.deliveries d ON d.request_key = r.request_key
         WHERE NOT r.ready AND d.status IN ('pending', 'sending')
           AND CASE WHEN d.status = 'pending' THEN d.next_attempt_at ELSE d.lease_until END < r.last_due
           FOR UPDATE OF d SKIP LOCKED
    ),
    waiting AS (
        UPDATE novu.deliveries d
           SET next_attempt_at = CASE WHEN d.status = 'pending' THEN e.last_due ELSE d.next_attempt_at END,
               lease_until = CASE WHEN d.status = 'sending' THEN e.last_due ELSE d.lease_until END
          FROM early e
         WHERE d.id = e.id
    ),
    taken AS MATERIALIZED (
        -- oldest first, while those before hold fewer than p_limit messages
        SELECT c.request_key, c.size
          FROM (SELECT r.request_key, r.size,
                       sum(r.size) OVER (ORDER BY r.due_at, r.request_key) - r.size AS before
                  FROM requests r WHERE r.ready) c
         WHERE c.before < p_limit
    ),
    chosen AS MATERIALIZED (
        -- each by one worker: the one that locks the request's first message
        -- not final (tried; a worker that cannot takes none of the request's)
        SELECT t.request_key, t.size
          FROM taken t
          JOIN novu.deliveries d ON d.id = (SELECT min(x.id) FROM novu.deliveries x
                                             WHERE x.request_key = t.request_key
                                               AND x.status IN ('pending', 'sending'))
           FOR UPDATE OF d SKIP LOCKED
    ),
    locked AS MATERIALIZED (
        SELECT d.id, d.request_key
          FROM chosen c JOIN novu.deliveries d ON d.request_key = c.request_key
         WHERE d.status IN ('pending', 'sending')
           AND ((d.status = 'pending' AND d.next_attempt_at <= now())
                OR (d.status = 'sending' AND d.lease_until < now())
                OR (p_recover AND d.status = 'sending' AND d.lease_until < p_orphan_before
                    AND d.claimed_by <> ALL (p_pids)))
           FOR UPDATE OF d SKIP LOCKED
    )
    -- a request with a message locked elsewhere (or changed since) waits for the next claim
    SELECT l.id FROM locked l
     WHERE l.request_key IN (SELECT k.request_key FROM locked k JOIN chosen c ON c.request_key = k.request_key
                              GROUP BY k.request_key, c.size HAVING count(*) = c.size);
END
$$;
COMMENT ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz) IS 'Internal (workers): lock the messages of requests with an idempotency key that are due again, whole requests only, for the claim';

CREATE OR REPLACE FUNCTION novu._housekeeping(p_retention interval, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := now() - p_retention;
    ids bigint[];
    txs text[];
    r record;
    n integer;
    total integer := 0;
    pos bigint;
    seen integer;
    last_id bigint;
    done boolean;
BEGIN
    -- finished messages (updated_at >= created_at: a row updated since the
    -- cutoff waits; so does one whose Expo receipt is still to be checked, a
    -- retention shorter than novu.expo_receipt_delay notwithstanding)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'deliveries';
    ids := '{}'; seen := 0; last_id := 0; done := true;
    FOR r IN SELECT d.id, d.created_at, d.status, d.updated_at, d.receipt_at FROM novu.deliveries d
              WHERE d.id > COALESCE(pos, 0) ORDER BY d.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        last_id := r.id; seen := seen + 1;
        IF r.status IN ('sent', 'failed', 'canceled', 'skipped') AND r.updated_at < cutoff AND r.receipt_at IS NULL THEN
            ids := ids || r.id;
        END IF;
        IF cardinality(ids) >= p_limit OR seen >= 2 * p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE last_id END WHERE table_name = 'deliveries';
    DELETE FROM novu.deliveries WHERE id IN (
        SELECT x.id FROM novu.deliveries x WHERE x.id = ANY (ids) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- the activity log (every old row goes)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'execution_details';
    ids := '{}'; done := true;
    FOR r IN SELECT e.id, e.created_at FROM novu.execution_details e WHERE e.id > COALESCE(pos, 0) ORDER BY e.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        ids := ids || r.id;
        IF cardinality(ids) >= p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE ids[cardinality(ids)] END
     WHERE table_name = 'execution_details';
    DELETE FROM novu.execution_details WHERE id = ANY (ids);   -- (activity rows are never locked)
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- triggers fanned out, except those something still needs: a message not
    -- final, a delay or window waiting, or an event merged into a window
    -- still open, which may stay open longer than the retention (step_runs
    -- names only its leader, but every event of it keeps its transactionId
    -- taken, a trigger again being a duplicate, and the one that leads it
    -- after a hand-over needs its payload for the steps after the digest)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'events';
    txs := '{}'; seen := 0; last_id := 0; done := true;
    FOR r IN SELECT e.id, e.transaction_id, e.created_at FROM novu.events e
              WHERE e.status IN ('processed', 'canceled') AND e.id > COALESCE(pos, 0) ORDER BY e.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        last_id := r.id; seen := seen + 1;
        IF NOT EXISTS (SELECT FROM novu.deliveries d
                        WHERE d.transaction_id = r.transaction_id AND d.status IN ('pending', 'sending'))
           AND NOT EXISTS (SELECT FROM novu.step_runs w
                            WHERE w.transaction_id = r.transaction_id AND w.status = 'waiting')
           AND NOT EXISTS (SELECT FROM novu.digest_events m JOIN novu.step_runs w ON w.id = m.digest_id
                            WHERE m.transaction_id = r.transaction_id AND m.status = 'merged'
                              AND w.status = 'waiting') THEN
            txs := txs || r.transaction_id;
        END IF;
        IF cardinality(txs) >= p_limit OR seen >= 2 * p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE last_id END WHERE table_name = 'events';
    DELETE FROM novu.events WHERE transaction_id IN (
        SELECT x.transaction_id FROM novu.events x WHERE x.transaction_id = ANY (txs) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- finished delays and digests (their events cascade), except a digest
    -- whose events a delay still waiting after it, or a message still to
    -- send, will show (step.events)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'step_runs';
    ids := '{}'; seen := 0; last_id := 0; done := true;
    FOR r IN SELECT w.id, w.kind, w.created_at, w.status, w.updated_at FROM novu.step_runs w
              WHERE w.id > COALESCE(pos, 0) ORDER BY w.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        last_id := r.id; seen := seen + 1;
        IF r.status <> 'waiting' AND r.updated_at < cutoff
           AND NOT (r.kind = 'digest'
                    AND (EXISTS (SELECT FROM novu.step_runs x WHERE x.digest_id = r.id AND x.status = 'waiting')
                         OR EXISTS (SELECT FROM novu.deliveries d
                                     WHERE d.digest_id = r.id AND d.status IN ('pending', 'sending')))) THEN
            ids := ids || r.id;
        END IF;
        IF cardinality(ids) >= p_limit OR seen >= 2 * p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE last_id END WHERE table_name = 'step_runs';
    DELETE FROM novu.step_runs WHERE id IN (
        SELECT x.id FROM novu.step_runs x WHERE x.id = ANY (ids) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- subscriber deletions older than the retention that no outbox row still
    -- waiting for its fan-out predates
    DELETE FROM novu.subscriber_deletions x WHERE x.subscriber_id IN (
        SELECT d.subscriber_id FROM novu.subscriber_deletions d
         WHERE d.deleted_at < cutoff
           AND d.last_event_id < COALESCE((SELECT min(e.id) FROM novu.events e
                                            WHERE e.status IN ('pending', 'processing')), 9223372036854775807)
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- digest key locks nobody holds now (made again when needed); not history,
    -- not counted
    DELETE FROM novu.digest_locks x WHERE x.key_hash IN (
        SELECT l.key_hash FROM novu.digest_locks l FOR UPDATE SKIP LOCKED LIMIT p_limit);
    RETURN total;
END
$$;
COMMENT ON FUNCTION novu._housekeeping(interval, integer) IS 'Internal (workers): delete finished messages, activity and outbox rows older than the retention (each table walked by id from where the last call stopped, a bounded number of rows each), and subscriber deletions no pending trigger predates; returns how many';

CREATE OR REPLACE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
                             p_slot integer, p_nslots integer, p_floor bigint DEFAULT 0)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb, handled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    txids text[];
    wfids text[];
    subids text[];
    one text;
    msg text;
    done integer := 0;
    leased integer := 0;
    n integer;
    b novu.events;
    chunk text[];
    tids tid[];
    more tid[];
    budget integer;
    last_id bigint := 0;
    state text;
    blocked text[];
    waiting text[];
BEGIN
    -- claim pending triggers, then mark them processed.  Each worker takes its
    -- own share first (id modulo the workers): workers that scan the same rows
    -- would each try the other's row locks, one by one, to skip them.  With its
    -- share short of p_limit, it helps with the others' (so one wake-up takes
    -- every row committed so far, and a call that took fewer than p_limit rows
    -- tells the worker that nothing more is waiting).  The rows are locked first and
    -- updated by TID after (_take_events): a join of the locking subquery with
    -- the table can be planned (on an outbox analyzed while empty) as a nested
    -- loop that locks and scans again for every row, which took 24 s for a
    -- batch of 10,000.  The scans start at the worker's floor (p_floor: no
    -- trigger below it is or can become pending, see src/queue/floor.c), past
    -- the index entries of triggers already fanned out that VACUUM has not
    -- removed yet (after a burst, hundreds of pages read at every wake-up).
    -- Never above the sequence's last value: a sequence set back (TRUNCATE
    -- ... RESTART IDENTITY) hands out ids below the floor until the worker
    -- sees it.
    p_floor := LEAST(p_floor, (SELECT s.last_value FROM novu.events_id_seq s));
    SELECT array_agg(c.ctid) INTO tids
      FROM (SELECT x.ctid FROM novu.events x
             WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor
               AND (p_nslots <= 1 OR x.id % p_nslots = p_slot) AND x.retry_at IS NULL
             ORDER BY x.id LIMIT p_limit
             FOR UPDATE SKIP LOCKED) c;
    IF p_nslots > 1 AND COALESCE(cardinality(tids), 0) < p_limit THEN
        SELECT array_agg(c.ctid) INTO more
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor AND x.id % p_nslots <> p_slot
                   AND x.retry_at IS NULL
                 ORDER BY x.id LIMIT p_limit - COALESCE(cardinality(tids), 0)
                 FOR UPDATE SKIP LOCKED) c;
        tids := COALESCE(tids || more, tids, more);
    END IF;
    -- Then the triggers set aside whose time has come (novu._create_subscribers),
    -- after every new one: set aside again and again while an application
    -- holds their recipients, they must not come before the triggers behind
    -- them.  (Scanned only when the new ones did not fill the call: then few
    -- triggers are pending.)
    IF COALESCE(cardinality(tids), 0) < p_limit THEN
        SELECT array_agg(c.ctid) INTO more
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor AND x.retry_at <= now()
                 ORDER BY x.id LIMIT p_limit - COALESCE(cardinality(tids), 0)
                 FOR UPDATE SKIP LOCKED) c;
        tids := COALESCE(tids || more, tids, more);
    END IF;
    IF tids IS NOT NULL THEN
        SELECT array_agg(e.transaction_id), array_agg(e.workflow_id), array_agg(r.subscriber_id),
               count(DISTINCT e.transaction_id)
          INTO txids, wfids, subids, done
          FROM novu._take_events(tids) e LEFT JOIN LATERAL unnest(e.recipients) AS r(subscriber_id) ON true;
    END IF;
    IF txids IS NOT NULL THEN
        -- a row written by hand with no recipient, or a null one, fails alone
        -- (novu.trigger writes neither)
        SELECT array_agg(DISTINCT z.t) INTO waiting FROM unnest(txids, subids) AS z(t, s) WHERE z.s IS NULL;
        IF waiting IS NOT NULL THEN
            INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
            SELECT e.transaction_id, e.workflow_id, 'Failed', 'Fan-out failed: the trigger names no recipient, or a null one'
              FROM novu.events e WHERE e.transaction_id = ANY (waiting);
            SELECT array_agg(z.t ORDER BY z.i), array_agg(z.w ORDER BY z.i), array_agg(z.s ORDER BY z.i)
              INTO txids, wfids, subids
              FROM unnest(txids, wfids, subids) WITH ORDINALITY AS z(t, w, s, i)
             WHERE z.t <> ALL (waiting);
        END IF;
    END IF;
    IF txids IS NOT NULL THEN
        -- novu.trigger does not look up a recipient named by a plain
        -- subscriberId: the missing ones are created here, with an empty
        -- profile, except one deleted after its trigger was made (its messages
        -- end skipped, "Subscriber not found")
        -- (OFFSET 0: the deletions are looked up for the missing ones only)
        blocked := novu._create_subscribers(ARRAY(
            SELECT m.s
              FROM (SELECT z.t, z.s FROM unnest(txids, subids) AS z(t, s)
                     WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = z.s)
                    OFFSET 0) m
             WHERE NOT EXISTS (SELECT FROM novu.subscriber_deletions d JOIN novu.events e ON e.transaction_id = m.t
                                WHERE d.subscriber_id = m.s AND d.last_event_id >= e.id)));
        IF cardinality(blocked) > 0 THEN
            -- a recipient another transaction is creating: its triggers wait,
            -- pending again (no other transaction saw them taken) and set
            -- aside for as long as they have waited already, 1 to 30 s, from
            -- now (clock time: this transaction may have begun a while ago),
            -- and this worker goes on with the others
            SELECT array_agg(DISTINCT z.t) INTO waiting FROM unnest(txids, subids) AS z(t, s) WHERE z.s = ANY (blocked);
            UPDATE novu.events e SET status = 'pending', processed_at = NULL,
                   retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - e.created_at, interval '1 second'),
                                                        interval '30 seconds')
             WHERE e.transaction_id = ANY (waiting);
            SELECT array_agg(z.t ORDER BY z.i), array_agg(z.w ORDER BY z.i), array_agg(z.s ORDER BY z.i)
              INTO txids, wfids, subids
              FROM unnest(txids, wfids, subids) WITH ORDINALITY AS z(t, w, s, i)
             WHERE z.t <> ALL (waiting);
            done := done - cardinality(waiting);
        END IF;
    END IF;
    IF txids IS NOT NULL THEN
        BEGIN
            RETURN QUERY SELECT x.*, 0 FROM novu._start(txids, wfids, subids, p_lease_limit, p_lease_ms) x;
            GET DIAGNOSTICS leased = ROW_COUNT;
        EXCEPTION WHEN OTHERS THEN
            -- one bad event (and nothing it returned) is undone; the others go on one by one
            leased := 0;
            FOREACH one IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(txids) u) LOOP
                BEGIN
                    RETURN QUERY
                    SELECT x.*, 0 FROM novu._start(
                        ARRAY(SELECT t FROM unnest(txids, wfids, subids) AS z(t, w, s) WHERE t = one),
                        ARRAY(SELECT w FROM unnest(txids, wfids, subids) AS z(t, w, s) WHERE t = one),
                        ARRAY(SELECT s FROM unnest(txids, wfids, subids) AS z(t, w, s) WHERE t = one),
                        GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    leased := leased + n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
                    -- transient (serialization, deadlock, lock timeout, resources):
                    -- the whole fan-out is undone and tried again, the trigger
                    -- is not failed for good
                    IF left(state, 2) IN ('40', '53', '55', '57', '58') THEN
                        RAISE;
                    END IF;
                    INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
                    SELECT e.transaction_id, e.workflow_id, 'Failed', 'Fan-out failed: ' || msg
                      FROM novu.events e WHERE e.transaction_id = one;
                END;
            END LOOP;
        END;
    END IF;

    -- Broadcasts and triggers naming topics (kind 'topic', see _topic_chunk)
    -- go by chunks, in subscriberId order from the cursor on their outbox row.
    -- One call hands out at most p_limit subscribers in all (each row costs at
    -- least one): a big row takes its chunk and ends the call, small topic
    -- triggers are finished several per call.  The row's cursor moves before
    -- its chunk is expanded, in the same subtransaction: a chunk that fails
    -- to expand is undone whole, and its row is marked processed with the
    -- reason, as a failing trigger is, so that it cannot block the rows after
    -- it.
    budget := p_limit;
    LOOP
        SELECT * INTO b FROM novu.events ev
         WHERE ev.status IN ('pending', 'processing') AND ev.kind <> 'trigger' AND ev.id > last_id
           AND (ev.retry_at IS NULL OR ev.retry_at <= now())
         ORDER BY ev.id LIMIT 1
         FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        last_id := b.id;
        BEGIN
            -- a topic trigger's direct recipients, as a trigger's above
            -- (one another transaction is creating: the row is set aside for a second)
            IF b.kind <> 'broadcast' AND b.cursor IS NULL AND b.recipients IS NOT NULL
               AND cardinality(novu._create_subscribers(ARRAY(
                       SELECT r.s FROM unnest(b.recipients) AS r(s)
                        WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = r.s)
                          AND NOT EXISTS (SELECT FROM novu.subscriber_deletions d
                                           WHERE d.subscriber_id = r.s AND d.last_event_id >= b.id)))) > 0 THEN
                UPDATE novu.events
                   SET retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - created_at, interval '1 second'),
                                                            interval '30 seconds')
                 WHERE novu.events.id = b.id;
                CONTINUE;
            END IF;
            IF b.kind = 'broadcast' THEN
                SELECT array_agg(s.subscriber_id ORDER BY s.subscriber_id) INTO chunk
                  FROM (SELECT sub.subscriber_id FROM novu.subscribers sub
                         -- an index condition: the chunk starts at the cursor (an OR
                         -- with "cursor IS NULL" made it a filter, every chunk
                         -- scanning from the first subscriber: a broadcast O(n^2))
                         WHERE sub.subscriber_id > COALESCE(b.cursor, '')
                         ORDER BY sub.subscriber_id LIMIT budget) s;
            ELSE
                chunk := NULLIF(novu._topic_chunk(b.recipients, b.topics,
                                                  CASE jsonb_typeof(b.actor) WHEN 'string' THEN b.actor #>> '{}'
                                                       ELSE b.actor ->> 'subscriberId' END,
                                                  b.cursor, budget), '{}');
            END IF;
            IF chunk IS NULL OR cardinality(chunk) < budget THEN
                UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
            ELSE
                UPDATE novu.events SET status = 'processing', cursor = chunk[cardinality(chunk)] WHERE novu.events.id = b.id;
            END IF;
            IF chunk IS NOT NULL THEN
                RETURN QUERY
                SELECT x.*, 0 FROM novu._start(array_fill(b.transaction_id, ARRAY[cardinality(chunk)]),
                                                array_fill(b.workflow_id, ARRAY[cardinality(chunk)]), chunk,
                                                GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
                GET DIAGNOSTICS n = ROW_COUNT;
                leased := leased + n;
                done := done + cardinality(chunk);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            -- a transient failure (serialization, deadlock, lock timeout, out of
            -- resources) ends the call: the worker tries this chunk again later
            IF left(state, 2) IN ('40', '53', '55', '57', '58') THEN
                RAISE;
            END IF;
            UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
            INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
            VALUES (b.transaction_id, b.workflow_id, 'Failed', 'Fan-out failed: ' || msg);
            chunk := NULL;
        END;
        done := done + 1;
        budget := budget - GREATEST(COALESCE(cardinality(chunk), 0), 1);
        EXIT WHEN budget <= 0;
    END LOOP;

    -- the count of handled outbox rows travels in one extra row with no message
    RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                        NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, done;
END
$$;
COMMENT ON FUNCTION novu._fanout(integer, integer, integer, integer, integer, bigint) IS 'Internal (workers): create the missing recipients of pending triggers, fan the triggers out, then chunks of broadcasts and topic triggers, into deliveries; returns the messages leased to the caller, then one row with the count handled';

CREATE OR REPLACE FUNCTION novu.delete_message(message_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    msg_id bigint;
    n_delivery integer;
    feed_subscriber text;
BEGIN
    IF delete_message.message_id IS NULL THEN
        RAISE EXCEPTION 'message_id is required'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the "_id" of a message.';
    END IF;
    msg_id := novu._message_id(to_jsonb(delete_message.message_id), 'message_id');
    -- a message a worker is sending now completes (as with novu.cancel): its
    -- row locked here until this transaction ends would stop that worker
    DELETE FROM novu.deliveries d WHERE d.id = msg_id AND d.status <> 'sending';
    GET DIAGNOSTICS n_delivery = ROW_COUNT;
    DELETE FROM novu.in_app_messages m WHERE m.id = msg_id RETURNING m.subscriber_id INTO feed_subscriber;
    IF feed_subscriber IS NOT NULL THEN
        PERFORM novu._notify_in_app(feed_subscriber);
    END IF;
    RETURN n_delivery > 0 OR feed_subscriber IS NOT NULL;
END
$$;
COMMENT ON FUNCTION novu.delete_message(text) IS 'Delete one message (any channel; an in_app one leaves the feed); false if unknown or being sent now (it completes).  The activity log keeps its entries';

CREATE OR REPLACE FUNCTION novu.delete_messages(transaction_id text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    feed_subscribers text[];
BEGIN
    PERFORM novu._check_id(delete_messages.transaction_id, 'transaction_id');
    -- the feed rows locked in feed order first, as the mark functions lock
    -- theirs: deleted in the table's order, two rows of one feed could be
    -- taken in the other order than novu.mark_all_as takes them (a deadlock)
    PERFORM FROM novu.in_app_messages m
      WHERE m.transaction_id = delete_messages.transaction_id
      ORDER BY m.created_at DESC, m.id DESC
      FOR UPDATE;
    -- messages a worker is sending now complete (as with novu.cancel): their
    -- rows locked here until this transaction ends would stop that worker
    WITH d AS (
        DELETE FROM novu.deliveries d
         WHERE d.transaction_id = delete_messages.transaction_id AND d.status <> 'sending'
        RETURNING d.id
    ),
    m AS (
        DELETE FROM novu.in_app_messages m WHERE m.transaction_id = delete_messages.transaction_id
        RETURNING m.id, m.subscriber_id
    )
    SELECT (SELECT count(*) FROM (SELECT d.id FROM d UNION SELECT m.id FROM m) u),
           (SELECT array_agg(DISTINCT m.subscriber_id) FROM m)
      INTO n, feed_subscribers;
    PERFORM novu._notify_in_app(s) FROM unnest(feed_subscribers) s;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu.delete_messages(text) IS 'Delete every message of a transaction (any channel; in_app ones leave the feeds) but those being sent now (they complete); returns how many.  It does not stop what is not fanned out yet: see novu.cancel()';

CREATE OR REPLACE FUNCTION novu._record(p_worker integer, p_ids bigint[], p_attempts integer[], p_statuses text[],
                             p_errors text[], p_message_ids text[], p_delays_ms bigint[], p_receipt_ms bigint[],
                             p_details text[], p_prune_integrations bigint[], p_prune_tokens text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n integer;
BEGIN

    WITH r AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_statuses, p_errors, p_message_ids, p_delays_ms, p_receipt_ms, p_details)
                 AS r(id, attempts, status, error, message_id, delay_ms, receipt_ms, detail)
    ),
    upd AS (
        UPDATE novu.deliveries d
           SET status = r.status,
               last_error = COALESCE(r.error, CASE WHEN r.status = 'sent' THEN NULL ELSE d.last_error END),
               provider_message_id = COALESCE(r.message_id, d.provider_message_id),
               next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + r.delay_ms * interval '1 millisecond'
                                      ELSE d.next_attempt_at END,
               sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
               receipt_at = CASE WHEN r.receipt_ms IS NOT NULL THEN now() + r.receipt_ms * interval '1 millisecond' END,
               lease_until = NULL,
               updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.subscriber_id, d.workflow_id, d.channel, d.provider_id,
                  d.integration_id, r.status, r.error, r.detail
    ),
    log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            provider_id, status, detail)
        SELECT transaction_id, id, subscriber_id, workflow_id, channel, provider_id,
               CASE status WHEN 'sent' THEN 'Success' WHEN 'pending' THEN 'Pending' ELSE 'Failed' END,
               detail
          FROM upd WHERE detail IS NOT NULL
    ),
    counts AS (
        SELECT integration_id,
               count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'pending') AS retried,
               max(error) FILTER (WHERE status <> 'sent') AS last_error
          FROM upd WHERE integration_id IS NOT NULL GROUP BY integration_id
    ),
    stats AS (
        INSERT INTO novu.provider_stats AS s (integration_id, worker, sent, failed, retried, last_error, last_error_at)
        SELECT c.integration_id, p_worker, c.sent, c.failed, c.retried, c.last_error,
               CASE WHEN c.last_error IS NOT NULL THEN now() END
          FROM counts c
         WHERE EXISTS (SELECT FROM novu.integrations i WHERE i.id = c.integration_id)
        ON CONFLICT (integration_id, worker) DO UPDATE SET
            sent = s.sent + excluded.sent,
            failed = s.failed + excluded.failed,
            retried = s.retried + excluded.retried,
            last_error = COALESCE(excluded.last_error, s.last_error),
            last_error_at = COALESCE(excluded.last_error_at, s.last_error_at)
    )
    SELECT count(*)::integer INTO n FROM upd;
    -- Dead tokens and deleted chat webhooks, when a provider said so (rare: a
    -- statement of its own, not planned and opened with every record)
    IF cardinality(p_prune_integrations) > 0 THEN
        -- (a token or webhook an application transaction holds is left: that
        -- transaction is changing it, and waiting for it would stop the worker;
        -- a send to it that fails again prunes it then)
        WITH dead_tokens AS MATERIALIZED (
            SELECT t.ctid AS tid FROM novu.device_tokens t
              JOIN unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
                ON t.integration_id = x.integration_id AND t.device_token = x.token
               FOR UPDATE OF t SKIP LOCKED
        ),
        pruned_tokens AS (
            DELETE FROM novu.device_tokens t USING dead_tokens k WHERE t.ctid = k.tid
            RETURNING t.integration_id
        ),
        dead_webhooks AS MATERIALIZED (
            -- a deleted chat webhook: the subscriber's credential goes
            SELECT c.ctid AS tid FROM novu.subscriber_channels c
              JOIN unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
                ON c.integration_id = x.integration_id AND c.webhook_url = x.token
             WHERE EXISTS (SELECT FROM novu.integrations ig WHERE ig.id = c.integration_id AND ig.channel = 'chat')
               FOR UPDATE OF c SKIP LOCKED
        ),
        pruned_webhooks AS (
            UPDATE novu.subscriber_channels c SET webhook_url = NULL, updated_at = now()
              FROM dead_webhooks k WHERE c.ctid = k.tid
            RETURNING c.integration_id
        ),
        pruned AS (
            SELECT integration_id FROM pruned_tokens UNION ALL SELECT integration_id FROM pruned_webhooks
        )
        INSERT INTO novu.provider_stats AS s (integration_id, worker, tokens_pruned)
        SELECT p.integration_id, p_worker, count(*)
          FROM pruned p
         WHERE EXISTS (SELECT FROM novu.integrations i WHERE i.id = p.integration_id)
         GROUP BY p.integration_id
        ON CONFLICT (integration_id, worker) DO UPDATE SET tokens_pruned = s.tokens_pruned + excluded.tokens_pruned;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[]) IS 'Internal (workers): record a batch of delivery results, the activity log and counters in one statement, and prune the dead tokens named (a second one, only then)';
