-- The queue tables' statistics follow a burst (novu._refresh_queue_stats).
-- A queue analyzed while empty looks empty to the planner; the workers call
-- this function so that their plans see the rows that arrived since.
SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'novu._refresh_queue_stats()'::regprocedure;
SELECT has_function_privilege('novu_app', 'novu._refresh_queue_stats()', 'EXECUTE') AS app_may_call,
       has_function_privilege('novu_worker', 'novu._refresh_queue_stats()', 'EXECUTE') AS worker_may_call;

-- the outbox analyzed while empty, then a burst of 5,000 rows
DELETE FROM novu.events;
ANALYZE novu.events;
SELECT reltuples <= 0 AS looks_empty FROM pg_class WHERE oid = 'novu.events'::regclass;
INSERT INTO novu.events (transaction_id, workflow_id, status)
SELECT 'qs-' || i, 'qs-wf', 'processed' FROM generate_series(1, 5000) i;
SELECT pg_stat_force_next_flush();
SET ROLE novu_worker;
SELECT novu._refresh_queue_stats() >= 0 AS checked;
RESET ROLE;
-- (a delivery worker may have analyzed it first: the same function)
SELECT reltuples >= 4000 AS follows_the_burst FROM pg_class WHERE oid = 'novu.events'::regclass;
-- with statistics that match, nothing is analyzed again
SET ROLE novu_worker;
SELECT novu._refresh_queue_stats() AS analyzed_again;
RESET ROLE;
DELETE FROM novu.events WHERE transaction_id LIKE 'qs-%';
