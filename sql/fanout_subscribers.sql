-- fanout_subscribers: novu.trigger does not look up a recipient named by a
-- plain subscriberId; the fan-out (the workers' novu._fanout, run here by hand
-- as their role) creates the missing ones with an empty profile, exactly once.
-- Subscriber objects are still written in the caller's transaction, a
-- rolled-back trigger creates nothing, and a subscriber deleted after its
-- trigger was made is not brought back.  Everything runs in one transaction,
-- rolled back at the end: the fan-out also takes what earlier tests left.
\set VERBOSITY terse
BEGIN;
SELECT novu.create_workflow('fs-push', '[{"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.identify('fs-known') ->> 'subscriberId';

-- the triggers create nothing themselves ...
SELECT novu.trigger('fs-push', '["fs-new", "fs-known", "fs-new"]', '{}', '{}', 'fs-1') ->> 'status';
SELECT novu.trigger('fs-push', '"fs-new"', '{}', '{}', 'fs-2') ->> 'status';
SAVEPOINT before_rollback;
SELECT novu.trigger('fs-push', '"fs-rolled-back"', '{}', '{}', 'fs-3') ->> 'status';
ROLLBACK TO before_rollback;
-- ... except subscriber objects and the actor, in the caller's transaction
SELECT novu.trigger('fs-push', '[{"subscriberId": "fs-object"}]', '{}', '{}', 'fs-4', '"fs-actor"') ->> 'status';
SELECT subscriber_id FROM novu.subscribers WHERE subscriber_id LIKE 'fs-%' ORDER BY 1;
-- the messages show at once, pending
SELECT transaction_id, subscriber_id, status FROM novu.messages WHERE transaction_id LIKE 'fs-%' ORDER BY 1, 2;

-- triggered, then deleted in the same transaction: the fan-out does not bring it back
SELECT novu.identify('fs-deleted') ->> 'subscriberId';
SELECT novu.trigger('fs-push', '"fs-deleted"', '{}', '{}', 'fs-5') ->> 'status';
SELECT novu.delete_subscriber('fs-deleted');
-- named by a trigger and deleted before the fan-out created it: false, and not created later
SELECT novu.trigger('fs-push', '"fs-pending"', '{}', '{}', 'fs-6') ->> 'status';
SELECT novu.delete_subscriber('fs-pending');
-- each deletion covers the outbox row made before it
SELECT d.subscriber_id, e.transaction_id, d.last_event_id >= e.id AS made_before
  FROM novu.subscriber_deletions d JOIN novu.events e ON e.recipients = ARRAY[d.subscriber_id]
 WHERE d.subscriber_id LIKE 'fs-%' ORDER BY 1;

SET LOCAL ROLE novu_worker;
SELECT count(*) > 0 AS fanned_out FROM novu._fanout(1000, 0, 60000, 0, 1);
RESET ROLE;

-- created once, with an empty profile; the others as they were
SELECT subscriber_id FROM novu.subscribers WHERE subscriber_id LIKE 'fs-%' ORDER BY 1;
SELECT no_ts(novu.get_subscriber('fs-new'));
-- its messages end skipped for want of a device token, as a new subscriber's always did
SELECT transaction_id, subscriber_id, status, last_error FROM novu.messages
 WHERE transaction_id LIKE 'fs-%' ORDER BY 1, 2;

-- a trigger made after the delete creates it
SELECT novu.trigger('fs-push', '"fs-pending"', '{}', '{}', 'fs-7') ->> 'status';
SET LOCAL ROLE novu_worker;
SELECT count(*) > 0 AS fanned_out FROM novu._fanout(1000, 0, 60000, 0, 1);
RESET ROLE;
SELECT subscriber_id FROM novu.subscribers WHERE subscriber_id = 'fs-pending';
SELECT status, last_error FROM novu.messages WHERE transaction_id = 'fs-7';

-- a topic trigger's direct recipients are created the same way
SELECT novu.create_topic('fs-topic') ->> 'key';
SELECT novu.trigger('fs-push', '[{"type": "Topic", "topicKey": "fs-topic"}, "fs-direct"]', '{}', '{}', 'fs-8') ->> 'status';
SELECT count(*) AS before_fan_out FROM novu.subscribers WHERE subscriber_id = 'fs-direct';
SET LOCAL ROLE novu_worker;
SELECT count(*) > 0 AS fanned_out FROM novu._fanout(1000, 0, 60000, 0, 1);
RESET ROLE;
SELECT subscriber_id, status, last_error FROM novu.messages WHERE transaction_id = 'fs-8';

-- rows written by hand (the table owner) with no recipient, a null one or an
-- empty list fail alone, logged; the trigger after them is fanned out
INSERT INTO novu.events (transaction_id, workflow_id, recipients)
VALUES ('fs-poison-null', 'fs-push', ARRAY[NULL]::text[]), ('fs-poison-empty', 'fs-push', '{}'),
       ('fs-poison-none', 'fs-push', NULL);
SELECT novu.trigger('fs-push', '"fs-known"', '{}', '{}', 'fs-after-poison') ->> 'status';
SET LOCAL ROLE novu_worker;
SELECT count(*) > 0 AS fanned_out FROM novu._fanout(1000, 0, 60000, 0, 1);
RESET ROLE;
SELECT transaction_id, status, detail FROM novu.execution_details
 WHERE transaction_id LIKE 'fs-poison-%' ORDER BY 1;
SELECT transaction_id, status FROM novu.events WHERE transaction_id LIKE 'fs-poison-%' ORDER BY 1;
SELECT status, last_error FROM novu.messages WHERE transaction_id = 'fs-after-poison';

-- a trigger set aside (a recipient another transaction was creating:
-- test/t/021_lock_waits.pl) is not taken before its retry_at, then is
SELECT novu.trigger('fs-push', '"fs-known"', '{}', '{}', 'fs-aside') ->> 'status';
UPDATE novu.events SET retry_at = now() + interval '1 hour' WHERE transaction_id = 'fs-aside';
SET LOCAL ROLE novu_worker;
SELECT count(*) AS fanned_out FROM novu._fanout(1000, 0, 60000, 0, 1) WHERE handled > 0;
RESET ROLE;
SELECT status FROM novu.events WHERE transaction_id = 'fs-aside';
UPDATE novu.events SET retry_at = now() - interval '1 second' WHERE transaction_id = 'fs-aside';
SET LOCAL ROLE novu_worker;
SELECT count(*) AS fanned_out FROM novu._fanout(1000, 0, 60000, 0, 1) WHERE handled > 0;
RESET ROLE;
SELECT status FROM novu.events WHERE transaction_id = 'fs-aside';

-- delete_messages leaves a message a worker is sending (it completes, as with
-- cancel): its row locked by an application transaction would stop the worker
UPDATE novu.deliveries SET status = 'sending', lease_until = now() + interval '1 minute'
 WHERE transaction_id = 'fs-aside';
SELECT novu.delete_messages('fs-aside') AS deleted;
SELECT status FROM novu.deliveries WHERE transaction_id = 'fs-aside';
SELECT novu.delete_message(id::text) AS deleted_one FROM novu.deliveries WHERE transaction_id = 'fs-aside';
UPDATE novu.deliveries SET status = 'skipped', lease_until = NULL WHERE transaction_id = 'fs-aside';
SELECT novu.delete_messages('fs-aside') AS deleted;

-- housekeeping forgets a deletion older than the retention once no pending
-- outbox row predates it
UPDATE novu.subscriber_deletions SET deleted_at = deleted_at - interval '2 days' WHERE subscriber_id = 'fs-deleted';
SELECT novu.trigger('fs-push', '"fs-known"', '{}', '{}', 'fs-9') ->> 'status';
UPDATE novu.events SET status = 'pending' WHERE transaction_id = 'fs-1';
SET LOCAL ROLE novu_worker;
SELECT novu._housekeeping('1 day', 1000) >= 0 AS housekept;
RESET ROLE;
SELECT subscriber_id FROM novu.subscriber_deletions WHERE subscriber_id LIKE 'fs-%' ORDER BY 1;
UPDATE novu.events SET status = 'processed' WHERE transaction_id = 'fs-1';
SET LOCAL ROLE novu_worker;
SELECT novu._housekeeping('1 day', 1000) >= 0 AS housekept;
RESET ROLE;
SELECT subscriber_id FROM novu.subscriber_deletions WHERE subscriber_id LIKE 'fs-%' ORDER BY 1;
ROLLBACK;

-- the subscriber object a message's templates see (novu._profile, built in C)
-- is the jsonb that jsonb_build_object makes, nulls and all; only the workers
-- may call it
SELECT p.*, novu._profile(p.id, p.fn, p.ln, p.em, p.ph, p.av, p.lo, p.tz, p.da)
         = jsonb_build_object('subscriberId', p.id, 'firstName', p.fn, 'lastName', p.ln, 'email', p.em,
                              'phone', p.ph, 'avatar', p.av, 'locale', p.lo, 'timezone', p.tz, 'data', p.da) AS same
  FROM (VALUES ('fs-a', 'Ada', 'Lovelace', 'ada@example.com', '+15550100', 'https://example.com/a.png', 'en', 'Europe/London', '{"plan": "pro", "n": [1, 2]}'::jsonb),
               ('fs-b', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
               ('fs-c', 'Zoë "Z"', '', 'z@example.com', NULL, NULL, 'fr', NULL, '{}'),
               (NULL, 'x', 'y', NULL, NULL, NULL, NULL, NULL, '"scalar"'),
               ('fs-d', NULL, NULL, NULL, NULL, NULL, NULL, NULL, '[1, {"a": null}]'))
       AS p(id, fn, ln, em, ph, av, lo, tz, da);
SELECT novu._profile('fs-a', 'Ada', NULL, NULL, NULL, NULL, NULL, NULL, '{"k": 1}');
SET ROLE novu_app;
SELECT novu._profile('fs-a', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
RESET ROLE;

-- a deletion made while the outbox's sequence is fresh (a new database, or
-- after TRUNCATE ... RESTART IDENTITY: last_value is then the next id, not one
-- handed out) covers no trigger: the first trigger after it creates the
-- subscriber
BEGIN;
TRUNCATE novu.events RESTART IDENTITY CASCADE;
SELECT novu.create_workflow('fs-fresh', '[{"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.delete_subscriber('fs-zed');
SELECT last_event_id FROM novu.subscriber_deletions WHERE subscriber_id = 'fs-zed';
SELECT novu.trigger('fs-fresh', '"fs-zed"', '{}', '{}', 'fs-fresh-1') ->> 'status';
SELECT id FROM novu.events WHERE transaction_id = 'fs-fresh-1';
SET LOCAL ROLE novu_worker;
SELECT count(*) > 0 AS fanned_out FROM novu._fanout(1000, 0, 60000, 0, 1);
RESET ROLE;
SELECT subscriber_id FROM novu.subscribers WHERE subscriber_id = 'fs-zed';
SELECT subscriber_id, status, last_error FROM novu.messages WHERE transaction_id = 'fs-fresh-1';
ROLLBACK;
