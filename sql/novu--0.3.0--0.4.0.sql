-- novu 0.3.0 -> 0.4.0: security hardening (DESIGN section 5).

\echo Use "ALTER EXTENSION novu UPDATE TO '0.4.0'" to load this file. \quit

-- ==== privileges: definer functions, the worker role ====

-- ==== bounded input ====

-- ==== secrets at rest ====

-- ==== outbound URL policy ====

-- ==== providers: tokens, overrides, pruning ====

-- Device tokens have their provider's form before they are stored (APNs hex,
-- FCM and Expo character sets, web-push subscription JSON), and overrides keep
-- to each provider's allowlist: they shape the notification, never its target
-- or its authentication (src/provider_rules.c; the workers check both again
-- before sending, for rows stored by an older version).
CREATE FUNCTION novu._check_device_token(provider_id text, token text, field text)
RETURNS void
AS 'MODULE_PATHNAME', 'novu_check_device_token'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION novu._check_device_token(text, text, text) IS 'Internal: raise naming the field unless the device token has its provider''s form';
REVOKE EXECUTE ON FUNCTION novu._check_device_token(text, text, text) FROM PUBLIC;

CREATE FUNCTION novu._check_overrides(overrides jsonb, field text)
RETURNS void
AS 'MODULE_PATHNAME', 'novu_check_overrides_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION novu._check_overrides(jsonb, text) IS 'Internal: raise naming the field unless every provider''s overrides keep to its allowlist (no token, topic, condition, "to", apns-topic, authorization; header values without control characters)';
REVOKE EXECUTE ON FUNCTION novu._check_overrides(jsonb, text) FROM PUBLIC;

-- Subscriber credentials: every device token checked for its provider.
CREATE OR REPLACE FUNCTION novu._check_credentials(p_provider_id text, p_credentials jsonb)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    t jsonb;
    i integer := 0;
BEGIN
    IF p_credentials IS NULL OR jsonb_typeof(p_credentials) <> 'object' THEN
        RAISE EXCEPTION 'credentials must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"deviceTokens": ["token-1"]}.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_credentials) LOOP
        IF k = 'webhookUrl' AND p_provider_id <> 'push-webhook' THEN
            RAISE EXCEPTION 'credentials.webhookUrl is not used by provider "%"', p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Push providers take deviceTokens; webhookUrl is for push-webhook.';
        ELSIF k NOT IN ('deviceTokens', 'webhookUrl') THEN
            RAISE EXCEPTION 'unknown key "%" in credentials', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Subscriber credentials take deviceTokens (and webhookUrl for push-webhook).';
        END IF;
    END LOOP;
    IF p_credentials ? 'webhookUrl' THEN
        PERFORM novu._check_url(p_credentials ->> 'webhookUrl', 'credentials.webhookUrl');
    END IF;
    IF NOT p_credentials ? 'deviceTokens' THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(p_credentials -> 'deviceTokens') <> 'array' THEN
        RAISE EXCEPTION 'credentials.deviceTokens must be an array of non-empty strings'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"deviceTokens": ["token-1", "token-2"]}.';
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

-- Workflow steps: a step's overrides keep to the providers' allowlists too.
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
    FOR step IN SELECT * FROM jsonb_array_elements(steps) LOOP
        f := format('steps[%s]', i);
        IF jsonb_typeof(step) <> 'object' THEN
            RAISE EXCEPTION '% must be a JSON object', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Each step is an object with a "type".';
        END IF;
        IF jsonb_typeof(step -> 'type') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION '%.type is required', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Step types: push.';
        END IF;
        IF step ->> 'type' IN ('in_app', 'chat', 'delay', 'digest', 'email', 'sms') THEN
            RAISE EXCEPTION '%.type "%" is not supported yet', f, step ->> 'type'
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'This version executes push steps only; nothing is accepted that would not run.';
        ELSIF step ->> 'type' <> 'push' THEN
            RAISE EXCEPTION '%.type "%" is unknown', f, step ->> 'type'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Step types: push.';
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
            ELSE
                RAISE EXCEPTION 'unknown key "%" in %', k, f
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A push step has type, name, title, content, data, overrides, providers.';
            END CASE;
        END LOOP;
        IF NOT step ? 'content' OR step ->> 'content' = '' THEN
            RAISE EXCEPTION '%.content is required', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A push step needs a non-empty content template.';
        END IF;
        i := i + 1;
    END LOOP;
END
$$;

-- ==== templates ====
