-- trigger: the outbox written in the caller's transaction; every "to" form,
-- statuses, idempotency, limits, bulk, broadcast, cancel, row triggers.
\set VERBOSITY terse

SELECT novu.trigger('order-shipped', '"user-1"', '{"orderId": 42, "items": [{"name": "book"}]}', '{}', 'tx-1');
SELECT transaction_id, kind, workflow_id, recipients, payload, status FROM novu.events WHERE transaction_id = 'tx-1';
-- visible in novu.messages as pending at once, one row per recipient and step
SELECT transaction_id, workflow_id, subscriber_id, channel, status, attempts FROM novu.messages WHERE transaction_id = 'tx-1';
SELECT transaction_id, workflow_id, subscriber_id, kind, status FROM novu.notifications WHERE transaction_id = 'tx-1';

-- the same transactionId again: duplicate, nothing new is enqueued
SELECT novu.trigger('order-shipped', '"user-2"', '{}', '{}', 'tx-1');
SELECT count(*), min(recipients::text) FROM novu.events WHERE transaction_id = 'tx-1';

-- a generated transactionId is a time-ordered UUID (version 7): later ones sort after
SELECT r ->> 'status' AS status,
       (r ->> 'transactionId') ~ '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS uuid,
       abs(extract(epoch FROM now()) * 1000
           - ('x' || lpad(replace(left(r ->> 'transactionId', 13), '-', ''), 16, '0'))::bit(64)::bigint) < 60000 AS now_ms
  FROM novu.trigger('order-shipped', '"user-2"') r;
SELECT (SELECT novu.trigger('order-shipped', '"user-2"') ->> 'transactionId')
     < (SELECT novu.trigger('order-shipped', '"user-2"') ->> 'transactionId' FROM pg_sleep(0.002)) AS ordered;

-- inactive workflow and workflow without steps: Novu's statuses, nothing enqueued
SELECT novu.trigger('inactive-workflow', '"user-1"', '{}', '{}', 'tx-inactive');
SELECT novu.trigger('empty-workflow', '"user-1"', '{}', '{}', 'tx-empty');
SELECT count(*) FROM novu.events WHERE transaction_id IN ('tx-inactive', 'tx-empty');

-- an unknown subscriberId string is not looked up by the trigger: the fan-out
-- creates that subscriber with an empty profile (fanout_subscribers)
SELECT novu.trigger('order-shipped', '"new-user"', '{}', '{}', 'tx-new') ->> 'status';
SELECT count(*) AS created_by_the_trigger FROM novu.subscribers WHERE subscriber_id = 'new-user';

-- a subscriber object: inline profile and channels, upserted in the caller's transaction
SELECT novu.trigger('order-shipped',
    '{"subscriberId": "inline-1", "firstName": "Inline", "email": "inline@example.com",
      "channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["inline-token"]}}]}',
    '{}', '{}', 'tx-inline') ->> 'status';
SELECT no_ts(novu.get_subscriber('inline-1'));

-- an array of both forms; repeated ids are one recipient
SELECT novu.trigger('order-shipped', '["user-1", {"subscriberId": "user-2"}, "user-1", {"subscriberId": "user-3", "lastName": "Three"}]',
                    '{}', '{}', 'tx-array') ->> 'status';
SELECT recipients FROM novu.events WHERE transaction_id = 'tx-array';
SELECT subscriber_id, status FROM novu.messages WHERE transaction_id = 'tx-array' ORDER BY subscriber_id;
SELECT novu.get_subscriber('user-3') ->> 'lastName';

-- actor: an object is upserted as a subscriber too
SELECT novu.trigger('order-shipped', '"user-1"', '{}', '{}', 'tx-actor', '{"subscriberId": "actor-1", "firstName": "Act"}') ->> 'status';
SELECT actor FROM novu.events WHERE transaction_id = 'tx-actor';
SELECT novu.get_subscriber('actor-1') ->> 'firstName';

-- a rolled-back trigger leaves nothing: no outbox row, no inline subscriber, no token
BEGIN;
SELECT novu.trigger('order-shipped',
    '{"subscriberId": "rollback-1", "channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["rb-token"]}}]}',
    '{}', '{}', 'tx-rollback') ->> 'status';
ROLLBACK;
SELECT (SELECT count(*) FROM novu.events WHERE transaction_id = 'tx-rollback') AS events,
       (SELECT count(*) FROM novu.subscribers WHERE subscriber_id = 'rollback-1') AS subscribers,
       (SELECT count(*) FROM novu.device_tokens WHERE device_token = 'rb-token') AS tokens,
       (SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-rollback') AS messages;
-- ... and its transactionId is still free
SELECT novu.trigger('order-shipped', '"user-1"', '{}', '{}', 'tx-rollback') ->> 'status';

-- payload at the limit is accepted; one byte over is not
SELECT novu.trigger('order-shipped', '"user-1"', jsonb_build_object('b', repeat('x', 262144 - 9)), '{}', 'tx-big') ->> 'status';
SELECT length(payload::text) FROM novu.events WHERE transaction_id = 'tx-big';
SELECT novu.trigger('order-shipped', '"user-1"', jsonb_build_object('b', repeat('x', 262144 - 8)), '{}', 'tx-too-big');
-- escapes count as JSON text: 50000 control characters are 300000 bytes of text
SELECT novu.trigger('order-shipped', '"user-1"', jsonb_build_object('b', repeat(E'\u0001', 50000)), '{}', 'tx-escaped');

-- errors, each writes nothing
-- control characters in a subscriberId or transactionId, C1 ones too (U+0085),
-- as identify refuses them
SELECT novu.trigger('order-shipped', to_jsonb(E'ctl\u0085x'::text));
SELECT novu.trigger('order-shipped', to_jsonb(E'ctl\u0009x'::text));
SELECT novu.trigger('order-shipped', '"user-1"', '{}', '{}', E'tx\u009fc1');
SELECT novu.identify(E'ctl\u0085y');
-- (printable characters beyond ASCII are fine; rolled back, as counts follow)
BEGIN;
SELECT novu.trigger('order-shipped', to_jsonb(E'caf\u00e9 \u2603'::text), '{}', '{}', 'tx-printable-unicode') ->> 'status';
ROLLBACK;
SELECT novu.trigger('no-such-workflow', '"user-1"');
SELECT novu.trigger(NULL, '"user-1"');
SELECT novu.trigger('order-shipped', NULL);
SELECT novu.trigger('order-shipped', '[]');
SELECT novu.trigger('order-shipped', '42');
SELECT novu.trigger('order-shipped', '[true]');
SELECT novu.trigger('order-shipped', '""');
SELECT novu.trigger('order-shipped', jsonb_build_array(repeat('x', 256)));
SELECT novu.trigger('order-shipped', '{"email": "x@example.com"}');
SELECT novu.trigger('order-shipped', '{"subscriberId": 7}');
SELECT novu.trigger('order-shipped', '{"type": "Topic", "topicKey": "news"}');
SELECT novu.trigger('order-shipped', '[{"topicKey": "news"}]');
SELECT novu.trigger('order-shipped', '{"subscriberId": "bad-email", "email": "nope"}');
SELECT novu.trigger('order-shipped', '{"subscriberId": "bad-token", "channels": [{"providerId": "fcm", "credentials": {"deviceTokens": [""]}}]}');
SELECT novu.trigger('order-shipped', '"user-1"', '[1, 2]');
SELECT novu.trigger('order-shipped', '"user-1"', '"text"');
SELECT novu.trigger('order-shipped', '"user-1"', '{}', '[]');
SELECT novu.trigger('order-shipped', '"user-1"', '{}', '{}', '');
SELECT novu.trigger('order-shipped', '"user-1"', '{}', '{}', NULL, '[1]');
SELECT count(*) FROM novu.subscribers WHERE subscriber_id IN ('bad-email', 'bad-token');
SELECT count(*) AS events FROM novu.events;

-- bulk: one result per event, in order; a bad event does not fail the others
SELECT jsonb_pretty(novu.bulk_trigger('[
    {"workflowId": "order-shipped", "to": "user-1", "payload": {"n": 1}, "transactionId": "bulk-1"},
    {"name": "order-shipped", "to": ["user-2"], "transactionId": "bulk-2"},
    {"workflowId": "no-such-workflow", "to": "user-1", "transactionId": "bulk-3"},
    {"workflowId": "order-shipped", "to": "user-1", "transactionId": "bulk-1"},
    {"workflowId": "order-shipped", "to": "user-1", "payload": [], "transactionId": "bulk-5"},
    {"workflowId": "inactive-workflow", "to": "user-1", "transactionId": "bulk-6"},
    {"to": "user-1", "transactionId": "bulk-7"},
    {"workflowId": "order-shipped", "to": "user-1", "transactionId": "bulk-8", "colour": "red"},
    7
]'));
SELECT transaction_id FROM novu.events WHERE transaction_id LIKE 'bulk-%' ORDER BY 1;
SELECT novu.bulk_trigger('{}');
SELECT novu.bulk_trigger((SELECT jsonb_agg(jsonb_build_object('workflowId', 'order-shipped', 'to', 'user-1')) FROM generate_series(1, 101)));

-- broadcast: recorded for the workers to fan out
SELECT novu.broadcast('order-shipped', '{"news": "hello"}', '{}', 'tx-broadcast');
SELECT kind, recipients, status FROM novu.events WHERE transaction_id = 'tx-broadcast';
SELECT subscriber_id, channel, status FROM novu.messages WHERE transaction_id = 'tx-broadcast';
SELECT novu.broadcast('order-shipped', '{}', '{}', 'tx-broadcast') ->> 'status';
SELECT novu.broadcast('inactive-workflow') ->> 'status';
SELECT novu.broadcast('no-such-workflow');
SELECT novu.broadcast('order-shipped', '[]');

-- cancel: everything of the transaction not yet claimed
SELECT novu.cancel('tx-array'), novu.cancel('tx-array'), novu.cancel('no-such-transaction');
SELECT DISTINCT status FROM novu.messages WHERE transaction_id = 'tx-array';
SELECT status FROM novu.events WHERE transaction_id = 'tx-array';

-- row triggers on an application table: payload = the row as JSON
CREATE TABLE public.orders (id int PRIMARY KEY, user_id text, total numeric, state text DEFAULT 'new');
CREATE TRIGGER orders_notify AFTER INSERT OR UPDATE OR DELETE ON public.orders
    FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row('order-shipped', 'user_id');
INSERT INTO public.orders VALUES (1, 'user-1', 9.99);
UPDATE public.orders SET state = 'shipped' WHERE id = 1;
DELETE FROM public.orders WHERE id = 1;
INSERT INTO public.orders VALUES (2, NULL, 1);
SELECT recipients, payload FROM novu.events WHERE payload ? 'total' ORDER BY id;
-- the notification exists only if the row's transaction commits
BEGIN;
INSERT INTO public.orders VALUES (3, 'user-2', 5);
ROLLBACK;
SELECT count(*) FROM novu.events WHERE payload @> '{"id": 3}';
-- misconfigured row triggers fail the statement with a clear error
CREATE TABLE public.bad_orders (id int, owner text);
CREATE TRIGGER bad_col AFTER INSERT ON public.bad_orders
    FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row('order-shipped', 'user_id');
INSERT INTO public.bad_orders VALUES (1, 'user-1');
DROP TRIGGER bad_col ON public.bad_orders;
CREATE TRIGGER bad_args AFTER INSERT ON public.bad_orders
    FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row('order-shipped');
INSERT INTO public.bad_orders VALUES (1, 'user-1');
DROP TRIGGER bad_args ON public.bad_orders;
CREATE TRIGGER bad_when BEFORE INSERT ON public.bad_orders
    FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row('order-shipped', 'owner');
INSERT INTO public.bad_orders VALUES (1, 'user-1');
DROP TRIGGER bad_when ON public.bad_orders;
CREATE TRIGGER bad_workflow AFTER INSERT ON public.bad_orders
    FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row('no-such-workflow', 'owner');
INSERT INTO public.bad_orders VALUES (1, 'user-1');
SELECT count(*) FROM public.bad_orders;
DROP TABLE public.bad_orders, public.orders;

-- statistics over what was triggered
SELECT novu.notification_stats();

-- a hostile search_path cannot redirect the trigger's statements: functions
-- and operators named like the ones it uses, in a schema searched first, are
-- never called (novu.trigger runs as the extension owner)
CREATE SCHEMA hostile;
CREATE FUNCTION hostile.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'hostile.unnest was called'; END $$;
CREATE FUNCTION hostile.jsonb_array_length(jsonb) RETURNS integer LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'hostile.jsonb_array_length was called'; END $$;
CREATE FUNCTION hostile.texteq_evil(text, text) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'hostile = was called'; END $$;
CREATE OPERATOR hostile.= (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.texteq_evil);
CREATE TABLE hostile.events (x int);
SET search_path = hostile, pg_catalog;
SELECT novu.trigger('order-shipped', '{"subscriberId": "hostile-path-subscriber"}', '{}', '{}', 'tx-hostile-1') ->> 'status';
SELECT novu.trigger('order-shipped', '{"subscriberId": "hostile-path-subscriber"}', '{}', '{}', 'tx-hostile-1') ->> 'status';
SELECT novu.broadcast('order-shipped', '{}', '{}', 'tx-hostile-2') ->> 'status';
RESET search_path;
SELECT count(*) FROM novu.events WHERE transaction_id IN ('tx-hostile-1', 'tx-hostile-2');
SELECT count(*) FROM novu.subscribers WHERE subscriber_id = 'hostile-path-subscriber';
DROP SCHEMA hostile CASCADE;
SELECT novu.cancel('tx-hostile-1'), novu.cancel('tx-hostile-2');

-- a generated transactionId takes the direct outbox insert: the columns the
-- trigger does not give get their declared defaults, as with INSERT
BEGIN;
SELECT novu.trigger('order-shipped', '"direct-insert-1"', '{"n": 1}') ->> 'status';
SELECT kind, status, cursor, processed_at, created_at = now() AS created_now,
       id = currval('novu.events_id_seq') AS id_from_sequence, recipients, payload, overrides, actor
  FROM novu.events WHERE recipients = '{direct-insert-1}';
COMMIT;
-- and its transactionId is unique like any other (the key's index is maintained)
SELECT count(*) FROM novu.events e
 WHERE recipients = '{direct-insert-1}'
   AND EXISTS (SELECT FROM novu.events x WHERE x.transaction_id = e.transaction_id AND x.id = e.id);
SELECT novu.cancel(transaction_id) FROM novu.events WHERE recipients = '{direct-insert-1}';
-- the direct insert opens (and locks, until the transaction ends) only the
-- indexes whose predicate the row meets: a trigger's row is in neither the
-- chunked nor the done index, a broadcast's is in the chunked one
BEGIN;
SELECT novu.trigger('order-shipped', '"direct-insert-2"') ->> 'status';
SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
 WHERE l.pid = pg_backend_pid() AND c.relnamespace = 'novu'::regnamespace AND c.relname LIKE 'events%'
 ORDER BY 1;
COMMIT;
BEGIN;
SELECT novu.broadcast('order-shipped') ->> 'transactionId' AS direct_broadcast \gset
SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
 WHERE l.pid = pg_backend_pid() AND c.relnamespace = 'novu'::regnamespace AND c.relname LIKE 'events%'
 ORDER BY 1;
COMMIT;
-- and every index holds exactly the rows it should (amcheck reads the heap
-- and finds each row that meets an index's predicate in that index)
CREATE EXTENSION amcheck;
SELECT c.relname AS checked
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid CROSS JOIN LATERAL bt_index_check(c.oid, true)
 WHERE i.indrelid = 'novu.events'::regclass ORDER BY 1;
DROP EXTENSION amcheck;
SELECT novu.cancel(transaction_id) FROM novu.events
 WHERE recipients = '{direct-insert-2}' OR transaction_id = :'direct_broadcast';

-- each backend caches its workflows' state; every write to novu.workflows
-- (through the API or not, committed or rolled back) is seen by the next trigger
SELECT novu.create_workflow('cached-wf', '[{"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.trigger('cached-wf', '"cache-1"') ->> 'status';
UPDATE novu.workflows SET active = false WHERE workflow_id = 'cached-wf';
SELECT novu.trigger('cached-wf', '"cache-1"') ->> 'status';
BEGIN;
UPDATE novu.workflows SET active = true WHERE workflow_id = 'cached-wf';
SELECT novu.trigger('cached-wf', '"cache-1"') ->> 'status';
ROLLBACK;
SELECT novu.trigger('cached-wf', '"cache-1"') ->> 'status';
SELECT novu.update_workflow('cached-wf', '{"active": true, "steps": []}') ->> 'active';
SELECT novu.trigger('cached-wf', '"cache-1"') ->> 'status';
SELECT novu.update_workflow('cached-wf', '{"steps": [{"type": "push", "title": "t", "content": "c"}]}') ->> 'active';
SELECT novu.trigger('cached-wf', '"cache-1"') ->> 'status';
SELECT novu.delete_workflow('cached-wf');
SELECT novu.trigger('cached-wf', '"cache-1"') ->> 'status';
-- the trigger that keeps the caches right cannot be called by hand
SELECT novu._workflows_changed();
DELETE FROM novu.events WHERE recipients = '{cache-1}';
DELETE FROM novu.subscribers WHERE subscriber_id IN ('cache-1', 'direct-insert-1', 'direct-insert-2');
-- a read-only transaction refuses a trigger as it refuses an INSERT (the row of a
-- generated transactionId goes to the table directly, past the executor's check)
BEGIN READ ONLY;
SELECT novu.trigger('order-shipped', '"ro-user"');
ROLLBACK;
BEGIN READ ONLY;
SELECT novu.trigger('order-shipped', '"ro-user"', transaction_id => 'ro-tx');
ROLLBACK;
BEGIN READ ONLY;
SELECT novu.broadcast('order-shipped');
ROLLBACK;
SELECT count(*) AS read_only_rows FROM novu.events WHERE recipients = '{ro-user}' OR transaction_id = 'ro-tx';
