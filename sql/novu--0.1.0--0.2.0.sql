/* novu--0.1.0--0.2.0.sql: the delivery pipeline's hot statements, made cheaper per message */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Per-worker counter rows: two workers recording results at once no longer
-- wait for each other's transaction on one row per integration.
------------------------------------------------------------------------------

ALTER TABLE novu.provider_stats ADD COLUMN worker integer NOT NULL DEFAULT 0;
ALTER TABLE novu.provider_stats DROP CONSTRAINT provider_stats_pkey;
ALTER TABLE novu.provider_stats ADD PRIMARY KEY (integration_id, worker);
COMMENT ON COLUMN novu.provider_stats.worker IS 'Delivery worker slot that counted these (novu.stat_providers sums them)';

-- (novu.stat_providers sums the rows: created again below)


------------------------------------------------------------------------------
-- Identifiers compare byte by byte (COLLATE "C"): subscriberIds,
-- transactionIds, workflow and integration identifiers and device tokens are
-- keys, not words; every index probe and insert on them was paying for the
-- database's linguistic collation.  The views over these columns are
-- dropped and created again around the change.
------------------------------------------------------------------------------

DROP VIEW novu.messages;
DROP VIEW novu.notifications;
DROP VIEW novu.stat_providers;

ALTER TABLE novu.subscribers ALTER COLUMN subscriber_id TYPE text COLLATE "C";
ALTER TABLE novu.subscriber_channels ALTER COLUMN subscriber_id TYPE text COLLATE "C";
ALTER TABLE novu.device_tokens ALTER COLUMN subscriber_id TYPE text COLLATE "C",
                               ALTER COLUMN device_token TYPE text COLLATE "C";
ALTER TABLE novu.workflows ALTER COLUMN workflow_id TYPE text COLLATE "C";
ALTER TABLE novu.preferences ALTER COLUMN subscriber_id TYPE text COLLATE "C",
                             ALTER COLUMN workflow_id TYPE text COLLATE "C";
ALTER TABLE novu.integrations ALTER COLUMN identifier TYPE text COLLATE "C";
ALTER TABLE novu.events ALTER COLUMN transaction_id TYPE text COLLATE "C",
                        ALTER COLUMN workflow_id TYPE text COLLATE "C",
                        ALTER COLUMN recipients TYPE text[] COLLATE "C";
ALTER TABLE novu.deliveries ALTER COLUMN transaction_id TYPE text COLLATE "C",
                            ALTER COLUMN workflow_id TYPE text COLLATE "C",
                            ALTER COLUMN subscriber_id TYPE text COLLATE "C",
                            ALTER COLUMN integration_identifier TYPE text COLLATE "C",
                            ALTER COLUMN device_token TYPE text COLLATE "C";
ALTER TABLE novu.execution_details ALTER COLUMN transaction_id TYPE text COLLATE "C",
                                   ALTER COLUMN subscriber_id TYPE text COLLATE "C",
                                   ALTER COLUMN workflow_id TYPE text COLLATE "C";

CREATE VIEW novu.messages AS
    SELECT d.id, d.transaction_id, d.workflow_id, d.subscriber_id, d.channel,
           d.provider_id, d.integration_identifier, d.device_token, d.status,
           d.attempts, d.last_error, d.provider_message_id,
           d.created_at, d.updated_at, d.sent_at
      FROM novu.deliveries d
    UNION ALL
    SELECT NULL::bigint, e.transaction_id, e.workflow_id, r.subscriber_id,
           s.step ->> 'type', NULL::text, NULL::text, NULL::text,
           CASE e.status WHEN 'canceled' THEN 'canceled' ELSE 'pending' END,
           0, NULL::text, NULL::text, e.created_at, e.created_at, NULL::timestamptz
      FROM novu.events e
      LEFT JOIN novu.workflows w ON w.workflow_id = e.workflow_id
      CROSS JOIN LATERAL unnest(COALESCE(e.recipients, ARRAY[NULL::text])) AS r(subscriber_id)
      CROSS JOIN LATERAL jsonb_array_elements(COALESCE(w.steps, '[{}]'::jsonb)) AS s(step)
     WHERE e.status IN ('pending', 'canceled');
COMMENT ON VIEW novu.messages IS 'One row per (notification, step, delivery target); status pending, sending, sent, failed, canceled or skipped';

CREATE VIEW novu.notifications AS
    SELECT e.transaction_id, e.workflow_id, r.subscriber_id, e.kind, e.status,
           e.payload, e.overrides, e.actor, e.created_at, e.processed_at
      FROM novu.events e
      CROSS JOIN LATERAL unnest(e.recipients) AS r(subscriber_id)
     WHERE e.kind = 'trigger'
    UNION ALL
    SELECT e.transaction_id, e.workflow_id, d.subscriber_id, e.kind, e.status,
           e.payload, e.overrides, e.actor, e.created_at, e.processed_at
      FROM novu.events e
      CROSS JOIN LATERAL (SELECT DISTINCT dd.subscriber_id
                            FROM novu.deliveries dd
                           WHERE dd.transaction_id = e.transaction_id) AS d
     WHERE e.kind = 'broadcast';
COMMENT ON VIEW novu.notifications IS 'One row per (transaction, subscriber); a broadcast lists its subscribers once fanned out';

CREATE VIEW novu.stat_providers AS
    SELECT i.identifier AS integration_identifier, i.provider_id, i.active,
           (SELECT count(*) FROM novu.deliveries d WHERE d.integration_id = i.id AND d.status = 'pending') AS pending,
           (SELECT count(*) FROM novu.deliveries d WHERE d.integration_id = i.id AND d.status = 'sending') AS in_flight,
           COALESCE(p.sent, 0) AS sent,
           COALESCE(p.failed, 0) AS failed,
           COALESCE(p.retried, 0) AS retried,
           COALESCE(p.tokens_pruned, 0) AS tokens_pruned,
           p.last_error, p.last_error_at
      FROM novu.integrations i
      LEFT JOIN LATERAL (
          SELECT sum(s.sent)::bigint AS sent, sum(s.failed)::bigint AS failed,
                 sum(s.retried)::bigint AS retried, sum(s.tokens_pruned)::bigint AS tokens_pruned,
                 (array_agg(s.last_error ORDER BY s.last_error_at DESC NULLS LAST))[1] AS last_error,
                 max(s.last_error_at) AS last_error_at
            FROM novu.provider_stats s
           WHERE s.integration_id = i.id) p ON true;
COMMENT ON VIEW novu.stat_providers IS 'Per integration: pending, in flight, sent, failed, retried, tokens pruned, last error and when';

GRANT SELECT ON novu.messages, novu.notifications, novu.stat_providers TO novu_app;
GRANT SELECT ON novu.stat_providers TO novu_admin;

------------------------------------------------------------------------------
-- The queue index holds pending messages only; leases have their own index.
-- The claim reads due messages from the first, expired leases from the second.
------------------------------------------------------------------------------

DROP INDEX novu.deliveries_due_idx;
CREATE INDEX deliveries_due_idx ON novu.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_lease_idx ON novu.deliveries (lease_until) WHERE status = 'sending';
-- the next broadcast to fan out, without walking the pending triggers
CREATE INDEX events_broadcast_idx ON novu.events (id) WHERE kind = 'broadcast' AND status IN ('pending', 'processing');

------------------------------------------------------------------------------
-- Fan-out straight into leased rows: the worker that expands a notification
-- sends its first messages itself, so they are written once as 'sending'
-- instead of inserted 'pending' and updated by a claim; the expansion returns
-- what their rendering needs.
------------------------------------------------------------------------------

DROP FUNCTION novu._fanout(integer);
DROP FUNCTION novu._expand(text[], text[], text[]);

-- Expand (transaction, workflow, subscriber) triples into delivery rows: one per
-- step and device token; preferences, missing subscribers and missing tokens give
-- skipped rows with the reason, logged in the activity log.  The first
-- p_lease_limit deliverable rows are leased to the calling worker (status
-- 'sending', attempt 1) and returned with their rendering context; the others
-- wait in the queue as 'pending'.
--
-- Every join here is by key on a batch of at most a few thousand rows: index
-- nested loops always win, and the queue tables' statistics change too fast for
-- the planner to know it (it hashed whole tables), hence the SET clauses.
CREATE FUNCTION novu._expand(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                             p_lease_limit integer, p_lease_ms integer)
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
        SELECT x.transaction_id, x.workflow_id, x.subscriber_id
          FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids) AS x(transaction_id, workflow_id, subscriber_id)
    ),
    targets AS (
        SELECT i.transaction_id, i.workflow_id, i.subscriber_id,
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
    ),
    expanded AS (
        SELECT t.*, tok.integration_id, tok.provider_id, tok.identifier, tok.device_token,
               nextval('novu.deliveries_id_seq') AS id,
               tok.device_token IS NOT NULL
                 AND sum((tok.device_token IS NOT NULL)::integer) OVER (ROWS UNBOUNDED PRECEDING) <= p_lease_limit
                 AS leased
          FROM targets t
          LEFT JOIN LATERAL (
              SELECT d.integration_id, ig.provider_id, ig.identifier, d.device_token
                FROM novu.device_tokens d
                JOIN novu.integrations ig ON ig.id = d.integration_id
               WHERE d.subscriber_id = t.subscriber_id
                 AND ig.active AND ig.channel = t.channel
                 AND (t.providers IS NULL OR t.providers ? ig.provider_id)
          ) tok ON t.subscriber_exists AND t.allowed
    ),
    inserted AS (
        INSERT INTO novu.deliveries (id, transaction_id, workflow_id, subscriber_id, step_index, channel,
                                     integration_id, provider_id, integration_identifier, device_token,
                                     status, last_error, attempts, claimed_by, lease_until)
        SELECT e.id, e.transaction_id, e.workflow_id, e.subscriber_id, e.step_index, e.channel,
               e.integration_id, e.provider_id, e.identifier, e.device_token,
               CASE WHEN e.device_token IS NULL THEN 'skipped' WHEN e.leased THEN 'sending' ELSE 'pending' END,
               CASE WHEN NOT e.subscriber_exists THEN 'Subscriber not found'
                    WHEN NOT e.allowed THEN 'Disabled by subscriber preferences'
                    WHEN e.device_token IS NULL THEN 'Subscriber has no device token' END,
               CASE WHEN e.leased THEN 1 ELSE 0 END,
               CASE WHEN e.leased THEN pg_backend_pid() END,
               CASE WHEN e.leased THEN now() + p_lease_ms * interval '1 millisecond' END
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
           e.integration_id, ev.payload, ev.overrides, ev.actor, e.step, e.step_key, e.subscriber
      FROM expanded e
      LEFT JOIN novu.events ev ON ev.transaction_id = e.transaction_id
     WHERE e.leased;
END
$$;
COMMENT ON FUNCTION novu._expand(text[], text[], text[], integer, integer) IS 'Internal (workers): expand notifications into delivery rows, one per step and device token; the first ones leased to the caller and returned for sending';

-- Fan out pending outbox rows: trigger events in one set-based statement (one by
-- one if that fails, so a bad event cannot block the others), then one chunk of
-- at most p_limit subscribers of one broadcast.  Returns the rows leased to the
-- caller (at most p_lease_limit, see _expand); *handled (OUT) is the number of
-- outbox rows and broadcast subscribers handled.
CREATE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
                             p_slot integer, p_nslots integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb, handled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
    pass integer;
BEGIN
    -- claim pending triggers and mark them processed in one statement.  Each
    -- worker takes its own share first (id modulo the workers): workers that
    -- scan the same rows would each try the other's row locks, one by one, to
    -- skip them.  With its share empty, it helps with the others'.
    FOR pass IN 1..2 LOOP
        WITH e AS (
            UPDATE novu.events ev SET status = 'processed', processed_at = now()
              FROM (SELECT x.transaction_id FROM novu.events x
                     WHERE x.status = 'pending' AND x.kind = 'trigger'
                       AND (pass = 2 OR p_nslots <= 1 OR x.id % p_nslots = p_slot)
                     ORDER BY x.id LIMIT p_limit
                     FOR UPDATE SKIP LOCKED) c
             WHERE ev.transaction_id = c.transaction_id
            RETURNING ev.transaction_id, ev.workflow_id, ev.recipients
        )
        SELECT array_agg(e.transaction_id), array_agg(e.workflow_id), array_agg(r.subscriber_id),
               count(DISTINCT e.transaction_id)
          INTO txids, wfids, subids, done
          FROM e CROSS JOIN LATERAL unnest(e.recipients) AS r(subscriber_id);
        EXIT WHEN txids IS NOT NULL OR p_nslots <= 1;
    END LOOP;
    IF txids IS NOT NULL THEN
        BEGIN
            RETURN QUERY SELECT x.*, 0 FROM novu._expand(txids, wfids, subids, p_lease_limit, p_lease_ms) x;
            GET DIAGNOSTICS leased = ROW_COUNT;
        EXCEPTION WHEN OTHERS THEN
            -- one bad event (and nothing it returned) is undone; the others go on one by one
            leased := 0;
            FOREACH one IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(txids) u) LOOP
                BEGIN
                    RETURN QUERY
                    SELECT x.*, 0 FROM novu._expand(
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

    -- one chunk of one broadcast, in subscriberId order from its cursor
    SELECT * INTO b FROM novu.events ev
     WHERE ev.status IN ('pending', 'processing') AND ev.kind = 'broadcast'
     ORDER BY ev.id LIMIT 1
     FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        SELECT array_agg(s.subscriber_id ORDER BY s.subscriber_id) INTO chunk
          FROM (SELECT sub.subscriber_id FROM novu.subscribers sub
                 WHERE b.cursor IS NULL OR sub.subscriber_id > b.cursor
                 ORDER BY sub.subscriber_id LIMIT p_limit) s;
        IF chunk IS NOT NULL THEN
            RETURN QUERY
            SELECT x.*, 0 FROM novu._expand(array_fill(b.transaction_id, ARRAY[cardinality(chunk)]),
                                            array_fill(b.workflow_id, ARRAY[cardinality(chunk)]), chunk,
                                            GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
            done := done + cardinality(chunk);
        END IF;
        IF chunk IS NULL OR cardinality(chunk) < p_limit THEN
            UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
        ELSE
            UPDATE novu.events SET status = 'processing', cursor = chunk[cardinality(chunk)] WHERE novu.events.id = b.id;
        END IF;
        done := done + 1;
    END IF;

    -- the count of handled outbox rows travels in one extra row with no message
    RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                        NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, done;
END
$$;
COMMENT ON FUNCTION novu._fanout(integer, integer, integer, integer, integer) IS 'Internal (workers): fan out pending triggers and one chunk of a broadcast into deliveries; returns the messages leased to the caller, then one row with the count handled';

------------------------------------------------------------------------------
-- Recording: each result finds its row by primary key, in a lateral probe the
-- planner cannot turn into a scan of every leased row (see _expand; the
-- status test is written "status || ''" so that the partial index of leased
-- rows, whose statistics are always stale, is never chosen instead), and the
-- row is updated by its tuple id: a row updated meanwhile by anyone else (a
-- new lease, a cancel) no longer matches and is left alone.  Counters go to
-- the worker's own row.
------------------------------------------------------------------------------

DROP FUNCTION novu._record(bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[]);
DROP FUNCTION novu._record_receipts(bigint[], text[], text[], bigint[], text[], bigint[], text[]);

-- Record a batch of delivery results in one statement: statuses, the activity
-- log, pruned tokens and the counters of worker p_worker.  A row is updated only
-- if it is still the attempt this worker claimed (a lease that expired and was
-- claimed again is left to its new owner).
CREATE FUNCTION novu._record(p_worker integer, p_ids bigint[], p_attempts integer[], p_statuses text[],
                             p_errors text[], p_message_ids text[], p_delays_ms bigint[], p_receipt_ms bigint[],
                             p_details text[], p_prune_integrations bigint[], p_prune_tokens text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
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
    pruned AS (
        DELETE FROM novu.device_tokens t
         USING unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
         WHERE t.integration_id = x.integration_id AND t.device_token = x.token
        RETURNING t.integration_id
    ),
    counts AS (
        SELECT integration_id,
               count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'pending') AS retried,
               max(error) FILTER (WHERE status <> 'sent') AS last_error
          FROM upd WHERE integration_id IS NOT NULL GROUP BY integration_id
    ),
    prune_counts AS (
        SELECT integration_id, count(*) AS n FROM pruned GROUP BY integration_id
    ),
    stats AS (
        INSERT INTO novu.provider_stats AS s (integration_id, worker, sent, failed, retried, tokens_pruned,
                                              last_error, last_error_at)
        SELECT COALESCE(c.integration_id, p.integration_id), p_worker, COALESCE(c.sent, 0), COALESCE(c.failed, 0),
               COALESCE(c.retried, 0), COALESCE(p.n, 0), c.last_error,
               CASE WHEN c.last_error IS NOT NULL THEN now() END
          FROM counts c FULL JOIN prune_counts p ON p.integration_id = c.integration_id
         WHERE EXISTS (SELECT FROM novu.integrations i WHERE i.id = COALESCE(c.integration_id, p.integration_id))
        ON CONFLICT (integration_id, worker) DO UPDATE SET
            sent = s.sent + excluded.sent,
            failed = s.failed + excluded.failed,
            retried = s.retried + excluded.retried,
            tokens_pruned = s.tokens_pruned + excluded.tokens_pruned,
            last_error = COALESCE(excluded.last_error, s.last_error),
            last_error_at = COALESCE(excluded.last_error_at, s.last_error_at)
    )
    SELECT count(*)::integer INTO n FROM upd;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[]) IS 'Internal (workers): record a batch of delivery results, the activity log, pruned tokens and counters in one statement';

-- Record checked receipts: ok (done), failed (a sent message turns failed),
-- pending (to be sent again), later (check again), expired (no receipt came).
CREATE FUNCTION novu._record_receipts(p_worker integer, p_ids bigint[], p_statuses text[], p_errors text[],
                                      p_delays_ms bigint[], p_details text[], p_prune_integrations bigint[],
                                      p_prune_tokens text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    n integer;
BEGIN

    WITH r AS (
        SELECT * FROM unnest(p_ids, p_statuses, p_errors, p_delays_ms, p_details)
                 AS r(id, status, error, delay_ms, detail)
    ),
    upd AS (
        UPDATE novu.deliveries d
           SET status = CASE WHEN r.status IN ('failed', 'pending') THEN r.status ELSE d.status END,
               last_error = CASE WHEN r.status IN ('failed', 'pending') THEN r.error ELSE d.last_error END,
               next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + r.delay_ms * interval '1 millisecond'
                                      ELSE d.next_attempt_at END,
               receipt_at = CASE WHEN r.status = 'later' THEN now() + r.delay_ms * interval '1 millisecond' END,
               updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.status || '' = 'sent' OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.subscriber_id, d.workflow_id, d.channel, d.provider_id,
                  d.integration_id, r.status, r.detail
    ),
    log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            provider_id, status, detail)
        SELECT transaction_id, id, subscriber_id, workflow_id, channel, provider_id,
               CASE status WHEN 'pending' THEN 'Pending' ELSE 'Failed' END, detail
          FROM upd WHERE detail IS NOT NULL
    ),
    pruned AS (
        DELETE FROM novu.device_tokens t
         USING unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
         WHERE t.integration_id = x.integration_id AND t.device_token = x.token
        RETURNING t.integration_id
    ),
    counts AS (
        SELECT integration_id,
               count(*) FILTER (WHERE status IN ('failed', 'pending')) AS turned,
               count(*) FILTER (WHERE status = 'failed') AS failed
          FROM upd WHERE integration_id IS NOT NULL GROUP BY integration_id
    ),
    stats AS (
        -- a sent message that turned failed or pending is no longer counted as sent
        INSERT INTO novu.provider_stats AS s (integration_id, worker, sent, failed, tokens_pruned)
        SELECT c.integration_id, p_worker, -c.turned, c.failed,
               (SELECT count(*) FROM pruned p WHERE p.integration_id = c.integration_id)
          FROM counts c
         WHERE EXISTS (SELECT FROM novu.integrations i WHERE i.id = c.integration_id)
        ON CONFLICT (integration_id, worker) DO UPDATE SET
            sent = s.sent + excluded.sent,
            failed = s.failed + excluded.failed,
            tokens_pruned = s.tokens_pruned + excluded.tokens_pruned
    )
    SELECT count(*)::integer INTO n FROM upd;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu._record_receipts(integer, bigint[], text[], text[], bigint[], text[], bigint[], text[]) IS 'Internal (workers): record checked Expo receipts in one statement';

------------------------------------------------------------------------------
-- The trigger path runs in every application transaction: the C functions
-- no longer switch search_path on each call (a GUC change and two search
-- path recomputations).  Their statements name everything with its schema
-- (novu.*, pg_catalog.*), so the caller's search_path cannot redirect them;
-- the trigger regression test checks that with a hostile search_path.
------------------------------------------------------------------------------

ALTER FUNCTION novu.trigger(text, jsonb, jsonb, jsonb, text, jsonb) RESET search_path;
ALTER FUNCTION novu.broadcast(text, jsonb, jsonb, text) RESET search_path;

REVOKE EXECUTE ON FUNCTION novu._expand(text[], text[], text[], integer, integer),
                           novu._fanout(integer, integer, integer, integer, integer),
                           novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[]),
                           novu._record_receipts(integer, bigint[], text[], text[], bigint[], text[], bigint[], text[])
    FROM PUBLIC;
