/*
 * novu--0.13.0--0.14.0.sql
 *		Upgrade from 0.13.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.14.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.13.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.14.0'" to load this file. \quit

-- the fan-out's claim of pending triggers starts at the worker's floor (p_floor, see
-- src/queue/floor.c): past the dead index entries of triggers already fanned out
DROP FUNCTION novu._fanout(integer, integer, integer, integer, integer);
CREATE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
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
REVOKE ALL ON FUNCTION novu._fanout(integer, integer, integer, integer, integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._fanout(integer, integer, integer, integer, integer, bigint) TO novu_worker;

-- the claim floor reads the outbox sequence's last value
GRANT SELECT ON novu.events_id_seq TO novu_worker;
