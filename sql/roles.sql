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

-- ... but not when someone else can act as the existing novu_worker: with a
-- password, an attribute beyond LOGIN or a member, CREATE EXTENSION stops, says
-- why and creates nothing; ALTER EXTENSION UPDATE checks the same
CREATE DATABASE novu_regress_third;
\c novu_regress_third
\set VERBOSITY default
\set SHOW_CONTEXT never
ALTER ROLE novu_worker PASSWORD 'known-to-someone';
CREATE EXTENSION novu;
SELECT count(*) AS novu_objects FROM pg_namespace WHERE nspname = 'novu';
ALTER ROLE novu_worker PASSWORD NULL;
ALTER ROLE novu_worker CREATEDB BYPASSRLS;
CREATE EXTENSION novu;
ALTER ROLE novu_worker NOCREATEDB NOBYPASSRLS;
CREATE ROLE novu_test_impostor LOGIN;
GRANT novu_worker TO novu_test_impostor;
CREATE EXTENSION novu;
SELECT count(*) AS novu_objects FROM pg_namespace WHERE nspname = 'novu';
REVOKE novu_worker FROM novu_test_impostor;
-- an update checks too (the role may have been made before the first install)
CREATE EXTENSION novu VERSION '0.16.0';
ALTER ROLE novu_worker PASSWORD 'known-to-someone';
ALTER EXTENSION novu UPDATE TO '0.17.0';
SELECT extversion FROM pg_extension WHERE extname = 'novu';
ALTER ROLE novu_worker PASSWORD NULL;
ALTER EXTENSION novu UPDATE TO '0.17.0';
SELECT extversion FROM pg_extension WHERE extname = 'novu';
DROP EXTENSION novu;
-- who can grant novu_admin or novu_app on is a warning: delegating that is the
-- DBA's choice, and the install goes on
GRANT novu_admin TO novu_test_impostor WITH ADMIN OPTION;
CREATE EXTENSION novu;
SELECT extversion FROM pg_extension WHERE extname = 'novu';
REVOKE novu_admin FROM novu_test_impostor;
-- a database not in UTF8: the providers' JSON would not be UTF-8
\c contrib_regression
CREATE DATABASE novu_regress_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c novu_regress_latin1
CREATE EXTENSION novu;
SELECT count(*) AS novu_objects FROM pg_namespace WHERE nspname = 'novu';
\c contrib_regression
DROP DATABASE novu_regress_latin1;
\set VERBOSITY terse
\set SHOW_CONTEXT errors
\c contrib_regression
DROP DATABASE novu_regress_third;
DROP ROLE novu_test_impostor;

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
