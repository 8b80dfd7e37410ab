/*
 * novu--0.12.0--0.13.0.sql
 *		Upgrade from 0.12.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.13.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.12.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.13.0'" to load this file. \quit

-- the workers' statistics check also analyzes novu.step_runs when far more steps wait
-- than its statistics say (a digest window's look-up was planned through the due index),
-- and its ANALYZE skips a table locked by a VACUUM instead of waiting
CREATE OR REPLACE FUNCTION novu._refresh_queue_stats() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a quick look, on the workers' path: the planner needs the tables' sizes and
-- the shape of the queue columns, not fine histograms (autovacuum's ANALYZE
-- brings those).  A sample of 3,000 rows instead of 30,000: 20,000 deliveries
-- took 211 ms to analyze, now 33 ms.
SET default_statistics_target = 10
-- the count of waiting steps below reads a partial index, never the table
SET enable_seqscan = off
AS $$
DECLARE
    t regclass;
    analyzed integer := 0;
    believed double precision;
BEGIN
    FOREACH t IN ARRAY ARRAY['novu.events'::regclass, 'novu.deliveries'::regclass] LOOP
        -- one worker analyzes a table at a time; the others go on
        IF pg_stat_get_live_tuples(t) > 2 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = t), 0) + 1000
           AND pg_try_advisory_xact_lock(pg_catalog.hashtext('novu._refresh_queue_stats'), t::oid::integer) THEN
            -- SKIP_LOCKED: a VACUUM running on the table (a DBA's is never
            -- canceled for us) does not hold the worker up; the next check tries again
            IF t = 'novu.events'::regclass THEN
                ANALYZE (SKIP_LOCKED) novu.events (id, transaction_id, status, kind);
            ELSE
                ANALYZE (SKIP_LOCKED) novu.deliveries;
            END IF;
            analyzed := analyzed + 1;
        END IF;
    END LOOP;
    -- The engine's waiting steps.  What matters is how many are waiting, not
    -- the table's size: analyzed while none waited (empty, or only done
    -- steps), the partial indexes on waiting steps look empty, and the look-up
    -- of a digest window by its key (novu._start, novu._digest_join) was
    -- planned through the due-time index, reading every waiting step per
    -- event: 100,000 events over 10,000 keys fanned out at 1,431/s instead of
    -- 8,817/s.  Counted only up to twice the belief plus 1,000, and only while
    -- the belief is small (a large one already keeps the planner off that path).
    -- A few waiting steps in a long history of done ones may escape a sample:
    -- this table's is 30,000 rows, and it is analyzed again only after 1,000
    -- rows and a thousandth of the table changed (not once a second on a
    -- belief that its sample cannot correct).
    believed := GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'novu.step_runs_due_idx'::regclass), 0);
    IF believed < 1000
       AND pg_stat_get_mod_since_analyze('novu.step_runs'::regclass)
           > 1000 + 0.001 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'novu.step_runs'::regclass), 0)
       AND (SELECT count(*) FROM (SELECT FROM novu.step_runs x WHERE x.status = 'waiting'
                                   LIMIT (2 * believed + 1001)::bigint) w) > 2 * believed + 1000
       AND pg_try_advisory_xact_lock(pg_catalog.hashtext('novu._refresh_queue_stats'),
                                     'novu.step_runs'::regclass::oid::integer) THEN
        PERFORM set_config('default_statistics_target', '100', true);
        ANALYZE (SKIP_LOCKED) novu.step_runs;
        analyzed := analyzed + 1;
    END IF;
    RETURN analyzed;
END
$$;
COMMENT ON FUNCTION novu._refresh_queue_stats() IS 'Worker helper: ANALYZE the outbox and the delivery queue when they hold far more rows than their statistics say, and the engine''s steps when far more wait than the statistics say';
