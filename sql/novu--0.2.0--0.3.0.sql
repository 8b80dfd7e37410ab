/* novu--0.2.0--0.3.0.sql: plans that stay linear on tables analyzed while empty, and a cheaper trigger */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.3.0'" to load this file. \quit

-- Mark locked outbox rows processed, reached by TID.  Only the TID scan is left
-- to the planner: with "0 pages" statistics it preferred scanning the pending
-- index and comparing every row with every TID of the batch.
CREATE FUNCTION novu._take_events(p_tids tid[])
RETURNS TABLE (transaction_id text, workflow_id text, recipients text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE novu.events ev SET status = 'processed', processed_at = now()
     WHERE ev.ctid = ANY (p_tids) AND ev.status = 'pending'
    RETURNING ev.transaction_id, ev.workflow_id, ev.recipients;
END
$$;
COMMENT ON FUNCTION novu._take_events(tid[]) IS 'Internal (workers): mark locked outbox rows processed, by TID';
REVOKE EXECUTE ON FUNCTION novu._take_events(tid[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
                             p_slot integer, p_nslots integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb, handled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
    pass integer;
    tids tid[];
BEGIN
    -- claim pending triggers, then mark them processed.  Each worker takes its
    -- own share first (id modulo the workers): workers that scan the same rows
    -- would each try the other's row locks, one by one, to skip them.  With its
    -- share empty, it helps with the others'.  The rows are locked first and
    -- updated by TID after (_take_events): a join of the locking subquery with
    -- the table can be planned (on an outbox analyzed while empty) as a nested
    -- loop that locks and scans again for every row, which took 24 s for a
    -- batch of 10,000.
    FOR pass IN 1..2 LOOP
        SELECT array_agg(c.ctid) INTO tids
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger'
                   AND (pass = 2 OR p_nslots <= 1 OR x.id % p_nslots = p_slot)
                 ORDER BY x.id LIMIT p_limit
                 FOR UPDATE SKIP LOCKED) c;
        EXIT WHEN tids IS NOT NULL OR p_nslots <= 1;
    END LOOP;
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

    -- one chunk of one broadcast, in subscriberId order from its cursor
    SELECT * INTO b FROM novu.events ev
     WHERE ev.status IN ('pending', 'processing') AND ev.kind = 'broadcast'
     ORDER BY ev.id LIMIT 1
     FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        SELECT array_agg(s.subscriber_id ORDER BY s.subscriber_id) INTO chunk
          FROM (SELECT sub.subscriber_id FROM novu.subscribers sub
                 WHERE b.cursor IS NULL OR sub.subscriber_id > b.cursor
                 ORDER BY sub.subscriber_id LIMIT p_limit) s;
        IF chunk IS NOT NULL THEN
            RETURN QUERY
            SELECT x.*, 0 FROM novu._expand(array_fill(b.transaction_id, ARRAY[cardinality(chunk)]),
                                            array_fill(b.workflow_id, ARRAY[cardinality(chunk)]), chunk,
                                            GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
            done := done + cardinality(chunk);
        END IF;
        IF chunk IS NULL OR cardinality(chunk) < p_limit THEN
            UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
        ELSE
            UPDATE novu.events SET status = 'processing', cursor = chunk[cardinality(chunk)] WHERE novu.events.id = b.id;
        END IF;
        done := done + 1;
    END IF;

    -- the count of handled outbox rows travels in one extra row with no message
    RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                        NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, done;
END
$$;

-- Every write to novu.workflows sends a relcache invalidation of the table:
-- each backend caches the state of the workflows it triggers (is it there,
-- active, with steps) and drops that cache when it receives one.
CREATE FUNCTION novu._workflows_changed() RETURNS trigger
LANGUAGE C AS 'MODULE_PATHNAME', 'novu_workflows_changed';
COMMENT ON FUNCTION novu._workflows_changed() IS 'Internal: invalidates the backends'' workflow caches after a write to novu.workflows';
REVOKE EXECUTE ON FUNCTION novu._workflows_changed() FROM PUBLIC;
CREATE TRIGGER workflows_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON novu.workflows
    FOR EACH STATEMENT EXECUTE FUNCTION novu._workflows_changed();
