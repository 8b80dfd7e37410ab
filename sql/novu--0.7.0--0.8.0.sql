/*
 * novu--0.7.0--0.8.0.sql
 *		Upgrade from 0.7.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.8.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.7.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.8.0'" to load this file. \quit

-- housekeeping reaches old rows by block range indexes (no scan of the whole history once a minute)
CREATE INDEX events_created_idx ON novu.events USING brin (created_at);
CREATE INDEX deliveries_created_idx ON novu.deliveries USING brin (created_at);
CREATE INDEX step_runs_created_idx ON novu.step_runs USING brin (created_at);
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
    RETURN total;
END
$$;
COMMENT ON FUNCTION novu._housekeeping(interval, integer) IS 'Internal (workers): delete finished messages, activity and outbox rows older than the retention, in batches';


CREATE OR REPLACE FUNCTION novu._check_credentials(p_provider_id text, p_credentials jsonb)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    t jsonb;
    i integer := 0;
    chat boolean;
    url_providers text[] := novu._providers('webhookUrl');
BEGIN
    IF p_credentials IS NULL OR jsonb_typeof(p_credentials) <> 'object' THEN
        RAISE EXCEPTION 'credentials must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"deviceTokens": ["token-1"]}.';
    END IF;
    PERFORM novu._check_size(p_credentials, 'credentials', 65536);
    chat := novu._provider_channel(p_provider_id) = 'chat';
    FOR k IN SELECT jsonb_object_keys(p_credentials) LOOP
        IF k = 'webhookUrl' AND NOT p_provider_id = ANY (url_providers) THEN
            RAISE EXCEPTION 'credentials.webhookUrl is not used by provider "%"', p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Push providers take deviceTokens; webhookUrl is for %s.', array_to_string(url_providers, ', '));
        ELSIF k = 'deviceTokens' AND chat THEN
            RAISE EXCEPTION 'credentials.deviceTokens is not used by provider "%"', p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A chat provider takes the webhook URL: {"webhookUrl": "https://..."}.';
        ELSIF k NOT IN ('deviceTokens', 'webhookUrl') THEN
            RAISE EXCEPTION 'unknown key "%" in credentials', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Subscriber credentials take deviceTokens (push) or webhookUrl (%s).', array_to_string(url_providers, ', '));
        END IF;
    END LOOP;
    IF p_credentials ? 'webhookUrl' THEN
        IF jsonb_typeof(p_credentials -> 'webhookUrl') <> 'string' THEN
            RAISE EXCEPTION 'credentials.webhookUrl must be a string'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the https URL of the webhook.';
        END IF;
        PERFORM novu._check_url(p_credentials ->> 'webhookUrl', 'credentials.webhookUrl');
    ELSIF chat THEN
        RAISE EXCEPTION 'credentials.webhookUrl is required for provider "%"', p_provider_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A chat provider takes the webhook URL: {"webhookUrl": "https://..."}.';
    END IF;
    IF NOT p_credentials ? 'deviceTokens' THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(p_credentials -> 'deviceTokens') <> 'array' THEN
        RAISE EXCEPTION 'credentials.deviceTokens must be an array of non-empty strings'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"deviceTokens": ["token-1", "token-2"]}.';
    END IF;
    IF jsonb_array_length(p_credentials -> 'deviceTokens') > 100 THEN
        RAISE EXCEPTION 'credentials.deviceTokens has too many tokens (%)', jsonb_array_length(p_credentials -> 'deviceTokens')
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store at most 100 device tokens per call.';
    END IF;
    FOR t IN SELECT * FROM jsonb_array_elements(p_credentials -> 'deviceTokens') LOOP
        IF jsonb_typeof(t) <> 'string' OR t #>> '{}' = '' THEN
            RAISE EXCEPTION 'credentials.deviceTokens[%] must be a non-empty string', i
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'deviceTokens is an array of non-empty strings.';
        END IF;
        IF length(t #>> '{}') > 4096 THEN
            RAISE EXCEPTION 'credentials.deviceTokens[%] is too long (% characters)', i, length(t #>> '{}')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A device token has at most 4096 characters.';
        END IF;
        PERFORM novu._check_device_token(p_provider_id, t #>> '{}', format('credentials.deviceTokens[%s]', i));
        i := i + 1;
    END LOOP;
    RETURN ARRAY(SELECT tok FROM jsonb_array_elements_text(p_credentials -> 'deviceTokens') WITH ORDINALITY a(tok, n)
                 GROUP BY tok ORDER BY min(n));
END
$$;
COMMENT ON FUNCTION novu._check_credentials(text, jsonb) IS 'Internal: validate subscriber credentials; returns the de-duplicated device tokens in order';


-- the queue's integration id without a foreign key (see novu.sql: a key check and
-- row lock per inserted message)
ALTER TABLE novu.deliveries DROP CONSTRAINT deliveries_integration_id_fkey;

-- the workflow engine: scheduled delays (delayPath) and digest windows followed by plain
-- channel steps are started and closed set-based, not one notification at a time
-- A delay's scheduled time from its payload value (delayPath): an ISO 8601
-- date or time (UTC without a zone), NULL if it is not one (the step then
-- fails with the reason, see novu._advance).
CREATE FUNCTION novu._delay_time(t text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF t IS NULL OR NOT t ~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$' THEN
        RETURN NULL;
    END IF;
    RETURN t::timestamptz;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION novu._delay_time(text) IS 'Internal: a delayPath value as a time (UTC without a zone), NULL if not an ISO time';
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
    IF st IS NOT NULL THEN
        RETURN QUERY SELECT * FROM novu._advance(st, sw, ss, NULL, NULL, GREATEST(p_lease_limit - n, 0), p_lease_ms);
    END IF;
END
$$;
COMMENT ON FUNCTION novu._start(text[], text[], text[], integer, integer) IS 'Internal (workers): start notifications, staged workflows step by step, the others in one statement';

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
       AND jsonb_typeof(w.steps) = 'array'
       AND NOT EXISTS (SELECT FROM jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
                        WHERE s.n > x.step_index + 1
                          AND (s.step ->> 'type' IN ('delay', 'digest') OR s.step ? 'filters'));
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
       AND jsonb_typeof(w.steps) = 'array'
       AND NOT EXISTS (SELECT FROM jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
                        WHERE s.n > x.step_index + 1
                          AND (s.step ->> 'type' IN ('delay', 'digest') OR s.step ? 'filters'));
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

REVOKE ALL ON FUNCTION novu._delay_time(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._delay_time(text) TO novu_worker;
