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

-- The engine's waiting steps (novu.step_runs), analyzed while none waited
-- (here only done ones): its partial indexes look empty however many steps
-- wait since, and the look-up of a digest window by its key (novu._start,
-- novu._digest_join) was planned through the due-time index, reading every
-- waiting step per event.  The same check analyzes it when far more wait
-- (and at least 1,000 rows and a thousandth of the table changed since its last ANALYZE).
DELETE FROM novu.step_runs;
INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, status, due_at)
SELECT 'digest', 'qs-done-' || i, 'qs-wf', 'qs-sub-' || (i % 100), 0, 'k' || i, 'done', now()
  FROM generate_series(1, 5000) i;
ANALYZE novu.step_runs;
SELECT reltuples <= 0 AS none_waiting FROM pg_class WHERE oid = 'novu.step_runs_due_idx'::regclass;
-- 3,000 windows open (in a transaction until the first plan is shown: a
-- delivery worker does not count them before)
BEGIN;
INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, due_at)
SELECT 'digest', 'qs-wait-' || i, 'qs-wf', 'qs-sub-' || (i % 100), 0, 'k' || i, now() + interval '1 hour'
  FROM generate_series(1, 3000) i;
-- the look-up as the workers plan it (no sequential scans)
SET enable_seqscan = off;
PREPARE window_lookup AS
SELECT x.id FROM novu.step_runs x
 WHERE x.kind = 'digest' AND x.status = 'waiting' AND x.workflow_id = 'qs-wf'
   AND x.subscriber_id = 'qs-sub-1' AND x.step_index = 0 AND x.digest_key = 'k1'
   FOR UPDATE;
EXPLAIN (COSTS OFF) EXECUTE window_lookup;
COMMIT;
SELECT pg_stat_force_next_flush();
SET ROLE novu_worker;
SELECT novu._refresh_queue_stats() >= 0 AS checked;
RESET ROLE;
-- (a delivery worker may have analyzed it first: the same function)
SELECT reltuples >= 2000 AS follows_the_waiting_steps FROM pg_class WHERE oid = 'novu.step_runs_due_idx'::regclass;
EXPLAIN (COSTS OFF) EXECUTE window_lookup;
DEALLOCATE window_lookup;
RESET enable_seqscan;
-- with statistics that match, nothing is analyzed again
SET ROLE novu_worker;
SELECT novu._refresh_queue_stats() AS analyzed_again;
RESET ROLE;
DELETE FROM novu.step_runs WHERE transaction_id LIKE 'qs-%';
