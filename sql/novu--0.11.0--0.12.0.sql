/*
 * novu--0.11.0--0.12.0.sql
 *		Upgrade from 0.11.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.12.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.11.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.12.0'" to load this file. \quit

-- recording: the pruning of dead tokens is a statement of its own, run only when a
-- provider named one (before, every record planned and opened two more tables)
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
        WITH pruned_tokens AS (
            DELETE FROM novu.device_tokens t
             USING unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
             WHERE t.integration_id = x.integration_id AND t.device_token = x.token
            RETURNING t.integration_id
        ),
        pruned_webhooks AS (
            -- a deleted chat webhook: the subscriber's credential goes
            UPDATE novu.subscriber_channels c SET webhook_url = NULL, updated_at = now()
              FROM unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
             WHERE c.integration_id = x.integration_id AND c.webhook_url = x.token
               AND EXISTS (SELECT FROM novu.integrations ig WHERE ig.id = c.integration_id AND ig.channel = 'chat')
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

-- digest windows: the leader's "Digest finished: <n> events" is the close's one
-- activity row (a row per merged event made the close a third slower; each event
-- has its "Merged into the digest of transaction <leader>" row, with the window's id)
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

