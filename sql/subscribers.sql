-- subscribers: identify (upsert), get, update, delete, list, bulk, online status.
\set VERBOSITY terse

SELECT jsonb_pretty(no_ts(novu.identify('user-1', '{"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "phone": "+13603963366", "locale": "en-US", "timezone": "Europe/London", "avatar": "https://example.com/a.png", "data": {"plan": "pro", "seats": 3}}')));

-- only given keys change; data is replaced whole; null clears a field
SELECT no_ts(novu.identify('user-1', '{"firstName": "Augusta", "data": {"plan": "free"}, "phone": null}'));
SELECT no_ts(novu.update_subscriber('user-1', '{"lastName": "King"}'));
SELECT no_ts(novu.identify('user-1')) ->> 'email' AS email_kept;

-- identify with an empty profile creates a bare subscriber
SELECT no_ts(novu.identify('user-2'));
SELECT no_ts(novu.get_subscriber('user-2')) ->> 'subscriberId';

-- createdAt stays, updatedAt moves, timestamps are ISO 8601 UTC
SELECT (j ->> 'createdAt') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' AS iso_created,
       (j ->> 'createdAt') <= (j ->> 'updatedAt') AS ordered
  FROM novu.get_subscriber('user-1') j;

-- online status: lastOnlineAt set when going offline
SELECT (s ->> 'isOnline')::boolean, s ->> 'lastOnlineAt' IS NULL AS no_last_online
  FROM novu.set_online_status('user-2', true) s;
SELECT (s ->> 'isOnline')::boolean, s ->> 'lastOnlineAt' IS NOT NULL AS has_last_online
  FROM novu.set_online_status('user-2', false) s;

-- list: {page, totalCount, pageSize, data}, creation order
SELECT count(novu.identify('user-' || i, jsonb_build_object('firstName', 'User ' || i))) AS identified
  FROM generate_series(3, 12) i;
SELECT l - 'data' AS page_info, jsonb_array_length(l -> 'data') AS n,
       l #>> '{data,0,subscriberId}' AS first_on_page
  FROM novu.list_subscribers(1, 5) l;
SELECT l - 'data' AS page_info, jsonb_array_length(l -> 'data') AS n FROM novu.list_subscribers() l;
SELECT jsonb_array_length(novu.list_subscribers(5, 10) -> 'data') AS beyond_last_page;

-- bulk: created / updated / failed, a bad item never fails the others
SELECT jsonb_pretty(novu.bulk_identify('[
    {"subscriberId": "bulk-1", "email": "b1@example.com"},
    {"subscriberId": "user-1", "firstName": "Ada"},
    {"subscriberId": "bulk-2", "email": "not-an-email"},
    {"email": "nobody@example.com"},
    "just a string",
    {"subscriberId": "bulk-3", "data": [1, 2]},
    {"subscriberId": "bulk-4", "locale": "en"}
]'));
SELECT subscriber_id FROM novu.subscribers WHERE subscriber_id LIKE 'bulk-%' ORDER BY 1;

-- delete: true, then false
SELECT novu.delete_subscriber('bulk-4'), novu.delete_subscriber('bulk-4');
-- delete: the id is checked as identify checks it, and nothing is written
SELECT novu.delete_subscriber('');
SELECT novu.delete_subscriber(NULL);
SELECT novu.delete_subscriber(E'ctl\x01char');
SELECT novu.delete_subscriber(repeat('x', 256));
SELECT count(*) AS deletions_written FROM novu.subscriber_deletions
 WHERE subscriber_id IN ('', E'ctl\x01char', repeat('x', 256));
-- an id stored before C1 controls were refused (0.17.0 let U+0085 through
-- novu.trigger) can still be deleted; an unknown one is refused
INSERT INTO novu.subscribers (subscriber_id) VALUES (E'legacy\u0085');
SELECT novu.delete_subscriber(E'legacy\u0085') AS legacy_deleted;
SELECT novu.delete_subscriber(E'legacy\u0085');

-- a rolled-back identify leaves nothing
BEGIN;
SELECT no_ts(novu.identify('ghost', '{"firstName": "Ghost"}')) ->> 'firstName';
ROLLBACK;
SELECT count(*) FROM novu.subscribers WHERE subscriber_id = 'ghost';

-- errors, each writes nothing
SELECT novu.identify('', '{}');
SELECT novu.identify(NULL, '{}');
SELECT novu.identify(repeat('x', 256), '{}');
SELECT novu.identify(repeat('é', 255), '{}') ->> 'subscriberId' = repeat('é', 255) AS ok_255_chars;
SELECT novu.identify(E'bad\nid', '{}');
SELECT novu.identify('user-1', '{"email": "ada@"}');
SELECT novu.identify('user-1', '{"locale": "english"}');
SELECT novu.identify('user-1', '{"data": "plan=pro"}');
SELECT novu.identify('user-1', '{"firstName": 42}');
SELECT novu.identify('user-1', '["not", "an", "object"]');
SELECT novu.identify('user-1', '{"nickname": "ada"}');
SELECT novu.identify('user-1', '{"subscriberId": "user-9"}');
SELECT novu.identify('user-1', '{"channels": {"providerId": "fcm"}}');
SELECT novu.identify('user-1', '{"channels": [{"providerId": "fcm"}]}');
SELECT novu.update_subscriber('nobody', '{"firstName": "X"}');
SELECT novu.get_subscriber('nobody');
SELECT novu.set_online_status('nobody', true);
SELECT novu.set_online_status('user-1', NULL);
SELECT novu.list_subscribers(-1, 10);
SELECT novu.list_subscribers(0, 101);
SELECT novu.list_subscribers(0, 0);
SELECT novu.bulk_identify('{"subscriberId": "x"}');
SELECT novu.bulk_identify((SELECT jsonb_agg(jsonb_build_object('subscriberId', 'many-' || i)) FROM generate_series(1, 501) i));
SELECT count(*) FROM novu.subscribers WHERE subscriber_id LIKE 'many-%';
SELECT no_ts(novu.get_subscriber('user-1')) - 'channels' AS unchanged_after_errors;
-- lists skip at most 1,000,000 rows
SELECT novu.list_subscribers(2147483647, 100);
SELECT novu.list_topics(2147483647, 100);
SELECT novu.create_topic('paging-topic') ->> 'key' AS topic;
SELECT novu.topic_subscribers('paging-topic', 2147483647, 100);
SELECT novu.delete_topic('paging-topic');
-- a caller's standard_conforming_strings does not change the checks of definer
-- functions (their patterns are read as written); a new session compiles them
\c
SET standard_conforming_strings = off;
SELECT novu.identify('scs-user', jsonb_build_object('email', 'a@b' || chr(10) || 'cc'));
SELECT novu.identify('scs-user', '{"email": "x@y<zz"}');
SELECT novu.identify('scs-user', '{"email": "scs@example.com"}') ->> 'email' AS email;
SELECT novu._delay_time('2099-01-01T00:00:00') = '2099-01-01 00:00:00+00' AS delay_time_read;
RESET standard_conforming_strings;
-- a NULL or empty id is an error naming the field, not "not found" or false
SELECT novu.get_subscriber(NULL);
SELECT novu.set_online_status(NULL, true);
SELECT novu.get_preferences('');
SELECT novu.set_preference(NULL, NULL, false);
SELECT novu.delete_credentials(NULL, 'fcm');
SELECT novu.remove_device_token('user-1', 'fcm', NULL);
SELECT novu.remove_device_token(NULL, 'fcm', 'tok');
SELECT novu.cancel(NULL);
SELECT novu.cancel('');
SELECT novu.cancel(repeat('x', 256));
