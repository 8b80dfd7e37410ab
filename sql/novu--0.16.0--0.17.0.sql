/*
 * novu--0.16.0--0.17.0.sql
 *		Upgrade from 0.16.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.17.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.16.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.17.0'" to load this file. \quit

-- 0.17.0 changes no object.  The install now checks the roles it reuses; an
-- update checks them too, since they may have been made before the first install.
-- A role that already exists was made by someone else, maybe by a role with
-- CREATEROLE that kept ADMIN OPTION on it (PostgreSQL 16 and later give the
-- creator that).  novu_worker is reused only if nobody else can act as it: no
-- password (nobody logs in as it), no member (nobody SETs ROLE to it or grants
-- it on), no attribute beyond LOGIN.  novu_app and novu_admin have members (the
-- applications); who may grant them on is said in a WARNING.
DO $reuse$
DECLARE
    w record;
    holders text;
BEGIN
    SELECT a.rolpassword IS NOT NULL AS has_password,
           pg_catalog.concat_ws(', ', CASE WHEN a.rolcreaterole THEN 'CREATEROLE' END,
                                CASE WHEN a.rolcreatedb THEN 'CREATEDB' END,
                                CASE WHEN a.rolreplication THEN 'REPLICATION' END,
                                CASE WHEN a.rolbypassrls THEN 'BYPASSRLS' END) AS attributes,
           (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(m.rolname), ', ' ORDER BY m.rolname)
              FROM pg_catalog.pg_auth_members am JOIN pg_catalog.pg_roles m ON m.oid = am.member
             WHERE am.roleid = a.oid) AS members
      INTO w
      FROM pg_catalog.pg_authid a WHERE a.rolname = 'novu_worker';
    IF w.has_password THEN
        RAISE EXCEPTION 'role "novu_worker" exists and has a password'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Whoever knows it could log in as the delivery workers.',
                  HINT = 'The workers connect without one: ALTER ROLE novu_worker PASSWORD NULL, then try again.';
    END IF;
    IF w.attributes <> '' THEN
        RAISE EXCEPTION 'role "novu_worker" exists with %', w.attributes
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The delivery workers get only what delivery needs.',
                  HINT = pg_catalog.format('ALTER ROLE novu_worker NO%s, then try again.',
                                           pg_catalog.replace(w.attributes, ', ', ' NO'));
    END IF;
    IF w.members IS NOT NULL THEN
        RAISE EXCEPTION 'role "novu_worker" exists and has members: %', w.members
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A member can act as the delivery workers (SET ROLE novu_worker), or grant the role on.',
                  HINT = 'Nobody needs to be a member of novu_worker: REVOKE novu_worker FROM each of them, then try again.';
    END IF;
    SELECT pg_catalog.string_agg(DISTINCT pg_catalog.quote_ident(m.rolname) || ' on ' || r.rolname, ', ')
      INTO holders
      FROM pg_catalog.pg_auth_members am
      JOIN pg_catalog.pg_roles r ON r.oid = am.roleid
      JOIN pg_catalog.pg_roles m ON m.oid = am.member
     WHERE r.rolname IN ('novu_app', 'novu_admin') AND am.admin_option AND NOT m.rolsuper;
    IF holders IS NOT NULL THEN
        RAISE WARNING 'roles that can grant the novu roles to anyone: %', holders
            USING DETAIL = 'ADMIN OPTION lets them make any role a member; novu_admin administers integrations and workflows.',
                  HINT = 'If that is not intended: REVOKE ADMIN OPTION FOR novu_admin FROM that_role (likewise novu_app).';
    END IF;
END
$reuse$;
