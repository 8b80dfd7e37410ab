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
            ELSIF leader <> r.transaction_id THEN
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
