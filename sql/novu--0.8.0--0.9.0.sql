/*
 * novu--0.8.0--0.9.0.sql
 *		Upgrade from 0.8.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.9.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.8.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.9.0'" to load this file. \quit

-- digest-first workflows: notifications merge into (or open) their windows set-based
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
    h integer;
    gid bigint[];
    glead text[];
    gdue timestamptz[];
    gnew boolean[];
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
    FOR h IN SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' ||
                                      CASE WHEN s.step ? 'digestKey'
                                           THEN COALESCE(e.payload #>> novu._payload_path(s.step ->> 'digestKey'), '')
                                           ELSE '' END)
               FROM unnest(st, sw, ss) AS z(t, w, s)
               JOIN novu.workflows wf ON wf.workflow_id = z.w AND jsonb_typeof(wf.steps) = 'array'
               CROSS JOIN LATERAL jsonb_array_elements(wf.steps) WITH ORDINALITY AS s(step, n)
               LEFT JOIN novu.events e ON e.transaction_id = z.t
              WHERE s.step ->> 'type' = 'digest'
              ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(hashtext('novu.digest'), h);
    END LOOP;
    -- The key groups of these notifications (g, by workflow, subscriber and
    -- key): each group's open window, locked (a window being closed by
    -- novu._continue is waited for, then no longer waiting), or a new one
    -- whose leader is the group's first notification.  Windows are numbered
    -- by group in arrays: no join between the batch's rows (the planner has no
    -- estimate for them, and a nested loop over them is quadratic).
    WITH cand AS (
        SELECT c.*, dense_rank() OVER (ORDER BY c.w, c.s, c.k) AS g
          FROM (SELECT z.t, z.w, z.s, z.n,
                       CASE WHEN (w.steps -> 0) ? 'digestKey'
                            THEN COALESCE(e.payload #>> novu._payload_path(w.steps -> 0 ->> 'digestKey'), '') ELSE '' END AS k,
                       novu._step_interval(w.steps -> 0 -> 'amount', w.steps -> 0 -> 'unit') AS window_len
                  FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
                  JOIN novu.workflows w ON w.workflow_id = z.w
                  LEFT JOIN novu.events e ON e.transaction_id = z.t
                 WHERE jsonb_typeof(w.steps) = 'array' AND w.steps -> 0 ->> 'type' = 'digest'
                   AND NOT (w.steps -> 0) ? 'filters'
                   AND NOT COALESCE((w.steps -> 0 ->> 'backoff')::boolean, false)) c),
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
    SELECT array_agg(f.did ORDER BY f.g), array_agg(COALESCE(f.rt, f.lt) ORDER BY f.g),
           array_agg(COALESCE(f.rdue, f.due) ORDER BY f.g), array_agg(f.rid IS NULL ORDER BY f.g)
      INTO gid, glead, gdue, gnew
      FROM found f;
    -- every notification merged into its group's window, and logged
    WITH cand AS (
        SELECT c.*, dense_rank() OVER (ORDER BY c.w, c.s, c.k) AS g
          FROM (SELECT z.t, z.w, z.s, z.n, e.id AS event_id, COALESCE(e.payload, '{}') AS payload,
                       CASE WHEN (w.steps -> 0) ? 'digestKey'
                            THEN COALESCE(e.payload #>> novu._payload_path(w.steps -> 0 ->> 'digestKey'), '') ELSE '' END AS k,
                       jsonb_build_object('stepId', novu._step_id(w.steps -> 0, 0), 'stepIndex', 0) AS raw,
                       (w.steps -> 0) ? 'digestKey' AS keyed
                  FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
                  JOIN novu.workflows w ON w.workflow_id = z.w
                  LEFT JOIN novu.events e ON e.transaction_id = z.t
                 WHERE jsonb_typeof(w.steps) = 'array' AND w.steps -> 0 ->> 'type' = 'digest'
                   AND NOT (w.steps -> 0) ? 'filters'
                   AND NOT COALESCE((w.steps -> 0 ->> 'backoff')::boolean, false)) c),
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
               c.raw || CASE WHEN c.keyed THEN jsonb_build_object('digestKey', c.k) ELSE '{}' END
                     || CASE WHEN gnew[c.g] AND glead[c.g] = c.t
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


-- _run_steps: one test for 'only channel steps without filters after this step'
CREATE FUNCTION novu._plain_after(steps jsonb, step_index integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_typeof(steps) = 'array'
           AND NOT EXISTS (SELECT FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(step, n)
                            WHERE s.n > step_index + 1
                              AND (s.step ->> 'type' IN ('delay', 'digest') OR s.step ? 'filters'))
$$;
COMMENT ON FUNCTION novu._plain_after(jsonb, integer) IS 'Internal (workers): whether the steps after a step are all channel steps without filters';

REVOKE ALL ON FUNCTION novu._plain_after(jsonb, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._plain_after(jsonb, integer) TO novu_worker;
CREATE OR REPLACE FUNCTION novu._run_steps(p_ids bigint[], p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
    dg bigint[];
BEGIN
    -- Delays followed by channel steps without filters only (the usual "wait,
    -- then send"): all of them done and expanded together, in one statement
    -- of novu._expand (a row per notification and step).  The others go one
    -- by one, step by step (novu._advance).
    SELECT array_agg(x.id ORDER BY u.n) INTO plain
      FROM unnest(p_ids) WITH ORDINALITY AS u(id, n)
      JOIN novu.step_runs x ON x.id = u.id
      JOIN novu.workflows w ON w.workflow_id = x.workflow_id
     WHERE x.status = 'waiting' AND x.kind = 'delay' AND x.digest_id IS NULL
       AND novu._plain_after(w.steps, x.step_index);
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
          FROM d JOIN novu.workflows w ON w.workflow_id = d.workflow_id
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
         WHERE s.n > d.step_index + 1;
        IF tx IS NOT NULL THEN
            RETURN QUERY SELECT * FROM novu._expand(tx, wf, sub, p_lease_limit, p_lease_ms, st);
            GET DIAGNOSTICS leased = ROW_COUNT;
        END IF;
    END IF;
    -- Digest windows followed by channel steps without filters only: closed
    -- together (each for its oldest merged event, the leader; a window left
    -- without events is canceled), their activity logged, and the steps after
    -- them expanded in one statement, with step.events of their window.
    SELECT array_agg(x.id ORDER BY u.n) INTO wins
      FROM unnest(p_ids) WITH ORDINALITY AS u(id, n)
      JOIN novu.step_runs x ON x.id = u.id
      JOIN novu.workflows w ON w.workflow_id = x.workflow_id
     WHERE x.status = 'waiting' AND x.kind = 'digest'
       AND novu._plain_after(w.steps, x.step_index);
    IF wins IS NOT NULL THEN
        tx := NULL;
        WITH lead AS (
            SELECT DISTINCT ON (m.digest_id) m.digest_id, m.transaction_id AS leader,
                   count(*) OVER (PARTITION BY m.digest_id) AS total
              FROM novu.digest_events m
             WHERE m.digest_id = ANY (wins) AND m.status = 'merged'
             ORDER BY m.digest_id, m.event_id),
        closed AS (
            UPDATE novu.step_runs x
               SET status = CASE WHEN l.leader IS NULL THEN 'canceled' ELSE 'done' END,
                   transaction_id = COALESCE(l.leader, x.transaction_id),
                   updated_at = now()
              FROM unnest(wins) AS u(id) LEFT JOIN lead l ON l.digest_id = u.id
             WHERE x.id = u.id
            RETURNING x.id, x.transaction_id, x.workflow_id, x.subscriber_id, x.step_index, x.digest_key,
                      x.status, l.total),
        logged AS (
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            SELECT m.transaction_id, c.subscriber_id, c.workflow_id, 'digest', 'Success',
                   CASE WHEN m.transaction_id = c.transaction_id
                        THEN format('Digest finished: %s event%s', c.total, CASE WHEN c.total = 1 THEN '' ELSE 's' END)
                        ELSE 'Digest finished: sent with transaction ' || c.transaction_id END,
                   jsonb_build_object('stepIndex', c.step_index, 'digestId', c.id, 'digestKey', c.digest_key)
              FROM closed c JOIN novu.digest_events m ON m.digest_id = c.id AND m.status = 'merged'
             WHERE c.status = 'done'
             ORDER BY c.id, m.event_id)
        SELECT array_agg(c.transaction_id ORDER BY array_position(wins, c.id), s.n),
               array_agg(c.workflow_id ORDER BY array_position(wins, c.id), s.n),
               array_agg(c.subscriber_id ORDER BY array_position(wins, c.id), s.n),
               array_agg((s.n - 1)::integer ORDER BY array_position(wins, c.id), s.n),
               array_agg(c.id ORDER BY array_position(wins, c.id), s.n)
          INTO tx, wf, sub, st, dg
          FROM closed c JOIN novu.workflows w ON w.workflow_id = c.workflow_id
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
         WHERE c.status = 'done' AND s.n > c.step_index + 1;
        IF tx IS NOT NULL THEN
            RETURN QUERY
            SELECT x.id, x.attempts, x.transaction_id, x.workflow_id, x.subscriber_id, x.device_token,
                   x.integration_id, x.payload, x.overrides, x.actor,
                   x.step || jsonb_build_object('_digest', novu._digest_context(q.g)),
                   x.step_key || '/' || q.g, x.subscriber
              FROM novu._expand(tx, wf, sub, GREATEST(p_lease_limit - leased, 0), p_lease_ms, st) x
              JOIN (SELECT DISTINCT z.t, z.w, z.s, z.g FROM unnest(tx, wf, sub, dg) AS z(t, w, s, g)) q
                ON q.t = x.transaction_id AND q.w = x.workflow_id AND q.s = x.subscriber_id;
            GET DIAGNOSTICS n = ROW_COUNT;
            leased := leased + n;
            -- the messages not leased here see their window when claimed
            UPDATE novu.deliveries dl SET digest_id = z.g
              FROM unnest(tx, sub, st, dg) AS z(t, s, i, g)
             WHERE dl.transaction_id = z.t AND dl.subscriber_id = z.s AND dl.step_index = z.i
               AND dl.digest_id IS NULL;
        END IF;
    END IF;
    FOR r IN SELECT x.* FROM unnest(p_ids) WITH ORDINALITY AS u(id, n)
               JOIN novu.step_runs x ON x.id = u.id
              WHERE x.status = 'waiting'
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
            SELECT m.transaction_id, r.subscriber_id, r.workflow_id, 'digest', 'Success',
                   CASE WHEN m.transaction_id = leader
                        THEN format('Digest finished: %s event%s', total, CASE WHEN total = 1 THEN '' ELSE 's' END)
                        ELSE 'Digest finished: sent with transaction ' || leader END,
                   jsonb_build_object('stepIndex', r.step_index, 'digestId', r.id, 'digestKey', r.digest_key)
              FROM novu.digest_events m WHERE m.digest_id = r.id AND m.status = 'merged';
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


-- Retried OneSignal requests are the request they retry (issue 11): the key of the
-- request a message went out in, written before it is first sent, and the claim takes
-- a request's messages together (novu._claim_groups).
ALTER TABLE novu.deliveries ADD COLUMN request_key text COLLATE "C";
CREATE INDEX deliveries_request_idx ON novu.deliveries (request_key)
    WHERE request_key IS NOT NULL AND status IN ('pending', 'sending');
CREATE INDEX deliveries_request_due_idx ON novu.deliveries (next_attempt_at)
    WHERE request_key IS NOT NULL AND status = 'pending';

-- Retries of requests with an idempotency key (ProviderOps.request_key: OneSignal).
-- A request whose answer was lost may have been processed, and the provider
-- deduplicates only the same key: a retry must be that request again, the same
-- messages with the same key.  A part of it, or it merged with others, would be
-- another key, delivered again to the ids that had it.  So the claim (queue.c)
-- takes the messages of such a request that are not final yet together or not at
-- all: only when every one of them is due (pending and due, its lease expired, or
-- with p_recover leased before p_orphan_before by a worker not in p_pids), by one
-- worker at a time (a transaction advisory lock on the key, tried, never waited
-- for), all of them locked here (FOR UPDATE SKIP LOCKED: else none).  Requests go
-- oldest first while the messages taken before them number fewer than p_limit:
-- the first whatever its size.  A request some of whose messages are due and
-- others not (results recorded apart) has the due ones wait for the last, so
-- that no claim finds it due in vain meanwhile.  Returns the ids taken, locked;
-- the claim leases them with the others.
CREATE FUNCTION novu._claim_groups(p_limit integer, p_pids integer[], p_recover boolean,
                                   p_orphan_before timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    IF p_limit <= 0 THEN
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
    chosen AS MATERIALIZED (
        -- oldest first, while those before hold fewer than p_limit messages; each
        -- by one worker (the lock is tried only for a request that is taken)
        SELECT c.request_key, c.size
          FROM (SELECT r.request_key, r.size,
                       sum(r.size) OVER (ORDER BY r.due_at, r.request_key) - r.size AS before
                  FROM requests r WHERE r.ready) c
         WHERE CASE WHEN c.before < p_limit
                    THEN pg_try_advisory_xact_lock(hashtextextended(c.request_key, 0)) ELSE false END
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

-- Before a request with an idempotency key (ProviderOps.request_key) is first
-- sent: its key on each of its messages still leased for that attempt, so that
-- whatever claims one of them again retries that request (novu._claim_groups).
-- p_keys[i] is the key of message p_ids[i] at attempt p_attempts[i].  Returns
-- the positions (from 1) written: the worker sends a request only if all of its
-- messages were.
CREATE FUNCTION novu._set_request_keys(p_ids bigint[], p_attempts integer[], p_keys text[])
RETURNS SETOF integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    UPDATE novu.deliveries d SET request_key = r.key
      FROM unnest(p_ids, p_attempts, p_keys) WITH ORDINALITY AS r(id, attempts, key, i)
     WHERE d.id = r.id AND d.attempts = r.attempts AND d.status = 'sending'
    RETURNING r.i::integer
$$;
COMMENT ON FUNCTION novu._set_request_keys(bigint[], integer[], text[]) IS 'Internal (workers): record the idempotency key of a request on its messages before it is first sent';
REVOKE ALL ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION novu._set_request_keys(bigint[], integer[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz),
                          novu._set_request_keys(bigint[], integer[], text[]) TO novu_worker;
