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

ALTER EXTENSION novu UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'novu';

-- the data is all there
SELECT subscriber_id, first_name FROM novu.subscribers ORDER BY 1;
SELECT device_token FROM novu.device_tokens;
SELECT transaction_id, subscriber_id, status FROM novu.messages;
SELECT integration_identifier, sent, pending FROM novu.stat_providers;
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
-- and the API keeps working
SELECT (novu.trigger('up-wf', '"up-0"', '{}', '{}', 'up-tx-2')) ->> 'transactionId';
SELECT count(*) FROM novu.events;

\c contrib_regression
DROP DATABASE novu_upgrade;
