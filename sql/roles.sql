-- roles: what novu_app and novu_admin can do; secrets stay with the admin;
-- a second database can create the extension too (roles are cluster-wide).
\set VERBOSITY terse

CREATE ROLE novu_test_app LOGIN IN ROLE novu_app;
CREATE ROLE novu_test_admin LOGIN IN ROLE novu_admin;
CREATE ROLE novu_test_nobody LOGIN;

SET ROLE novu_test_app;
SELECT novu.identify('role-user', '{"firstName": "Role"}') ->> 'firstName';
SELECT novu.set_credentials('role-user', 'fcm', '{"deviceTokens": ["role-token"]}') #>> '{channels,0,credentials,deviceTokens,0}';
SELECT novu.trigger('order-shipped', '"role-user"', '{}', '{}', 'tx-role') ->> 'status';
SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-role';
SELECT count(*) > 0 FROM novu.subscribers;
-- the app role cannot read secrets nor change integrations and workflows
SELECT credentials FROM novu.integrations;
SELECT novu.list_integrations();
SELECT novu.create_integration('expo', '{}');
SELECT novu.delete_integration('fcm-main');
SELECT novu.create_workflow('app-made', '[]');
-- nor write tables directly
INSERT INTO novu.events (transaction_id, workflow_id) VALUES ('forged', 'order-shipped');
UPDATE novu.subscribers SET email = 'x@example.com';
-- nor call internal helpers
SELECT novu._upsert_subscriber('x', '{}');
RESET ROLE;

SET ROLE novu_test_admin;
SELECT jsonb_array_length(novu.list_integrations()) > 0 AS admin_lists;
SELECT count(*) > 0 AS admin_reads_secrets FROM novu.integrations WHERE credentials ? 'serviceAccount';
SELECT novu.create_workflow('admin-made', '[]') ->> 'workflowId';
SELECT novu.delete_workflow('admin-made');
-- the admin is an app too
SELECT novu.trigger('order-shipped', '"role-user"', '{}', '{}', 'tx-role-admin') ->> 'status';
RESET ROLE;

SET ROLE novu_test_nobody;
SELECT novu.identify('x');
SELECT novu.trigger('order-shipped', '"role-user"');
SELECT count(*) FROM novu.subscribers;
RESET ROLE;

-- a second database: CREATE EXTENSION works although the roles exist
CREATE DATABASE novu_regress_second;
\c novu_regress_second
CREATE EXTENSION novu;
SELECT extversion FROM pg_extension WHERE extname = 'novu';
\c contrib_regression
DROP DATABASE novu_regress_second;

DROP ROLE novu_test_app, novu_test_admin, novu_test_nobody;

-- DROP EXTENSION removes every object (the schema named in novu.control stays,
-- empty) but not the roles, which other databases may use
DROP EXTENSION novu;
SELECT count(*) AS objects_left FROM pg_class WHERE relnamespace = 'novu'::regnamespace;
SELECT count(*) AS functions_left FROM pg_proc WHERE pronamespace = 'novu'::regnamespace;
SELECT count(*) FROM pg_roles WHERE rolname IN ('novu_app', 'novu_admin');
CREATE EXTENSION novu;
SELECT count(*) FROM novu.subscribers;
DROP FUNCTION public.no_ts(jsonb);
