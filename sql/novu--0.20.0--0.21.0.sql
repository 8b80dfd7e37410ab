/*
 * novu--0.20.0--0.21.0.sql
 *		Upgrade from 0.20.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.21.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.20.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.21.0'" to load this file. \quit

-- A caller's standard_conforming_strings no longer changes what a function's
-- patterns say: '\.' and '\d' (read as '.' and 'd' with the setting off: the
-- email check let "a@b<newline>cc" through) are written [.] and [0-9].
-- import_subscribers keeps one row per subscriberId when the staged rows repeat
-- a line number (the update hit the same row twice and every later import
-- failed).  The feed's payload filter takes no arrays (their containment is
-- quadratic, per message).  list_subscribers, list_topics and topic_subscribers
-- skip at most 1,000,000 rows, as the other lists.

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
       AND profile ->> 'email' !~ '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}$' THEN
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

CREATE OR REPLACE FUNCTION novu.list_subscribers(page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- at most 1,000,000 rows skipped, as every list
    PERFORM novu._check_paging(page, page_size);
    RETURN jsonb_build_object(
        'page', page,
        'totalCount', (SELECT count(*) FROM novu.subscribers),
        'pageSize', page_size,
        'data', COALESCE((SELECT jsonb_agg(novu._subscriber_json(s) ORDER BY s.created_at, s.subscriber_id)
                            FROM (SELECT * FROM novu.subscribers
                                   ORDER BY created_at, subscriber_id
                                   OFFSET page::bigint * page_size LIMIT page_size) s), '[]'::jsonb));
END
$$;

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
    SELECT i.line, i.ord, i.sid, i.first_name, i.last_name, i.email, i.phone, i.locale, i.avatar,
           i.timezone, i.data_text,
           CASE WHEN i.row_bytes <= 65536 THEN novu._parse_object(i.data_text) END AS data,
           CASE
               WHEN i.sid IS NULL THEN 'missing subscriberId'
               WHEN i.row_bytes > 65536 THEN 'row is larger than 64 KiB'
               WHEN length(i.sid) > 255 THEN 'subscriberId longer than 255 characters'
               WHEN i.sid ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN 'subscriberId contains control characters'
               WHEN i.email IS NOT NULL AND i.email !~ '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}$'
                   THEN 'invalid email format'
               WHEN i.locale IS NOT NULL AND i.locale !~ '^[a-zA-Z]{2}(-[a-zA-Z]{2})?$'
                   THEN 'invalid locale format'
               WHEN i.data_text IS NOT NULL AND novu._parse_object(i.data_text) IS NULL
                   THEN 'data is not a JSON object'
               -- numbers count as written out: 1e130000 is a few bytes in the
               -- CSV row and 130,001 characters in every message's subscriber
               WHEN i.data_text IS NOT NULL AND NOT novu._json_size_ok(novu._parse_object(i.data_text), 65536)
                   THEN 'data is larger than 64 KiB as JSON text'
           END AS reason
      FROM (SELECT line,
                   -- the row order: line (novu_app may write it, repeated), then where the row is
                   row_number() OVER (ORDER BY s.line, s.ctid) AS ord,
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
      FROM (SELECT sid, max(ord) AS last_ord
              FROM pg_temp.novu_import_checked
             WHERE reason IS NULL
             GROUP BY sid HAVING count(*) > 1) d
     WHERE c.reason IS NULL AND c.sid = d.sid AND c.ord < d.last_ord;

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

CREATE OR REPLACE FUNCTION novu._check_payload_path(value jsonb, field text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) IS DISTINCT FROM 'string'
       OR NOT (value #>> '{}') ~ '^[A-Za-z0-9_$-]+([.][A-Za-z0-9_$-]+)*$'
       OR length(value #>> '{}') > 255 OR value #>> '{}' = 'payload' THEN
        RAISE EXCEPTION '% must be a path in the payload', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Dot-separated keys, e.g. "sendAt", "post.id" or "payload.post.id".';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION novu._payload_path(path text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_to_array(regexp_replace(path, '^payload[.]', ''), '.')
$$;

CREATE OR REPLACE FUNCTION novu._delay_time(t text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF t IS NULL OR NOT t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$' THEN
        RETURN NULL;
    END IF;
    RETURN t::timestamptz;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION novu._check_filter_child(c jsonb, f text, steps jsonb, step_index integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    allowed text[];
    op text;
    v jsonb;
    target integer;
BEGIN
    IF jsonb_typeof(c) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', f
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"on": "payload", "field": "plan", "operator": "EQUAL", "value": "pro"}.';
    END IF;
    allowed := CASE c ->> 'on'
        WHEN 'payload' THEN ARRAY['on', 'field', 'operator', 'value']
        WHEN 'subscriber' THEN ARRAY['on', 'field', 'operator', 'value']
        WHEN 'isOnline' THEN ARRAY['on', 'operator', 'value']   -- operator: EQUAL (Novu's editor writes it) or NOT_EQUAL
        WHEN 'isOnlineInLast' THEN ARRAY['on', 'operator', 'value', 'timeOperator']
        WHEN 'previousStep' THEN ARRAY['on', 'step', 'stepType'] END;
    IF allowed IS NULL THEN
        RAISE EXCEPTION '%.on must be one of payload, subscriber, isOnline, isOnlineInLast, previousStep', f
            USING ERRCODE = CASE WHEN jsonb_typeof(c -> 'on') = 'string' THEN 'feature_not_supported' ELSE 'invalid_parameter_value' END,
                  HINT = 'Other Novu filter sources (webhook, tenant, actor) are not run by this engine.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(c) LOOP
        IF NOT k = ANY (allowed) THEN
            RAISE EXCEPTION 'unknown key "%" in %', k, f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('A filter on %s has %s.', c ->> 'on', array_to_string(allowed, ', '));
        END IF;
    END LOOP;
    v := c -> 'value';
    CASE c ->> 'on'
    WHEN 'payload', 'subscriber' THEN
        IF jsonb_typeof(c -> 'field') IS DISTINCT FROM 'string'
           OR NOT (c ->> 'field') ~ '^[A-Za-z0-9_$-]+([.][A-Za-z0-9_$-]+)*$' THEN
            RAISE EXCEPTION '%.field must be a dot path', f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE c ->> 'on' WHEN 'payload' THEN 'A key of the payload, e.g. "plan" or "order.total".'
                             ELSE 'A subscriber key, e.g. "firstName", "locale" or "data.plan".' END;
        END IF;
        op := c ->> 'operator';
        IF jsonb_typeof(c -> 'operator') IS DISTINCT FROM 'string'
           OR op NOT IN ('EQUAL', 'NOT_EQUAL', 'LARGER', 'SMALLER', 'LARGER_EQUAL', 'SMALLER_EQUAL', 'IN', 'NOT_IN',
                         'BETWEEN', 'NOT_BETWEEN', 'LIKE', 'NOT_LIKE', 'IS_DEFINED') THEN
            RAISE EXCEPTION '%.operator must be one of EQUAL, NOT_EQUAL, LARGER, SMALLER, LARGER_EQUAL, SMALLER_EQUAL, IN, NOT_IN, BETWEEN, NOT_BETWEEN, LIKE, NOT_LIKE, IS_DEFINED', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Novu''s filter operators, in capitals.';
        END IF;
        IF op = 'IS_DEFINED' THEN
            IF v IS NOT NULL AND jsonb_typeof(v) NOT IN ('boolean', 'string') THEN
                RAISE EXCEPTION '%.value of IS_DEFINED must be omitted or a boolean', f
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'IS_DEFINED is true when the field exists and is not null.';
            END IF;
        ELSIF op IN ('BETWEEN', 'NOT_BETWEEN') THEN
            IF jsonb_typeof(v) IS DISTINCT FROM 'array' OR jsonb_array_length(v) <> 2
               OR jsonb_typeof(v -> 0) <> 'number' OR jsonb_typeof(v -> 1) <> 'number' THEN
                RAISE EXCEPTION '%.value of % must be [low, high] (numbers)', f, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Both ends are included, e.g. [10, 20].';
            END IF;
        ELSIF op IN ('IN', 'NOT_IN') THEN
            IF NOT (jsonb_typeof(v) = 'string'
                    OR (jsonb_typeof(v) = 'array' AND jsonb_array_length(v) BETWEEN 1 AND 1000
                        AND NOT EXISTS (SELECT FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) NOT IN ('string', 'number', 'boolean')))) THEN
                RAISE EXCEPTION '%.value of % must be an array of values or a comma-separated string', f, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ["pro", "team"] or "pro,team".';
            END IF;
        ELSIF jsonb_typeof(v) IS NULL OR jsonb_typeof(v) NOT IN ('string', 'number', 'boolean') THEN
            RAISE EXCEPTION '%.value must be a string, a number or a boolean', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The value the field is compared with.';
        END IF;
    WHEN 'isOnline' THEN
        IF jsonb_typeof(v) IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '%.value must be true or false', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnline", "value": true}.';
        END IF;
        IF c ? 'operator' AND (jsonb_typeof(c -> 'operator') IS DISTINCT FROM 'string' OR c ->> 'operator' NOT IN ('EQUAL', 'NOT_EQUAL')) THEN
            RAISE EXCEPTION '%.operator must be EQUAL or NOT_EQUAL', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnline", "value": true} is the same as with "operator": "EQUAL".';
        END IF;
    WHEN 'isOnlineInLast' THEN
        IF jsonb_typeof(v) IS DISTINCT FROM 'number' OR NOT (v #>> '{}') ~ '^[0-9]{1,9}$' OR (v #>> '{}')::integer < 1 THEN
            RAISE EXCEPTION '%.value must be a positive integer', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnlineInLast", "timeOperator": "minutes", "value": 5}.';
        END IF;
        IF c ->> 'timeOperator' IS NULL OR c ->> 'timeOperator' NOT IN ('seconds', 'minutes', 'hours', 'days') THEN
            RAISE EXCEPTION '%.timeOperator must be one of seconds, minutes, hours, days', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnlineInLast", "timeOperator": "minutes", "value": 5}.';
        END IF;
        IF c ? 'operator' AND c -> 'operator' IS DISTINCT FROM '"EQUAL"' THEN
            RAISE EXCEPTION '%.operator of isOnlineInLast can only be EQUAL', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Online now or within the last "value" "timeOperator"; leave "operator" out.';
        END IF;
    WHEN 'previousStep' THEN
        IF c ->> 'stepType' IS NULL OR c ->> 'stepType' NOT IN ('read', 'unread', 'seen', 'unseen') THEN
            RAISE EXCEPTION '%.stepType must be one of read, unread, seen, unseen', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The state of the earlier in_app step''s message.';
        END IF;
        SELECT s.n - 1 INTO target
          FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(step, n)
         WHERE jsonb_typeof(c -> 'step') = 'string' AND novu._step_id(s.step, (s.n - 1)::integer) = c ->> 'step'
         LIMIT 1;
        IF target IS NULL OR target >= step_index OR steps -> target ->> 'type' <> 'in_app' THEN
            RAISE EXCEPTION '%.step must be the stepId of an earlier in_app step', f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'previousStep reads the read/seen state of an in_app message sent before this step.';
        END IF;
    END CASE;
END
$$;

CREATE OR REPLACE FUNCTION novu.list_topics(page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- at most 1,000,000 rows skipped, as every list
    PERFORM novu._check_paging(page, page_size);
    RETURN jsonb_build_object(
        'page', page,
        'totalCount', (SELECT count(*) FROM novu.topics),
        'pageSize', page_size,
        'data', COALESCE((SELECT jsonb_agg(novu._topic_json(t) ORDER BY t.key)
                            FROM (SELECT * FROM novu.topics ORDER BY key
                                   OFFSET page::bigint * page_size LIMIT page_size) t), '[]'::jsonb));
END
$$;

CREATE OR REPLACE FUNCTION novu.topic_subscribers(key text, page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    t := novu._get_topic(topic_subscribers.key);
    -- at most 1,000,000 rows skipped, as every list
    PERFORM novu._check_paging(page, page_size);
    RETURN jsonb_build_object(
        'page', page,
        'totalCount', (SELECT count(*) FROM novu.topic_subscribers ts WHERE ts.topic_id = t.id),
        'pageSize', page_size,
        'data', COALESCE((SELECT jsonb_agg(jsonb_build_object(
                                     '_topicId', t.id::text, 'topicKey', t.key,
                                     'subscriberId', m.subscriber_id, 'externalSubscriberId', m.subscriber_id,
                                     'createdAt', novu._iso(m.created_at))
                                 ORDER BY m.subscriber_id)
                            FROM (SELECT ts.subscriber_id, ts.created_at FROM novu.topic_subscribers ts
                                   WHERE ts.topic_id = t.id
                                   ORDER BY ts.subscriber_id
                                   OFFSET page::bigint * page_size LIMIT page_size) m), '[]'::jsonb));
END
$$;

CREATE OR REPLACE FUNCTION novu.feed(subscriber_id text, page integer DEFAULT 0, page_size integer DEFAULT 10,
                          seen boolean DEFAULT NULL, read boolean DEFAULT NULL, payload jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total bigint;
    cap bigint;
    items jsonb;
BEGIN
    PERFORM novu._feed_subscriber(feed.subscriber_id);
    PERFORM novu._check_paging(feed.page, feed.page_size);
    IF feed.payload IS NOT NULL THEN
        IF jsonb_typeof(feed.payload) <> 'object' THEN
            RAISE EXCEPTION 'payload must be a JSON object'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The feed keeps the messages whose payload contains it, e.g. {"postId": 42}.';
        END IF;
        PERFORM novu._check_size(feed.payload, 'payload', 16384);
        -- array containment compares every element with every element, per
        -- message: a filter of thousands of elements took seconds a row
        IF jsonb_path_exists(feed.payload, 'strict $.** ? (@.type() == "array")') THEN
            RAISE EXCEPTION 'payload must not contain arrays'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Filter by keys and scalar values, e.g. {"postId": 42} or {"post": {"id": 42}}.';
        END IF;
    END IF;
    -- totalCount is counted up to 1000 (Novu's COUNT_LIMIT), or up to one past
    -- the page asked for when that is further, so that hasMore is always
    -- exact and a long history is never counted whole.  Without a payload
    -- filter, the count and the page's ids come from an index alone (the feed
    -- index holds seen and read; the unseen messages have a partial index
    -- holding read) and only the page's rows are read, by primary key.
    cap := GREATEST(1000, feed.page::bigint * feed.page_size + feed.page_size + 1);
    IF feed.payload IS NULL AND feed.seen IS FALSE THEN
        SELECT count(*) INTO total
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id AND NOT m.seen
                   AND (feed.read IS NULL OR m.read = feed.read)
                 LIMIT cap) c;
        SELECT COALESCE(jsonb_agg(novu._feed_item(x) ORDER BY x.created_at DESC, x.id DESC), '[]')
          INTO items
          FROM (SELECT m.id FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id AND NOT m.seen
                   AND (feed.read IS NULL OR m.read = feed.read)
                 ORDER BY m.created_at DESC, m.id DESC
                 OFFSET feed.page::bigint * feed.page_size LIMIT feed.page_size) k
          JOIN novu.in_app_messages x ON x.id = k.id;
    ELSIF feed.payload IS NULL THEN
        SELECT count(*) INTO total
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                 LIMIT cap) c;
        SELECT COALESCE(jsonb_agg(novu._feed_item(x) ORDER BY x.created_at DESC, x.id DESC), '[]')
          INTO items
          FROM (SELECT m.id FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                 ORDER BY m.created_at DESC, m.id DESC
                 OFFSET feed.page::bigint * feed.page_size LIMIT feed.page_size) k
          JOIN novu.in_app_messages x ON x.id = k.id;
    ELSE
        SELECT count(*) INTO total
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                   AND m.payload @> feed.payload
                 LIMIT cap) c;
        SELECT COALESCE(jsonb_agg(novu._feed_item(x) ORDER BY x.created_at DESC, x.id DESC), '[]')
          INTO items
          FROM (SELECT * FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                   AND m.payload @> feed.payload
                 ORDER BY m.created_at DESC, m.id DESC
                 OFFSET feed.page::bigint * feed.page_size LIMIT feed.page_size) x;
    END IF;
    RETURN jsonb_build_object(
        'data', items,
        'totalCount', total,
        'hasMore', feed.page::bigint * feed.page_size + jsonb_array_length(items) < total,
        'pageSize', feed.page_size,
        'page', feed.page);
END
$$;

CREATE OR REPLACE FUNCTION novu._filter_matches(actual jsonb, op text, value jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    num_re constant text := '^-?[0-9]{1,30}([.][0-9]{1,30})?([eE][-+]?[0-9]{1,3})?$';
    a text;
    a_num numeric;
    v text;
    v_num numeric;
    list text[];
    cmp integer;
BEGIN
    IF op = 'IS_DEFINED' THEN
        RETURN (actual IS NOT NULL AND jsonb_typeof(actual) <> 'null') = (value IS NULL OR value::text NOT IN ('false', '"false"'));
    END IF;
    IF actual IS NULL OR jsonb_typeof(actual) = 'null' THEN
        RETURN op IN ('NOT_EQUAL', 'NOT_IN', 'NOT_BETWEEN', 'NOT_LIKE');
    END IF;
    a := actual #>> '{}';
    -- a JSON number compares as a number whatever its size (jsonb writes 1e31
    -- with 32 digits); a string as a number only when it reads as one
    IF jsonb_typeof(actual) = 'number' THEN
        a_num := actual::numeric;
    ELSIF a ~ num_re THEN
        a_num := a::numeric;
    END IF;
    CASE op
    WHEN 'IN', 'NOT_IN' THEN
        IF jsonb_typeof(value) = 'array' THEN
            list := ARRAY(SELECT e #>> '{}' FROM jsonb_array_elements(value) e);
        ELSE
            list := ARRAY(SELECT btrim(x) FROM unnest(string_to_array(value #>> '{}', ',')) x);
        END IF;
        RETURN (a = ANY (list)
                OR (a_num IS NOT NULL AND EXISTS (SELECT FROM unnest(list) x WHERE x ~ num_re AND x::numeric = a_num)))
               = (op = 'IN');
    WHEN 'BETWEEN', 'NOT_BETWEEN' THEN
        RETURN COALESCE(a_num BETWEEN (value ->> 0)::numeric AND (value ->> 1)::numeric, false) = (op = 'BETWEEN');
    WHEN 'LIKE', 'NOT_LIKE' THEN
        RETURN (strpos(a, value #>> '{}') > 0) = (op = 'LIKE');
    ELSE
        v := value #>> '{}';
        IF a_num IS NOT NULL AND (jsonb_typeof(value) = 'number' OR v ~ num_re) THEN
            v_num := v::numeric;
            cmp := CASE WHEN a_num < v_num THEN -1 WHEN a_num > v_num THEN 1 ELSE 0 END;
        ELSE
            cmp := CASE WHEN a COLLATE "C" < v COLLATE "C" THEN -1 WHEN a = v THEN 0 ELSE 1 END;
        END IF;
        RETURN CASE op WHEN 'EQUAL' THEN cmp = 0 WHEN 'NOT_EQUAL' THEN cmp <> 0
                       WHEN 'LARGER' THEN cmp > 0 WHEN 'SMALLER' THEN cmp < 0
                       WHEN 'LARGER_EQUAL' THEN cmp >= 0 WHEN 'SMALLER_EQUAL' THEN cmp <= 0 END;
    END CASE;
END
$$;

CREATE OR REPLACE FUNCTION novu._advance(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                              p_from_steps integer[], p_digest_ids bigint[], p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    k integer;
    v_tx text;
    v_wf text;
    v_sub text;
    v_digest bigint;
    ctx jsonb;
    w novu.workflows;
    ev novu.events;
    sub novu.subscribers;
    profile jsonb;
    st jsonb;
    stype text;
    i integer;
    nsteps integer;
    leased integer := 0;
    n integer;
    due timestamptz;
    err text;
    t text;
    d interval;
    raw jsonb;
BEGIN
    -- The digest keys these notifications may reach, locked now in one order
    -- (novu._digest_join takes them again, already held): two workers fanning
    -- out events of the same keys in different orders never wait on each
    -- other in a cycle.
    PERFORM novu._lock_digest_keys(novu._digest_keys(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_from_steps));
    FOR k IN 1 .. COALESCE(cardinality(p_transaction_ids), 0) LOOP
        v_tx := p_transaction_ids[k];
        v_wf := p_workflow_ids[k];
        v_sub := p_subscriber_ids[k];
        v_digest := p_digest_ids[k];
        ctx := CASE WHEN v_digest IS NOT NULL THEN jsonb_build_object('_digest', novu._digest_context(v_digest)) END;
        SELECT * INTO w FROM novu.workflows x WHERE x.workflow_id = v_wf;
        IF NOT FOUND THEN
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, status, detail)
            VALUES (v_tx, v_sub, v_wf, 'Failed', 'Workflow not found');
            CONTINUE;
        END IF;
        SELECT * INTO ev FROM novu.events e WHERE e.transaction_id = v_tx;
        SELECT * INTO sub FROM novu.subscribers s WHERE s.subscriber_id = v_sub;
        profile := CASE WHEN sub.subscriber_id IS NOT NULL THEN jsonb_build_object(
                       'subscriberId', sub.subscriber_id, 'firstName', sub.first_name, 'lastName', sub.last_name,
                       'email', sub.email, 'phone', sub.phone, 'avatar', sub.avatar, 'locale', sub.locale,
                       'timezone', sub.timezone, 'data', sub.data, 'isOnline', sub.is_online,
                       'lastOnlineAt', novu._iso(sub.last_online_at)) END;
        nsteps := jsonb_array_length(w.steps);
        i := COALESCE(p_from_steps[k], 0);
        WHILE i < nsteps LOOP
            st := w.steps -> i;
            stype := st ->> 'type';
            raw := jsonb_build_object('stepId', novu._step_id(st, i), 'stepIndex', i);
            IF st ? 'filters' AND NOT novu._filters_pass(st -> 'filters', w.steps, COALESCE(ev.payload, '{}'), profile,
                                                         sub.is_online, sub.last_online_at, v_tx, v_sub) THEN
                INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                VALUES (v_tx, v_sub, v_wf, stype, 'Warning', 'Step was filtered based on steps filters', raw);
                i := i + 1;
                CONTINUE;
            END IF;
            IF stype = 'delay' THEN
                due := NULL;
                err := NULL;
                IF st ? 'delayPath' THEN
                    t := ev.payload #>> novu._payload_path(st ->> 'delayPath');
                    IF t IS NULL THEN
                        err := format('Delay failed: payload.%s is missing', regexp_replace(st ->> 'delayPath', '^payload[.]', ''));
                    ELSIF NOT t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$' THEN
                        err := format('Delay failed: payload.%s is not an ISO time', regexp_replace(st ->> 'delayPath', '^payload[.]', ''));
                    ELSE
                        BEGIN
                            due := t::timestamptz;
                        EXCEPTION WHEN OTHERS THEN
                            err := format('Delay failed: payload.%s is not an ISO time', regexp_replace(st ->> 'delayPath', '^payload[.]', ''));
                        END;
                        IF due <= now() THEN
                            err := format('Delay failed: payload.%s (%s) is in the past',
                                          regexp_replace(st ->> 'delayPath', '^payload[.]', ''), t);
                        END IF;
                    END IF;
                ELSE
                    d := novu._step_interval(st -> 'amount', st -> 'unit');
                    IF ev.overrides ? 'delay' THEN
                        d := novu._step_interval(ev.overrides -> 'delay' -> 'amount', ev.overrides -> 'delay' -> 'unit');
                        IF d IS NULL THEN
                            err := 'Delay failed: overrides.delay must be {"amount": a positive integer, "unit": seconds ... months}, at most a year';
                        END IF;
                    END IF;
                    due := now() + d;
                END IF;
                IF err IS NOT NULL THEN
                    INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                    VALUES (v_tx, v_sub, v_wf, 'delay', 'Failed', err, raw);
                    EXIT;
                END IF;
                INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_id, due_at)
                VALUES ('delay', v_tx, v_wf, v_sub, i, v_digest, due);
                INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                VALUES (v_tx, v_sub, v_wf, 'delay', 'Pending', 'Step delayed until ' || novu._iso(due),
                        raw || jsonb_build_object('dueAt', novu._iso(due)));
                EXIT;
            ELSIF stype = 'digest' THEN
                EXIT WHEN novu._digest_join(v_tx, ev.id, v_wf, v_sub, i, st, COALESCE(ev.payload, '{}')) <> 'through';
                -- let through at once (backoff): the steps after it see no digest
                v_digest := NULL;
                ctx := NULL;
            ELSE
                RETURN QUERY
                SELECT x.id, x.attempts, x.transaction_id, x.workflow_id, x.subscriber_id, x.device_token,
                       x.integration_id, x.payload, x.overrides, x.actor,
                       CASE WHEN ctx IS NULL THEN x.step ELSE x.step || ctx END,
                       x.step_key || COALESCE('/' || v_digest, ''), x.subscriber
                  FROM novu._expand(ARRAY[v_tx], ARRAY[v_wf], ARRAY[v_sub], GREATEST(p_lease_limit - leased, 0),
                                    p_lease_ms, ARRAY[i]) x;
                GET DIAGNOSTICS n = ROW_COUNT;
                leased := leased + n;
                IF v_digest IS NOT NULL THEN
                    UPDATE novu.deliveries dl SET digest_id = v_digest
                     WHERE dl.transaction_id = v_tx AND dl.subscriber_id = v_sub AND dl.step_index = i
                       AND dl.digest_id IS NULL;
                END IF;
            END IF;
            i := i + 1;
        END LOOP;
    END LOOP;
END
$$;


-- APNs' 410 answer says since when a token is invalid: the token is removed only
-- if it was not registered again after that (PROTOCOLS 2.6).  Registering a token
-- again (set_credentials) now dates it anew (device_tokens.created_at), and
-- novu._record takes, per token to prune, that time in ms (NULL: unconditional).
CREATE OR REPLACE FUNCTION novu._store_credentials(p_subscriber_id text, p_provider_id text, p_credentials jsonb,
                                        p_identifier text, p_replace boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    integ novu.integrations;
    tokens text[];
    ntokens bigint;
BEGIN
    PERFORM novu._check_id(p_subscriber_id, 'subscriberId');
    integ := novu._resolve_integration(p_provider_id, p_identifier);
    tokens := novu._check_credentials(p_provider_id, p_credentials);
    PERFORM FROM novu.subscribers WHERE subscriber_id = p_subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', p_subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it first with novu.identify().';
    END IF;

    INSERT INTO novu.subscriber_channels AS c (subscriber_id, integration_id, webhook_url)
    VALUES (p_subscriber_id, integ.id, p_credentials ->> 'webhookUrl')
    ON CONFLICT (subscriber_id, integration_id) DO UPDATE SET
        webhook_url = CASE WHEN p_replace OR p_credentials ? 'webhookUrl' THEN excluded.webhook_url
                           ELSE c.webhook_url END,
        updated_at = now();

    IF p_replace THEN
        DELETE FROM novu.device_tokens
         WHERE subscriber_id = p_subscriber_id AND integration_id = integ.id
           AND device_token <> ALL (tokens);
    END IF;

    -- A token belongs to one subscriber per integration: take it over from anyone
    -- else.  Registering a token again dates it anew: APNs' "invalid since" answer
    -- removes only a token not registered again after that time.
    INSERT INTO novu.device_tokens AS d (integration_id, device_token, subscriber_id)
    SELECT integ.id, tok, p_subscriber_id
      FROM unnest(tokens) WITH ORDINALITY AS u(tok, n)
     ORDER BY n
    ON CONFLICT (integration_id, device_token) DO UPDATE SET
        subscriber_id = excluded.subscriber_id,
        created_at = now();

    -- At most 100 tokens per subscriber and integration in all, not only per
    -- call: a trigger makes one message per token, and appending without end
    -- would let one trigger make any number of them.  (Concurrent calls for one
    -- subscriber and integration wait for each other on its channel row,
    -- upserted above, and this count sees what the other committed.)
    SELECT count(*) INTO ntokens FROM novu.device_tokens
     WHERE subscriber_id = p_subscriber_id AND integration_id = integ.id;
    IF ntokens > 100 THEN
        RAISE EXCEPTION 'subscriber "%" would have % device tokens for integration "%"', p_subscriber_id, ntokens, integ.identifier
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'A subscriber keeps at most 100 device tokens per integration: replace them with novu.set_credentials(), or remove stale ones with novu.remove_device_token().';
    END IF;
END
$$;

DROP FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[]);
CREATE FUNCTION novu._record(p_worker integer, p_ids bigint[], p_attempts integer[], p_statuses text[],
                             p_errors text[], p_message_ids text[], p_delays_ms bigint[], p_receipt_ms bigint[],
                             p_details text[], p_prune_integrations bigint[], p_prune_tokens text[],
                             p_prune_since bigint[])
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
        -- (a token or webhook an application transaction holds is left: that
        -- transaction is changing it, and waiting for it would stop the worker;
        -- a send to it that fails again prunes it then)
        WITH dead_tokens AS MATERIALIZED (
            SELECT t.ctid AS tid FROM novu.device_tokens t
              JOIN unnest(p_prune_integrations, p_prune_tokens, p_prune_since) AS x(integration_id, token, since_ms)
                ON t.integration_id = x.integration_id AND t.device_token = x.token
             -- APNs says since when a token is invalid: one registered again after that stays
             WHERE x.since_ms IS NULL OR t.created_at <= to_timestamp(x.since_ms / 1000.0)
               FOR UPDATE OF t SKIP LOCKED
        ),
        pruned_tokens AS (
            DELETE FROM novu.device_tokens t USING dead_tokens k WHERE t.ctid = k.tid
            RETURNING t.integration_id
        ),
        dead_webhooks AS MATERIALIZED (
            -- a deleted chat webhook: the subscriber's credential goes
            SELECT c.ctid AS tid FROM novu.subscriber_channels c
              JOIN unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
                ON c.integration_id = x.integration_id AND c.webhook_url = x.token
             WHERE EXISTS (SELECT FROM novu.integrations ig WHERE ig.id = c.integration_id AND ig.channel = 'chat')
               FOR UPDATE OF c SKIP LOCKED
        ),
        pruned_webhooks AS (
            UPDATE novu.subscriber_channels c SET webhook_url = NULL, updated_at = now()
              FROM dead_webhooks k WHERE c.ctid = k.tid
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
COMMENT ON FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[], bigint[]) IS 'Internal (workers): record a batch of delivery results, the activity log and counters in one statement, and prune the dead tokens named unless registered again after the time given (a second one, only then)';
REVOKE EXECUTE ON FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[], bigint[]) TO novu_worker;

-- A NULL or empty subscriberId (get_subscriber, set_online_status, get_preferences,
-- set_preference, delete_credentials, remove_device_token), token or transactionId
-- (cancel) is an error naming the field, as elsewhere.  mark_as takes at most 100
-- ids: it answers with the messages, as a feed page does.

CREATE OR REPLACE FUNCTION novu.get_subscriber(subscriber_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s novu.subscribers;
BEGIN
    PERFORM novu._check_id(get_subscriber.subscriber_id, 'subscriber_id');
    SELECT * INTO s FROM novu.subscribers x WHERE x.subscriber_id = get_subscriber.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', get_subscriber.subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with novu.identify().';
    END IF;
    RETURN novu._subscriber_json(s);
END
$$;

CREATE OR REPLACE FUNCTION novu.set_online_status(subscriber_id text, is_online boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(set_online_status.subscriber_id, 'subscriber_id');
    IF is_online IS NULL THEN
        RAISE EXCEPTION 'is_online must not be null'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
    END IF;
    UPDATE novu.subscribers s
       SET is_online = set_online_status.is_online,
           last_online_at = CASE WHEN s.is_online AND NOT set_online_status.is_online THEN now()
                                 ELSE s.last_online_at END,
           updated_at = now()
     WHERE s.subscriber_id = set_online_status.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', set_online_status.subscriber_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.identify().';
    END IF;
    RETURN novu.get_subscriber(set_online_status.subscriber_id);
END
$$;

CREATE OR REPLACE FUNCTION novu.remove_device_token(subscriber_id text, provider_id text, token text,
                                         integration_identifier text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(remove_device_token.subscriber_id, 'subscriber_id');
    IF remove_device_token.token IS NULL OR remove_device_token.token = '' THEN
        RAISE EXCEPTION 'token must not be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the device token to remove.';
    END IF;
    PERFORM novu._check_provider(provider_id);
    IF integration_identifier IS NOT NULL THEN
        PERFORM novu._resolve_integration(provider_id, integration_identifier);
    END IF;
    DELETE FROM novu.device_tokens d
     USING novu.integrations i
     WHERE i.id = d.integration_id
       AND d.subscriber_id = remove_device_token.subscriber_id
       AND d.device_token = token
       AND i.provider_id = remove_device_token.provider_id
       AND (remove_device_token.integration_identifier IS NULL
            OR i.identifier = remove_device_token.integration_identifier);
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION novu.delete_credentials(subscriber_id text, provider_id text,
                                        integration_identifier text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(delete_credentials.subscriber_id, 'subscriber_id');
    PERFORM novu._check_provider(provider_id);
    IF integration_identifier IS NOT NULL THEN
        PERFORM novu._resolve_integration(provider_id, integration_identifier);
    END IF;
    DELETE FROM novu.subscriber_channels c
     USING novu.integrations i
     WHERE i.id = c.integration_id
       AND c.subscriber_id = delete_credentials.subscriber_id
       AND i.provider_id = delete_credentials.provider_id
       AND (delete_credentials.integration_identifier IS NULL
            OR i.identifier = delete_credentials.integration_identifier);
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION novu.cancel(transaction_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_events bigint;
    n_messages bigint;
    n_steps bigint;
BEGIN
    PERFORM novu._check_id(cancel.transaction_id, 'transaction_id');
    UPDATE novu.events e SET status = 'canceled', processed_at = now()
     WHERE e.transaction_id = cancel.transaction_id AND e.status IN ('pending', 'processing');
    GET DIAGNOSTICS n_events = ROW_COUNT;
    -- delays and digest events; before the messages: a step being run is
    -- waited for, and the messages it made are canceled below
    n_steps := novu._cancel_steps(cancel.transaction_id);
    WITH c AS (
        UPDATE novu.deliveries d SET status = 'canceled', updated_at = now(), last_error = 'Canceled'
         WHERE d.transaction_id = cancel.transaction_id AND d.status = 'pending'
        RETURNING d.id, d.subscriber_id, d.workflow_id, d.channel, d.provider_id)
    INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id,
                                        channel, provider_id, status, detail)
    SELECT cancel.transaction_id, c.id, c.subscriber_id, c.workflow_id, c.channel, c.provider_id,
           'Warning', 'Message canceled'
      FROM c;
    GET DIAGNOSTICS n_messages = ROW_COUNT;
    RETURN n_events + n_messages + n_steps > 0;
END
$$;

CREATE OR REPLACE FUNCTION novu.get_preferences(subscriber_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(get_preferences.subscriber_id, 'subscriber_id');
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = get_preferences.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', get_preferences.subscriber_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.identify().';
    END IF;
    RETURN jsonb_build_object(
        'global', (SELECT novu._preference_json(p.enabled, p.channels)
                     FROM (SELECT NULL) x
                     LEFT JOIN novu.preferences p
                       ON p.subscriber_id = get_preferences.subscriber_id AND p.workflow_id IS NULL),
        'workflows', COALESCE((
            SELECT jsonb_agg(jsonb_build_object(
                       'workflowId', w.workflow_id, 'name', w.name, 'critical', w.critical,
                       'preference', novu._preference_json(p.enabled, p.channels))
                     ORDER BY w.workflow_id)
              FROM novu.workflows w
              LEFT JOIN novu.preferences p
                ON p.subscriber_id = get_preferences.subscriber_id AND p.workflow_id = w.workflow_id), '[]'::jsonb));
END
$$;

CREATE OR REPLACE FUNCTION novu.set_preference(subscriber_id text, workflow_id text DEFAULT NULL,
                                    enabled boolean DEFAULT NULL, channels jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
    p novu.preferences;
BEGIN
    PERFORM novu._check_id(set_preference.subscriber_id, 'subscriber_id');
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = set_preference.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', set_preference.subscriber_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.identify().';
    END IF;
    IF set_preference.workflow_id IS NOT NULL THEN
        PERFORM FROM novu.workflows w WHERE w.workflow_id = set_preference.workflow_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'workflow "%" not found', set_preference.workflow_id
                USING ERRCODE = 'undefined_object', HINT = 'Pass NULL for the global preference.';
        END IF;
    END IF;
    IF channels IS NOT NULL THEN
        IF jsonb_typeof(channels) <> 'object' THEN
            RAISE EXCEPTION 'channels must be a JSON object'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Example: {"push": false}.';
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(channels) LOOP
            IF k NOT IN ('push', 'in_app', 'chat', 'email', 'sms') THEN
                RAISE EXCEPTION 'unknown channel "%" in channels', k
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Channels: push, in_app, chat, email, sms.';
            END IF;
            IF jsonb_typeof(v) <> 'boolean' THEN
                RAISE EXCEPTION 'channels.% must be a boolean', k
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
            END IF;
        END LOOP;
    END IF;
    INSERT INTO novu.preferences AS x (subscriber_id, workflow_id, enabled, channels)
    VALUES (set_preference.subscriber_id, set_preference.workflow_id, COALESCE(enabled, true), COALESCE(channels, '{}'))
    ON CONFLICT ON CONSTRAINT preferences_key DO UPDATE SET
        enabled = COALESCE(set_preference.enabled, x.enabled),
        channels = x.channels || COALESCE(set_preference.channels, '{}'),
        updated_at = now()
    RETURNING * INTO p;
    RETURN jsonb_build_object('workflowId', p.workflow_id,
                              'preference', novu._preference_json(p.enabled, p.channels));
END
$$;

CREATE OR REPLACE FUNCTION novu.mark_as(subscriber_id text, message_ids jsonb, mark jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids bigint[];
    mk jsonb;
    to_seen boolean;
    to_read boolean;
    changed integer;
BEGIN
    PERFORM novu._feed_subscriber(mark_as.subscriber_id);
    ids := novu._message_ids(mark_as.message_ids);
    -- the answer lists the messages, content and payload included: a feed page's worth
    IF cardinality(ids) > 100 THEN
        RAISE EXCEPTION 'message_ids has % ids, mark_as takes at most 100', cardinality(ids)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'It answers with the messages, as a feed page does: mark a page at a time, or use novu.mark_all_as.';
    END IF;
    mk := novu._feed_mark(mark_as.mark);
    to_seen := (mk ->> 'seen')::boolean;
    to_read := (mk ->> 'read')::boolean;
    PERFORM novu._lock_feed_messages(mark_as.subscriber_id, ids);
    UPDATE novu.in_app_messages m
       SET seen = COALESCE(to_seen, m.seen),
           last_seen_at = CASE WHEN to_seen AND NOT m.seen THEN now() ELSE m.last_seen_at END,
           read = COALESCE(to_read, m.read),
           last_read_at = CASE WHEN to_read AND NOT m.read THEN now() ELSE m.last_read_at END,
           updated_at = now()
     WHERE m.id = ANY (ids) AND m.subscriber_id = mark_as.subscriber_id
       AND (m.seen <> COALESCE(to_seen, m.seen) OR m.read <> COALESCE(to_read, m.read));
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        PERFORM novu._notify_in_app(mark_as.subscriber_id);
    END IF;
    RETURN (SELECT COALESCE(jsonb_agg(novu._feed_item(m) ORDER BY m.created_at DESC, m.id DESC), '[]')
              FROM novu.in_app_messages m
             WHERE m.id = ANY (ids) AND m.subscriber_id = mark_as.subscriber_id);
END
$$;

-- A listener holding a transaction open keeps the notification queue from being
-- emptied; once full, every notifying commit failed.  Past half the queue the
-- in-app notification (a hint) is not sent.
CREATE OR REPLACE FUNCTION novu._notify_in_app(p_subscriber_id text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('novu_in_app', format('{"subscriberId": %s, "unseenCount": %s}', to_json(p_subscriber_id),
        (SELECT count(*) FROM (SELECT FROM novu.in_app_messages m
                                WHERE m.subscriber_id = p_subscriber_id AND NOT m.seen
                                LIMIT 100) c)))
     WHERE pg_notification_queue_usage() < 0.5
$$;
