/*
 * novu--0.5.0--0.6.0.sql
 *		Upgrade from 0.5.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.6.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.5.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.6.0'" to load this file. \quit

-- The providers are listed once, in the library (src/providers/registry.c): the SQL
-- lists read it.  New: the chat channel (discord, slack, msteams, mattermost,
-- chat-webhook): chat steps, subscribers' webhook URLs as chat credentials, fan-out to
-- them, and a deleted webhook removes the credential.

CREATE FUNCTION novu._providers(channel text DEFAULT NULL)
RETURNS text[]
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'novu_providers_sql';
COMMENT ON FUNCTION novu._providers(text) IS 'Internal: the provider ids this version delivers to, of one channel (push, chat) or of all';

CREATE OR REPLACE FUNCTION novu._push_providers()
RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT novu._providers() $$;
COMMENT ON FUNCTION novu._push_providers() IS 'Internal: the provider ids this version delivers to (every channel; the name is kept from 0.1.0)';

CREATE FUNCTION novu._provider_channel(provider_id text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN provider_id = ANY (novu._providers('chat')) THEN 'chat' ELSE 'push' END $$;
COMMENT ON FUNCTION novu._provider_channel(text) IS 'Internal: the channel a provider delivers on (push or chat)';


-- subscriber credentials: chat providers take webhookUrl only

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
BEGIN
    IF p_credentials IS NULL OR jsonb_typeof(p_credentials) <> 'object' THEN
        RAISE EXCEPTION 'credentials must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"deviceTokens": ["token-1"]}.';
    END IF;
    PERFORM novu._check_size(p_credentials, 'credentials', 65536);
    chat := novu._provider_channel(p_provider_id) = 'chat';
    FOR k IN SELECT jsonb_object_keys(p_credentials) LOOP
        IF k = 'webhookUrl' AND p_provider_id <> 'push-webhook' AND NOT chat THEN
            RAISE EXCEPTION 'credentials.webhookUrl is not used by provider "%"', p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Push providers take deviceTokens; webhookUrl is for chat providers and push-webhook.';
        ELSIF k = 'deviceTokens' AND chat THEN
            RAISE EXCEPTION 'credentials.deviceTokens is not used by provider "%"', p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A chat provider takes the webhook URL: {"webhookUrl": "https://..."}.';
        ELSIF k NOT IN ('deviceTokens', 'webhookUrl') THEN
            RAISE EXCEPTION 'unknown key "%" in credentials', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Subscriber credentials take deviceTokens (push) or webhookUrl (chat providers, push-webhook).';
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


-- an integration gets its provider's channel

CREATE OR REPLACE FUNCTION novu.create_integration(provider_id text, credentials jsonb, identifier text DEFAULT NULL,
                                        name text DEFAULT NULL, active boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    creds jsonb;
    ident text := identifier;
    new_id bigint;
BEGIN
    PERFORM novu._check_provider(provider_id);
    creds := novu._validate_integration(provider_id, credentials);
    IF active IS NULL THEN
        RAISE EXCEPTION 'active must not be null'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
    END IF;
    IF ident IS NULL THEN
        -- Novu-style generated identifier, e.g. fcm-Ab12Cd34x
        LOOP
            ident := translate(encode(uuid_send(gen_random_uuid()), 'base64'), '+/=', '');
            EXIT WHEN length(ident) >= 9;
        END LOOP;
        ident := provider_id || '-' || substr(ident, 1, 9);
    ELSE
        PERFORM novu._check_identifier(ident, 'identifier');
    END IF;
    IF name IS NOT NULL AND (name = '' OR length(name) > 255) THEN
        RAISE EXCEPTION 'name must have 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave it null to use the provider id.';
    END IF;

    INSERT INTO novu.integrations (identifier, provider_id, channel, name, credentials, active)
    VALUES (ident, provider_id, novu._provider_channel(provider_id), COALESCE(name, provider_id), creds, active)
    ON CONFLICT ON CONSTRAINT integrations_identifier_key DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'integration "%" already exists', ident
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another identifier, or change that one with novu.update_integration().';
    END IF;
    RETURN ident;
END
$$;
COMMENT ON FUNCTION novu.create_integration(text, jsonb, text, text, boolean) IS 'Create a provider integration (admin); credentials validated per provider; returns its identifier (generated like fcm-Ab12Cd34x when not given)';


-- workflows: chat steps

CREATE OR REPLACE FUNCTION novu._check_steps(steps jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    step jsonb;
    i integer := 0;
    k text;
    v jsonb;
    f text;
BEGIN
    IF steps IS NULL OR jsonb_typeof(steps) <> 'array' THEN
        RAISE EXCEPTION 'steps must be a JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: [{"type": "push", "title": "Hi {{subscriber.firstName}}", "content": "{{payload.text}}"}].';
    END IF;
    PERFORM novu._check_size(steps, 'steps', 262144);
    IF jsonb_array_length(steps) > 50 THEN
        RAISE EXCEPTION 'a workflow has at most 50 steps, got %', jsonb_array_length(steps)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Split the workflow.';
    END IF;
    FOR step IN SELECT * FROM jsonb_array_elements(steps) LOOP
        f := format('steps[%s]', i);
        IF jsonb_typeof(step) <> 'object' THEN
            RAISE EXCEPTION '% must be a JSON object', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Each step is an object with a "type".';
        END IF;
        IF jsonb_typeof(step -> 'type') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION '%.type is required', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Step types: push, chat.';
        END IF;
        IF step ->> 'type' IN ('in_app', 'delay', 'digest', 'email', 'sms') THEN
            RAISE EXCEPTION '%.type "%" is not supported yet', f, step ->> 'type'
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'This version executes push and chat steps only; nothing is accepted that would not run.';
        ELSIF step ->> 'type' NOT IN ('push', 'chat') THEN
            RAISE EXCEPTION '%.type "%" is unknown', f, step ->> 'type'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Step types: push, chat.';
        END IF;
        IF step ->> 'type' = 'chat' AND step ? 'title' THEN
            RAISE EXCEPTION '%.title is not used by chat steps', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A chat step sends its content template as the message text.';
        END IF;
        IF step ? 'if' THEN
            RAISE EXCEPTION '%.if (step conditions) is not supported yet', f
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Use {% if %} inside the templates meanwhile.';
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(step) LOOP
            CASE k
            WHEN 'type' THEN NULL;
            WHEN 'name' THEN
                IF jsonb_typeof(v) <> 'string' THEN
                    RAISE EXCEPTION '%.name must be a string', f
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'A step name is free text.';
                END IF;
            WHEN 'title', 'content' THEN
                IF jsonb_typeof(v) <> 'string' THEN
                    RAISE EXCEPTION '%.% must be a string', f, k
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'title and content are template strings.';
                END IF;
                PERFORM novu._check_template(v #>> '{}', f || '.' || k);
            WHEN 'data' THEN
                IF jsonb_typeof(v) <> 'object' THEN
                    RAISE EXCEPTION '%.data must be a JSON object', f
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'data maps keys to values; string values are templates.';
                END IF;
                PERFORM novu._check_template(d.value #>> '{}', f || '.data.' || d.key)
                   FROM jsonb_each(v) d WHERE jsonb_typeof(d.value) = 'string';
            WHEN 'overrides' THEN
                IF jsonb_typeof(v) <> 'object' THEN
                    RAISE EXCEPTION '%.overrides must be a JSON object', f
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Provider overrides, e.g. {"fcm": {"android": {"priority": "HIGH"}}}.';
                END IF;
                PERFORM novu._check_overrides(v, f || '.overrides');
            WHEN 'providers' THEN
                IF jsonb_typeof(v) <> 'array'
                   OR EXISTS (SELECT FROM jsonb_array_elements(v) p
                               WHERE jsonb_typeof(p) <> 'string' OR NOT (p #>> '{}') = ANY (novu._push_providers())) THEN
                    RAISE EXCEPTION '%.providers must be an array of provider ids', f
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Known providers: ' || array_to_string(novu._push_providers(), ', ') || '.';
                END IF;
                IF EXISTS (SELECT FROM jsonb_array_elements_text(v) p WHERE novu._provider_channel(p) <> step ->> 'type') THEN
                    RAISE EXCEPTION '%.providers names a provider of another channel than %', f, step ->> 'type'
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Chat providers: ' || array_to_string(novu._providers('chat'), ', ')
                                     || '; push providers: ' || array_to_string(novu._providers('push'), ', ') || '.';
                END IF;
            ELSE
                RAISE EXCEPTION 'unknown key "%" in %', k, f
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A push step has type, name, title, content, data, overrides, providers; a chat step the same without title.';
            END CASE;
        END LOOP;
        IF NOT step ? 'content' OR step ->> 'content' = '' THEN
            RAISE EXCEPTION '%.content is required', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A push or chat step needs a non-empty content template.';
        END IF;
        i := i + 1;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._check_steps(jsonb) IS 'Internal: validate a workflow''s steps; templates are parsed now so a syntax error is an error at creation';


-- fan-out: a chat step goes to the webhook URLs subscribers stored for chat integrations

CREATE OR REPLACE FUNCTION novu._expand(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
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
               CASE WHEN e.device_token IS NULL THEN 'skipped' WHEN e.leased THEN 'sending' ELSE 'pending' END,
               CASE WHEN NOT e.subscriber_exists THEN 'Subscriber not found'
                    WHEN NOT e.allowed THEN 'Disabled by subscriber preferences'
                    WHEN e.device_token IS NULL AND e.channel = 'chat' THEN 'Subscriber has no chat webhook URL'
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


-- results: a pruned chat target is the subscriber's webhook URL

CREATE OR REPLACE FUNCTION novu._record(p_worker integer, p_ids bigint[], p_attempts integer[], p_statuses text[],
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
    pruned_tokens AS (
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

CREATE OR REPLACE FUNCTION novu._record_receipts(p_worker integer, p_ids bigint[], p_statuses text[], p_errors text[],
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
    pruned_tokens AS (
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

CREATE FUNCTION novu._webpush_selftest()
RETURNS text
AS 'MODULE_PATHNAME', 'novu_webpush_selftest'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION novu._webpush_selftest() IS 'Internal test helper: RFC 8291 Appendix A encrypted with its fixed key and salt equals the RFC''s body byte for byte';

REVOKE ALL ON FUNCTION novu._providers(text), novu._provider_channel(text), novu._webpush_selftest() FROM PUBLIC;
-- the workers clear a deleted chat webhook
GRANT UPDATE (webhook_url, updated_at) ON novu.subscriber_channels TO novu_worker;
