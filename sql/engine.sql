-- engine: the workflow engine (DESIGN 9): delay and digest steps, stepId and
-- step filters validated at creation; notifications run step by step, waiting
-- steps in novu.step_runs, continued by novu._continue; cancel of delays and
-- digest events; the activity log.  No worker serves this database: the
-- workers' functions are called by hand, and due times are moved by hand.
\set VERBOSITY terse

SELECT novu.create_integration('expo', '{}', 'eng-expo');
SELECT count(*) FROM (SELECT novu.identify(s), novu.set_credentials(s, 'expo', jsonb_build_object('deviceTokens', jsonb_build_array('ExponentPushToken[' || s || ']')))
                        FROM unnest(ARRAY['eng-a', 'eng-b', 'eng-c']) s) x;
SELECT novu.identify('eng-pro', '{"firstName": "Pro", "data": {"plan": "pro", "seats": 12}}') ->> 'subscriberId';
SELECT novu.set_credentials('eng-pro', 'expo', '{"deviceTokens": ["ExponentPushToken[eng-pro]"]}') ->> 'subscriberId';

-- valid workflows; "staged" (step by step) when a delay, a digest or filters are in it
SELECT novu.create_workflow('eng-plain', '[{"type": "push", "stepId": "hello", "title": "t", "content": "c", "filters": []}]') ->> 'workflowId';
SELECT novu.create_workflow('eng-delay', '[{"type": "delay", "amount": 5, "unit": "seconds", "name": "wait"},
                                           {"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.create_workflow('eng-sched', '[{"type": "delay", "delayPath": "payload.sendAt"},
                                           {"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.create_workflow('eng-digest', '[{"type": "digest", "stepId": "dg", "amount": 1, "unit": "hours", "digestKey": "post.id"},
                                            {"type": "push", "title": "{{step.total_count}} comments", "content": "{% for e in step.events %}{{e.text}} {% endfor %}"}]') ->> 'workflowId';
SELECT novu.create_workflow('eng-backoff', '[{"type": "digest", "amount": 1, "unit": "minutes", "backoff": true, "backoffAmount": 30, "backoffUnit": "seconds"},
                                             {"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.create_workflow('eng-filter', '[
    {"type": "push", "stepId": "pro-only", "title": "t", "content": "c",
     "filters": [{"isNegated": false, "type": "GROUP", "value": "AND", "children": [
        {"on": "subscriber", "field": "data.plan", "operator": "EQUAL", "value": "pro"},
        {"on": "payload", "field": "amount", "operator": "LARGER", "value": 100}]}]},
    {"type": "push", "stepId": "offline", "title": "t", "content": "c",
     "filters": [{"type": "GROUP", "value": "OR", "children": [{"on": "isOnline", "value": false}]}]}]') ->> 'workflowId';
SELECT workflow_id, staged FROM novu.workflows WHERE workflow_id LIKE 'eng-%' ORDER BY 1;
SELECT novu.update_workflow('eng-plain', '{"steps": [{"type": "delay", "amount": 1, "unit": "days"}, {"type": "push", "title": "t", "content": "c"}]}') IS NOT NULL;
SELECT staged FROM novu.workflows WHERE workflow_id = 'eng-plain';
SELECT novu.update_workflow('eng-plain', '{"steps": [{"type": "push", "title": "t", "content": "c"}]}') IS NOT NULL;
SELECT staged FROM novu.workflows WHERE workflow_id = 'eng-plain';

-- validation: each error names the field; nothing is written
SELECT novu.create_workflow('eng-x', '[{"type": "delay"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 0, "unit": "seconds"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 1.5, "unit": "seconds"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": "5", "unit": "seconds"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 5, "unit": "years"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 13, "unit": "months"}]');
-- a year is 366 days, 52 weeks or 12 months (not 360 days); a huge count is
-- refused as such, not by an overflow
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 53, "unit": "weeks"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 367, "unit": "days"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 999999999, "unit": "weeks"}]');
SELECT u, novu._step_interval(to_jsonb(a), to_jsonb(u)) AS longest
  FROM (VALUES (31622400, 'seconds'), (527040, 'minutes'), (8784, 'hours'), (366, 'days'), (52, 'weeks'), (12, 'months')) v(a, u);
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 5, "unit": "seconds", "delayPath": "sendAt"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "delayPath": "send at"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "delayPath": 5}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 5, "unit": "seconds", "content": "c"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "digest", "unit": "seconds"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "digest", "amount": 5, "unit": "seconds", "digestKey": ""}]');
SELECT novu.create_workflow('eng-x', '[{"type": "digest", "amount": 5, "unit": "seconds", "backoff": "yes"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "digest", "amount": 5, "unit": "seconds", "backoffAmount": 5, "backoffUnit": "seconds"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "digest", "amount": 5, "unit": "seconds", "backoff": true, "backoffAmount": 5}]');
SELECT novu.create_workflow('eng-x', '[{"type": "digest", "amount": 5, "unit": "seconds", "type2": 1}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "stepId": ""}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "stepId": 7}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "stepId": "a"}, {"type": "push", "title": "t", "content": "c", "stepId": "a"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "delay", "amount": 1, "unit": "seconds"}, {"type": "push", "title": "t", "content": "c", "stepId": "delay-0"}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": {}}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [1]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": []}], "x": 1}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"type": "RULE", "children": []}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"value": "XOR", "children": []}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"isNegated": "no", "children": []}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"value": "AND"}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "webhook"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a b", "operator": "EQUAL", "value": 1}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a", "operator": "equal", "value": 1}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a", "operator": "EQUAL"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a", "operator": "EQUAL", "value": {"x": 1}}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a", "operator": "BETWEEN", "value": [1]}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a", "operator": "IN", "value": 5}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a", "operator": "IS_DEFINED", "value": [1]}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "payload", "field": "a", "operator": "EQUAL", "value": 1, "extra": 1}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "isOnline", "value": "yes"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "isOnlineInLast", "value": 5, "timeOperator": "weeks"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "isOnlineInLast", "value": 0, "timeOperator": "minutes"}]}]}]');
-- isOnline takes EQUAL (as Novu's editor writes it) or NOT_EQUAL, and is run
-- with it; isOnlineInLast only EQUAL
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "isOnline", "operator": "LARGER", "value": true}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "isOnlineInLast", "operator": "NOT_EQUAL", "value": 5, "timeOperator": "minutes"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "previousStep", "step": "push-0", "stepType": "read"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c"}, {"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "previousStep", "step": "push-0", "stepType": "read"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "filters": [{"children": [{"on": "previousStep", "step": "push-0", "stepType": "opened"}]}]}]');
SELECT novu.create_workflow('eng-x', '[{"type": "push", "title": "t", "content": "c", "if": "x"}]');
SELECT count(*) FROM novu.workflows WHERE workflow_id = 'eng-x';

-- filter operators (one condition on a value)
SELECT op, v::text, a::text, novu._filter_matches(a, op, v) AS matches
  FROM (VALUES ('EQUAL', '"pro"'::jsonb, '"pro"'::jsonb), ('EQUAL', '"pro"', '"Pro"'), ('EQUAL', '5', '5.0'),
               ('EQUAL', '"5"', '5'), ('EQUAL', 'true', 'true'), ('NOT_EQUAL', '"pro"', '"free"'),
               ('NOT_EQUAL', '"pro"', NULL), ('EQUAL', '"pro"', NULL),
               ('LARGER', '100', '150'), ('LARGER', '100', '99'), ('LARGER', '100', '"150"'), ('SMALLER', '"b"', '"a"'),
               ('LARGER_EQUAL', '10', '10'), ('SMALLER_EQUAL', '10', '11'), ('LARGER', '9', '10'),
               ('IN', '["pro", "team"]', '"team"'), ('IN', '"pro, team"', '"team"'), ('IN', '[1, 2]', '2'),
               ('IN', '["pro"]', '"free"'), ('NOT_IN', '["pro"]', '"free"'), ('NOT_IN', '["pro"]', NULL),
               ('BETWEEN', '[10, 20]', '10'), ('BETWEEN', '[10, 20]', '20'), ('BETWEEN', '[10, 20]', '21'),
               ('NOT_BETWEEN', '[10, 20]', '21'), ('BETWEEN', '[10, 20]', '"x"'),
               ('LIKE', '"ell"', '"Hello"'), ('LIKE', '"ELL"', '"Hello"'), ('NOT_LIKE', '"ell"', '"Hello"'),
               ('IS_DEFINED', NULL, '0'), ('IS_DEFINED', NULL, 'null'), ('IS_DEFINED', NULL, NULL),
               ('IS_DEFINED', 'false', NULL),
               -- numbers compare as numbers whatever their length (1e31 is written with 32 digits)
               ('LARGER', '5', '1e31'), ('SMALLER', '1e40', '1e31'), ('EQUAL', '1e31', '10000000000000000000000000000000')
       ) AS t(op, v, a);

-- groups: any group passes; AND, OR, isNegated; isOnline, isOnlineInLast
SELECT name, novu._filters_pass(f, '[]', '{"n": 5}', '{"data": {"plan": "pro"}}', online, last_online, 'tx', 'sub') AS passes
  FROM (VALUES
    ('no groups', '[]'::jsonb, false, NULL::timestamptz),
    ('empty group', '[{"children": []}]', false, NULL),
    ('AND true', '[{"value": "AND", "children": [{"on": "payload", "field": "n", "operator": "EQUAL", "value": 5}, {"on": "subscriber", "field": "data.plan", "operator": "EQUAL", "value": "pro"}]}]', false, NULL),
    ('AND false', '[{"value": "AND", "children": [{"on": "payload", "field": "n", "operator": "EQUAL", "value": 5}, {"on": "subscriber", "field": "data.plan", "operator": "EQUAL", "value": "free"}]}]', false, NULL),
    ('OR true', '[{"value": "OR", "children": [{"on": "payload", "field": "n", "operator": "EQUAL", "value": 6}, {"on": "subscriber", "field": "data.plan", "operator": "EQUAL", "value": "pro"}]}]', false, NULL),
    ('negated', '[{"isNegated": true, "value": "AND", "children": [{"on": "payload", "field": "n", "operator": "EQUAL", "value": 5}]}]', false, NULL),
    ('second group', '[{"children": [{"on": "payload", "field": "n", "operator": "EQUAL", "value": 6}]}, {"children": [{"on": "payload", "field": "n", "operator": "EQUAL", "value": 5}]}]', false, NULL),
    ('online true', '[{"children": [{"on": "isOnline", "value": true}]}]', true, NULL),
    ('online false', '[{"children": [{"on": "isOnline", "value": true}]}]', false, NULL),
    ('online EQUAL', '[{"children": [{"on": "isOnline", "operator": "EQUAL", "value": true}]}]', true, NULL),
    ('offline, NOT_EQUAL true', '[{"children": [{"on": "isOnline", "operator": "NOT_EQUAL", "value": true}]}]', false, NULL),
    ('online, NOT_EQUAL true', '[{"children": [{"on": "isOnline", "operator": "NOT_EQUAL", "value": true}]}]', true, NULL),
    ('in last 5 min', '[{"children": [{"on": "isOnlineInLast", "value": 5, "timeOperator": "minutes"}]}]', false, now() - interval '2 minutes'),
    ('not in last 1 min', '[{"children": [{"on": "isOnlineInLast", "value": 1, "timeOperator": "minutes"}]}]', false, now() - interval '2 minutes'),
    ('online now', '[{"children": [{"on": "isOnlineInLast", "value": 1, "timeOperator": "seconds"}]}]', true, NULL)
  ) AS t(name, f, online, last_online);

------------------------------------------------------------------------------
-- execution (the workers' functions by hand)
------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.fan() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM novu._fanout(100, 0, 60000, 0, 1) $$;
CREATE FUNCTION pg_temp.due(tx text) RETURNS void LANGUAGE sql AS
    $$ UPDATE novu.step_runs SET due_at = now() - interval '1 second' WHERE transaction_id = tx AND status = 'waiting' $$;
CREATE FUNCTION pg_temp.cont() RETURNS integer LANGUAGE sql AS $$ SELECT max(handled) FROM novu._continue(100, 0, 60000) $$;
CREATE FUNCTION pg_temp.log(tx text) RETURNS TABLE (channel text, status text, detail text) LANGUAGE sql AS
    $$ SELECT channel, status, regexp_replace(detail, '\d{4}-\d\d-\d\dT[0-9:.]+Z', '<time>') FROM novu.execution_details WHERE transaction_id = tx ORDER BY id $$;

-- a plain workflow still expands in one statement (no step row)
SELECT novu.trigger('eng-plain', '"eng-a"', '{}', '{}', 'eng-t0') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT step_index, status FROM novu.deliveries WHERE transaction_id = 'eng-t0';

-- a delay: a waiting row, no message until due; then the steps after it
SELECT novu.trigger('eng-delay', '["eng-a", "eng-b"]', '{}', '{}', 'eng-t1') ->> 'status';
-- before the fan-out, novu.messages shows the channel steps (a delay is not a message)
SELECT subscriber_id, channel, status FROM novu.messages WHERE transaction_id = 'eng-t1' ORDER BY 1;
SELECT pg_temp.fan() > 0;
SELECT subscriber_id, kind, status, step_index, due_at - created_at AS wait FROM novu.step_runs WHERE transaction_id = 'eng-t1' ORDER BY 1;
SELECT count(*) AS messages FROM novu.deliveries WHERE transaction_id = 'eng-t1';
SELECT pg_temp.cont() AS nothing_due;
SELECT pg_temp.due('eng-t1');
SELECT pg_temp.cont() AS continued;
SELECT subscriber_id, status FROM novu.step_runs WHERE transaction_id = 'eng-t1' ORDER BY 1;
SELECT subscriber_id, step_index, status, device_token FROM novu.deliveries WHERE transaction_id = 'eng-t1' ORDER BY 1;
SELECT pg_temp.cont() AS again_nothing;
SELECT * FROM pg_temp.log('eng-t1');

-- overrides.delay wins over the step's amount
SELECT novu.trigger('eng-delay', '"eng-a"', '{}', '{"delay": {"amount": 2, "unit": "hours"}}', 'eng-t2') ->> 'status';
SELECT novu.trigger('eng-delay', '"eng-a"', '{}', '{"delay": {"amount": 2, "unit": "fortnights"}}', 'eng-t2b') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, due_at - created_at AS wait FROM novu.step_runs WHERE transaction_id LIKE 'eng-t2%';
SELECT * FROM pg_temp.log('eng-t2b');

-- scheduled: delayPath; missing, not a time, or past fails the notification with the reason
SELECT novu.trigger('eng-sched', '"eng-a"', jsonb_build_object('sendAt', to_char((now() + interval '3 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')), '{}', 'eng-s1') ->> 'status';
SELECT novu.trigger('eng-sched', '"eng-a"', '{}', '{}', 'eng-s2') ->> 'status';
SELECT novu.trigger('eng-sched', '"eng-a"', '{"sendAt": "tomorrow"}', '{}', 'eng-s3') ->> 'status';
SELECT novu.trigger('eng-sched', '"eng-a"', '{"sendAt": "2020-01-01T00:00:00Z"}', '{}', 'eng-s4') ->> 'status';
-- the form of a time but no such day
SELECT novu.trigger('eng-sched', '"eng-a"', '{"sendAt": "2031-02-30T10:00:00Z"}', '{}', 'eng-s5') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, round(extract(epoch FROM due_at - created_at) / 3600) AS hours FROM novu.step_runs WHERE transaction_id LIKE 'eng-s%';
SELECT transaction_id, l.* FROM unnest(ARRAY['eng-s2', 'eng-s3', 'eng-s4', 'eng-s5']) transaction_id, pg_temp.log(transaction_id) l;
SELECT novu._delay_time('2031-02-30T10:00:00Z') IS NULL AS no_such_day, novu._delay_time('2031-02-03') AS midnight_utc,
       novu._delay_time('2031-02-03T10:00+02:00') AS with_offset, novu._delay_time('soon') IS NULL AS not_a_time;
SELECT count(*) FROM novu.deliveries WHERE transaction_id LIKE 'eng-s%';

-- filters: filtered steps are logged, the others run
SELECT novu.trigger('eng-filter', '"eng-pro"', '{"amount": 150}', '{}', 'eng-f1') ->> 'status';
SELECT novu.trigger('eng-filter', '"eng-pro"', '{"amount": 50}', '{}', 'eng-f2') ->> 'status';
SELECT novu.trigger('eng-filter', '"eng-a"', '{"amount": 150}', '{}', 'eng-f3') ->> 'status';
SELECT novu.set_online_status('eng-pro', true) ->> 'isOnline';
SELECT novu.trigger('eng-filter', '"eng-pro"', '{"amount": 150}', '{}', 'eng-f4') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, array_agg(step_index ORDER BY step_index) AS steps_sent FROM novu.deliveries WHERE transaction_id LIKE 'eng-f%' GROUP BY 1 ORDER BY 1;
SELECT * FROM pg_temp.log('eng-f2');
SELECT novu.set_online_status('eng-pro', false) ->> 'isOnline';

-- digest: one window per key; the first opens it, the others merge; at the end
-- the next steps run once for the leader, with step.events oldest first
SELECT novu.trigger('eng-digest', '"eng-a"', jsonb_build_object('post', jsonb_build_object('id', 1), 'text', 'c' || g), '{}', 'eng-d' || g) ->> 'status'
  FROM generate_series(1, 4) g;
SELECT novu.trigger('eng-digest', '"eng-a"', '{"post": {"id": 2}, "text": "other"}', '{}', 'eng-d9') ->> 'status';
SELECT novu.trigger('eng-digest', '"eng-b"', '{"post": {"id": 1}, "text": "b"}', '{}', 'eng-db') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT subscriber_id, digest_key, transaction_id, status FROM novu.step_runs WHERE kind = 'digest' AND workflow_id = 'eng-digest' ORDER BY 1, 2;
SELECT r.digest_key, m.transaction_id, m.status FROM novu.digest_events m JOIN novu.step_runs r ON r.id = m.digest_id
 WHERE r.workflow_id = 'eng-digest' ORDER BY r.subscriber_id, r.digest_key, m.event_id;
SELECT * FROM pg_temp.log('eng-d2');
-- cancel: a follower leaves the window; the leader hands it to the oldest left
SELECT novu.cancel('eng-d3') AS follower_canceled;
SELECT novu.cancel('eng-d1') AS leader_canceled;
SELECT novu.cancel('eng-d1') AS again;
SELECT transaction_id, status FROM novu.step_runs WHERE kind = 'digest' AND subscriber_id = 'eng-a' AND digest_key = '1';
SELECT * FROM pg_temp.log('eng-d2');
SELECT novu._digest_context(id) FROM novu.step_runs WHERE kind = 'digest' AND subscriber_id = 'eng-a' AND digest_key = '1';
-- the window closes: one message, for the leader, leased to the caller with
-- the digest in its step (the templates' step.events, oldest first)
SELECT pg_temp.due('eng-d2');
SELECT transaction_id, step -> '_digest' AS step_context, step_key ~ '/[0-9]+$' AS keyed_by_digest, handled
  FROM novu._continue(100, 10, 60000);
SELECT transaction_id, step_index, status, digest_id IS NOT NULL AS has_digest FROM novu.deliveries WHERE transaction_id LIKE 'eng-d%' ORDER BY 1;
SELECT * FROM pg_temp.log('eng-d4');
-- a merged event's trail ends at its merge; its window (raw.digestId) says which
-- transaction the digest went with (the leader now: eng-d1 was canceled)
SELECT e.transaction_id, r.transaction_id AS sent_with, r.status AS window_status
  FROM novu.execution_details e JOIN novu.step_runs r ON r.id = (e.raw ->> 'digestId')::bigint
 WHERE e.transaction_id = 'eng-d4';
-- a new event after the window opens a new one
SELECT novu.trigger('eng-digest', '"eng-a"', '{"post": {"id": 1}, "text": "late"}', '{}', 'eng-d5') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, status FROM novu.step_runs WHERE kind = 'digest' AND subscriber_id = 'eng-a' AND digest_key = '1' ORDER BY id;
-- every event of a window canceled: the window is canceled
SELECT novu.cancel('eng-d5');
SELECT transaction_id, status FROM novu.step_runs WHERE kind = 'digest' AND subscriber_id = 'eng-a' AND digest_key = '1' ORDER BY id;

-- backoff: the first event goes at once; one within the backoff window opens a digest
SELECT novu.trigger('eng-backoff', '"eng-c"', '{}', '{}', 'eng-b1') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT novu.trigger('eng-backoff', '"eng-c"', '{}', '{}', 'eng-b2') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, status FROM novu.step_runs WHERE workflow_id = 'eng-backoff' ORDER BY id;
SELECT transaction_id, status FROM novu.deliveries WHERE transaction_id LIKE 'eng-b%' ORDER BY 1;
SELECT * FROM pg_temp.log('eng-b1');

-- cancel of a delay: the steps after it never run; a delay already continued is not waiting
SELECT novu.trigger('eng-delay', '"eng-a"', '{}', '{}', 'eng-c1') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT novu.cancel('eng-c1') AS canceled, novu.cancel('eng-c1') AS again;
SELECT pg_temp.due('eng-c1');
SELECT pg_temp.cont();
SELECT status FROM novu.step_runs WHERE transaction_id = 'eng-c1';
SELECT count(*) AS messages FROM novu.deliveries WHERE transaction_id = 'eng-c1';
SELECT * FROM pg_temp.log('eng-c1');
-- after the delay ran, cancel stops its pending messages
SELECT novu.cancel('eng-t1');
SELECT status, count(*) FROM novu.deliveries WHERE transaction_id = 'eng-t1' GROUP BY 1;

-- a workflow deleted while a delay waits: the notification ends with the reason
SELECT novu.create_workflow('eng-gone', '[{"type": "delay", "amount": 1, "unit": "minutes"}, {"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.trigger('eng-gone', '"eng-a"', '{}', '{}', 'eng-g1') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT novu.delete_workflow('eng-gone');
SELECT pg_temp.due('eng-g1');
SELECT pg_temp.cont();
SELECT * FROM pg_temp.log('eng-g1');

-- steps after a digest keep its events through a later delay; a filter after
-- a delay is evaluated when the delay ends
SELECT novu.create_workflow('eng-chain', '[{"type": "digest", "amount": 1, "unit": "minutes"},
    {"type": "delay", "amount": 1, "unit": "minutes"},
    {"type": "push", "title": "{{step.total_count}}", "content": "c",
     "filters": [{"children": [{"on": "payload", "field": "x", "operator": "EQUAL", "value": 1}]}]}]') ->> 'workflowId';
SELECT novu.trigger('eng-chain', '"eng-c"', jsonb_build_object('x', 1, 'i', i), '{}', 'eng-ch' || i) ->> 'status' FROM generate_series(1, 2) i;
SELECT pg_temp.fan() > 0;
SELECT pg_temp.due('eng-ch1');
SELECT pg_temp.cont() AS digest_closed;
SELECT kind, status, digest_id IS NOT NULL AS keeps_digest FROM novu.step_runs WHERE transaction_id = 'eng-ch1' ORDER BY id;
SELECT pg_temp.due('eng-ch1');
SELECT transaction_id, step -> '_digest' -> 'total_count' AS total_count, handled FROM novu._continue(100, 10, 60000);
SELECT * FROM pg_temp.log('eng-ch1');

-- digest windows due together close in one batch: each for its leader (a
-- canceled leader handed its window over), each message with its own window's
-- events oldest first and total_count, leased or not (a message claimed later
-- reads its window by deliveries.digest_id), one 'Digest finished' row per event
SELECT novu.create_workflow('eng-many', '[{"type": "digest", "amount": 1, "unit": "hours", "digestKey": "k"},
    {"type": "in_app", "content": "{{step.total_count}}"}]') ->> 'workflowId';
SELECT novu.trigger('eng-many', to_jsonb(s), jsonb_build_object('k', k, 'n', n), '{}', 'eng-m' || n) ->> 'status'
  FROM (VALUES ('eng-a', 1, 1), ('eng-a', 1, 2), ('eng-a', 1, 3), ('eng-a', 2, 4), ('eng-a', 2, 5), ('eng-b', 1, 6)) v(s, k, n);
SELECT pg_temp.fan() > 0;
SELECT novu.cancel('eng-m1') AS leader_canceled;
UPDATE novu.step_runs SET due_at = now() - interval '1 minute' + id * interval '1 millisecond'
 WHERE workflow_id = 'eng-many' AND status = 'waiting';
SELECT transaction_id, step -> '_digest' AS step_context, step_key ~ '/[0-9]+$' AS keyed_by_digest, handled
  FROM novu._continue(100, 2, 60000) ORDER BY transaction_id NULLS LAST;
SELECT d.transaction_id, d.status, r.subscriber_id, r.digest_key, r.status AS window, r.transaction_id = d.transaction_id AS led_by_it,
       novu._digest_context(d.digest_id) AS claimed_later_sees
  FROM novu.deliveries d JOIN novu.step_runs r ON r.id = d.digest_id WHERE d.workflow_id = 'eng-many' ORDER BY 1;
SELECT transaction_id, detail, (raw ->> 'digestId')::bigint = (SELECT id FROM novu.step_runs r WHERE r.workflow_id = 'eng-many'
           AND r.subscriber_id = e.subscriber_id AND r.digest_key = e.raw ->> 'digestKey') AS its_window
  FROM novu.execution_details e WHERE workflow_id = 'eng-many' AND detail LIKE 'Digest finished%' ORDER BY id;

-- a step that cannot run (a workflow broken behind the API's back) fails alone,
-- with the reason; the other due steps of the batch go on
SELECT novu.create_workflow('eng-broken', '[{"type": "delay", "amount": 1, "unit": "minutes"}, {"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';
SELECT novu.trigger('eng-broken', '"eng-a"', '{}', '{}', 'eng-x1') ->> 'status';
SELECT novu.trigger('eng-delay', '"eng-b"', '{}', '{}', 'eng-x2') ->> 'status';
SELECT pg_temp.fan() > 0;
UPDATE novu.workflows SET steps = '{"not": "an array"}' WHERE workflow_id = 'eng-broken';
SELECT pg_temp.due('eng-x1'), pg_temp.due('eng-x2');
SELECT pg_temp.cont() AS handled;
SELECT transaction_id, status FROM novu.step_runs WHERE transaction_id IN ('eng-x1', 'eng-x2') ORDER BY 1;
SELECT * FROM pg_temp.log('eng-x1');
SELECT transaction_id, status FROM novu.deliveries WHERE transaction_id IN ('eng-x1', 'eng-x2');

-- the app reads the activity log; the waiting steps are the admin's
SET ROLE novu_app;
SELECT count(*) > 0 FROM novu.execution_details WHERE transaction_id = 'eng-t1';
SELECT count(*) FROM novu.step_runs;
RESET ROLE;
SET ROLE novu_admin;
SELECT count(*) > 0 FROM novu.step_runs;
RESET ROLE;

-- deleting a subscriber cancels its waiting delays (and digest windows), with the reason
SELECT novu.identify('eng-gone') ->> 'subscriberId' AS identified;
SELECT novu.trigger('eng-delay', '"eng-gone"', '{}', '{}', 'eng-del') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT status FROM novu.step_runs WHERE transaction_id = 'eng-del';
SELECT novu.delete_subscriber('eng-gone');
SELECT status FROM novu.step_runs WHERE transaction_id = 'eng-del';
SELECT * FROM pg_temp.log('eng-del');
UPDATE novu.step_runs SET due_at = now() - interval '1 second' WHERE transaction_id = 'eng-del';
SELECT count(*) = 1 AS worker_pass_ran FROM (SELECT pg_temp.cont()) x;
SELECT count(*) AS messages_after_due FROM novu.deliveries WHERE transaction_id = 'eng-del';
SELECT status FROM novu.step_runs WHERE transaction_id = 'eng-del';

-- housekeeping keeps the outbox row of every event merged into a window still
-- open, not only its leader's (windows may stay open longer than the
-- retention): the transactionId stays taken (triggered again, a duplicate),
-- and the event that leads the window after a hand-over still has its payload
-- for the steps after it.  Once out of the window, its row may go.
SELECT novu.create_workflow('eng-hk', '[{"type": "digest", "amount": 2, "unit": "months"},
                                        {"type": "push", "title": "Hi {{payload.name}}", "content": "c"}]') ->> 'workflowId';
SELECT novu.trigger('eng-hk', '"eng-a"', '{"name": "A"}', '{}', 'eng-h1') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT novu.trigger('eng-hk', '"eng-a"', '{"name": "B"}', '{}', 'eng-h2') ->> 'status';
SELECT pg_temp.fan() > 0;
-- (housekeeping walks rows in id order and stops at the first one made after
-- the cutoff: the outbox rows before these are made old too)
UPDATE novu.events SET created_at = created_at - interval '31 days'
 WHERE id <= (SELECT max(id) FROM novu.events WHERE transaction_id IN ('eng-h1', 'eng-h2'));
-- the digest keys' lock rows (made by the merges) go too (a held one stays:
-- isolation concurrent_digest)
SELECT count(*) > 0 AS key_locks FROM novu.digest_locks;
SELECT novu._housekeeping(interval '30 days', 1000) > 0 AS deleted_some;
SELECT count(*) AS key_locks_left FROM novu.digest_locks;
SELECT transaction_id, status FROM novu.events WHERE transaction_id IN ('eng-h1', 'eng-h2') ORDER BY 1;
SELECT novu.trigger('eng-hk', '"eng-a"', '{"name": "B2"}', '{}', 'eng-h2') ->> 'status' AS triggered_again;
SELECT novu.cancel('eng-h1') AS leader_canceled;
SELECT novu._housekeeping(interval '30 days', 1000) AS deleted;
SELECT transaction_id FROM novu.events WHERE transaction_id IN ('eng-h1', 'eng-h2') ORDER BY 1;
SELECT pg_temp.due('eng-h2');
SELECT transaction_id, payload ->> 'name' AS name, step -> '_digest' -> 'total_count' AS total
  FROM novu._continue(100, 10, 60000) WHERE id IS NOT NULL;

-- housekeeping keeps a finished digest window while a delay after it still
-- waits (its messages show the window's events, step.events), then deletes it
SELECT novu.create_workflow('eng-hk2', '[{"type": "digest", "amount": 1, "unit": "seconds"},
                                         {"type": "delay", "amount": 2, "unit": "days"},
                                         {"type": "in_app", "content": "{{step.total_count}}: {% for e in step.events %}{{e.n}} {% endfor %}"}]') ->> 'workflowId';
SELECT novu.trigger('eng-hk2', '"eng-a"', '{"n": 1}', '{}', 'eng-k1') ->> 'status';
SELECT novu.trigger('eng-hk2', '"eng-a"', '{"n": 2}', '{}', 'eng-k2') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT pg_temp.due('eng-k1');
SELECT pg_temp.cont() > 0;
SELECT kind, status, digest_id IS NOT NULL AS after_digest FROM novu.step_runs WHERE transaction_id = 'eng-k1' ORDER BY id;
-- (the window and every step row before it made old: housekeeping walks them
-- in id order and stops at the first one made after the cutoff)
UPDATE novu.step_runs SET created_at = created_at - interval '31 days'
 WHERE id <= (SELECT id FROM novu.step_runs WHERE kind = 'digest' AND transaction_id = 'eng-k1');
UPDATE novu.step_runs SET updated_at = updated_at - interval '31 days' WHERE kind = 'digest' AND transaction_id = 'eng-k1';
SELECT novu._housekeeping(interval '30 days', 1000) >= 0 AS housekept;
SELECT count(*) AS digest_kept FROM novu.step_runs WHERE kind = 'digest' AND transaction_id = 'eng-k1';
SELECT pg_temp.due('eng-k1');
SELECT transaction_id, step -> '_digest' -> 'total_count' AS total, jsonb_array_length(step -> '_digest' -> 'events') AS events
  FROM novu._continue(100, 10, 60000) WHERE id IS NOT NULL;
-- its message is being sent: the window stays; once sent, it goes
SELECT novu._housekeeping(interval '30 days', 1000) >= 0 AS housekept;
SELECT count(*) AS digest_kept FROM novu.step_runs WHERE kind = 'digest' AND transaction_id = 'eng-k1';
UPDATE novu.deliveries SET status = 'sent', lease_until = NULL WHERE transaction_id = 'eng-k1';
SELECT novu._housekeeping(interval '30 days', 1000) >= 0 AS housekept;
SELECT count(*) AS digest_left FROM novu.step_runs WHERE kind = 'digest' AND transaction_id = 'eng-k1';

-- step.events holds at most 1 MiB of JSON text (measured as text: payloads that
-- compress well were counted by their stored size, so 90 MB fitted); a
-- digestKey value too long for the index of open windows is kept as its hash
SELECT novu.create_workflow('eng-big', '[{"type": "digest", "amount": 1, "unit": "hours", "digestKey": "k"},
                                         {"type": "in_app", "content": "{{step.total_count}}"}]') ->> 'workflowId';
SELECT count(novu.trigger('eng-big', '"eng-a"', jsonb_build_object('k', 'same', 't', repeat('a', 200000), 'i', i), '{}', 'eng-big-' || i))
  FROM generate_series(1, 10) i;
SELECT novu.trigger('eng-big', '"eng-a"', jsonb_build_object('k', repeat('k', 6400)), '{}', 'eng-longkey') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, octet_length(digest_key) AS key_bytes, left(digest_key, 7) AS key_prefix
  FROM novu.step_runs WHERE workflow_id = 'eng-big' ORDER BY id;
SELECT sum(pg_column_size(payload)) < 1048576 AS stored_small, sum(payload_bytes) AS text_bytes
  FROM novu.digest_events m JOIN novu.step_runs r ON r.id = m.digest_id WHERE r.transaction_id = 'eng-big-1';
SELECT pg_temp.due('eng-big-1');
SELECT pg_temp.due('eng-longkey');
SELECT transaction_id, step -> '_digest' -> 'total_count' AS total, jsonb_array_length(step -> '_digest' -> 'events') AS events,
       octet_length((step -> '_digest' -> 'events')::text) <= 1048576 AS within_1mib
  FROM novu._continue(100, 10, 60000) WHERE id IS NOT NULL ORDER BY 1;

-- housekeeping looks at a bounded number of rows per call (twice p_limit), and
-- the next call goes on where it stopped: 2,500 old triggers that delays still
-- wait for stand before one that may go
UPDATE novu.events SET created_at = created_at - interval '31 days';
INSERT INTO novu.events (transaction_id, workflow_id, recipients, status, created_at)
SELECT 'eng-kept-' || i, 'eng-hk2', ARRAY['eng-a'], 'processed', now() - interval '40 days' FROM generate_series(1, 2500) i;
INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, due_at)
SELECT 'delay', 'eng-kept-' || i, 'eng-hk2', 'eng-a', 1, now() + interval '1 day' FROM generate_series(1, 2500) i;
INSERT INTO novu.events (transaction_id, workflow_id, recipients, status, created_at)
VALUES ('eng-free', 'eng-hk2', ARRAY['eng-a'], 'processed', now() - interval '40 days');
UPDATE novu.housekeeping_cursor SET after_id = 0;
SELECT novu._housekeeping(interval '30 days', 1000) >= 0 AS housekept;
SELECT after_id > 0 AS goes_on FROM novu.housekeeping_cursor WHERE table_name = 'events';
SELECT count(*) AS free_left FROM novu.events WHERE transaction_id = 'eng-free';
SELECT novu._housekeeping(interval '30 days', 1000) >= 0 AS housekept;
SELECT after_id AS from_the_oldest_again FROM novu.housekeeping_cursor WHERE table_name = 'events';
SELECT count(*) AS free_left, (SELECT count(*) FROM novu.events WHERE transaction_id LIKE 'eng-kept-%') AS kept
  FROM novu.events WHERE transaction_id = 'eng-free';

-- a resource error (class 53: out of memory, disk full) while starting one
-- trigger sets that trigger aside (pending, retried in a second or more) and the
-- others go on; while running one due step, that step is put off (due again in
-- 1 to 30 s) and the others go on.  Neither is failed for good.
CREATE FUNCTION public.eng_out_of_memory() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.transaction_id LIKE 'eng-oom%' THEN
        RAISE EXCEPTION 'simulated: out of memory' USING ERRCODE = 'out_of_memory';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER eng_oom BEFORE INSERT ON novu.step_runs FOR EACH ROW EXECUTE FUNCTION public.eng_out_of_memory();
SELECT novu.trigger('eng-delay', '"eng-a"', '{}', '{}', 'eng-oom-1') ->> 'status';
SELECT novu.trigger('eng-delay', '"eng-a"', '{}', '{}', 'eng-ok-1') ->> 'status';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, status, retry_at > clock_timestamp() AS set_aside FROM novu.events
 WHERE transaction_id IN ('eng-oom-1', 'eng-ok-1') ORDER BY 1;
SELECT transaction_id, status FROM novu.step_runs WHERE transaction_id IN ('eng-oom-1', 'eng-ok-1');
SELECT count(*) AS failed FROM novu.execution_details WHERE transaction_id = 'eng-oom-1' AND status = 'Failed';
DROP TRIGGER eng_oom ON novu.step_runs;
-- its time comes: it goes on as any other
UPDATE novu.events SET retry_at = now() - interval '1 second' WHERE transaction_id = 'eng-oom-1';
SELECT pg_temp.fan() > 0;
SELECT transaction_id, status FROM novu.step_runs WHERE transaction_id IN ('eng-oom-1', 'eng-ok-1') ORDER BY 1;
-- the steps after the delay: out of memory creating the messages of one of them
CREATE TRIGGER eng_oom BEFORE INSERT ON novu.deliveries FOR EACH ROW EXECUTE FUNCTION public.eng_out_of_memory();
SELECT pg_temp.due('eng-oom-1');
SELECT pg_temp.due('eng-ok-1');
SELECT pg_temp.cont();
SELECT transaction_id, status, due_at > clock_timestamp() AS put_off FROM novu.step_runs
 WHERE transaction_id IN ('eng-oom-1', 'eng-ok-1') ORDER BY 1;
SELECT transaction_id, count(*) AS messages FROM novu.deliveries WHERE transaction_id IN ('eng-oom-1', 'eng-ok-1') GROUP BY 1 ORDER BY 1;
DROP TRIGGER eng_oom ON novu.deliveries;
SELECT pg_temp.due('eng-oom-1');
SELECT pg_temp.cont();
SELECT transaction_id, count(*) AS messages FROM novu.deliveries WHERE transaction_id IN ('eng-oom-1', 'eng-ok-1') GROUP BY 1 ORDER BY 1;
DROP FUNCTION public.eng_out_of_memory();
