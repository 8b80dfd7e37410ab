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
