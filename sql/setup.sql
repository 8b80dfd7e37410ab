-- setup: create the extension and check its catalog-level promises.
CREATE EXTENSION novu;

SELECT extversion FROM pg_extension WHERE extname = 'novu';

-- the roles exist and novu_admin inherits novu_app
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('novu_admin', 'novu_app') ORDER BY 1;
SELECT pg_has_role('novu_admin', 'novu_app', 'MEMBER') AS admin_is_app;

-- every function is documented (\df+ shows it)
SELECT p.oid::regprocedure AS undocumented
  FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace
   AND obj_description(p.oid, 'pg_proc') IS NULL;

-- every SECURITY DEFINER function pins search_path (DESIGN 5): by a SET clause,
-- or novu.trigger alone in its C code, before its first SPI statement (the
-- clause cost 8% of a trigger; sql/security.sql's tripwire covers every path)
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace AND p.prosecdef
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
 ORDER BY 1::text;

-- functions that evaluate the caller's row run as the caller
SELECT p.proname, p.prosecdef FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace AND p.proname = 'trigger_on_row';

-- the delivery workers' role: no superuser, no inheritance, only delivery's rights
SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication
  FROM pg_roles WHERE rolname = 'novu_worker';
SELECT c.relname,
       has_table_privilege('novu_worker', c.oid, 'SELECT') AS sel,
       has_table_privilege('novu_worker', c.oid, 'INSERT') AS ins,
       has_table_privilege('novu_worker', c.oid, 'UPDATE') AS upd,
       has_table_privilege('novu_worker', c.oid, 'DELETE') AS del
  FROM pg_class c
 WHERE c.relnamespace = 'novu'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY 1;
-- ... and the columns it may write in tables it cannot write whole
SELECT c.relname, a.attname, has_column_privilege('novu_worker', c.oid, a.attnum, 'INSERT') AS ins,
       has_column_privilege('novu_worker', c.oid, a.attnum, 'UPDATE') AS upd
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 WHERE c.relnamespace = 'novu'::regnamespace AND a.attacl IS NOT NULL
 ORDER BY 1, 2;
SELECT p.oid::regprocedure AS worker_executable
  FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace AND has_function_privilege('novu_worker', p.oid, 'EXECUTE')
 ORDER BY 1::text;

-- PUBLIC can execute nothing
SELECT p.oid::regprocedure AS public_executable
  FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE');

-- what each role may call
SELECT p.proname,
       has_function_privilege('novu_app', p.oid, 'EXECUTE') AS app,
       has_function_privilege('novu_admin', p.oid, 'EXECUTE') AS admin
  FROM pg_proc p
 WHERE p.pronamespace = 'novu'::regnamespace AND p.proname !~ '^_'
 ORDER BY 1;

-- user tables and their sequences are kept by pg_dump
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS x(oid)
  JOIN pg_class c ON c.oid = x.oid
 WHERE e.extname = 'novu'
 ORDER BY 1;

-- the contract's views and their columns
SELECT attname FROM pg_attribute
 WHERE attrelid = 'novu.messages'::regclass AND attnum > 0 ORDER BY attnum;
SELECT 'novu.notifications'::regclass, 'novu.execution_details'::regclass;

-- the GUCs exist with their defaults
-- (the test clusters set novu.secret_key_file to a file of their own)
SELECT name, CASE WHEN name ~ 'secret_key_file$' AND setting <> '' THEN '(a key file)' ELSE setting END AS setting, unit
  FROM pg_settings WHERE name LIKE 'novu.%' ORDER BY 1;
-- the workers' time slice is bounded as the kernel bounds it (100 ms at most) and
-- takes time units; an out-of-range value is refused and nothing is written
ALTER SYSTEM SET novu.worker_time_slice = '200ms';
ALTER SYSTEM SET novu.worker_time_slice = -1;

-- a helper for the following tests: drop volatile timestamps from Novu objects
CREATE FUNCTION public.no_ts(j jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
$$ SELECT j - 'createdAt' - 'updatedAt' - 'lastOnlineAt' $$;
