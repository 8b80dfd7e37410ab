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

-- The install now checks the roles it reuses; an
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

-- novu.cancel raced a worker running on from a delay or digest window: it
-- waited for that row, then did not see the next delay or window the worker
-- wrote (not in the waiting statement's snapshot), and its steps still ran.
-- The waiting steps are now locked first, canceled in new statements, and
-- looked up again until none is left.
CREATE OR REPLACE FUNCTION novu._cancel_steps(p_transaction_id text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint := 0;
    k bigint;
    r novu.step_runs;
    leader text;
BEGIN
    LOOP
        -- The waiting delays are locked first, in a statement of their own: one
        -- that a worker is running is waited for here, and skipped once it is
        -- done.  The update below is a new statement with a new snapshot (read
        -- committed), which shows the delay that worker wrote next.
        PERFORM FROM novu.step_runs x
          WHERE x.transaction_id = p_transaction_id AND x.kind = 'delay' AND x.status = 'waiting'
          ORDER BY x.id
          FOR UPDATE OF x;
        WITH c AS (
            UPDATE novu.step_runs x SET status = 'canceled', updated_at = now()
             WHERE x.transaction_id = p_transaction_id AND x.kind = 'delay' AND x.status = 'waiting'
            RETURNING x.*)
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        SELECT c.transaction_id, c.subscriber_id, c.workflow_id, 'delay', 'Warning', 'Delay canceled',
               jsonb_build_object('stepIndex', c.step_index)
          FROM c;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
        FOR r IN SELECT x.* FROM novu.step_runs x
                  WHERE x.kind = 'digest' AND x.status = 'waiting'
                    AND x.id IN (SELECT m.digest_id FROM novu.digest_events m
                                  WHERE m.transaction_id = p_transaction_id AND m.status = 'merged')
                  ORDER BY x.id
                  FOR UPDATE OF x LOOP
            UPDATE novu.digest_events m SET status = 'canceled'
             WHERE m.digest_id = r.id AND m.transaction_id = p_transaction_id AND m.status = 'merged';
            CONTINUE WHEN NOT FOUND;
            n := n + 1;
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            VALUES (p_transaction_id, r.subscriber_id, r.workflow_id, 'digest', 'Warning', 'Digest event canceled',
                    jsonb_build_object('stepIndex', r.step_index, 'digestId', r.id));
            leader := NULL;
            SELECT m.transaction_id INTO leader FROM novu.digest_events m
             WHERE m.digest_id = r.id AND m.status = 'merged' ORDER BY m.event_id LIMIT 1;
            IF leader IS NULL THEN
                UPDATE novu.step_runs x SET status = 'canceled', updated_at = now() WHERE x.id = r.id;
            -- only the leader's cancel hands the window over: a follower's
            -- leaves it with the leader it has (which need not be its oldest
            -- event: windows of one batch open in fan-out order)
            ELSIF r.transaction_id = p_transaction_id AND leader <> r.transaction_id THEN
                UPDATE novu.step_runs x SET transaction_id = leader, updated_at = now() WHERE x.id = r.id;
                INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                VALUES (leader, r.subscriber_id, r.workflow_id, 'digest', 'Pending',
                        'Digest handed over: transaction ' || p_transaction_id || ' was canceled, this event leads it now',
                        jsonb_build_object('stepIndex', r.step_index, 'digestId', r.id));
            END IF;
        END LOOP;
        -- A worker waited for above may have committed waiting steps of this
        -- transaction that these statements' snapshots did not show: the delay
        -- after a window it closed, the window a delay ran on to, or the next
        -- delay after one the update itself waited for.  Done when a new snapshot
        -- shows none; otherwise once more (a round that finds one has waited for
        -- a worker that went on, so this ends).
        EXIT WHEN NOT EXISTS (SELECT FROM novu.step_runs x
                               WHERE x.transaction_id = p_transaction_id AND x.kind = 'delay'
                                 AND x.status = 'waiting')
              AND NOT EXISTS (SELECT FROM novu.digest_events m JOIN novu.step_runs x ON x.id = m.digest_id
                               WHERE m.transaction_id = p_transaction_id AND m.status = 'merged'
                                 AND x.kind = 'digest' AND x.status = 'waiting');
    END LOOP;
    RETURN n;
END
$$;

-- novu.delete_subscriber had the same race, and canceled the subscriber's
-- messages before its steps: the message a running continuation made stayed
-- pending (and went to the old device token once the id was identified again).
-- Now its waiting steps are canceled first, the same way, then its messages.
CREATE OR REPLACE FUNCTION novu.delete_subscriber(subscriber_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_it boolean;
BEGIN
    DELETE FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id;
    found_it := FOUND;
    -- a trigger made before now and not fanned out yet must not create it
    -- again (the fan-out creates missing recipients); also when it does not
    -- exist yet because that trigger's fan-out has not run
    INSERT INTO novu.subscriber_deletions AS x (subscriber_id, deleted_at, last_event_id)
    SELECT delete_subscriber.subscriber_id, now(), q.last_value FROM novu.events_id_seq q
    ON CONFLICT ON CONSTRAINT subscriber_deletions_pkey
    DO UPDATE SET deleted_at = excluded.deleted_at, last_event_id = excluded.last_event_id;
    IF found_it THEN
        -- Its waiting delays and digest windows are canceled, before its
        -- messages: a worker continuing one holds its row, and the lock below
        -- waits for it; that row is then done, but the worker may have written
        -- messages and the next delay or window, which the statements after
        -- the wait see (each takes a new snapshot).  Looked up again until a
        -- new snapshot shows no waiting step of it (a round that finds one has
        -- waited for a worker that went on, so this ends).
        LOOP
            PERFORM FROM novu.step_runs r
              WHERE r.subscriber_id = delete_subscriber.subscriber_id AND r.status = 'waiting'
              ORDER BY r.id
              FOR UPDATE OF r;
            WITH w AS (
                UPDATE novu.step_runs r SET status = 'canceled', updated_at = now()
                 WHERE r.subscriber_id = delete_subscriber.subscriber_id AND r.status = 'waiting'
                RETURNING r.transaction_id, r.workflow_id, r.kind, r.step_index)
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail)
            SELECT w.transaction_id, delete_subscriber.subscriber_id, w.workflow_id, w.kind, 'Warning',
                   initcap(w.kind) || ' canceled: subscriber deleted'
              FROM w;
            EXIT WHEN NOT EXISTS (SELECT FROM novu.step_runs r
                                   WHERE r.subscriber_id = delete_subscriber.subscriber_id
                                     AND r.status = 'waiting');
        END LOOP;
        -- Pending deliveries to it are canceled, those the workers waited for
        -- above made included; sent history stays.
        WITH c AS (
            UPDATE novu.deliveries d SET status = 'canceled', updated_at = now(),
                   last_error = 'Subscriber deleted'
             WHERE d.subscriber_id = delete_subscriber.subscriber_id AND d.status = 'pending'
            RETURNING d.id, d.transaction_id, d.workflow_id, d.channel, d.provider_id)
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id,
                                            channel, provider_id, status, detail)
        SELECT c.transaction_id, c.id, delete_subscriber.subscriber_id, c.workflow_id, c.channel,
               c.provider_id, 'Warning', 'Message canceled: subscriber deleted'
          FROM c;
    END IF;
    RETURN found_it;
END
$$;

-- novu._housekeeping deleted the outbox row of an event merged into a digest
-- window still open once it was older than the retention, unless that event
-- led the window: a follower's transactionId became free again (triggered
-- again, its event was accepted and its merge lost), and after a hand-over to
-- it the steps after the digest had no payload.  Kept now while merged into a
-- waiting window.
CREATE OR REPLACE FUNCTION novu._housekeeping(p_retention interval, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    total integer := 0;
BEGIN
    -- updated_at >= created_at: "created before the cutoff" only narrows the
    -- search to the old block ranges (the BRIN indexes), it keeps every candidate
    DELETE FROM novu.deliveries WHERE id IN (
        SELECT id FROM novu.deliveries
         WHERE created_at < now() - p_retention
           AND status IN ('sent', 'failed', 'canceled', 'skipped') AND updated_at < now() - p_retention
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM novu.execution_details WHERE id IN (
        SELECT id FROM novu.execution_details WHERE created_at < now() - p_retention LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM novu.events e WHERE e.transaction_id IN (
        SELECT x.transaction_id FROM novu.events x
         WHERE x.status IN ('processed', 'canceled') AND x.created_at < now() - p_retention
           AND NOT EXISTS (SELECT FROM novu.deliveries d
                            WHERE d.transaction_id = x.transaction_id AND d.status IN ('pending', 'sending'))
           AND NOT EXISTS (SELECT FROM novu.step_runs r
                            WHERE r.transaction_id = x.transaction_id AND r.status = 'waiting')
           -- an event merged into a window still open, which may stay open
           -- longer than the retention: step_runs names only its leader, but
           -- every event of it keeps its transactionId taken (a trigger again
           -- is a duplicate), and the one that leads it after a hand-over
           -- needs its payload for the steps after the digest
           AND NOT EXISTS (SELECT FROM novu.digest_events m JOIN novu.step_runs r ON r.id = m.digest_id
                            WHERE m.transaction_id = x.transaction_id AND m.status = 'merged'
                              AND r.status = 'waiting')
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- finished delays and digests (their events cascade)
    DELETE FROM novu.step_runs WHERE id IN (
        SELECT id FROM novu.step_runs
         WHERE created_at < now() - p_retention AND status <> 'waiting' AND updated_at < now() - p_retention
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- subscriber deletions older than the retention that no outbox row still
    -- waiting for its fan-out predates
    DELETE FROM novu.subscriber_deletions x WHERE x.subscriber_id IN (
        SELECT d.subscriber_id FROM novu.subscriber_deletions d
         WHERE d.deleted_at < now() - p_retention
           AND d.last_event_id < COALESCE((SELECT min(e.id) FROM novu.events e
                                            WHERE e.status IN ('pending', 'processing')), 9223372036854775807)
         LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    RETURN total;
END
$$;

-- novu._start looked up the notifications that begin with a digest twice, in
-- two statements: a workflow changed while the first waited for a window
-- numbered the key groups otherwise in the second, and an event merged into
-- another subscriber's window.  They are looked up once now, kept in arrays.
CREATE OR REPLACE FUNCTION novu._start(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                            p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    pt text[];
    pw text[];
    ps text[];
    st text[];
    sw text[];
    ss text[];
    n integer := 0;
    done_n bigint[];
    h integer;
    gid bigint[];
    glead text[];
    gdue timestamptz[];
    gnew boolean[];
    cn bigint[];
    ct text[];
    cw text[];
    cs text[];
    cg bigint[];
    cev bigint[];
    cpay jsonb[];
    craw jsonb[];
BEGIN
    IF NOT EXISTS (SELECT FROM novu.workflows w WHERE w.workflow_id = ANY (p_workflow_ids) AND w.staged) THEN
        RETURN QUERY SELECT * FROM novu._expand(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_lease_limit, p_lease_ms);
        RETURN;
    END IF;
    SELECT array_agg(z.t ORDER BY z.n) FILTER (WHERE NOT COALESCE(w.staged, false)),
           array_agg(z.w ORDER BY z.n) FILTER (WHERE NOT COALESCE(w.staged, false)),
           array_agg(z.s ORDER BY z.n) FILTER (WHERE NOT COALESCE(w.staged, false)),
           array_agg(z.t ORDER BY z.n) FILTER (WHERE w.staged),
           array_agg(z.w ORDER BY z.n) FILTER (WHERE w.staged),
           array_agg(z.s ORDER BY z.n) FILTER (WHERE w.staged)
      INTO pt, pw, ps, st, sw, ss
      FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids) WITH ORDINALITY AS z(t, w, s, n)
      LEFT JOIN novu.workflows w ON w.workflow_id = z.w;
    IF pt IS NOT NULL THEN
        RETURN QUERY SELECT * FROM novu._expand(pt, pw, ps, p_lease_limit, p_lease_ms);
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    IF st IS NULL THEN
        RETURN;
    END IF;
    -- Workflows that begin with a delay (no filters on it, no overrides.delay
    -- in the trigger; a scheduled one whose payload time is valid and ahead):
    -- the delay rows of all those notifications are written together; the
    -- others go step by step (novu._advance, which also says what is wrong).
    WITH first AS (
        SELECT z.t, z.w, z.s, z.n, w.steps -> 0 AS d,
               CASE WHEN (w.steps -> 0) ? 'delayPath'
                    THEN novu._delay_time(e.payload #>> novu._payload_path(w.steps -> 0 ->> 'delayPath'))
                    ELSE now() + novu._step_interval(w.steps -> 0 -> 'amount', w.steps -> 0 -> 'unit') END AS due
          FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
          JOIN novu.workflows w ON w.workflow_id = z.w
          LEFT JOIN novu.events e ON e.transaction_id = z.t
         WHERE jsonb_typeof(w.steps) = 'array' AND w.steps -> 0 ->> 'type' = 'delay'
           AND NOT (w.steps -> 0) ? 'filters'
           AND NOT COALESCE(e.overrides ? 'delay', false)),
    cand AS (
        SELECT * FROM first f WHERE f.due > now()),
    ins AS (
        INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, due_at)
        SELECT 'delay', c.t, c.w, c.s, 0, c.due
          FROM cand c
        RETURNING novu.step_runs.transaction_id, novu.step_runs.workflow_id, novu.step_runs.subscriber_id,
                  novu.step_runs.due_at),
    logged AS (
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        SELECT i.transaction_id, i.subscriber_id, i.workflow_id, 'delay', 'Pending', 'Step delayed until ' || novu._iso(i.due_at),
               jsonb_build_object('stepId', novu._step_id(w.steps -> 0, 0), 'stepIndex', 0, 'dueAt', novu._iso(i.due_at))
          FROM ins i JOIN novu.workflows w ON w.workflow_id = i.workflow_id)
    SELECT array_agg(c.n) INTO done_n FROM cand c;
    IF done_n IS NOT NULL THEN
        SELECT array_agg(z.t ORDER BY z.n), array_agg(z.w ORDER BY z.n), array_agg(z.s ORDER BY z.n)
          INTO st, sw, ss
          FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
         WHERE NOT z.n = ANY (done_n);
    END IF;
    IF st IS NULL THEN
        RETURN;
    END IF;
    -- Workflows that begin with a digest (no filters on it, not a backoff
    -- digest): every notification merges into the open window of its key or
    -- opens one, together in one statement (as novu._digest_join does one by
    -- one).  First the digest keys that any of these notifications may reach
    -- are locked in one order, as novu._advance does (it takes them again,
    -- already held): two workers never wait on each other in a cycle.
    FOR h IN SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' ||
                                      CASE WHEN s.step ? 'digestKey'
                                           THEN COALESCE(e.payload #>> novu._payload_path(s.step ->> 'digestKey'), '')
                                           ELSE '' END)
               FROM unnest(st, sw, ss) AS z(t, w, s)
               JOIN novu.workflows wf ON wf.workflow_id = z.w AND jsonb_typeof(wf.steps) = 'array'
               CROSS JOIN LATERAL jsonb_array_elements(wf.steps) WITH ORDINALITY AS s(step, n)
               LEFT JOIN novu.events e ON e.transaction_id = z.t
              WHERE s.step ->> 'type' = 'digest'
              ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(hashtext('novu.digest'), h);
    END LOOP;
    -- The key groups of these notifications (g, by workflow, subscriber and
    -- key): each group's open window, locked (a window being closed by
    -- novu._continue is waited for, then no longer waiting), or a new one
    -- whose leader is the group's first notification.  Windows are numbered
    -- by group in arrays: no join between the batch's rows (the planner has no
    -- estimate for them, and a nested loop over them is quadratic).  The
    -- notifications and their groups are kept in arrays too, from this
    -- statement's snapshot, for the merge below: looked up again there, in a
    -- new snapshot, a workflow changed while this statement waited for a
    -- window would add or drop notifications, the groups would be numbered
    -- otherwise, and an event would merge into another subscriber's window.
    WITH cand AS (
        SELECT * FROM novu._digest_first(st, sw, ss)),
    grp AS (
        SELECT c.g, min(c.w) AS w, min(c.s) AS s, min(c.k) AS k, (array_agg(c.t ORDER BY c.n))[1] AS lt,
               min(c.window_len) AS wl
          FROM cand c GROUP BY c.g),
    found AS (
        SELECT g.*, r.id AS rid, r.transaction_id AS rt, r.due_at AS rdue,
               CASE WHEN r.id IS NULL THEN nextval('novu.step_runs_id_seq') ELSE r.id END AS did,
               now() + g.wl AS due
          FROM grp g
          LEFT JOIN LATERAL (
              SELECT x.id, x.transaction_id, x.due_at FROM novu.step_runs x
               WHERE x.kind = 'digest' AND x.status = 'waiting' AND x.workflow_id = g.w
                 AND x.subscriber_id = g.s AND x.step_index = 0 AND x.digest_key = g.k
                 FOR UPDATE) r ON true),
    opened AS (
        INSERT INTO novu.step_runs (id, kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, due_at)
        SELECT f.did, 'digest', f.lt, f.w, f.s, 0, f.k, f.due
          FROM found f WHERE f.rid IS NULL),
    touched AS (
        UPDATE novu.step_runs x SET last_event_at = now(), updated_at = now()
          FROM found f WHERE x.id = f.rid)
    SELECT w.*, c.*
      INTO gid, glead, gdue, gnew, cn, ct, cw, cs, cg, cev, cpay, craw
      FROM (SELECT array_agg(f.did ORDER BY f.g), array_agg(COALESCE(f.rt, f.lt) ORDER BY f.g),
                   array_agg(COALESCE(f.rdue, f.due) ORDER BY f.g), array_agg(f.rid IS NULL ORDER BY f.g)
              FROM found f) w,
           (SELECT array_agg(c.n ORDER BY c.n), array_agg(c.t ORDER BY c.n), array_agg(c.w ORDER BY c.n),
                   array_agg(c.s ORDER BY c.n), array_agg(c.g ORDER BY c.n), array_agg(c.event_id ORDER BY c.n),
                   array_agg(c.payload ORDER BY c.n),
                   array_agg(c.raw || CASE WHEN c.keyed THEN jsonb_build_object('digestKey', c.k) ELSE '{}' END
                             ORDER BY c.n)
              FROM cand c) c;
    -- every notification merged into its group's window, and logged
    WITH cand AS (
        SELECT * FROM unnest(cn, ct, cw, cs, cg, cev, cpay, craw) AS c(n, t, w, s, g, event_id, payload, raw)),
    merged AS (
        INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
        SELECT gid[c.g], c.t, COALESCE(c.event_id, 0), c.payload FROM cand c
        ON CONFLICT DO NOTHING),
    logged AS (
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        SELECT c.t, c.s, c.w, 'digest', 'Pending',
               CASE WHEN gnew[c.g] AND glead[c.g] = c.t
                    THEN 'Digest started: events until ' || novu._iso(gdue[c.g]) || ' are merged'
                    ELSE 'Merged into the digest of transaction ' || glead[c.g] END,
               c.raw || CASE WHEN gnew[c.g] AND glead[c.g] = c.t
                             THEN jsonb_build_object('digestId', gid[c.g], 'dueAt', novu._iso(gdue[c.g]))
                             ELSE jsonb_build_object('digestId', gid[c.g]) END
          FROM cand c
         ORDER BY c.n)
    SELECT array_agg(c.n) INTO done_n FROM cand c;
    IF done_n IS NOT NULL THEN
        SELECT array_agg(z.t ORDER BY z.n), array_agg(z.w ORDER BY z.n), array_agg(z.s ORDER BY z.n)
          INTO st, sw, ss
          FROM unnest(st, sw, ss) WITH ORDINALITY AS z(t, w, s, n)
         WHERE NOT z.n = ANY (done_n);
    END IF;
    IF st IS NOT NULL THEN
        RETURN QUERY SELECT * FROM novu._advance(st, sw, ss, NULL, NULL, GREATEST(p_lease_limit - n, 0), p_lease_ms);
    END IF;
END
$$;
