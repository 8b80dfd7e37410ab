-- limits: every jsonb input is bounded before anything is stored (DESIGN 5),
-- and bad input fails alone.  Written as the attacks of the security review.
\set VERBOSITY terse

SELECT novu.create_workflow('lim-wf', '[{"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.identify('lim-user') ->> 'subscriberId';

-- overrides: 64 KiB (a 20 MB overrides once took a worker to 2 GB)
SELECT novu.trigger('lim-wf', '"lim-user"', '{}',
                    jsonb_build_object('fcm', jsonb_build_object('data', jsonb_build_object('x', repeat('a', 70000)))));
SELECT novu.trigger('lim-wf', '"lim-user"', '{}',
                    jsonb_build_object('fcm', jsonb_build_object('data', jsonb_build_object('x', repeat('a', 60000))))) ->> 'status';
-- actor: 16 KiB
SELECT novu.trigger('lim-wf', '"lim-user"', actor => jsonb_build_object('subscriberId', 'lim-actor', 'firstName', repeat('a', 20000)));
-- to: 1 MiB and 1000 recipients
SELECT novu.trigger('lim-wf', (SELECT jsonb_agg('lim-' || i) FROM generate_series(1, 1001) i));
SELECT novu.trigger('lim-wf', jsonb_build_array(jsonb_build_object('subscriberId', 'lim-big', 'data',
                    jsonb_build_object('x', repeat('a', 70000)))));
-- payload: 256 KiB, and no deeper than 64 levels
SELECT novu.trigger('lim-wf', '"lim-user"', jsonb_build_object('x', repeat('a', 262144)));
SELECT novu.trigger('lim-wf', '"lim-user"', (repeat('{"a":', 65) || '1' || repeat('}', 65))::jsonb);
SELECT novu.trigger('lim-wf', '"lim-user"', (repeat('{"a":', 63) || '1' || repeat('}', 63))::jsonb) ->> 'status';
-- a 1,000-level payload is refused without exhausting the stack
SELECT novu.trigger('lim-wf', '"lim-user"', ('{"a": ' || repeat('[', 1000) || repeat(']', 1000) || '}')::jsonb);
-- numbers count as the text they are written out as: 1e131071 is a few bytes
-- stored and 131,072 characters sent (1,780 of them in 43 kB once took a
-- worker to 3.2 GB, and failed the other messages of its request)
SELECT novu.trigger('lim-wf', '"lim-user"', (SELECT jsonb_object_agg('k' || i, 1e131071) FROM generate_series(1, 1780) i));
SELECT novu.trigger('lim-wf', '"lim-user"', jsonb_build_object('a', (SELECT jsonb_agg(1e-16000) FROM generate_series(1, 20))));
SELECT novu.trigger('lim-wf', '"lim-user"', jsonb_build_object('x', 1e131071, 'y', repeat('a', 140000)));
SELECT novu.trigger('lim-wf', '"lim-user"', overrides => jsonb_build_object('fcm', jsonb_build_object('data', jsonb_build_object('n', 1e70000))));
SELECT novu.identify('lim-user', jsonb_build_object('data', jsonb_build_object('n', 1e70000))) IS NOT NULL;
SELECT novu.trigger('lim-wf', '"lim-user"', (SELECT jsonb_object_agg('k' || i, 1e1000) FROM generate_series(1, 200) i)) ->> 'status';
-- nothing was written by the refused calls
SELECT count(*) AS lim_events FROM novu.events WHERE workflow_id = 'lim-wf';
SELECT count(*) AS lim_subscribers FROM novu.subscribers WHERE subscriber_id IN ('lim-actor', 'lim-big', 'lim-1');

-- profiles: 64 KiB
SELECT novu.identify('lim-user', jsonb_build_object('data', jsonb_build_object('x', repeat('a', 70000))));
SELECT novu.update_subscriber('lim-user', jsonb_build_object('firstName', repeat('a', 70000)));
SELECT novu.bulk_identify(jsonb_build_array(jsonb_build_object('subscriberId', 'lim-bulk', 'lastName', repeat('a', 70000)))) -> 'failed';

-- CSV import: one row with a number jsonb cannot hold, one too large, one
-- nested too deeply; the good rows are imported and the bad ones rejected alone
INSERT INTO novu.subscriber_import ("subscriberId", "firstName", data) VALUES
    ('lim-csv-1', 'Ada', '{"n": 1}'),
    ('lim-csv-2', 'Bob', '{"n": 1e1000000}'),
    ('lim-csv-3', repeat('a', 70000), NULL),
    ('lim-csv-4', 'Cy', repeat('{"a":', 100) || '1' || repeat('}', 100)),
    ('lim-csv-5', 'Di', '{"n": 1e-100000}'),
    ('lim-csv-6', 'Ed', '{"n": 12345678901234567890.5e10}');
SELECT novu.import_subscribers();
SELECT subscriber_id, reason FROM novu.subscriber_import_rejects WHERE subscriber_id LIKE 'lim-csv-%' ORDER BY 1;
SELECT subscriber_id, data FROM novu.subscribers WHERE subscriber_id LIKE 'lim-csv-%' ORDER BY 1;
DELETE FROM novu.subscriber_import_rejects;

-- generated transactionIds: version 7 UUIDs, never repeated
SELECT count(DISTINCT t) = 200 AS distinct_ids,
       bool_and(t ~ '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$') AS uuid_v7
  FROM (SELECT novu.trigger('lim-wf', '"lim-user"') ->> 'transactionId' AS t FROM generate_series(1, 200)) s;
