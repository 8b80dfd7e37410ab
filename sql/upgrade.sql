-- The upgrade path: a database on 0.1.0 with data, then ALTER EXTENSION UPDATE.
CREATE DATABASE novu_upgrade;
\c novu_upgrade
SET client_min_messages = warning;
CREATE EXTENSION novu VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'novu';
SELECT novu.create_integration('expo', '{}', 'expo-up');
SELECT (novu.identify('Up-1', '{"firstName": "Ada"}')) ->> 'subscriberId';
SELECT (novu.identify('up-0', '{"firstName": "Bob"}')) ->> 'subscriberId';
SELECT count(*) FROM (SELECT novu.set_credentials('Up-1', 'expo', '{"deviceTokens": ["ExponentPushToken[up1]"]}')) s;
SELECT (novu.create_workflow('up-wf', '[{"type": "push", "title": "Hi {{subscriber.firstName}}", "content": "c"}]')) ->> 'workflowId';
SELECT (novu.trigger('up-wf', '"Up-1"', '{}', '{}', 'up-tx-1')) ->> 'transactionId';
INSERT INTO novu.provider_stats (integration_id, sent) SELECT id, 7 FROM novu.integrations;
-- secrets as versions before 0.4.0 stored them: in clear
SELECT novu.create_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/up", "secretKey": "up-PLANTED-hmac"}', 'webhook-up');
SELECT novu.create_integration('one-signal', '{"applicationId": "up-app", "apiKey": "up-PLANTED-onesignal"}', 'onesignal-up');
SELECT identifier, strpos(credentials::text, 'PLANTED') > 0 AS secret_in_clear FROM novu.integrations ORDER BY 1;

ALTER EXTENSION novu UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'novu';

-- the data is all there
SELECT subscriber_id, first_name FROM novu.subscribers ORDER BY 1;
SELECT device_token FROM novu.device_tokens;
SELECT transaction_id, subscriber_id, status FROM novu.messages;
SELECT integration_identifier, sent, pending FROM novu.stat_providers ORDER BY 1;
-- identifiers compare byte by byte now: upper case sorts first
SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
 WHERE a.attrelid = 'novu.events'::regclass AND a.attname = 'transaction_id';
-- the worker functions have their new signatures, and PUBLIC cannot call them
SELECT p.oid::regprocedure FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace AND p.proname IN ('_fanout', '_expand', '_record', '_record_receipts', '_take_events')
 ORDER BY 1::text;
SELECT count(*) FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE');
-- the app role reads the recreated views
SET ROLE novu_app;
SELECT count(*) FROM novu.messages;
SELECT count(*) FROM novu.notifications;
SELECT count(*) FROM novu.stat_providers;
RESET ROLE;
-- the secrets left in clear are encrypted by the update (this cluster has a key file),
-- bound to their rows; the other settings stay as they were
SELECT identifier, strpos(credentials::text, 'PLANTED') > 0 AS secret_in_clear,
       COALESCE(credentials ->> 'secretKey', credentials ->> 'apiKey') ~ '^novu:v1:[0-9a-f]{16}:' AS sealed,
       credentials - 'secretKey' - 'apiKey' AS readable
  FROM novu.integrations ORDER BY 1;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'novu.integrations'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT count(*) AS upgrade_helper_left FROM pg_proc WHERE pronamespace = 'novu'::regnamespace AND proname = '_secrets_upgrade';
SELECT novu.reencrypt_secrets() AS nothing_left_to_encrypt;
-- 0.4.0: the workers' role, the caller's row evaluated as the caller, every
-- definer function pinned, jsonb inputs bounded
SELECT rolname, rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'novu_worker';
SELECT has_database_privilege('novu_worker', current_database(), 'CONNECT') AS worker_connects;
SELECT prosecdef AS trigger_on_row_is_definer FROM pg_proc WHERE oid = 'novu.trigger_on_row()'::regprocedure;
-- (0.15.0: novu.trigger pins it in its C code, see setup.sql)
SELECT count(*) AS unpinned_definers FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace AND p.prosecdef
   AND p.oid <> 'novu.trigger(text, jsonb, jsonb, jsonb, text, jsonb)'::regprocedure
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%');
\set VERBOSITY terse
SELECT novu.trigger('up-wf', '"up-0"', '{}', jsonb_build_object('fcm', jsonb_build_object('x', repeat('a', 70000))));
\set VERBOSITY default
-- and the API keeps working
SELECT (novu.trigger('up-wf', '"up-0"', '{}', '{}', 'up-tx-2')) ->> 'transactionId';
SELECT count(*) FROM novu.events;

\c contrib_regression
DROP DATABASE novu_upgrade;

-- 0.18.0: the feed references its subscriber; the rows of subscribers deleted
-- before (0.17.0 kept them) go with the update, the others stay
CREATE DATABASE novu_upgrade_feed;
\c novu_upgrade_feed
SET client_min_messages = warning;
CREATE EXTENSION novu VERSION '0.17.0';
SELECT (novu.identify('feed-kept')) ->> 'subscriberId';
SELECT (novu.identify('feed-gone')) ->> 'subscriberId';
INSERT INTO novu.in_app_messages (id, subscriber_id, transaction_id, workflow_id, content)
SELECT i, CASE WHEN i % 2 = 0 THEN 'feed-kept' ELSE 'feed-gone' END, 'feed-tx-' || i, 'wf', 'message ' || i
  FROM generate_series(1, 6) i;
SELECT novu.delete_subscriber('feed-gone');
SELECT subscriber_id, count(*) FROM novu.in_app_messages GROUP BY 1 ORDER BY 1;
ALTER EXTENSION novu UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'novu';
SELECT subscriber_id, count(*) FROM novu.in_app_messages GROUP BY 1 ORDER BY 1;
SELECT conname, confdeltype FROM pg_constraint WHERE conrelid = 'novu.in_app_messages'::regclass AND contype = 'f';
SELECT novu.delete_subscriber('feed-kept');
SELECT count(*) AS feed_rows_left FROM novu.in_app_messages;
\c contrib_regression
DROP DATABASE novu_upgrade_feed;
