/*
 * novu--0.17.0--0.18.0.sql
 *		Upgrade from 0.17.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.18.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.17.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.18.0'" to load this file. \quit

-- A feed row references its subscriber, and goes with it: a subscriber made
-- later with the same id starts with an empty feed (in Novu a new subscriber
-- has a new _id).  The rows of subscribers deleted before (kept until now) go.
-- Both tables are locked first (the key's check would take this lock anyway):
-- a subscriber deleted, or a feed row stored, between the DELETE and the
-- check would fail the update.
LOCK TABLE novu.subscribers, novu.in_app_messages IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM novu.in_app_messages m
 WHERE NOT EXISTS (SELECT FROM novu.subscribers s WHERE s.subscriber_id = m.subscriber_id);
ALTER TABLE novu.in_app_messages
    ADD CONSTRAINT in_app_messages_subscriber_id_fkey FOREIGN KEY (subscriber_id)
        REFERENCES novu.subscribers ON DELETE CASCADE;

-- delete_subscriber checks the id it is given (one stored before can still be
-- deleted), locks the subscriber, then its feed rows in feed order, before the
-- cascade deletes them, and records the last event id made before it right (a
-- fresh sequence's last_value is the next id, not one handed out).
CREATE OR REPLACE FUNCTION novu.delete_subscriber(subscriber_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_it boolean;
    feed_rows integer;
BEGIN
    -- An exact lookup: an id stored before control characters were refused
    -- (U+0080..U+009F, before 0.18.0) can still be deleted; a new one is checked
    -- as identify checks it, and nothing is written for a refused one.
    IF delete_subscriber.subscriber_id IS NULL OR delete_subscriber.subscriber_id = ''
       OR length(delete_subscriber.subscriber_id) > 255
       OR NOT EXISTS (SELECT FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id) THEN
        PERFORM novu._check_id(delete_subscriber.subscriber_id, 'subscriber_id');
    END IF;
    -- The subscriber's row first: a worker storing an in-app message for it
    -- holds it (the feed's foreign key) and is waited for; then none can.
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id FOR UPDATE;
    -- Its in-app feed goes with it (the foreign key's cascade): a subscriber
    -- made later with the same id starts with an empty feed, as a new Novu
    -- subscriber has a new _id.  The rows are locked in feed order first, as
    -- the mark functions lock them (the cascade takes them in the table's).
    PERFORM FROM novu.in_app_messages m
      WHERE m.subscriber_id = delete_subscriber.subscriber_id
      ORDER BY m.created_at DESC, m.id DESC
      FOR UPDATE;
    GET DIAGNOSTICS feed_rows = ROW_COUNT;
    DELETE FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id;
    found_it := FOUND;
    -- a trigger made before now and not fanned out yet must not create it
    -- again (the fan-out creates missing recipients); also when it does not
    -- exist yet because that trigger's fan-out has not run
    INSERT INTO novu.subscriber_deletions AS x (subscriber_id, deleted_at, last_event_id)
    SELECT delete_subscriber.subscriber_id, now(),
           CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END
      FROM novu.events_id_seq q
    ON CONFLICT ON CONSTRAINT subscriber_deletions_pkey
    DO UPDATE SET deleted_at = excluded.deleted_at, last_event_id = excluded.last_event_id;
    IF found_it THEN
        -- Its waiting delays and digest windows are canceled, before its
        -- messages: a worker continuing one holds its row, and the lock below
        -- waits for it; that row is then done, but the worker may have written
        -- messages and the next delay or window, which the statements after
        -- the wait see (each takes a new snapshot).  Looked up again until a
        -- new snapshot shows no waiting step of it (a round that finds one has
        -- waited for a worker that went on, so this ends).
        LOOP
            PERFORM FROM novu.step_runs r
              WHERE r.subscriber_id = delete_subscriber.subscriber_id AND r.status = 'waiting'
              ORDER BY r.id
              FOR UPDATE OF r;
            WITH w AS (
                UPDATE novu.step_runs r SET status = 'canceled', updated_at = now()
                 WHERE r.subscriber_id = delete_subscriber.subscriber_id AND r.status = 'waiting'
                RETURNING r.transaction_id, r.workflow_id, r.kind, r.step_index)
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail)
            SELECT w.transaction_id, delete_subscriber.subscriber_id, w.workflow_id, w.kind, 'Warning',
                   initcap(w.kind) || ' canceled: subscriber deleted'
              FROM w;
            EXIT WHEN NOT EXISTS (SELECT FROM novu.step_runs r
                                   WHERE r.subscriber_id = delete_subscriber.subscriber_id
                                     AND r.status = 'waiting');
        END LOOP;
        -- Pending deliveries to it are canceled, those the workers waited for
        -- above made included; sent history stays.
        WITH c AS (
            UPDATE novu.deliveries d SET status = 'canceled', updated_at = now(),
                   last_error = 'Subscriber deleted'
             WHERE d.subscriber_id = delete_subscriber.subscriber_id AND d.status = 'pending'
            RETURNING d.id, d.transaction_id, d.workflow_id, d.channel, d.provider_id)
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id,
                                            channel, provider_id, status, detail)
        SELECT c.transaction_id, c.id, delete_subscriber.subscriber_id, c.workflow_id, c.channel,
               c.provider_id, 'Warning', 'Message canceled: subscriber deleted'
          FROM c;
    END IF;
    IF feed_rows > 0 THEN
        PERFORM novu._notify_in_app(delete_subscriber.subscriber_id);
    END IF;
    RETURN found_it;
END
$$;
COMMENT ON FUNCTION novu.delete_subscriber(text) IS 'Delete a subscriber with its credentials, preferences and in-app feed; pending deliveries and waiting delays and digests are canceled, the activity history stays; false if unknown';

-- delete_messages locks the feed rows in feed order before deleting them, as the
-- mark functions lock theirs (a deadlock with novu.mark_all_as before).
CREATE OR REPLACE FUNCTION novu.delete_messages(transaction_id text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    feed_subscribers text[];
BEGIN
    PERFORM novu._check_id(delete_messages.transaction_id, 'transaction_id');
    -- the feed rows locked in feed order first, as the mark functions lock
    -- theirs: deleted in the table's order, two rows of one feed could be
    -- taken in the other order than novu.mark_all_as takes them (a deadlock)
    PERFORM FROM novu.in_app_messages m
      WHERE m.transaction_id = delete_messages.transaction_id
      ORDER BY m.created_at DESC, m.id DESC
      FOR UPDATE;
    WITH d AS (
        DELETE FROM novu.deliveries d WHERE d.transaction_id = delete_messages.transaction_id RETURNING d.id
    ),
    m AS (
        DELETE FROM novu.in_app_messages m WHERE m.transaction_id = delete_messages.transaction_id
        RETURNING m.id, m.subscriber_id
    )
    SELECT (SELECT count(*) FROM (SELECT d.id FROM d UNION SELECT m.id FROM m) u),
           (SELECT array_agg(DISTINCT m.subscriber_id) FROM m)
      INTO n, feed_subscribers;
    PERFORM novu._notify_in_app(s) FROM unnest(feed_subscribers) s;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu.delete_messages(text) IS 'Delete every message of a transaction (any channel; in_app ones leave the feeds); returns how many.  It does not stop what is not fanned out yet: see novu.cancel()';

-- The in_app sink does not store a message whose subscriber was deleted: it is
-- canceled.
CREATE OR REPLACE FUNCTION novu._store_in_app(p_ids bigint[], p_attempts integer[], p_subjects text[], p_contents text[],
                                   p_urls text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    subs text[];
    n integer;
BEGIN
    WITH r AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_subjects, p_contents, p_urls)
                 AS r(id, attempts, subject, content, url)
    ),
    upd AS (
        UPDATE novu.deliveries d
           SET status = 'sent', last_error = NULL, sent_at = now(), lease_until = NULL, updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                        AND EXISTS (SELECT FROM novu.subscribers s
                                                     WHERE s.subscriber_id = x.subscriber_id)
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.workflow_id, d.subscriber_id, d.step_index, r.subject, r.content, r.url
    ),
    ins AS (
        INSERT INTO novu.in_app_messages (id, subscriber_id, transaction_id, workflow_id, feed_identifier,
                                          content, subject, avatar, cta, payload, actor)
        SELECT u.id, u.subscriber_id, u.transaction_id, u.workflow_id, st.step ->> 'feedIdentifier',
               u.content, NULLIF(u.subject, ''),
               CASE WHEN jsonb_typeof(st.step -> 'avatar') = 'string' THEN st.step ->> 'avatar'
                    WHEN jsonb_typeof(st.step -> 'avatar') = 'boolean' AND NOT (st.step -> 'avatar')::boolean THEN NULL
                    WHEN jsonb_typeof(ev.actor) = 'object' THEN ev.actor ->> 'avatar' END,
               jsonb_build_object(
                   'type', 'redirect',
                   'data', CASE WHEN u.url IS NOT NULL THEN jsonb_build_object('url', u.url) ELSE '{}'::jsonb END,
                   'action', jsonb_build_object(
                       'status', 'pending',
                       'buttons', COALESCE(st.step -> 'actions', '[]'::jsonb),
                       'result', jsonb_build_object('payload', '{}'::jsonb, 'type', NULL))),
               COALESCE(ev.payload, '{}'::jsonb),
               CASE WHEN jsonb_typeof(ev.actor) = 'object' THEN jsonb_build_object(
                   'subscriberId', ev.actor -> 'subscriberId', 'firstName', ev.actor -> 'firstName',
                   'lastName', ev.actor -> 'lastName', 'avatar', ev.actor -> 'avatar') END
          FROM upd u
          LEFT JOIN novu.events ev ON ev.transaction_id = u.transaction_id
          LEFT JOIN novu.workflows w ON w.workflow_id = u.workflow_id
          CROSS JOIN LATERAL (SELECT w.steps -> u.step_index AS step) st
        ON CONFLICT (id) DO NOTHING
        RETURNING novu.in_app_messages.subscriber_id
    ),
    log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            status, detail)
        SELECT u.transaction_id, u.id, u.subscriber_id, u.workflow_id, 'in_app', 'Success', 'Message created'
          FROM upd u
    ),
    -- claimed before its subscriber was deleted: not stored (its feed went
    -- with it), canceled as novu.delete_subscriber cancels the pending ones
    gone AS (
        UPDATE novu.deliveries d
           SET status = 'canceled', last_error = 'Subscriber deleted', lease_until = NULL, updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                        AND NOT EXISTS (SELECT FROM novu.subscribers s
                                                         WHERE s.subscriber_id = x.subscriber_id)
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.workflow_id, d.subscriber_id
    ),
    gone_log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            status, detail)
        SELECT g.transaction_id, g.id, g.subscriber_id, g.workflow_id, 'in_app', 'Warning',
               'Message canceled: subscriber deleted'
          FROM gone g
    )
    SELECT array_agg(DISTINCT i.subscriber_id), count(*) INTO subs, n FROM ins i;
    PERFORM novu._notify_in_app(s) FROM unnest(subs) s;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu._store_in_app(bigint[], integer[], text[], text[], text[]) IS 'Internal (workers): the in_app sink: store rendered in_app messages in the feed, mark them sent, log them, NOTIFY novu_in_app at commit';

-- A broadcast's chunk starts at its cursor by an index condition (each chunk
-- scanned from the first subscriber before).
CREATE OR REPLACE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
                             p_slot integer, p_nslots integer, p_floor bigint DEFAULT 0)
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
    -- batch of 10,000.  The scans start at the worker's floor (p_floor: no
    -- trigger below it is or can become pending, see src/queue/floor.c), past
    -- the index entries of triggers already fanned out that VACUUM has not
    -- removed yet (after a burst, hundreds of pages read at every wake-up).
    -- Never above the sequence's last value: a sequence set back (TRUNCATE
    -- ... RESTART IDENTITY) hands out ids below the floor until the worker
    -- sees it.
    p_floor := LEAST(p_floor, (SELECT s.last_value FROM novu.events_id_seq s));
    SELECT array_agg(c.ctid) INTO tids
      FROM (SELECT x.ctid FROM novu.events x
             WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor
               AND (p_nslots <= 1 OR x.id % p_nslots = p_slot)
             ORDER BY x.id LIMIT p_limit
             FOR UPDATE SKIP LOCKED) c;
    IF p_nslots > 1 AND COALESCE(cardinality(tids), 0) < p_limit THEN
        SELECT array_agg(c.ctid) INTO more
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor AND x.id % p_nslots <> p_slot
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
        -- novu.trigger does not look up a recipient named by a plain
        -- subscriberId: the missing ones are created here, with an empty
        -- profile, in subscriberId order (workers creating the same ones wait
        -- for each other in one order), except one deleted after its trigger
        -- was made (its messages end skipped, "Subscriber not found")
        -- (OFFSET 0: the deletions are looked up for the missing ones only)
        INSERT INTO novu.subscribers (subscriber_id)
        SELECT DISTINCT m.s
          FROM (SELECT z.t, z.s FROM unnest(txids, subids) AS z(t, s)
                 WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = z.s)
                OFFSET 0) m
         WHERE NOT EXISTS (SELECT FROM novu.subscriber_deletions d JOIN novu.events e ON e.transaction_id = m.t
                            WHERE d.subscriber_id = m.s AND d.last_event_id >= e.id)
         ORDER BY 1
        ON CONFLICT DO NOTHING;
        BEGIN
            RETURN QUERY SELECT x.*, 0 FROM novu._start(txids, wfids, subids, p_lease_limit, p_lease_ms) x;
            GET DIAGNOSTICS leased = ROW_COUNT;
        EXCEPTION WHEN OTHERS THEN
            -- one bad event (and nothing it returned) is undone; the others go on one by one
            leased := 0;
            FOREACH one IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(txids) u) LOOP
                BEGIN
                    RETURN QUERY
                    SELECT x.*, 0 FROM novu._start(
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
            -- a topic trigger's direct recipients, as a trigger's above
            IF b.kind <> 'broadcast' AND b.cursor IS NULL AND b.recipients IS NOT NULL THEN
                INSERT INTO novu.subscribers (subscriber_id)
                SELECT DISTINCT r.s
                  FROM unnest(b.recipients) AS r(s)
                 WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = r.s)
                   AND NOT EXISTS (SELECT FROM novu.subscriber_deletions d
                                    WHERE d.subscriber_id = r.s AND d.last_event_id >= b.id)
                 ORDER BY 1
                ON CONFLICT DO NOTHING;
            END IF;
            IF b.kind = 'broadcast' THEN
                SELECT array_agg(s.subscriber_id ORDER BY s.subscriber_id) INTO chunk
                  FROM (SELECT sub.subscriber_id FROM novu.subscribers sub
                         -- an index condition: the chunk starts at the cursor (an OR
                         -- with "cursor IS NULL" made it a filter, every chunk
                         -- scanning from the first subscriber: a broadcast O(n^2))
                         WHERE sub.subscriber_id > COALESCE(b.cursor, '')
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
                SELECT x.*, 0 FROM novu._start(array_fill(b.transaction_id, ARRAY[cardinality(chunk)]),
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
COMMENT ON FUNCTION novu._fanout(integer, integer, integer, integer, integer, bigint) IS 'Internal (workers): create the missing recipients of pending triggers, fan the triggers out, then chunks of broadcasts and topic triggers, into deliveries; returns the messages leased to the caller, then one row with the count handled';

-- Control characters are the C0 and C1 ones (U+0001..U+001F, U+007F..U+009F),
-- whatever the database's locale says [[:cntrl:]] is: the same rule as
-- novu.trigger's (which let U+0080..U+009F through before).
CREATE OR REPLACE FUNCTION novu._check_id(value text, field text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR value = '' THEN
        RAISE EXCEPTION '% must not be empty', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give a %s of 1 to 255 characters.', field);
    END IF;
    IF length(value) > 255 THEN
        RAISE EXCEPTION '% is too long (% characters)', field, length(value)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A %s has at most 255 characters.', field);
    END IF;
    IF value ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN
        RAISE EXCEPTION '% must not contain control characters', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Use printable characters in %s.', field);
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_id(text, text) IS 'Internal: raise unless the identifier has 1 to 255 characters and no control characters';
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
               WHEN i.sid ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN 'subscriberId contains control characters'
               WHEN i.email IS NOT NULL AND i.email !~ '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'
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
COMMENT ON FUNCTION novu.import_subscribers() IS 'Validate and upsert every row COPYed into novu.subscriber_import, set-based; bad rows go to novu.subscriber_import_rejects with the reason';
CREATE OR REPLACE FUNCTION novu._check_topic_name(value text)
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
    IF value ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN
        RAISE EXCEPTION 'name must not contain control characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use printable characters in name.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_topic_name(text) IS 'Internal: raise unless the topic name has 1 to 255 characters and no control characters';

-- The CSV import rejects a row whose data is too large as JSON text (numbers
-- count as written out), as identify refuses it.
CREATE FUNCTION novu._json_size_ok(value jsonb, max_bytes integer)
RETURNS boolean
LANGUAGE C STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'novu_json_size_ok';
COMMENT ON FUNCTION novu._json_size_ok(jsonb, integer) IS 'Internal: whether novu._check_size would accept the value (its JSON text at most max_bytes bytes, numbers as written out; at most 64 levels), without raising';
REVOKE EXECUTE ON FUNCTION novu._json_size_ok(jsonb, integer) FROM PUBLIC;
