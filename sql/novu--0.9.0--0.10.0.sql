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

CREATE OR REPLACE FUNCTION novu._expand(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                             p_lease_limit integer, p_lease_ms integer, p_steps integer[] DEFAULT NULL)
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
        SELECT x.transaction_id, x.workflow_id, x.subscriber_id, x.only_step
          FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_steps)
               AS x(transaction_id, workflow_id, subscriber_id, only_step)
    ),
    targets AS (
        SELECT i.transaction_id, i.workflow_id, i.subscriber_id,
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
                                     status, last_error, attempts, claimed_by, lease_until)
        SELECT e.id, e.transaction_id, e.workflow_id, e.subscriber_id, e.step_index, e.channel,
               e.integration_id, e.provider_id, e.identifier, e.device_token,
               CASE WHEN NOT e.deliverable THEN 'skipped' WHEN e.leased THEN 'sending' ELSE 'pending' END,
               CASE WHEN NOT e.subscriber_exists THEN 'Subscriber not found'
                    WHEN NOT e.allowed THEN 'Disabled by subscriber preferences'
                    WHEN e.device_token IS NULL AND e.channel = 'chat' THEN 'Subscriber has no chat webhook URL'
                    WHEN NOT e.deliverable THEN 'Subscriber has no device token' END,
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
COMMENT ON FUNCTION novu._expand(text[], text[], text[], integer, integer, integer[]) IS 'Internal (workers): expand notifications into delivery rows, one per step (or the step given) and device token; the first ones leased to the caller and returned for sending';

