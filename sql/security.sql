-- security: the attacks of the security review, written as attacks (DESIGN 5).
-- Each ordinary role (the database owner, a member of novu_app, a member of
-- novu_admin) tries to run its own code with the extension's rights; none may
-- become superuser, read secrets or act as another role.
\set VERBOSITY terse

CREATE ROLE sec_app LOGIN IN ROLE novu_app;
CREATE ROLE sec_admin LOGIN IN ROLE novu_admin;
CREATE ROLE sec_owner LOGIN;
SELECT novu.create_workflow('sec-wf', '[{"type": "push", "title": "t", "content": "c"}]') ->> 'workflowId';

------------------------------------------------------------------------------
-- Finding 1: trigger_on_row turned a row of the caller's own type into JSON
-- as the extension's owner, running the caller's cast to json as superuser.
------------------------------------------------------------------------------
SET ROLE sec_app;
CREATE TABLE pg_temp.seen (who text, was_super boolean);
CREATE TYPE pg_temp.mood AS ENUM ('sad', 'happy');
CREATE FUNCTION pg_temp.mood_json(m pg_temp.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.seen
    SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE sec_app SUPERUSER';
    END IF;
    RETURN pg_catalog.to_json(m::text);
END
$$;
CREATE CAST (pg_temp.mood AS json) WITH FUNCTION pg_temp.mood_json(pg_temp.mood);
CREATE TABLE pg_temp.feelings (user_id text, mood pg_temp.mood);
CREATE TRIGGER notify AFTER INSERT ON pg_temp.feelings
    FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row('sec-wf', 'user_id');
INSERT INTO pg_temp.feelings VALUES ('sec-user-1', 'sad');
-- the cast ran as the caller, not as the extension's owner
SELECT who, was_super FROM pg_temp.seen;
RESET ROLE;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname = 'sec_app';
SET ROLE sec_app;
DROP TABLE pg_temp.feelings, pg_temp.seen;
DROP CAST (pg_temp.mood AS json);
DROP FUNCTION pg_temp.mood_json(pg_temp.mood);
DROP TYPE pg_temp.mood;
RESET ROLE;
-- and the notification was still enqueued, with the cast's output in the payload
SELECT payload ->> 'mood' AS mood, recipients FROM novu.events
 WHERE workflow_id = 'sec-wf' ORDER BY id DESC LIMIT 1;

-- a role that may not trigger (no novu_app) cannot notify through a table either
CREATE TABLE public.sec_rows (user_id text);
GRANT INSERT ON public.sec_rows TO sec_owner, sec_app;
CREATE TRIGGER notify AFTER INSERT ON public.sec_rows
    FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row('sec-wf', 'user_id');
SET ROLE sec_owner;
INSERT INTO public.sec_rows VALUES ('sec-user-2');
RESET ROLE;
SET ROLE sec_app;
INSERT INTO public.sec_rows VALUES ('sec-user-2');
RESET ROLE;
SELECT count(*) FROM novu.events WHERE workflow_id = 'sec-wf' AND 'sec-user-2' = ANY (recipients);
DROP TABLE public.sec_rows;

------------------------------------------------------------------------------
-- The database owner: puts functions and operators in public, and sets the
-- database's search_path to find them first.  No definer function of the
-- extension resolves a name through it.
------------------------------------------------------------------------------
SELECT current_database() AS db \gset
ALTER DATABASE :"db" OWNER TO sec_owner;
SET ROLE sec_owner;
CREATE TABLE public.tripwire (who text);
GRANT INSERT ON public.tripwire TO PUBLIC;
-- text || text, jsonb -> text, text = text: the operators the definer functions use
CREATE FUNCTION public.trip_concat(a text, b text) RETURNS text LANGUAGE sql AS
$$ INSERT INTO public.tripwire SELECT current_user; SELECT a OPERATOR(pg_catalog.||) b $$;
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trip_concat);
CREATE FUNCTION public.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS
$$ INSERT INTO public.tripwire SELECT current_user; SELECT 'object' $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS
$$ INSERT INTO public.tripwire SELECT current_user; SELECT pg_catalog.now() $$;
-- the owner has no way into the schema
SELECT has_schema_privilege('novu', 'CREATE') AS can_create_in_novu;
SELECT count(*) AS readable_tables FROM pg_class c
 WHERE c.relnamespace = 'novu'::regnamespace AND has_table_privilege(c.oid, 'SELECT');
SELECT novu.identify('sec-owner-user');
RESET ROLE;
SET search_path = public, pg_catalog;
SET ROLE sec_app;
SELECT novu.identify('sec-user-3', '{"firstName": "Eve", "data": {"a": 1}}') ->> 'firstName';
SELECT novu.set_credentials('sec-user-3', 'fcm', '{"deviceTokens": ["sec-token-3"]}') ->> 'subscriberId';
SELECT novu.trigger('sec-wf', '"sec-user-3"', '{"x": 1}') ->> 'status';
SELECT novu.bulk_trigger('[{"workflowId": "sec-wf", "to": "sec-user-3"}]') -> 0 ->> 'status';
SELECT novu.get_preferences('sec-user-3') IS NOT NULL AS prefs;
RESET ROLE;
SET ROLE sec_admin;
SELECT novu.create_workflow('sec-wf-2', '[{"type": "push", "title": "a {{payload.x}}", "content": "c"}]') ->> 'workflowId';
SELECT novu.update_workflow('sec-wf-2', '{"name": "Two"}') ->> 'name';
RESET ROLE;
-- novu.trigger pins no search_path by a SET clause (its cost: 8% of a trigger);
-- it pins it itself before the statements it runs through SPI (topics, the
-- actor, inline profiles, subscriber objects to create): the operators those
-- use, first in the search_path, never run (nor in the caller's own queries below)
RESET search_path;
SELECT novu.create_topic('sec-topic') ->> 'key';
SELECT novu.add_topic_subscribers('sec-topic', '["sec-user-3"]') -> 'succeeded';
SET ROLE sec_owner;
CREATE FUNCTION public.trip_arrow(a jsonb, b text) RETURNS text LANGUAGE sql AS
$$ INSERT INTO public.tripwire SELECT current_user; SELECT a OPERATOR(pg_catalog.->>) b $$;
CREATE OPERATOR public.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.trip_arrow);
CREATE FUNCTION public.trip_exists(a jsonb, b text) RETURNS boolean LANGUAGE sql AS
$$ INSERT INTO public.tripwire SELECT current_user; SELECT a OPERATOR(pg_catalog.?) b $$;
CREATE OPERATOR public.? (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.trip_exists);
CREATE FUNCTION public.trip_eq(a text, b text) RETURNS boolean LANGUAGE sql AS
$$ INSERT INTO public.tripwire SELECT current_user; SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trip_eq);
RESET ROLE;
SET search_path = public, pg_catalog;
SET ROLE sec_app;
SELECT novu.trigger('sec-wf', '[{"subscriberId": "sec-user-4", "firstName": "Mallory"}, "sec-user-3"]',
                    actor => '{"subscriberId": "sec-actor", "firstName": "Trent", "data": {"a": 1}}') IS NOT NULL AS inline_profiles;
SELECT novu.trigger('sec-wf', '[{"subscriberId": "sec-user-5"}]', actor => '"sec-user-3"') IS NOT NULL AS objects_and_actor;
SELECT novu.trigger('sec-wf', '[{"type": "Topic", "topicKey": "sec-topic"}]') IS NOT NULL AS topic;
SELECT novu.trigger('sec-wf', '"sec-user-3"', '{"x": 2}') IS NOT NULL AS plain;
RESET ROLE;
RESET search_path;
SELECT subscriber_id, first_name FROM novu.subscribers WHERE subscriber_id IN ('sec-user-4', 'sec-user-5', 'sec-actor') ORDER BY 1;
-- nothing of the extension ran the owner's code
SELECT count(*) AS tripped FROM public.tripwire;
DROP TABLE public.tripwire;
DROP OPERATOR public.|| (text, text);
DROP OPERATOR public.->> (jsonb, text);
DROP OPERATOR public.? (jsonb, text);
DROP OPERATOR public.= (text, text);
DROP FUNCTION public.trip_concat(text, text), public.jsonb_typeof(jsonb), public.now(),
              public.trip_arrow(jsonb, text), public.trip_exists(jsonb, text), public.trip_eq(text, text);
ALTER DATABASE :"db" OWNER TO CURRENT_USER;

------------------------------------------------------------------------------
-- What each role can reach: nothing for PUBLIC, no secrets for the app role,
-- and no role of the extension is a superuser or can grant itself more.
------------------------------------------------------------------------------
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls
  FROM pg_roles r WHERE r.rolname IN ('novu_app', 'novu_admin', 'novu_worker') ORDER BY 1;
SELECT r.rolname,
       has_column_privilege(r.rolname, 'novu.integrations', 'credentials', 'SELECT') AS reads_credentials
  FROM pg_roles r WHERE r.rolname IN ('sec_app', 'sec_owner', 'novu_worker') ORDER BY 1;
-- roles granted to the extension's roles: only novu_app to novu_admin
SELECT m.roleid::regrole AS granted, m.member::regrole AS member
  FROM pg_auth_members m
 WHERE m.member::regrole::text IN ('novu_app', 'novu_admin', 'novu_worker')
 ORDER BY 1, 2;

-- The locks the workers wait for are rows of a table only they write (an
-- advisory lock, which any role can take, held by a role stalled a worker;
-- isolation concurrent_digest and claim_groups): neither the app role nor
-- the admin can lock one.
SET ROLE sec_app;
SELECT novu._lock_digest_keys(ARRAY[1]);
SELECT key_hash FROM novu.digest_locks FOR UPDATE;
RESET ROLE;
SET ROLE sec_admin;
SELECT key_hash FROM novu.digest_locks FOR UPDATE;
INSERT INTO novu.digest_locks VALUES (1);
RESET ROLE;

DROP ROLE sec_app, sec_admin, sec_owner;
