-- topics: create, get, list, rename, delete (only when empty), add and remove
-- subscribers, list members; "to" naming topics; the fan-out of a topic
-- trigger (de-duplicated, actor left out, in bounded chunks); the actor.
\set VERBOSITY terse

-- a workflow and subscribers of this test
SELECT novu.create_workflow('topic-wf', '[{"type": "push", "title": "{{actor.firstName}} posted", "content": "c"}]') ->> 'workflowId';
SELECT count(*) FROM (SELECT novu.identify(s) FROM unnest(ARRAY['tp-a', 'tp-b', 'tp-c', 'tp-d', 'tp-e']) s) x;

-- create: the name defaults to the key; Novu's shape
SELECT jsonb_object_keys(novu.create_topic('post:1', 'Post one')) ORDER BY 1;
SELECT novu.create_topic('post:2') - '_id' - 'createdAt' - 'updatedAt';
SELECT novu.create_topic('team-eng_x.y@example.com+1', 'Engineering') ->> 'key';
SELECT (t ->> '_id') ~ '^[0-9]+$' AS id_is_text, (t ->> 'createdAt') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' AS iso
  FROM novu.get_topic('post:1') t;
SELECT novu.get_topic('post:1') - '_id' - 'createdAt' - 'updatedAt';

-- create errors: each writes nothing
SELECT novu.create_topic('post:1');
SELECT novu.create_topic('');
SELECT novu.create_topic(NULL);
SELECT novu.create_topic('has space');
SELECT novu.create_topic('slash/no');
SELECT novu.create_topic(E'ctl\u0001');
SELECT novu.create_topic(repeat('k', 256));
SELECT novu.create_topic(repeat('k', 255)) ->> 'name' = repeat('k', 255) AS max_key_ok;
SELECT novu.delete_topic(repeat('k', 255));
SELECT novu.create_topic('named', '');
SELECT novu.create_topic('named', '   ');
SELECT novu.create_topic('named', repeat('n', 256));
SELECT novu.create_topic('named', E'tab\there');
SELECT count(*) AS topics FROM novu.topics;

-- get: unknown and invalid keys
SELECT novu.get_topic('post:9');
SELECT novu.get_topic('bad key');

-- list: by key, paged
SELECT novu.list_topics() - 'data' AS list_head;
SELECT jsonb_path_query_array(novu.list_topics(), '$.data[*].key');
SELECT jsonb_path_query_array(novu.list_topics(0, 2), '$.data[*].key');
SELECT jsonb_path_query_array(novu.list_topics(1, 2), '$.data[*].key');
SELECT novu.list_topics(5, 2) - 'totalCount';
SELECT novu.list_topics(-1);
SELECT novu.list_topics(0, 0);
SELECT novu.list_topics(0, 101);
SELECT novu.list_topics(NULL);

-- rename: the key never changes; updatedAt moves
SELECT novu.rename_topic('post:2', 'Post two') - '_id' - 'createdAt' - 'updatedAt';
SELECT name, updated_at >= created_at FROM novu.topics WHERE key = 'post:2';
SELECT novu.rename_topic('post:9', 'x');
SELECT novu.rename_topic('post:2', '');
SELECT novu.rename_topic('post:2', NULL);
SELECT name FROM novu.topics WHERE key = 'post:2';

-- add subscribers: unknown ones are notFound; repeats and members already in succeed once
SELECT novu.add_topic_subscribers('post:1', '["tp-a", "tp-b", "nobody", "tp-a"]');
SELECT novu.add_topic_subscribers('post:1', '["tp-b", "tp-c"]');
SELECT novu.add_topic_subscribers('post:1', '[]');
SELECT count(*) AS nobody_created FROM novu.subscribers WHERE subscriber_id = 'nobody';
SELECT novu.add_topic_subscribers('post:2', '["tp-c", "tp-d"]');
-- add errors: nothing is added
SELECT novu.add_topic_subscribers('post:9', '["tp-a"]');
SELECT novu.add_topic_subscribers('post:1', '"tp-d"');
SELECT novu.add_topic_subscribers('post:1', NULL);
SELECT novu.add_topic_subscribers('post:1', '["tp-d", 7]');
SELECT novu.add_topic_subscribers('post:1', '["tp-d", ""]');
SELECT novu.add_topic_subscribers('post:1', jsonb_build_array('tp-d', repeat('x', 256)));
SELECT novu.add_topic_subscribers('post:1', (SELECT jsonb_agg('tp-' || i) FROM generate_series(1, 501) i));
SELECT count(*) AS post1_members FROM novu.topic_subscribers ts JOIN novu.topics t ON t.id = ts.topic_id WHERE t.key = 'post:1';

-- list members: by subscriberId, paged, Novu's keys
SELECT novu.topic_subscribers('post:1') - 'data' AS members_head;
SELECT jsonb_object_keys(novu.topic_subscribers('post:1') -> 'data' -> 0) ORDER BY 1;
SELECT jsonb_path_query_array(novu.topic_subscribers('post:1'), '$.data[*].subscriberId');
SELECT jsonb_path_query_array(novu.topic_subscribers('post:1', 1, 2), '$.data[*].externalSubscriberId');
SELECT (novu.topic_subscribers('post:1') #>> '{data,0,topicKey}') = 'post:1' AS topic_key_ok,
       (novu.topic_subscribers('post:1') #>> '{data,0,_topicId}') = (novu.get_topic('post:1') ->> '_id') AS topic_id_ok;
SELECT novu.topic_subscribers('post:9');
SELECT novu.topic_subscribers('post:1', -1);
SELECT novu.topic_subscribers('post:1', 0, 101);

-- delete: refused while it has subscribers; an unknown key is false
SELECT novu.delete_topic('post:2');
SELECT novu.delete_topic('post:9');
SELECT novu.remove_topic_subscribers('post:2', '["tp-d", "tp-a", "nobody"]');
SELECT novu.remove_topic_subscribers('post:9', '["tp-c"]');
SELECT novu.remove_topic_subscribers('post:2', '{"x": 1}');
SELECT novu.remove_topic_subscribers('post:2', '["tp-c"]');
SELECT novu.delete_topic('post:2');
SELECT novu.get_topic('post:2');
SELECT novu.delete_topic('post:2');

-- a deleted subscriber leaves its topics
SELECT novu.identify('tp-gone') ->> 'subscriberId';
SELECT novu.add_topic_subscribers('post:1', '["tp-gone"]') -> 'succeeded';
SELECT novu.delete_subscriber('tp-gone');
SELECT jsonb_path_query_array(novu.topic_subscribers('post:1'), '$.data[*].subscriberId');

------------------------------------------------------------------------------
-- "to" naming topics
------------------------------------------------------------------------------
SELECT novu.create_topic('post:3') ->> 'key';
SELECT novu.add_topic_subscribers('post:3', '["tp-c", "tp-d", "tp-e"]') -> 'succeeded';

-- one outbox row of kind topic: direct recipients, topic keys (sorted, distinct), the actor's profile
SELECT novu.trigger('topic-wf', '[{"type": "Topic", "topicKey": "post:3"}, "tp-new", {"type": "Topic", "topicKey": "post:1"}, {"type": "Topic", "topicKey": "post:3"}]',
                    '{}', '{}', 'tp-tx-1', '{"subscriberId": "tp-c", "firstName": "Cee"}') ->> 'status';
SELECT kind, status, recipients, topics, actor FROM novu.events WHERE transaction_id = 'tp-tx-1';
-- the actor was upserted in the caller's transaction; the direct recipient is
-- created by the fan-out (below), not by the trigger
SELECT novu.get_subscriber('tp-c') ->> 'firstName';
SELECT count(*) FROM novu.subscribers WHERE subscriber_id = 'tp-new';
-- only topics
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": "post:3"}', '{}', '{}', 'tp-tx-2') ->> 'status';
SELECT kind, recipients, topics, actor FROM novu.events WHERE transaction_id = 'tp-tx-2';
-- a duplicate transactionId enqueues nothing and does not apply the actor's profile
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": "post:3"}', '{}', '{}', 'tp-tx-2', '{"subscriberId": "tp-c", "firstName": "Changed"}') ->> 'status';
SELECT novu.get_subscriber('tp-c') ->> 'firstName';
-- plain triggers stay kind trigger, no topics
SELECT novu.trigger('topic-wf', '"tp-a"', '{}', '{}', 'tp-tx-plain') ->> 'status';
SELECT kind, recipients, topics FROM novu.events WHERE transaction_id = 'tp-tx-plain';

-- errors at trigger time: each writes nothing
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": "post:9"}', '{}', '{}', 'tp-tx-err');
SELECT novu.trigger('topic-wf', '["tp-a", {"type": "Topic", "topicKey": "post:1"}, {"type": "Topic", "topicKey": "nope"}]', '{}', '{}', 'tp-tx-err');
SELECT novu.trigger('topic-wf', '[{"topicKey": "post:1"}]');
SELECT novu.trigger('topic-wf', '{"type": "Subscriber", "subscriberId": "tp-a"}');
SELECT novu.trigger('topic-wf', '{"type": "Topic"}');
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": 7}');
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": "bad key"}');
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": ""}');
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": "post:1", "exclude": ["tp-a"]}');
SELECT novu.trigger('topic-wf', '"tp-a"', '{}', '{}', NULL, '{"type": "Topic", "topicKey": "post:1"}');
SELECT novu.trigger('topic-wf', (SELECT jsonb_agg(jsonb_build_object('type', 'Topic', 'topicKey', 'k' || i)) FROM generate_series(1, 101) i));
SELECT novu.trigger('no-such-wf', '{"type": "Topic", "topicKey": "post:1"}');
SELECT count(*) AS err_events FROM novu.events WHERE transaction_id = 'tp-tx-err';
-- an unknown topic is an error even when the workflow cannot run
SELECT novu.create_workflow('topic-wf-off', '[{"type": "push", "title": "t", "content": "c"}]', NULL, false, false) ->> 'active';
SELECT novu.trigger('topic-wf-off', '{"type": "Topic", "topicKey": "nope"}');
SELECT novu.trigger('topic-wf-off', '{"type": "Topic", "topicKey": "post:1"}') ->> 'status';

-- bulk_trigger takes topics too; a bad event fails alone
SELECT jsonb_path_query_array(novu.bulk_trigger('[
    {"workflowId": "topic-wf", "to": [{"type": "Topic", "topicKey": "post:3"}], "transactionId": "tp-bulk-1"},
    {"workflowId": "topic-wf", "to": [{"type": "Topic", "topicKey": "missing"}], "transactionId": "tp-bulk-2"}]'),
    '$[*].status');
SELECT novu.bulk_trigger('[{"workflowId": "topic-wf", "to": {"type": "Topic", "topicKey": "missing"}, "transactionId": "tp-bulk-3"}]') -> 0 -> 'error';
SELECT transaction_id, kind, topics FROM novu.events WHERE transaction_id LIKE 'tp-bulk-%' ORDER BY 1;

-- a string actor is created if missing, and the row keeps its profile
SELECT novu.trigger('topic-wf', '"tp-a"', '{}', '{}', 'tp-tx-actor-str', '"tp-actor-new"') ->> 'status';
SELECT actor FROM novu.events WHERE transaction_id = 'tp-tx-actor-str';
SELECT count(*) FROM novu.subscribers WHERE subscriber_id = 'tp-actor-new';
-- ... and templates see it as actor
SELECT novu.render('{{actor.firstName}} / {{actor.subscriberId}}', jsonb_build_object('actor', actor))
  FROM novu.events WHERE transaction_id = 'tp-tx-1';

------------------------------------------------------------------------------
-- The fan-out chunks (novu._topic_chunk): direct recipients and members,
-- de-duplicated, the actor left out of the members only, in subscriberId order
-- (bytewise) from the cursor, at most p_limit
------------------------------------------------------------------------------
SELECT novu.create_topic('chunk:x') ->> 'key', novu.create_topic('chunk:y') ->> 'key';
SELECT count(*) FROM (SELECT novu.identify(s) FROM unnest(ARRAY['c1', 'c2', 'c3', 'c4', 'c5', 'B6', 'actor']) s) x;
SELECT novu.add_topic_subscribers('chunk:x', '["c1", "c2", "c3", "actor", "B6"]') -> 'failed';
SELECT novu.add_topic_subscribers('chunk:y', '["c2", "c3", "c4", "actor"]') -> 'failed';
SELECT novu._topic_chunk(ARRAY['c5', 'c1'], ARRAY['chunk:x', 'chunk:y'], 'actor', NULL, 100);
SELECT novu._topic_chunk(ARRAY['c5', 'c1'], ARRAY['chunk:x', 'chunk:y'], 'actor', NULL, 3);
SELECT novu._topic_chunk(ARRAY['c5', 'c1'], ARRAY['chunk:x', 'chunk:y'], 'actor', 'c1', 3);
SELECT novu._topic_chunk(ARRAY['c5', 'c1'], ARRAY['chunk:x', 'chunk:y'], 'actor', 'c4', 3);
SELECT novu._topic_chunk(ARRAY['c5', 'c1'], ARRAY['chunk:x', 'chunk:y'], 'actor', 'c5', 3);
-- the actor listed directly is notified
SELECT novu._topic_chunk(ARRAY['actor'], ARRAY['chunk:x'], 'actor', NULL, 100);
-- no actor, no direct recipients, an unknown (deleted) topic
SELECT novu._topic_chunk(NULL, ARRAY['chunk:y', 'gone'], NULL, NULL, 100);

-- the workers' turn (called here by hand; no worker serves this database):
-- every chunk until the row is done, each chunk at most p_limit subscribers
SELECT novu.trigger('topic-wf', '["c5", "c1", {"type": "Topic", "topicKey": "chunk:x"}, {"type": "Topic", "topicKey": "chunk:y"}]',
                    '{}', '{}', 'tp-fan-1', '"actor"') ->> 'status';
SELECT subscriber_id FROM novu.messages WHERE transaction_id = 'tp-fan-1' ORDER BY 1;
DO $$
DECLARE
    i integer := 0;
BEGIN
    WHILE EXISTS (SELECT FROM novu.events WHERE transaction_id IN ('tp-fan-1', 'tp-tx-1', 'tp-tx-2', 'tp-bulk-1')
                                            AND status IN ('pending', 'processing')) LOOP
        PERFORM count(*) FROM novu._fanout(2, 0, 60000, 0, 1);
        i := i + 1;
        IF i > 1000 THEN RAISE EXCEPTION 'fan-out does not end'; END IF;
    END LOOP;
END
$$;
SELECT status, cursor FROM novu.events WHERE transaction_id = 'tp-fan-1';
-- one delivery row per subscriber (one push step), each once: no actor, B6 sorts first
SELECT subscriber_id, count(*) FROM novu.deliveries WHERE transaction_id = 'tp-fan-1' GROUP BY 1 ORDER BY subscriber_id COLLATE "C";
SELECT subscriber_id FROM novu.notifications WHERE transaction_id = 'tp-fan-1' ORDER BY subscriber_id COLLATE "C";
-- tp-tx-1: direct tp-new, topics post:1 (tp-a, tp-b, tp-c) and post:3 (tp-c, tp-d, tp-e); actor tp-c left out
SELECT array_agg(DISTINCT subscriber_id ORDER BY subscriber_id) FROM novu.deliveries WHERE transaction_id = 'tp-tx-1';
SELECT count(*) AS tp_new_created_by_the_fan_out FROM novu.subscribers WHERE subscriber_id = 'tp-new';
SELECT count(*) AS deliveries, count(DISTINCT (transaction_id, subscriber_id)) AS notifications
  FROM novu.deliveries WHERE transaction_id IN ('tp-tx-1', 'tp-tx-2', 'tp-bulk-1');
SELECT array_agg(DISTINCT subscriber_id ORDER BY subscriber_id) FROM novu.deliveries WHERE transaction_id = 'tp-tx-2';
-- a canceled topic trigger is not fanned out
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": "post:3"}', '{}', '{}', 'tp-cancel') ->> 'status';
SELECT novu.cancel('tp-cancel');
SELECT count(*) FROM novu._fanout(10, 0, 60000, 0, 1) WHERE transaction_id = 'tp-cancel';
SELECT status FROM novu.events WHERE transaction_id = 'tp-cancel';

-- a chunk that cannot be expanded fails that row alone, with the reason, and
-- does not block the rows after it (a workflow broken behind the API's back)
INSERT INTO novu.workflows (workflow_id, name, steps) VALUES ('tp-broken', 'broken', '{"not": "an array"}');
INSERT INTO novu.events (transaction_id, kind, workflow_id, recipients, topics) VALUES ('tp-broken-1', 'topic', 'tp-broken', '{tp-a}', '{post:3}');
SELECT novu.trigger('topic-wf', '{"type": "Topic", "topicKey": "post:3"}', '{}', '{}', 'tp-after-broken') ->> 'status';
SELECT count(*) FROM novu._fanout(100, 0, 60000, 0, 1) x WHERE x.handled > 0;
SELECT transaction_id, status FROM novu.events WHERE transaction_id IN ('tp-broken-1', 'tp-after-broken') ORDER BY 1;
SELECT status, detail FROM novu.execution_details WHERE transaction_id = 'tp-broken-1';
SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tp-broken-1';
SELECT array_agg(subscriber_id ORDER BY subscriber_id) FROM novu.deliveries WHERE transaction_id = 'tp-after-broken';

------------------------------------------------------------------------------
-- roles: the app manages topics and reads them; nobody else does
------------------------------------------------------------------------------
CREATE ROLE novu_topic_app LOGIN IN ROLE novu_app;
CREATE ROLE novu_topic_nobody LOGIN;
SET ROLE novu_topic_app;
SELECT novu.create_topic('role:1') ->> 'key';
SELECT novu.add_topic_subscribers('role:1', '["tp-a"]') -> 'succeeded';
SELECT count(*) FROM novu.topic_subscribers ts JOIN novu.topics t ON t.id = ts.topic_id WHERE t.key = 'role:1';
INSERT INTO novu.topic_subscribers (topic_id, subscriber_id) SELECT id, 'tp-b' FROM novu.topics WHERE key = 'role:1';
DELETE FROM novu.topics;
SELECT novu._topic_chunk(NULL, ARRAY['role:1'], NULL, NULL, 10);
RESET ROLE;
SET ROLE novu_topic_nobody;
SELECT novu.create_topic('role:2');
SELECT count(*) FROM novu.topics;
RESET ROLE;
SELECT has_table_privilege('novu_worker', 'novu.topic_subscribers', 'SELECT') AS worker_reads_members,
       has_table_privilege('novu_worker', 'novu.topic_subscribers', 'INSERT') AS worker_writes_members,
       has_function_privilege('novu_worker', 'novu._topic_chunk(text[], text[], text, text, integer)', 'EXECUTE') AS worker_chunks;
DROP ROLE novu_topic_app, novu_topic_nobody;
