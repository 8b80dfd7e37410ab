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

-- delete_subscriber checks the id it is given, deletes the subscriber's in-app
-- feed (a subscriber made later with the same id starts with an empty one), and
-- records the last event id made before it (a fresh sequence's last_value is
-- the next id, not one handed out).
CREATE OR REPLACE FUNCTION novu.delete_subscriber(subscriber_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_it boolean;
    feed_rows integer;
BEGIN
    PERFORM novu._check_id(delete_subscriber.subscriber_id, 'subscriber_id');
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
    -- Its in-app feed goes with it: a subscriber made later with the same id
    -- starts with an empty feed (in Novu, a new subscriber has a new _id).
    -- Locked in feed order first, as the mark functions lock; a worker storing
    -- a message for it holds its row (novu._store_in_app), and the DELETE
    -- above waited for that worker: this statement sees what it stored.
    PERFORM FROM novu.in_app_messages m
      WHERE m.subscriber_id = delete_subscriber.subscriber_id
      ORDER BY m.created_at DESC, m.id DESC
      FOR UPDATE;
    DELETE FROM novu.in_app_messages m WHERE m.subscriber_id = delete_subscriber.subscriber_id;
    GET DIAGNOSTICS feed_rows = ROW_COUNT;
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
-- canceled; the subscriber's row is held while a stored one is written.
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
                                                     WHERE s.subscriber_id = x.subscriber_id
                                                       FOR KEY SHARE)
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
          FROM r
         WHERE d.id = r.id AND d.attempts = r.attempts AND d.status = 'sending'
           AND NOT EXISTS (SELECT FROM novu.subscribers s WHERE s.subscriber_id = d.subscriber_id)
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
