/*
 * novu--0.6.0--0.7.0.sql
 *		Upgrade from 0.6.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.7.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.6.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.7.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Topics (DESIGN 9): the tables, the API, triggers naming topics fanned out by
-- the workers in chunks (outbox kind 'topic', events.topics), the actor kept as
-- its profile
------------------------------------------------------------------------------

-- Topics: named groups of subscribers, addressed in a trigger's "to" as
-- {"type": "Topic", "topicKey": key}.  Members are keyed by the topic's id, not its
-- key: a membership row stays small however long the key.
CREATE TABLE novu.topics (
    id              bigserial PRIMARY KEY,
    key             text COLLATE "C" NOT NULL UNIQUE,
    name            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE novu.topics IS 'Topics: named groups of subscribers a trigger can address as {"type": "Topic", "topicKey": key}';

-- A topic's members.  The primary key lists a topic's members in subscriberId
-- order (the fan-out walks it by a cursor); the second index lists a
-- subscriber's topics and serves the cascade when a subscriber is deleted.  A
-- topic with members cannot be deleted (RESTRICT; novu.delete_topic says so).
CREATE TABLE novu.topic_subscribers (
    topic_id        bigint NOT NULL REFERENCES novu.topics ON DELETE RESTRICT,
    subscriber_id   text COLLATE "C" NOT NULL REFERENCES novu.subscribers ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic_id, subscriber_id)
);
CREATE INDEX topic_subscribers_subscriber_idx ON novu.topic_subscribers (subscriber_id);
COMMENT ON TABLE novu.topic_subscribers IS 'Topic members: one row per (topic, subscriber)';

SELECT pg_catalog.pg_extension_config_dump('novu.topics', '');
SELECT pg_catalog.pg_extension_config_dump('novu.topics_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.topic_subscribers', '');

ALTER TABLE novu.events ADD COLUMN topics text[] COLLATE "C";
DROP INDEX novu.events_broadcast_idx;
CREATE INDEX events_chunked_idx ON novu.events (id) WHERE kind <> 'trigger' AND status IN ('pending', 'processing');

CREATE OR REPLACE VIEW novu.notifications AS
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
     WHERE e.kind IN ('broadcast', 'topic');
COMMENT ON VIEW novu.notifications IS 'One row per (transaction, subscriber); a broadcast or a trigger naming topics lists its subscribers once fanned out';

CREATE FUNCTION novu._check_topic_key(value text, field text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR value = '' THEN
        RAISE EXCEPTION '% must not be empty', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A topic key has 1 to 255 characters, e.g. "post:42".';
    END IF;
    IF length(value) > 255 THEN
        RAISE EXCEPTION '% is too long (% characters)', field, length(value)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A topic key has at most 255 characters.';
    END IF;
    IF value !~ '^[A-Za-z0-9_.:@+-]+$' THEN
        RAISE EXCEPTION '% may contain only letters, digits and - _ : . @ +', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Examples: "post:42", "team-engineering", "ada@example.com".';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_topic_key(text, text) IS 'Internal: raise unless the topic key has 1 to 255 characters, each a letter, digit or one of - _ : . @ +';

CREATE FUNCTION novu._check_topic_name(value text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR btrim(value) = '' THEN
        RAISE EXCEPTION 'name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a name of 1 to 255 characters (create_topic uses the key when the name is null).';
    END IF;
    IF length(value) > 255 THEN
        RAISE EXCEPTION 'name is too long (% characters)', length(value)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A topic name has at most 255 characters.';
    END IF;
    IF value ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'name must not contain control characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use printable characters in name.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_topic_name(text) IS 'Internal: raise unless the topic name has 1 to 255 characters and no control characters';

-- The subscriberIds of an add/remove call: a JSON array of at most 500 strings,
-- each a valid subscriberId; returns them de-duplicated, in the order given.
CREATE FUNCTION novu._topic_subscriber_ids(subscriber_ids jsonb)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb;
    i integer := 0;
BEGIN
    IF subscriber_ids IS NULL OR jsonb_typeof(subscriber_ids) <> 'array' THEN
        RAISE EXCEPTION 'subscriber_ids must be a JSON array of subscriberIds'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: ''["user-1", "user-2"]''.';
    END IF;
    IF jsonb_array_length(subscriber_ids) > 500 THEN
        RAISE EXCEPTION 'too many subscriber_ids: % (at most 500 per call)', jsonb_array_length(subscriber_ids)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Split the array into calls of 500.';
    END IF;
    FOR v IN SELECT * FROM jsonb_array_elements(subscriber_ids) LOOP
        IF jsonb_typeof(v) <> 'string' THEN
            RAISE EXCEPTION 'subscriber_ids[%] must be a string', i
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'subscriber_ids is an array of subscriberId strings.';
        END IF;
        PERFORM novu._check_id(v #>> '{}', format('subscriber_ids[%s]', i));
        i := i + 1;
    END LOOP;
    RETURN ARRAY(SELECT x FROM jsonb_array_elements_text(subscriber_ids) WITH ORDINALITY a(x, n)
                 GROUP BY x ORDER BY min(n));
END
$$;
COMMENT ON FUNCTION novu._topic_subscriber_ids(jsonb) IS 'Internal: validate a JSON array of at most 500 subscriberIds; returns them de-duplicated in order';

-- Novu's JSON shape of a topic.
CREATE FUNCTION novu._topic_json(t novu.topics)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('_id', t.id::text, 'key', t.key, 'name', t.name,
                              'createdAt', novu._iso(t.created_at), 'updatedAt', novu._iso(t.updated_at))
$$;
COMMENT ON FUNCTION novu._topic_json(novu.topics) IS 'Internal: Novu''s JSON shape of a topic';

-- The topic of a key, or an error naming it.
CREATE FUNCTION novu._get_topic(p_key text)
RETURNS novu.topics
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(p_key, 'key');
    SELECT * INTO t FROM novu.topics x WHERE x.key = p_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" not found', p_key
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with novu.create_topic(); topic keys are case sensitive.';
    END IF;
    RETURN t;
END
$$;
COMMENT ON FUNCTION novu._get_topic(text) IS 'Internal: the topic of a key; an unknown key is an error';

CREATE FUNCTION novu.create_topic(key text, name text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(create_topic.key, 'key');
    PERFORM novu._check_topic_name(COALESCE(create_topic.name, create_topic.key));
    INSERT INTO novu.topics AS x (key, name)
    VALUES (create_topic.key, COALESCE(create_topic.name, create_topic.key))
    ON CONFLICT DO NOTHING
    RETURNING x.* INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" already exists', create_topic.key
            USING ERRCODE = 'unique_violation',
                  HINT = 'Topic keys are unique; rename it with novu.rename_topic() or choose another key.';
    END IF;
    RETURN novu._topic_json(t);
END
$$;
COMMENT ON FUNCTION novu.create_topic(text, text) IS 'Create a topic (the name defaults to the key); an existing key is an error';

CREATE FUNCTION novu.get_topic(key text)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT novu._topic_json(novu._get_topic(key)) $$;
COMMENT ON FUNCTION novu.get_topic(text) IS 'Get a topic {_id, key, name, createdAt, updatedAt}; an unknown key is an error';

CREATE FUNCTION novu.list_topics(page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF page IS NULL OR page < 0 THEN
        RAISE EXCEPTION 'page must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pages are numbered from 0.';
    END IF;
    IF page_size IS NULL OR page_size < 1 OR page_size > 100 THEN
        RAISE EXCEPTION 'page_size must be between 1 and 100'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default page size is 10.';
    END IF;
    RETURN jsonb_build_object(
        'page', page,
        'totalCount', (SELECT count(*) FROM novu.topics),
        'pageSize', page_size,
        'data', COALESCE((SELECT jsonb_agg(novu._topic_json(t) ORDER BY t.key)
                            FROM (SELECT * FROM novu.topics ORDER BY key
                                   OFFSET page::bigint * page_size LIMIT page_size) t), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION novu.list_topics(integer, integer) IS 'List topics by key: {page, totalCount, pageSize, data}';

CREATE FUNCTION novu.rename_topic(key text, name text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(rename_topic.key, 'key');
    PERFORM novu._check_topic_name(rename_topic.name);
    UPDATE novu.topics x SET name = rename_topic.name, updated_at = now()
     WHERE x.key = rename_topic.key
    RETURNING x.* INTO t;
    IF NOT FOUND THEN
        PERFORM novu._get_topic(rename_topic.key);  -- raises "not found"
    END IF;
    RETURN novu._topic_json(t);
END
$$;
COMMENT ON FUNCTION novu.rename_topic(text, text) IS 'Rename a topic (its key never changes); an unknown key is an error';

-- A topic is deleted only when empty.  Its row is locked first: an add in
-- progress holds a key-share lock on it (the members' foreign key), so the
-- check below, a new statement, sees that add's members once it commits.
CREATE FUNCTION novu.delete_topic(key text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(delete_topic.key, 'key');
    SELECT * INTO t FROM novu.topics x WHERE x.key = delete_topic.key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT FROM novu.topic_subscribers ts WHERE ts.topic_id = t.id) THEN
        RAISE EXCEPTION 'topic "%" still has subscribers', delete_topic.key
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Remove them with novu.remove_topic_subscribers() (novu.topic_subscribers() lists them), then delete the topic.';
    END IF;
    DELETE FROM novu.topics x WHERE x.id = t.id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION novu.delete_topic(text) IS 'Delete an empty topic; true if deleted, false if unknown; a topic with subscribers is refused';

-- Add subscribers to a topic: existing subscribers succeed (members already
-- included), unknown subscriberIds are reported in failed.notFound; nothing is
-- created.  The subscribers found are key-share locked, so none can be deleted
-- between this check and the insert.
CREATE FUNCTION novu.add_topic_subscribers(key text, subscriber_ids jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
    ids text[];
    found_ids text[];
BEGIN
    t := novu._get_topic(add_topic_subscribers.key);
    ids := novu._topic_subscriber_ids(subscriber_ids);
    found_ids := ARRAY(SELECT s.subscriber_id FROM novu.subscribers s
                        WHERE s.subscriber_id = ANY (ids)
                        ORDER BY s.subscriber_id FOR KEY SHARE);
    INSERT INTO novu.topic_subscribers (topic_id, subscriber_id)
    SELECT t.id, f FROM unnest(found_ids) AS f
    ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object(
        'succeeded', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                     WHERE i = ANY (found_ids) ORDER BY n)),
        'failed', jsonb_build_object(
            'notFound', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                        WHERE NOT i = ANY (found_ids) ORDER BY n))));
END
$$;
COMMENT ON FUNCTION novu.add_topic_subscribers(text, jsonb) IS 'Add up to 500 subscribers to a topic: {succeeded: [...], failed: {notFound: [...]}}; unknown subscriberIds are notFound';

CREATE FUNCTION novu.remove_topic_subscribers(key text, subscriber_ids jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
    ids text[];
    removed text[];
BEGIN
    t := novu._get_topic(remove_topic_subscribers.key);
    ids := novu._topic_subscriber_ids(subscriber_ids);
    WITH d AS (
        DELETE FROM novu.topic_subscribers ts
         WHERE ts.topic_id = t.id AND ts.subscriber_id = ANY (ids)
        RETURNING ts.subscriber_id)
    SELECT COALESCE(array_agg(d.subscriber_id), '{}') INTO removed FROM d;
    RETURN jsonb_build_object(
        'succeeded', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                     WHERE i = ANY (removed) ORDER BY n)),
        'failed', jsonb_build_object(
            'notFound', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                        WHERE NOT i = ANY (removed) ORDER BY n))));
END
$$;
COMMENT ON FUNCTION novu.remove_topic_subscribers(text, jsonb) IS 'Remove up to 500 subscribers from a topic: {succeeded: [...], failed: {notFound: [...]}}; ids that were not members are notFound';

CREATE FUNCTION novu.topic_subscribers(key text, page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    t := novu._get_topic(topic_subscribers.key);
    IF page IS NULL OR page < 0 THEN
        RAISE EXCEPTION 'page must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pages are numbered from 0.';
    END IF;
    IF page_size IS NULL OR page_size < 1 OR page_size > 100 THEN
        RAISE EXCEPTION 'page_size must be between 1 and 100'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default page size is 10.';
    END IF;
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
COMMENT ON FUNCTION novu.topic_subscribers(text, integer, integer) IS 'List a topic''s subscribers by subscriberId: {page, totalCount, pageSize, data: [{_topicId, topicKey, subscriberId, externalSubscriberId, createdAt}]}';

-- Topic fan-out.  A trigger whose "to" names topics is written as one outbox
-- row of kind 'topic' holding its direct recipients (recipients), its topic
-- keys (topics) and its actor; nothing is expanded in the caller's
-- transaction, however large the topics.  The workers fan it out like a
-- broadcast (_fanout), one chunk per turn, by a cursor on the row
-- (events.cursor: the greatest subscriberId done so far).
--
-- A chunk is the next p_limit distinct subscriberIds after the cursor, in
-- subscriberId order (COLLATE "C", the order of the keys and of the cursor),
-- of the union of
--   - the direct recipients (at most 1000, checked by novu.trigger), and
--   - each topic's members, the actor left out: the actor is never notified
--     through a topic, only when listed directly.
-- Walking the union in one order with one cursor de-duplicates it: a
-- subscriber in two topics and listed directly is one value of the union,
-- handed out in exactly one chunk.  The chunk is bounded without reading
-- whole topics: of each source only its first p_limit values after the cursor
-- can be among the union's first p_limit (a value later in its own source has
-- p_limit smaller ones before it), so each topic is read by one range scan of
-- the members' primary key (topic_id, subscriber_id), stopped after p_limit
-- rows.  A chunk reads at most (topics + 1) * p_limit values whatever the
-- topics' sizes, and the workers' memory stays flat for topics of millions.
--
-- Members are read as of each chunk: a subscriber added to a topic before the
-- cursor passes its id is notified, one removed before is not; a subscriber
-- deleted is gone from its topics (ON DELETE CASCADE).
CREATE FUNCTION novu._topic_chunk(p_recipients text[], p_topics text[], p_actor text, p_cursor text,
                                  p_limit integer)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(array_agg(c.subscriber_id ORDER BY c.subscriber_id), '{}')
      FROM (SELECT DISTINCT u.subscriber_id
              FROM (SELECT r.subscriber_id COLLATE "C" AS subscriber_id
                      FROM unnest(p_recipients) AS r(subscriber_id)
                     WHERE r.subscriber_id COLLATE "C" > COALESCE(p_cursor, '') COLLATE "C"
                    UNION ALL
                    SELECT m.subscriber_id
                      FROM novu.topics t
                      CROSS JOIN LATERAL (
                          SELECT ts.subscriber_id
                            FROM novu.topic_subscribers ts
                           WHERE ts.topic_id = t.id
                             AND ts.subscriber_id > COALESCE(p_cursor, '') COLLATE "C"
                             AND ts.subscriber_id <> COALESCE(p_actor, '') COLLATE "C"
                           ORDER BY ts.subscriber_id
                           LIMIT p_limit) m
                     WHERE t.key = ANY (p_topics)) u
             ORDER BY u.subscriber_id
             LIMIT p_limit) c
$$;
COMMENT ON FUNCTION novu._topic_chunk(text[], text[], text, text, integer) IS 'Internal (workers): the next chunk of a topic trigger''s recipients after the cursor: direct recipients and topic members (the actor left out), de-duplicated, in subscriberId order';

-- Fan out pending outbox rows: trigger events in one set-based statement (one by
-- one if that fails, so a bad event cannot block the others), then chunks of at
-- most p_limit subscribers in all of broadcasts and triggers naming topics.  Returns the rows leased to the
-- caller (at most p_lease_limit, see _expand); *handled (OUT) is the number of
-- outbox rows and broadcast subscribers handled.
CREATE OR REPLACE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
                             p_slot integer, p_nslots integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb, handled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
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
    tids tid[];
    more tid[];
    budget integer;
    last_id bigint := 0;
    state text;
BEGIN
    -- claim pending triggers, then mark them processed.  Each worker takes its
    -- own share first (id modulo the workers): workers that scan the same rows
    -- would each try the other's row locks, one by one, to skip them.  With its
    -- share short of p_limit, it helps with the others' (so one wake-up takes
    -- every row committed so far, and a call that took fewer than p_limit rows
    -- tells the worker that nothing more is waiting).  The rows are locked first and
    -- updated by TID after (_take_events): a join of the locking subquery with
    -- the table can be planned (on an outbox analyzed while empty) as a nested
    -- loop that locks and scans again for every row, which took 24 s for a
    -- batch of 10,000.
    SELECT array_agg(c.ctid) INTO tids
      FROM (SELECT x.ctid FROM novu.events x
             WHERE x.status = 'pending' AND x.kind = 'trigger'
               AND (p_nslots <= 1 OR x.id % p_nslots = p_slot)
             ORDER BY x.id LIMIT p_limit
             FOR UPDATE SKIP LOCKED) c;
    IF p_nslots > 1 AND COALESCE(cardinality(tids), 0) < p_limit THEN
        SELECT array_agg(c.ctid) INTO more
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id % p_nslots <> p_slot
                 ORDER BY x.id LIMIT p_limit - COALESCE(cardinality(tids), 0)
                 FOR UPDATE SKIP LOCKED) c;
        tids := COALESCE(tids || more, tids, more);
    END IF;
    IF tids IS NOT NULL THEN
        SELECT array_agg(e.transaction_id), array_agg(e.workflow_id), array_agg(r.subscriber_id),
               count(DISTINCT e.transaction_id)
          INTO txids, wfids, subids, done
          FROM novu._take_events(tids) e CROSS JOIN LATERAL unnest(e.recipients) AS r(subscriber_id);
    END IF;
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

    -- Broadcasts and triggers naming topics (kind 'topic', see _topic_chunk)
    -- go by chunks, in subscriberId order from the cursor on their outbox row.
    -- One call hands out at most p_limit subscribers in all (each row costs at
    -- least one): a big row takes its chunk and ends the call, small topic
    -- triggers are finished several per call.  The row's cursor moves before
    -- its chunk is expanded, in the same subtransaction: a chunk that fails
    -- to expand is undone whole, and its row is marked processed with the
    -- reason, as a failing trigger is, so that it cannot block the rows after
    -- it.
    budget := p_limit;
    LOOP
        SELECT * INTO b FROM novu.events ev
         WHERE ev.status IN ('pending', 'processing') AND ev.kind <> 'trigger' AND ev.id > last_id
         ORDER BY ev.id LIMIT 1
         FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        last_id := b.id;
        BEGIN
            IF b.kind = 'broadcast' THEN
                SELECT array_agg(s.subscriber_id ORDER BY s.subscriber_id) INTO chunk
                  FROM (SELECT sub.subscriber_id FROM novu.subscribers sub
                         WHERE b.cursor IS NULL OR sub.subscriber_id > b.cursor
                         ORDER BY sub.subscriber_id LIMIT budget) s;
            ELSE
                chunk := NULLIF(novu._topic_chunk(b.recipients, b.topics,
                                                  CASE jsonb_typeof(b.actor) WHEN 'string' THEN b.actor #>> '{}'
                                                       ELSE b.actor ->> 'subscriberId' END,
                                                  b.cursor, budget), '{}');
            END IF;
            IF chunk IS NULL OR cardinality(chunk) < budget THEN
                UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
            ELSE
                UPDATE novu.events SET status = 'processing', cursor = chunk[cardinality(chunk)] WHERE novu.events.id = b.id;
            END IF;
            IF chunk IS NOT NULL THEN
                RETURN QUERY
                SELECT x.*, 0 FROM novu._expand(array_fill(b.transaction_id, ARRAY[cardinality(chunk)]),
                                                array_fill(b.workflow_id, ARRAY[cardinality(chunk)]), chunk,
                                                GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
                GET DIAGNOSTICS n = ROW_COUNT;
                leased := leased + n;
                done := done + cardinality(chunk);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            -- a transient failure (serialization, deadlock, lock timeout, out of
            -- resources) ends the call: the worker tries this chunk again later
            IF left(state, 2) IN ('40', '53', '55', '57', '58') THEN
                RAISE;
            END IF;
            UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
            INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
            VALUES (b.transaction_id, b.workflow_id, 'Failed', 'Fan-out failed: ' || msg);
            chunk := NULL;
        END;
        done := done + 1;
        budget := budget - GREATEST(COALESCE(cardinality(chunk), 0), 1);
        EXIT WHEN budget <= 0;
    END LOOP;

    -- the count of handled outbox rows travels in one extra row with no message
    RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                        NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, done;
END
$$;
COMMENT ON FUNCTION novu._fanout(integer, integer, integer, integer, integer) IS 'Internal (workers): fan out pending triggers, then chunks of broadcasts and topic triggers, into deliveries; returns the messages leased to the caller, then one row with the count handled';

REVOKE EXECUTE ON FUNCTION
    novu._check_topic_key(text, text),
    novu._check_topic_name(text),
    novu._topic_subscriber_ids(jsonb),
    novu._topic_json(novu.topics),
    novu._get_topic(text),
    novu.create_topic(text, text),
    novu.get_topic(text),
    novu.list_topics(integer, integer),
    novu.rename_topic(text, text),
    novu.delete_topic(text),
    novu.add_topic_subscribers(text, jsonb),
    novu.remove_topic_subscribers(text, jsonb),
    novu.topic_subscribers(text, integer, integer),
    novu._topic_chunk(text[], text[], text, text, integer)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    novu.create_topic(text, text),
    novu.get_topic(text),
    novu.list_topics(integer, integer),
    novu.rename_topic(text, text),
    novu.delete_topic(text),
    novu.add_topic_subscribers(text, jsonb),
    novu.remove_topic_subscribers(text, jsonb),
    novu.topic_subscribers(text, integer, integer)
TO novu_app;
GRANT SELECT ON novu.topics, novu.topic_subscribers TO novu_app, novu_worker;
GRANT EXECUTE ON FUNCTION novu._topic_chunk(text[], text[], text, text, integer) TO novu_worker;

-- The workers plan the fan-out and the recording once (their statements were planned
-- again at every call: 2.5 ms of a 4 ms claim of one trigger); the receipts claim reaches
-- its rows by key whatever the statistics say.
ALTER FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[])
    SET plan_cache_mode = force_generic_plan;
CREATE OR REPLACE FUNCTION novu._claim_receipts(p_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, integration_id bigint, ticket text, device_token text, attempts integer, sent_age double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    -- the due receipts are locked first (a materialized CTE, scanned once) and
    -- each row is then reached by its primary key: a plan that scanned the
    -- table and ran the locking subquery again for each of its rows held the
    -- locks for seconds while a burst's receipts came due
    RETURN QUERY
    WITH c AS MATERIALIZED (
        SELECT x.id FROM novu.deliveries x
         WHERE x.receipt_at <= now()
         ORDER BY x.receipt_at
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED
    )
    UPDATE novu.deliveries d
       SET receipt_at = now() + p_lease_ms * interval '1 millisecond'
      FROM c CROSS JOIN LATERAL (SELECT y.ctid AS tid FROM novu.deliveries y WHERE y.id = c.id OFFSET 0) l
     WHERE d.ctid = l.tid
    RETURNING d.id, COALESCE(d.integration_id, 0), d.provider_message_id, d.device_token, d.attempts,
              extract(epoch FROM now() - d.sent_at)::double precision;
END
$$;
