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
        k := COALESCE(p_payload #>> novu._payload_path(p_step ->> 'digestKey'), '');
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
             SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' ||
                                      CASE WHEN s.step ? 'digestKey'
                                           THEN COALESCE(e.payload #>> novu._payload_path(s.step ->> 'digestKey'), '')
                                           ELSE '' END)
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
                        IF d IS NULL OR d > interval '1 year' THEN
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
             SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' ||
                                      CASE WHEN s.step ? 'digestKey'
                                           THEN COALESCE(e.payload #>> novu._payload_path(s.step ->> 'digestKey'), '')
                                           ELSE '' END)
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
    n integer;
    total integer := 0;
BEGIN
    -- updated_at >= created_at: "created before the cutoff" only narrows the
    -- search to the old block ranges (the BRIN indexes), it keeps every candidate
    DELETE FROM novu.deliveries WHERE id IN (
        SELECT id FROM novu.deliveries
         WHERE created_at < now() - p_retention
           AND status IN ('sent', 'failed', 'canceled', 'skipped') AND updated_at < now() - p_retention
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM novu.execution_details WHERE id IN (
        SELECT id FROM novu.execution_details WHERE created_at < now() - p_retention LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM novu.events e WHERE e.transaction_id IN (
        SELECT x.transaction_id FROM novu.events x
         WHERE x.status IN ('processed', 'canceled') AND x.created_at < now() - p_retention
           AND NOT EXISTS (SELECT FROM novu.deliveries d
                            WHERE d.transaction_id = x.transaction_id AND d.status IN ('pending', 'sending'))
           AND NOT EXISTS (SELECT FROM novu.step_runs r
                            WHERE r.transaction_id = x.transaction_id AND r.status = 'waiting')
           -- an event merged into a window still open, which may stay open
           -- longer than the retention: step_runs names only its leader, but
           -- every event of it keeps its transactionId taken (a trigger again
           -- is a duplicate), and the one that leads it after a hand-over
           -- needs its payload for the steps after the digest
           AND NOT EXISTS (SELECT FROM novu.digest_events m JOIN novu.step_runs r ON r.id = m.digest_id
                            WHERE m.transaction_id = x.transaction_id AND m.status = 'merged'
                              AND r.status = 'waiting')
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- finished delays and digests (their events cascade)
    DELETE FROM novu.step_runs WHERE id IN (
        SELECT id FROM novu.step_runs
         WHERE created_at < now() - p_retention AND status <> 'waiting' AND updated_at < now() - p_retention
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- subscriber deletions older than the retention that no outbox row still
    -- waiting for its fan-out predates
    DELETE FROM novu.subscriber_deletions x WHERE x.subscriber_id IN (
        SELECT d.subscriber_id FROM novu.subscriber_deletions d
         WHERE d.deleted_at < now() - p_retention
           AND d.last_event_id < COALESCE((SELECT min(e.id) FROM novu.events e
                                            WHERE e.status IN ('pending', 'processing')), 9223372036854775807)
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- digest key locks nobody holds now (made again when needed); not history,
    -- not counted
    DELETE FROM novu.digest_locks x WHERE x.key_hash IN (
        SELECT l.key_hash FROM novu.digest_locks l FOR UPDATE SKIP LOCKED LIMIT p_limit);
    RETURN total;
END
$$;
COMMENT ON FUNCTION novu._housekeeping(interval, integer) IS 'Internal (workers): delete finished messages, activity and outbox rows older than the retention, and subscriber deletions no pending trigger predates, in batches';
