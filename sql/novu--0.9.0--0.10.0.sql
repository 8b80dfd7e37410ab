/*
 * novu--0.9.0--0.10.0.sql
 *		Upgrade from 0.9.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.10.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.9.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.10.0'" to load this file. \quit

-- the workers' quick ANALYZE of the queue tables samples 3,000 rows, not 30,000
CREATE OR REPLACE FUNCTION novu._refresh_queue_stats() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a quick look, on the workers' path: the planner needs the tables' sizes and
-- the shape of the queue columns, not fine histograms (autovacuum's ANALYZE
-- brings those).  A sample of 3,000 rows instead of 30,000: 20,000 deliveries
-- took 211 ms to analyze, now 33 ms.
SET default_statistics_target = 10
AS $$
DECLARE
    t regclass;
    analyzed integer := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['novu.events'::regclass, 'novu.deliveries'::regclass] LOOP
        -- one worker analyzes a table at a time; the others go on
        IF pg_stat_get_live_tuples(t) > 2 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = t), 0) + 1000
           AND pg_try_advisory_xact_lock(pg_catalog.hashtext('novu._refresh_queue_stats'), t::oid::integer) THEN
            IF t = 'novu.events'::regclass THEN
                ANALYZE novu.events (id, transaction_id, status, kind);
            ELSE
                ANALYZE novu.deliveries;
            END IF;
            analyzed := analyzed + 1;
        END IF;
    END LOOP;
    RETURN analyzed;
END
$$;
COMMENT ON FUNCTION novu._refresh_queue_stats() IS 'Worker helper: ANALYZE the outbox and the delivery queue when they hold far more rows than their statistics say';


-- the subscriber object of each message built by C (novu._profile), not by jsonb_build_object
CREATE FUNCTION novu._profile(subscriber_id text, first_name text, last_name text, email text, phone text,
                              avatar text, locale text, timezone text, data jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'novu_profile'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION novu._profile(text, text, text, text, text, text, text, text, jsonb) IS 'Internal (workers): the subscriber object of a message''s templates, {subscriberId, firstName, lastName, email, phone, avatar, locale, timezone, data}, as jsonb_build_object would make it';

REVOKE ALL ON FUNCTION novu._profile(text, text, text, text, text, text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._profile(text, text, text, text, text, text, text, text, jsonb) TO novu_worker;

-- digest windows closed set-based: _expand writes each message's window (digest_id) and
-- gives the leased ones their window's context (two more arguments: dropped and created again)
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
               CASE WHEN sub.subscriber_id IS NOT NULL THEN novu._profile(
                   sub.subscriber_id, sub.first_name, sub.last_name, sub.email, sub.phone, sub.avatar, sub.locale,
                   sub.timezone, sub.data) END AS subscriber,
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

