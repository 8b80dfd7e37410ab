-- novu 0.3.0 -> 0.4.0: security hardening (DESIGN section 5).

\echo Use "ALTER EXTENSION novu UPDATE TO '0.4.0'" to load this file. \quit

-- ==== privileges: definer functions, the worker role ====

-- The delivery workers connect as novu_worker, never as a superuser.  It is a
-- LOGIN role only because PostgreSQL 15 lets a background worker connect as
-- no other kind; it has no password, so password authentication never admits
-- it.  Like the other roles it is cluster-wide and created only if missing;
-- an existing superuser of that name is refused.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'novu_worker') THEN
        CREATE ROLE novu_worker LOGIN NOINHERIT;
    ELSIF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'novu_worker') THEN
        RAISE EXCEPTION 'role "novu_worker" exists and is a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The delivery workers never run as a superuser: ALTER ROLE novu_worker NOSUPERUSER, then try again.';
    END IF;
    EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO novu_worker', pg_catalog.current_database());
END
$roles$;

-- Only what delivery needs: read the model, write the queue and the history,
-- prune dead tokens.
GRANT USAGE ON SCHEMA novu TO novu_worker;
GRANT SELECT ON novu.integrations, novu.subscribers, novu.subscriber_channels, novu.workflows,
                novu.preferences
    TO novu_worker;
GRANT SELECT, DELETE ON novu.device_tokens TO novu_worker;
GRANT SELECT, UPDATE, DELETE ON novu.events TO novu_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON novu.deliveries TO novu_worker;
GRANT SELECT, INSERT, DELETE ON novu.execution_details TO novu_worker;
GRANT SELECT, INSERT, UPDATE ON novu.provider_stats TO novu_worker;
GRANT USAGE ON SEQUENCE novu.deliveries_id_seq, novu.execution_details_id_seq TO novu_worker;
GRANT EXECUTE ON FUNCTION
    novu._expand(text[], text[], text[], integer, integer),
    novu._fanout(integer, integer, integer, integer, integer),
    novu._take_events(tid[]),
    novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[]),
    novu._claim_receipts(integer, integer),
    novu._record_receipts(integer, bigint[], text[], text[], bigint[], text[], bigint[], text[]),
    novu._housekeeping(interval, integer)
TO novu_worker;

-- The trigger path's C functions pin search_path again, as every SECURITY
-- DEFINER function does (DESIGN 5).
ALTER FUNCTION novu.trigger(text, jsonb, jsonb, jsonb, text, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION novu.broadcast(text, jsonb, jsonb, text) SET search_path = pg_catalog, pg_temp;

-- trigger_on_row turns the caller's row into JSON: a row may hold values of
-- the caller's own types, whose casts and output functions are the caller's
-- code.  It runs as the caller (SECURITY INVOKER), so that code runs with the
-- caller's rights; only the finished jsonb crosses into novu.trigger, the
-- definer function, which the caller must be allowed to execute (novu_app).
CREATE OR REPLACE FUNCTION novu.trigger_on_row()
RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r jsonb;
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' THEN
        RAISE EXCEPTION 'novu.trigger_on_row() must be an AFTER ... FOR EACH ROW trigger'
            USING ERRCODE = 'invalid_object_definition',
                  HINT = 'CREATE TRIGGER t AFTER INSERT ON tbl FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row(''workflow-id'', ''subscriber_column'').';
    END IF;
    IF TG_NARGS <> 2 THEN
        RAISE EXCEPTION 'novu.trigger_on_row() takes 2 arguments, got %', TG_NARGS
            USING ERRCODE = 'invalid_object_definition',
                  HINT = 'EXECUTE FUNCTION novu.trigger_on_row(''workflow-id'', ''subscriber_column'').';
    END IF;
    r := pg_catalog.to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    IF NOT r ? TG_ARGV[1] THEN
        RAISE EXCEPTION 'column "%" not found in table %.%', TG_ARGV[1], TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'undefined_column',
                  HINT = 'The second argument of novu.trigger_on_row() names the column holding the subscriberId.';
    END IF;
    -- A row without a recipient notifies nobody.
    IF r ->> TG_ARGV[1] IS NOT NULL THEN
        PERFORM novu.trigger(TG_ARGV[0], pg_catalog.to_jsonb(r ->> TG_ARGV[1]), r);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION novu.trigger_on_row() IS 'Row trigger: AFTER INSERT/UPDATE/DELETE ... EXECUTE FUNCTION novu.trigger_on_row(''workflow-id'', ''subscriber_column''); payload = the row as JSON (OLD for DELETE); runs as the caller, who needs novu_app';

-- ==== bounded input ====

-- Every jsonb argument has a size limit, checked before anything is stored
-- (the README lists them); C code checks the trigger's arguments itself.
CREATE FUNCTION novu._check_size(value jsonb, field text, max_bytes integer)
RETURNS jsonb
LANGUAGE C STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'novu_check_size';
COMMENT ON FUNCTION novu._check_size(jsonb, text, integer) IS 'Internal: raise unless the value''s JSON text has at most max_bytes bytes and nests at most 64 levels; returns the value';
REVOKE EXECUTE ON FUNCTION novu._check_size(jsonb, text, integer) FROM PUBLIC;

-- profiles (identify, update_subscriber, bulk_identify, inline subscribers): 64 KiB
CREATE OR REPLACE FUNCTION novu._check_profile(profile jsonb, what text, allow_channels boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
    i integer := 0;
    ch jsonb;
BEGIN
    IF profile IS NULL OR jsonb_typeof(profile) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass Novu profile keys, e.g. {"email": "a@b.co", "firstName": "Ada"}.';
    END IF;
    PERFORM novu._check_size(profile, what, 65536);
    FOR k, v IN SELECT * FROM jsonb_each(profile) LOOP
        CASE
        WHEN k IN ('email', 'firstName', 'lastName', 'phone', 'avatar', 'locale', 'timezone', 'subscriberId') THEN
            IF jsonb_typeof(v) NOT IN ('string', 'null') THEN
                RAISE EXCEPTION '%.% must be a string', what, k
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Profile fields are strings (or null to clear them).';
            END IF;
        WHEN k = 'data' THEN
            IF jsonb_typeof(v) NOT IN ('object', 'null') THEN
                RAISE EXCEPTION '%.data must be a JSON object', what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Custom data is a JSON object of key-value pairs.';
            END IF;
        WHEN k = 'channels' AND allow_channels THEN
            IF jsonb_typeof(v) <> 'array' THEN
                RAISE EXCEPTION '%.channels must be an array', what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'channels is an array of {"providerId", "integrationIdentifier", "credentials"}.';
            END IF;
            FOR ch IN SELECT * FROM jsonb_array_elements(v) LOOP
                IF jsonb_typeof(ch) <> 'object' OR jsonb_typeof(ch -> 'providerId') IS DISTINCT FROM 'string'
                   OR jsonb_typeof(ch -> 'credentials') IS DISTINCT FROM 'object'
                   OR jsonb_typeof(ch -> 'integrationIdentifier') NOT IN ('string', 'null')
                   OR EXISTS (SELECT FROM jsonb_object_keys(ch) x WHERE x NOT IN ('providerId', 'integrationIdentifier', 'credentials')) THEN
                    RAISE EXCEPTION '%.channels[%] must be an object with providerId and credentials', what, i
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Example: {"providerId": "fcm", "credentials": {"deviceTokens": ["token"]}}.';
                END IF;
                i := i + 1;
            END LOOP;
        ELSE
            RAISE EXCEPTION 'unknown key "%" in %', k, what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Profile keys: subscriberId, email, firstName, lastName, phone, avatar, locale, timezone, data'
                             || CASE WHEN allow_channels THEN ', channels.' ELSE '.' END;
        END CASE;
    END LOOP;

    IF profile ->> 'email' IS NOT NULL
       AND profile ->> 'email' !~ '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$' THEN
        RAISE EXCEPTION 'invalid email "%" in %', profile ->> 'email', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An email looks like name@example.com.';
    END IF;
    IF profile ->> 'locale' IS NOT NULL
       AND profile ->> 'locale' !~ '^[a-zA-Z]{2}(-[a-zA-Z]{2})?$' THEN
        RAISE EXCEPTION 'invalid locale "%" in %', profile ->> 'locale', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A locale is a language code with an optional region, e.g. "en" or "en-US".';
    END IF;
END
$$;


-- CSV import: a row of more than 64 KiB is rejected, not parsed (and
-- novu._parse_object no longer raises for numbers jsonb cannot hold, such as
-- 1e1000000, nor for nesting past 64 levels: the row is rejected alone)
CREATE OR REPLACE FUNCTION novu.import_subscribers()
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_total bigint;
    n_rejected bigint;
    n_created bigint;
    n_updated bigint;
BEGIN
    -- Wait for COPYs in progress; block new ones until this transaction ends.
    LOCK TABLE novu.subscriber_import IN EXCLUSIVE MODE;

    CREATE TEMP TABLE pg_temp.novu_import_checked ON COMMIT DROP AS
    SELECT i.line, i.sid, i.first_name, i.last_name, i.email, i.phone, i.locale, i.avatar,
           i.timezone, i.data_text,
           CASE WHEN i.row_bytes <= 65536 THEN novu._parse_object(i.data_text) END AS data,
           CASE
               WHEN i.sid IS NULL THEN 'missing subscriberId'
               WHEN i.row_bytes > 65536 THEN 'row is larger than 64 KiB'
               WHEN length(i.sid) > 255 THEN 'subscriberId longer than 255 characters'
               WHEN i.sid ~ '[[:cntrl:]]' THEN 'subscriberId contains control characters'
               WHEN i.email IS NOT NULL AND i.email !~ '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'
                   THEN 'invalid email format'
               WHEN i.locale IS NOT NULL AND i.locale !~ '^[a-zA-Z]{2}(-[a-zA-Z]{2})?$'
                   THEN 'invalid locale format'
               WHEN i.data_text IS NOT NULL AND novu._parse_object(i.data_text) IS NULL
                   THEN 'data is not a JSON object'
           END AS reason
      FROM (SELECT line,
                   nullif(btrim(s."subscriberId"), '') AS sid,
                   nullif(btrim(s."firstName"), '') AS first_name,
                   nullif(btrim(s."lastName"), '') AS last_name,
                   nullif(btrim(s.email), '') AS email,
                   nullif(btrim(s.phone), '') AS phone,
                   nullif(btrim(s.locale), '') AS locale,
                   nullif(btrim(s.avatar), '') AS avatar,
                   nullif(btrim(s.timezone), '') AS timezone,
                   nullif(btrim(s.data), '') AS data_text,
                   COALESCE(octet_length(s."subscriberId"), 0) + COALESCE(octet_length(s."firstName"), 0)
                   + COALESCE(octet_length(s."lastName"), 0) + COALESCE(octet_length(s.email), 0)
                   + COALESCE(octet_length(s.phone), 0) + COALESCE(octet_length(s.locale), 0)
                   + COALESCE(octet_length(s.avatar), 0) + COALESCE(octet_length(s.timezone), 0)
                   + COALESCE(octet_length(s.data), 0) AS row_bytes
              FROM novu.subscriber_import s) i;
    GET DIAGNOSTICS n_total = ROW_COUNT;

    -- A subscriberId appearing twice: the last line wins, earlier ones are rejected.
    UPDATE pg_temp.novu_import_checked c
       SET reason = 'duplicate subscriberId (a later line wins)'
      FROM (SELECT sid, max(line) AS last_line
              FROM pg_temp.novu_import_checked
             WHERE reason IS NULL
             GROUP BY sid HAVING count(*) > 1) d
     WHERE c.reason IS NULL AND c.sid = d.sid AND c.line < d.last_line;

    INSERT INTO novu.subscriber_import_rejects (line, subscriber_id, reason, row_data)
    SELECT line, sid, reason,
           jsonb_strip_nulls(jsonb_build_object('subscriberId', sid, 'firstName', first_name,
               'lastName', last_name, 'email', email, 'phone', phone, 'locale', locale,
               'avatar', avatar, 'timezone', timezone, 'data', data_text))
      FROM pg_temp.novu_import_checked
     WHERE reason IS NOT NULL;
    GET DIAGNOSTICS n_rejected = ROW_COUNT;

    WITH up AS (
        INSERT INTO novu.subscribers AS s
               (subscriber_id, email, first_name, last_name, phone, avatar, locale, timezone, data)
        SELECT sid, email, first_name, last_name, phone, avatar, locale, timezone, COALESCE(data, '{}')
          FROM pg_temp.novu_import_checked
         WHERE reason IS NULL
        ON CONFLICT (subscriber_id) DO UPDATE SET
            email      = COALESCE(excluded.email, s.email),
            first_name = COALESCE(excluded.first_name, s.first_name),
            last_name  = COALESCE(excluded.last_name, s.last_name),
            phone      = COALESCE(excluded.phone, s.phone),
            avatar     = COALESCE(excluded.avatar, s.avatar),
            locale     = COALESCE(excluded.locale, s.locale),
            timezone   = COALESCE(excluded.timezone, s.timezone),
            data       = CASE WHEN excluded.data = '{}' THEN s.data ELSE excluded.data END,
            updated_at = now()
        RETURNING (xmax = 0) AS created)
    SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created)
      INTO n_created, n_updated
      FROM up;

    TRUNCATE novu.subscriber_import RESTART IDENTITY;
    DROP TABLE pg_temp.novu_import_checked;

    RETURN jsonb_build_object('total', n_total, 'created', n_created, 'updated', n_updated,
                              'rejected', n_rejected);
END
$$;

-- ==== secrets at rest ====
-- Integration secrets (the fields listed in src/secrets.c: serviceAccount.private_key,
-- apns secretKey and privateKey, expo and one-signal apiKey, push-webhook secretKey,
-- web-push vapidPrivateKey, chat-webhook hmacSecretKey) are stored in place as
-- AES-256-GCM envelopes "novu:v1:<key id>:<base64url(nonce || ciphertext || tag)>"
-- under the key of novu.secret_key_file, bound to their integration's id and field.
-- Only C code decrypts them: the delivery workers, and novu.reencrypt_secrets()
-- (superuser only).

-- Every write of a row encrypts its clear secrets; without a key, storing one is refused.
CREATE FUNCTION novu._seal_secrets()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'novu_seal_secrets';
COMMENT ON FUNCTION novu._seal_secrets() IS 'Internal: trigger encrypting the secrets of novu.integrations rows (AES-256-GCM, novu.secret_key_file)';
CREATE TRIGGER seal_secrets BEFORE INSERT OR UPDATE OF id, provider_id, credentials ON novu.integrations
    FOR EACH ROW EXECUTE FUNCTION novu._seal_secrets();

-- The one list of secret fields also masks what the API returns.
CREATE FUNCTION novu._mask_secrets(provider_id text, credentials jsonb)
RETURNS jsonb
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'novu_mask_secrets';
COMMENT ON FUNCTION novu._mask_secrets(text, jsonb) IS 'Internal: credentials with every secret field shown as ********';

CREATE OR REPLACE FUNCTION novu._integration_json(i novu.integrations)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'identifier', i.identifier,
        'providerId', i.provider_id,
        'channel', i.channel,
        'name', i.name,
        'active', i.active,
        'credentials', novu._mask_secrets(i.provider_id, i.credentials),
        'createdAt', novu._iso(i.created_at),
        'updatedAt', novu._iso(i.updated_at))
$$;

-- Rotation and the move out of clear text: superuser only (it decrypts every secret).
CREATE FUNCTION novu.reencrypt_secrets()
RETURNS integer
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'novu_reencrypt_secrets';
COMMENT ON FUNCTION novu.reencrypt_secrets() IS 'Superuser: encrypt every integration secret under novu.secret_key_file (re-encrypting those of novu.previous_secret_key_file, encrypting clear ones); returns the number of integrations rewritten';

REVOKE EXECUTE ON FUNCTION novu._seal_secrets(), novu._mask_secrets(text, jsonb), novu.reencrypt_secrets() FROM PUBLIC;

-- Secrets stored in clear by 0.3.0: encrypted now if a key is configured, else a WARNING
-- (the workers keep delivering with them until novu.reencrypt_secrets() runs).
CREATE FUNCTION novu._secrets_upgrade()
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'novu_secrets_upgrade';
SELECT novu._secrets_upgrade();
DROP FUNCTION novu._secrets_upgrade();

-- ==== outbound URL policy ====

-- Subscriber webhook URLs get the check of integration URLs (netpolicy.c): https
-- only, no user:password@, no fragment, at most 2048 bytes, no literal address
-- that novu.allowed_private_networks does not allow (so STABLE: it reads the
-- setting).  The error never repeats the URL: it may hold a secret.
CREATE OR REPLACE FUNCTION novu._check_url(value text, field text)
RETURNS void
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'novu_check_url';
COMMENT ON FUNCTION novu._check_url(text, text) IS 'Internal: raise unless the value is a URL the outbound URL policy accepts (https, no user:password@ or fragment, at most 2048 bytes, no refused literal address)';

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
    PERFORM novu._check_size(p_credentials, 'credentials', 65536);
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
