/*
 * novu--0.19.0--0.20.0.sql
 *		Upgrade from 0.19.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.20.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.19.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.20.0'" to load this file. \quit

-- An application transaction left open no longer stalls a worker: a held
-- cancel of a digest window's only event, or a held delete_subscriber, was
-- waited for without bound.  Window locks wait at most novu.fanout_lock_wait
-- (then the trigger or due step is set aside and retried), the in_app sink
-- skips a subscriber whose row is locked, and resource errors (53xxx) set one
-- trigger or step aside instead of failing the whole batch.
-- A backoff digest lets the oldest event of a key through (novu._older_in_flight),
-- whichever worker takes the key's lock first; a fan-out runs its batch in
-- outbox order (novu._take_events returns the ids), due steps of the same time
-- in the order they were written; a worker waits for a digest key another
-- worker holds without a lock_timeout of its own (novu._lock_digest_keys).
-- novu.list_notifications reads the outbox newest first by id, as far as the
-- page needs (it sorted the whole history by created_at at every call).

CREATE FUNCTION novu._window_wait()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prev text := current_setting('lock_timeout');
    wait text := COALESCE(current_setting('novu.fanout_lock_wait', true), '100ms');
BEGIN
    IF prev <> '0' AND prev::interval < wait::interval THEN
        wait := prev;
    END IF;
    PERFORM set_config('lock_timeout', wait, true);
    RETURN prev;
END
$$;
COMMENT ON FUNCTION novu._window_wait() IS 'Internal (workers): bound the wait for a digest window to novu.fanout_lock_wait (lock_timeout); returns the lock_timeout to restore';
REVOKE EXECUTE ON FUNCTION novu._window_wait() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._window_wait() TO novu_worker;

CREATE FUNCTION novu._older_in_flight(p_event_id bigint, p_workflow_id text, p_subscriber_id text,
                                      p_step_index integer, p_step jsonb, p_key text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    staged_before boolean;
    span bigint := 2 * GREATEST(current_setting('novu.batch_size', true)::bigint, 1)
                     * GREATEST(current_setting('novu.workers', true)::bigint, 1);
BEGIN
    IF p_event_id IS NULL THEN
        RETURN false;
    END IF;
    -- a delay or digest before the step: an older trigger still in the outbox
    -- would wait there first; a delay's own rows are what to look at
    SELECT EXISTS (SELECT FROM jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, i)
                    WHERE s.i <= p_step_index AND s.step ->> 'type' IN ('delay', 'digest'))
      INTO staged_before
      FROM novu.workflows w WHERE w.workflow_id = p_workflow_id;
    IF NOT COALESCE(staged_before, false) THEN
        RETURN EXISTS (
            SELECT FROM novu.events e
             WHERE e.id < p_event_id AND e.id >= p_event_id - span AND e.status IN ('pending', 'processing')
               AND e.retry_at IS NULL AND e.kind = 'trigger' AND e.workflow_id = p_workflow_id
               AND p_subscriber_id = ANY (e.recipients) AND novu._digest_key(e.payload, p_step) = p_key);
    END IF;
    RETURN EXISTS (
        SELECT FROM novu.step_runs x JOIN novu.events e ON e.transaction_id = x.transaction_id
         WHERE x.subscriber_id = p_subscriber_id AND x.status = 'waiting' AND x.kind = 'delay'
           AND x.workflow_id = p_workflow_id AND x.step_index < p_step_index AND x.due_at <= clock_timestamp()
           AND e.id < p_event_id AND novu._digest_key(e.payload, p_step) = p_key);
END
$$;
COMMENT ON FUNCTION novu._older_in_flight(bigint, text, text, integer, jsonb, text) IS 'Internal (workers): whether an older event of a digest key is still on its way to that digest, not set aside (backoff order)';
REVOKE EXECUTE ON FUNCTION novu._older_in_flight(bigint, text, text, integer, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._older_in_flight(bigint, text, text, integer, jsonb, text) TO novu_worker;

CREATE FUNCTION novu._digest_keys(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                                  p_from_steps integer[] DEFAULT NULL)
RETURNS integer[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(
        SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' || novu._digest_key(e.payload, s.step))
          FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids) WITH ORDINALITY AS z(t, w, s, i)
          JOIN novu.workflows wf ON wf.workflow_id = z.w AND jsonb_typeof(wf.steps) = 'array'
          CROSS JOIN LATERAL jsonb_array_elements(wf.steps) WITH ORDINALITY AS s(step, n)
          LEFT JOIN novu.events e ON e.transaction_id = z.t
         WHERE s.step ->> 'type' = 'digest' AND s.n > COALESCE(p_from_steps[z.i], 0))
$$;
COMMENT ON FUNCTION novu._digest_keys(text[], text[], text[], integer[]) IS 'Internal (workers): the digest keys notifications may reach from a step on, for novu._lock_digest_keys';
REVOKE EXECUTE ON FUNCTION novu._digest_keys(text[], text[], text[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._digest_keys(text[], text[], text[], integer[]) TO novu_worker;

GRANT UPDATE (updated_at) ON novu.subscribers TO novu_worker;

-- a worker's wait for a digest key another worker holds is not cut short
ALTER FUNCTION novu._lock_digest_keys(integer[]) SET lock_timeout = 0;

-- its result gains the outbox id: dropped and made again
DROP FUNCTION novu._take_events(tid[]);
CREATE FUNCTION novu._take_events(p_tids tid[])
RETURNS TABLE (id bigint, transaction_id text, workflow_id text, recipients text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE novu.events ev SET status = 'processed', processed_at = now()
     WHERE ev.ctid = ANY (p_tids) AND ev.status = 'pending'
    RETURNING ev.id, ev.transaction_id, ev.workflow_id, ev.recipients;
END
$$;
COMMENT ON FUNCTION novu._take_events(tid[]) IS 'Internal (workers): mark locked outbox rows processed, by TID';
REVOKE EXECUTE ON FUNCTION novu._take_events(tid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._take_events(tid[]) TO novu_worker;

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
    prev_wait text;
BEGIN
    IF p_step ? 'digestKey' THEN
        k := novu._digest_key(p_payload, p_step);
        raw := raw || jsonb_build_object('digestKey', k);
    END IF;
    PERFORM novu._lock_digest_keys(ARRAY[hashtext(p_workflow_id || '/' || p_subscriber_id || '/' || p_step_index || '/' || k)]);
    prev_wait := novu._window_wait();
    SELECT * INTO r FROM novu.step_runs x
     WHERE x.kind = 'digest' AND x.status = 'waiting' AND x.workflow_id = p_workflow_id
       AND x.subscriber_id = p_subscriber_id AND x.step_index = p_step_index AND x.digest_key = k
       FOR UPDATE;
    IF r.id IS NOT NULL THEN
        PERFORM set_config('lock_timeout', prev_wait, true);
        INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
        VALUES (r.id, p_transaction_id, COALESCE(p_event_id, 0), COALESCE(p_payload, '{}'))
        ON CONFLICT DO NOTHING;
        UPDATE novu.step_runs x SET last_event_at = now(), updated_at = now() WHERE x.id = r.id;
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        VALUES (p_transaction_id, p_subscriber_id, p_workflow_id, 'digest', 'Pending',
                'Merged into the digest of transaction ' || r.transaction_id, raw || jsonb_build_object('digestId', r.id));
        RETURN 'merged';
    END IF;
    PERFORM set_config('lock_timeout', prev_wait, true);
    IF COALESCE((p_step ->> 'backoff')::boolean, false) THEN
        backoff := COALESCE(novu._step_interval(p_step -> 'backoffAmount', p_step -> 'backoffUnit'), window_len);
        IF NOT EXISTS (SELECT FROM novu.step_runs x
                        WHERE x.kind = 'digest' AND x.workflow_id = p_workflow_id AND x.subscriber_id = p_subscriber_id
                          AND x.step_index = p_step_index AND x.digest_key = k AND x.last_event_at > now() - backoff) THEN
            -- the oldest event goes through: while an older one is still on
            -- its way here, this one is set aside to merge behind it
            -- (SQLSTATE NV001: novu._fanout and novu._continue take it again
            -- a second later)
            IF novu._older_in_flight(p_event_id, p_workflow_id, p_subscriber_id, p_step_index, p_step, k) THEN
                RAISE EXCEPTION 'novu: an older event of this digest key is on its way here in another worker'
                    USING ERRCODE = 'NV001';
            END IF;
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
    PERFORM novu._lock_digest_keys(novu._digest_keys(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_from_steps));
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
    prev_wait text;
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
    PERFORM novu._lock_digest_keys(novu._digest_keys(st, sw, ss));
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
    -- A window another transaction holds is waited for a moment at most
    -- (novu._window_wait).
    prev_wait := novu._window_wait();
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
    PERFORM set_config('lock_timeout', prev_wait, true);
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

CREATE OR REPLACE FUNCTION novu._continue(p_limit integer, p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb, handled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
    one bigint;
    leased integer := 0;
    n integer;
    msg text;
    state text;
    prev_wait text;
BEGIN
    -- (steps due at the same time run in the order they were written)
    SELECT array_agg(c.id ORDER BY c.due_at, c.id) INTO ids
      FROM (SELECT x.id, x.due_at FROM novu.step_runs x
             WHERE x.status = 'waiting' AND x.due_at <= now()
             ORDER BY x.due_at LIMIT p_limit
             FOR UPDATE SKIP LOCKED) c;
    IF ids IS NOT NULL THEN
        BEGIN
            RETURN QUERY SELECT x.*, 0 FROM novu._run_steps(ids, p_lease_limit, p_lease_ms) x;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            -- transient (serialization, deadlock, shutdown, I/O): the claim is
            -- tried again.  A lock held past the wait (a digest window an
            -- application is canceling) or out of resources: one by one, and
            -- the rows that meet it again are set aside below.
            IF left(state, 2) IN ('40', '55', '57', '58') AND state <> '55P03' THEN
                RAISE;
            END IF;
            prev_wait := current_setting('lock_timeout');
            IF state = '55P03' THEN
                PERFORM set_config('lock_timeout', '1ms', true);
            END IF;
            FOREACH one IN ARRAY ids LOOP
                BEGIN
                    RETURN QUERY SELECT x.*, 0 FROM novu._run_steps(ARRAY[one], GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    leased := leased + n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
                    -- an older event of its backoff digest's key in another
                    -- worker (novu._older_in_flight): due again in a second
                    IF state = 'NV001' THEN
                        UPDATE novu.step_runs x SET due_at = clock_timestamp() + interval '1 second', updated_at = now()
                         WHERE x.id = one;
                        CONTINUE;
                    END IF;
                    -- held past the wait, or out of resources: it stays waiting,
                    -- due again in 1 to 30 s (as long as it is overdue already)
                    IF state = '55P03' OR left(state, 2) = '53' THEN
                        UPDATE novu.step_runs x
                           SET due_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - x.due_at, interval '1 second'),
                                                                  interval '30 seconds'),
                               updated_at = now()
                         WHERE x.id = one;
                        IF state = '55P03' THEN
                            PERFORM set_config('lock_timeout', '1ms', true);
                        END IF;
                        CONTINUE;
                    END IF;
                    IF left(state, 2) IN ('40', '55', '57', '58') THEN
                        RAISE;
                    END IF;
                    UPDATE novu.step_runs x SET status = 'failed', updated_at = now() WHERE x.id = one;
                    INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail)
                    SELECT x.transaction_id, x.subscriber_id, x.workflow_id, x.kind, 'Failed', 'Step failed: ' || msg
                      FROM novu.step_runs x WHERE x.id = one;
                END;
            END LOOP;
            PERFORM set_config('lock_timeout', prev_wait, true);
        END;
    END IF;
    RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                        NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb,
                        COALESCE(cardinality(ids), 0);
END
$$;

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
    prev_wait text;
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
        -- in outbox order (the worker's own share comes before the others'):
        -- the first event of a backoff digest's key is the oldest
        SELECT array_agg(e.transaction_id ORDER BY e.id, r.i), array_agg(e.workflow_id ORDER BY e.id, r.i),
               array_agg(r.subscriber_id ORDER BY e.id, r.i), count(DISTINCT e.transaction_id)
          INTO txids, wfids, subids, done
          FROM novu._take_events(tids) e
          LEFT JOIN LATERAL unnest(e.recipients) WITH ORDINALITY AS r(subscriber_id, i) ON true;
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
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            -- one bad event (and nothing it returned) is undone; the others go on one by one
            leased := 0;
            -- the digest keys of every trigger, in key order first, as novu._start
            -- takes them: locked one trigger at a time while holding the earlier
            -- ones, two workers could wait on each other (a deadlock)
            PERFORM novu._lock_digest_keys(novu._digest_keys(txids, wfids, subids));
            prev_wait := current_setting('lock_timeout');
            IF state = '55P03' THEN
                -- a digest window held by another transaction: the triggers that reach
                -- one are set aside below, after a millisecond's wait each
                PERFORM set_config('lock_timeout', '1ms', true);
            END IF;
            FOREACH one IN ARRAY ARRAY(SELECT u.t FROM unnest(txids) WITH ORDINALITY AS u(t, i)
                                        GROUP BY u.t ORDER BY min(u.i)) LOOP
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
                    -- an older event of its backoff digest's key in another
                    -- worker (novu._older_in_flight): taken again in a second
                    IF state = 'NV001' THEN
                        UPDATE novu.events e SET status = 'pending', processed_at = NULL,
                               retry_at = clock_timestamp() + interval '1 second'
                         WHERE e.transaction_id = one;
                        done := done - 1;
                        CONTINUE;
                    END IF;
                    -- a lock another transaction holds past the wait (a digest
                    -- window an application is canceling), or out of resources
                    -- (memory, disk): this trigger is set aside, pending again
                    -- as novu._create_subscribers' are, and the others go on
                    IF state = '55P03' OR left(state, 2) = '53' THEN
                        UPDATE novu.events e SET status = 'pending', processed_at = NULL,
                               retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - e.created_at, interval '1 second'),
                                                                    interval '30 seconds')
                         WHERE e.transaction_id = one;
                        done := done - 1;
                        IF state = '55P03' THEN
                            PERFORM set_config('lock_timeout', '1ms', true);
                        END IF;
                        CONTINUE;
                    END IF;
                    -- transient (serialization, deadlock, shutdown, I/O): the
                    -- whole fan-out is undone and tried again, the trigger is
                    -- not failed for good
                    IF left(state, 2) IN ('40', '55', '57', '58') THEN
                        RAISE;
                    END IF;
                    INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
                    SELECT e.transaction_id, e.workflow_id, 'Failed', 'Fan-out failed: ' || msg
                      FROM novu.events e WHERE e.transaction_id = one;
                END;
            END LOOP;
            PERFORM set_config('lock_timeout', prev_wait, true);
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
            -- an older event of a backoff digest's key in another worker
            -- (novu._older_in_flight): this chunk is taken again in a second
            IF state = 'NV001' THEN
                UPDATE novu.events SET retry_at = clock_timestamp() + interval '1 second' WHERE novu.events.id = b.id;
                CONTINUE;
            END IF;
            -- a lock held past the wait (a digest window an application is
            -- canceling) or out of resources: this row is set aside (its cursor
            -- unmoved) and the others go on
            IF state = '55P03' OR left(state, 2) = '53' THEN
                UPDATE novu.events
                   SET retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - created_at, interval '1 second'),
                                                            interval '30 seconds')
                 WHERE novu.events.id = b.id;
                CONTINUE;
            END IF;
            -- a transient failure (serialization, deadlock, shutdown, I/O) ends
            -- the call: the worker tries this chunk again later
            IF left(state, 2) IN ('40', '55', '57', '58') THEN
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

CREATE OR REPLACE FUNCTION novu._store_in_app(p_ids bigint[], p_attempts integer[], p_subjects text[], p_contents text[],
                                   p_urls text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    subs text[];
    held bigint[];
    n integer;
BEGIN
    -- the subscribers locked by this transaction, and the messages of those
    -- another one is deleting (locked, still visible): set back to pending
    WITH m AS MATERIALIZED (
        SELECT x.id, x.subscriber_id FROM unnest(p_ids, p_attempts) AS r(id, attempts)
          CROSS JOIN LATERAL (SELECT y.id, y.subscriber_id FROM novu.deliveries y
                               WHERE y.id = r.id AND y.attempts = r.attempts AND y.status || '' = 'sending'
                              OFFSET 0) x),
    locked AS MATERIALIZED (
        SELECT s.subscriber_id FROM novu.subscribers s
         WHERE s.subscriber_id IN (SELECT m.subscriber_id FROM m)
         ORDER BY s.subscriber_id
           FOR KEY SHARE SKIP LOCKED)
    SELECT array_agg(m.id) INTO held
      FROM m
     WHERE NOT EXISTS (SELECT FROM locked l WHERE l.subscriber_id = m.subscriber_id)
       AND EXISTS (SELECT FROM novu.subscribers s WHERE s.subscriber_id = m.subscriber_id);
    IF held IS NOT NULL THEN
        UPDATE novu.deliveries d
           SET status = 'pending', attempts = GREATEST(d.attempts - 1, 0), lease_until = NULL, claimed_by = NULL,
               next_attempt_at = now() + interval '1 second', updated_at = now()
          FROM unnest(p_ids, p_attempts) AS r(id, attempts)
         WHERE d.id = r.id AND r.id = ANY (held) AND d.attempts = r.attempts AND d.status = 'sending';
    END IF;
    WITH r AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_subjects, p_contents, p_urls)
                 AS r(id, attempts, subject, content, url)
         WHERE held IS NULL OR r.id <> ALL (held)
    ),
    upd AS (
        UPDATE novu.deliveries d
           SET status = 'sent', last_error = NULL, sent_at = now(), lease_until = NULL, updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                        AND EXISTS (SELECT FROM novu.subscribers s
                                                     WHERE s.subscriber_id = x.subscriber_id)
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.workflow_id, d.subscriber_id, d.step_index, r.subject, r.content, r.url
    ),
    ins AS (
        INSERT INTO novu.in_app_messages (id, subscriber_id, transaction_id, workflow_id, feed_identifier,
                                          content, subject, avatar, cta, payload, actor)
        SELECT u.id, u.subscriber_id, u.transaction_id, u.workflow_id, st.step ->> 'feedIdentifier',
               u.content, NULLIF(u.subject, ''),
               CASE WHEN jsonb_typeof(st.step -> 'avatar') = 'string' THEN st.step ->> 'avatar'
                    WHEN jsonb_typeof(st.step -> 'avatar') = 'boolean' AND NOT (st.step -> 'avatar')::boolean THEN NULL
                    WHEN jsonb_typeof(ev.actor) = 'object' THEN ev.actor ->> 'avatar' END,
               jsonb_build_object(
                   'type', 'redirect',
                   'data', CASE WHEN u.url IS NOT NULL THEN jsonb_build_object('url', u.url) ELSE '{}'::jsonb END,
                   'action', jsonb_build_object(
                       'status', 'pending',
                       'buttons', COALESCE(st.step -> 'actions', '[]'::jsonb),
                       'result', jsonb_build_object('payload', '{}'::jsonb, 'type', NULL))),
               COALESCE(ev.payload, '{}'::jsonb),
               CASE WHEN jsonb_typeof(ev.actor) = 'object' THEN jsonb_build_object(
                   'subscriberId', ev.actor -> 'subscriberId', 'firstName', ev.actor -> 'firstName',
                   'lastName', ev.actor -> 'lastName', 'avatar', ev.actor -> 'avatar') END
          FROM upd u
          LEFT JOIN novu.events ev ON ev.transaction_id = u.transaction_id
          LEFT JOIN novu.workflows w ON w.workflow_id = u.workflow_id
          CROSS JOIN LATERAL (SELECT w.steps -> u.step_index AS step) st
        ON CONFLICT (id) DO NOTHING
        RETURNING novu.in_app_messages.subscriber_id
    ),
    log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            status, detail)
        SELECT u.transaction_id, u.id, u.subscriber_id, u.workflow_id, 'in_app', 'Success', 'Message created'
          FROM upd u
    ),
    -- claimed before its subscriber was deleted: not stored (its feed went
    -- with it), canceled as novu.delete_subscriber cancels the pending ones
    gone AS (
        UPDATE novu.deliveries d
           SET status = 'canceled', last_error = 'Subscriber deleted', lease_until = NULL, updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                        AND NOT EXISTS (SELECT FROM novu.subscribers s
                                                         WHERE s.subscriber_id = x.subscriber_id)
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.workflow_id, d.subscriber_id
    ),
    gone_log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            status, detail)
        SELECT g.transaction_id, g.id, g.subscriber_id, g.workflow_id, 'in_app', 'Warning',
               'Message canceled: subscriber deleted'
          FROM gone g
    )
    SELECT array_agg(DISTINCT i.subscriber_id), count(*) INTO subs, n FROM ins i;
    PERFORM novu._notify_in_app(s) FROM unnest(subs) s;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION novu.list_notifications(channels jsonb DEFAULT NULL, templates jsonb DEFAULT NULL,
                                        emails jsonb DEFAULT NULL, search text DEFAULT NULL,
                                        page integer DEFAULT 0, transaction_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    chs text[] := novu._check_text_array(list_notifications.channels, 'channels');
    wfs text[] := novu._check_text_array(list_notifications.templates, 'templates');
    ems text[] := novu._check_text_array(list_notifications.emails, 'emails');
    bad text;
    total bigint;
    items jsonb;
    lim bigint;
    off integer;
    page_tx text[];
    page_sub text[];
BEGIN
    SELECT c INTO bad FROM unnest(chs) c WHERE c NOT IN ('push', 'chat', 'in_app', 'email', 'sms') LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown channel "%" in channels', bad
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Channels: push, chat, in_app, email, sms.';
    END IF;
    IF list_notifications.search IS NOT NULL AND (list_notifications.search = '' OR length(list_notifications.search) > 255) THEN
        RAISE EXCEPTION 'search must have 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'search matches part of a subscriberId, an email or a transactionId.';
    END IF;
    IF list_notifications.transaction_id IS NOT NULL THEN
        PERFORM novu._check_id(list_notifications.transaction_id, 'transaction_id');
    END IF;
    PERFORM novu._check_paging(list_notifications.page, 10);
    -- Newest first, by outbox id.  Counted up to 1000 or one past the page,
    -- as novu.feed counts.  The hits carry keys only; the page's ten rows are
    -- built after.  (Planned at each call, plan_cache_mode: the filters left
    -- out fold away.)
    lim := GREATEST(1000, list_notifications.page::bigint * 10 + 11);
    off := list_notifications.page * 10;
    IF list_notifications.search IS NULL AND ems IS NULL THEN
        -- Each status group's index (events_pending_idx, events_done_idx) read
        -- backwards only as far as the page and the count need: sorted by
        -- created_at, every call read and sorted the whole history (1.2 s a
        -- page with a million triggers).  The two branches differ in their
        -- status list only: the planner takes a partial index for a query that
        -- names its predicate, and each one ends at its own LIMIT.
        WITH hits AS MATERIALIZED (
        (SELECT e.id, r.subscriber_id, e.transaction_id
           FROM novu.events e
           CROSS JOIN LATERAL (SELECT u.s FROM unnest(e.recipients) AS u(s) WHERE e.kind = 'trigger'
                               UNION ALL
                               SELECT DISTINCT d.subscriber_id FROM novu.deliveries d
                                WHERE d.transaction_id = e.transaction_id AND e.kind IN ('broadcast', 'topic')) AS r(subscriber_id)
           LEFT JOIN novu.workflows w ON w.workflow_id = e.workflow_id
          WHERE e.status IN ('pending', 'processing')
            AND (list_notifications.transaction_id IS NULL OR e.transaction_id = list_notifications.transaction_id)
            AND (wfs IS NULL OR e.workflow_id = ANY (wfs))
            AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
          ORDER BY e.id DESC, r.subscriber_id
          LIMIT lim)
        UNION ALL
        (SELECT e.id, r.subscriber_id, e.transaction_id
           FROM novu.events e
           CROSS JOIN LATERAL (SELECT u.s FROM unnest(e.recipients) AS u(s) WHERE e.kind = 'trigger'
                               UNION ALL
                               SELECT DISTINCT d.subscriber_id FROM novu.deliveries d
                                WHERE d.transaction_id = e.transaction_id AND e.kind IN ('broadcast', 'topic')) AS r(subscriber_id)
           LEFT JOIN novu.workflows w ON w.workflow_id = e.workflow_id
          WHERE e.status IN ('processed', 'canceled')
            AND (list_notifications.transaction_id IS NULL OR e.transaction_id = list_notifications.transaction_id)
            AND (wfs IS NULL OR e.workflow_id = ANY (wfs))
            AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
          ORDER BY e.id DESC, r.subscriber_id
          LIMIT lim))
        SELECT LEAST(count(*), lim),
               (array_agg(h.transaction_id ORDER BY h.id DESC, h.subscriber_id))[off + 1 : off + 10],
               (array_agg(h.subscriber_id ORDER BY h.id DESC, h.subscriber_id))[off + 1 : off + 10]
          INTO total, page_tx, page_sub
          FROM hits h;
    ELSE
        -- A part of a subscriberId, transactionId or email, or emails: the
        -- matches may lie anywhere in the history, so it is read whole (hash
        -- joins), once for the count (up to lim) and once for the page (a
        -- top-N sort), as before 0.20.0.
        SELECT count(*) INTO total
          FROM (SELECT n.id, n.subscriber_id, n.transaction_id
                  FROM (SELECT e.id, r.s AS subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e CROSS JOIN LATERAL unnest(e.recipients) AS r(s)
                         WHERE e.kind = 'trigger'
                        UNION ALL
                        SELECT e.id, d.subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e
                          CROSS JOIN LATERAL (SELECT DISTINCT dd.subscriber_id FROM novu.deliveries dd
                                               WHERE dd.transaction_id = e.transaction_id) AS d
                         WHERE e.kind IN ('broadcast', 'topic')) n
                  LEFT JOIN novu.subscribers s ON s.subscriber_id = n.subscriber_id
                  LEFT JOIN novu.workflows w ON w.workflow_id = n.workflow_id
                 WHERE (list_notifications.transaction_id IS NULL OR n.transaction_id = list_notifications.transaction_id)
                   AND (wfs IS NULL OR n.workflow_id = ANY (wfs))
                   AND (ems IS NULL OR s.email = ANY (ems))
                   AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
                   AND (list_notifications.search IS NULL
                        OR strpos(n.subscriber_id, list_notifications.search) > 0
                        OR strpos(n.transaction_id, list_notifications.search) > 0
                        OR strpos(lower(s.email), lower(list_notifications.search)) > 0)
                 LIMIT lim) c;
        SELECT array_agg(h.transaction_id ORDER BY h.id DESC, h.subscriber_id),
               array_agg(h.subscriber_id ORDER BY h.id DESC, h.subscriber_id)
          INTO page_tx, page_sub
          FROM (SELECT n.id, n.subscriber_id, n.transaction_id
                  FROM (SELECT e.id, r.s AS subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e CROSS JOIN LATERAL unnest(e.recipients) AS r(s)
                         WHERE e.kind = 'trigger'
                        UNION ALL
                        SELECT e.id, d.subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e
                          CROSS JOIN LATERAL (SELECT DISTINCT dd.subscriber_id FROM novu.deliveries dd
                                               WHERE dd.transaction_id = e.transaction_id) AS d
                         WHERE e.kind IN ('broadcast', 'topic')) n
                  LEFT JOIN novu.subscribers s ON s.subscriber_id = n.subscriber_id
                  LEFT JOIN novu.workflows w ON w.workflow_id = n.workflow_id
                 WHERE (list_notifications.transaction_id IS NULL OR n.transaction_id = list_notifications.transaction_id)
                   AND (wfs IS NULL OR n.workflow_id = ANY (wfs))
                   AND (ems IS NULL OR s.email = ANY (ems))
                   AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
                   AND (list_notifications.search IS NULL
                        OR strpos(n.subscriber_id, list_notifications.search) > 0
                        OR strpos(n.transaction_id, list_notifications.search) > 0
                        OR strpos(lower(s.email), lower(list_notifications.search)) > 0)
                 ORDER BY n.id DESC, n.subscriber_id
                OFFSET off LIMIT 10) h;
    END IF;
    SELECT COALESCE(jsonb_agg(novu._notification_json(
                        ROW(e.transaction_id, e.workflow_id, z.s, e.kind, e.status, e.payload,
                            e.overrides, e.actor, e.created_at, e.processed_at)::novu.notifications, false)
                    ORDER BY z.i), '[]')
      INTO items
      FROM unnest(page_tx, page_sub) WITH ORDINALITY AS z(t, s, i)
      JOIN novu.events e ON e.transaction_id = z.t;
    RETURN jsonb_build_object(
        'totalCount', total,
        'data', items,
        'pageSize', 10,
        'page', list_notifications.page,
        'hasMore', list_notifications.page::bigint * 10 + jsonb_array_length(items) < total);
END
$$;
COMMENT ON FUNCTION novu.list_notifications(jsonb, jsonb, jsonb, text, integer, text) IS 'Activity: notifications newest first (by outbox id), 10 a page, filtered by channels, templates (workflow ids), emails, search (part of subscriberId, email or transactionId) and transactionId: {totalCount, data, pageSize, page, hasMore}; totalCount counts up to 1000 (or one past the page asked for)';
