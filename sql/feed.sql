-- feed: the in_app step (validation, one message per notification, preferences),
-- the workers' in_app sink (novu._store_in_app, driven here by hand: no worker
-- serves this database), the feed functions (shapes, paging, filters, marks,
-- actions, cross-subscriber refusal) and the activity API (notifications,
-- graph stats, messages, deletes), with their errors and roles.
\set VERBOSITY terse

-- err(statement): 'ok', or the error as SQLSTATE: message (hint)
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; h text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
    -- message ids come from a sequence other tests advance too
    RETURN regexp_replace(st || ': ' || msg || COALESCE(' (' || NULLIF(h, '') || ')', ''), 'message "[0-9]+"', 'message "<id>"');
END
$$;

-- fan out pending triggers and "deliver" the in_app messages of fd-* workflows
-- as the worker does: render subject, content and the cta's url, then the sink
CREATE FUNCTION pg_temp.deliver() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS leased AS SELECT * FROM novu._fanout(1, 1, 1, 0, 1) WITH NO DATA;
    TRUNCATE leased;
    INSERT INTO leased SELECT * FROM novu._fanout(1000, 1000, 60000, 0, 1) x
     WHERE x.id IS NOT NULL AND x.workflow_id LIKE 'fd-%' AND x.step ->> 'type' = 'in_app';
    SELECT novu._store_in_app(
               array_agg(l.id ORDER BY l.id), array_agg(l.attempts ORDER BY l.id),
               array_agg(novu.render(l.step ->> 'subject', c.ctx) ORDER BY l.id),
               array_agg(novu.render(l.step ->> 'content', c.ctx) ORDER BY l.id),
               array_agg(novu.render(l.step #>> '{cta,data,url}', c.ctx) ORDER BY l.id))
      INTO n
      FROM leased l
      CROSS JOIN LATERAL (SELECT jsonb_build_object('payload', l.payload, 'subscriber', l.subscriber,
                                                    'actor', l.actor) AS ctx) c;
    RETURN COALESCE(n, 0);
END
$$;

------------------------------------------------------------------------------
-- the in_app step: accepted shapes and clear errors
------------------------------------------------------------------------------
SELECT novu.create_workflow('fd-comment', '[{"type": "in_app", "subject": "New comment",
    "content": "{{actor.firstName}} commented on {{payload.post}} (#{{payload.n}})",
    "cta": {"type": "redirect", "data": {"url": "/posts/{{payload.postId}}"}},
    "actions": [{"type": "primary", "content": "Reply"}, {"type": "secondary", "content": "Dismiss"}],
    "feedIdentifier": "social"}]') -> 'steps' -> 0 ->> 'type';
SELECT novu.create_workflow('fd-plain', '[{"type": "in_app", "content": "Hello {{subscriber.firstName}}", "avatar": false}]') ->> 'workflowId';
SELECT novu.create_workflow('fd-icon', '[{"type": "in_app", "content": "System notice", "avatar": "https://cdn.example.com/i.png"}]') ->> 'workflowId';
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app"}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": ""}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "title": "t"}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "data": {}}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "providers": ["fcm"]}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "{% if %}"}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "subject": 3}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "subject": "{{ x"}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "avatar": 1}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "avatar": "http://x.example.com/a.png"}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "cta": {"type": "open", "data": {"url": "/x"}}}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "cta": {"type": "redirect", "data": {}}}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "cta": {"type": "redirect", "data": {"url": "/{{x"}}}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "actions": {}}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "actions": [{"type": "tertiary", "content": "x"}]}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "actions": [{"type": "primary"}]}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "actions": [{"type": "primary", "content": "a"}, {"type": "primary", "content": "b"}]}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "in_app", "content": "c", "feedIdentifier": 7}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "push", "content": "c", "subject": "s"}]')$$);
SELECT pg_temp.err($$SELECT novu.create_workflow('fd-bad', '[{"type": "chat", "content": "c", "cta": {"type": "redirect", "data": {"url": "/x"}}}]')$$);
SELECT count(*) AS bad_workflows FROM novu.workflows WHERE workflow_id = 'fd-bad';

------------------------------------------------------------------------------
-- triggers reach the feed: one message per notification, rendered, with the
-- step's cta, actions, avatar and feed id, the payload and the actor
------------------------------------------------------------------------------
SELECT count(*) FROM (SELECT novu.identify(s, jsonb_build_object('firstName', initcap(substr(s, 4)), 'email', substr(s, 4) || '@example.com'))
                        FROM unnest(ARRAY['fd-ann', 'fd-eve', 'fd-off']) s) x;
SELECT novu.identify('fd-bob', '{"firstName": "Bob", "lastName": "B", "email": "bob@example.com", "avatar": "https://cdn.example.com/bob.png"}') ->> 'subscriberId';
SELECT count(*) FROM (SELECT novu.trigger('fd-comment', '"fd-ann"', jsonb_build_object('post', 'Post ' || i, 'postId', i, 'n', i),
                                          '{}', 'fd-tx-' || i, '"fd-bob"') FROM generate_series(1, 12) i) x;
SELECT novu.trigger('fd-plain', '["fd-eve", "fd-ann"]', '{"kind": "plain"}', '{}', 'fd-tx-plain') ->> 'status';
SELECT novu.trigger('fd-icon', '"fd-eve"', '{}', '{}', 'fd-tx-icon') ->> 'status';
-- preferences apply per channel: fd-off turned in_app off
SELECT novu.set_preference('fd-off', NULL, NULL, '{"in_app": false}') -> 'preference' -> 'channels' -> 'in_app';
SELECT novu.trigger('fd-plain', '"fd-off"', '{}', '{}', 'fd-tx-off') ->> 'status';
SELECT pg_temp.deliver() AS stored;
-- stored once: the same lease again stores nothing
SELECT novu._store_in_app(array_agg(id), array_agg(attempts), array_agg(NULL::text), array_agg('again'::text), array_agg(NULL::text)) AS stored_again
  FROM leased;
SELECT subscriber_id, channel, status, integration_id IS NULL AS no_integration, device_token IS NULL AS no_target, last_error, count(*)
  FROM novu.deliveries WHERE workflow_id LIKE 'fd-%' GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2;
SELECT detail, status, channel, count(*) FROM novu.execution_details WHERE workflow_id LIKE 'fd-%' GROUP BY 1, 2, 3 ORDER BY 1;
SELECT count(*) AS feed_rows, count(DISTINCT id) AS distinct_ids FROM novu.in_app_messages;
-- ann's newest item, whole (ids and times checked for form, then left out)
SELECT (i ->> '_id') ~ '^[0-9]+$' AS id_is_text,
       (i ->> 'createdAt') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' AS iso_created,
       jsonb_pretty(i - '_id' - 'createdAt' - 'updatedAt') AS item
  FROM novu.feed('fd-ann', 0, 1, NULL, NULL, '{"n": 12}') f, jsonb_array_elements(f -> 'data') i;
SELECT i ->> 'content' AS content, i ->> 'subject' AS subject, i ->> 'avatar' AS avatar, i -> 'actor' AS actor,
       i -> 'cta' -> 'data' AS cta_data, i ->> '_feedId' AS feed_id
  FROM novu.feed('fd-eve') f, jsonb_array_elements(f -> 'data') i ORDER BY 1;

------------------------------------------------------------------------------
-- feed: paging, filters, errors
------------------------------------------------------------------------------
SELECT novu.feed('fd-ann', 0, 5) - 'data' AS page0, jsonb_path_query_array(novu.feed('fd-ann', 0, 5), '$.data[*].payload.n') AS ns;
SELECT novu.feed('fd-ann', 1, 5) - 'data' AS page1, jsonb_path_query_array(novu.feed('fd-ann', 1, 5), '$.data[*].payload.n') AS ns;
SELECT novu.feed('fd-ann', 2, 5) - 'data' AS page2, jsonb_path_query_array(novu.feed('fd-ann', 2, 5), '$.data[*].content') AS contents;
SELECT novu.feed('fd-ann', 3, 5) AS past_the_end;
SELECT novu.feed('fd-ann') -> 'pageSize' AS default_page_size, jsonb_array_length(novu.feed('fd-ann') -> 'data') AS default_items;
SELECT novu.feed('fd-ann', payload => '{"kind": "plain"}') -> 'totalCount' AS plain,
       novu.feed('fd-ann', payload => '{"post": "Post 3"}') -> 'totalCount' AS post3,
       novu.feed('fd-ann', payload => '{"nothing": 1}') -> 'totalCount' AS none;
-- totalCount is counted up to 1000, or one past the page asked for; hasMore stays exact
SELECT novu.identify('fd-long') ->> 'subscriberId';
INSERT INTO novu.in_app_messages (id, subscriber_id, transaction_id, workflow_id, content, created_at)
SELECT -i, 'fd-long', 'fd-long-' || i, 'fd-plain', 'old ' || i, now() - i * interval '1 minute' FROM generate_series(1, 1005) i;
SELECT novu.feed('fd-long') - 'data' AS first_page, novu.feed('fd-long', 99, 10) - 'data' AS page_99,
       novu.feed('fd-long', 100, 10) - 'data' AS last_page, novu.feed('fd-long', 100, 10) #>> '{data,4,content}' AS oldest;
SELECT novu.unseen_count('fd-long') AS capped_at_100;
DELETE FROM novu.in_app_messages WHERE subscriber_id = 'fd-long';
SELECT pg_temp.err($$SELECT novu.feed('fd-nobody')$$);
SELECT pg_temp.err($$SELECT novu.feed('')$$);
SELECT pg_temp.err($$SELECT novu.feed(NULL)$$);
SELECT pg_temp.err($$SELECT novu.feed('fd-ann', -1)$$);
SELECT pg_temp.err($$SELECT novu.feed('fd-ann', 0, 0)$$);
SELECT pg_temp.err($$SELECT novu.feed('fd-ann', 0, 101)$$);
SELECT pg_temp.err($$SELECT novu.feed('fd-ann', 200000, 10)$$);
SELECT pg_temp.err($$SELECT novu.feed('fd-ann', payload => '[1]')$$);

------------------------------------------------------------------------------
-- unseen count: up to the limit
------------------------------------------------------------------------------
SELECT novu.unseen_count('fd-ann') AS unseen, novu.unseen_count('fd-ann', false, 5) AS up_to_5,
       novu.unseen_count('fd-ann', true) AS seen, novu.unseen_count('fd-off') AS off;
SELECT pg_temp.err($$SELECT novu.unseen_count('fd-ann', NULL)$$);
SELECT pg_temp.err($$SELECT novu.unseen_count('fd-ann', false, 0)$$);
SELECT pg_temp.err($$SELECT novu.unseen_count('fd-ann', false, 101)$$);
SELECT pg_temp.err($$SELECT novu.unseen_count('fd-nobody')$$);

------------------------------------------------------------------------------
-- marks: per subscriber; another subscriber's id is an error, never a write
------------------------------------------------------------------------------
CREATE TEMP TABLE ids AS
SELECT m.subscriber_id AS sub, m.payload ->> 'n' AS n, m.workflow_id AS wf, m.id::text AS id FROM novu.in_app_messages m;
SELECT jsonb_path_query_array(novu.mark_as('fd-ann', to_jsonb((SELECT id FROM ids WHERE n = '1')), '{"seen": true}'),
                              '$[*] ? (@.seen == true && @.lastSeenDate != null && @.read == false && @.lastReadDate == null).payload.n') AS marked_seen;
SELECT novu.unseen_count('fd-ann') AS unseen_after_one;
-- an array of ids, numbers or strings; read does not imply seen
SELECT jsonb_path_query_array(novu.mark_as('fd-ann', jsonb_build_array((SELECT id FROM ids WHERE n = '2'), (SELECT id::bigint FROM ids WHERE n = '3')),
                                           '{"read": true}'), '$[*] ? (@.read == true && @.seen == false).payload.n') AS marked_read;
SELECT jsonb_array_length(novu.mark_as('fd-ann', jsonb_build_array((SELECT id FROM ids WHERE n = '2'), (SELECT id FROM ids WHERE n = '2')),
                                       '{"read": true, "seen": true}')) AS duplicate_ids_once;
SELECT novu.feed('fd-ann', seen => true) -> 'totalCount' AS seen, novu.feed('fd-ann', read => true) -> 'totalCount' AS read,
       novu.feed('fd-ann', seen => false, read => true) -> 'totalCount' AS read_unseen,
       novu.feed('fd-ann', 0, 1, false) -> 'hasMore' AS unseen_has_more;
-- eve's message through ann: refused, and nothing written (also for a mixed list)
SELECT pg_temp.err(format($$SELECT novu.mark_as('fd-ann', '%s', '{"seen": true}')$$, to_jsonb((SELECT id FROM ids WHERE sub = 'fd-eve' AND wf = 'fd-plain'))));
SELECT pg_temp.err(format($$SELECT novu.mark_as('fd-ann', '%s', '{"seen": true}')$$,
                          jsonb_build_array((SELECT id FROM ids WHERE n = '4'), (SELECT id FROM ids WHERE sub = 'fd-eve' AND wf = 'fd-plain'))));
SELECT pg_temp.err(format($$SELECT novu.mark_seen('fd-ann', '%s')$$, (SELECT id FROM ids WHERE sub = 'fd-eve' AND wf = 'fd-plain')));
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '"999999999"', '{"seen": true}')$$);
SELECT m.subscriber_id, m.payload ->> 'n' AS n, m.seen, m.read FROM novu.in_app_messages m
 WHERE m.subscriber_id = 'fd-eve' OR m.payload ->> 'n' = '4' ORDER BY 1, 2;
-- bad marks and ids
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '"1"', '{}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '"1"', '{"seen": "yes"}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '"1"', '{"archived": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '"1"', '"done"')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '"1"', NULL)$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '"abc"', '{"seen": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '[]', '{"seen": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '["1", true]', '{"seen": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', '-1', '{"seen": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', NULL, '{"seen": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', (SELECT jsonb_agg(g::text) FROM generate_series(1, 1001) g), '{"seen": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_as('fd-nobody', '"1"', '{"seen": true}')$$);
SELECT pg_temp.err($$SELECT novu.mark_seen('fd-ann', NULL)$$);
-- mark_seen returns the message
SELECT m ->> 'seen' AS seen, m -> 'payload' ->> 'n' AS n FROM novu.mark_seen('fd-ann', (SELECT id FROM ids WHERE n = '5')) m;

-- mark_all_as: every message of the subscriber (or of one feed), counted once
SELECT novu.mark_all_as('fd-ann', '{"read": true}', 'no-such-feed') AS other_feed,
       novu.mark_all_as('fd-ann', '{"read": true}', 'social') AS social_read;
SELECT novu.mark_all_as('fd-ann', '"seen"') AS all_seen, novu.mark_all_as('fd-ann', '"seen"') AS again;
SELECT novu.unseen_count('fd-ann') AS unseen;
SELECT novu.mark_all_as('fd-ann', '{"seen": false, "read": false}') AS all_back;
SELECT novu.unseen_count('fd-ann') AS unseen, novu.feed('fd-ann', read => true) -> 'totalCount' AS read;
SELECT pg_temp.err($$SELECT novu.mark_all_as('fd-ann', '"archive"')$$);
SELECT pg_temp.err($$SELECT novu.mark_all_as('fd-ann', '{"seen": true}', '')$$);
SELECT pg_temp.err($$SELECT novu.mark_all_as('fd-nobody', '"seen"')$$);
SELECT novu.unseen_count('fd-eve') AS eve_untouched;

-- actions: status and result of a button the message has
SELECT jsonb_pretty(novu.mark_action('fd-ann', (SELECT id FROM ids WHERE n = '6'), 'primary', 'done', '{"reply": "thanks"}') -> 'cta' -> 'action') AS action;
SELECT novu.mark_action('fd-ann', (SELECT id FROM ids WHERE n = '6'), 'secondary', 'pending') #> '{cta,action,result}' AS result;
SELECT pg_temp.err(format($$SELECT novu.mark_action('fd-eve', '%s', 'primary', 'done')$$, (SELECT id FROM ids WHERE sub = 'fd-eve' AND wf = 'fd-plain')));
SELECT pg_temp.err(format($$SELECT novu.mark_action('fd-eve', '%s', 'primary', 'done')$$, (SELECT id FROM ids WHERE n = '6')));
SELECT pg_temp.err(format($$SELECT novu.mark_action('fd-ann', '%s', 'tertiary', 'done')$$, (SELECT id FROM ids WHERE n = '6')));
SELECT pg_temp.err(format($$SELECT novu.mark_action('fd-ann', '%s', 'primary', 'clicked')$$, (SELECT id FROM ids WHERE n = '6')));
SELECT pg_temp.err(format($$SELECT novu.mark_action('fd-ann', '%s', 'primary', 'done', '[]')$$, (SELECT id FROM ids WHERE n = '6')));
SELECT pg_temp.err(format($$SELECT novu.mark_action('fd-ann', '%s', 'primary', 'done', NULL)$$, (SELECT id FROM ids WHERE n = '6')));
SELECT pg_temp.err($$SELECT novu.mark_action('fd-ann', 'x', 'primary', 'done')$$);
SELECT m.cta #>> '{action,status}' AS status, m.cta #> '{action,result}' AS result FROM novu.in_app_messages m
 WHERE m.id = (SELECT id::bigint FROM ids WHERE n = '6');

------------------------------------------------------------------------------
-- activity: notifications, one notification with its jobs, graph stats
------------------------------------------------------------------------------
SELECT novu.list_notifications(templates => '["fd-comment"]') - 'data' AS comment_page0,
       jsonb_path_query_array(novu.list_notifications(templates => '["fd-comment"]', page => 1), '$.data[*].transactionId') AS page1;
SELECT jsonb_pretty(n - 'createdAt') FROM jsonb_array_elements(novu.list_notifications(transaction_id => 'fd-tx-icon') -> 'data') n;
SELECT jsonb_path_query_array(novu.list_notifications(transaction_id => 'fd-tx-plain'), '$.data[*]._id') AS plain_ids;
SELECT novu.list_notifications(channels => '["in_app"]', search => 'fd-tx-p') -> 'totalCount' AS search_tx,
       novu.list_notifications(search => 'fd-eve', templates => '["fd-plain", "fd-icon"]') -> 'totalCount' AS search_sub,
       novu.list_notifications(emails => '["off@example.com"]') -> 'totalCount' AS by_email,
       novu.list_notifications(channels => '["chat"]', templates => '["fd-comment"]') -> 'totalCount' AS no_chat;
-- a search reads the whole history; its page is newest first too (by outbox id)
SELECT jsonb_path_query_array(novu.list_notifications(search => 'fd-tx-1', templates => '["fd-comment"]'), '$.data[*].transactionId') AS search_page;
SELECT pg_temp.err($$SELECT novu.list_notifications(channels => '["fax"]')$$);
SELECT pg_temp.err($$SELECT novu.list_notifications(channels => '"in_app"')$$);
SELECT pg_temp.err($$SELECT novu.list_notifications(templates => '[1]')$$);
SELECT pg_temp.err($$SELECT novu.list_notifications(search => '')$$);
SELECT pg_temp.err($$SELECT novu.list_notifications(page => -1)$$);
SELECT pg_temp.err($$SELECT novu.list_notifications(transaction_id => '')$$);
-- one notification: subscriber, template and each step's job
SELECT jsonb_pretty(jsonb_set(n - 'createdAt', '{jobs}',
           (SELECT jsonb_agg((j - '_id') || jsonb_build_object(
                      'messages', (SELECT jsonb_agg(m - '_id' - 'createdAt' - 'sentAt') FROM jsonb_array_elements(j -> 'messages') m),
                      'executionDetails', (SELECT jsonb_agg(e ->> 'detail') FROM jsonb_array_elements(j -> 'executionDetails') e)))
              FROM jsonb_array_elements(n -> 'jobs') j)))
  FROM novu.get_notification('fd-tx-off:fd-off') n;
SELECT jsonb_path_query_array(novu.get_notification('fd-tx-3:fd-ann'), '$.jobs[*].status') AS job_status,
       jsonb_path_query_array(novu.get_notification('fd-tx-3:fd-ann'), '$.jobs[*].executionDetails[*].detail') AS details;
SELECT pg_temp.err($$SELECT novu.get_notification('fd-tx-3:fd-eve')$$);
SELECT pg_temp.err($$SELECT novu.get_notification('fd-tx-3')$$);
SELECT pg_temp.err($$SELECT novu.get_notification(NULL)$$);
-- ids with ':' in both parts: resolved when one split matches, refused when two do
SELECT novu.trigger('fd-plain', '"x:fd"', '{}', '{}', 'fd:a:b') ->> 'status';
SELECT novu.get_notification('fd:a:b:x:fd') ->> 'transactionId' AS resolved;
SELECT novu.trigger('fd-plain', '"b:x:fd"', '{}', '{}', 'fd:a') ->> 'status';
SELECT pg_temp.err($$SELECT novu.get_notification('fd:a:b:x:fd')$$);
-- graph stats: today's notifications of this test, per workflow and channel
SELECT (d ->> '_id') = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS today,
       (d ->> 'count')::integer >= 18 AS counted,
       d -> 'templates' @> '["fd-comment", "fd-icon", "fd-plain"]' AS templates,
       d -> 'channels' @> '["in_app"]' AS channels
  FROM jsonb_array_elements(novu.notification_graph_stats()) d;
SELECT jsonb_array_length(novu.notification_graph_stats(1)) AS days_with_notifications;
SELECT pg_temp.err($$SELECT novu.notification_graph_stats(0)$$);
SELECT pg_temp.err($$SELECT novu.notification_graph_stats(367)$$);

------------------------------------------------------------------------------
-- messages: list (any channel, in_app with its feed fields), delete
------------------------------------------------------------------------------
SELECT novu.list_messages('in_app', 'fd-eve') - 'data' AS eve_page,
       jsonb_path_query_array(novu.list_messages('in_app', 'fd-eve'), '$.data[*].content') AS contents;
SELECT jsonb_pretty(m - '_id' - 'createdAt' - 'updatedAt' - 'sentAt')
  FROM jsonb_array_elements(novu.list_messages(transaction_ids => '["fd-tx-icon"]') -> 'data') m;
SELECT jsonb_path_query_array(novu.list_messages(transaction_ids => '["fd-tx-off", "fd-tx-plain"]'), '$.data[*].status') AS statuses,
       novu.list_messages(subscriber_id => 'fd-ann', page => 1, page_size => 10) -> 'hasMore' AS ann_more,
       novu.list_messages(subscriber_id => 'fd-ann', page => 1, page_size => 10) -> 'totalCount' AS ann_total;
SELECT pg_temp.err($$SELECT novu.list_messages('email')$$);
SELECT pg_temp.err($$SELECT novu.list_messages(subscriber_id => '')$$);
SELECT pg_temp.err($$SELECT novu.list_messages(transaction_ids => '{}')$$);
SELECT pg_temp.err($$SELECT novu.list_messages(page_size => 1000)$$);
SELECT novu.delete_message((SELECT id FROM ids WHERE n = '12')) AS deleted,
       novu.delete_message((SELECT id FROM ids WHERE n = '12')) AS again;
SELECT novu.feed('fd-ann') -> 'totalCount' AS ann_total, count(*) AS deliveries FROM novu.deliveries WHERE transaction_id = 'fd-tx-12';
SELECT pg_temp.err($$SELECT novu.delete_message('twelve')$$);
SELECT pg_temp.err($$SELECT novu.delete_message(NULL)$$);
SELECT novu.delete_messages('fd-tx-plain') AS deleted, novu.delete_messages('fd-tx-plain') AS again;
SELECT novu.feed('fd-ann') -> 'totalCount' AS ann_total, novu.feed('fd-eve') -> 'totalCount' AS eve_total;
SELECT pg_temp.err($$SELECT novu.delete_messages('')$$);

------------------------------------------------------------------------------
-- delete_subscriber takes the feed with it: a subscriber made later with the
-- same id starts with an empty feed; a message claimed before the deletion and
-- stored after it is canceled, not stored
------------------------------------------------------------------------------
SELECT novu.identify('fd-gone', '{"firstName": "Gone"}') ->> 'subscriberId';
SELECT novu.trigger('fd-plain', '"fd-gone"', '{}', '{}', 'fd-tx-gone-1') ->> 'status';
SELECT pg_temp.deliver() AS delivered;
SELECT novu.feed('fd-gone') -> 'totalCount' AS before, novu.feed('fd-gone') #>> '{data,0,content}' AS content;
SELECT novu.trigger('fd-plain', '"fd-gone"', '{}', '{}', 'fd-tx-gone-2') ->> 'status';
CREATE TEMP TABLE gone_lease AS
    SELECT * FROM novu._fanout(1000, 1000, 60000, 0, 1) x WHERE x.id IS NOT NULL AND x.workflow_id LIKE 'fd-%';
SELECT count(*) AS claimed FROM gone_lease;
SELECT novu.delete_subscriber('fd-gone');
SELECT count(*) AS feed_rows_left FROM novu.in_app_messages WHERE subscriber_id = 'fd-gone';
SELECT novu._store_in_app(array_agg(id), array_agg(attempts), array_agg('s'::text), array_agg('stored after the deletion'::text),
                          array_agg(NULL::text)) AS stored
  FROM gone_lease;
SELECT status, last_error FROM novu.deliveries WHERE transaction_id = 'fd-tx-gone-2';
SELECT detail FROM novu.execution_details WHERE transaction_id = 'fd-tx-gone-2' AND detail LIKE 'Message canceled%';
SELECT novu.identify('fd-gone') ->> 'subscriberId';
SELECT novu.feed('fd-gone') -> 'totalCount' AS new_subscriber_total, novu.unseen_count('fd-gone') AS new_subscriber_unseen;

------------------------------------------------------------------------------
-- roles: the app role calls the feed and activity functions; others cannot
------------------------------------------------------------------------------
CREATE ROLE novu_feed_app LOGIN IN ROLE novu_app;
CREATE ROLE novu_feed_nobody LOGIN;
SET ROLE novu_feed_app;
SELECT novu.unseen_count('fd-ann') AS app_unseen, novu.feed('fd-ann', 0, 1) -> 'totalCount' AS app_total,
       jsonb_typeof(novu.list_notifications()) AS app_list, jsonb_typeof(novu.list_messages()) AS app_messages;
SELECT novu.mark_all_as('fd-ann', '"read"') AS app_marked;
UPDATE novu.in_app_messages SET seen = true;
SELECT novu._store_in_app('{1}', '{1}', '{x}', '{x}', '{x}');
RESET ROLE;
SET ROLE novu_feed_nobody;
SELECT novu.feed('fd-ann');
SELECT novu.mark_as('fd-ann', '"1"', '{"seen": true}');
SELECT count(*) FROM novu.in_app_messages;
RESET ROLE;
SELECT has_table_privilege('novu_worker', 'novu.in_app_messages', 'INSERT') AS worker_inserts,
       has_table_privilege('novu_worker', 'novu.in_app_messages', 'UPDATE') AS worker_updates,
       has_function_privilege('novu_worker', 'novu._store_in_app(bigint[], integer[], text[], text[], text[])', 'EXECUTE') AS worker_stores,
       has_function_privilege('novu_app', 'novu._store_in_app(bigint[], integer[], text[], text[], text[])', 'EXECUTE') AS app_stores;
DROP ROLE novu_feed_app, novu_feed_nobody;
-- attack: a payload filter with arrays (array containment compares every element
-- with every element, for every message examined); nested objects stay allowed
SELECT novu.feed('fd-ann', payload => (SELECT jsonb_build_object('tags', jsonb_agg(i)) FROM generate_series(1, 2000) i));
SELECT novu.feed('fd-ann', payload => '{"post": {"tags": []}}');
SELECT novu.feed('fd-ann', payload => '{"post": {"id": 3}}') -> 'totalCount' AS nested_ok;
-- mark_as answers with the messages (content and payload): at most a page of ids
SELECT pg_temp.err($$SELECT novu.mark_as('fd-ann', (SELECT jsonb_agg(i::text) FROM generate_series(1, 101) i), '{"seen": true}')$$);
