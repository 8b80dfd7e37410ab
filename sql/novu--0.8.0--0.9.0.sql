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
CREATE FUNCTION novu._digest_first(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[])
RETURNS TABLE (t text, w text, s text, n bigint, event_id bigint, payload jsonb, k text, window_len interval,
               keyed boolean, raw jsonb, g bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.*, dense_rank() OVER (ORDER BY c.w, c.s, c.k) AS g
      FROM (SELECT z.t, z.w, z.s, z.n, e.id, COALESCE(e.payload, '{}'),
                   CASE WHEN (wf.steps -> 0) ? 'digestKey'
                        THEN COALESCE(e.payload #>> novu._payload_path(wf.steps -> 0 ->> 'digestKey'), '') ELSE '' END AS k,
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

REVOKE ALL ON FUNCTION novu._digest_first(text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._digest_first(text[], text[], text[]) TO novu_worker;
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
    SELECT array_agg(f.did ORDER BY f.g), array_agg(COALESCE(f.rt, f.lt) ORDER BY f.g),
           array_agg(COALESCE(f.rdue, f.due) ORDER BY f.g), array_agg(f.rid IS NULL ORDER BY f.g)
      INTO gid, glead, gdue, gnew
      FROM found f;
    -- every notification merged into its group's window, and logged
    WITH cand AS (
        SELECT * FROM novu._digest_first(st, sw, ss)),
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

-- _expand writes each message's digest window (deliveries.digest_id) as it inserts
-- it and gives the leased ones their window's step context: closing digest windows
-- no longer updates their messages after, nor joins them to their contexts
DROP FUNCTION novu._expand(text[], text[], text[], integer, integer, integer[]);
CREATE FUNCTION novu._expand(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                             p_lease_limit integer, p_lease_ms integer, p_steps integer[] DEFAULT NULL,
                             p_digest_ids bigint[] DEFAULT NULL, p_digest_contexts jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT x.transaction_id, x.workflow_id, x.subscriber_id, x.only_step, x.digest_id, x.digest_context
          FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_steps, p_digest_ids, p_digest_contexts)
               AS x(transaction_id, workflow_id, subscriber_id, only_step, digest_id, digest_context)
    ),
    targets AS (
        SELECT i.transaction_id, i.workflow_id, i.subscriber_id, i.digest_id, i.digest_context,
               (s.n - 1)::integer AS step_index, s.step, s.step ->> 'type' AS channel,
               s.step -> 'providers' AS providers,
               i.workflow_id || '/' || (s.n - 1) || '/' || w.updated_at AS step_key,
               sub.subscriber_id IS NOT NULL AS subscriber_exists,
               CASE WHEN sub.subscriber_id IS NOT NULL THEN jsonb_build_object(
                   'subscriberId', sub.subscriber_id, 'firstName', sub.first_name, 'lastName', sub.last_name,
                   'email', sub.email, 'phone', sub.phone, 'avatar', sub.avatar, 'locale', sub.locale,
                   'timezone', sub.timezone, 'data', sub.data) END AS subscriber,
               w.critical OR pref.blocked IS NULL AS allowed
          FROM input i
          JOIN novu.workflows w ON w.workflow_id = i.workflow_id
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
          LEFT JOIN novu.subscribers sub ON sub.subscriber_id = i.subscriber_id
          LEFT JOIN LATERAL (
              SELECT true AS blocked FROM novu.preferences p
               WHERE p.subscriber_id = i.subscriber_id
                 AND (p.workflow_id IS NULL OR p.workflow_id = i.workflow_id)
                 AND (NOT p.enabled OR (p.channels ->> (s.step ->> 'type'))::boolean IS FALSE)
               LIMIT 1) pref ON true
         -- p_steps: that one step of each notification (the workflow engine, novu._advance)
         WHERE i.only_step IS NULL OR s.n = i.only_step + 1
    ),
    expanded AS (
        SELECT t.*, tok.integration_id, tok.provider_id, tok.identifier, tok.device_token,
               nextval('novu.deliveries_id_seq') AS id,
               -- in_app: one message per notification, no target (the feed)
               tok.device_token IS NOT NULL OR (t.channel = 'in_app' AND t.subscriber_exists AND t.allowed) AS deliverable,
               (tok.device_token IS NOT NULL OR (t.channel = 'in_app' AND t.subscriber_exists AND t.allowed))
                 AND sum((tok.device_token IS NOT NULL OR (t.channel = 'in_app' AND t.subscriber_exists AND t.allowed))::integer)
                       OVER (ROWS UNBOUNDED PRECEDING) <= p_lease_limit
                 AS leased
          FROM targets t
          LEFT JOIN LATERAL (
              SELECT d.integration_id, ig.provider_id, ig.identifier, d.device_token
                FROM novu.device_tokens d
                JOIN novu.integrations ig ON ig.id = d.integration_id
               WHERE d.subscriber_id = t.subscriber_id
                 AND ig.active AND ig.channel = t.channel
                 AND (t.providers IS NULL OR t.providers ? ig.provider_id)
              UNION ALL
              -- chat: the webhook URL a subscriber stored for a chat integration
              SELECT c.integration_id, ig.provider_id, ig.identifier, c.webhook_url
                FROM novu.subscriber_channels c
                JOIN novu.integrations ig ON ig.id = c.integration_id
               WHERE t.channel = 'chat' AND c.subscriber_id = t.subscriber_id AND c.webhook_url IS NOT NULL
                 AND ig.active AND ig.channel = 'chat'
                 AND (t.providers IS NULL OR t.providers ? ig.provider_id)
          ) tok ON t.subscriber_exists AND t.allowed
    ),
    inserted AS (
        INSERT INTO novu.deliveries (id, transaction_id, workflow_id, subscriber_id, step_index, channel,
                                     integration_id, provider_id, integration_identifier, device_token,
                                     status, last_error, attempts, claimed_by, lease_until, digest_id)
        SELECT e.id, e.transaction_id, e.workflow_id, e.subscriber_id, e.step_index, e.channel,
               e.integration_id, e.provider_id, e.identifier, e.device_token,
               CASE WHEN NOT e.deliverable THEN 'skipped' WHEN e.leased THEN 'sending' ELSE 'pending' END,
               CASE WHEN NOT e.subscriber_exists THEN 'Subscriber not found'
                    WHEN NOT e.allowed THEN 'Disabled by subscriber preferences'
                    WHEN e.device_token IS NULL AND e.channel = 'chat' THEN 'Subscriber has no chat webhook URL'
                    WHEN NOT e.deliverable THEN 'Subscriber has no device token' END,
               CASE WHEN e.leased THEN 1 ELSE 0 END,
               CASE WHEN e.leased THEN pg_backend_pid() END,
               CASE WHEN e.leased THEN now() + p_lease_ms * interval '1 millisecond' END,
               e.digest_id
          FROM expanded e
        RETURNING novu.deliveries.id, novu.deliveries.transaction_id, novu.deliveries.workflow_id,
                  novu.deliveries.subscriber_id, novu.deliveries.channel, novu.deliveries.status,
                  novu.deliveries.last_error
    ),
    skipped AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel, status, detail)
        SELECT k.transaction_id, k.id, k.subscriber_id, k.workflow_id, k.channel, 'Warning', k.last_error
          FROM inserted k WHERE k.status = 'skipped'
    ),
    no_workflow AS (
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, status, detail)
        SELECT i.transaction_id, i.subscriber_id, i.workflow_id, 'Failed', 'Workflow not found'
          FROM input i
         WHERE NOT EXISTS (SELECT FROM novu.workflows w WHERE w.workflow_id = i.workflow_id)
    )
    SELECT e.id, 1, e.transaction_id, e.workflow_id, e.subscriber_id, e.device_token,
           e.integration_id, ev.payload, ev.overrides, ev.actor,
           CASE WHEN e.digest_context IS NULL THEN e.step
                ELSE e.step || jsonb_build_object('_digest', e.digest_context) END,
           e.step_key || COALESCE('/' || e.digest_id, ''), e.subscriber
      FROM expanded e
      LEFT JOIN novu.events ev ON ev.transaction_id = e.transaction_id
     WHERE e.leased;
END
$$;
COMMENT ON FUNCTION novu._expand(text[], text[], text[], integer, integer, integer[], bigint[], jsonb[]) IS 'Internal (workers): expand notifications into delivery rows, one per step (or the step given) and device token; the first ones leased to the caller and returned for sending';
REVOKE ALL ON FUNCTION novu._expand(text[], text[], text[], integer, integer, integer[], bigint[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._expand(text[], text[], text[], integer, integer, integer[], bigint[], jsonb[]) TO novu_worker;

-- _run_steps: digest windows closed set-based (their events read once; step.events
-- per window, not per message)
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
    -- however large a window).  The windows are marked done, each merged
    -- event gets its activity row (its window's events read again by the
    -- key), and the steps after them are expanded in one statement of
    -- novu._expand, with the window and its context.
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
                                 row_number() OVER w AS k, sum(pg_column_size(m.payload)) OVER w AS bytes
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
                      'Digest finished: sent with transaction ' || x.transaction_id AS merged_detail,
                      jsonb_build_object('stepIndex', x.step_index, 'digestId', x.id, 'digestKey', x.digest_key) AS raw),
        logged AS (
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            SELECT m.transaction_id, c.subscriber_id, c.workflow_id, 'digest', 'Success',
                   CASE WHEN m.transaction_id = c.transaction_id THEN c.lead_detail ELSE c.merged_detail END, c.raw
              FROM (SELECT * FROM closed WHERE status = 'done' ORDER BY id) c
              CROSS JOIN LATERAL (SELECT y.transaction_id, y.event_id FROM novu.digest_events y
                                   WHERE y.digest_id = c.id AND y.status = 'merged' OFFSET 0) m
             ORDER BY c.id, m.event_id)
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
    -- each message found by its primary key in a lateral probe (as in
    -- novu._record): a plan that joins on the leased rows' partial index scans
    -- every leased row once per message (105 us a message in a 20,000 burst)
    UPDATE novu.deliveries d SET request_key = r.key
      FROM unnest(p_ids, p_attempts, p_keys) WITH ORDINALITY AS r(id, attempts, key, i)
      CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                           WHERE x.id = r.id AND x.attempts = r.attempts AND x.status || '' = 'sending'
                          OFFSET 0) l
     WHERE d.ctid = l.tid
    RETURNING r.i::integer
$$;
COMMENT ON FUNCTION novu._set_request_keys(bigint[], integer[], text[]) IS 'Internal (workers): record the idempotency key of a request on its messages before it is first sent';
REVOKE ALL ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION novu._set_request_keys(bigint[], integer[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz),
                          novu._set_request_keys(bigint[], integer[], text[]) TO novu_worker;
-- 0.9.0: novu.trigger no longer looks up a recipient named by a plain
-- subscriberId (an index probe into novu.subscribers on the application's hot
-- path); the fan-out creates the missing ones, except one deleted after its
-- trigger was made (novu.subscriber_deletions).
CREATE TABLE novu.subscriber_deletions (
    subscriber_id   text COLLATE "C" PRIMARY KEY,
    deleted_at      timestamptz NOT NULL,
    last_event_id   bigint NOT NULL             -- novu.events.id: the outbox rows made before it
);
CREATE INDEX subscriber_deletions_deleted_at_idx ON novu.subscriber_deletions (deleted_at);
COMMENT ON TABLE novu.subscriber_deletions IS 'When each subscriberId was last deleted, and the last outbox row made before: those do not create it again at fan-out';
SELECT pg_catalog.pg_extension_config_dump('novu.subscriber_deletions', '');
REVOKE ALL ON novu.subscriber_deletions FROM PUBLIC;
GRANT INSERT (subscriber_id) ON novu.subscribers TO novu_worker;
GRANT SELECT, DELETE ON novu.subscriber_deletions TO novu_worker;
GRANT SELECT ON novu.subscriber_deletions TO novu_admin;

CREATE OR REPLACE FUNCTION novu.delete_subscriber(subscriber_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_it boolean;
BEGIN
    DELETE FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id;
    found_it := FOUND;
    -- a trigger made before now and not fanned out yet must not create it
    -- again (the fan-out creates missing recipients); also when it does not
    -- exist yet because that trigger's fan-out has not run
    INSERT INTO novu.subscriber_deletions AS x (subscriber_id, deleted_at, last_event_id)
    SELECT delete_subscriber.subscriber_id, now(), q.last_value FROM novu.events_id_seq q
    ON CONFLICT ON CONSTRAINT subscriber_deletions_pkey
    DO UPDATE SET deleted_at = excluded.deleted_at, last_event_id = excluded.last_event_id;
    IF found_it THEN
        -- Pending deliveries to it are canceled; sent history stays.
        WITH c AS (
            UPDATE novu.deliveries d SET status = 'canceled', updated_at = now(),
                   last_error = 'Subscriber deleted'
             WHERE d.subscriber_id = delete_subscriber.subscriber_id AND d.status = 'pending'
            RETURNING d.id, d.transaction_id, d.workflow_id, d.channel, d.provider_id)
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id,
                                            channel, provider_id, status, detail)
        SELECT c.transaction_id, c.id, delete_subscriber.subscriber_id, c.workflow_id, c.channel,
               c.provider_id, 'Warning', 'Message canceled: subscriber deleted'
          FROM c;
        -- its waiting delays and digest windows too (a worker continuing one now
        -- holds its row: this waits, then finds it done and leaves it)
        WITH w AS (
            UPDATE novu.step_runs r SET status = 'canceled', updated_at = now()
             WHERE r.subscriber_id = delete_subscriber.subscriber_id AND r.status = 'waiting'
            RETURNING r.transaction_id, r.workflow_id, r.kind, r.step_index)
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail)
        SELECT w.transaction_id, delete_subscriber.subscriber_id, w.workflow_id, w.kind, 'Warning',
               initcap(w.kind) || ' canceled: subscriber deleted'
          FROM w;
    END IF;
    RETURN found_it;
END
$$;
COMMENT ON FUNCTION novu.delete_subscriber(text) IS 'Delete a subscriber with its credentials and preferences; pending deliveries and waiting delays and digests are canceled, history stays; false if unknown';

CREATE OR REPLACE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
                             p_slot integer, p_nslots integer)
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
    -- batch of 10,000.
    SELECT array_agg(c.ctid) INTO tids
      FROM (SELECT x.ctid FROM novu.events x
             WHERE x.status = 'pending' AND x.kind = 'trigger'
               AND (p_nslots <= 1 OR x.id % p_nslots = p_slot)
             ORDER BY x.id LIMIT p_limit
             FOR UPDATE SKIP LOCKED) c;
    IF p_nslots > 1 AND COALESCE(cardinality(tids), 0) < p_limit THEN
        SELECT array_agg(c.ctid) INTO more
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id % p_nslots <> p_slot
                 ORDER BY x.id LIMIT p_limit - COALESCE(cardinality(tids), 0)
                 FOR UPDATE SKIP LOCKED) c;
        tids := COALESCE(tids || more, tids, more);
    END IF;
    IF tids IS NOT NULL THEN
        SELECT array_agg(e.transaction_id), array_agg(e.workflow_id), array_agg(r.subscriber_id),
               count(DISTINCT e.transaction_id)
          INTO txids, wfids, subids, done
          FROM novu._take_events(tids) e CROSS JOIN LATERAL unnest(e.recipients) AS r(subscriber_id);
    END IF;
    IF txids IS NOT NULL THEN
        -- novu.trigger does not look up a recipient named by a plain
        -- subscriberId: the missing ones are created here, with an empty
        -- profile, in subscriberId order (workers creating the same ones wait
        -- for each other in one order), except one deleted after its trigger
        -- was made (its messages end skipped, "Subscriber not found")
        -- (OFFSET 0: the deletions are looked up for the missing ones only)
        INSERT INTO novu.subscribers (subscriber_id)
        SELECT DISTINCT m.s
          FROM (SELECT z.t, z.s FROM unnest(txids, subids) AS z(t, s)
                 WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = z.s)
                OFFSET 0) m
         WHERE NOT EXISTS (SELECT FROM novu.subscriber_deletions d JOIN novu.events e ON e.transaction_id = m.t
                            WHERE d.subscriber_id = m.s AND d.last_event_id >= e.id)
         ORDER BY 1
        ON CONFLICT DO NOTHING;
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
                    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
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
         ORDER BY ev.id LIMIT 1
         FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        last_id := b.id;
        BEGIN
            -- a topic trigger's direct recipients, as a trigger's above
            IF b.kind <> 'broadcast' AND b.cursor IS NULL AND b.recipients IS NOT NULL THEN
                INSERT INTO novu.subscribers (subscriber_id)
                SELECT DISTINCT r.s
                  FROM unnest(b.recipients) AS r(s)
                 WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = r.s)
                   AND NOT EXISTS (SELECT FROM novu.subscriber_deletions d
                                    WHERE d.subscriber_id = r.s AND d.last_event_id >= b.id)
                 ORDER BY 1
                ON CONFLICT DO NOTHING;
            END IF;
            IF b.kind = 'broadcast' THEN
                SELECT array_agg(s.subscriber_id ORDER BY s.subscriber_id) INTO chunk
                  FROM (SELECT sub.subscriber_id FROM novu.subscribers sub
                         WHERE b.cursor IS NULL OR sub.subscriber_id > b.cursor
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
COMMENT ON FUNCTION novu._fanout(integer, integer, integer, integer, integer) IS 'Internal (workers): create the missing recipients of pending triggers, fan the triggers out, then chunks of broadcasts and topic triggers, into deliveries; returns the messages leased to the caller, then one row with the count handled';

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
    RETURN total;
END
$$;
COMMENT ON FUNCTION novu._housekeeping(interval, integer) IS 'Internal (workers): delete finished messages, activity and outbox rows older than the retention, and subscriber deletions no pending trigger predates, in batches';
