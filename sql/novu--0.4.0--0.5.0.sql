-- novu 0.4.0 -> 0.5.0: delivery under load

\echo Use "ALTER EXTENSION novu UPDATE TO '0.5.0'" to load this file. \quit

-- The queue tables' statistics, kept up with a burst.  A queue drained to
-- empty and vacuumed has reltuples = 0 over its old pages, and the planner then
-- believes the table empty however many rows arrive, until autovacuum's next
-- ANALYZE (a minute or more later): every plan of the workers' keyed
-- statements costs the same, and a claim of 500 rows was once planned as a
-- nested loop over the whole table, 7 s instead of 20 ms.  The workers call
-- this when they start work and then at most once a second; it analyzes a
-- table only when it holds far more live rows than its statistics say.
-- SECURITY DEFINER because ANALYZE needs the tables' owner; it takes no
-- argument and evaluates nothing the caller controls.
CREATE FUNCTION novu._refresh_queue_stats() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
    analyzed integer := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['novu.events'::regclass, 'novu.deliveries'::regclass] LOOP
        -- one worker analyzes a table at a time; the others go on
        IF pg_stat_get_live_tuples(t) > 2 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = t), 0) + 1000
           AND pg_try_advisory_xact_lock(pg_catalog.hashtext('novu._refresh_queue_stats'), t::oid::integer) THEN
            IF t = 'novu.events'::regclass THEN
                ANALYZE novu.events (id, transaction_id, status, kind);
            ELSE
                ANALYZE novu.deliveries;
            END IF;
            analyzed := analyzed + 1;
        END IF;
    END LOOP;
    RETURN analyzed;
END
$$;
REVOKE ALL ON FUNCTION novu._refresh_queue_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._refresh_queue_stats() TO novu_worker;
COMMENT ON FUNCTION novu._refresh_queue_stats() IS 'Worker helper: ANALYZE the outbox and the delivery queue when they hold far more rows than their statistics say';
