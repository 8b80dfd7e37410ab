-- test/schema/describe.sql: a deterministic text description of the novu extension's schema.
--
-- pg_dump skips extension member objects, so test/schema/compare.sh compares two
-- databases with this instead.  It describes every member of the extension
-- (pg_depend deptype 'e') and everything in schema novu: functions, tables and
-- their columns, constraints, indexes, triggers, policies, views, sequences,
-- types, comments, privileges (owner-independent: the owner's name reads
-- OWNER, and a NULL ACL reads as the default it stands for), the roles the
-- extension creates (novu_*) with their memberships, default privileges, the
-- current database's privileges (the extension grants CONNECT), and the
-- extension's config tables.  One line per fact, "kind name | attribute | value",
-- sorted byte-wise (function and view definitions: one fact per numbered line, so
-- a diff names the object).  Run with psql -X -A -t -q; it changes nothing but pg_temp.

SET search_path = pg_catalog;
SET client_min_messages = warning;
-- one query over the catalogs: compiling it with JIT costs seconds, running it milliseconds
SET jit = off;

-- An ACL as a sorted, owner-independent list; NULL means the default ACL.
CREATE FUNCTION pg_temp.acl(a aclitem[], owner oid, objtype text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(string_agg(x, ', ' ORDER BY x COLLATE "C"), '(none)')
      FROM (SELECT CASE WHEN e.grantee = 0 THEN 'PUBLIC'
                        WHEN e.grantee = owner THEN 'OWNER'
                        ELSE e.grantee::regrole::text END
                   || ':' || e.privilege_type || CASE WHEN e.is_grantable THEN '*' ELSE '' END
                   || ' by ' || CASE WHEN e.grantor = owner THEN 'OWNER' ELSE e.grantor::regrole::text END AS x
              FROM aclexplode(COALESCE(a, acldefault(objtype::"char", owner))) e) s
$$;

-- A role's name, or INSTALLER for the role running this (the one that created the extension).
CREATE FUNCTION pg_temp.who(r oid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r = (SELECT oid FROM pg_roles WHERE rolname = current_user) THEN 'INSTALLER'
                ELSE r::regrole::text END
$$;

WITH
ext AS (SELECT * FROM pg_extension WHERE extname = 'novu'),
ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'novu'),
rel AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns)),
fn AS (SELECT p.* FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns)),
roles AS (SELECT r.* FROM pg_authid r WHERE r.rolname LIKE 'novu\_%'),
relkind(k, name) AS (VALUES ('r', 'table'), ('v', 'view'), ('m', 'materialized view'), ('S', 'sequence'),
                            ('i', 'index'), ('p', 'partitioned table'), ('I', 'partitioned index'),
                            ('c', 'composite type'), ('f', 'foreign table'), ('t', 'toast table')),
facts(obj, attr, val) AS (
    -- the extension itself
    SELECT 'extension novu', 'version', e.extversion FROM ext e
    UNION ALL
    SELECT 'extension novu', 'schema / relocatable', e.extnamespace::regnamespace::text || ' / ' || e.extrelocatable
      FROM ext e
    UNION ALL
    SELECT 'extension novu', 'config ' || t.c::regclass::text, COALESCE(t.cond, '')
      FROM ext e, unnest(e.extconfig, e.extcondition) AS t(c, cond)
    UNION ALL
    SELECT 'extension novu', 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid), ''
      FROM ext e JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
     WHERE d.deptype = 'e'

    -- the schema
    UNION ALL
    SELECT 'schema novu', 'owner', pg_temp.who(n.nspowner) FROM pg_namespace n WHERE n.oid = (SELECT oid FROM ns)
    UNION ALL
    SELECT 'schema novu', 'acl', pg_temp.acl(n.nspacl, n.nspowner, 'n') FROM pg_namespace n WHERE n.oid = (SELECT oid FROM ns)

    -- relations
    UNION ALL
    SELECT k.name || ' ' || c.oid::regclass::text, 'kind',
           'persistence ' || c.relpersistence::text || ', owner ' || pg_temp.who(c.relowner)
           || ', access method ' || COALESCE((SELECT amname FROM pg_am WHERE oid = c.relam), '-')
           || ', replica identity ' || c.relreplident::text
           || ', row security ' || c.relrowsecurity || '/' || c.relforcerowsecurity
           || ', of type ' || COALESCE(c.reloftype::regtype::text, '-')
           || ', tablespace ' || COALESCE((SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace), 'default')
      FROM rel c JOIN relkind k ON k.k = c.relkind
    UNION ALL
    SELECT k.name || ' ' || c.oid::regclass::text, 'options',
           COALESCE(NULLIF(array_to_string(ARRAY(SELECT o FROM unnest(c.reloptions) o ORDER BY 1), ', '), ''), '(none)')
      FROM rel c JOIN relkind k ON k.k = c.relkind
    UNION ALL
    SELECT k.name || ' ' || c.oid::regclass::text, 'toast options',
           array_to_string(ARRAY(SELECT o FROM unnest(t.reloptions) o ORDER BY 1), ', ')
      FROM rel c JOIN relkind k ON k.k = c.relkind JOIN pg_class t ON t.oid = c.reltoastrelid
     WHERE t.reloptions IS NOT NULL
    UNION ALL
    SELECT k.name || ' ' || c.oid::regclass::text, 'acl', pg_temp.acl(c.relacl, c.relowner, CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)
      FROM rel c JOIN relkind k ON k.k = c.relkind
     WHERE c.relkind NOT IN ('i', 'I', 't')
    UNION ALL
    SELECT k.name || ' ' || c.oid::regclass::text, 'inherits',
           string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
      FROM rel c JOIN relkind k ON k.k = c.relkind JOIN pg_inherits i ON i.inhrelid = c.oid
     GROUP BY k.name, c.oid
    UNION ALL
    -- columns, numbered by position among the live columns
    SELECT k.name || ' ' || c.oid::regclass::text,
           'column ' || lpad((row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum))::text, 3, '0') || ' ' || quote_ident(a.attname),
           format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attcollation <> 0 THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || COALESCE(' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid), '')
           || CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY' WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END
           || CASE a.attgenerated WHEN 's' THEN ' (stored generated)' ELSE '' END
           || ', storage ' || a.attstorage::text || ', statistics ' || a.attstattarget
           || CASE WHEN a.attcompression <> '' THEN ', compression ' || a.attcompression::text ELSE '' END
           -- (this server build keeps a per-column version counter, pg_attver, among the
           -- options: bookkeeping, not schema)
           || COALESCE(', options ' || NULLIF(array_to_string(ARRAY(SELECT o FROM unnest(a.attoptions) o
                                                                    WHERE o NOT LIKE 'pg\_attver=%' ORDER BY 1), ', '), ''), '')
           || CASE WHEN a.attacl IS NOT NULL THEN ', acl ' || pg_temp.acl(a.attacl, c.relowner, 'c') ELSE '' END
      FROM rel c JOIN relkind k ON k.k = c.relkind
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT 'table ' || c.oid::regclass::text, 'constraint ' || quote_ident(co.conname),
           co.contype::text || ': ' || pg_get_constraintdef(co.oid)
           || CASE WHEN co.conislocal THEN '' ELSE ' (inherited)' END
      FROM rel c JOIN pg_constraint co ON co.conrelid = c.oid
    UNION ALL
    SELECT 'table ' || c.oid::regclass::text, 'index ' || quote_ident(ic.relname),
           pg_get_indexdef(ic.oid)
           || CASE WHEN x.indisclustered THEN ' (clustered)' ELSE '' END
           || CASE WHEN x.indisreplident THEN ' (replica identity)' ELSE '' END
           || CASE WHEN NOT x.indisvalid THEN ' (INVALID)' ELSE '' END
      FROM rel c JOIN pg_index x ON x.indrelid = c.oid JOIN pg_class ic ON ic.oid = x.indexrelid
    UNION ALL
    SELECT 'table ' || c.oid::regclass::text, 'trigger ' || quote_ident(t.tgname),
           pg_get_triggerdef(t.oid) || ' (enabled ' || t.tgenabled::text || ')'
      FROM rel c JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT 'table ' || c.oid::regclass::text, 'rule ' || quote_ident(r.rulename), pg_get_ruledef(r.oid)
      FROM rel c JOIN pg_rewrite r ON r.ev_class = c.oid
     WHERE NOT (c.relkind IN ('v', 'm') AND r.rulename = '_RETURN')
    UNION ALL
    SELECT 'table ' || c.oid::regclass::text, 'policy ' || quote_ident(p.polname),
           p.polcmd::text || CASE WHEN p.polpermissive THEN ' permissive' ELSE ' restrictive' END
           || ' to ' || array_to_string(ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END
                                                FROM unnest(p.polroles) r ORDER BY 1), ', ')
           || COALESCE(' using (' || pg_get_expr(p.polqual, p.polrelid) || ')', '')
           || COALESCE(' with check (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', '')
      FROM rel c JOIN pg_policy p ON p.polrelid = c.oid
    UNION ALL
    SELECT 'table ' || c.oid::regclass::text, 'statistics ' || quote_ident(s.stxname), pg_get_statisticsobjdef(s.oid)
      FROM rel c JOIN pg_statistic_ext s ON s.stxrelid = c.oid
    UNION ALL
    SELECT k.name || ' ' || c.oid::regclass::text, 'definition ' || lpad(l.n::text, 4, '0'), l.line
      FROM rel c JOIN relkind k ON k.k = c.relkind,
           regexp_split_to_table(pg_get_viewdef(c.oid), E'\n') WITH ORDINALITY AS l(line, n)
     WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT 'sequence ' || c.oid::regclass::text, 'parameters',
           format_type(s.seqtypid, NULL) || ' start ' || s.seqstart || ' increment ' || s.seqincrement
           || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache
           || CASE WHEN s.seqcycle THEN ' cycle' ELSE ' no cycle' END
           || COALESCE(' owned by ' || (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                                          FROM pg_depend d
                                          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')), '')
      FROM rel c JOIN pg_sequence s ON s.seqrelid = c.oid

    -- functions and procedures
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text, 'attributes',
           'kind ' || p.prokind::text || ', language ' || l.lanname || ', volatility ' || p.provolatile::text
           || ', parallel ' || p.proparallel::text || ', security definer ' || p.prosecdef
           || ', strict ' || p.proisstrict || ', leakproof ' || p.proleakproof
           || ', cost ' || p.procost || ', rows ' || p.prorows
           || ', config ' || COALESCE(array_to_string(p.proconfig, ', '), '(none)')
           || ', owner ' || pg_temp.who(p.proowner)
      FROM fn p JOIN pg_language l ON l.oid = p.prolang
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text, 'acl', pg_temp.acl(p.proacl, p.proowner, 'f')
      FROM fn p
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text, 'definition ' || lpad(l.n::text, 4, '0'), l.line
      FROM fn p,
           regexp_split_to_table(CASE WHEN p.prokind = 'a' THEN '(aggregate)' ELSE pg_get_functiondef(p.oid) END,
                                 E'\n') WITH ORDINALITY AS l(line, n)

    -- types of their own (not the row and array types of tables and views)
    UNION ALL
    SELECT 'type ' || t.oid::regtype::text, 'definition',
           'type ' || t.typtype::text || ', owner ' || pg_temp.who(t.typowner)
           || CASE WHEN t.typtype = 'd' THEN ', base ' || format_type(t.typbasetype, t.typtypmod)
                   || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                   || COALESCE(' DEFAULT ' || t.typdefault, '') ELSE '' END
           || CASE WHEN t.typtype = 'e' THEN ', labels ' ||
                   (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                      FROM pg_enum e WHERE e.enumtypid = t.oid) ELSE '' END
           || ', acl ' || pg_temp.acl(t.typacl, t.typowner, 'T')
      FROM pg_type t
     WHERE t.typnamespace = (SELECT oid FROM ns)
       AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
       AND NOT (t.typcategory = 'A' AND EXISTS (SELECT FROM pg_type el WHERE el.oid = t.typelem AND el.typarray = t.oid))
    UNION ALL
    SELECT 'type ' || co.contypid::regtype::text, 'constraint ' || quote_ident(co.conname), pg_get_constraintdef(co.oid)
      FROM pg_constraint co
      JOIN pg_type t ON t.oid = co.contypid
     WHERE t.typnamespace = (SELECT oid FROM ns)

    -- comments: on anything in the schema or in the extension
    UNION ALL
    SELECT 'comment', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
      FROM pg_description d
     WHERE (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM rel))
        OR (d.classoid = 'pg_proc'::regclass AND d.objoid IN (SELECT oid FROM fn))
        OR (d.classoid = 'pg_type'::regclass AND d.objoid IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns)))
        OR (d.classoid = 'pg_namespace'::regclass AND d.objoid = (SELECT oid FROM ns))
        OR (d.classoid = 'pg_constraint'::regclass AND d.objoid IN (SELECT oid FROM pg_constraint WHERE connamespace = (SELECT oid FROM ns)))
        OR (d.classoid = 'pg_trigger'::regclass AND d.objoid IN (SELECT t.oid FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rel)))
        OR (d.classoid = 'pg_policy'::regclass AND d.objoid IN (SELECT p.oid FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rel)))
        OR (d.classoid = 'pg_extension'::regclass AND d.objoid = (SELECT oid FROM ext))
        OR EXISTS (SELECT FROM pg_depend x WHERE x.classid = d.classoid AND x.objid = d.objoid AND x.deptype = 'e'
                                             AND x.refclassid = 'pg_extension'::regclass AND x.refobjid = (SELECT oid FROM ext))

    -- the roles the extension creates, their memberships and settings
    UNION ALL
    SELECT 'role ' || quote_ident(r.rolname), 'attributes',
           'superuser ' || r.rolsuper || ', inherit ' || r.rolinherit || ', createrole ' || r.rolcreaterole
           || ', createdb ' || r.rolcreatedb || ', login ' || r.rolcanlogin || ', replication ' || r.rolreplication
           || ', bypassrls ' || r.rolbypassrls || ', connection limit ' || r.rolconnlimit
           || ', password ' || (r.rolpassword IS NOT NULL) || ', valid until ' || COALESCE(r.rolvaliduntil::text, '-')
      FROM roles r
    UNION ALL
    SELECT 'role ' || quote_ident(r.rolname), 'member of ' || m.roleid::regrole::text,
           'admin option ' || m.admin_option || ', granted by ' || pg_temp.who(m.grantor)
      FROM roles r JOIN pg_auth_members m ON m.member = r.oid
    UNION ALL
    SELECT 'role ' || quote_ident(r.rolname), 'has member ' || pg_temp.who(m.member),
           'admin option ' || m.admin_option || ', granted by ' || pg_temp.who(m.grantor)
      FROM roles r JOIN pg_auth_members m ON m.roleid = r.oid
     WHERE m.member NOT IN (SELECT oid FROM roles)
    UNION ALL
    SELECT 'role ' || quote_ident(r.rolname),
           'settings in ' || CASE WHEN s.setdatabase = 0 THEN 'every database'
                                  WHEN s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
                                      THEN 'this database' ELSE 'database ' || s.setdatabase END,
           array_to_string(ARRAY(SELECT x FROM unnest(s.setconfig) x ORDER BY 1), ', ')
      FROM roles r JOIN pg_db_role_setting s ON s.setrole = r.oid

    -- default privileges of those roles or in the schema
    UNION ALL
    SELECT 'default privileges', 'for ' || pg_temp.who(a.defaclrole)
           || ' in ' || COALESCE(a.defaclnamespace::regnamespace::text, 'every schema') || ' on ' || a.defaclobjtype::text,
           pg_temp.acl(a.defaclacl, a.defaclrole, a.defaclobjtype)
      FROM pg_default_acl a
     WHERE a.defaclnamespace = (SELECT oid FROM ns) OR a.defaclrole IN (SELECT oid FROM roles)

    -- the database's own privileges (the extension grants CONNECT) and settings
    UNION ALL
    SELECT 'database (current)', 'acl', pg_temp.acl(d.datacl, d.datdba, 'd')
      FROM pg_database d WHERE d.datname = current_database()
    UNION ALL
    SELECT 'database (current)', 'settings for ' || CASE WHEN s.setrole = 0 THEN 'every role' ELSE s.setrole::regrole::text END,
           array_to_string(ARRAY(SELECT x FROM unnest(s.setconfig) x ORDER BY 1), ', ')
      FROM pg_db_role_setting s
     WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
)
SELECT obj || ' | ' || attr || ' | ' || COALESCE(val, '(null)')
  FROM facts
 ORDER BY obj COLLATE "C", attr COLLATE "C", val COLLATE "C";
