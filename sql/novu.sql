/*
 * novu.sql
 *		The SQL of the novu extension, whole and current: roles, tables, views, the
 *		SQL API and the delivery workers' functions, each object written once, as it is.
 *
 * This is the one source of the schema.  make ships it as novu--$(EXTVERSION).sql,
 * the script CREATE EXTENSION novu runs.  Databases created by an older version
 * reach the same schema through the upgrade scripts novu--A--B.sql, which hold
 * only deltas: a schema change is written here and, as a delta, in the newest
 * upgrade script; test/schema/compare.sh checks that a fresh install and every
 * upgrade path end with the same schema.
 *
 * Everything the application calls is a SECURITY DEFINER function with a pinned
 * search_path; tables are reachable only through those functions (and a few read
 * grants), so the roles below decide who can do what.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION novu" to load this file. \quit

------------------------------------------------------------------------------
-- Roles and the schema
-- Roles are cluster-wide: each is created only if missing, so a second database
-- works.  The delivery workers connect as novu_worker, never as a superuser.  It is
-- a LOGIN role only because PostgreSQL 15 lets a background worker connect as no
-- other kind; it has no password, so password authentication never admits it; an
-- existing superuser of that name is refused, and so is one that others can act
-- as (below).
------------------------------------------------------------------------------

-- Providers take JSON in UTF-8, and the workers send the database's text as it
-- is stored: in another encoding "Café" would go out as invalid JSON (LATIN1's
-- byte 0xE9), or any bytes at all (SQL_ASCII).
DO $encoding$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'novu needs a UTF8 database, and database "%" is %',
                        pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Push providers take JSON in UTF-8; the delivery workers send the stored text as it is.',
                  HINT = 'Create the extension in a database made with ENCODING ''UTF8''.';
    END IF;
END
$encoding$;

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'novu_app') THEN
        CREATE ROLE novu_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'novu_admin') THEN
        CREATE ROLE novu_admin NOLOGIN;
    END IF;
    IF NOT pg_catalog.pg_has_role('novu_admin', 'novu_app', 'MEMBER') THEN
        GRANT novu_app TO novu_admin;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'novu_worker') THEN
        CREATE ROLE novu_worker LOGIN NOINHERIT;
    ELSIF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'novu_worker') THEN
        RAISE EXCEPTION 'role "novu_worker" exists and is a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The delivery workers never run as a superuser: ALTER ROLE novu_worker NOSUPERUSER, then try again.';
    END IF;
    EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO novu_worker', pg_catalog.current_database());
END
$roles$;

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

GRANT USAGE ON SCHEMA novu TO novu_app, novu_admin, novu_worker;

------------------------------------------------------------------------------
-- Tables
-- Identifiers compare byte by byte (COLLATE "C"): subscriberIds, transactionIds,
-- workflow and integration identifiers and device tokens are keys, not words, and
-- every index probe and insert on them would pay for a linguistic collation.
------------------------------------------------------------------------------

-- Provider integrations (admin only: credentials hold secrets).
CREATE TABLE novu.integrations (
    id              bigserial PRIMARY KEY,
    identifier      text COLLATE "C" NOT NULL UNIQUE,
    provider_id     text NOT NULL,
    channel         text NOT NULL DEFAULT 'push',
    name            text NOT NULL,
    credentials     jsonb NOT NULL,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integrations_provider_idx ON novu.integrations (provider_id, created_at DESC, id DESC);
COMMENT ON TABLE novu.integrations IS 'Provider integrations (FCM, APNs, Expo, ...); credentials are secrets, readable by novu_admin only';

-- Subscribers (Novu's profile).
CREATE TABLE novu.subscribers (
    subscriber_id   text COLLATE "C" PRIMARY KEY,
    email           text,
    first_name      text,
    last_name       text,
    phone           text,
    avatar          text,
    locale          text,
    timezone        text,
    data            jsonb NOT NULL DEFAULT '{}',
    is_online       boolean NOT NULL DEFAULT false,
    last_online_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE novu.subscribers IS 'Subscribers: the recipients of notifications, keyed by the application''s subscriberId';

-- When each subscriberId was last deleted.  novu.trigger does not look up a
-- recipient named by a plain subscriberId: the fan-out creates the missing
-- ones (novu._fanout), except one deleted after the trigger was made (its
-- outbox row's id is at most last_event_id), whose messages end skipped
-- ("Subscriber not found") instead of bringing it back.  Housekeeping forgets
-- a deletion older than the retention that no pending outbox row predates.
CREATE TABLE novu.subscriber_deletions (
    subscriber_id   text COLLATE "C" PRIMARY KEY,
    deleted_at      timestamptz NOT NULL,
    last_event_id   bigint NOT NULL             -- novu.events.id: the outbox rows made before it
);
CREATE INDEX subscriber_deletions_deleted_at_idx ON novu.subscriber_deletions (deleted_at);
COMMENT ON TABLE novu.subscriber_deletions IS 'When each subscriberId was last deleted, and the last outbox row made before: those do not create it again at fan-out';

-- One row per (subscriber, integration) that has credentials.
CREATE TABLE novu.subscriber_channels (
    subscriber_id   text COLLATE "C" NOT NULL REFERENCES novu.subscribers ON DELETE CASCADE,
    integration_id  bigint NOT NULL REFERENCES novu.integrations ON DELETE CASCADE,
    webhook_url     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber_id, integration_id)
);
CREATE INDEX subscriber_channels_integration_idx ON novu.subscriber_channels (integration_id);
COMMENT ON TABLE novu.subscriber_channels IS 'Subscriber credentials per integration (the "channels" of a Novu subscriber)';

-- Device tokens: a token belongs to one subscriber per integration.
CREATE TABLE novu.device_tokens (
    integration_id  bigint NOT NULL,
    device_token    text COLLATE "C" NOT NULL,
    subscriber_id   text COLLATE "C" NOT NULL,
    seq             bigserial NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),  -- when last registered (set_credentials)
    PRIMARY KEY (integration_id, device_token),
    FOREIGN KEY (subscriber_id, integration_id)
        REFERENCES novu.subscriber_channels (subscriber_id, integration_id) ON DELETE CASCADE
);
CREATE INDEX device_tokens_subscriber_idx ON novu.device_tokens (subscriber_id, integration_id);
COMMENT ON TABLE novu.device_tokens IS 'Push device tokens; storing a token for a subscriber removes it from any other subscriber of the same integration';

-- Workflows and their steps.
CREATE TABLE novu.workflows (
    workflow_id     text COLLATE "C" PRIMARY KEY,
    name            text NOT NULL,
    steps           jsonb NOT NULL DEFAULT '[]',
    critical        boolean NOT NULL DEFAULT false,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- runs step by step (novu._advance): it has a delay, a digest or step filters
    staged          boolean NOT NULL GENERATED ALWAYS AS (pg_catalog.jsonb_path_exists(steps,
                        '$[*] ? (@.type == "delay" || @.type == "digest" || exists (@.filters[*]))')) STORED
);
COMMENT ON TABLE novu.workflows IS 'Workflows: ordered steps, validated (templates parsed) at creation';

-- Subscriber preferences: a NULL workflow_id is the global preference.
CREATE TABLE novu.preferences (
    subscriber_id   text COLLATE "C" NOT NULL REFERENCES novu.subscribers ON DELETE CASCADE,
    workflow_id     text COLLATE "C" REFERENCES novu.workflows ON DELETE CASCADE,
    enabled         boolean NOT NULL DEFAULT true,
    channels        jsonb NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT preferences_key UNIQUE NULLS NOT DISTINCT (subscriber_id, workflow_id)
);
CREATE INDEX preferences_workflow_idx ON novu.preferences (workflow_id);
COMMENT ON TABLE novu.preferences IS 'Subscriber preferences; workflow_id NULL = global';

-- Topics: named groups of subscribers, addressed in a trigger's "to" as
-- {"type": "Topic", "topicKey": key}.  Members are keyed by the topic's id, not its
-- key: a membership row stays small however long the key.
CREATE TABLE novu.topics (
    id              bigserial PRIMARY KEY,
    key             text COLLATE "C" NOT NULL UNIQUE,
    name            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE novu.topics IS 'Topics: named groups of subscribers a trigger can address as {"type": "Topic", "topicKey": key}';

-- A topic's members.  The primary key lists a topic's members in subscriberId
-- order (the fan-out walks it by a cursor); the second index lists a
-- subscriber's topics and serves the cascade when a subscriber is deleted.  A
-- topic with members cannot be deleted (RESTRICT; novu.delete_topic says so).
CREATE TABLE novu.topic_subscribers (
    topic_id        bigint NOT NULL REFERENCES novu.topics ON DELETE RESTRICT,
    subscriber_id   text COLLATE "C" NOT NULL REFERENCES novu.subscribers ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic_id, subscriber_id)
);
CREATE INDEX topic_subscribers_subscriber_idx ON novu.topic_subscribers (subscriber_id);
COMMENT ON TABLE novu.topic_subscribers IS 'Topic members: one row per (topic, subscriber)';

-- The outbox: one row per trigger or broadcast, written in the caller's transaction.
CREATE TABLE novu.events (
    transaction_id  text COLLATE "C" PRIMARY KEY,
    id              bigserial NOT NULL,
    kind            text NOT NULL DEFAULT 'trigger',        -- trigger | broadcast | topic
    workflow_id     text COLLATE "C" NOT NULL,
    recipients      text[] COLLATE "C",
    payload         jsonb NOT NULL DEFAULT '{}',
    overrides       jsonb NOT NULL DEFAULT '{}',
    actor           jsonb,
    status          text NOT NULL DEFAULT 'pending',        -- pending | processing | processed | canceled
    cursor          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    topics          text[] COLLATE "C",                     -- kind topic: the topic keys of "to"
    retry_at        timestamptz                             -- set aside until then: another transaction
                                                            -- was creating a recipient (novu._create_subscribers)
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX events_pending_idx ON novu.events (id) WHERE status IN ('pending', 'processing');
-- the next broadcast or topic trigger to fan out in chunks, without walking the
-- pending triggers
CREATE INDEX events_chunked_idx ON novu.events (id) WHERE kind <> 'trigger' AND status IN ('pending', 'processing');
-- housekeeping walks the triggers fanned out from the oldest (see novu._housekeeping)
CREATE INDEX events_done_idx ON novu.events (id) WHERE status IN ('processed', 'canceled');
COMMENT ON TABLE novu.events IS 'Trigger outbox: committed with the caller''s transaction, fanned out by the delivery workers; keeps transactionId idempotency while retained';
-- (no CHECK constraints here: this insert runs inside application transactions,
-- and only novu.trigger/novu.broadcast and the workers write this table)

-- One row per (notification, step, delivery target); the queue the workers drain.
CREATE TABLE novu.deliveries (
    id                      bigserial PRIMARY KEY,
    transaction_id          text COLLATE "C" NOT NULL,
    workflow_id             text COLLATE "C" NOT NULL,
    subscriber_id           text COLLATE "C" NOT NULL,
    step_index              integer NOT NULL DEFAULT 0,
    channel                 text NOT NULL,
    -- no foreign key: the fan-out takes the id from the integration's row in the
    -- same statement, and the worker looks it up again before sending ("Integration
    -- deleted" if it is gone); a key check and row lock per inserted message cost
    -- 7% of a message's CPU.  History keeps the id of a deleted integration.
    integration_id          bigint,
    provider_id             text,
    integration_identifier  text COLLATE "C",
    device_token            text COLLATE "C",
    status                  text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'canceled', 'skipped')),
    attempts                integer NOT NULL DEFAULT 0,
    last_error              text,
    provider_message_id     text,
    next_attempt_at         timestamptz NOT NULL DEFAULT now(),
    lease_until             timestamptz,
    claimed_by              integer,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    sent_at                 timestamptz,
    receipt_at              timestamptz,
    digest_id               bigint,         -- a step after a digest: its window (novu.step_runs), for step.events
    -- a provider that dedupes a request by an idempotency key it carries (OneSignal,
    -- ProviderOps.request_key): the key of the request this message went out in,
    -- written before the request is first sent.  Its messages that are retried are
    -- that request again, claimed together (novu._claim_groups), with this key.
    -- Expo's messages get one too when Expo refused their shared request for
    -- some of them: each smaller request it is split into goes again whole.
    request_key             text COLLATE "C"
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX deliveries_receipt_idx ON novu.deliveries (receipt_at) WHERE receipt_at IS NOT NULL;
-- the queue index holds pending messages only; leases have their own index (the
-- claim reads due messages from the first, expired leases from the second)
CREATE INDEX deliveries_due_idx ON novu.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_lease_idx ON novu.deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_transaction_idx ON novu.deliveries (transaction_id);
-- pending deliveries of a subscriber (delete_subscriber cancels them); partial, so
-- sent and failed row versions cost no entry here
CREATE INDEX deliveries_subscriber_idx ON novu.deliveries (subscriber_id) WHERE status = 'pending';
-- the messages still to send after a digest, by window (housekeeping keeps the window)
CREATE INDEX deliveries_digest_idx ON novu.deliveries (digest_id)
    WHERE digest_id IS NOT NULL AND status IN ('pending', 'sending');
-- the messages of requests with an idempotency key that are not final: by key (a
-- request's messages) and the pending ones by due time (the requests to retry)
CREATE INDEX deliveries_request_idx ON novu.deliveries (request_key)
    WHERE request_key IS NOT NULL AND status IN ('pending', 'sending');
CREATE INDEX deliveries_request_due_idx ON novu.deliveries (next_attempt_at)
    WHERE request_key IS NOT NULL AND status = 'pending';
COMMENT ON TABLE novu.deliveries IS 'Delivery queue and history: one row per message to one device token or webhook';

-- Waiting steps of the workflow engine (DESIGN 9): a delay, or a digest window,
-- with its due time.  The workers claim due rows like messages (FOR UPDATE SKIP
-- LOCKED, by the due index) and go on with the steps after it, in the claim's
-- transaction: the row turns 'done' in the transaction that creates what follows.
CREATE TABLE novu.step_runs (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('delay', 'digest')),
    transaction_id  text COLLATE "C" NOT NULL,      -- delay: its notification; digest: the window's leader
    workflow_id     text COLLATE "C" NOT NULL,
    subscriber_id   text COLLATE "C" NOT NULL,
    step_index      integer NOT NULL,               -- the delay or digest step; the steps after it follow
    digest_key      text COLLATE "C",               -- digest: the digestKey value ('' without one)
    digest_id       bigint,                         -- the digest whose events the following steps see
    status          text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'done', 'canceled', 'failed')),
    due_at          timestamptz NOT NULL,
    last_event_at   timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX step_runs_due_idx ON novu.step_runs (due_at) WHERE status = 'waiting';
CREATE INDEX step_runs_transaction_idx ON novu.step_runs (transaction_id);
-- a subscriber's waiting steps (delete_subscriber cancels them)
CREATE INDEX step_runs_subscriber_idx ON novu.step_runs (subscriber_id) WHERE status = 'waiting';
-- the delays waiting after a digest, by window (housekeeping keeps the window)
CREATE INDEX step_runs_digest_ref_idx ON novu.step_runs (digest_id) WHERE status = 'waiting' AND digest_id IS NOT NULL;
-- one open window per (workflow, subscriber, digest step, key); the backoff looks up the last one
CREATE UNIQUE INDEX step_runs_window_idx ON novu.step_runs (workflow_id, subscriber_id, step_index, digest_key)
    WHERE kind = 'digest' AND status = 'waiting';
CREATE INDEX step_runs_digest_idx ON novu.step_runs (workflow_id, subscriber_id, step_index, digest_key, last_event_at)
    WHERE kind = 'digest';
COMMENT ON TABLE novu.step_runs IS 'Workflow engine: delays and digest windows waiting for their due time (status waiting, done, canceled, failed)';

-- The events of a digest window, its first (the leader) included; each keeps its
-- trigger's payload (step.events) and outbox order (oldest first).
CREATE TABLE novu.digest_events (
    digest_id       bigint NOT NULL REFERENCES novu.step_runs ON DELETE CASCADE,
    transaction_id  text COLLATE "C" NOT NULL,
    event_id        bigint NOT NULL,                -- novu.events.id: trigger order
    status          text NOT NULL DEFAULT 'merged' CHECK (status IN ('merged', 'canceled')),
    payload         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- its size as JSON text, for step.events' 1 MiB (the stored size is
    -- compressed: a payload that compresses well is many times larger)
    payload_bytes   integer GENERATED ALWAYS AS (octet_length(payload::text)) STORED,
    PRIMARY KEY (digest_id, transaction_id)
);
CREATE INDEX digest_events_transaction_idx ON novu.digest_events (transaction_id);
COMMENT ON TABLE novu.digest_events IS 'Workflow engine: the events merged into a digest window, oldest first by event_id';

-- The digest keys' locks.  The events of one digest key (workflow, subscriber,
-- step, digestKey value; by its hashtext) are serialized on a row here, locked
-- by novu._lock_digest_keys until the transaction ends: two at once end in one
-- window.  A row lock on a table only the workers write, not an advisory lock:
-- any role may take an advisory lock and hold it, and so stall a worker.  A row
-- is made when first needed and deleted by housekeeping when nobody holds it;
-- two keys with one hash only wait for each other.
CREATE TABLE novu.digest_locks (
    key_hash    integer PRIMARY KEY
);
COMMENT ON TABLE novu.digest_locks IS 'Workflow engine: one row per digest key hash, locked while a worker merges events of that key';

-- Where housekeeping's walk of each table stopped (novu._housekeeping): the
-- next call goes on after that id; 0 starts again from the oldest row.
CREATE TABLE novu.housekeeping_cursor (
    table_name  text PRIMARY KEY,
    after_id    bigint NOT NULL DEFAULT 0
);
INSERT INTO novu.housekeeping_cursor (table_name)
VALUES ('deliveries'), ('execution_details'), ('events'), ('step_runs');
COMMENT ON TABLE novu.housekeeping_cursor IS 'Housekeeping: where the walk of each history table goes on';

-- The activity log (Novu's execution details).
CREATE TABLE novu.execution_details (
    id              bigserial PRIMARY KEY,
    transaction_id  text COLLATE "C" NOT NULL,
    message_id      bigint,
    subscriber_id   text COLLATE "C",
    workflow_id     text COLLATE "C",
    channel         text,
    provider_id     text,
    status          text NOT NULL CHECK (status IN ('Success', 'Pending', 'Warning', 'Failed')),
    detail          text NOT NULL,
    raw             jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX execution_details_transaction_idx ON novu.execution_details (transaction_id);
COMMENT ON TABLE novu.execution_details IS 'Activity log: one row per step event ("Message sent", "Token removed: Unregistered", ...)';

-- The in-app feed (Novu's in_app messages): one row per in_app message, written by
-- the workers when the step is reached (novu._store_in_app), its id the delivery's
-- (novu.messages.id).  Content and subject are rendered; cta holds the redirect and
-- the action buttons with their status; actor is the author's public profile.
-- Marks are per row (seen, read, with the time each was last set).  A subscriber's
-- feed page and its count come from feed_idx (index-only: seen and read are
-- included); the unseen count and the unseen filter from the partial unseen_idx,
-- counted up to a limit, never over a subscriber's whole history.
CREATE TABLE novu.in_app_messages (
    id              bigint PRIMARY KEY,
    subscriber_id   text COLLATE "C" NOT NULL REFERENCES novu.subscribers ON DELETE CASCADE,
    transaction_id  text COLLATE "C" NOT NULL,
    workflow_id     text COLLATE "C" NOT NULL,
    feed_identifier text COLLATE "C",
    content         text NOT NULL,
    subject         text,
    avatar          text,
    cta             jsonb,
    payload         jsonb NOT NULL DEFAULT '{}',
    actor           jsonb,
    seen            boolean NOT NULL DEFAULT false,
    read            boolean NOT NULL DEFAULT false,
    archived        boolean NOT NULL DEFAULT false,
    last_seen_at    timestamptz,
    last_read_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX in_app_messages_feed_idx ON novu.in_app_messages (subscriber_id, created_at DESC, id DESC) INCLUDE (seen, read);
CREATE INDEX in_app_messages_unseen_idx ON novu.in_app_messages (subscriber_id, created_at DESC, id DESC) INCLUDE (read) WHERE NOT seen;
CREATE INDEX in_app_messages_transaction_idx ON novu.in_app_messages (transaction_id);
COMMENT ON TABLE novu.in_app_messages IS 'The in-app feed: one row per in_app message (rendered content, subject, cta, seen/read marks); read through novu.feed()';

-- Counters per integration that the deliveries table cannot give (retries, pruned
-- tokens), one row per delivery worker: two workers recording results at once never
-- wait for each other's transaction on one row.
CREATE TABLE novu.provider_stats (
    integration_id  bigint NOT NULL REFERENCES novu.integrations ON DELETE CASCADE,
    sent            bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    retried         bigint NOT NULL DEFAULT 0,
    tokens_pruned   bigint NOT NULL DEFAULT 0,
    last_error      text,
    last_error_at   timestamptz,
    worker          integer NOT NULL DEFAULT 0,
    PRIMARY KEY (integration_id, worker)
);
COMMENT ON TABLE novu.provider_stats IS 'Delivery counters per integration (see novu.stat_providers)';
COMMENT ON COLUMN novu.provider_stats.worker IS 'Delivery worker slot that counted these (novu.stat_providers sums them)';

-- CSV import: COPY into this staging table of text columns, then call novu.import_subscribers().
-- It is UNLOGGED on purpose: it only holds rows between a COPY and the import call.
CREATE UNLOGGED TABLE novu.subscriber_import (
    "subscriberId"  text,
    "firstName"     text,
    "lastName"      text,
    email           text,
    phone           text,
    locale          text,
    avatar          text,
    timezone        text,
    data            text,
    line            bigserial
);
COMMENT ON TABLE novu.subscriber_import IS 'CSV import staging area: COPY (columns "subscriberId","firstName","lastName",email,phone,locale,avatar[,timezone,data]) then SELECT novu.import_subscribers()';

CREATE TABLE novu.subscriber_import_rejects (
    line            bigint,
    subscriber_id   text,
    reason          text NOT NULL,
    row_data        jsonb NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE novu.subscriber_import_rejects IS 'Rows rejected by novu.import_subscribers(), with the reason';

-- pg_dump keeps user data of extension tables only when registered.
SELECT pg_catalog.pg_extension_config_dump('novu.integrations', '');
SELECT pg_catalog.pg_extension_config_dump('novu.integrations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.subscribers', '');
SELECT pg_catalog.pg_extension_config_dump('novu.subscriber_deletions', '');
SELECT pg_catalog.pg_extension_config_dump('novu.subscriber_channels', '');
SELECT pg_catalog.pg_extension_config_dump('novu.device_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('novu.device_tokens_seq_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.workflows', '');
SELECT pg_catalog.pg_extension_config_dump('novu.preferences', '');
SELECT pg_catalog.pg_extension_config_dump('novu.topics', '');
SELECT pg_catalog.pg_extension_config_dump('novu.topics_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.topic_subscribers', '');
SELECT pg_catalog.pg_extension_config_dump('novu.events', '');
SELECT pg_catalog.pg_extension_config_dump('novu.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('novu.deliveries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.step_runs', '');
SELECT pg_catalog.pg_extension_config_dump('novu.step_runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.digest_events', '');
SELECT pg_catalog.pg_extension_config_dump('novu.execution_details', '');
SELECT pg_catalog.pg_extension_config_dump('novu.execution_details_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('novu.subscriber_import_rejects', '');
SELECT pg_catalog.pg_extension_config_dump('novu.provider_stats', '');
SELECT pg_catalog.pg_extension_config_dump('novu.in_app_messages', '');

------------------------------------------------------------------------------
-- Views
-- They read the tables only; SQL functions below read them.
------------------------------------------------------------------------------

-- Messages: delivery rows, plus committed triggers not yet fanned out (one row per
-- recipient and step, status pending or canceled), so a trigger shows at once.
CREATE VIEW novu.messages AS
    SELECT d.id, d.transaction_id, d.workflow_id, d.subscriber_id, d.channel,
           d.provider_id, d.integration_identifier, d.device_token, d.status,
           d.attempts, d.last_error, d.provider_message_id,
           d.created_at, d.updated_at, d.sent_at
      FROM novu.deliveries d
    UNION ALL
    SELECT NULL::bigint, e.transaction_id, e.workflow_id, r.subscriber_id,
           s.step ->> 'type', NULL::text, NULL::text, NULL::text,
           CASE e.status WHEN 'canceled' THEN 'canceled' ELSE 'pending' END,
           0, NULL::text, NULL::text, e.created_at, e.created_at, NULL::timestamptz
      FROM novu.events e
      LEFT JOIN novu.workflows w ON w.workflow_id = e.workflow_id
      CROSS JOIN LATERAL unnest(COALESCE(e.recipients, ARRAY[NULL::text])) AS r(subscriber_id)
      CROSS JOIN LATERAL jsonb_array_elements(COALESCE(w.steps, '[{}]'::jsonb)) AS s(step)
     WHERE e.status IN ('pending', 'canceled')
       -- a delay or a digest is a step, not a message (novu.step_runs)
       AND (s.step ->> 'type') IS DISTINCT FROM 'delay' AND (s.step ->> 'type') IS DISTINCT FROM 'digest';
COMMENT ON VIEW novu.messages IS 'One row per (notification, step, delivery target); status pending, sending, sent, failed, canceled or skipped';

-- Notifications: one row per (transaction, subscriber).
CREATE VIEW novu.notifications AS
    SELECT e.transaction_id, e.workflow_id, r.subscriber_id, e.kind, e.status,
           e.payload, e.overrides, e.actor, e.created_at, e.processed_at
      FROM novu.events e
      CROSS JOIN LATERAL unnest(e.recipients) AS r(subscriber_id)
     WHERE e.kind = 'trigger'
    UNION ALL
    SELECT e.transaction_id, e.workflow_id, d.subscriber_id, e.kind, e.status,
           e.payload, e.overrides, e.actor, e.created_at, e.processed_at
      FROM novu.events e
      CROSS JOIN LATERAL (SELECT DISTINCT dd.subscriber_id
                            FROM novu.deliveries dd
                           WHERE dd.transaction_id = e.transaction_id) AS d
     WHERE e.kind IN ('broadcast', 'topic');
COMMENT ON VIEW novu.notifications IS 'One row per (transaction, subscriber); a broadcast or a trigger naming topics lists its subscribers once fanned out';

-- pg_stat-style delivery statistics per integration (the workers' counter rows summed).
CREATE VIEW novu.stat_providers AS
    SELECT i.identifier AS integration_identifier, i.provider_id, i.active,
           (SELECT count(*) FROM novu.deliveries d WHERE d.integration_id = i.id AND d.status = 'pending') AS pending,
           (SELECT count(*) FROM novu.deliveries d WHERE d.integration_id = i.id AND d.status = 'sending') AS in_flight,
           COALESCE(p.sent, 0) AS sent,
           COALESCE(p.failed, 0) AS failed,
           COALESCE(p.retried, 0) AS retried,
           COALESCE(p.tokens_pruned, 0) AS tokens_pruned,
           p.last_error, p.last_error_at
      FROM novu.integrations i
      LEFT JOIN LATERAL (
          SELECT sum(s.sent)::bigint AS sent, sum(s.failed)::bigint AS failed,
                 sum(s.retried)::bigint AS retried, sum(s.tokens_pruned)::bigint AS tokens_pruned,
                 (array_agg(s.last_error ORDER BY s.last_error_at DESC NULLS LAST))[1] AS last_error,
                 max(s.last_error_at) AS last_error_at
            FROM novu.provider_stats s
           WHERE s.integration_id = i.id) p ON true;
COMMENT ON VIEW novu.stat_providers IS 'Per integration: pending, in flight, sent, failed, retried, tokens pruned, last error and when';

------------------------------------------------------------------------------
-- Internal helpers in C (validation, templates, JSON)
------------------------------------------------------------------------------

CREATE FUNCTION novu._check_template(template text, field text)
RETURNS void
AS 'MODULE_PATHNAME', 'novu_check_template'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION novu._check_template(text, text) IS 'Internal: raise a syntax error naming the field if the template does not parse';

CREATE FUNCTION novu._validate_integration(provider_id text, credentials jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'novu_validate_integration'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION novu._validate_integration(text, jsonb) IS 'Internal: validate and normalize integration credentials of a provider (keys parsed with OpenSSL)';

CREATE FUNCTION novu._jwt_selftest(alg text, pem text)
RETURNS text
AS 'MODULE_PATHNAME', 'novu_jwt_selftest'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION novu._jwt_selftest(text, text) IS 'Internal test helper: sign a fixed JWT with the key (RS256 or ES256) and verify it with its public half';

CREATE FUNCTION novu._webpush_selftest()
RETURNS text
AS 'MODULE_PATHNAME', 'novu_webpush_selftest'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION novu._webpush_selftest() IS 'Internal test helper: RFC 8291 Appendix A encrypted with its fixed key and salt equals the RFC''s body byte for byte';

CREATE FUNCTION novu._parse_object(value text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'novu_parse_object'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION novu._parse_object(text) IS 'Internal: the text as a jsonb object, or NULL if it is not a valid JSON object (never raises)';

-- A subscriber as templates see it ("subscriber" of a message), built by C:
-- the workers build one per message they send, and jsonb_build_object looks
-- up each argument's type on every call (about 6 us a row; this about 1 us).
CREATE FUNCTION novu._profile(subscriber_id text, first_name text, last_name text, email text, phone text,
                              avatar text, locale text, timezone text, data jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'novu_profile'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION novu._profile(text, text, text, text, text, text, text, text, jsonb) IS 'Internal (workers): the subscriber object of a message''s templates, {subscriberId, firstName, lastName, email, phone, avatar, locale, timezone, data}, as jsonb_build_object would make it';

-- Every jsonb argument has a size limit, checked before anything is stored
-- (the README lists them); C code checks the trigger's arguments itself.
CREATE FUNCTION novu._check_size(value jsonb, field text, max_bytes integer)
RETURNS jsonb
LANGUAGE C STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'novu_check_size';
COMMENT ON FUNCTION novu._check_size(jsonb, text, integer) IS 'Internal: raise unless the value''s JSON text has at most max_bytes bytes and nests at most 64 levels; returns the value';

CREATE FUNCTION novu._json_size_ok(value jsonb, max_bytes integer)
RETURNS boolean
LANGUAGE C STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'novu_json_size_ok';
COMMENT ON FUNCTION novu._json_size_ok(jsonb, integer) IS 'Internal: whether novu._check_size would accept the value (its JSON text at most max_bytes bytes, numbers as written out; at most 64 levels), without raising';

-- Subscriber webhook URLs get the check of integration URLs (netpolicy.c): https
-- only, no user:password@, no fragment, at most 2048 bytes, no literal address
-- that novu.allowed_private_networks does not allow (so STABLE: it reads the
-- setting).  The error never repeats the URL: it may hold a secret.
CREATE FUNCTION novu._check_url(value text, field text)
RETURNS void
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'novu_check_url';
COMMENT ON FUNCTION novu._check_url(text, text) IS 'Internal: raise unless the value is a URL the outbound URL policy accepts (https, no user:password@ or fragment, at most 2048 bytes, no refused literal address)';

-- Device tokens have their provider's form before they are stored (APNs hex,
-- FCM and Expo character sets, web-push subscription JSON), and overrides keep
-- to each provider's allowlist: they shape the notification, never its target
-- or its authentication (provider_rules.c; the workers check both again
-- before sending, for rows stored by an older version).
CREATE FUNCTION novu._check_device_token(provider_id text, token text, field text)
RETURNS void
AS 'MODULE_PATHNAME', 'novu_check_device_token'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION novu._check_device_token(text, text, text) IS 'Internal: raise naming the field unless the device token has its provider''s form';

CREATE FUNCTION novu._check_overrides(overrides jsonb, field text)
RETURNS void
AS 'MODULE_PATHNAME', 'novu_check_overrides_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION novu._check_overrides(jsonb, text) IS 'Internal: raise naming the field unless every provider''s overrides keep to its allowlist (no token, topic, condition, "to", apns-topic, authorization; header values without control characters)';

------------------------------------------------------------------------------
-- Internal helpers (no grants: reached only through the API functions)
------------------------------------------------------------------------------

CREATE FUNCTION novu._iso(ts timestamptz)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;
COMMENT ON FUNCTION novu._iso(timestamptz) IS 'Internal: ISO 8601 UTC text of a timestamp, as Novu prints dates';

-- The providers are listed once, in the library (src/providers/registry.c).
CREATE FUNCTION novu._providers(channel text DEFAULT NULL)
RETURNS text[]
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'novu_providers_sql';
COMMENT ON FUNCTION novu._providers(text) IS 'Internal: the provider ids this version delivers to, of one channel (push, chat) or of all';

CREATE FUNCTION novu._push_providers()
RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT novu._providers() $$;
COMMENT ON FUNCTION novu._push_providers() IS 'Internal: the provider ids this version delivers to (every channel; the name is kept from 0.1.0)';

CREATE FUNCTION novu._provider_channel(provider_id text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN provider_id = ANY (novu._providers('chat')) THEN 'chat' ELSE 'push' END $$;
COMMENT ON FUNCTION novu._provider_channel(text) IS 'Internal: the channel a provider delivers on (push or chat)';

CREATE FUNCTION novu._check_provider(provider_id text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF provider_id IS NULL OR NOT provider_id = ANY (novu._push_providers()) THEN
        RAISE EXCEPTION 'unknown provider_id "%"', provider_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known providers: ' || array_to_string(novu._push_providers(), ', ') || '.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_provider(text) IS 'Internal: raise unless the provider id is known';

CREATE FUNCTION novu._check_id(value text, field text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR value = '' THEN
        RAISE EXCEPTION '% must not be empty', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give a %s of 1 to 255 characters.', field);
    END IF;
    IF length(value) > 255 THEN
        RAISE EXCEPTION '% is too long (% characters)', field, length(value)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A %s has at most 255 characters.', field);
    END IF;
    IF value ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN
        RAISE EXCEPTION '% must not contain control characters', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Use printable characters in %s.', field);
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_id(text, text) IS 'Internal: raise unless the identifier has 1 to 255 characters and no control characters';

-- Validate a Novu subscriber profile (at most 64 KiB); what = the argument name used in messages.
CREATE FUNCTION novu._check_profile(profile jsonb, what text, allow_channels boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
    i integer := 0;
    ch jsonb;
BEGIN
    IF profile IS NULL OR jsonb_typeof(profile) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass Novu profile keys, e.g. {"email": "a@b.co", "firstName": "Ada"}.';
    END IF;
    PERFORM novu._check_size(profile, what, 65536);
    FOR k, v IN SELECT * FROM jsonb_each(profile) LOOP
        CASE
        WHEN k IN ('email', 'firstName', 'lastName', 'phone', 'avatar', 'locale', 'timezone', 'subscriberId') THEN
            IF jsonb_typeof(v) NOT IN ('string', 'null') THEN
                RAISE EXCEPTION '%.% must be a string', what, k
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Profile fields are strings (or null to clear them).';
            END IF;
        WHEN k = 'data' THEN
            IF jsonb_typeof(v) NOT IN ('object', 'null') THEN
                RAISE EXCEPTION '%.data must be a JSON object', what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Custom data is a JSON object of key-value pairs.';
            END IF;
        WHEN k = 'channels' AND allow_channels THEN
            IF jsonb_typeof(v) <> 'array' THEN
                RAISE EXCEPTION '%.channels must be an array', what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'channels is an array of {"providerId", "integrationIdentifier", "credentials"}.';
            END IF;
            FOR ch IN SELECT * FROM jsonb_array_elements(v) LOOP
                IF jsonb_typeof(ch) <> 'object' OR jsonb_typeof(ch -> 'providerId') IS DISTINCT FROM 'string'
                   OR jsonb_typeof(ch -> 'credentials') IS DISTINCT FROM 'object'
                   OR jsonb_typeof(ch -> 'integrationIdentifier') NOT IN ('string', 'null')
                   OR EXISTS (SELECT FROM jsonb_object_keys(ch) x WHERE x NOT IN ('providerId', 'integrationIdentifier', 'credentials')) THEN
                    RAISE EXCEPTION '%.channels[%] must be an object with providerId and credentials', what, i
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Example: {"providerId": "fcm", "credentials": {"deviceTokens": ["token"]}}.';
                END IF;
                i := i + 1;
            END LOOP;
        ELSE
            RAISE EXCEPTION 'unknown key "%" in %', k, what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Profile keys: subscriberId, email, firstName, lastName, phone, avatar, locale, timezone, data'
                             || CASE WHEN allow_channels THEN ', channels.' ELSE '.' END;
        END CASE;
    END LOOP;

    IF profile ->> 'email' IS NOT NULL
       AND profile ->> 'email' !~ '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}$' THEN
        RAISE EXCEPTION 'invalid email "%" in %', profile ->> 'email', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An email looks like name@example.com.';
    END IF;
    IF profile ->> 'locale' IS NOT NULL
       AND profile ->> 'locale' !~ '^[a-zA-Z]{2}(-[a-zA-Z]{2})?$' THEN
        RAISE EXCEPTION 'invalid locale "%" in %', profile ->> 'locale', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A locale is a language code with an optional region, e.g. "en" or "en-US".';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_profile(jsonb, text, boolean) IS 'Internal: raise unless the jsonb is a valid Novu subscriber profile';

-- The Novu JSON shape of a subscriber, with its channels.
CREATE FUNCTION novu._subscriber_json(s novu.subscribers)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'subscriberId', s.subscriber_id,
        'firstName', s.first_name,
        'lastName', s.last_name,
        'email', s.email,
        'phone', s.phone,
        'avatar', s.avatar,
        'locale', s.locale,
        'timezone', s.timezone,
        'data', s.data,
        'channels', COALESCE((
            SELECT jsonb_agg(jsonb_build_object(
                       'providerId', i.provider_id,
                       'integrationIdentifier', i.identifier,
                       'credentials', jsonb_strip_nulls(jsonb_build_object(
                           'deviceTokens', COALESCE((SELECT jsonb_agg(t.device_token ORDER BY t.seq)
                                                       FROM novu.device_tokens t
                                                      WHERE t.subscriber_id = c.subscriber_id
                                                        AND t.integration_id = c.integration_id), '[]'::jsonb),
                           'webhookUrl', c.webhook_url)))
                     ORDER BY i.provider_id, i.identifier)
              FROM novu.subscriber_channels c
              JOIN novu.integrations i ON i.id = c.integration_id
             WHERE c.subscriber_id = s.subscriber_id), '[]'::jsonb),
        'isOnline', s.is_online,
        'lastOnlineAt', novu._iso(s.last_online_at),
        'deleted', false,
        'createdAt', novu._iso(s.created_at),
        'updatedAt', novu._iso(s.updated_at))
$$;
COMMENT ON FUNCTION novu._subscriber_json(novu.subscribers) IS 'Internal: Novu''s JSON shape of a subscriber, channels included';

-- Upsert a subscriber from a profile; returns true if it was created.
CREATE FUNCTION novu._upsert_subscriber(p_subscriber_id text, p_profile jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p jsonb := COALESCE(p_profile, '{}');
    created boolean;
    ch jsonb;
BEGIN
    PERFORM novu._check_id(p_subscriber_id, 'subscriberId');
    PERFORM novu._check_profile(p, 'profile', true);
    IF p ? 'subscriberId' AND p ->> 'subscriberId' IS DISTINCT FROM p_subscriber_id THEN
        RAISE EXCEPTION 'profile.subscriberId "%" differs from subscriber_id "%"', p ->> 'subscriberId', p_subscriber_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A subscriber is renamed by creating the new one and deleting the old one.';
    END IF;

    INSERT INTO novu.subscribers AS s
           (subscriber_id, email, first_name, last_name, phone, avatar, locale, timezone, data)
    VALUES (p_subscriber_id, p ->> 'email', p ->> 'firstName', p ->> 'lastName', p ->> 'phone',
            p ->> 'avatar', p ->> 'locale', p ->> 'timezone',
            CASE WHEN jsonb_typeof(p -> 'data') = 'object' THEN p -> 'data' ELSE '{}'::jsonb END)
    ON CONFLICT (subscriber_id) DO UPDATE SET
        email      = CASE WHEN p ? 'email'     THEN excluded.email      ELSE s.email END,
        first_name = CASE WHEN p ? 'firstName' THEN excluded.first_name ELSE s.first_name END,
        last_name  = CASE WHEN p ? 'lastName'  THEN excluded.last_name  ELSE s.last_name END,
        phone      = CASE WHEN p ? 'phone'     THEN excluded.phone      ELSE s.phone END,
        avatar     = CASE WHEN p ? 'avatar'    THEN excluded.avatar     ELSE s.avatar END,
        locale     = CASE WHEN p ? 'locale'    THEN excluded.locale     ELSE s.locale END,
        timezone   = CASE WHEN p ? 'timezone'  THEN excluded.timezone   ELSE s.timezone END,
        data       = CASE WHEN p ? 'data'      THEN excluded.data       ELSE s.data END,
        updated_at = now()
    RETURNING (xmax = 0) INTO created;

    FOR ch IN SELECT * FROM jsonb_array_elements(COALESCE(p -> 'channels', '[]')) LOOP
        PERFORM novu._store_credentials(p_subscriber_id, ch ->> 'providerId', ch -> 'credentials',
                                        ch ->> 'integrationIdentifier', false);
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION novu._upsert_subscriber(text, jsonb) IS 'Internal: create or update a subscriber from a Novu profile (channels appended); true if created';

-- Resolve the integration credentials are stored for.
CREATE FUNCTION novu._resolve_integration(p_provider_id text, p_identifier text)
RETURNS novu.integrations
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i novu.integrations;
BEGIN
    PERFORM novu._check_provider(p_provider_id);
    IF p_identifier IS NOT NULL THEN
        SELECT * INTO i FROM novu.integrations WHERE identifier = p_identifier;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'integration "%" not found', p_identifier
                USING ERRCODE = 'undefined_object',
                      HINT = 'integration_identifier names an integration created with novu.create_integration().';
        END IF;
        IF i.provider_id <> p_provider_id THEN
            RAISE EXCEPTION 'integration "%" is of provider "%", not "%"', p_identifier, i.provider_id, p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the provider_id of that integration, or another integration_identifier.';
        END IF;
        RETURN i;
    END IF;
    SELECT * INTO i FROM novu.integrations
     WHERE provider_id = p_provider_id AND active
     ORDER BY created_at DESC, id DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active integration for provider "%"', p_provider_id
            USING ERRCODE = 'undefined_object',
                  HINT = format('An administrator creates one with novu.create_integration(%L, credentials).', p_provider_id);
    END IF;
    RETURN i;
END
$$;
COMMENT ON FUNCTION novu._resolve_integration(text, text) IS 'Internal: the named integration of the provider, else its newest active one';

-- Validate subscriber credentials for a provider, every device token checked for
-- its provider's form; returns the de-duplicated token list.
CREATE FUNCTION novu._check_credentials(p_provider_id text, p_credentials jsonb)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    t jsonb;
    i integer := 0;
    chat boolean;
    url_providers text[] := novu._providers('webhookUrl');
BEGIN
    IF p_credentials IS NULL OR jsonb_typeof(p_credentials) <> 'object' THEN
        RAISE EXCEPTION 'credentials must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"deviceTokens": ["token-1"]}.';
    END IF;
    PERFORM novu._check_size(p_credentials, 'credentials', 65536);
    chat := novu._provider_channel(p_provider_id) = 'chat';
    FOR k IN SELECT jsonb_object_keys(p_credentials) LOOP
        IF k = 'webhookUrl' AND NOT p_provider_id = ANY (url_providers) THEN
            RAISE EXCEPTION 'credentials.webhookUrl is not used by provider "%"', p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Push providers take deviceTokens; webhookUrl is for %s.', array_to_string(url_providers, ', '));
        ELSIF k = 'deviceTokens' AND chat THEN
            RAISE EXCEPTION 'credentials.deviceTokens is not used by provider "%"', p_provider_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A chat provider takes the webhook URL: {"webhookUrl": "https://..."}.';
        ELSIF k NOT IN ('deviceTokens', 'webhookUrl') THEN
            RAISE EXCEPTION 'unknown key "%" in credentials', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Subscriber credentials take deviceTokens (push) or webhookUrl (%s).', array_to_string(url_providers, ', '));
        END IF;
    END LOOP;
    IF p_credentials ? 'webhookUrl' THEN
        IF jsonb_typeof(p_credentials -> 'webhookUrl') <> 'string' THEN
            RAISE EXCEPTION 'credentials.webhookUrl must be a string'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the https URL of the webhook.';
        END IF;
        PERFORM novu._check_url(p_credentials ->> 'webhookUrl', 'credentials.webhookUrl');
    ELSIF chat THEN
        RAISE EXCEPTION 'credentials.webhookUrl is required for provider "%"', p_provider_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A chat provider takes the webhook URL: {"webhookUrl": "https://..."}.';
    END IF;
    IF NOT p_credentials ? 'deviceTokens' THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(p_credentials -> 'deviceTokens') <> 'array' THEN
        RAISE EXCEPTION 'credentials.deviceTokens must be an array of non-empty strings'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"deviceTokens": ["token-1", "token-2"]}.';
    END IF;
    IF jsonb_array_length(p_credentials -> 'deviceTokens') > 100 THEN
        RAISE EXCEPTION 'credentials.deviceTokens has too many tokens (%)', jsonb_array_length(p_credentials -> 'deviceTokens')
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store at most 100 device tokens per call.';
    END IF;
    FOR t IN SELECT * FROM jsonb_array_elements(p_credentials -> 'deviceTokens') LOOP
        IF jsonb_typeof(t) <> 'string' OR t #>> '{}' = '' THEN
            RAISE EXCEPTION 'credentials.deviceTokens[%] must be a non-empty string', i
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'deviceTokens is an array of non-empty strings.';
        END IF;
        IF length(t #>> '{}') > 4096 THEN
            RAISE EXCEPTION 'credentials.deviceTokens[%] is too long (% characters)', i, length(t #>> '{}')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A device token has at most 4096 characters.';
        END IF;
        PERFORM novu._check_device_token(p_provider_id, t #>> '{}', format('credentials.deviceTokens[%s]', i));
        i := i + 1;
    END LOOP;
    RETURN ARRAY(SELECT tok FROM jsonb_array_elements_text(p_credentials -> 'deviceTokens') WITH ORDINALITY a(tok, n)
                 GROUP BY tok ORDER BY min(n));
END
$$;
COMMENT ON FUNCTION novu._check_credentials(text, jsonb) IS 'Internal: validate subscriber credentials; returns the de-duplicated device tokens in order';

-- Store credentials of one subscriber for one integration (replace or append).
CREATE FUNCTION novu._store_credentials(p_subscriber_id text, p_provider_id text, p_credentials jsonb,
                                        p_identifier text, p_replace boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    integ novu.integrations;
    tokens text[];
    ntokens bigint;
BEGIN
    PERFORM novu._check_id(p_subscriber_id, 'subscriberId');
    integ := novu._resolve_integration(p_provider_id, p_identifier);
    tokens := novu._check_credentials(p_provider_id, p_credentials);
    PERFORM FROM novu.subscribers WHERE subscriber_id = p_subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', p_subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it first with novu.identify().';
    END IF;

    INSERT INTO novu.subscriber_channels AS c (subscriber_id, integration_id, webhook_url)
    VALUES (p_subscriber_id, integ.id, p_credentials ->> 'webhookUrl')
    ON CONFLICT (subscriber_id, integration_id) DO UPDATE SET
        webhook_url = CASE WHEN p_replace OR p_credentials ? 'webhookUrl' THEN excluded.webhook_url
                           ELSE c.webhook_url END,
        updated_at = now();

    IF p_replace THEN
        DELETE FROM novu.device_tokens
         WHERE subscriber_id = p_subscriber_id AND integration_id = integ.id
           AND device_token <> ALL (tokens);
    END IF;

    -- A token belongs to one subscriber per integration: take it over from anyone
    -- else.  Registering a token again dates it anew: APNs' "invalid since" answer
    -- removes only a token not registered again after that time.
    INSERT INTO novu.device_tokens AS d (integration_id, device_token, subscriber_id)
    SELECT integ.id, tok, p_subscriber_id
      FROM unnest(tokens) WITH ORDINALITY AS u(tok, n)
     ORDER BY n
    ON CONFLICT (integration_id, device_token) DO UPDATE SET
        subscriber_id = excluded.subscriber_id,
        created_at = now();

    -- At most 100 tokens per subscriber and integration in all, not only per
    -- call: a trigger makes one message per token, and appending without end
    -- would let one trigger make any number of them.  (Concurrent calls for one
    -- subscriber and integration wait for each other on its channel row,
    -- upserted above, and this count sees what the other committed.)
    SELECT count(*) INTO ntokens FROM novu.device_tokens
     WHERE subscriber_id = p_subscriber_id AND integration_id = integ.id;
    IF ntokens > 100 THEN
        RAISE EXCEPTION 'subscriber "%" would have % device tokens for integration "%"', p_subscriber_id, ntokens, integ.identifier
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'A subscriber keeps at most 100 device tokens per integration: replace them with novu.set_credentials(), or remove stale ones with novu.remove_device_token().';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._store_credentials(text, text, jsonb, text, boolean) IS 'Internal: store subscriber credentials for an integration, replacing (PUT) or appending (PATCH)';

------------------------------------------------------------------------------
-- Subscribers API
------------------------------------------------------------------------------

CREATE FUNCTION novu.get_subscriber(subscriber_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s novu.subscribers;
BEGIN
    PERFORM novu._check_id(get_subscriber.subscriber_id, 'subscriber_id');
    SELECT * INTO s FROM novu.subscribers x WHERE x.subscriber_id = get_subscriber.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', get_subscriber.subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with novu.identify().';
    END IF;
    RETURN novu._subscriber_json(s);
END
$$;
COMMENT ON FUNCTION novu.get_subscriber(text) IS 'Get a subscriber (Novu shape, with channels); unknown subscriberId is an error';

CREATE FUNCTION novu.identify(subscriber_id text, profile jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._upsert_subscriber(identify.subscriber_id, COALESCE(profile, '{}'));
    RETURN novu.get_subscriber(identify.subscriber_id);
END
$$;
COMMENT ON FUNCTION novu.identify(text, jsonb) IS 'Create or update a subscriber (upsert); only given keys change, data is replaced whole, channels are appended';

CREATE FUNCTION novu.update_subscriber(subscriber_id text, profile jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(update_subscriber.subscriber_id, 'subscriberId');
    -- FOR NO KEY UPDATE: the key does not change, and a worker storing an
    -- in-app message for this subscriber (its foreign key check) does not wait
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = update_subscriber.subscriber_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', update_subscriber.subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with novu.identify().';
    END IF;
    PERFORM novu._upsert_subscriber(update_subscriber.subscriber_id, profile);
    RETURN novu.get_subscriber(update_subscriber.subscriber_id);
END
$$;
COMMENT ON FUNCTION novu.update_subscriber(text, jsonb) IS 'Update an existing subscriber; only given keys change; unknown subscriberId is an error';

CREATE FUNCTION novu.delete_subscriber(subscriber_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_it boolean;
    feed_rows integer;
BEGIN
    -- An exact lookup: an id stored before control characters were refused
    -- (U+0080..U+009F, before 0.18.0) can still be deleted; a new one is checked
    -- as identify checks it, and nothing is written for a refused one.
    IF delete_subscriber.subscriber_id IS NULL OR delete_subscriber.subscriber_id = ''
       OR length(delete_subscriber.subscriber_id) > 255
       OR NOT EXISTS (SELECT FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id) THEN
        PERFORM novu._check_id(delete_subscriber.subscriber_id, 'subscriber_id');
    END IF;
    -- The subscriber's row first: a worker storing an in-app message for it
    -- holds it (the feed's foreign key) and is waited for; then none can.
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id FOR UPDATE;
    -- Its in-app feed goes with it (the foreign key's cascade): a subscriber
    -- made later with the same id starts with an empty feed, as a new Novu
    -- subscriber has a new _id.  The rows are locked in feed order first, as
    -- the mark functions lock them (the cascade takes them in the table's).
    PERFORM FROM novu.in_app_messages m
      WHERE m.subscriber_id = delete_subscriber.subscriber_id
      ORDER BY m.created_at DESC, m.id DESC
      FOR UPDATE;
    GET DIAGNOSTICS feed_rows = ROW_COUNT;
    DELETE FROM novu.subscribers s WHERE s.subscriber_id = delete_subscriber.subscriber_id;
    found_it := FOUND;
    -- a trigger made before now and not fanned out yet must not create it
    -- again (the fan-out creates missing recipients); also when it does not
    -- exist yet because that trigger's fan-out has not run
    INSERT INTO novu.subscriber_deletions AS x (subscriber_id, deleted_at, last_event_id)
    SELECT delete_subscriber.subscriber_id, now(),
           CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END
      FROM novu.events_id_seq q
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
    IF feed_rows > 0 THEN
        PERFORM novu._notify_in_app(delete_subscriber.subscriber_id);
    END IF;
    RETURN found_it;
END
$$;
COMMENT ON FUNCTION novu.delete_subscriber(text) IS 'Delete a subscriber with its credentials, preferences and in-app feed; pending deliveries and waiting delays and digests are canceled, the activity history stays; false if unknown';

CREATE FUNCTION novu.list_subscribers(page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- at most 1,000,000 rows skipped, as every list
    PERFORM novu._check_paging(page, page_size);
    RETURN jsonb_build_object(
        'page', page,
        'totalCount', (SELECT count(*) FROM novu.subscribers),
        'pageSize', page_size,
        'data', COALESCE((SELECT jsonb_agg(novu._subscriber_json(s) ORDER BY s.created_at, s.subscriber_id)
                            FROM (SELECT * FROM novu.subscribers
                                   ORDER BY created_at, subscriber_id
                                   OFFSET page::bigint * page_size LIMIT page_size) s), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION novu.list_subscribers(integer, integer) IS 'List subscribers by creation order: {page, totalCount, pageSize, data}';

CREATE FUNCTION novu.bulk_identify(subscribers jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item jsonb;
    sid text;
    created jsonb := '[]';
    updated jsonb := '[]';
    failed jsonb := '[]';
    msg text;
BEGIN
    IF subscribers IS NULL OR jsonb_typeof(subscribers) <> 'array' THEN
        RAISE EXCEPTION 'subscribers must be a JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass an array of profiles, each with a subscriberId.';
    END IF;
    IF jsonb_array_length(subscribers) > 500 THEN
        RAISE EXCEPTION 'too many subscribers: % (at most 500 per call)', jsonb_array_length(subscribers)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Split the array, or use the CSV import (novu.subscriber_import) for large loads.';
    END IF;
    FOR item IN SELECT * FROM jsonb_array_elements(subscribers) LOOP
        sid := CASE WHEN jsonb_typeof(item) = 'object' THEN item ->> 'subscriberId' END;
        BEGIN
            IF jsonb_typeof(item) IS DISTINCT FROM 'object' THEN
                RAISE EXCEPTION 'each item must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(item -> 'subscriberId') IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION 'subscriberId is required' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF novu._upsert_subscriber(sid, item) THEN
                created := created || jsonb_build_array(jsonb_build_object('subscriberId', sid));
            ELSE
                updated := updated || jsonb_build_array(jsonb_build_object('subscriberId', sid));
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            failed := failed || jsonb_build_array(jsonb_build_object('subscriberId', sid, 'message', msg));
        END;
    END LOOP;
    RETURN jsonb_build_object('created', created, 'updated', updated, 'failed', failed);
END
$$;
COMMENT ON FUNCTION novu.bulk_identify(jsonb) IS 'Create or update up to 500 subscribers; per-item created/updated/failed, a bad item never fails the others';

CREATE FUNCTION novu.set_online_status(subscriber_id text, is_online boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(set_online_status.subscriber_id, 'subscriber_id');
    IF is_online IS NULL THEN
        RAISE EXCEPTION 'is_online must not be null'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
    END IF;
    UPDATE novu.subscribers s
       SET is_online = set_online_status.is_online,
           last_online_at = CASE WHEN s.is_online AND NOT set_online_status.is_online THEN now()
                                 ELSE s.last_online_at END,
           updated_at = now()
     WHERE s.subscriber_id = set_online_status.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', set_online_status.subscriber_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.identify().';
    END IF;
    RETURN novu.get_subscriber(set_online_status.subscriber_id);
END
$$;
COMMENT ON FUNCTION novu.set_online_status(text, boolean) IS 'Set isOnline; going offline records lastOnlineAt';

-- CSV import: a row of more than 64 KiB is rejected, not parsed; a row whose data
-- novu._parse_object cannot hold (numbers such as 1e1000000, nesting past 64
-- levels) is rejected alone.
CREATE FUNCTION novu.import_subscribers()
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_total bigint;
    n_rejected bigint;
    n_created bigint;
    n_updated bigint;
BEGIN
    -- Wait for COPYs in progress; block new ones until this transaction ends.
    LOCK TABLE novu.subscriber_import IN EXCLUSIVE MODE;

    CREATE TEMP TABLE pg_temp.novu_import_checked ON COMMIT DROP AS
    SELECT i.line, i.ord, i.sid, i.first_name, i.last_name, i.email, i.phone, i.locale, i.avatar,
           i.timezone, i.data_text,
           CASE WHEN i.row_bytes <= 65536 THEN novu._parse_object(i.data_text) END AS data,
           CASE
               WHEN i.sid IS NULL THEN 'missing subscriberId'
               WHEN i.row_bytes > 65536 THEN 'row is larger than 64 KiB'
               WHEN length(i.sid) > 255 THEN 'subscriberId longer than 255 characters'
               WHEN i.sid ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN 'subscriberId contains control characters'
               WHEN i.email IS NOT NULL AND i.email !~ '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}$'
                   THEN 'invalid email format'
               WHEN i.locale IS NOT NULL AND i.locale !~ '^[a-zA-Z]{2}(-[a-zA-Z]{2})?$'
                   THEN 'invalid locale format'
               WHEN i.data_text IS NOT NULL AND novu._parse_object(i.data_text) IS NULL
                   THEN 'data is not a JSON object'
               -- numbers count as written out: 1e130000 is a few bytes in the
               -- CSV row and 130,001 characters in every message's subscriber
               WHEN i.data_text IS NOT NULL AND NOT novu._json_size_ok(novu._parse_object(i.data_text), 65536)
                   THEN 'data is larger than 64 KiB as JSON text'
           END AS reason
      FROM (SELECT line,
                   -- the row order: line (novu_app may write it, repeated), then where the row is
                   row_number() OVER (ORDER BY s.line, s.ctid) AS ord,
                   nullif(btrim(s."subscriberId"), '') AS sid,
                   nullif(btrim(s."firstName"), '') AS first_name,
                   nullif(btrim(s."lastName"), '') AS last_name,
                   nullif(btrim(s.email), '') AS email,
                   nullif(btrim(s.phone), '') AS phone,
                   nullif(btrim(s.locale), '') AS locale,
                   nullif(btrim(s.avatar), '') AS avatar,
                   nullif(btrim(s.timezone), '') AS timezone,
                   nullif(btrim(s.data), '') AS data_text,
                   COALESCE(octet_length(s."subscriberId"), 0) + COALESCE(octet_length(s."firstName"), 0)
                   + COALESCE(octet_length(s."lastName"), 0) + COALESCE(octet_length(s.email), 0)
                   + COALESCE(octet_length(s.phone), 0) + COALESCE(octet_length(s.locale), 0)
                   + COALESCE(octet_length(s.avatar), 0) + COALESCE(octet_length(s.timezone), 0)
                   + COALESCE(octet_length(s.data), 0) AS row_bytes
              FROM novu.subscriber_import s) i;
    GET DIAGNOSTICS n_total = ROW_COUNT;

    -- A subscriberId appearing twice: the last line wins, earlier ones are rejected.
    UPDATE pg_temp.novu_import_checked c
       SET reason = 'duplicate subscriberId (a later line wins)'
      FROM (SELECT sid, max(ord) AS last_ord
              FROM pg_temp.novu_import_checked
             WHERE reason IS NULL
             GROUP BY sid HAVING count(*) > 1) d
     WHERE c.reason IS NULL AND c.sid = d.sid AND c.ord < d.last_ord;

    INSERT INTO novu.subscriber_import_rejects (line, subscriber_id, reason, row_data)
    SELECT line, sid, reason,
           jsonb_strip_nulls(jsonb_build_object('subscriberId', sid, 'firstName', first_name,
               'lastName', last_name, 'email', email, 'phone', phone, 'locale', locale,
               'avatar', avatar, 'timezone', timezone, 'data', data_text))
      FROM pg_temp.novu_import_checked
     WHERE reason IS NOT NULL;
    GET DIAGNOSTICS n_rejected = ROW_COUNT;

    WITH up AS (
        INSERT INTO novu.subscribers AS s
               (subscriber_id, email, first_name, last_name, phone, avatar, locale, timezone, data)
        SELECT sid, email, first_name, last_name, phone, avatar, locale, timezone, COALESCE(data, '{}')
          FROM pg_temp.novu_import_checked
         WHERE reason IS NULL
        ON CONFLICT (subscriber_id) DO UPDATE SET
            email      = COALESCE(excluded.email, s.email),
            first_name = COALESCE(excluded.first_name, s.first_name),
            last_name  = COALESCE(excluded.last_name, s.last_name),
            phone      = COALESCE(excluded.phone, s.phone),
            avatar     = COALESCE(excluded.avatar, s.avatar),
            locale     = COALESCE(excluded.locale, s.locale),
            timezone   = COALESCE(excluded.timezone, s.timezone),
            data       = CASE WHEN excluded.data = '{}' THEN s.data ELSE excluded.data END,
            updated_at = now()
        RETURNING (xmax = 0) AS created)
    SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created)
      INTO n_created, n_updated
      FROM up;

    TRUNCATE novu.subscriber_import RESTART IDENTITY;
    DROP TABLE pg_temp.novu_import_checked;

    RETURN jsonb_build_object('total', n_total, 'created', n_created, 'updated', n_updated,
                              'rejected', n_rejected);
END
$$;
COMMENT ON FUNCTION novu.import_subscribers() IS 'Validate and upsert every row COPYed into novu.subscriber_import, set-based; bad rows go to novu.subscriber_import_rejects with the reason';

------------------------------------------------------------------------------
-- Credentials API
------------------------------------------------------------------------------

CREATE FUNCTION novu.set_credentials(subscriber_id text, provider_id text, credentials jsonb,
                                     integration_identifier text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._store_credentials(set_credentials.subscriber_id, provider_id, credentials,
                                    integration_identifier, true);
    RETURN novu.get_subscriber(set_credentials.subscriber_id);
END
$$;
COMMENT ON FUNCTION novu.set_credentials(text, text, jsonb, text) IS 'Replace a subscriber''s credentials for one integration (REST PUT); default: the newest active integration of the provider';

CREATE FUNCTION novu.add_credentials(subscriber_id text, provider_id text, credentials jsonb,
                                     integration_identifier text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._store_credentials(add_credentials.subscriber_id, provider_id, credentials,
                                    integration_identifier, false);
    RETURN novu.get_subscriber(add_credentials.subscriber_id);
END
$$;
COMMENT ON FUNCTION novu.add_credentials(text, text, jsonb, text) IS 'Append device tokens to a subscriber''s credentials, de-duplicated (REST PATCH)';

CREATE FUNCTION novu.remove_device_token(subscriber_id text, provider_id text, token text,
                                         integration_identifier text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(remove_device_token.subscriber_id, 'subscriber_id');
    IF remove_device_token.token IS NULL OR remove_device_token.token = '' THEN
        RAISE EXCEPTION 'token must not be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the device token to remove.';
    END IF;
    PERFORM novu._check_provider(provider_id);
    IF integration_identifier IS NOT NULL THEN
        PERFORM novu._resolve_integration(provider_id, integration_identifier);
    END IF;
    DELETE FROM novu.device_tokens d
     USING novu.integrations i
     WHERE i.id = d.integration_id
       AND d.subscriber_id = remove_device_token.subscriber_id
       AND d.device_token = token
       AND i.provider_id = remove_device_token.provider_id
       AND (remove_device_token.integration_identifier IS NULL
            OR i.identifier = remove_device_token.integration_identifier);
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION novu.remove_device_token(text, text, text, text) IS 'Remove one device token of a subscriber (all integrations of the provider unless one is named); true if removed';

CREATE FUNCTION novu.delete_credentials(subscriber_id text, provider_id text,
                                        integration_identifier text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(delete_credentials.subscriber_id, 'subscriber_id');
    PERFORM novu._check_provider(provider_id);
    IF integration_identifier IS NOT NULL THEN
        PERFORM novu._resolve_integration(provider_id, integration_identifier);
    END IF;
    DELETE FROM novu.subscriber_channels c
     USING novu.integrations i
     WHERE i.id = c.integration_id
       AND c.subscriber_id = delete_credentials.subscriber_id
       AND i.provider_id = delete_credentials.provider_id
       AND (delete_credentials.integration_identifier IS NULL
            OR i.identifier = delete_credentials.integration_identifier);
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION novu.delete_credentials(text, text, text) IS 'Delete a subscriber''s credentials of a provider, or of one integration; true if any were deleted';

------------------------------------------------------------------------------
-- Secrets at rest
-- Integration secrets (the fields listed in secrets.c: serviceAccount.private_key,
-- apns secretKey and privateKey, expo and one-signal apiKey, push-webhook secretKey,
-- web-push vapidPrivateKey, chat-webhook hmacSecretKey) are stored in place as
-- AES-256-GCM envelopes "novu:v1:<key id>:<base64url(nonce || ciphertext || tag)>"
-- under the key of novu.secret_key_file, bound to their integration's id and field.
-- Only C code decrypts them: the delivery workers, and novu.reencrypt_secrets()
-- (superuser only).
------------------------------------------------------------------------------

-- Every write of a row encrypts its clear secrets; without a key, storing one is refused.
CREATE FUNCTION novu._seal_secrets()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'novu_seal_secrets';
COMMENT ON FUNCTION novu._seal_secrets() IS 'Internal: trigger encrypting the secrets of novu.integrations rows (AES-256-GCM, novu.secret_key_file)';
CREATE TRIGGER seal_secrets BEFORE INSERT OR UPDATE OF id, provider_id, credentials ON novu.integrations
    FOR EACH ROW EXECUTE FUNCTION novu._seal_secrets();

-- The one list of secret fields also masks what the API returns.
CREATE FUNCTION novu._mask_secrets(provider_id text, credentials jsonb)
RETURNS jsonb
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'novu_mask_secrets';
COMMENT ON FUNCTION novu._mask_secrets(text, jsonb) IS 'Internal: credentials with every secret field shown as ********';

-- Rotation and the move out of clear text: superuser only (it decrypts every secret).
CREATE FUNCTION novu.reencrypt_secrets()
RETURNS integer
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'novu_reencrypt_secrets';
COMMENT ON FUNCTION novu.reencrypt_secrets() IS 'Superuser: encrypt every integration secret under novu.secret_key_file (re-encrypting those of novu.previous_secret_key_file, encrypting clear ones); returns the number of integrations rewritten';

------------------------------------------------------------------------------
-- Integrations API (admin)
------------------------------------------------------------------------------

-- JSON of an integration with secret values masked.
CREATE FUNCTION novu._integration_json(i novu.integrations)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'identifier', i.identifier,
        'providerId', i.provider_id,
        'channel', i.channel,
        'name', i.name,
        'active', i.active,
        'credentials', novu._mask_secrets(i.provider_id, i.credentials),
        'createdAt', novu._iso(i.created_at),
        'updatedAt', novu._iso(i.updated_at))
$$;
COMMENT ON FUNCTION novu._integration_json(novu.integrations) IS 'Internal: JSON of an integration, secrets masked';

CREATE FUNCTION novu._check_identifier(value text, field text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(value, field);
    IF value !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' THEN
        RAISE EXCEPTION 'invalid % "%"', field, value
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use letters, digits and _ . : - (starting with a letter or digit).';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_identifier(text, text) IS 'Internal: raise unless the value is a slug-like identifier';

CREATE FUNCTION novu.create_integration(provider_id text, credentials jsonb, identifier text DEFAULT NULL,
                                        name text DEFAULT NULL, active boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    creds jsonb;
    ident text := identifier;
    new_id bigint;
BEGIN
    PERFORM novu._check_provider(provider_id);
    creds := novu._validate_integration(provider_id, credentials);
    IF active IS NULL THEN
        RAISE EXCEPTION 'active must not be null'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
    END IF;
    IF ident IS NULL THEN
        -- Novu-style generated identifier, e.g. fcm-Ab12Cd34x
        LOOP
            ident := translate(encode(uuid_send(gen_random_uuid()), 'base64'), '+/=', '');
            EXIT WHEN length(ident) >= 9;
        END LOOP;
        ident := provider_id || '-' || substr(ident, 1, 9);
    ELSE
        PERFORM novu._check_identifier(ident, 'identifier');
    END IF;
    IF name IS NOT NULL AND (name = '' OR length(name) > 255) THEN
        RAISE EXCEPTION 'name must have 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave it null to use the provider id.';
    END IF;

    INSERT INTO novu.integrations (identifier, provider_id, channel, name, credentials, active)
    VALUES (ident, provider_id, novu._provider_channel(provider_id), COALESCE(name, provider_id), creds, active)
    ON CONFLICT ON CONSTRAINT integrations_identifier_key DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'integration "%" already exists', ident
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another identifier, or change that one with novu.update_integration().';
    END IF;
    RETURN ident;
END
$$;
COMMENT ON FUNCTION novu.create_integration(text, jsonb, text, text, boolean) IS 'Create a provider integration (admin); credentials validated per provider; returns its identifier (generated like fcm-Ab12Cd34x when not given)';

CREATE FUNCTION novu.update_integration(identifier text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i novu.integrations;
    k text;
BEGIN
    SELECT * INTO i FROM novu.integrations x WHERE x.identifier = update_integration.identifier FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'integration "%" not found', update_integration.identifier
            USING ERRCODE = 'undefined_object', HINT = 'List integrations with novu.list_integrations().';
    END IF;
    IF changes IS NULL OR jsonb_typeof(changes) <> 'object' THEN
        RAISE EXCEPTION 'changes must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Keys: name, active, credentials, identifier.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(changes) LOOP
        IF k NOT IN ('name', 'active', 'credentials', 'identifier') THEN
            RAISE EXCEPTION 'unknown key "%" in changes', k
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Keys: name, active, credentials, identifier.';
        END IF;
    END LOOP;
    IF changes ? 'name' THEN
        IF jsonb_typeof(changes -> 'name') <> 'string' OR changes ->> 'name' = '' THEN
            RAISE EXCEPTION 'changes.name must be a non-empty string'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Give a display name.';
        END IF;
        i.name := changes ->> 'name';
    END IF;
    IF changes ? 'active' THEN
        IF jsonb_typeof(changes -> 'active') <> 'boolean' THEN
            RAISE EXCEPTION 'changes.active must be a boolean'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
        END IF;
        i.active := (changes ->> 'active')::boolean;
    END IF;
    IF changes ? 'credentials' THEN
        IF jsonb_typeof(changes -> 'credentials') <> 'object' THEN
            RAISE EXCEPTION 'changes.credentials must be a JSON object'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Given keys replace the stored ones; the result is validated again.';
        END IF;
        i.credentials := novu._validate_integration(i.provider_id, i.credentials || (changes -> 'credentials'));
    END IF;
    IF changes ? 'identifier' THEN
        PERFORM novu._check_identifier(changes ->> 'identifier', 'identifier');
        IF changes ->> 'identifier' <> i.identifier
           AND EXISTS (SELECT FROM novu.integrations x WHERE x.identifier = changes ->> 'identifier') THEN
            RAISE EXCEPTION 'integration "%" already exists', changes ->> 'identifier'
                USING ERRCODE = 'duplicate_object', HINT = 'Choose another identifier.';
        END IF;
        i.identifier := changes ->> 'identifier';
    END IF;
    UPDATE novu.integrations x
       SET identifier = i.identifier, name = i.name, active = i.active,
           credentials = i.credentials, updated_at = now()
     WHERE x.id = i.id
    RETURNING * INTO i;
    RETURN novu._integration_json(i);
END
$$;
COMMENT ON FUNCTION novu.update_integration(text, jsonb) IS 'Change an integration (admin): name, active, credentials (merged, validated again), identifier; returns it without secrets';

CREATE FUNCTION novu.delete_integration(identifier text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM novu.integrations x WHERE x.identifier = delete_integration.identifier;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION novu.delete_integration(text) IS 'Delete an integration (admin) and the device tokens stored for it; false if unknown';

CREATE FUNCTION novu.list_integrations()
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(jsonb_agg(novu._integration_json(i) ORDER BY i.provider_id, i.created_at, i.id), '[]'::jsonb)
      FROM novu.integrations i
$$;
COMMENT ON FUNCTION novu.list_integrations() IS 'All integrations (admin), secrets masked';

------------------------------------------------------------------------------
-- Workflows API (admin)
------------------------------------------------------------------------------

-- Workflow engine: validation of stepId, filters, delay and digest steps (DESIGN 9)

-- A step's id: its stepId, or "<type>-<index>".
CREATE FUNCTION novu._step_id(step jsonb, step_index integer)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(step ->> 'stepId', (step ->> 'type') || '-' || step_index)
$$;
COMMENT ON FUNCTION novu._step_id(jsonb, integer) IS 'Internal: a step''s id, its stepId or "<type>-<index>"';

-- An amount of a unit (seconds ... months) as an interval; NULL if not one.
CREATE FUNCTION novu._step_interval(amount jsonb, unit jsonb)
RETURNS interval
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- at most a year: 366 days, or 12 months (each unit's count is capped
    -- before it is multiplied: 999999999 weeks overflowed an interval, and
    -- interval '1 year' compares as 360 days, which refused 52 weeks)
    SELECT CASE WHEN jsonb_typeof(amount) = 'number' AND jsonb_typeof(unit) = 'string'
                     AND (amount #>> '{}') ~ '^[0-9]{1,9}$'
                     AND (amount #>> '{}')::integer <= CASE unit #>> '{}' WHEN 'seconds' THEN 31622400 WHEN 'minutes' THEN 527040
                                                                          WHEN 'hours' THEN 8784 WHEN 'days' THEN 366
                                                                          WHEN 'weeks' THEN 52 WHEN 'months' THEN 12 END
                THEN (amount #>> '{}')::integer * ('1 ' || (unit #>> '{}'))::interval END
$$;
COMMENT ON FUNCTION novu._step_interval(jsonb, jsonb) IS 'Internal: amount and unit of a delay or digest as an interval; NULL if not one or longer than a year';

-- Raise unless amount and unit (or their names given) make 1 second to 1 year.
CREATE FUNCTION novu._check_amount(amount jsonb, unit jsonb, field text, amount_key text, unit_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d interval;
BEGIN
    IF jsonb_typeof(amount) IS DISTINCT FROM 'number' OR NOT (amount #>> '{}') ~ '^[0-9]{1,9}$' OR (amount #>> '{}')::integer < 1 THEN
        RAISE EXCEPTION '%.% must be a positive integer', field, amount_key
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Example: "%s": 5, "%s": "minutes".', amount_key, unit_key);
    END IF;
    IF jsonb_typeof(unit) IS DISTINCT FROM 'string'
       OR NOT unit #>> '{}' IN ('seconds', 'minutes', 'hours', 'days', 'weeks', 'months') THEN
        RAISE EXCEPTION '%.% must be one of seconds, minutes, hours, days, weeks, months', field, unit_key
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Example: "%s": 5, "%s": "minutes".', amount_key, unit_key);
    END IF;
    d := novu._step_interval(amount, unit);
    IF d IS NULL THEN
        RAISE EXCEPTION '%.% is longer than a year', field, amount_key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A delay or digest window is at most one year: 366 days, 52 weeks or 12 months.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_amount(jsonb, jsonb, text, text, text) IS 'Internal: validate an amount and unit of a delay or digest step';

-- Raise unless value is a payload path: "sendAt", "post.id", a leading "payload." accepted.
CREATE FUNCTION novu._check_payload_path(value jsonb, field text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) IS DISTINCT FROM 'string'
       OR NOT (value #>> '{}') ~ '^[A-Za-z0-9_$-]+([.][A-Za-z0-9_$-]+)*$'
       OR length(value #>> '{}') > 255 OR value #>> '{}' = 'payload' THEN
        RAISE EXCEPTION '% must be a path in the payload', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Dot-separated keys, e.g. "sendAt", "post.id" or "payload.post.id".';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_payload_path(jsonb, text) IS 'Internal: validate a payload path (delayPath, digestKey)';

-- A payload path as a text[] for #> (a leading "payload." dropped).
CREATE FUNCTION novu._payload_path(path text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_to_array(regexp_replace(path, '^payload[.]', ''), '.')
$$;
COMMENT ON FUNCTION novu._payload_path(text) IS 'Internal: a payload path as a key array';

-- A delay's scheduled time from its payload value (delayPath): an ISO 8601
-- date or time (UTC without a zone), NULL if it is not one (the step then
-- fails with the reason, see novu._advance).
CREATE FUNCTION novu._delay_time(t text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF t IS NULL OR NOT t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$' THEN
        RETURN NULL;
    END IF;
    RETURN t::timestamptz;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION novu._delay_time(text) IS 'Internal: a delayPath value as a time (UTC without a zone), NULL if not an ISO time';

-- Validate a delay or digest step (its keys other than stepId and filters).
CREATE FUNCTION novu._check_wait_step(step jsonb, f text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    allowed text[];
BEGIN
    allowed := CASE step ->> 'type'
        WHEN 'delay' THEN ARRAY['type', 'name', 'stepId', 'filters', 'amount', 'unit', 'delayPath']
        ELSE ARRAY['type', 'name', 'stepId', 'filters', 'amount', 'unit', 'digestKey', 'backoff', 'backoffAmount', 'backoffUnit'] END;
    FOR k IN SELECT jsonb_object_keys(step) LOOP
        IF NOT k = ANY (allowed) THEN
            RAISE EXCEPTION 'unknown key "%" in %', k, f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('A %s step has %s.', step ->> 'type', array_to_string(allowed, ', '));
        END IF;
    END LOOP;
    IF step ? 'name' AND jsonb_typeof(step -> 'name') <> 'string' THEN
        RAISE EXCEPTION '%.name must be a string', f
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A step name is free text.';
    END IF;
    IF step ->> 'type' = 'delay' THEN
        IF step ? 'delayPath' THEN
            IF step ? 'amount' OR step ? 'unit' THEN
                RAISE EXCEPTION '%: a delay has either amount and unit, or delayPath', f
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Regular: {"type": "delay", "amount": 5, "unit": "minutes"}; scheduled: {"type": "delay", "delayPath": "sendAt"}.';
            END IF;
            PERFORM novu._check_payload_path(step -> 'delayPath', f || '.delayPath');
        ELSE
            PERFORM novu._check_amount(step -> 'amount', step -> 'unit', f, 'amount', 'unit');
        END IF;
        RETURN;
    END IF;
    PERFORM novu._check_amount(step -> 'amount', step -> 'unit', f, 'amount', 'unit');
    IF step ? 'digestKey' THEN
        PERFORM novu._check_payload_path(step -> 'digestKey', f || '.digestKey');
    END IF;
    IF step ? 'backoff' AND jsonb_typeof(step -> 'backoff') <> 'boolean' THEN
        RAISE EXCEPTION '%.backoff must be a boolean', f
            USING ERRCODE = 'invalid_parameter_value', HINT = 'true: the first event goes at once when none came in the backoff window.';
    END IF;
    IF (step ? 'backoffAmount' OR step ? 'backoffUnit') THEN
        IF NOT COALESCE((step ->> 'backoff')::boolean, false) THEN
            RAISE EXCEPTION '%.backoffAmount and backoffUnit need "backoff": true', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Add "backoff": true or remove them.';
        END IF;
        PERFORM novu._check_amount(step -> 'backoffAmount', step -> 'backoffUnit', f, 'backoffAmount', 'backoffUnit');
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_wait_step(jsonb, text) IS 'Internal: validate a delay or digest step';

-- Validate one filter condition (a child of a filter group).
CREATE FUNCTION novu._check_filter_child(c jsonb, f text, steps jsonb, step_index integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    allowed text[];
    op text;
    v jsonb;
    target integer;
BEGIN
    IF jsonb_typeof(c) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', f
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"on": "payload", "field": "plan", "operator": "EQUAL", "value": "pro"}.';
    END IF;
    allowed := CASE c ->> 'on'
        WHEN 'payload' THEN ARRAY['on', 'field', 'operator', 'value']
        WHEN 'subscriber' THEN ARRAY['on', 'field', 'operator', 'value']
        WHEN 'isOnline' THEN ARRAY['on', 'operator', 'value']   -- operator: EQUAL (Novu's editor writes it) or NOT_EQUAL
        WHEN 'isOnlineInLast' THEN ARRAY['on', 'operator', 'value', 'timeOperator']
        WHEN 'previousStep' THEN ARRAY['on', 'step', 'stepType'] END;
    IF allowed IS NULL THEN
        RAISE EXCEPTION '%.on must be one of payload, subscriber, isOnline, isOnlineInLast, previousStep', f
            USING ERRCODE = CASE WHEN jsonb_typeof(c -> 'on') = 'string' THEN 'feature_not_supported' ELSE 'invalid_parameter_value' END,
                  HINT = 'Other Novu filter sources (webhook, tenant, actor) are not run by this engine.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(c) LOOP
        IF NOT k = ANY (allowed) THEN
            RAISE EXCEPTION 'unknown key "%" in %', k, f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('A filter on %s has %s.', c ->> 'on', array_to_string(allowed, ', '));
        END IF;
    END LOOP;
    v := c -> 'value';
    CASE c ->> 'on'
    WHEN 'payload', 'subscriber' THEN
        IF jsonb_typeof(c -> 'field') IS DISTINCT FROM 'string'
           OR NOT (c ->> 'field') ~ '^[A-Za-z0-9_$-]+([.][A-Za-z0-9_$-]+)*$' THEN
            RAISE EXCEPTION '%.field must be a dot path', f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE c ->> 'on' WHEN 'payload' THEN 'A key of the payload, e.g. "plan" or "order.total".'
                             ELSE 'A subscriber key, e.g. "firstName", "locale" or "data.plan".' END;
        END IF;
        op := c ->> 'operator';
        IF jsonb_typeof(c -> 'operator') IS DISTINCT FROM 'string'
           OR op NOT IN ('EQUAL', 'NOT_EQUAL', 'LARGER', 'SMALLER', 'LARGER_EQUAL', 'SMALLER_EQUAL', 'IN', 'NOT_IN',
                         'BETWEEN', 'NOT_BETWEEN', 'LIKE', 'NOT_LIKE', 'IS_DEFINED') THEN
            RAISE EXCEPTION '%.operator must be one of EQUAL, NOT_EQUAL, LARGER, SMALLER, LARGER_EQUAL, SMALLER_EQUAL, IN, NOT_IN, BETWEEN, NOT_BETWEEN, LIKE, NOT_LIKE, IS_DEFINED', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Novu''s filter operators, in capitals.';
        END IF;
        IF op = 'IS_DEFINED' THEN
            IF v IS NOT NULL AND jsonb_typeof(v) NOT IN ('boolean', 'string') THEN
                RAISE EXCEPTION '%.value of IS_DEFINED must be omitted or a boolean', f
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'IS_DEFINED is true when the field exists and is not null.';
            END IF;
        ELSIF op IN ('BETWEEN', 'NOT_BETWEEN') THEN
            IF jsonb_typeof(v) IS DISTINCT FROM 'array' OR jsonb_array_length(v) <> 2
               OR jsonb_typeof(v -> 0) <> 'number' OR jsonb_typeof(v -> 1) <> 'number' THEN
                RAISE EXCEPTION '%.value of % must be [low, high] (numbers)', f, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Both ends are included, e.g. [10, 20].';
            END IF;
        ELSIF op IN ('IN', 'NOT_IN') THEN
            IF NOT (jsonb_typeof(v) = 'string'
                    OR (jsonb_typeof(v) = 'array' AND jsonb_array_length(v) BETWEEN 1 AND 1000
                        AND NOT EXISTS (SELECT FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) NOT IN ('string', 'number', 'boolean')))) THEN
                RAISE EXCEPTION '%.value of % must be an array of values or a comma-separated string', f, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ["pro", "team"] or "pro,team".';
            END IF;
        ELSIF jsonb_typeof(v) IS NULL OR jsonb_typeof(v) NOT IN ('string', 'number', 'boolean') THEN
            RAISE EXCEPTION '%.value must be a string, a number or a boolean', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The value the field is compared with.';
        END IF;
    WHEN 'isOnline' THEN
        IF jsonb_typeof(v) IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '%.value must be true or false', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnline", "value": true}.';
        END IF;
        IF c ? 'operator' AND (jsonb_typeof(c -> 'operator') IS DISTINCT FROM 'string' OR c ->> 'operator' NOT IN ('EQUAL', 'NOT_EQUAL')) THEN
            RAISE EXCEPTION '%.operator must be EQUAL or NOT_EQUAL', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnline", "value": true} is the same as with "operator": "EQUAL".';
        END IF;
    WHEN 'isOnlineInLast' THEN
        IF jsonb_typeof(v) IS DISTINCT FROM 'number' OR NOT (v #>> '{}') ~ '^[0-9]{1,9}$' OR (v #>> '{}')::integer < 1 THEN
            RAISE EXCEPTION '%.value must be a positive integer', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnlineInLast", "timeOperator": "minutes", "value": 5}.';
        END IF;
        IF c ->> 'timeOperator' IS NULL OR c ->> 'timeOperator' NOT IN ('seconds', 'minutes', 'hours', 'days') THEN
            RAISE EXCEPTION '%.timeOperator must be one of seconds, minutes, hours, days', f
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"on": "isOnlineInLast", "timeOperator": "minutes", "value": 5}.';
        END IF;
        IF c ? 'operator' AND c -> 'operator' IS DISTINCT FROM '"EQUAL"' THEN
            RAISE EXCEPTION '%.operator of isOnlineInLast can only be EQUAL', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Online now or within the last "value" "timeOperator"; leave "operator" out.';
        END IF;
    WHEN 'previousStep' THEN
        IF c ->> 'stepType' IS NULL OR c ->> 'stepType' NOT IN ('read', 'unread', 'seen', 'unseen') THEN
            RAISE EXCEPTION '%.stepType must be one of read, unread, seen, unseen', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The state of the earlier in_app step''s message.';
        END IF;
        SELECT s.n - 1 INTO target
          FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(step, n)
         WHERE jsonb_typeof(c -> 'step') = 'string' AND novu._step_id(s.step, (s.n - 1)::integer) = c ->> 'step'
         LIMIT 1;
        IF target IS NULL OR target >= step_index OR steps -> target ->> 'type' <> 'in_app' THEN
            RAISE EXCEPTION '%.step must be the stepId of an earlier in_app step', f
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'previousStep reads the read/seen state of an in_app message sent before this step.';
        END IF;
    END CASE;
END
$$;
COMMENT ON FUNCTION novu._check_filter_child(jsonb, text, jsonb, integer) IS 'Internal: validate one step filter condition';

-- Validate the stepId and filters of steps[step_index] (ids unique in the workflow).
CREATE FUNCTION novu._check_step_common(steps jsonb, step_index integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    step jsonb := steps -> step_index;
    f text := format('steps[%s]', step_index);
    g jsonb;
    gi integer := 0;
    ci integer;
    c jsonb;
    k text;
BEGIN
    IF step ? 'stepId' THEN
        IF jsonb_typeof(step -> 'stepId') <> 'string' OR NOT (step ->> 'stepId') ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$' THEN
            RAISE EXCEPTION '%.stepId must be 1 to 100 letters, digits and - _ . : (starting with a letter or digit)', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. "push-reminder"; the default is "<type>-<index>".';
        END IF;
    END IF;
    IF EXISTS (SELECT FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(st, n)
                WHERE s.n - 1 < step_index AND jsonb_typeof(s.st) = 'object'
                  AND novu._step_id(s.st, (s.n - 1)::integer) = novu._step_id(step, step_index)) THEN
        RAISE EXCEPTION '%.stepId "%" is used by an earlier step', f, novu._step_id(step, step_index)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Step ids are unique in a workflow.';
    END IF;
    IF NOT step ? 'filters' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(step -> 'filters') <> 'array' OR jsonb_array_length(step -> 'filters') > 20 THEN
        RAISE EXCEPTION '%.filters must be an array of at most 20 filter groups', f
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '[{"isNegated": false, "type": "GROUP", "value": "AND", "children": [{"on": "payload", "field": "plan", "operator": "EQUAL", "value": "pro"}]}].';
    END IF;
    FOR g IN SELECT * FROM jsonb_array_elements(step -> 'filters') LOOP
        IF jsonb_typeof(g) <> 'object' THEN
            RAISE EXCEPTION '%.filters[%] must be a JSON object', f, gi
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A filter group: {"type": "GROUP", "value": "AND", "children": [...]}.';
        END IF;
        FOR k IN SELECT jsonb_object_keys(g) LOOP
            IF k NOT IN ('isNegated', 'type', 'value', 'children') THEN
                RAISE EXCEPTION 'unknown key "%" in %.filters[%]', k, f, gi
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'A filter group has isNegated, type, value, children.';
            END IF;
        END LOOP;
        IF g ? 'isNegated' AND jsonb_typeof(g -> 'isNegated') <> 'boolean' THEN
            RAISE EXCEPTION '%.filters[%].isNegated must be a boolean', f, gi
                USING ERRCODE = 'invalid_parameter_value', HINT = 'true negates the group.';
        END IF;
        IF g ? 'type' AND g -> 'type' <> '"GROUP"' THEN
            RAISE EXCEPTION '%.filters[%].type must be "GROUP"', f, gi
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Filters are groups of conditions.';
        END IF;
        IF g ? 'value' AND (jsonb_typeof(g -> 'value') <> 'string' OR g ->> 'value' NOT IN ('AND', 'OR')) THEN
            RAISE EXCEPTION '%.filters[%].value must be "AND" or "OR"', f, gi
                USING ERRCODE = 'invalid_parameter_value', HINT = 'How the group''s children combine (default AND).';
        END IF;
        IF jsonb_typeof(g -> 'children') IS DISTINCT FROM 'array' OR jsonb_array_length(g -> 'children') > 50 THEN
            RAISE EXCEPTION '%.filters[%].children must be an array of at most 50 conditions', f, gi
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = '{"on": "payload", "field": "plan", "operator": "EQUAL", "value": "pro"}.';
        END IF;
        ci := 0;
        FOR c IN SELECT * FROM jsonb_array_elements(g -> 'children') LOOP
            PERFORM novu._check_filter_child(c, format('%s.filters[%s].children[%s]', f, gi, ci), steps, step_index);
            ci := ci + 1;
        END LOOP;
        gi := gi + 1;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._check_step_common(jsonb, integer) IS 'Internal: validate a step''s stepId (unique) and filters';

-- Validate the keys only an in_app step has (DESIGN 9): subject (a template),
-- avatar (an http(s) URL, or true/false: the actor's avatar or none), cta
-- {type: "redirect", data: {url}} (the url a template), actions (at most one
-- primary and one secondary button, {type, content}), feedIdentifier; keys of
-- push and chat steps are refused.  f names the step in messages.
CREATE FUNCTION novu._check_in_app_step(step jsonb, f text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
    a jsonb;
    j integer := 0;
BEGIN
    FOR k, v IN SELECT * FROM jsonb_each(step) LOOP
        CASE k
        WHEN 'title' THEN
            RAISE EXCEPTION '%.title is not used by in_app steps', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'An in_app step has a subject (optional) and a content.';
        WHEN 'data', 'overrides', 'providers' THEN
            RAISE EXCEPTION '%.% is not used by in_app steps', f, k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An in_app step has content, subject, avatar, cta, actions, feedIdentifier; the trigger''s payload comes with each feed item.';
        WHEN 'subject' THEN
            IF jsonb_typeof(v) <> 'string' THEN
                RAISE EXCEPTION '%.subject must be a string', f
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'subject is a template string.';
            END IF;
            PERFORM novu._check_template(v #>> '{}', f || '.subject');
        WHEN 'avatar' THEN
            IF jsonb_typeof(v) = 'string' THEN
                PERFORM novu._check_url(v #>> '{}', f || '.avatar');
            ELSIF jsonb_typeof(v) <> 'boolean' THEN
                RAISE EXCEPTION '%.avatar must be a URL or a boolean', f
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'An https URL of an image, true for the actor''s avatar (the default), false for none.';
            END IF;
        WHEN 'cta' THEN
            IF jsonb_typeof(v) <> 'object' OR v ->> 'type' IS DISTINCT FROM 'redirect'
               OR EXISTS (SELECT FROM jsonb_object_keys(v) x WHERE x NOT IN ('type', 'data'))
               OR jsonb_typeof(v -> 'data') IS DISTINCT FROM 'object'
               OR EXISTS (SELECT FROM jsonb_object_keys(v -> 'data') x WHERE x <> 'url')
               OR jsonb_typeof(v #> '{data,url}') IS DISTINCT FROM 'string' OR v #>> '{data,url}' = '' THEN
                RAISE EXCEPTION '%.cta must be {"type": "redirect", "data": {"url": "..."}}', f
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'The url is a template, e.g. "/posts/{{payload.postId}}".';
            END IF;
            PERFORM novu._check_template(v #>> '{data,url}', f || '.cta.data.url');
        WHEN 'actions' THEN
            IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 2 THEN
                RAISE EXCEPTION '%.actions must be an array of at most 2 buttons', f
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Example: [{"type": "primary", "content": "Accept"}, {"type": "secondary", "content": "Decline"}].';
            END IF;
            FOR a IN SELECT * FROM jsonb_array_elements(v) LOOP
                IF jsonb_typeof(a) <> 'object' OR a ->> 'type' IS NULL OR a ->> 'type' NOT IN ('primary', 'secondary')
                   OR jsonb_typeof(a -> 'content') IS DISTINCT FROM 'string' OR a ->> 'content' = ''
                   OR EXISTS (SELECT FROM jsonb_object_keys(a) x WHERE x NOT IN ('type', 'content', 'resultContent')) THEN
                    RAISE EXCEPTION '%.actions[%] must be {"type": "primary" | "secondary", "content": "..."}', f, j
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'content is the button''s label (plain text); resultContent (optional) the label once done.';
                END IF;
                j := j + 1;
            END LOOP;
            IF (SELECT count(DISTINCT x ->> 'type') FROM jsonb_array_elements(v) x) < jsonb_array_length(v) THEN
                RAISE EXCEPTION '%.actions has two buttons of one type', f
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'At most one primary and one secondary button.';
            END IF;
        WHEN 'feedIdentifier' THEN
            IF jsonb_typeof(v) <> 'string' THEN
                RAISE EXCEPTION '%.feedIdentifier must be a string', f
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'The feed this step''s messages belong to.';
            END IF;
            PERFORM novu._check_id(v #>> '{}', f || '.feedIdentifier');
        ELSE NULL;  -- type, name, content: checked by _check_steps
        END CASE;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._check_in_app_step(jsonb, text) IS 'Internal: validate the keys of an in_app step (subject, avatar, cta, actions, feedIdentifier)';

-- Validate a step array; raises naming steps[i].field.  A step's overrides keep to
-- the providers' allowlists too.
CREATE FUNCTION novu._check_steps(steps jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    step jsonb;
    i integer := 0;
    k text;
    v jsonb;
    f text;
BEGIN
    IF steps IS NULL OR jsonb_typeof(steps) <> 'array' THEN
        RAISE EXCEPTION 'steps must be a JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: [{"type": "push", "title": "Hi {{subscriber.firstName}}", "content": "{{payload.text}}"}].';
    END IF;
    PERFORM novu._check_size(steps, 'steps', 262144);
    IF jsonb_array_length(steps) > 50 THEN
        RAISE EXCEPTION 'a workflow has at most 50 steps, got %', jsonb_array_length(steps)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Split the workflow.';
    END IF;
    FOR step IN SELECT * FROM jsonb_array_elements(steps) LOOP
        f := format('steps[%s]', i);
        IF jsonb_typeof(step) <> 'object' THEN
            RAISE EXCEPTION '% must be a JSON object', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Each step is an object with a "type".';
        END IF;
        IF jsonb_typeof(step -> 'type') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION '%.type is required', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Step types: push, chat, in_app, delay, digest.';
        END IF;
        IF step ->> 'type' IN ('email', 'sms') THEN
            RAISE EXCEPTION '%.type "%" is not supported yet', f, step ->> 'type'
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'This version executes push, chat, in_app, delay and digest steps only; nothing is accepted that would not run.';
        ELSIF step ->> 'type' NOT IN ('push', 'chat', 'in_app', 'delay', 'digest') THEN
            RAISE EXCEPTION '%.type "%" is unknown', f, step ->> 'type'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Step types: push, chat, in_app, delay, digest.';
        END IF;
        IF step ->> 'type' = 'in_app' THEN
            PERFORM novu._check_in_app_step(step, f);
        END IF;
        IF step ->> 'type' = 'chat' AND step ? 'title' THEN
            RAISE EXCEPTION '%.title is not used by chat steps', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A chat step sends its content template as the message text.';
        END IF;
        -- stepId and filters of any step; delay and digest steps (workflow engine)
        PERFORM novu._check_step_common(steps, i);
        IF step ->> 'type' IN ('delay', 'digest') THEN
            PERFORM novu._check_wait_step(step, f);
            i := i + 1;
            CONTINUE;
        END IF;
        IF step ? 'if' THEN
            RAISE EXCEPTION '%.if (step conditions) is not supported yet', f
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Use {% if %} inside the templates meanwhile.';
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(step) LOOP
            CASE k
            WHEN 'type', 'stepId', 'filters' THEN NULL;
            WHEN 'name' THEN
                IF jsonb_typeof(v) <> 'string' THEN
                    RAISE EXCEPTION '%.name must be a string', f
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'A step name is free text.';
                END IF;
            WHEN 'title', 'content' THEN
                IF jsonb_typeof(v) <> 'string' THEN
                    RAISE EXCEPTION '%.% must be a string', f, k
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'title and content are template strings.';
                END IF;
                PERFORM novu._check_template(v #>> '{}', f || '.' || k);
            WHEN 'data' THEN
                IF jsonb_typeof(v) <> 'object' THEN
                    RAISE EXCEPTION '%.data must be a JSON object', f
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'data maps keys to values; string values are templates.';
                END IF;
                PERFORM novu._check_template(d.value #>> '{}', f || '.data.' || d.key)
                   FROM jsonb_each(v) d WHERE jsonb_typeof(d.value) = 'string';
            WHEN 'overrides' THEN
                IF jsonb_typeof(v) <> 'object' THEN
                    RAISE EXCEPTION '%.overrides must be a JSON object', f
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Provider overrides, e.g. {"fcm": {"android": {"priority": "HIGH"}}}.';
                END IF;
                PERFORM novu._check_overrides(v, f || '.overrides');
            WHEN 'subject', 'avatar', 'cta', 'actions', 'feedIdentifier' THEN
                IF step ->> 'type' <> 'in_app' THEN
                    RAISE EXCEPTION '%.% is used by in_app steps only', f, k
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'A push step has type, name, title, content, data, overrides, providers; a chat step the same without title.';
                END IF;
            WHEN 'providers' THEN
                IF jsonb_typeof(v) <> 'array'
                   OR EXISTS (SELECT FROM jsonb_array_elements(v) p
                               WHERE jsonb_typeof(p) <> 'string' OR NOT (p #>> '{}') = ANY (novu._push_providers())) THEN
                    RAISE EXCEPTION '%.providers must be an array of provider ids', f
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Known providers: ' || array_to_string(novu._push_providers(), ', ') || '.';
                END IF;
                IF EXISTS (SELECT FROM jsonb_array_elements_text(v) p WHERE novu._provider_channel(p) <> step ->> 'type') THEN
                    RAISE EXCEPTION '%.providers names a provider of another channel than %', f, step ->> 'type'
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Chat providers: ' || array_to_string(novu._providers('chat'), ', ')
                                     || '; push providers: ' || array_to_string(novu._providers('push'), ', ') || '.';
                END IF;
            ELSE
                RAISE EXCEPTION 'unknown key "%" in %', k, f
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A push step has type, name, title, content, data, overrides, providers; a chat step the same without title.';
            END CASE;
        END LOOP;
        IF NOT step ? 'content' OR step ->> 'content' = '' THEN
            RAISE EXCEPTION '%.content is required', f
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A push, chat or in_app step needs a non-empty content template.';
        END IF;
        i := i + 1;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._check_steps(jsonb) IS 'Internal: validate a workflow''s steps; templates are parsed now so a syntax error is an error at creation';

CREATE FUNCTION novu._workflow_json(w novu.workflows)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'workflowId', w.workflow_id,
        'name', w.name,
        'critical', w.critical,
        'active', w.active,
        'steps', w.steps,
        'createdAt', novu._iso(w.created_at),
        'updatedAt', novu._iso(w.updated_at))
$$;
COMMENT ON FUNCTION novu._workflow_json(novu.workflows) IS 'Internal: JSON of a workflow';

CREATE FUNCTION novu.create_workflow(identifier text, steps jsonb, name text DEFAULT NULL,
                                     critical boolean DEFAULT false, active boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w novu.workflows;
BEGIN
    PERFORM novu._check_identifier(identifier, 'workflow identifier');
    PERFORM novu._check_steps(steps);
    IF critical IS NULL OR active IS NULL THEN
        RAISE EXCEPTION 'critical and active must not be null'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
    END IF;
    INSERT INTO novu.workflows (workflow_id, name, steps, critical, active)
    VALUES (identifier, COALESCE(name, identifier), steps, critical, active)
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING * INTO w;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow "%" already exists', identifier
            USING ERRCODE = 'duplicate_object', HINT = 'Change it with novu.update_workflow().';
    END IF;
    RETURN novu._workflow_json(w);
END
$$;
COMMENT ON FUNCTION novu.create_workflow(text, jsonb, text, boolean, boolean) IS 'Create a workflow (admin) from an ordered step array; templates are parsed now';

CREATE FUNCTION novu.update_workflow(identifier text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w novu.workflows;
    k text;
BEGIN
    SELECT * INTO w FROM novu.workflows x WHERE x.workflow_id = identifier FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow "%" not found', identifier
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.create_workflow().';
    END IF;
    IF changes IS NULL OR jsonb_typeof(changes) <> 'object' THEN
        RAISE EXCEPTION 'changes must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Keys: name, steps, critical, active.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(changes) LOOP
        IF k NOT IN ('name', 'steps', 'critical', 'active') THEN
            RAISE EXCEPTION 'unknown key "%" in changes', k
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Keys: name, steps, critical, active.';
        END IF;
        IF k IN ('critical', 'active') AND jsonb_typeof(changes -> k) <> 'boolean' THEN
            RAISE EXCEPTION 'changes.% must be a boolean', k
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
        END IF;
        IF k = 'name' AND (jsonb_typeof(changes -> k) <> 'string' OR changes ->> k = '') THEN
            RAISE EXCEPTION 'changes.name must be a non-empty string'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Give a display name.';
        END IF;
    END LOOP;
    IF changes ? 'steps' THEN
        PERFORM novu._check_steps(changes -> 'steps');
        w.steps := changes -> 'steps';
    END IF;
    UPDATE novu.workflows x
       SET name = COALESCE(changes ->> 'name', w.name),
           steps = w.steps,
           critical = COALESCE((changes ->> 'critical')::boolean, w.critical),
           active = COALESCE((changes ->> 'active')::boolean, w.active),
           updated_at = now()
     WHERE x.workflow_id = identifier
    RETURNING * INTO w;
    RETURN novu._workflow_json(w);
END
$$;
COMMENT ON FUNCTION novu.update_workflow(text, jsonb) IS 'Change a workflow (admin): name, steps (validated again), critical, active';

CREATE FUNCTION novu.delete_workflow(identifier text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM novu.workflows x WHERE x.workflow_id = identifier;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION novu.delete_workflow(text) IS 'Delete a workflow (admin); false if unknown';

CREATE FUNCTION novu.get_workflow(identifier text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w novu.workflows;
BEGIN
    SELECT * INTO w FROM novu.workflows x WHERE x.workflow_id = identifier;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow "%" not found', identifier
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.create_workflow().';
    END IF;
    RETURN novu._workflow_json(w);
END
$$;
COMMENT ON FUNCTION novu.get_workflow(text) IS 'Get a workflow with its steps';

-- Every write to novu.workflows sends a relcache invalidation of the table:
-- each backend caches the state of the workflows it triggers (is it there,
-- active, with steps) and drops that cache when it receives one.
CREATE FUNCTION novu._workflows_changed() RETURNS trigger
LANGUAGE C AS 'MODULE_PATHNAME', 'novu_workflows_changed';
COMMENT ON FUNCTION novu._workflows_changed() IS 'Internal: invalidates the backends'' workflow caches after a write to novu.workflows';
CREATE TRIGGER workflows_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON novu.workflows
    FOR EACH STATEMENT EXECUTE FUNCTION novu._workflows_changed();

------------------------------------------------------------------------------
-- Topics API
-- A topic key is 1 to 255 letters, digits and - _ : . @ + ("post:42",
-- "team-eng", an email); src/api/trigger.c checks topicKey in "to" the same way.
------------------------------------------------------------------------------

CREATE FUNCTION novu._check_topic_key(value text, field text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR value = '' THEN
        RAISE EXCEPTION '% must not be empty', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A topic key has 1 to 255 characters, e.g. "post:42".';
    END IF;
    IF length(value) > 255 THEN
        RAISE EXCEPTION '% is too long (% characters)', field, length(value)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A topic key has at most 255 characters.';
    END IF;
    IF value !~ '^[A-Za-z0-9_.:@+-]+$' THEN
        RAISE EXCEPTION '% may contain only letters, digits and - _ : . @ +', field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Examples: "post:42", "team-engineering", "ada@example.com".';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_topic_key(text, text) IS 'Internal: raise unless the topic key has 1 to 255 characters, each a letter, digit or one of - _ : . @ +';

CREATE FUNCTION novu._check_topic_name(value text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR btrim(value) = '' THEN
        RAISE EXCEPTION 'name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a name of 1 to 255 characters (create_topic uses the key when the name is null).';
    END IF;
    IF length(value) > 255 THEN
        RAISE EXCEPTION 'name is too long (% characters)', length(value)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A topic name has at most 255 characters.';
    END IF;
    IF value ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN
        RAISE EXCEPTION 'name must not contain control characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use printable characters in name.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_topic_name(text) IS 'Internal: raise unless the topic name has 1 to 255 characters and no control characters';

-- The subscriberIds of an add/remove call: a JSON array of at most 500 strings,
-- each a valid subscriberId; returns them de-duplicated, in the order given.
CREATE FUNCTION novu._topic_subscriber_ids(subscriber_ids jsonb)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb;
    i integer := 0;
BEGIN
    IF subscriber_ids IS NULL OR jsonb_typeof(subscriber_ids) <> 'array' THEN
        RAISE EXCEPTION 'subscriber_ids must be a JSON array of subscriberIds'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: ''["user-1", "user-2"]''.';
    END IF;
    IF jsonb_array_length(subscriber_ids) > 500 THEN
        RAISE EXCEPTION 'too many subscriber_ids: % (at most 500 per call)', jsonb_array_length(subscriber_ids)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Split the array into calls of 500.';
    END IF;
    FOR v IN SELECT * FROM jsonb_array_elements(subscriber_ids) LOOP
        IF jsonb_typeof(v) <> 'string' THEN
            RAISE EXCEPTION 'subscriber_ids[%] must be a string', i
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'subscriber_ids is an array of subscriberId strings.';
        END IF;
        PERFORM novu._check_id(v #>> '{}', format('subscriber_ids[%s]', i));
        i := i + 1;
    END LOOP;
    RETURN ARRAY(SELECT x FROM jsonb_array_elements_text(subscriber_ids) WITH ORDINALITY a(x, n)
                 GROUP BY x ORDER BY min(n));
END
$$;
COMMENT ON FUNCTION novu._topic_subscriber_ids(jsonb) IS 'Internal: validate a JSON array of at most 500 subscriberIds; returns them de-duplicated in order';

-- Novu's JSON shape of a topic.
CREATE FUNCTION novu._topic_json(t novu.topics)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('_id', t.id::text, 'key', t.key, 'name', t.name,
                              'createdAt', novu._iso(t.created_at), 'updatedAt', novu._iso(t.updated_at))
$$;
COMMENT ON FUNCTION novu._topic_json(novu.topics) IS 'Internal: Novu''s JSON shape of a topic';

-- The topic of a key, or an error naming it.
CREATE FUNCTION novu._get_topic(p_key text)
RETURNS novu.topics
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(p_key, 'key');
    SELECT * INTO t FROM novu.topics x WHERE x.key = p_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" not found', p_key
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with novu.create_topic(); topic keys are case sensitive.';
    END IF;
    RETURN t;
END
$$;
COMMENT ON FUNCTION novu._get_topic(text) IS 'Internal: the topic of a key; an unknown key is an error';

CREATE FUNCTION novu.create_topic(key text, name text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(create_topic.key, 'key');
    PERFORM novu._check_topic_name(COALESCE(create_topic.name, create_topic.key));
    INSERT INTO novu.topics AS x (key, name)
    VALUES (create_topic.key, COALESCE(create_topic.name, create_topic.key))
    ON CONFLICT DO NOTHING
    RETURNING x.* INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" already exists', create_topic.key
            USING ERRCODE = 'unique_violation',
                  HINT = 'Topic keys are unique; rename it with novu.rename_topic() or choose another key.';
    END IF;
    RETURN novu._topic_json(t);
END
$$;
COMMENT ON FUNCTION novu.create_topic(text, text) IS 'Create a topic (the name defaults to the key); an existing key is an error';

CREATE FUNCTION novu.get_topic(key text)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT novu._topic_json(novu._get_topic(key)) $$;
COMMENT ON FUNCTION novu.get_topic(text) IS 'Get a topic {_id, key, name, createdAt, updatedAt}; an unknown key is an error';

CREATE FUNCTION novu.list_topics(page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- at most 1,000,000 rows skipped, as every list
    PERFORM novu._check_paging(page, page_size);
    RETURN jsonb_build_object(
        'page', page,
        'totalCount', (SELECT count(*) FROM novu.topics),
        'pageSize', page_size,
        'data', COALESCE((SELECT jsonb_agg(novu._topic_json(t) ORDER BY t.key)
                            FROM (SELECT * FROM novu.topics ORDER BY key
                                   OFFSET page::bigint * page_size LIMIT page_size) t), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION novu.list_topics(integer, integer) IS 'List topics by key: {page, totalCount, pageSize, data}';

CREATE FUNCTION novu.rename_topic(key text, name text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(rename_topic.key, 'key');
    PERFORM novu._check_topic_name(rename_topic.name);
    UPDATE novu.topics x SET name = rename_topic.name, updated_at = now()
     WHERE x.key = rename_topic.key
    RETURNING x.* INTO t;
    IF NOT FOUND THEN
        PERFORM novu._get_topic(rename_topic.key);  -- raises "not found"
    END IF;
    RETURN novu._topic_json(t);
END
$$;
COMMENT ON FUNCTION novu.rename_topic(text, text) IS 'Rename a topic (its key never changes); an unknown key is an error';

-- A topic is deleted only when empty.  Its row is locked first: an add in
-- progress holds a key-share lock on it (the members' foreign key), so the
-- check below, a new statement, sees that add's members once it commits.
CREATE FUNCTION novu.delete_topic(key text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    PERFORM novu._check_topic_key(delete_topic.key, 'key');
    SELECT * INTO t FROM novu.topics x WHERE x.key = delete_topic.key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT FROM novu.topic_subscribers ts WHERE ts.topic_id = t.id) THEN
        RAISE EXCEPTION 'topic "%" still has subscribers', delete_topic.key
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Remove them with novu.remove_topic_subscribers() (novu.topic_subscribers() lists them), then delete the topic.';
    END IF;
    DELETE FROM novu.topics x WHERE x.id = t.id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION novu.delete_topic(text) IS 'Delete an empty topic; true if deleted, false if unknown; a topic with subscribers is refused';

-- Add subscribers to a topic: existing subscribers succeed (members already
-- included), unknown subscriberIds are reported in failed.notFound; nothing is
-- created.  The subscribers found are key-share locked, so none can be deleted
-- between this check and the insert.
CREATE FUNCTION novu.add_topic_subscribers(key text, subscriber_ids jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
    ids text[];
    found_ids text[];
BEGIN
    t := novu._get_topic(add_topic_subscribers.key);
    ids := novu._topic_subscriber_ids(subscriber_ids);
    found_ids := ARRAY(SELECT s.subscriber_id FROM novu.subscribers s
                        WHERE s.subscriber_id = ANY (ids)
                        ORDER BY s.subscriber_id FOR KEY SHARE);
    INSERT INTO novu.topic_subscribers (topic_id, subscriber_id)
    SELECT t.id, f FROM unnest(found_ids) AS f
    ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object(
        'succeeded', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                     WHERE i = ANY (found_ids) ORDER BY n)),
        'failed', jsonb_build_object(
            'notFound', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                        WHERE NOT i = ANY (found_ids) ORDER BY n))));
END
$$;
COMMENT ON FUNCTION novu.add_topic_subscribers(text, jsonb) IS 'Add up to 500 subscribers to a topic: {succeeded: [...], failed: {notFound: [...]}}; unknown subscriberIds are notFound';

CREATE FUNCTION novu.remove_topic_subscribers(key text, subscriber_ids jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
    ids text[];
    removed text[];
BEGIN
    t := novu._get_topic(remove_topic_subscribers.key);
    ids := novu._topic_subscriber_ids(subscriber_ids);
    WITH d AS (
        DELETE FROM novu.topic_subscribers ts
         WHERE ts.topic_id = t.id AND ts.subscriber_id = ANY (ids)
        RETURNING ts.subscriber_id)
    SELECT COALESCE(array_agg(d.subscriber_id), '{}') INTO removed FROM d;
    RETURN jsonb_build_object(
        'succeeded', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                     WHERE i = ANY (removed) ORDER BY n)),
        'failed', jsonb_build_object(
            'notFound', to_jsonb(ARRAY(SELECT i FROM unnest(ids) WITH ORDINALITY u(i, n)
                                        WHERE NOT i = ANY (removed) ORDER BY n))));
END
$$;
COMMENT ON FUNCTION novu.remove_topic_subscribers(text, jsonb) IS 'Remove up to 500 subscribers from a topic: {succeeded: [...], failed: {notFound: [...]}}; ids that were not members are notFound';

CREATE FUNCTION novu.topic_subscribers(key text, page integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t novu.topics;
BEGIN
    t := novu._get_topic(topic_subscribers.key);
    -- at most 1,000,000 rows skipped, as every list
    PERFORM novu._check_paging(page, page_size);
    RETURN jsonb_build_object(
        'page', page,
        'totalCount', (SELECT count(*) FROM novu.topic_subscribers ts WHERE ts.topic_id = t.id),
        'pageSize', page_size,
        'data', COALESCE((SELECT jsonb_agg(jsonb_build_object(
                                     '_topicId', t.id::text, 'topicKey', t.key,
                                     'subscriberId', m.subscriber_id, 'externalSubscriberId', m.subscriber_id,
                                     'createdAt', novu._iso(m.created_at))
                                 ORDER BY m.subscriber_id)
                            FROM (SELECT ts.subscriber_id, ts.created_at FROM novu.topic_subscribers ts
                                   WHERE ts.topic_id = t.id
                                   ORDER BY ts.subscriber_id
                                   OFFSET page::bigint * page_size LIMIT page_size) m), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION novu.topic_subscribers(text, integer, integer) IS 'List a topic''s subscribers by subscriberId: {page, totalCount, pageSize, data: [{_topicId, topicKey, subscriberId, externalSubscriberId, createdAt}]}';

------------------------------------------------------------------------------
-- Trigger API (the outbox)
------------------------------------------------------------------------------


CREATE FUNCTION novu.trigger(workflow_id text, "to" jsonb, payload jsonb DEFAULT '{}',
                             overrides jsonb DEFAULT '{}', transaction_id text DEFAULT NULL,
                             actor jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'novu_trigger'
LANGUAGE C VOLATILE SECURITY DEFINER;
-- No SET clause: the function pins search_path to pg_catalog, pg_temp itself
-- before the first statement it runs through SPI (src/common/spi_util.c), and
-- its common path resolves no name; the clause cost every call a GUC nest
-- level and a search path computed again (8% of a trigger).
COMMENT ON FUNCTION novu.trigger(text, jsonb, jsonb, jsonb, text, jsonb) IS 'Trigger a workflow for subscribers inside the caller''s transaction: {acknowledged, status, transactionId}; status processed, duplicate, trigger_not_active or no_workflow_steps_defined';

CREATE FUNCTION novu.broadcast(workflow_id text, payload jsonb DEFAULT '{}', overrides jsonb DEFAULT '{}',
                               transaction_id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'novu_broadcast'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION novu.broadcast(text, jsonb, jsonb, text) IS 'Trigger a workflow for every subscriber; recorded now, fanned out by the workers in chunks';

CREATE FUNCTION novu.bulk_trigger(events jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev jsonb;
    k text;
    res jsonb;
    results jsonb := '[]';
    msg text;
BEGIN
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION 'events must be a JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Each event: {"workflowId", "to", "payload", "overrides", "transactionId", "actor"}.';
    END IF;
    IF jsonb_array_length(events) > 100 THEN
        RAISE EXCEPTION 'too many events: % (at most 100 per call)', jsonb_array_length(events)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Split the array into calls of 100 events.';
    END IF;
    FOR ev IN SELECT * FROM jsonb_array_elements(events) LOOP
        BEGIN
            IF jsonb_typeof(ev) <> 'object' THEN
                RAISE EXCEPTION 'event must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            FOR k IN SELECT jsonb_object_keys(ev) LOOP
                IF k NOT IN ('workflowId', 'name', 'to', 'payload', 'overrides', 'transactionId', 'actor') THEN
                    RAISE EXCEPTION 'unknown key "%" in event', k USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END LOOP;
            IF jsonb_typeof(COALESCE(ev -> 'workflowId', ev -> 'name')) IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION 'workflowId (or name) is required' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(ev -> 'transactionId') NOT IN ('string', 'null') THEN
                RAISE EXCEPTION 'transactionId must be a string' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            res := novu.trigger(COALESCE(ev ->> 'workflowId', ev ->> 'name'), ev -> 'to',
                                COALESCE(ev -> 'payload', '{}'), COALESCE(ev -> 'overrides', '{}'),
                                ev ->> 'transactionId', ev -> 'actor');
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            res := jsonb_build_object('acknowledged', true, 'status', 'error',
                                      'error', jsonb_build_array(msg),
                                      'transactionId', CASE WHEN jsonb_typeof(ev) = 'object' THEN ev ->> 'transactionId' END);
        END;
        results := results || jsonb_build_array(res);
    END LOOP;
    RETURN results;
END
$$;
COMMENT ON FUNCTION novu.bulk_trigger(jsonb) IS 'Trigger up to 100 events; one result per event in order; a bad event gives status "error" and the others still run';

CREATE FUNCTION novu.cancel(transaction_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_events bigint;
    n_messages bigint;
    n_steps bigint;
BEGIN
    PERFORM novu._check_id(cancel.transaction_id, 'transaction_id');
    UPDATE novu.events e SET status = 'canceled', processed_at = now()
     WHERE e.transaction_id = cancel.transaction_id AND e.status IN ('pending', 'processing');
    GET DIAGNOSTICS n_events = ROW_COUNT;
    -- delays and digest events; before the messages: a step being run is
    -- waited for, and the messages it made are canceled below
    n_steps := novu._cancel_steps(cancel.transaction_id);
    WITH c AS (
        UPDATE novu.deliveries d SET status = 'canceled', updated_at = now(), last_error = 'Canceled'
         WHERE d.transaction_id = cancel.transaction_id AND d.status = 'pending'
        RETURNING d.id, d.subscriber_id, d.workflow_id, d.channel, d.provider_id)
    INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id,
                                        channel, provider_id, status, detail)
    SELECT cancel.transaction_id, c.id, c.subscriber_id, c.workflow_id, c.channel, c.provider_id,
           'Warning', 'Message canceled'
      FROM c;
    GET DIAGNOSTICS n_messages = ROW_COUNT;
    RETURN n_events + n_messages + n_steps > 0;
END
$$;
COMMENT ON FUNCTION novu.cancel(text) IS 'Cancel every message of a transaction not yet claimed for sending, its delays and digest events (and the steps after them); true if anything was canceled';

-- trigger_on_row turns the caller's row into JSON: a row may hold values of
-- the caller's own types, whose casts and output functions are the caller's
-- code.  It runs as the caller (SECURITY INVOKER), so that code runs with the
-- caller's rights; only the finished jsonb crosses into novu.trigger, the
-- definer function, which the caller must be allowed to execute (novu_app).
CREATE FUNCTION novu.trigger_on_row()
RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r jsonb;
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' THEN
        RAISE EXCEPTION 'novu.trigger_on_row() must be an AFTER ... FOR EACH ROW trigger'
            USING ERRCODE = 'invalid_object_definition',
                  HINT = 'CREATE TRIGGER t AFTER INSERT ON tbl FOR EACH ROW EXECUTE FUNCTION novu.trigger_on_row(''workflow-id'', ''subscriber_column'').';
    END IF;
    IF TG_NARGS <> 2 THEN
        RAISE EXCEPTION 'novu.trigger_on_row() takes 2 arguments, got %', TG_NARGS
            USING ERRCODE = 'invalid_object_definition',
                  HINT = 'EXECUTE FUNCTION novu.trigger_on_row(''workflow-id'', ''subscriber_column'').';
    END IF;
    r := pg_catalog.to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    IF NOT r ? TG_ARGV[1] THEN
        RAISE EXCEPTION 'column "%" not found in table %.%', TG_ARGV[1], TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'undefined_column',
                  HINT = 'The second argument of novu.trigger_on_row() names the column holding the subscriberId.';
    END IF;
    -- A row without a recipient notifies nobody.
    IF r ->> TG_ARGV[1] IS NOT NULL THEN
        PERFORM novu.trigger(TG_ARGV[0], pg_catalog.to_jsonb(r ->> TG_ARGV[1]), r);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION novu.trigger_on_row() IS 'Row trigger: AFTER INSERT/UPDATE/DELETE ... EXECUTE FUNCTION novu.trigger_on_row(''workflow-id'', ''subscriber_column''); payload = the row as JSON (OLD for DELETE); runs as the caller, who needs novu_app';

------------------------------------------------------------------------------
-- Templates
------------------------------------------------------------------------------

CREATE FUNCTION novu.render(template text, context jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'novu_render'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION novu.render(text, jsonb) IS 'Render a Liquid-style template against a JSON context (the engine workflows use), for previews and tests';

------------------------------------------------------------------------------
-- Preferences
------------------------------------------------------------------------------

CREATE FUNCTION novu._preference_json(enabled boolean, channels jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'enabled', COALESCE(enabled, true),
        'channels', jsonb_build_object('push', true, 'in_app', true, 'chat', true, 'email', true, 'sms', true)
                    || COALESCE(channels, '{}'))
$$;
COMMENT ON FUNCTION novu._preference_json(boolean, jsonb) IS 'Internal: a preference with every channel defaulting to enabled';

CREATE FUNCTION novu.get_preferences(subscriber_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(get_preferences.subscriber_id, 'subscriber_id');
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = get_preferences.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', get_preferences.subscriber_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.identify().';
    END IF;
    RETURN jsonb_build_object(
        'global', (SELECT novu._preference_json(p.enabled, p.channels)
                     FROM (SELECT NULL) x
                     LEFT JOIN novu.preferences p
                       ON p.subscriber_id = get_preferences.subscriber_id AND p.workflow_id IS NULL),
        'workflows', COALESCE((
            SELECT jsonb_agg(jsonb_build_object(
                       'workflowId', w.workflow_id, 'name', w.name, 'critical', w.critical,
                       'preference', novu._preference_json(p.enabled, p.channels))
                     ORDER BY w.workflow_id)
              FROM novu.workflows w
              LEFT JOIN novu.preferences p
                ON p.subscriber_id = get_preferences.subscriber_id AND p.workflow_id = w.workflow_id), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION novu.get_preferences(text) IS 'A subscriber''s global and per-workflow preferences (defaults: everything enabled)';

CREATE FUNCTION novu.set_preference(subscriber_id text, workflow_id text DEFAULT NULL,
                                    enabled boolean DEFAULT NULL, channels jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
    p novu.preferences;
BEGIN
    PERFORM novu._check_id(set_preference.subscriber_id, 'subscriber_id');
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = set_preference.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', set_preference.subscriber_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.identify().';
    END IF;
    IF set_preference.workflow_id IS NOT NULL THEN
        PERFORM FROM novu.workflows w WHERE w.workflow_id = set_preference.workflow_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'workflow "%" not found', set_preference.workflow_id
                USING ERRCODE = 'undefined_object', HINT = 'Pass NULL for the global preference.';
        END IF;
    END IF;
    IF channels IS NOT NULL THEN
        IF jsonb_typeof(channels) <> 'object' THEN
            RAISE EXCEPTION 'channels must be a JSON object'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Example: {"push": false}.';
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(channels) LOOP
            IF k NOT IN ('push', 'in_app', 'chat', 'email', 'sms') THEN
                RAISE EXCEPTION 'unknown channel "%" in channels', k
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Channels: push, in_app, chat, email, sms.';
            END IF;
            IF jsonb_typeof(v) <> 'boolean' THEN
                RAISE EXCEPTION 'channels.% must be a boolean', k
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
            END IF;
        END LOOP;
    END IF;
    INSERT INTO novu.preferences AS x (subscriber_id, workflow_id, enabled, channels)
    VALUES (set_preference.subscriber_id, set_preference.workflow_id, COALESCE(enabled, true), COALESCE(channels, '{}'))
    ON CONFLICT ON CONSTRAINT preferences_key DO UPDATE SET
        enabled = COALESCE(set_preference.enabled, x.enabled),
        channels = x.channels || COALESCE(set_preference.channels, '{}'),
        updated_at = now()
    RETURNING * INTO p;
    RETURN jsonb_build_object('workflowId', p.workflow_id,
                              'preference', novu._preference_json(p.enabled, p.channels));
END
$$;
COMMENT ON FUNCTION novu.set_preference(text, text, boolean, jsonb) IS 'Set a subscriber''s preference: global (workflow_id NULL) or per workflow; enabled and/or channels such as {"push": false}; critical workflows ignore preferences';

------------------------------------------------------------------------------
-- Statistics
------------------------------------------------------------------------------

CREATE FUNCTION novu.notification_stats()
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'weeklySent', count(*) FILTER (WHERE n.created_at > now() - interval '7 days'),
        'monthlySent', count(*) FILTER (WHERE n.created_at > now() - interval '1 month'),
        'yearlySent', count(*) FILTER (WHERE n.created_at > now() - interval '1 year'))
      FROM novu.notifications n
     WHERE n.created_at > now() - interval '1 year'
$$;
COMMENT ON FUNCTION novu.notification_stats() IS 'Notifications triggered in the last week, month and year: {weeklySent, monthlySent, yearlySent}';

------------------------------------------------------------------------------
-- In-app feed and activity API (DESIGN 10: the seed's v1 endpoints, as SQL)
-- The feed functions take the subscriber's id and touch only that subscriber's
-- rows: a message id of another subscriber is "not found", never a write.
-- Marks that change (and messages deleted) NOTIFY novu_in_app with
-- {"subscriberId", "unseenCount"}, delivered at commit, nothing on rollback.
------------------------------------------------------------------------------

-- Raise unless page and page_size are a valid page request.
CREATE FUNCTION novu._check_paging(page integer, page_size integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF page IS NULL OR page < 0 THEN
        RAISE EXCEPTION 'page must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pages are numbered from 0.';
    END IF;
    IF page_size IS NULL OR page_size < 1 OR page_size > 100 THEN
        RAISE EXCEPTION 'page_size must be between 1 and 100'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default page size is 10.';
    END IF;
    IF page::bigint * page_size > 1000000 THEN
        RAISE EXCEPTION 'page % is too far (at most 1,000,000 items are skipped)', page
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Narrow the request with its filters.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._check_paging(integer, integer) IS 'Internal: raise unless page >= 0 and page_size is 1 to 100';

-- Raise unless the subscriber exists (the feed functions' first check).
CREATE FUNCTION novu._feed_subscriber(p_subscriber_id text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM novu._check_id(p_subscriber_id, 'subscriber_id');
    PERFORM FROM novu.subscribers s WHERE s.subscriber_id = p_subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', p_subscriber_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with novu.identify().';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._feed_subscriber(text) IS 'Internal: raise unless the subscriberId is valid and the subscriber exists';

-- A message id (Novu's _id: the digits of novu.messages.id, as text or a number).
CREATE FUNCTION novu._message_id(value jsonb, field text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) = 'string' AND (value #>> '{}') ~ '^[0-9]{1,18}$' THEN
        RETURN (value #>> '{}')::bigint;
    ELSIF jsonb_typeof(value) = 'number' AND (value #>> '{}') ~ '^[0-9]{1,18}$' THEN
        RETURN (value #>> '{}')::bigint;
    END IF;
    RAISE EXCEPTION '% must be a message id', field
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'A message id is the "_id" of a feed item or message: digits, e.g. "42".';
END
$$;
COMMENT ON FUNCTION novu._message_id(jsonb, text) IS 'Internal: a message id given as a string of digits or a number';

-- The message ids of a mark request: one id, or an array of 1 to 1000 ids.
CREATE FUNCTION novu._message_ids(message_ids jsonb)
RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids bigint[];
BEGIN
    IF message_ids IS NULL THEN
        RAISE EXCEPTION 'message_ids is required'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give a message id or an array of them: ["42", "43"].';
    END IF;
    IF jsonb_typeof(message_ids) <> 'array' THEN
        RETURN ARRAY[novu._message_id(message_ids, 'message_ids')];
    END IF;
    IF jsonb_array_length(message_ids) = 0 THEN
        RAISE EXCEPTION 'message_ids must not be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give at least one message id.';
    END IF;
    IF jsonb_array_length(message_ids) > 1000 THEN
        RAISE EXCEPTION 'message_ids has % ids, at most 1000 are allowed', jsonb_array_length(message_ids)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Use novu.mark_all_as() for a whole feed.';
    END IF;
    SELECT array_agg(DISTINCT novu._message_id(e.value, format('message_ids[%s]', e.n - 1)))
      INTO ids
      FROM jsonb_array_elements(message_ids) WITH ORDINALITY AS e(value, n);
    RETURN ids;
END
$$;
COMMENT ON FUNCTION novu._message_ids(jsonb) IS 'Internal: the ids of a mark request (one id or an array of at most 1000)';

-- A mark: {"seen": bool, "read": bool} (one or both), or Novu's mark-all word
-- "seen", "unseen", "read" or "unread" as a JSON string.
CREATE FUNCTION novu._feed_mark(mark jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF jsonb_typeof(mark) = 'string' THEN
        CASE mark #>> '{}'
        WHEN 'seen' THEN RETURN '{"seen": true}';
        WHEN 'unseen' THEN RETURN '{"seen": false}';
        WHEN 'read' THEN RETURN '{"read": true}';
        WHEN 'unread' THEN RETURN '{"read": false}';
        ELSE NULL;
        END CASE;
    END IF;
    IF mark IS NULL OR jsonb_typeof(mark) <> 'object' THEN
        RAISE EXCEPTION 'mark must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: {"seen": true, "read": true}; or one of "seen", "unseen", "read", "unread".';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(mark) LOOP
        IF k NOT IN ('seen', 'read') THEN
            RAISE EXCEPTION 'unknown key "%" in mark', k
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A mark has seen and/or read.';
        END IF;
        IF jsonb_typeof(v) <> 'boolean' THEN
            RAISE EXCEPTION 'mark.% must be a boolean', k
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass true or false.';
        END IF;
    END LOOP;
    IF NOT (mark ? 'seen' OR mark ? 'read') THEN
        RAISE EXCEPTION 'mark must set seen or read'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Example: {"seen": true}.';
    END IF;
    RETURN mark;
END
$$;
COMMENT ON FUNCTION novu._feed_mark(jsonb) IS 'Internal: validate a mark ({seen?, read?} or "seen"/"unseen"/"read"/"unread")';

-- A feed item in Novu's shape.  Called for each item of a page, so it is kept
-- inlinable: no SET clause (a SET makes each call switch settings, a third of a
-- feed page's time) and the dates formatted in place (novu._iso has one).  It
-- is reached only from the feed functions, whose search_path is pinned.
CREATE FUNCTION novu._feed_item(m novu.in_app_messages)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object(
        '_id', m.id::text,
        'subscriberId', m.subscriber_id,
        'templateIdentifier', m.workflow_id,
        'transactionId', m.transaction_id,
        '_feedId', m.feed_identifier,
        'channel', 'in_app',
        'content', m.content,
        'subject', m.subject,
        'avatar', m.avatar,
        'cta', m.cta,
        'actor', m.actor,
        'payload', m.payload,
        'seen', m.seen,
        'read', m.read,
        'archived', m.archived,
        'lastSeenDate', to_char(m.last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'lastReadDate', to_char(m.last_read_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'createdAt', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'updatedAt', to_char(m.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'status', 'sent',
        'deleted', false)
$$;
COMMENT ON FUNCTION novu._feed_item(novu.in_app_messages) IS 'Internal: JSON of a feed item (Novu''s in_app message)';

-- NOTIFY novu_in_app {"subscriberId", "unseenCount"} (unseen counted up to 100),
-- delivered when the calling transaction commits.  Any role that may connect can
-- LISTEN and then hold a transaction open, which keeps the server's notification
-- queue from being emptied; once full, every commit that notifies fails (the
-- worker's in-app sink, the marks).  The notification is a hint: past half the
-- queue none is sent, and the messages and marks commit.
CREATE FUNCTION novu._notify_in_app(p_subscriber_id text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('novu_in_app', format('{"subscriberId": %s, "unseenCount": %s}', to_json(p_subscriber_id),
        (SELECT count(*) FROM (SELECT FROM novu.in_app_messages m
                                WHERE m.subscriber_id = p_subscriber_id AND NOT m.seen
                                LIMIT 100) c)))
     WHERE pg_notification_queue_usage() < 0.5
$$;
COMMENT ON FUNCTION novu._notify_in_app(text) IS 'Internal: NOTIFY novu_in_app with the subscriber''s unseen count (up to 100), at commit';

CREATE FUNCTION novu.feed(subscriber_id text, page integer DEFAULT 0, page_size integer DEFAULT 10,
                          seen boolean DEFAULT NULL, read boolean DEFAULT NULL, payload jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total bigint;
    cap bigint;
    items jsonb;
BEGIN
    PERFORM novu._feed_subscriber(feed.subscriber_id);
    PERFORM novu._check_paging(feed.page, feed.page_size);
    IF feed.payload IS NOT NULL THEN
        IF jsonb_typeof(feed.payload) <> 'object' THEN
            RAISE EXCEPTION 'payload must be a JSON object'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The feed keeps the messages whose payload contains it, e.g. {"postId": 42}.';
        END IF;
        PERFORM novu._check_size(feed.payload, 'payload', 16384);
        -- array containment compares every element with every element, per
        -- message: a filter of thousands of elements took seconds a row
        IF jsonb_path_exists(feed.payload, 'strict $.** ? (@.type() == "array")') THEN
            RAISE EXCEPTION 'payload must not contain arrays'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Filter by keys and scalar values, e.g. {"postId": 42} or {"post": {"id": 42}}.';
        END IF;
    END IF;
    -- totalCount is counted up to 1000 (Novu's COUNT_LIMIT), or up to one past
    -- the page asked for when that is further, so that hasMore is always
    -- exact and a long history is never counted whole.  Without a payload
    -- filter, the count and the page's ids come from an index alone (the feed
    -- index holds seen and read; the unseen messages have a partial index
    -- holding read) and only the page's rows are read, by primary key.
    cap := GREATEST(1000, feed.page::bigint * feed.page_size + feed.page_size + 1);
    IF feed.payload IS NULL AND feed.seen IS FALSE THEN
        SELECT count(*) INTO total
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id AND NOT m.seen
                   AND (feed.read IS NULL OR m.read = feed.read)
                 LIMIT cap) c;
        SELECT COALESCE(jsonb_agg(novu._feed_item(x) ORDER BY x.created_at DESC, x.id DESC), '[]')
          INTO items
          FROM (SELECT m.id FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id AND NOT m.seen
                   AND (feed.read IS NULL OR m.read = feed.read)
                 ORDER BY m.created_at DESC, m.id DESC
                 OFFSET feed.page::bigint * feed.page_size LIMIT feed.page_size) k
          JOIN novu.in_app_messages x ON x.id = k.id;
    ELSIF feed.payload IS NULL THEN
        SELECT count(*) INTO total
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                 LIMIT cap) c;
        SELECT COALESCE(jsonb_agg(novu._feed_item(x) ORDER BY x.created_at DESC, x.id DESC), '[]')
          INTO items
          FROM (SELECT m.id FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                 ORDER BY m.created_at DESC, m.id DESC
                 OFFSET feed.page::bigint * feed.page_size LIMIT feed.page_size) k
          JOIN novu.in_app_messages x ON x.id = k.id;
    ELSE
        SELECT count(*) INTO total
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                   AND m.payload @> feed.payload
                 LIMIT cap) c;
        SELECT COALESCE(jsonb_agg(novu._feed_item(x) ORDER BY x.created_at DESC, x.id DESC), '[]')
          INTO items
          FROM (SELECT * FROM novu.in_app_messages m
                 WHERE m.subscriber_id = feed.subscriber_id
                   AND (feed.seen IS NULL OR m.seen = feed.seen)
                   AND (feed.read IS NULL OR m.read = feed.read)
                   AND m.payload @> feed.payload
                 ORDER BY m.created_at DESC, m.id DESC
                 OFFSET feed.page::bigint * feed.page_size LIMIT feed.page_size) x;
    END IF;
    RETURN jsonb_build_object(
        'data', items,
        'totalCount', total,
        'hasMore', feed.page::bigint * feed.page_size + jsonb_array_length(items) < total,
        'pageSize', feed.page_size,
        'page', feed.page);
END
$$;
COMMENT ON FUNCTION novu.feed(text, integer, integer, boolean, boolean, jsonb) IS 'A subscriber''s in-app feed, newest first: {data, totalCount, hasMore, pageSize, page}; filters seen, read and payload (containment); totalCount counts up to 1000 (or one past the page asked for)';

CREATE FUNCTION novu.unseen_count(subscriber_id text, seen boolean DEFAULT false, "limit" integer DEFAULT 100)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM novu._feed_subscriber(unseen_count.subscriber_id);
    IF unseen_count.seen IS NULL THEN
        RAISE EXCEPTION 'seen must be true or false'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'false (the default) counts the unseen messages.';
    END IF;
    IF unseen_count."limit" IS NULL OR unseen_count."limit" < 1 OR unseen_count."limit" > 100 THEN
        RAISE EXCEPTION 'limit must be between 1 and 100'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The count stops at limit (Novu''s default 100).';
    END IF;
    -- counted up to the limit: never a walk over the subscriber's whole history
    IF NOT unseen_count.seen THEN
        SELECT count(*) INTO n
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = unseen_count.subscriber_id AND NOT m.seen
                 LIMIT unseen_count."limit") c;
    ELSE
        SELECT count(*) INTO n
          FROM (SELECT FROM novu.in_app_messages m
                 WHERE m.subscriber_id = unseen_count.subscriber_id AND m.seen
                 LIMIT unseen_count."limit") c;
    END IF;
    RETURN jsonb_build_object('count', n);
END
$$;
COMMENT ON FUNCTION novu.unseen_count(text, boolean, integer) IS 'A subscriber''s unseen (or, seen => true, seen) in-app messages, counted up to limit (1..100): {count}';

-- Lock the given messages of a subscriber, in the feed's order (the order every
-- mark locks in, so concurrent marks never deadlock); raise if one is not the
-- subscriber's.
CREATE FUNCTION novu._lock_feed_messages(p_subscriber_id text, p_ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked bigint[];
    missing bigint;
BEGIN
    SELECT array_agg(l.id) INTO locked
      FROM (SELECT m.id FROM novu.in_app_messages m
             WHERE m.id = ANY (p_ids) AND m.subscriber_id = p_subscriber_id
             ORDER BY m.created_at DESC, m.id DESC
             FOR UPDATE) l;
    SELECT x INTO missing FROM unnest(p_ids) x WHERE NOT x = ANY (COALESCE(locked, '{}')) ORDER BY x LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'message "%" not found in the feed of subscriber "%"', missing, p_subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Message ids come from novu.feed(subscriber_id); a subscriber marks only its own messages.';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._lock_feed_messages(text, bigint[]) IS 'Internal: lock a subscriber''s feed messages in feed order; raise if one is not the subscriber''s';

CREATE FUNCTION novu.mark_as(subscriber_id text, message_ids jsonb, mark jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids bigint[];
    mk jsonb;
    to_seen boolean;
    to_read boolean;
    changed integer;
BEGIN
    PERFORM novu._feed_subscriber(mark_as.subscriber_id);
    ids := novu._message_ids(mark_as.message_ids);
    -- the answer lists the messages, content and payload included: a feed page's worth
    IF cardinality(ids) > 100 THEN
        RAISE EXCEPTION 'message_ids has % ids, mark_as takes at most 100', cardinality(ids)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'It answers with the messages, as a feed page does: mark a page at a time, or use novu.mark_all_as.';
    END IF;
    mk := novu._feed_mark(mark_as.mark);
    to_seen := (mk ->> 'seen')::boolean;
    to_read := (mk ->> 'read')::boolean;
    PERFORM novu._lock_feed_messages(mark_as.subscriber_id, ids);
    UPDATE novu.in_app_messages m
       SET seen = COALESCE(to_seen, m.seen),
           last_seen_at = CASE WHEN to_seen AND NOT m.seen THEN now() ELSE m.last_seen_at END,
           read = COALESCE(to_read, m.read),
           last_read_at = CASE WHEN to_read AND NOT m.read THEN now() ELSE m.last_read_at END,
           updated_at = now()
     WHERE m.id = ANY (ids) AND m.subscriber_id = mark_as.subscriber_id
       AND (m.seen <> COALESCE(to_seen, m.seen) OR m.read <> COALESCE(to_read, m.read));
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        PERFORM novu._notify_in_app(mark_as.subscriber_id);
    END IF;
    RETURN (SELECT COALESCE(jsonb_agg(novu._feed_item(m) ORDER BY m.created_at DESC, m.id DESC), '[]')
              FROM novu.in_app_messages m
             WHERE m.id = ANY (ids) AND m.subscriber_id = mark_as.subscriber_id);
END
$$;
COMMENT ON FUNCTION novu.mark_as(text, jsonb, jsonb) IS 'Mark a subscriber''s messages (one id or an array) {"seen": bool, "read": bool}; returns them; another subscriber''s message id is an error';

CREATE FUNCTION novu.mark_all_as(subscriber_id text, mark jsonb, feed_identifier text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mk jsonb;
    to_seen boolean;
    to_read boolean;
    changed integer;
BEGIN
    PERFORM novu._feed_subscriber(mark_all_as.subscriber_id);
    mk := novu._feed_mark(mark_all_as.mark);
    IF mark_all_as.feed_identifier IS NOT NULL THEN
        PERFORM novu._check_id(mark_all_as.feed_identifier, 'feed_identifier');
    END IF;
    to_seen := (mk ->> 'seen')::boolean;
    to_read := (mk ->> 'read')::boolean;
    -- lock in the feed's order first (see _lock_feed_messages), then update
    PERFORM FROM novu.in_app_messages m
     WHERE m.subscriber_id = mark_all_as.subscriber_id
       AND (mark_all_as.feed_identifier IS NULL OR m.feed_identifier = mark_all_as.feed_identifier)
       AND (m.seen <> COALESCE(to_seen, m.seen) OR m.read <> COALESCE(to_read, m.read))
     ORDER BY m.created_at DESC, m.id DESC
     FOR UPDATE;
    UPDATE novu.in_app_messages m
       SET seen = COALESCE(to_seen, m.seen),
           last_seen_at = CASE WHEN to_seen AND NOT m.seen THEN now() ELSE m.last_seen_at END,
           read = COALESCE(to_read, m.read),
           last_read_at = CASE WHEN to_read AND NOT m.read THEN now() ELSE m.last_read_at END,
           updated_at = now()
     WHERE m.subscriber_id = mark_all_as.subscriber_id
       AND (mark_all_as.feed_identifier IS NULL OR m.feed_identifier = mark_all_as.feed_identifier)
       AND (m.seen <> COALESCE(to_seen, m.seen) OR m.read <> COALESCE(to_read, m.read));
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        PERFORM novu._notify_in_app(mark_all_as.subscriber_id);
    END IF;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION novu.mark_all_as(text, jsonb, text) IS 'Mark all of a subscriber''s messages (of one feed if feed_identifier is given); mark {seen?, read?} or "seen"/"unseen"/"read"/"unread"; returns how many changed';

CREATE FUNCTION novu.mark_seen(subscriber_id text, message_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mark_seen.message_id IS NULL THEN
        RAISE EXCEPTION 'message_id is required'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the "_id" of a feed item.';
    END IF;
    RETURN novu.mark_as(mark_seen.subscriber_id, to_jsonb(mark_seen.message_id), '{"seen": true}') -> 0;
END
$$;
COMMENT ON FUNCTION novu.mark_seen(text, text) IS 'Mark one of a subscriber''s messages seen; returns it (Novu''s deprecated messages/:messageId/seen)';

CREATE FUNCTION novu.mark_action(subscriber_id text, message_id text, type text, status text,
                                 payload jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    msg_id bigint;
    m novu.in_app_messages;
BEGIN
    PERFORM novu._feed_subscriber(mark_action.subscriber_id);
    IF mark_action.message_id IS NULL THEN
        RAISE EXCEPTION 'message_id is required'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the "_id" of a feed item.';
    END IF;
    msg_id := novu._message_id(to_jsonb(mark_action.message_id), 'message_id');
    IF mark_action.type IS NULL OR mark_action.type NOT IN ('primary', 'secondary') THEN
        RAISE EXCEPTION 'type must be "primary" or "secondary"'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The type of the action button that was pressed.';
    END IF;
    IF mark_action.status IS NULL OR mark_action.status NOT IN ('pending', 'done') THEN
        RAISE EXCEPTION 'status must be "pending" or "done"'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Novu''s action statuses: pending, done.';
    END IF;
    IF mark_action.payload IS NULL OR jsonb_typeof(mark_action.payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The action''s result payload, e.g. {"accepted": true}.';
    END IF;
    PERFORM novu._check_size(mark_action.payload, 'payload', 16384);
    PERFORM novu._lock_feed_messages(mark_action.subscriber_id, ARRAY[msg_id]);
    SELECT * INTO m FROM novu.in_app_messages x WHERE x.id = msg_id;
    IF NOT EXISTS (SELECT FROM jsonb_array_elements(COALESCE(m.cta #> '{action,buttons}', '[]')) b
                    WHERE b ->> 'type' = mark_action.type) THEN
        RAISE EXCEPTION 'message "%" has no % action', msg_id, mark_action.type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The in_app step''s "actions" name the buttons a message has.';
    END IF;
    UPDATE novu.in_app_messages x
       SET cta = jsonb_set(jsonb_set(x.cta, '{action,status}', to_jsonb(mark_action.status)),
                           '{action,result}', jsonb_build_object('payload', mark_action.payload, 'type', mark_action.type)),
           updated_at = now()
     WHERE x.id = msg_id
    RETURNING * INTO m;
    PERFORM novu._notify_in_app(mark_action.subscriber_id);
    RETURN novu._feed_item(m);
END
$$;
COMMENT ON FUNCTION novu.mark_action(text, text, text, text, jsonb) IS 'Set the status (pending/done) and result payload of a message''s primary or secondary action; returns the message';

-- Activity: notifications are (transaction, subscriber) pairs (novu.notifications);
-- a notification's _id is "transactionId:subscriberId".
CREATE FUNCTION novu._notification_json(n novu.notifications, with_jobs boolean)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        '_id', n.transaction_id || ':' || n.subscriber_id,
        'transactionId', n.transaction_id,
        'createdAt', novu._iso(n.created_at),
        'status', n.status,
        'channels', COALESCE((SELECT jsonb_agg(DISTINCT st ->> 'type')
                                FROM jsonb_array_elements(w.steps) st
                               WHERE st ->> 'type' IN ('push', 'chat', 'in_app', 'email', 'sms')), '[]'),
        'subscriber', CASE WHEN s.subscriber_id IS NOT NULL THEN jsonb_build_object(
                          '_id', s.subscriber_id, 'subscriberId', s.subscriber_id, 'firstName', s.first_name,
                          'lastName', s.last_name, 'email', s.email, 'phone', s.phone)
                      ELSE jsonb_build_object('_id', n.subscriber_id, 'subscriberId', n.subscriber_id) END,
        'template', CASE WHEN w.workflow_id IS NOT NULL THEN jsonb_build_object(
                        '_id', w.workflow_id, 'name', w.name,
                        'triggers', jsonb_build_array(jsonb_build_object('identifier', w.workflow_id)))
                    ELSE jsonb_build_object('_id', n.workflow_id, 'name', NULL,
                        'triggers', jsonb_build_array(jsonb_build_object('identifier', n.workflow_id))) END,
        'payload', n.payload,
        'actor', n.actor)
    || CASE WHEN with_jobs THEN jsonb_build_object(
        'jobs', COALESCE((
            SELECT jsonb_agg(jsonb_build_object(
                       '_id', n.transaction_id || ':' || n.subscriber_id || ':' || (st.n - 1),
                       'type', st.step ->> 'type',
                       'step', st.step,
                       'status', CASE
                           WHEN j.total = 0 THEN CASE WHEN n.status = 'canceled' THEN 'canceled' ELSE 'pending' END
                           WHEN j.sent > 0 THEN 'completed'
                           WHEN j.pending > 0 THEN 'pending'
                           WHEN j.failed > 0 THEN 'failed'
                           WHEN j.canceled > 0 THEN 'canceled'
                           ELSE 'skipped' END,
                       'messages', j.messages,
                       'executionDetails', j.details)
                     ORDER BY st.n)
              FROM jsonb_array_elements(COALESCE(w.steps, '[]')) WITH ORDINALITY AS st(step, n)
              CROSS JOIN LATERAL (
                  SELECT count(*) AS total,
                         count(*) FILTER (WHERE d.status = 'sent') AS sent,
                         count(*) FILTER (WHERE d.status IN ('pending', 'sending')) AS pending,
                         count(*) FILTER (WHERE d.status = 'failed') AS failed,
                         count(*) FILTER (WHERE d.status = 'canceled') AS canceled,
                         COALESCE(jsonb_agg(jsonb_build_object(
                             '_id', d.id::text, 'status', d.status, 'providerId', d.provider_id,
                             'integrationIdentifier', d.integration_identifier, 'attempts', d.attempts,
                             'errorText', d.last_error, 'createdAt', novu._iso(d.created_at),
                             'sentAt', novu._iso(d.sent_at)) ORDER BY d.id) FILTER (WHERE d.id IS NOT NULL), '[]') AS messages,
                         COALESCE((SELECT jsonb_agg(jsonb_build_object(
                                      '_id', e.id::text, '_messageId', e.message_id::text, 'status', e.status,
                                      'detail', e.detail, 'providerId', e.provider_id, 'channel', e.channel,
                                      'createdAt', novu._iso(e.created_at)) ORDER BY e.id)
                                     FROM novu.execution_details e
                                    WHERE e.transaction_id = n.transaction_id
                                      AND e.message_id = ANY (array_agg(d.id))), '[]') AS details
                    FROM novu.deliveries d
                   WHERE d.transaction_id = n.transaction_id AND d.subscriber_id = n.subscriber_id
                     AND d.step_index = st.n - 1) j), '[]'),
        'executionDetails', COALESCE((
            SELECT jsonb_agg(jsonb_build_object(
                       '_id', e.id::text, 'status', e.status, 'detail', e.detail,
                       'createdAt', novu._iso(e.created_at)) ORDER BY e.id)
              FROM novu.execution_details e
             WHERE e.transaction_id = n.transaction_id AND e.message_id IS NULL
               AND (e.subscriber_id IS NULL OR e.subscriber_id = n.subscriber_id)), '[]'))
       ELSE '{}'::jsonb END
      FROM (SELECT NULL) x
      LEFT JOIN novu.workflows w ON w.workflow_id = n.workflow_id
      LEFT JOIN novu.subscribers s ON s.subscriber_id = n.subscriber_id
$$;
COMMENT ON FUNCTION novu._notification_json(novu.notifications, boolean) IS 'Internal: JSON of a notification (Novu''s activity item), with its jobs (steps, messages, execution details) if asked';

-- Raise unless value is null or a JSON array of at most 100 non-empty strings.
CREATE FUNCTION novu._check_text_array(value jsonb, field text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(value) <> 'array'
       OR EXISTS (SELECT FROM jsonb_array_elements(value) e
                   WHERE jsonb_typeof(e) <> 'string' OR e #>> '{}' = '' OR length(e #>> '{}') > 255) THEN
        RAISE EXCEPTION '% must be a JSON array of strings', field
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Example: ["value-1", "value-2"].';
    END IF;
    IF jsonb_array_length(value) > 100 THEN
        RAISE EXCEPTION '% has % values, at most 100 are allowed', field, jsonb_array_length(value)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Split the request.';
    END IF;
    RETURN ARRAY(SELECT jsonb_array_elements_text(value));
END
$$;
COMMENT ON FUNCTION novu._check_text_array(jsonb, text) IS 'Internal: a JSON array of at most 100 non-empty strings as text[] (NULL stays NULL)';

CREATE FUNCTION novu.list_notifications(channels jsonb DEFAULT NULL, templates jsonb DEFAULT NULL,
                                        emails jsonb DEFAULT NULL, search text DEFAULT NULL,
                                        page integer DEFAULT 0, transaction_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    chs text[] := novu._check_text_array(list_notifications.channels, 'channels');
    wfs text[] := novu._check_text_array(list_notifications.templates, 'templates');
    ems text[] := novu._check_text_array(list_notifications.emails, 'emails');
    bad text;
    total bigint;
    items jsonb;
    lim bigint;
    off integer;
    page_tx text[];
    page_sub text[];
BEGIN
    SELECT c INTO bad FROM unnest(chs) c WHERE c NOT IN ('push', 'chat', 'in_app', 'email', 'sms') LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown channel "%" in channels', bad
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Channels: push, chat, in_app, email, sms.';
    END IF;
    IF list_notifications.search IS NOT NULL AND (list_notifications.search = '' OR length(list_notifications.search) > 255) THEN
        RAISE EXCEPTION 'search must have 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'search matches part of a subscriberId, an email or a transactionId.';
    END IF;
    IF list_notifications.transaction_id IS NOT NULL THEN
        PERFORM novu._check_id(list_notifications.transaction_id, 'transaction_id');
    END IF;
    PERFORM novu._check_paging(list_notifications.page, 10);
    -- Newest first, by outbox id.  Counted up to 1000 or one past the page,
    -- as novu.feed counts.  The hits carry keys only; the page's ten rows are
    -- built after.  (Planned at each call, plan_cache_mode: the filters left
    -- out fold away.)
    lim := GREATEST(1000, list_notifications.page::bigint * 10 + 11);
    off := list_notifications.page * 10;
    IF list_notifications.search IS NULL AND ems IS NULL THEN
        -- Each status group's index (events_pending_idx, events_done_idx) read
        -- backwards only as far as the page and the count need: sorted by
        -- created_at, every call read and sorted the whole history (1.2 s a
        -- page with a million triggers).  The two branches differ in their
        -- status list only: the planner takes a partial index for a query that
        -- names its predicate, and each one ends at its own LIMIT.
        WITH hits AS MATERIALIZED (
        (SELECT e.id, r.subscriber_id, e.transaction_id
           FROM novu.events e
           CROSS JOIN LATERAL (SELECT u.s FROM unnest(e.recipients) AS u(s) WHERE e.kind = 'trigger'
                               UNION ALL
                               SELECT DISTINCT d.subscriber_id FROM novu.deliveries d
                                WHERE d.transaction_id = e.transaction_id AND e.kind IN ('broadcast', 'topic')) AS r(subscriber_id)
           LEFT JOIN novu.workflows w ON w.workflow_id = e.workflow_id
          WHERE e.status IN ('pending', 'processing')
            AND (list_notifications.transaction_id IS NULL OR e.transaction_id = list_notifications.transaction_id)
            AND (wfs IS NULL OR e.workflow_id = ANY (wfs))
            AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
          ORDER BY e.id DESC, r.subscriber_id
          LIMIT lim)
        UNION ALL
        (SELECT e.id, r.subscriber_id, e.transaction_id
           FROM novu.events e
           CROSS JOIN LATERAL (SELECT u.s FROM unnest(e.recipients) AS u(s) WHERE e.kind = 'trigger'
                               UNION ALL
                               SELECT DISTINCT d.subscriber_id FROM novu.deliveries d
                                WHERE d.transaction_id = e.transaction_id AND e.kind IN ('broadcast', 'topic')) AS r(subscriber_id)
           LEFT JOIN novu.workflows w ON w.workflow_id = e.workflow_id
          WHERE e.status IN ('processed', 'canceled')
            AND (list_notifications.transaction_id IS NULL OR e.transaction_id = list_notifications.transaction_id)
            AND (wfs IS NULL OR e.workflow_id = ANY (wfs))
            AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
          ORDER BY e.id DESC, r.subscriber_id
          LIMIT lim))
        SELECT LEAST(count(*), lim),
               (array_agg(h.transaction_id ORDER BY h.id DESC, h.subscriber_id))[off + 1 : off + 10],
               (array_agg(h.subscriber_id ORDER BY h.id DESC, h.subscriber_id))[off + 1 : off + 10]
          INTO total, page_tx, page_sub
          FROM hits h;
    ELSE
        -- A part of a subscriberId, transactionId or email, or emails: the
        -- matches may lie anywhere in the history, so it is read whole (hash
        -- joins), once for the count (up to lim) and once for the page (a
        -- top-N sort), as before 0.20.0.
        SELECT count(*) INTO total
          FROM (SELECT n.id, n.subscriber_id, n.transaction_id
                  FROM (SELECT e.id, r.s AS subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e CROSS JOIN LATERAL unnest(e.recipients) AS r(s)
                         WHERE e.kind = 'trigger'
                        UNION ALL
                        SELECT e.id, d.subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e
                          CROSS JOIN LATERAL (SELECT DISTINCT dd.subscriber_id FROM novu.deliveries dd
                                               WHERE dd.transaction_id = e.transaction_id) AS d
                         WHERE e.kind IN ('broadcast', 'topic')) n
                  LEFT JOIN novu.subscribers s ON s.subscriber_id = n.subscriber_id
                  LEFT JOIN novu.workflows w ON w.workflow_id = n.workflow_id
                 WHERE (list_notifications.transaction_id IS NULL OR n.transaction_id = list_notifications.transaction_id)
                   AND (wfs IS NULL OR n.workflow_id = ANY (wfs))
                   AND (ems IS NULL OR s.email = ANY (ems))
                   AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
                   AND (list_notifications.search IS NULL
                        OR strpos(n.subscriber_id, list_notifications.search) > 0
                        OR strpos(n.transaction_id, list_notifications.search) > 0
                        OR strpos(lower(s.email), lower(list_notifications.search)) > 0)
                 LIMIT lim) c;
        SELECT array_agg(h.transaction_id ORDER BY h.id DESC, h.subscriber_id),
               array_agg(h.subscriber_id ORDER BY h.id DESC, h.subscriber_id)
          INTO page_tx, page_sub
          FROM (SELECT n.id, n.subscriber_id, n.transaction_id
                  FROM (SELECT e.id, r.s AS subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e CROSS JOIN LATERAL unnest(e.recipients) AS r(s)
                         WHERE e.kind = 'trigger'
                        UNION ALL
                        SELECT e.id, d.subscriber_id, e.transaction_id, e.workflow_id
                          FROM novu.events e
                          CROSS JOIN LATERAL (SELECT DISTINCT dd.subscriber_id FROM novu.deliveries dd
                                               WHERE dd.transaction_id = e.transaction_id) AS d
                         WHERE e.kind IN ('broadcast', 'topic')) n
                  LEFT JOIN novu.subscribers s ON s.subscriber_id = n.subscriber_id
                  LEFT JOIN novu.workflows w ON w.workflow_id = n.workflow_id
                 WHERE (list_notifications.transaction_id IS NULL OR n.transaction_id = list_notifications.transaction_id)
                   AND (wfs IS NULL OR n.workflow_id = ANY (wfs))
                   AND (ems IS NULL OR s.email = ANY (ems))
                   AND (chs IS NULL OR EXISTS (SELECT FROM jsonb_array_elements(w.steps) st WHERE st ->> 'type' = ANY (chs)))
                   AND (list_notifications.search IS NULL
                        OR strpos(n.subscriber_id, list_notifications.search) > 0
                        OR strpos(n.transaction_id, list_notifications.search) > 0
                        OR strpos(lower(s.email), lower(list_notifications.search)) > 0)
                 ORDER BY n.id DESC, n.subscriber_id
                OFFSET off LIMIT 10) h;
    END IF;
    SELECT COALESCE(jsonb_agg(novu._notification_json(
                        ROW(e.transaction_id, e.workflow_id, z.s, e.kind, e.status, e.payload,
                            e.overrides, e.actor, e.created_at, e.processed_at)::novu.notifications, false)
                    ORDER BY z.i), '[]')
      INTO items
      FROM unnest(page_tx, page_sub) WITH ORDINALITY AS z(t, s, i)
      JOIN novu.events e ON e.transaction_id = z.t;
    RETURN jsonb_build_object(
        'totalCount', total,
        'data', items,
        'pageSize', 10,
        'page', list_notifications.page,
        'hasMore', list_notifications.page::bigint * 10 + jsonb_array_length(items) < total);
END
$$;
COMMENT ON FUNCTION novu.list_notifications(jsonb, jsonb, jsonb, text, integer, text) IS 'Activity: notifications newest first (by outbox id), 10 a page, filtered by channels, templates (workflow ids), emails, search (part of subscriberId, email or transactionId) and transactionId: {totalCount, data, pageSize, page, hasMore}; totalCount counts up to 1000 (or one past the page asked for)';

CREATE FUNCTION novu.get_notification(notification_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    matches novu.notifications[];
    pos integer := 0;
    nxt integer;
    t text;
    s text;
    one novu.notifications;
BEGIN
    IF get_notification.notification_id IS NULL OR strpos(get_notification.notification_id, ':') = 0
       OR length(get_notification.notification_id) > 511 THEN
        RAISE EXCEPTION 'notification_id must be "transactionId:subscriberId"'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use the "_id" of an item of novu.list_notifications().';
    END IF;
    -- either part may hold ':' itself: try each split (a few index probes)
    LOOP
        nxt := strpos(substr(get_notification.notification_id, pos + 1), ':');
        EXIT WHEN nxt = 0 OR pos > 500;
        pos := pos + nxt;
        t := left(get_notification.notification_id, pos - 1);
        s := substr(get_notification.notification_id, pos + 1);
        IF t <> '' AND s <> '' THEN
            SELECT n.* INTO one FROM novu.notifications n WHERE n.transaction_id = t AND n.subscriber_id = s LIMIT 1;
            IF FOUND THEN
                matches := matches || one;
            END IF;
        END IF;
    END LOOP;
    IF cardinality(matches) IS NULL THEN
        RAISE EXCEPTION 'notification "%" not found', get_notification.notification_id
            USING ERRCODE = 'undefined_object', HINT = 'Use the "_id" of an item of novu.list_notifications().';
    END IF;
    IF cardinality(matches) > 1 THEN
        RAISE EXCEPTION 'notification "%" is ambiguous', get_notification.notification_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Both its transactionId and subscriberId hold ":"; use novu.list_notifications(transaction_id => ...).';
    END IF;
    RETURN novu._notification_json(matches[1], true);
END
$$;
COMMENT ON FUNCTION novu.get_notification(text) IS 'Activity: one notification ("transactionId:subscriberId") with its subscriber, template and jobs (each step''s status, messages and execution details)';

CREATE FUNCTION novu.notification_graph_stats(days integer DEFAULT 7)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF days IS NULL OR days < 1 OR days > 366 THEN
        RAISE EXCEPTION 'days must be between 1 and 366'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 7: today and the 6 days before (UTC).';
    END IF;
    RETURN (
        SELECT COALESCE(jsonb_agg(jsonb_build_object(
                   '_id', d.day, 'count', d.count, 'templates', to_jsonb(d.templates),
                   'channels', COALESCE((SELECT jsonb_agg(DISTINCT st ->> 'type')
                                           FROM novu.workflows w CROSS JOIN LATERAL jsonb_array_elements(w.steps) st
                                          WHERE w.workflow_id = ANY (d.templates)
                                            AND st ->> 'type' IN ('push', 'chat', 'in_app', 'email', 'sms')), '[]'))
                   ORDER BY d.day DESC), '[]')
          FROM (SELECT to_char(n.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) AS count,
                       array_agg(DISTINCT n.workflow_id) AS templates
                  FROM novu.notifications n
                 WHERE n.created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') - (days - 1) * interval '1 day') AT TIME ZONE 'UTC'
                 GROUP BY 1) d);
END
$$;
COMMENT ON FUNCTION novu.notification_graph_stats(integer) IS 'Activity: notifications per day (UTC) of the last days (today included): [{_id: "YYYY-MM-DD", count, templates, channels}], newest first';

-- A message (any channel) in Novu's shape; an in_app message with its feed fields.
-- A chat message's target (the webhook URL, a credential) is not shown.
CREATE FUNCTION novu._message_json(d novu.deliveries, m novu.in_app_messages)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        '_id', d.id::text,
        'transactionId', d.transaction_id,
        'templateIdentifier', d.workflow_id,
        'subscriberId', d.subscriber_id,
        'channel', d.channel,
        'providerId', d.provider_id,
        'integrationIdentifier', d.integration_identifier,
        'deviceTokens', CASE WHEN d.channel = 'push' AND d.device_token IS NOT NULL
                             THEN jsonb_build_array(d.device_token) END,
        'status', d.status,
        'errorText', d.last_error,
        'attempts', d.attempts,
        'providerMessageId', d.provider_message_id,
        'createdAt', novu._iso(d.created_at),
        'updatedAt', novu._iso(d.updated_at),
        'sentAt', novu._iso(d.sent_at))
    || CASE WHEN m.id IS NOT NULL THEN jsonb_build_object(
        'content', m.content, 'subject', m.subject, 'cta', m.cta, 'seen', m.seen, 'read', m.read,
        'lastSeenDate', novu._iso(m.last_seen_at), 'lastReadDate', novu._iso(m.last_read_at),
        'payload', m.payload)
       ELSE '{}'::jsonb END
$$;
COMMENT ON FUNCTION novu._message_json(novu.deliveries, novu.in_app_messages) IS 'Internal: JSON of a message (novu.list_messages)';

CREATE FUNCTION novu.list_messages(channel text DEFAULT NULL, subscriber_id text DEFAULT NULL,
                                   transaction_ids jsonb DEFAULT NULL, page integer DEFAULT 0,
                                   page_size integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    txs text[] := novu._check_text_array(list_messages.transaction_ids, 'transaction_ids');
    total bigint;
    items jsonb;
BEGIN
    IF list_messages.channel IS NOT NULL AND list_messages.channel NOT IN ('push', 'chat', 'in_app') THEN
        RAISE EXCEPTION 'unknown channel "%"', list_messages.channel
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Channels: push, chat, in_app.';
    END IF;
    IF list_messages.subscriber_id IS NOT NULL THEN
        PERFORM novu._check_id(list_messages.subscriber_id, 'subscriber_id');
    END IF;
    PERFORM novu._check_paging(list_messages.page, list_messages.page_size);
    -- counted up to 1000 or one past the page, as novu.feed counts
    SELECT count(*) INTO total
      FROM (SELECT FROM novu.deliveries d
             WHERE (list_messages.channel IS NULL OR d.channel = list_messages.channel)
               AND (list_messages.subscriber_id IS NULL OR d.subscriber_id = list_messages.subscriber_id)
               AND (txs IS NULL OR d.transaction_id = ANY (txs))
             LIMIT GREATEST(1000, list_messages.page::bigint * list_messages.page_size + list_messages.page_size + 1)) c;
    SELECT COALESCE(jsonb_agg(novu._message_json(x.d, m) ORDER BY (x.d).id DESC), '[]') INTO items
      FROM (SELECT d FROM novu.deliveries d
             WHERE (list_messages.channel IS NULL OR d.channel = list_messages.channel)
               AND (list_messages.subscriber_id IS NULL OR d.subscriber_id = list_messages.subscriber_id)
               AND (txs IS NULL OR d.transaction_id = ANY (txs))
             ORDER BY d.id DESC
             OFFSET list_messages.page::bigint * list_messages.page_size LIMIT list_messages.page_size) x
      LEFT JOIN novu.in_app_messages m ON m.id = (x.d).id;
    RETURN jsonb_build_object(
        'page', list_messages.page,
        'totalCount', total,
        'hasMore', list_messages.page::bigint * list_messages.page_size + jsonb_array_length(items) < total,
        'pageSize', list_messages.page_size,
        'data', items);
END
$$;
COMMENT ON FUNCTION novu.list_messages(text, text, jsonb, integer, integer) IS 'Messages of every channel, newest first, filtered by channel, subscriber and transactionIds: {page, totalCount, hasMore, pageSize, data}; totalCount counts up to 1000 (or one past the page asked for)';

CREATE FUNCTION novu.delete_message(message_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    msg_id bigint;
    n_delivery integer;
    feed_subscriber text;
BEGIN
    IF delete_message.message_id IS NULL THEN
        RAISE EXCEPTION 'message_id is required'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the "_id" of a message.';
    END IF;
    msg_id := novu._message_id(to_jsonb(delete_message.message_id), 'message_id');
    -- a message a worker is sending now completes (as with novu.cancel): its
    -- row locked here until this transaction ends would stop that worker
    DELETE FROM novu.deliveries d WHERE d.id = msg_id AND d.status <> 'sending';
    GET DIAGNOSTICS n_delivery = ROW_COUNT;
    DELETE FROM novu.in_app_messages m WHERE m.id = msg_id RETURNING m.subscriber_id INTO feed_subscriber;
    IF feed_subscriber IS NOT NULL THEN
        PERFORM novu._notify_in_app(feed_subscriber);
    END IF;
    RETURN n_delivery > 0 OR feed_subscriber IS NOT NULL;
END
$$;
COMMENT ON FUNCTION novu.delete_message(text) IS 'Delete one message (any channel; an in_app one leaves the feed); false if unknown or being sent now (it completes).  The activity log keeps its entries';

CREATE FUNCTION novu.delete_messages(transaction_id text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    feed_subscribers text[];
BEGIN
    PERFORM novu._check_id(delete_messages.transaction_id, 'transaction_id');
    -- the feed rows locked in feed order first, as the mark functions lock
    -- theirs: deleted in the table's order, two rows of one feed could be
    -- taken in the other order than novu.mark_all_as takes them (a deadlock)
    PERFORM FROM novu.in_app_messages m
      WHERE m.transaction_id = delete_messages.transaction_id
      ORDER BY m.created_at DESC, m.id DESC
      FOR UPDATE;
    -- messages a worker is sending now complete (as with novu.cancel): their
    -- rows locked here until this transaction ends would stop that worker
    WITH d AS (
        DELETE FROM novu.deliveries d
         WHERE d.transaction_id = delete_messages.transaction_id AND d.status <> 'sending'
        RETURNING d.id
    ),
    m AS (
        DELETE FROM novu.in_app_messages m WHERE m.transaction_id = delete_messages.transaction_id
        RETURNING m.id, m.subscriber_id
    )
    SELECT (SELECT count(*) FROM (SELECT d.id FROM d UNION SELECT m.id FROM m) u),
           (SELECT array_agg(DISTINCT m.subscriber_id) FROM m)
      INTO n, feed_subscribers;
    PERFORM novu._notify_in_app(s) FROM unnest(feed_subscribers) s;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu.delete_messages(text) IS 'Delete every message of a transaction (any channel; in_app ones leave the feeds) but those being sent now (they complete); returns how many.  It does not stop what is not fanned out yet: see novu.cancel()';

------------------------------------------------------------------------------
-- Worker side (called by the delivery workers, as novu_worker, in short transactions)
------------------------------------------------------------------------------

-- Expand (transaction, workflow, subscriber) triples into delivery rows: one per
-- step and device token; preferences, missing subscribers and missing tokens give
-- skipped rows with the reason, logged in the activity log.  The first
-- p_lease_limit deliverable rows are leased to the calling worker (status
-- 'sending', attempt 1) and returned with their rendering context; the others
-- wait in the queue as 'pending'.  Notifications going on after a digest:
-- p_digest_ids, the window each comes from (its messages' digest_id, whose
-- events a message claimed later sees), and p_digest_contexts, that window's
-- step.digest, step.events and step.total_count (novu._digest_context), given
-- to the messages leased here as "_digest" in their step (step_key: /window).
--
-- Every join here is by key on a batch of at most a few thousand rows: index
-- nested loops always win, and the queue tables' statistics change too fast for
-- the planner to know it (it hashed whole tables), hence the SET clauses.
CREATE FUNCTION novu._expand(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                             p_lease_limit integer, p_lease_ms integer, p_steps integer[] DEFAULT NULL,
                             p_digest_ids bigint[] DEFAULT NULL, p_digest_contexts jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT x.transaction_id, x.workflow_id, x.subscriber_id, x.only_step, x.digest_id, x.digest_context
          FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_steps, p_digest_ids, p_digest_contexts)
               AS x(transaction_id, workflow_id, subscriber_id, only_step, digest_id, digest_context)
    ),
    targets AS (
        SELECT i.transaction_id, i.workflow_id, i.subscriber_id, i.digest_id, i.digest_context,
               (s.n - 1)::integer AS step_index, s.step, s.step ->> 'type' AS channel,
               s.step -> 'providers' AS providers,
               i.workflow_id || '/' || (s.n - 1) || '/' || w.updated_at AS step_key,
               sub.subscriber_id IS NOT NULL AS subscriber_exists,
               CASE WHEN sub.subscriber_id IS NOT NULL THEN novu._profile(
                   sub.subscriber_id, sub.first_name, sub.last_name, sub.email, sub.phone, sub.avatar, sub.locale,
                   sub.timezone, sub.data) END AS subscriber,
               w.critical OR pref.blocked IS NULL AS allowed
          FROM input i
          JOIN novu.workflows w ON w.workflow_id = i.workflow_id
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
          LEFT JOIN novu.subscribers sub ON sub.subscriber_id = i.subscriber_id
          LEFT JOIN LATERAL (
              SELECT true AS blocked FROM novu.preferences p
               WHERE p.subscriber_id = i.subscriber_id
                 AND (p.workflow_id IS NULL OR p.workflow_id = i.workflow_id)
                 AND (NOT p.enabled OR (p.channels ->> (s.step ->> 'type'))::boolean IS FALSE)
               LIMIT 1) pref ON true
         -- p_steps: that one step of each notification (the workflow engine, novu._advance)
         WHERE i.only_step IS NULL OR s.n = i.only_step + 1
    ),
    expanded AS (
        SELECT t.*, tok.integration_id, tok.provider_id, tok.identifier, tok.device_token,
               nextval('novu.deliveries_id_seq') AS id,
               -- in_app: one message per notification, no target (the feed)
               tok.device_token IS NOT NULL OR (t.channel = 'in_app' AND t.subscriber_exists AND t.allowed) AS deliverable,
               (tok.device_token IS NOT NULL OR (t.channel = 'in_app' AND t.subscriber_exists AND t.allowed))
                 AND sum((tok.device_token IS NOT NULL OR (t.channel = 'in_app' AND t.subscriber_exists AND t.allowed))::integer)
                       OVER (ROWS UNBOUNDED PRECEDING) <= p_lease_limit
                 AS leased
          FROM targets t
          LEFT JOIN LATERAL (
              SELECT d.integration_id, ig.provider_id, ig.identifier, d.device_token
                FROM novu.device_tokens d
                JOIN novu.integrations ig ON ig.id = d.integration_id
               WHERE d.subscriber_id = t.subscriber_id
                 AND ig.active AND ig.channel = t.channel
                 AND (t.providers IS NULL OR t.providers ? ig.provider_id)
              UNION ALL
              -- chat: the webhook URL a subscriber stored for a chat integration
              SELECT c.integration_id, ig.provider_id, ig.identifier, c.webhook_url
                FROM novu.subscriber_channels c
                JOIN novu.integrations ig ON ig.id = c.integration_id
               WHERE t.channel = 'chat' AND c.subscriber_id = t.subscriber_id AND c.webhook_url IS NOT NULL
                 AND ig.active AND ig.channel = 'chat'
                 AND (t.providers IS NULL OR t.providers ? ig.provider_id)
          ) tok ON t.subscriber_exists AND t.allowed
    ),
    inserted AS (
        INSERT INTO novu.deliveries (id, transaction_id, workflow_id, subscriber_id, step_index, channel,
                                     integration_id, provider_id, integration_identifier, device_token,
                                     status, last_error, attempts, claimed_by, lease_until, digest_id)
        SELECT e.id, e.transaction_id, e.workflow_id, e.subscriber_id, e.step_index, e.channel,
               e.integration_id, e.provider_id, e.identifier, e.device_token,
               CASE WHEN NOT e.deliverable THEN 'skipped' WHEN e.leased THEN 'sending' ELSE 'pending' END,
               CASE WHEN NOT e.subscriber_exists THEN 'Subscriber not found'
                    WHEN NOT e.allowed THEN 'Disabled by subscriber preferences'
                    WHEN e.device_token IS NULL AND e.channel = 'chat' THEN 'Subscriber has no chat webhook URL'
                    WHEN NOT e.deliverable THEN 'Subscriber has no device token' END,
               CASE WHEN e.leased THEN 1 ELSE 0 END,
               CASE WHEN e.leased THEN pg_backend_pid() END,
               CASE WHEN e.leased THEN now() + p_lease_ms * interval '1 millisecond' END,
               e.digest_id
          FROM expanded e
        RETURNING novu.deliveries.id, novu.deliveries.transaction_id, novu.deliveries.workflow_id,
                  novu.deliveries.subscriber_id, novu.deliveries.channel, novu.deliveries.status,
                  novu.deliveries.last_error
    ),
    skipped AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel, status, detail)
        SELECT k.transaction_id, k.id, k.subscriber_id, k.workflow_id, k.channel, 'Warning', k.last_error
          FROM inserted k WHERE k.status = 'skipped'
    ),
    no_workflow AS (
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, status, detail)
        SELECT i.transaction_id, i.subscriber_id, i.workflow_id, 'Failed', 'Workflow not found'
          FROM input i
         WHERE NOT EXISTS (SELECT FROM novu.workflows w WHERE w.workflow_id = i.workflow_id)
    )
    SELECT e.id, 1, e.transaction_id, e.workflow_id, e.subscriber_id, e.device_token,
           e.integration_id, ev.payload, ev.overrides, ev.actor,
           CASE WHEN e.digest_context IS NULL THEN e.step
                ELSE e.step || jsonb_build_object('_digest', e.digest_context) END,
           e.step_key || COALESCE('/' || e.digest_id, ''), e.subscriber
      FROM expanded e
      LEFT JOIN novu.events ev ON ev.transaction_id = e.transaction_id
     WHERE e.leased;
END
$$;
COMMENT ON FUNCTION novu._expand(text[], text[], text[], integer, integer, integer[], bigint[], jsonb[]) IS 'Internal (workers): expand notifications into delivery rows, one per step (or the step given) and device token; the first ones leased to the caller and returned for sending';

------------------------------------------------------------------------------
-- Workflow engine (DESIGN 9): step by step execution of workflows with delays,
-- digests or step filters ("staged" workflows).  Workflows of channel steps
-- only, without filters, keep the one-statement fan-out of novu._expand.
--
-- A notification (transaction, subscriber) walks its steps in order
-- (novu._advance): a channel step whose filters pass creates its messages
-- (novu._expand for that one step); a delay or a digest writes a row of
-- novu.step_runs with a due time and the walk stops there.  When the row is
-- due, a worker claims it in its claim transaction (novu._continue, FOR UPDATE
-- SKIP LOCKED by the due index) and the walk goes on from the next step, in
-- that same transaction: the row turns 'done' exactly when what follows it is
-- committed, so a crash neither loses nor repeats a step.
------------------------------------------------------------------------------

-- One filter condition on a value: field value actual (NULL if absent),
-- Novu's operator, the filter's value.  Numbers compare as numbers when both
-- sides are numeric, everything else as text; an absent field satisfies only
-- the negative operators.
CREATE FUNCTION novu._filter_matches(actual jsonb, op text, value jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    num_re constant text := '^-?[0-9]{1,30}([.][0-9]{1,30})?([eE][-+]?[0-9]{1,3})?$';
    a text;
    a_num numeric;
    v text;
    v_num numeric;
    list text[];
    cmp integer;
BEGIN
    IF op = 'IS_DEFINED' THEN
        RETURN (actual IS NOT NULL AND jsonb_typeof(actual) <> 'null') = (value IS NULL OR value::text NOT IN ('false', '"false"'));
    END IF;
    IF actual IS NULL OR jsonb_typeof(actual) = 'null' THEN
        RETURN op IN ('NOT_EQUAL', 'NOT_IN', 'NOT_BETWEEN', 'NOT_LIKE');
    END IF;
    a := actual #>> '{}';
    -- a JSON number compares as a number whatever its size (jsonb writes 1e31
    -- with 32 digits); a string as a number only when it reads as one
    IF jsonb_typeof(actual) = 'number' THEN
        a_num := actual::numeric;
    ELSIF a ~ num_re THEN
        a_num := a::numeric;
    END IF;
    CASE op
    WHEN 'IN', 'NOT_IN' THEN
        IF jsonb_typeof(value) = 'array' THEN
            list := ARRAY(SELECT e #>> '{}' FROM jsonb_array_elements(value) e);
        ELSE
            list := ARRAY(SELECT btrim(x) FROM unnest(string_to_array(value #>> '{}', ',')) x);
        END IF;
        RETURN (a = ANY (list)
                OR (a_num IS NOT NULL AND EXISTS (SELECT FROM unnest(list) x WHERE x ~ num_re AND x::numeric = a_num)))
               = (op = 'IN');
    WHEN 'BETWEEN', 'NOT_BETWEEN' THEN
        RETURN COALESCE(a_num BETWEEN (value ->> 0)::numeric AND (value ->> 1)::numeric, false) = (op = 'BETWEEN');
    WHEN 'LIKE', 'NOT_LIKE' THEN
        RETURN (strpos(a, value #>> '{}') > 0) = (op = 'LIKE');
    ELSE
        v := value #>> '{}';
        IF a_num IS NOT NULL AND (jsonb_typeof(value) = 'number' OR v ~ num_re) THEN
            v_num := v::numeric;
            cmp := CASE WHEN a_num < v_num THEN -1 WHEN a_num > v_num THEN 1 ELSE 0 END;
        ELSE
            cmp := CASE WHEN a COLLATE "C" < v COLLATE "C" THEN -1 WHEN a = v THEN 0 ELSE 1 END;
        END IF;
        RETURN CASE op WHEN 'EQUAL' THEN cmp = 0 WHEN 'NOT_EQUAL' THEN cmp <> 0
                       WHEN 'LARGER' THEN cmp > 0 WHEN 'SMALLER' THEN cmp < 0
                       WHEN 'LARGER_EQUAL' THEN cmp >= 0 WHEN 'SMALLER_EQUAL' THEN cmp <= 0 END;
    END CASE;
END
$$;
COMMENT ON FUNCTION novu._filter_matches(jsonb, text, jsonb) IS 'Internal (workers): one step filter condition on a field''s value';

-- The read/seen state {"read", "seen"} of the in_app message that step
-- step_index of a notification created, or NULL when there is none (yet: the
-- worker stores an in_app message when it delivers it, so a previousStep filter
-- reads it after a delay step, as in Novu's "in_app, delay, then push if
-- unseen").
CREATE FUNCTION novu._previous_step_state(p_transaction_id text, p_subscriber_id text, p_step_index integer)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('read', m.read, 'seen', m.seen)
      FROM novu.deliveries d
      JOIN novu.in_app_messages m ON m.id = d.id
     WHERE d.transaction_id = p_transaction_id AND d.subscriber_id = p_subscriber_id
       AND d.step_index = p_step_index AND d.channel = 'in_app'
     LIMIT 1
$$;
COMMENT ON FUNCTION novu._previous_step_state(text, text, integer) IS 'Internal (workers): read/seen state of the in_app message of an earlier step (previousStep filters)';

-- Whether a step's filters pass: any group passes (Novu), a group of AND or OR
-- over its children, negated with isNegated; no group, or a group without
-- children, passes.
CREATE FUNCTION novu._filters_pass(p_filters jsonb, p_steps jsonb, p_payload jsonb, p_subscriber jsonb,
                                   p_is_online boolean, p_last_online_at timestamptz,
                                   p_transaction_id text, p_subscriber_id text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g jsonb;
    c jsonb;
    ok boolean;
    res boolean;
    is_or boolean;
    st jsonb;
    target integer;
BEGIN
    IF p_filters IS NULL OR jsonb_array_length(p_filters) = 0 THEN
        RETURN true;
    END IF;
    FOR g IN SELECT * FROM jsonb_array_elements(p_filters) LOOP
        is_or := COALESCE(g ->> 'value' = 'OR', false);
        res := NOT is_or OR jsonb_array_length(g -> 'children') = 0;
        FOR c IN SELECT * FROM jsonb_array_elements(g -> 'children') LOOP
            CASE c ->> 'on'
            WHEN 'payload' THEN
                ok := novu._filter_matches(p_payload #> string_to_array(c ->> 'field', '.'), c ->> 'operator', c -> 'value');
            WHEN 'subscriber' THEN
                ok := novu._filter_matches(p_subscriber #> string_to_array(c ->> 'field', '.'), c ->> 'operator', c -> 'value');
            WHEN 'isOnline' THEN
                ok := (COALESCE(p_is_online, false) = (c ->> 'value')::boolean) = (c ->> 'operator' IS DISTINCT FROM 'NOT_EQUAL');
            WHEN 'isOnlineInLast' THEN
                ok := COALESCE(p_is_online, false)
                      OR COALESCE(p_last_online_at >= now() - (c ->> 'value')::integer * ('1 ' || (c ->> 'timeOperator'))::interval, false);
            WHEN 'previousStep' THEN
                SELECT s.n - 1 INTO target FROM jsonb_array_elements(p_steps) WITH ORDINALITY AS s(step, n)
                 WHERE novu._step_id(s.step, (s.n - 1)::integer) = c ->> 'step' LIMIT 1;
                st := novu._previous_step_state(p_transaction_id, p_subscriber_id, target);
                ok := st IS NOT NULL AND CASE c ->> 'stepType'
                        WHEN 'read' THEN (st ->> 'read')::boolean WHEN 'unread' THEN NOT (st ->> 'read')::boolean
                        WHEN 'seen' THEN (st ->> 'seen')::boolean ELSE NOT (st ->> 'seen')::boolean END;
            ELSE
                ok := false;
            END CASE;
            ok := COALESCE(ok, false);
            IF is_or AND ok THEN res := true; EXIT; END IF;
            IF NOT is_or AND NOT ok THEN res := false; EXIT; END IF;
        END LOOP;
        IF COALESCE((g ->> 'isNegated')::boolean, false) THEN
            res := NOT res;
        END IF;
        IF res THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
COMMENT ON FUNCTION novu._filters_pass(jsonb, jsonb, jsonb, jsonb, boolean, timestamptz, text, text) IS 'Internal (workers): whether a step''s filters pass for a notification';

-- What the steps after a digest see as "step" in their templates: digest true,
-- the merged events' payloads oldest first (the first 1000, at most 1 MiB in
-- all: the worker's memory per message stays bounded) and total_count (all).
CREATE FUNCTION novu._digest_context(p_digest_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('digest', true,
                              'events', COALESCE(jsonb_agg(x.payload ORDER BY x.event_id) FILTER (WHERE x.keep), '[]'),
                              'total_count', count(*))
      FROM (SELECT m.payload, m.event_id,
                   row_number() OVER w <= 1000 AND sum(m.payload_bytes) OVER w <= 1048576 AS keep
              FROM novu.digest_events m
             WHERE m.digest_id = p_digest_id AND m.status = 'merged'
            WINDOW w AS (ORDER BY m.event_id)) x
$$;
COMMENT ON FUNCTION novu._digest_context(bigint) IS 'Internal (workers): step.digest, step.events (oldest first) and step.total_count of a digest';

-- The digest key of a notification at a digest step: the value at the step's
-- digestKey path in the payload ('' without one).  A value longer than 200
-- bytes is kept as 'sha256:' and its hash: the key is in the index of open
-- windows, whose entries hold at most 2,704 bytes (a longer value failed the
-- notification after its trigger was accepted).
CREATE FUNCTION novu._digest_key(p_payload jsonb, p_step jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN octet_length(x.v) > 200 THEN 'sha256:' || encode(sha256(convert_to(x.v, 'UTF8')), 'hex') ELSE x.v END
      FROM (SELECT CASE WHEN p_step ? 'digestKey'
                        THEN COALESCE(p_payload #>> novu._payload_path(p_step ->> 'digestKey'), '') ELSE '' END AS v) x
$$;
COMMENT ON FUNCTION novu._digest_key(jsonb, jsonb) IS 'Internal (workers): the digest key of a notification at a digest step (a value over 200 bytes as its sha256)';

-- Lock digest keys (novu.digest_locks) until the transaction ends, in key
-- order: a key's row is inserted, or, if there, locked (ON CONFLICT DO UPDATE
-- locks the row it finds, WHERE false writes nothing); one being inserted or
-- held elsewhere is waited for, one deleted meanwhile inserted again.  Only
-- workers hold these rows, for one claim's transaction: the wait is not cut
-- short by a lock_timeout the caller set for application locks (a trigger
-- set aside because another worker held its key would wait a second or more).
CREATE FUNCTION novu._lock_digest_keys(p_keys integer[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = 0
AS $$
    INSERT INTO novu.digest_locks AS l (key_hash)
    SELECT DISTINCT u.k FROM unnest(p_keys) AS u(k) WHERE u.k IS NOT NULL ORDER BY 1
    ON CONFLICT (key_hash) DO UPDATE SET key_hash = excluded.key_hash WHERE false
$$;
COMMENT ON FUNCTION novu._lock_digest_keys(integer[]) IS 'Internal (workers): lock digest keys, in key order, until the transaction ends';

-- The digest keys (as novu._lock_digest_keys takes them) that notifications
-- may reach: every digest step of their workflows after step p_from_steps[i]
-- (all of them when NULL), with the digestKey value of each one's payload.
CREATE FUNCTION novu._digest_keys(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                                  p_from_steps integer[] DEFAULT NULL)
RETURNS integer[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(
        SELECT DISTINCT hashtext(z.w || '/' || z.s || '/' || (s.n - 1) || '/' || novu._digest_key(e.payload, s.step))
          FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids) WITH ORDINALITY AS z(t, w, s, i)
          JOIN novu.workflows wf ON wf.workflow_id = z.w AND jsonb_typeof(wf.steps) = 'array'
          CROSS JOIN LATERAL jsonb_array_elements(wf.steps) WITH ORDINALITY AS s(step, n)
          LEFT JOIN novu.events e ON e.transaction_id = z.t
         WHERE s.step ->> 'type' = 'digest' AND s.n > COALESCE(p_from_steps[z.i], 0))
$$;
COMMENT ON FUNCTION novu._digest_keys(text[], text[], text[], integer[]) IS 'Internal (workers): the digest keys notifications may reach from a step on, for novu._lock_digest_keys';

-- A worker's wait for a digest window another transaction holds is bounded: an
-- application's novu.cancel or novu.delete_subscriber not committed yet locks
-- the windows it cancels, for as long as that transaction lasts.  Sets
-- lock_timeout to novu.fanout_lock_wait (or to the lock_timeout in force, if
-- shorter) and returns the value to restore after the statement that locks
-- the windows; past it the statement fails with lock_not_available, and the
-- caller sets the notification aside (novu._fanout, novu._continue).
CREATE FUNCTION novu._window_wait()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prev text := current_setting('lock_timeout');
    wait text := COALESCE(current_setting('novu.fanout_lock_wait', true), '100ms');
BEGIN
    IF prev <> '0' AND prev::interval < wait::interval THEN
        wait := prev;
    END IF;
    PERFORM set_config('lock_timeout', wait, true);
    RETURN prev;
END
$$;
COMMENT ON FUNCTION novu._window_wait() IS 'Internal (workers): bound the wait for a digest window to novu.fanout_lock_wait (lock_timeout); returns the lock_timeout to restore';

-- Whether an older event (a lower outbox id) of the same workflow, subscriber
-- and digest key is still on its way to step p_step_index: a trigger pending
-- in the outbox (another worker fanning it out, or waiting its turn), or, past
-- a delay, a delay due and not run yet.  A backoff digest lets the first event
-- of a key through: that is the oldest, not the one whose worker took the
-- key's lock first.  A trigger set aside (retry_at: it waits for an
-- application) or a delay put off does not count: it must not hold back the
-- ones after it.  What this transaction has run is no longer pending here (its
-- batch runs in outbox order).  The triggers looked at are those of the
-- workers' batches in flight: the ids of two batches per worker below
-- p_event_id, whatever the backlog.  Nothing is locked.
CREATE FUNCTION novu._older_in_flight(p_event_id bigint, p_workflow_id text, p_subscriber_id text,
                                      p_step_index integer, p_step jsonb, p_key text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    staged_before boolean;
    span bigint := 2 * GREATEST(current_setting('novu.batch_size', true)::bigint, 1)
                     * GREATEST(current_setting('novu.workers', true)::bigint, 1);
BEGIN
    IF p_event_id IS NULL THEN
        RETURN false;
    END IF;
    -- a delay or digest before the step: an older trigger still in the outbox
    -- would wait there first; a delay's own rows are what to look at
    SELECT EXISTS (SELECT FROM jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, i)
                    WHERE s.i <= p_step_index AND s.step ->> 'type' IN ('delay', 'digest'))
      INTO staged_before
      FROM novu.workflows w WHERE w.workflow_id = p_workflow_id;
    IF NOT COALESCE(staged_before, false) THEN
        RETURN EXISTS (
            SELECT FROM novu.events e
             WHERE e.id < p_event_id AND e.id >= p_event_id - span AND e.status IN ('pending', 'processing')
               AND e.retry_at IS NULL AND e.kind = 'trigger' AND e.workflow_id = p_workflow_id
               AND p_subscriber_id = ANY (e.recipients) AND novu._digest_key(e.payload, p_step) = p_key);
    END IF;
    RETURN EXISTS (
        SELECT FROM novu.step_runs x JOIN novu.events e ON e.transaction_id = x.transaction_id
         WHERE x.subscriber_id = p_subscriber_id AND x.status = 'waiting' AND x.kind = 'delay'
           AND x.workflow_id = p_workflow_id AND x.step_index < p_step_index AND x.due_at <= clock_timestamp()
           AND e.id < p_event_id AND novu._digest_key(e.payload, p_step) = p_key);
END
$$;
COMMENT ON FUNCTION novu._older_in_flight(bigint, text, text, integer, jsonb, text) IS 'Internal (workers): whether an older event of a digest key is still on its way to that digest, not set aside (backoff order)';

-- A notification reaches a digest step: it merges into the open window of its
-- (workflow, subscriber, step, digestKey value), or opens one, or (backoff, no
-- event of that key in the backoff window) goes through at once.  Returns
-- 'merged', 'opened' or 'through'.  Events of one key are serialized by the
-- key's lock (novu._lock_digest_keys): two at once end in one window, each
-- merged once.
-- A window being closed (claimed by novu._continue) is locked: a merge waits,
-- then finds it closed and opens the next one.  One held by another transaction
-- longer than novu.fanout_lock_wait (novu._window_wait) fails the merge with
-- lock_not_available.
CREATE FUNCTION novu._digest_join(p_transaction_id text, p_event_id bigint, p_workflow_id text, p_subscriber_id text,
                                  p_step_index integer, p_step jsonb, p_payload jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text := '';
    r novu.step_runs;
    backoff interval;
    window_len interval := novu._step_interval(p_step -> 'amount', p_step -> 'unit');
    raw jsonb := jsonb_build_object('stepId', novu._step_id(p_step, p_step_index), 'stepIndex', p_step_index);
    prev_wait text;
BEGIN
    IF p_step ? 'digestKey' THEN
        k := novu._digest_key(p_payload, p_step);
        raw := raw || jsonb_build_object('digestKey', k);
    END IF;
    PERFORM novu._lock_digest_keys(ARRAY[hashtext(p_workflow_id || '/' || p_subscriber_id || '/' || p_step_index || '/' || k)]);
    prev_wait := novu._window_wait();
    SELECT * INTO r FROM novu.step_runs x
     WHERE x.kind = 'digest' AND x.status = 'waiting' AND x.workflow_id = p_workflow_id
       AND x.subscriber_id = p_subscriber_id AND x.step_index = p_step_index AND x.digest_key = k
       FOR UPDATE;
    IF r.id IS NOT NULL THEN
        PERFORM set_config('lock_timeout', prev_wait, true);
        INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
        VALUES (r.id, p_transaction_id, COALESCE(p_event_id, 0), COALESCE(p_payload, '{}'))
        ON CONFLICT DO NOTHING;
        UPDATE novu.step_runs x SET last_event_at = now(), updated_at = now() WHERE x.id = r.id;
        INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
        VALUES (p_transaction_id, p_subscriber_id, p_workflow_id, 'digest', 'Pending',
                'Merged into the digest of transaction ' || r.transaction_id, raw || jsonb_build_object('digestId', r.id));
        RETURN 'merged';
    END IF;
    PERFORM set_config('lock_timeout', prev_wait, true);
    IF COALESCE((p_step ->> 'backoff')::boolean, false) THEN
        backoff := COALESCE(novu._step_interval(p_step -> 'backoffAmount', p_step -> 'backoffUnit'), window_len);
        IF NOT EXISTS (SELECT FROM novu.step_runs x
                        WHERE x.kind = 'digest' AND x.workflow_id = p_workflow_id AND x.subscriber_id = p_subscriber_id
                          AND x.step_index = p_step_index AND x.digest_key = k AND x.last_event_at > now() - backoff) THEN
            -- the oldest event goes through: while an older one is still on
            -- its way here, this one is set aside to merge behind it
            -- (SQLSTATE NV001: novu._fanout and novu._continue take it again
            -- a second later)
            IF novu._older_in_flight(p_event_id, p_workflow_id, p_subscriber_id, p_step_index, p_step, k) THEN
                RAISE EXCEPTION 'novu: an older event of this digest key is on its way here in another worker'
                    USING ERRCODE = 'NV001';
            END IF;
            -- recorded (done at once) so that the next event within the backoff window opens a digest
            INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, status, due_at)
            VALUES ('digest', p_transaction_id, p_workflow_id, p_subscriber_id, p_step_index, k, 'done', now())
            RETURNING * INTO r;
            INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
            VALUES (r.id, p_transaction_id, COALESCE(p_event_id, 0), COALESCE(p_payload, '{}'));
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            VALUES (p_transaction_id, p_subscriber_id, p_workflow_id, 'digest', 'Success',
                    'Digest skipped: no event in the backoff window, sent at once', raw || jsonb_build_object('digestId', r.id));
            RETURN 'through';
        END IF;
    END IF;
    INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_key, due_at)
    VALUES ('digest', p_transaction_id, p_workflow_id, p_subscriber_id, p_step_index, k, now() + window_len)
    RETURNING * INTO r;
    INSERT INTO novu.digest_events (digest_id, transaction_id, event_id, payload)
    VALUES (r.id, p_transaction_id, COALESCE(p_event_id, 0), COALESCE(p_payload, '{}'));
    INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
    VALUES (p_transaction_id, p_subscriber_id, p_workflow_id, 'digest', 'Pending',
            'Digest started: events until ' || novu._iso(r.due_at) || ' are merged',
            raw || jsonb_build_object('digestId', r.id, 'dueAt', novu._iso(r.due_at)));
    RETURN 'opened';
END
$$;
COMMENT ON FUNCTION novu._digest_join(text, bigint, text, text, integer, jsonb, jsonb) IS 'Internal (workers): merge a notification into its digest window, open one, or let it through (backoff)';

-- Walk notifications (transaction, workflow, subscriber) from step p_from_steps
-- on (a digest's context p_digest_ids for the steps after it): filters, channel
-- steps expanded into messages (the first p_lease_limit leased and returned as
-- novu._expand does), and a stop at the first delay or digest, which is
-- written to novu.step_runs.  A delay whose time cannot be had (delayPath
-- missing, not a time, or past; a bad overrides.delay) fails that notification
-- with the reason.
CREATE FUNCTION novu._advance(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
                              p_from_steps integer[], p_digest_ids bigint[], p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    k integer;
    v_tx text;
    v_wf text;
    v_sub text;
    v_digest bigint;
    ctx jsonb;
    w novu.workflows;
    ev novu.events;
    sub novu.subscribers;
    profile jsonb;
    st jsonb;
    stype text;
    i integer;
    nsteps integer;
    leased integer := 0;
    n integer;
    due timestamptz;
    err text;
    t text;
    d interval;
    raw jsonb;
BEGIN
    -- The digest keys these notifications may reach, locked now in one order
    -- (novu._digest_join takes them again, already held): two workers fanning
    -- out events of the same keys in different orders never wait on each
    -- other in a cycle.
    PERFORM novu._lock_digest_keys(novu._digest_keys(p_transaction_ids, p_workflow_ids, p_subscriber_ids, p_from_steps));
    FOR k IN 1 .. COALESCE(cardinality(p_transaction_ids), 0) LOOP
        v_tx := p_transaction_ids[k];
        v_wf := p_workflow_ids[k];
        v_sub := p_subscriber_ids[k];
        v_digest := p_digest_ids[k];
        ctx := CASE WHEN v_digest IS NOT NULL THEN jsonb_build_object('_digest', novu._digest_context(v_digest)) END;
        SELECT * INTO w FROM novu.workflows x WHERE x.workflow_id = v_wf;
        IF NOT FOUND THEN
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, status, detail)
            VALUES (v_tx, v_sub, v_wf, 'Failed', 'Workflow not found');
            CONTINUE;
        END IF;
        SELECT * INTO ev FROM novu.events e WHERE e.transaction_id = v_tx;
        SELECT * INTO sub FROM novu.subscribers s WHERE s.subscriber_id = v_sub;
        profile := CASE WHEN sub.subscriber_id IS NOT NULL THEN jsonb_build_object(
                       'subscriberId', sub.subscriber_id, 'firstName', sub.first_name, 'lastName', sub.last_name,
                       'email', sub.email, 'phone', sub.phone, 'avatar', sub.avatar, 'locale', sub.locale,
                       'timezone', sub.timezone, 'data', sub.data, 'isOnline', sub.is_online,
                       'lastOnlineAt', novu._iso(sub.last_online_at)) END;
        nsteps := jsonb_array_length(w.steps);
        i := COALESCE(p_from_steps[k], 0);
        WHILE i < nsteps LOOP
            st := w.steps -> i;
            stype := st ->> 'type';
            raw := jsonb_build_object('stepId', novu._step_id(st, i), 'stepIndex', i);
            IF st ? 'filters' AND NOT novu._filters_pass(st -> 'filters', w.steps, COALESCE(ev.payload, '{}'), profile,
                                                         sub.is_online, sub.last_online_at, v_tx, v_sub) THEN
                INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                VALUES (v_tx, v_sub, v_wf, stype, 'Warning', 'Step was filtered based on steps filters', raw);
                i := i + 1;
                CONTINUE;
            END IF;
            IF stype = 'delay' THEN
                due := NULL;
                err := NULL;
                IF st ? 'delayPath' THEN
                    t := ev.payload #>> novu._payload_path(st ->> 'delayPath');
                    IF t IS NULL THEN
                        err := format('Delay failed: payload.%s is missing', regexp_replace(st ->> 'delayPath', '^payload[.]', ''));
                    ELSIF NOT t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$' THEN
                        err := format('Delay failed: payload.%s is not an ISO time', regexp_replace(st ->> 'delayPath', '^payload[.]', ''));
                    ELSE
                        BEGIN
                            due := t::timestamptz;
                        EXCEPTION WHEN OTHERS THEN
                            err := format('Delay failed: payload.%s is not an ISO time', regexp_replace(st ->> 'delayPath', '^payload[.]', ''));
                        END;
                        IF due <= now() THEN
                            err := format('Delay failed: payload.%s (%s) is in the past',
                                          regexp_replace(st ->> 'delayPath', '^payload[.]', ''), t);
                        END IF;
                    END IF;
                ELSE
                    d := novu._step_interval(st -> 'amount', st -> 'unit');
                    IF ev.overrides ? 'delay' THEN
                        d := novu._step_interval(ev.overrides -> 'delay' -> 'amount', ev.overrides -> 'delay' -> 'unit');
                        IF d IS NULL THEN
                            err := 'Delay failed: overrides.delay must be {"amount": a positive integer, "unit": seconds ... months}, at most a year';
                        END IF;
                    END IF;
                    due := now() + d;
                END IF;
                IF err IS NOT NULL THEN
                    INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                    VALUES (v_tx, v_sub, v_wf, 'delay', 'Failed', err, raw);
                    EXIT;
                END IF;
                INSERT INTO novu.step_runs (kind, transaction_id, workflow_id, subscriber_id, step_index, digest_id, due_at)
                VALUES ('delay', v_tx, v_wf, v_sub, i, v_digest, due);
                INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
                VALUES (v_tx, v_sub, v_wf, 'delay', 'Pending', 'Step delayed until ' || novu._iso(due),
                        raw || jsonb_build_object('dueAt', novu._iso(due)));
                EXIT;
            ELSIF stype = 'digest' THEN
                EXIT WHEN novu._digest_join(v_tx, ev.id, v_wf, v_sub, i, st, COALESCE(ev.payload, '{}')) <> 'through';
                -- let through at once (backoff): the steps after it see no digest
                v_digest := NULL;
                ctx := NULL;
            ELSE
                RETURN QUERY
                SELECT x.id, x.attempts, x.transaction_id, x.workflow_id, x.subscriber_id, x.device_token,
                       x.integration_id, x.payload, x.overrides, x.actor,
                       CASE WHEN ctx IS NULL THEN x.step ELSE x.step || ctx END,
                       x.step_key || COALESCE('/' || v_digest, ''), x.subscriber
                  FROM novu._expand(ARRAY[v_tx], ARRAY[v_wf], ARRAY[v_sub], GREATEST(p_lease_limit - leased, 0),
                                    p_lease_ms, ARRAY[i]) x;
                GET DIAGNOSTICS n = ROW_COUNT;
                leased := leased + n;
                IF v_digest IS NOT NULL THEN
                    UPDATE novu.deliveries dl SET digest_id = v_digest
                     WHERE dl.transaction_id = v_tx AND dl.subscriber_id = v_sub AND dl.step_index = i
                       AND dl.digest_id IS NULL;
                END IF;
            END IF;
            i := i + 1;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._advance(text[], text[], text[], integer[], bigint[], integer, integer) IS 'Internal (workers): run notifications of staged workflows step by step from a step on, up to the next delay or digest';

-- The notifications (in batch order n) whose workflow begins with a digest
-- without filters, not a backoff one: their event, digest key value, window
-- and key group g (numbered by workflow, subscriber and key), for novu._start.
CREATE FUNCTION novu._digest_first(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[])
RETURNS TABLE (t text, w text, s text, n bigint, event_id bigint, payload jsonb, k text, window_len interval,
               keyed boolean, raw jsonb, g bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.*, dense_rank() OVER (ORDER BY c.w, c.s, c.k) AS g
      FROM (SELECT z.t, z.w, z.s, z.n, e.id, COALESCE(e.payload, '{}'),
                   novu._digest_key(e.payload, wf.steps -> 0) AS k,
                   novu._step_interval(wf.steps -> 0 -> 'amount', wf.steps -> 0 -> 'unit'),
                   (wf.steps -> 0) ? 'digestKey',
                   jsonb_build_object('stepId', novu._step_id(wf.steps -> 0, 0), 'stepIndex', 0)
              FROM unnest(p_transaction_ids, p_workflow_ids, p_subscriber_ids) WITH ORDINALITY AS z(t, w, s, n)
              JOIN novu.workflows wf ON wf.workflow_id = z.w
              LEFT JOIN novu.events e ON e.transaction_id = z.t
             WHERE jsonb_typeof(wf.steps) = 'array' AND wf.steps -> 0 ->> 'type' = 'digest'
               AND NOT (wf.steps -> 0) ? 'filters'
               AND NOT COALESCE((wf.steps -> 0 ->> 'backoff')::boolean, false)) c
$$;
COMMENT ON FUNCTION novu._digest_first(text[], text[], text[]) IS 'Internal (workers): the notifications that start with a plain digest step, with their key group';

-- Start notifications: plain workflows in one statement (novu._expand); staged
-- ones (delay, digest, filters) that begin with a delay or a digest (no filters
-- on it) set-based too; the others step by step (novu._advance).
CREATE FUNCTION novu._start(p_transaction_ids text[], p_workflow_ids text[], p_subscriber_ids text[],
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
    prev_wait text;
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
    PERFORM novu._lock_digest_keys(novu._digest_keys(st, sw, ss));
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
    -- A window another transaction holds is waited for a moment at most
    -- (novu._window_wait).
    prev_wait := novu._window_wait();
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
    PERFORM set_config('lock_timeout', prev_wait, true);
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
COMMENT ON FUNCTION novu._start(text[], text[], text[], integer, integer) IS 'Internal (workers): start notifications: plain workflows and those that begin with a delay or a digest set-based, the other staged ones step by step';

-- Whether every step after step_index is a channel step without filters (a
-- delay or digest followed by such steps runs them in one statement).
CREATE FUNCTION novu._plain_after(steps jsonb, step_index integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_typeof(steps) = 'array'
           AND NOT EXISTS (SELECT FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(step, n)
                            WHERE s.n > step_index + 1
                              AND (s.step ->> 'type' IN ('delay', 'digest') OR s.step ? 'filters'))
$$;
COMMENT ON FUNCTION novu._plain_after(jsonb, integer) IS 'Internal (workers): whether the steps after a step are all channel steps without filters';

-- Run the steps after delays and digest windows (ids of novu.step_runs, locked
-- by the caller, in order): each row turns 'done' and the steps after it run,
-- in the caller's transaction; a digest runs them once, for its oldest event
-- still merged (the leader), with step.events.  Returns the messages leased to
-- the caller (at most p_lease_limit, see novu._expand).
--
-- Every row is reached from the batch by its key, row by row (LATERAL ...
-- OFFSET 0, by TID, or = ANY), never by a join the planner orders: these
-- tables' statistics lag behind them (analyzed nearly empty, then 10,000 rows),
-- and the plans that follow were quadratic: a partial index believed to hold
-- one row scanned as the outer side of a nested loop over the batch (7 s for
-- 2,000 windows), or a generic plan taking two batches for 10 rows each.  Hash
-- and merge joins and sequential scans are off, as in novu._expand.
CREATE FUNCTION novu._run_steps(p_ids bigint[], p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    r novu.step_runs;
    leased integer := 0;
    n integer;
    leader text;
    total integer;
    plain bigint[];
    tx text[];
    wf text[];
    sub text[];
    st integer[];
    wins bigint[];
    others bigint[];
    dg bigint[];
    cx jsonb[];
BEGIN
    -- The batch's rows still waiting, in its order, sorted out in one pass:
    -- delays and digest windows followed by channel steps without filters
    -- only (set-based below), and the others (step by step, at the end).
    SELECT array_agg(x.id ORDER BY u.n) FILTER (WHERE x.kind = 'delay' AND x.digest_id IS NULL AND w.plain),
           array_agg(x.id ORDER BY u.n) FILTER (WHERE x.kind = 'digest' AND w.plain),
           array_agg(x.id ORDER BY u.n) FILTER (WHERE NOT (w.plain AND (x.kind = 'digest' OR x.digest_id IS NULL)))
      INTO plain, wins, others
      FROM unnest(p_ids) WITH ORDINALITY AS u(id, n)
      CROSS JOIN LATERAL (SELECT y.* FROM novu.step_runs y WHERE y.id = u.id OFFSET 0) x
      CROSS JOIN LATERAL (SELECT COALESCE(novu._plain_after(v.steps, x.step_index), false) AS plain
                            FROM (SELECT) one LEFT JOIN novu.workflows v ON v.workflow_id = x.workflow_id OFFSET 0) w
     WHERE x.status = 'waiting';
    -- Delays followed by channel steps without filters only (the usual "wait,
    -- then send"): all of them done and expanded together, in one statement
    -- of novu._expand (a row per notification and step).  The others go one
    -- by one, step by step (novu._advance).
    IF plain IS NOT NULL THEN
        WITH d AS (
            UPDATE novu.step_runs x SET status = 'done', updated_at = now()
             WHERE x.id = ANY (plain)
            RETURNING x.id, x.transaction_id, x.workflow_id, x.subscriber_id, x.step_index),
        logged AS (
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            SELECT d.transaction_id, d.subscriber_id, d.workflow_id, 'delay', 'Success', 'Delay finished',
                   jsonb_build_object('stepIndex', d.step_index)
              FROM d)
        SELECT array_agg(d.transaction_id ORDER BY array_position(plain, d.id), s.n),
               array_agg(d.workflow_id ORDER BY array_position(plain, d.id), s.n),
               array_agg(d.subscriber_id ORDER BY array_position(plain, d.id), s.n),
               array_agg((s.n - 1)::integer ORDER BY array_position(plain, d.id), s.n)
          INTO tx, wf, sub, st
          FROM d
          CROSS JOIN LATERAL (SELECT v.steps FROM novu.workflows v WHERE v.workflow_id = d.workflow_id OFFSET 0) w
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
         WHERE s.n > d.step_index + 1;
        IF tx IS NOT NULL THEN
            RETURN QUERY SELECT * FROM novu._expand(tx, wf, sub, p_lease_limit, p_lease_ms, st);
            GET DIAGNOSTICS leased = ROW_COUNT;
        END IF;
    END IF;
    -- Digest windows followed by channel steps without filters only: closed
    -- together, set-based.  Each window's merged events are read by the key
    -- (digest_id first), window by window: its leader (the oldest event; a
    -- window left without events is canceled), its total and the step
    -- context of novu._digest_context (the same bounds: memory stays bounded
    -- however large a window).  The windows are marked done, each leader
    -- gets its activity row ("Digest finished: <n> events"; the other events
    -- have theirs from the merge, "Merged into the digest of transaction
    -- <leader>", with the window's id in raw: a row per event here made the
    -- close a third slower), and the steps after them are expanded in one
    -- statement of novu._expand, with the window and its context.
    IF wins IS NOT NULL THEN
        tx := NULL;
        WITH win AS MATERIALIZED (
            SELECT u.id, u.n, (SELECT y.ctid FROM novu.step_runs y WHERE y.id = u.id) AS tid, a.total, a.leader, a.ctx
              FROM unnest(wins) WITH ORDINALITY AS u(id, n)
              CROSS JOIN LATERAL (
                  SELECT count(*) AS total, min(e.transaction_id) FILTER (WHERE e.k = 1) AS leader,
                         jsonb_build_object('digest', true,
                                            'events', COALESCE(jsonb_agg(e.payload ORDER BY e.event_id)
                                                               FILTER (WHERE e.k <= 1000 AND e.bytes <= 1048576), '[]'),
                                            'total_count', count(*)) AS ctx
                    FROM (SELECT m.transaction_id, m.event_id, m.payload,
                                 row_number() OVER w AS k, sum(m.payload_bytes) OVER w AS bytes
                            FROM novu.digest_events m
                           WHERE m.digest_id = u.id AND m.status = 'merged'
                          WINDOW w AS (ORDER BY m.event_id)) e) a),
        closed AS (
            UPDATE novu.step_runs x
               SET status = CASE WHEN l.total = 0 THEN 'canceled' ELSE 'done' END,
                   transaction_id = COALESCE(l.leader, x.transaction_id),
                   updated_at = now()
              FROM win l
             WHERE x.ctid = l.tid
            RETURNING x.id, l.n, x.transaction_id, x.workflow_id, x.subscriber_id, x.step_index, x.status, l.ctx,
                      format('Digest finished: %s event%s', l.total, CASE WHEN l.total = 1 THEN '' ELSE 's' END) AS lead_detail,
                      jsonb_build_object('stepIndex', x.step_index, 'digestId', x.id, 'digestKey', x.digest_key) AS raw),
        logged AS (
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            SELECT c.transaction_id, c.subscriber_id, c.workflow_id, 'digest', 'Success', c.lead_detail, c.raw
              FROM closed c WHERE c.status = 'done' ORDER BY c.id)
        SELECT array_agg(c.transaction_id ORDER BY c.n, s.n), array_agg(c.workflow_id ORDER BY c.n, s.n),
               array_agg(c.subscriber_id ORDER BY c.n, s.n), array_agg((s.n - 1)::integer ORDER BY c.n, s.n),
               array_agg(c.id ORDER BY c.n, s.n), array_agg(c.ctx ORDER BY c.n, s.n)
          INTO tx, wf, sub, st, dg, cx
          FROM closed c
          CROSS JOIN LATERAL (SELECT v.steps FROM novu.workflows v WHERE v.workflow_id = c.workflow_id OFFSET 0) w
          CROSS JOIN LATERAL jsonb_array_elements(w.steps) WITH ORDINALITY AS s(step, n)
         WHERE c.status = 'done' AND s.n > c.step_index + 1;
        IF tx IS NOT NULL THEN
            RETURN QUERY
            SELECT * FROM novu._expand(tx, wf, sub, GREATEST(p_lease_limit - leased, 0), p_lease_ms, st, dg, cx);
            GET DIAGNOSTICS n = ROW_COUNT;
            leased := leased + n;
        END IF;
    END IF;
    FOR r IN SELECT x.* FROM unnest(others) WITH ORDINALITY AS u(id, n)
               CROSS JOIN LATERAL (SELECT y.* FROM novu.step_runs y WHERE y.id = u.id OFFSET 0) x
              ORDER BY u.n LOOP
        UPDATE novu.step_runs x SET status = 'done', updated_at = now() WHERE x.id = r.id;
        IF r.kind = 'delay' THEN
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            VALUES (r.transaction_id, r.subscriber_id, r.workflow_id, 'delay', 'Success', 'Delay finished',
                    jsonb_build_object('stepIndex', r.step_index));
            RETURN QUERY
            SELECT * FROM novu._advance(ARRAY[r.transaction_id], ARRAY[r.workflow_id], ARRAY[r.subscriber_id],
                                        ARRAY[r.step_index + 1], ARRAY[r.digest_id],
                                        GREATEST(p_lease_limit - leased, 0), p_lease_ms);
        ELSE
            leader := NULL;
            SELECT m.transaction_id, count(*) OVER () INTO leader, total
              FROM novu.digest_events m WHERE m.digest_id = r.id AND m.status = 'merged'
             ORDER BY m.event_id LIMIT 1;
            IF leader IS NULL THEN
                UPDATE novu.step_runs x SET status = 'canceled' WHERE x.id = r.id;
                CONTINUE;
            END IF;
            UPDATE novu.step_runs x SET transaction_id = leader WHERE x.id = r.id AND x.transaction_id <> leader;
            INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail, raw)
            VALUES (leader, r.subscriber_id, r.workflow_id, 'digest', 'Success',
                    format('Digest finished: %s event%s', total, CASE WHEN total = 1 THEN '' ELSE 's' END),
                    jsonb_build_object('stepIndex', r.step_index, 'digestId', r.id, 'digestKey', r.digest_key));
            RETURN QUERY
            SELECT * FROM novu._advance(ARRAY[leader], ARRAY[r.workflow_id], ARRAY[r.subscriber_id],
                                        ARRAY[r.step_index + 1], ARRAY[r.id],
                                        GREATEST(p_lease_limit - leased, 0), p_lease_ms);
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        leased := leased + n;
    END LOOP;
END
$$;
COMMENT ON FUNCTION novu._run_steps(bigint[], integer, integer) IS 'Internal (workers): run the steps after locked delays and digest windows; returns the messages leased to the caller';

-- Go on with delays and digest windows that are due, at most p_limit of them:
-- claimed FOR UPDATE SKIP LOCKED by the due index (the cost is the batch's,
-- however many wait), then run by novu._run_steps in the claim's transaction,
-- the whole batch at once; if that fails, one by one, and a row that fails
-- (not transiently) is marked failed with the reason while the others go on.
-- Returns the messages leased to the caller, then one row with the count of
-- rows handled.
CREATE FUNCTION novu._continue(p_limit integer, p_lease_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb, handled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
    one bigint;
    leased integer := 0;
    n integer;
    msg text;
    state text;
    prev_wait text;
BEGIN
    -- (steps due at the same time run in the order they were written)
    SELECT array_agg(c.id ORDER BY c.due_at, c.id) INTO ids
      FROM (SELECT x.id, x.due_at FROM novu.step_runs x
             WHERE x.status = 'waiting' AND x.due_at <= now()
             ORDER BY x.due_at LIMIT p_limit
             FOR UPDATE SKIP LOCKED) c;
    IF ids IS NOT NULL THEN
        BEGIN
            RETURN QUERY SELECT x.*, 0 FROM novu._run_steps(ids, p_lease_limit, p_lease_ms) x;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            -- transient (serialization, deadlock, shutdown, I/O): the claim is
            -- tried again.  A lock held past the wait (a digest window an
            -- application is canceling) or out of resources: one by one, and
            -- the rows that meet it again are set aside below.
            IF left(state, 2) IN ('40', '55', '57', '58') AND state <> '55P03' THEN
                RAISE;
            END IF;
            prev_wait := current_setting('lock_timeout');
            IF state = '55P03' THEN
                PERFORM set_config('lock_timeout', '1ms', true);
            END IF;
            FOREACH one IN ARRAY ids LOOP
                BEGIN
                    RETURN QUERY SELECT x.*, 0 FROM novu._run_steps(ARRAY[one], GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    leased := leased + n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
                    -- an older event of its backoff digest's key in another
                    -- worker (novu._older_in_flight): due again in a second
                    IF state = 'NV001' THEN
                        UPDATE novu.step_runs x SET due_at = clock_timestamp() + interval '1 second', updated_at = now()
                         WHERE x.id = one;
                        CONTINUE;
                    END IF;
                    -- held past the wait, or out of resources: it stays waiting,
                    -- due again in 1 to 30 s (as long as it is overdue already)
                    IF state = '55P03' OR left(state, 2) = '53' THEN
                        UPDATE novu.step_runs x
                           SET due_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - x.due_at, interval '1 second'),
                                                                  interval '30 seconds'),
                               updated_at = now()
                         WHERE x.id = one;
                        IF state = '55P03' THEN
                            PERFORM set_config('lock_timeout', '1ms', true);
                        END IF;
                        CONTINUE;
                    END IF;
                    IF left(state, 2) IN ('40', '55', '57', '58') THEN
                        RAISE;
                    END IF;
                    UPDATE novu.step_runs x SET status = 'failed', updated_at = now() WHERE x.id = one;
                    INSERT INTO novu.execution_details (transaction_id, subscriber_id, workflow_id, channel, status, detail)
                    SELECT x.transaction_id, x.subscriber_id, x.workflow_id, x.kind, 'Failed', 'Step failed: ' || msg
                      FROM novu.step_runs x WHERE x.id = one;
                END;
            END LOOP;
            PERFORM set_config('lock_timeout', prev_wait, true);
        END;
    END IF;
    RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                        NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb,
                        COALESCE(cardinality(ids), 0);
END
$$;
COMMENT ON FUNCTION novu._continue(integer, integer, integer) IS 'Internal (workers): go on with due delays and digest windows in the claim''s transaction; returns the messages leased to the caller, then one row with the count handled';

-- Cancel the waiting steps of a transaction (novu.cancel): its delays, and its
-- events in open digest windows.  A window whose leader is canceled passes to
-- its oldest event still merged; a window left empty is canceled.  Windows and
-- delays being run by a worker are waited for (they are locked), and then are
-- no longer waiting: their messages are canceled by novu.cancel after this.
-- Such a worker may also have written the next waiting step of the
-- transaction (a delay after the first one, or after the window it closed):
-- that row is not in the snapshot of the statement that waited, so the
-- transaction's waiting steps are looked up again, in new statements, until
-- none is left.  Returns the number of steps canceled.
CREATE FUNCTION novu._cancel_steps(p_transaction_id text)
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
COMMENT ON FUNCTION novu._cancel_steps(text) IS 'Internal: cancel a transaction''s delays and digest events (a canceled leader hands its window to the oldest event left)';

-- Mark locked outbox rows processed, reached by TID.  Only the TID scan is left
-- to the planner: with "0 pages" statistics it preferred scanning the pending
-- index and comparing every row with every TID of the batch.
CREATE FUNCTION novu._take_events(p_tids tid[])
RETURNS TABLE (id bigint, transaction_id text, workflow_id text, recipients text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE novu.events ev SET status = 'processed', processed_at = now()
     WHERE ev.ctid = ANY (p_tids) AND ev.status = 'pending'
    RETURNING ev.id, ev.transaction_id, ev.workflow_id, ev.recipients;
END
$$;
COMMENT ON FUNCTION novu._take_events(tid[]) IS 'Internal (workers): mark locked outbox rows processed, by TID';

-- Topic fan-out.  A trigger whose "to" names topics is written as one outbox
-- row of kind 'topic' holding its direct recipients (recipients), its topic
-- keys (topics) and its actor; nothing is expanded in the caller's
-- transaction, however large the topics.  The workers fan it out like a
-- broadcast (_fanout), one chunk per turn, by a cursor on the row
-- (events.cursor: the greatest subscriberId done so far).
--
-- A chunk is the next p_limit distinct subscriberIds after the cursor, in
-- subscriberId order (COLLATE "C", the order of the keys and of the cursor),
-- of the union of
--   - the direct recipients (at most 1000, checked by novu.trigger), and
--   - each topic's members, the actor left out: the actor is never notified
--     through a topic, only when listed directly.
-- Walking the union in one order with one cursor de-duplicates it: a
-- subscriber in two topics and listed directly is one value of the union,
-- handed out in exactly one chunk.  The chunk is bounded without reading
-- whole topics: of each source only its first p_limit values after the cursor
-- can be among the union's first p_limit (a value later in its own source has
-- p_limit smaller ones before it), so each topic is read by one range scan of
-- the members' primary key (topic_id, subscriber_id), stopped after p_limit
-- rows.  A chunk reads at most (topics + 1) * p_limit values whatever the
-- topics' sizes, and the workers' memory stays flat for topics of millions.
--
-- Members are read as of each chunk: a subscriber added to a topic before the
-- cursor passes its id is notified, one removed before is not; a subscriber
-- deleted is gone from its topics (ON DELETE CASCADE).
CREATE FUNCTION novu._topic_chunk(p_recipients text[], p_topics text[], p_actor text, p_cursor text,
                                  p_limit integer)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(array_agg(c.subscriber_id ORDER BY c.subscriber_id), '{}')
      FROM (SELECT DISTINCT u.subscriber_id
              FROM (SELECT r.subscriber_id COLLATE "C" AS subscriber_id
                      FROM unnest(p_recipients) AS r(subscriber_id)
                     WHERE r.subscriber_id COLLATE "C" > COALESCE(p_cursor, '') COLLATE "C"
                    UNION ALL
                    SELECT m.subscriber_id
                      FROM novu.topics t
                      CROSS JOIN LATERAL (
                          SELECT ts.subscriber_id
                            FROM novu.topic_subscribers ts
                           WHERE ts.topic_id = t.id
                             AND ts.subscriber_id > COALESCE(p_cursor, '') COLLATE "C"
                             AND ts.subscriber_id <> COALESCE(p_actor, '') COLLATE "C"
                           ORDER BY ts.subscriber_id
                           LIMIT p_limit) m
                     WHERE t.key = ANY (p_topics)) u
             ORDER BY u.subscriber_id
             LIMIT p_limit) c
$$;
COMMENT ON FUNCTION novu._topic_chunk(text[], text[], text, text, integer) IS 'Internal (workers): the next chunk of a topic trigger''s recipients after the cursor: direct recipients and topic members (the actor left out), de-duplicated, in subscriberId order';

-- Create the recipients a fan-out names that do not exist yet (p_ids: missing
-- and not deleted since, see novu._fanout), with an empty profile, in id order
-- (workers creating the same ones wait for each other in one order).  An
-- application transaction creating one of them too (novu.identify not
-- committed yet) would hold the worker until it ends, however long: the
-- insert waits novu.fanout_lock_wait at most; then the ids are tried one by
-- one, each for a millisecond, within that time again in all, and those not
-- reached by then count as not created.  Returns the ids not created (being
-- created or deleted by another transaction, or not tried); the caller sets
-- their triggers aside.  The worker's transaction is so held up for twice
-- novu.fanout_lock_wait at most, however many ids are held elsewhere.
CREATE FUNCTION novu._create_subscribers(p_ids text[])
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = 0
AS $$
DECLARE
    ids text[] := ARRAY(SELECT DISTINCT u.s FROM unnest(p_ids) AS u(s) WHERE u.s IS NOT NULL ORDER BY 1);
    wait text := COALESCE(current_setting('novu.fanout_lock_wait', true), '100ms');
    blocked text[] := '{}';
    until timestamptz;
    k integer;
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN blocked;
    END IF;
    PERFORM set_config('lock_timeout', wait, true);
    BEGIN
        INSERT INTO novu.subscribers (subscriber_id) SELECT u.s FROM unnest(ids) AS u(s) ON CONFLICT DO NOTHING;
        RETURN blocked;
    EXCEPTION WHEN lock_not_available THEN
        NULL;
    END;
    until := clock_timestamp() + wait::interval;
    PERFORM set_config('lock_timeout', '1ms', true);
    FOR k IN 1 .. cardinality(ids) LOOP
        IF clock_timestamp() >= until THEN
            RETURN blocked || ids[k:];
        END IF;
        BEGIN
            INSERT INTO novu.subscribers (subscriber_id) VALUES (ids[k]) ON CONFLICT DO NOTHING;
        EXCEPTION WHEN lock_not_available THEN
            blocked := blocked || ids[k];
        END;
    END LOOP;
    RETURN blocked;
END
$$;
COMMENT ON FUNCTION novu._create_subscribers(text[]) IS 'Internal (workers): create missing recipients with an empty profile, waiting at most twice novu.fanout_lock_wait in all for other transactions creating them; returns the ids not created';

-- Fan out pending outbox rows: trigger events in one set-based statement (one by
-- one if that fails, so a bad event cannot block the others), then chunks of at
-- most p_limit subscribers in all of broadcasts and triggers naming topics.  Returns the rows leased to the
-- caller (at most p_lease_limit, see _expand); *handled (OUT) is the number of
-- outbox rows and broadcast subscribers handled.
CREATE FUNCTION novu._fanout(p_limit integer, p_lease_limit integer, p_lease_ms integer,
                             p_slot integer, p_nslots integer, p_floor bigint DEFAULT 0)
RETURNS TABLE (id bigint, attempts integer, transaction_id text, workflow_id text, subscriber_id text,
               device_token text, integration_id bigint, payload jsonb, overrides jsonb, actor jsonb,
               step jsonb, step_key text, subscriber jsonb, handled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    txids text[];
    wfids text[];
    subids text[];
    one text;
    msg text;
    done integer := 0;
    leased integer := 0;
    n integer;
    b novu.events;
    chunk text[];
    tids tid[];
    more tid[];
    budget integer;
    last_id bigint := 0;
    state text;
    blocked text[];
    waiting text[];
    prev_wait text;
BEGIN
    -- claim pending triggers, then mark them processed.  Each worker takes its
    -- own share first (id modulo the workers): workers that scan the same rows
    -- would each try the other's row locks, one by one, to skip them.  With its
    -- share short of p_limit, it helps with the others' (so one wake-up takes
    -- every row committed so far, and a call that took fewer than p_limit rows
    -- tells the worker that nothing more is waiting).  The rows are locked first and
    -- updated by TID after (_take_events): a join of the locking subquery with
    -- the table can be planned (on an outbox analyzed while empty) as a nested
    -- loop that locks and scans again for every row, which took 24 s for a
    -- batch of 10,000.  The scans start at the worker's floor (p_floor: no
    -- trigger below it is or can become pending, see src/queue/floor.c), past
    -- the index entries of triggers already fanned out that VACUUM has not
    -- removed yet (after a burst, hundreds of pages read at every wake-up).
    -- Never above the sequence's last value: a sequence set back (TRUNCATE
    -- ... RESTART IDENTITY) hands out ids below the floor until the worker
    -- sees it.
    p_floor := LEAST(p_floor, (SELECT s.last_value FROM novu.events_id_seq s));
    SELECT array_agg(c.ctid) INTO tids
      FROM (SELECT x.ctid FROM novu.events x
             WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor
               AND (p_nslots <= 1 OR x.id % p_nslots = p_slot) AND x.retry_at IS NULL
             ORDER BY x.id LIMIT p_limit
             FOR UPDATE SKIP LOCKED) c;
    IF p_nslots > 1 AND COALESCE(cardinality(tids), 0) < p_limit THEN
        SELECT array_agg(c.ctid) INTO more
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor AND x.id % p_nslots <> p_slot
                   AND x.retry_at IS NULL
                 ORDER BY x.id LIMIT p_limit - COALESCE(cardinality(tids), 0)
                 FOR UPDATE SKIP LOCKED) c;
        tids := COALESCE(tids || more, tids, more);
    END IF;
    -- Then the triggers set aside whose time has come (novu._create_subscribers),
    -- after every new one: set aside again and again while an application
    -- holds their recipients, they must not come before the triggers behind
    -- them.  (Scanned only when the new ones did not fill the call: then few
    -- triggers are pending.)
    IF COALESCE(cardinality(tids), 0) < p_limit THEN
        SELECT array_agg(c.ctid) INTO more
          FROM (SELECT x.ctid FROM novu.events x
                 WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= p_floor AND x.retry_at <= now()
                 ORDER BY x.id LIMIT p_limit - COALESCE(cardinality(tids), 0)
                 FOR UPDATE SKIP LOCKED) c;
        tids := COALESCE(tids || more, tids, more);
    END IF;
    IF tids IS NOT NULL THEN
        -- in outbox order (the worker's own share comes before the others'):
        -- the first event of a backoff digest's key is the oldest
        SELECT array_agg(e.transaction_id ORDER BY e.id, r.i), array_agg(e.workflow_id ORDER BY e.id, r.i),
               array_agg(r.subscriber_id ORDER BY e.id, r.i), count(DISTINCT e.transaction_id)
          INTO txids, wfids, subids, done
          FROM novu._take_events(tids) e
          LEFT JOIN LATERAL unnest(e.recipients) WITH ORDINALITY AS r(subscriber_id, i) ON true;
    END IF;
    IF txids IS NOT NULL THEN
        -- a row written by hand with no recipient, or a null one, fails alone
        -- (novu.trigger writes neither)
        SELECT array_agg(DISTINCT z.t) INTO waiting FROM unnest(txids, subids) AS z(t, s) WHERE z.s IS NULL;
        IF waiting IS NOT NULL THEN
            INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
            SELECT e.transaction_id, e.workflow_id, 'Failed', 'Fan-out failed: the trigger names no recipient, or a null one'
              FROM novu.events e WHERE e.transaction_id = ANY (waiting);
            SELECT array_agg(z.t ORDER BY z.i), array_agg(z.w ORDER BY z.i), array_agg(z.s ORDER BY z.i)
              INTO txids, wfids, subids
              FROM unnest(txids, wfids, subids) WITH ORDINALITY AS z(t, w, s, i)
             WHERE z.t <> ALL (waiting);
        END IF;
    END IF;
    IF txids IS NOT NULL THEN
        -- novu.trigger does not look up a recipient named by a plain
        -- subscriberId: the missing ones are created here, with an empty
        -- profile, except one deleted after its trigger was made (its messages
        -- end skipped, "Subscriber not found")
        -- (OFFSET 0: the deletions are looked up for the missing ones only)
        blocked := novu._create_subscribers(ARRAY(
            SELECT m.s
              FROM (SELECT z.t, z.s FROM unnest(txids, subids) AS z(t, s)
                     WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = z.s)
                    OFFSET 0) m
             WHERE NOT EXISTS (SELECT FROM novu.subscriber_deletions d JOIN novu.events e ON e.transaction_id = m.t
                                WHERE d.subscriber_id = m.s AND d.last_event_id >= e.id)));
        IF cardinality(blocked) > 0 THEN
            -- a recipient another transaction is creating: its triggers wait,
            -- pending again (no other transaction saw them taken) and set
            -- aside for as long as they have waited already, 1 to 30 s, from
            -- now (clock time: this transaction may have begun a while ago),
            -- and this worker goes on with the others
            SELECT array_agg(DISTINCT z.t) INTO waiting FROM unnest(txids, subids) AS z(t, s) WHERE z.s = ANY (blocked);
            UPDATE novu.events e SET status = 'pending', processed_at = NULL,
                   retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - e.created_at, interval '1 second'),
                                                        interval '30 seconds')
             WHERE e.transaction_id = ANY (waiting);
            SELECT array_agg(z.t ORDER BY z.i), array_agg(z.w ORDER BY z.i), array_agg(z.s ORDER BY z.i)
              INTO txids, wfids, subids
              FROM unnest(txids, wfids, subids) WITH ORDINALITY AS z(t, w, s, i)
             WHERE z.t <> ALL (waiting);
            done := done - cardinality(waiting);
        END IF;
    END IF;
    IF txids IS NOT NULL THEN
        BEGIN
            RETURN QUERY SELECT x.*, 0 FROM novu._start(txids, wfids, subids, p_lease_limit, p_lease_ms) x;
            GET DIAGNOSTICS leased = ROW_COUNT;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            -- one bad event (and nothing it returned) is undone; the others go on one by one
            leased := 0;
            -- the digest keys of every trigger, in key order first, as novu._start
            -- takes them: locked one trigger at a time while holding the earlier
            -- ones, two workers could wait on each other (a deadlock)
            PERFORM novu._lock_digest_keys(novu._digest_keys(txids, wfids, subids));
            prev_wait := current_setting('lock_timeout');
            IF state = '55P03' THEN
                -- a digest window held by another transaction: the triggers that reach
                -- one are set aside below, after a millisecond's wait each
                PERFORM set_config('lock_timeout', '1ms', true);
            END IF;
            FOREACH one IN ARRAY ARRAY(SELECT u.t FROM unnest(txids) WITH ORDINALITY AS u(t, i)
                                        GROUP BY u.t ORDER BY min(u.i)) LOOP
                BEGIN
                    RETURN QUERY
                    SELECT x.*, 0 FROM novu._start(
                        ARRAY(SELECT t FROM unnest(txids, wfids, subids) AS z(t, w, s) WHERE t = one),
                        ARRAY(SELECT w FROM unnest(txids, wfids, subids) AS z(t, w, s) WHERE t = one),
                        ARRAY(SELECT s FROM unnest(txids, wfids, subids) AS z(t, w, s) WHERE t = one),
                        GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    leased := leased + n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
                    -- an older event of its backoff digest's key in another
                    -- worker (novu._older_in_flight): taken again in a second
                    IF state = 'NV001' THEN
                        UPDATE novu.events e SET status = 'pending', processed_at = NULL,
                               retry_at = clock_timestamp() + interval '1 second'
                         WHERE e.transaction_id = one;
                        done := done - 1;
                        CONTINUE;
                    END IF;
                    -- a lock another transaction holds past the wait (a digest
                    -- window an application is canceling), or out of resources
                    -- (memory, disk): this trigger is set aside, pending again
                    -- as novu._create_subscribers' are, and the others go on
                    IF state = '55P03' OR left(state, 2) = '53' THEN
                        UPDATE novu.events e SET status = 'pending', processed_at = NULL,
                               retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - e.created_at, interval '1 second'),
                                                                    interval '30 seconds')
                         WHERE e.transaction_id = one;
                        done := done - 1;
                        IF state = '55P03' THEN
                            PERFORM set_config('lock_timeout', '1ms', true);
                        END IF;
                        CONTINUE;
                    END IF;
                    -- transient (serialization, deadlock, shutdown, I/O): the
                    -- whole fan-out is undone and tried again, the trigger is
                    -- not failed for good
                    IF left(state, 2) IN ('40', '55', '57', '58') THEN
                        RAISE;
                    END IF;
                    INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
                    SELECT e.transaction_id, e.workflow_id, 'Failed', 'Fan-out failed: ' || msg
                      FROM novu.events e WHERE e.transaction_id = one;
                END;
            END LOOP;
            PERFORM set_config('lock_timeout', prev_wait, true);
        END;
    END IF;

    -- Broadcasts and triggers naming topics (kind 'topic', see _topic_chunk)
    -- go by chunks, in subscriberId order from the cursor on their outbox row.
    -- One call hands out at most p_limit subscribers in all (each row costs at
    -- least one): a big row takes its chunk and ends the call, small topic
    -- triggers are finished several per call.  The row's cursor moves before
    -- its chunk is expanded, in the same subtransaction: a chunk that fails
    -- to expand is undone whole, and its row is marked processed with the
    -- reason, as a failing trigger is, so that it cannot block the rows after
    -- it.
    budget := p_limit;
    LOOP
        SELECT * INTO b FROM novu.events ev
         WHERE ev.status IN ('pending', 'processing') AND ev.kind <> 'trigger' AND ev.id > last_id
           AND (ev.retry_at IS NULL OR ev.retry_at <= now())
         ORDER BY ev.id LIMIT 1
         FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        last_id := b.id;
        BEGIN
            -- a topic trigger's direct recipients, as a trigger's above
            -- (one another transaction is creating: the row is set aside for a second)
            IF b.kind <> 'broadcast' AND b.cursor IS NULL AND b.recipients IS NOT NULL
               AND cardinality(novu._create_subscribers(ARRAY(
                       SELECT r.s FROM unnest(b.recipients) AS r(s)
                        WHERE NOT EXISTS (SELECT FROM novu.subscribers x WHERE x.subscriber_id = r.s)
                          AND NOT EXISTS (SELECT FROM novu.subscriber_deletions d
                                           WHERE d.subscriber_id = r.s AND d.last_event_id >= b.id)))) > 0 THEN
                UPDATE novu.events
                   SET retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - created_at, interval '1 second'),
                                                            interval '30 seconds')
                 WHERE novu.events.id = b.id;
                CONTINUE;
            END IF;
            IF b.kind = 'broadcast' THEN
                SELECT array_agg(s.subscriber_id ORDER BY s.subscriber_id) INTO chunk
                  FROM (SELECT sub.subscriber_id FROM novu.subscribers sub
                         -- an index condition: the chunk starts at the cursor (an OR
                         -- with "cursor IS NULL" made it a filter, every chunk
                         -- scanning from the first subscriber: a broadcast O(n^2))
                         WHERE sub.subscriber_id > COALESCE(b.cursor, '')
                         ORDER BY sub.subscriber_id LIMIT budget) s;
            ELSE
                chunk := NULLIF(novu._topic_chunk(b.recipients, b.topics,
                                                  CASE jsonb_typeof(b.actor) WHEN 'string' THEN b.actor #>> '{}'
                                                       ELSE b.actor ->> 'subscriberId' END,
                                                  b.cursor, budget), '{}');
            END IF;
            IF chunk IS NULL OR cardinality(chunk) < budget THEN
                UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
            ELSE
                UPDATE novu.events SET status = 'processing', cursor = chunk[cardinality(chunk)] WHERE novu.events.id = b.id;
            END IF;
            IF chunk IS NOT NULL THEN
                RETURN QUERY
                SELECT x.*, 0 FROM novu._start(array_fill(b.transaction_id, ARRAY[cardinality(chunk)]),
                                                array_fill(b.workflow_id, ARRAY[cardinality(chunk)]), chunk,
                                                GREATEST(p_lease_limit - leased, 0), p_lease_ms) x;
                GET DIAGNOSTICS n = ROW_COUNT;
                leased := leased + n;
                done := done + cardinality(chunk);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            -- an older event of a backoff digest's key in another worker
            -- (novu._older_in_flight): this chunk is taken again in a second
            IF state = 'NV001' THEN
                UPDATE novu.events SET retry_at = clock_timestamp() + interval '1 second' WHERE novu.events.id = b.id;
                CONTINUE;
            END IF;
            -- a lock held past the wait (a digest window an application is
            -- canceling) or out of resources: this row is set aside (its cursor
            -- unmoved) and the others go on
            IF state = '55P03' OR left(state, 2) = '53' THEN
                UPDATE novu.events
                   SET retry_at = clock_timestamp() + LEAST(GREATEST(clock_timestamp() - created_at, interval '1 second'),
                                                            interval '30 seconds')
                 WHERE novu.events.id = b.id;
                CONTINUE;
            END IF;
            -- a transient failure (serialization, deadlock, shutdown, I/O) ends
            -- the call: the worker tries this chunk again later
            IF left(state, 2) IN ('40', '55', '57', '58') THEN
                RAISE;
            END IF;
            UPDATE novu.events SET status = 'processed', processed_at = now(), cursor = NULL WHERE novu.events.id = b.id;
            INSERT INTO novu.execution_details (transaction_id, workflow_id, status, detail)
            VALUES (b.transaction_id, b.workflow_id, 'Failed', 'Fan-out failed: ' || msg);
            chunk := NULL;
        END;
        done := done + 1;
        budget := budget - GREATEST(COALESCE(cardinality(chunk), 0), 1);
        EXIT WHEN budget <= 0;
    END LOOP;

    -- the count of handled outbox rows travels in one extra row with no message
    RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                        NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, done;
END
$$;
COMMENT ON FUNCTION novu._fanout(integer, integer, integer, integer, integer, bigint) IS 'Internal (workers): create the missing recipients of pending triggers, fan the triggers out, then chunks of broadcasts and topic triggers, into deliveries; returns the messages leased to the caller, then one row with the count handled';

-- Recording: each result finds its row by primary key, in a lateral probe the
-- planner cannot turn into a scan of every leased row (see _expand; the
-- status test is written "status || ''" so that the partial index of leased
-- rows, whose statistics are always stale, is never chosen instead), and the
-- row is updated by its tuple id: a row updated meanwhile by anyone else (a
-- new lease, a cancel) no longer matches and is left alone.  Counters go to
-- the worker's own row.
--
-- Record a batch of delivery results in one statement: statuses, the activity
-- log and the counters of worker p_worker; dead tokens a provider named are
-- pruned (and counted) in a second one, only then.  A row is updated only
-- if it is still the attempt this worker claimed (a lease that expired and was
-- claimed again is left to its new owner).
CREATE FUNCTION novu._record(p_worker integer, p_ids bigint[], p_attempts integer[], p_statuses text[],
                             p_errors text[], p_message_ids text[], p_delays_ms bigint[], p_receipt_ms bigint[],
                             p_details text[], p_prune_integrations bigint[], p_prune_tokens text[],
                             p_prune_since bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n integer;
BEGIN

    WITH r AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_statuses, p_errors, p_message_ids, p_delays_ms, p_receipt_ms, p_details)
                 AS r(id, attempts, status, error, message_id, delay_ms, receipt_ms, detail)
    ),
    upd AS (
        UPDATE novu.deliveries d
           SET status = r.status,
               last_error = COALESCE(r.error, CASE WHEN r.status = 'sent' THEN NULL ELSE d.last_error END),
               provider_message_id = COALESCE(r.message_id, d.provider_message_id),
               next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + r.delay_ms * interval '1 millisecond'
                                      ELSE d.next_attempt_at END,
               sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
               receipt_at = CASE WHEN r.receipt_ms IS NOT NULL THEN now() + r.receipt_ms * interval '1 millisecond' END,
               lease_until = NULL,
               updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.subscriber_id, d.workflow_id, d.channel, d.provider_id,
                  d.integration_id, r.status, r.error, r.detail
    ),
    log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            provider_id, status, detail)
        SELECT transaction_id, id, subscriber_id, workflow_id, channel, provider_id,
               CASE status WHEN 'sent' THEN 'Success' WHEN 'pending' THEN 'Pending' ELSE 'Failed' END,
               detail
          FROM upd WHERE detail IS NOT NULL
    ),
    counts AS (
        SELECT integration_id,
               count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'pending') AS retried,
               max(error) FILTER (WHERE status <> 'sent') AS last_error
          FROM upd WHERE integration_id IS NOT NULL GROUP BY integration_id
    ),
    stats AS (
        INSERT INTO novu.provider_stats AS s (integration_id, worker, sent, failed, retried, last_error, last_error_at)
        SELECT c.integration_id, p_worker, c.sent, c.failed, c.retried, c.last_error,
               CASE WHEN c.last_error IS NOT NULL THEN now() END
          FROM counts c
         WHERE EXISTS (SELECT FROM novu.integrations i WHERE i.id = c.integration_id)
        ON CONFLICT (integration_id, worker) DO UPDATE SET
            sent = s.sent + excluded.sent,
            failed = s.failed + excluded.failed,
            retried = s.retried + excluded.retried,
            last_error = COALESCE(excluded.last_error, s.last_error),
            last_error_at = COALESCE(excluded.last_error_at, s.last_error_at)
    )
    SELECT count(*)::integer INTO n FROM upd;
    -- Dead tokens and deleted chat webhooks, when a provider said so (rare: a
    -- statement of its own, not planned and opened with every record)
    IF cardinality(p_prune_integrations) > 0 THEN
        -- (a token or webhook an application transaction holds is left: that
        -- transaction is changing it, and waiting for it would stop the worker;
        -- a send to it that fails again prunes it then)
        WITH dead_tokens AS MATERIALIZED (
            SELECT t.ctid AS tid FROM novu.device_tokens t
              JOIN unnest(p_prune_integrations, p_prune_tokens, p_prune_since) AS x(integration_id, token, since_ms)
                ON t.integration_id = x.integration_id AND t.device_token = x.token
             -- APNs says since when a token is invalid: one registered again after that stays
             WHERE x.since_ms IS NULL OR t.created_at <= to_timestamp(x.since_ms / 1000.0)
               FOR UPDATE OF t SKIP LOCKED
        ),
        pruned_tokens AS (
            DELETE FROM novu.device_tokens t USING dead_tokens k WHERE t.ctid = k.tid
            RETURNING t.integration_id
        ),
        dead_webhooks AS MATERIALIZED (
            -- a deleted chat webhook: the subscriber's credential goes
            SELECT c.ctid AS tid FROM novu.subscriber_channels c
              JOIN unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
                ON c.integration_id = x.integration_id AND c.webhook_url = x.token
             WHERE EXISTS (SELECT FROM novu.integrations ig WHERE ig.id = c.integration_id AND ig.channel = 'chat')
               FOR UPDATE OF c SKIP LOCKED
        ),
        pruned_webhooks AS (
            UPDATE novu.subscriber_channels c SET webhook_url = NULL, updated_at = now()
              FROM dead_webhooks k WHERE c.ctid = k.tid
            RETURNING c.integration_id
        ),
        pruned AS (
            SELECT integration_id FROM pruned_tokens UNION ALL SELECT integration_id FROM pruned_webhooks
        )
        INSERT INTO novu.provider_stats AS s (integration_id, worker, tokens_pruned)
        SELECT p.integration_id, p_worker, count(*)
          FROM pruned p
         WHERE EXISTS (SELECT FROM novu.integrations i WHERE i.id = p.integration_id)
         GROUP BY p.integration_id
        ON CONFLICT (integration_id, worker) DO UPDATE SET tokens_pruned = s.tokens_pruned + excluded.tokens_pruned;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[], bigint[]) IS 'Internal (workers): record a batch of delivery results, the activity log and counters in one statement, and prune the dead tokens named unless registered again after the time given (a second one, only then)';

-- The in_app sink: the worker renders a claimed in_app message (content, subject,
-- the cta's url) and stores it here, in the feed, in one short transaction: the
-- delivery becomes 'sent' (only if it is still the attempt this worker claimed,
-- as in _record: a message is stored once), the feed row is written with the
-- step's cta, actions, avatar and feed id, the trigger's payload and the actor's
-- public profile, "Message created" goes to the activity log, and each
-- subscriber's unseen count is notified on novu_in_app at commit.  A message
-- whose subscriber was deleted meanwhile is not stored: it is canceled.  The
-- batch's subscribers are locked first (FOR KEY SHARE, as the feed's foreign
-- key would) without waiting: a deletion that starts then waits for this
-- short transaction, and deletes the stored messages too; a subscriber whose
-- deletion has begun and is not committed (an application's transaction,
-- which may stay open) is not waited for: its messages go back to pending, a
-- second later, with no attempt counted, and are canceled or stored once that
-- transaction ends.  Returns the messages stored.
CREATE FUNCTION novu._store_in_app(p_ids bigint[], p_attempts integer[], p_subjects text[], p_contents text[],
                                   p_urls text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    subs text[];
    held bigint[];
    n integer;
BEGIN
    -- the subscribers locked by this transaction, and the messages of those
    -- another one is deleting (locked, still visible): set back to pending
    WITH m AS MATERIALIZED (
        SELECT x.id, x.subscriber_id FROM unnest(p_ids, p_attempts) AS r(id, attempts)
          CROSS JOIN LATERAL (SELECT y.id, y.subscriber_id FROM novu.deliveries y
                               WHERE y.id = r.id AND y.attempts = r.attempts AND y.status || '' = 'sending'
                              OFFSET 0) x),
    locked AS MATERIALIZED (
        SELECT s.subscriber_id FROM novu.subscribers s
         WHERE s.subscriber_id IN (SELECT m.subscriber_id FROM m)
         ORDER BY s.subscriber_id
           FOR KEY SHARE SKIP LOCKED)
    SELECT array_agg(m.id) INTO held
      FROM m
     WHERE NOT EXISTS (SELECT FROM locked l WHERE l.subscriber_id = m.subscriber_id)
       AND EXISTS (SELECT FROM novu.subscribers s WHERE s.subscriber_id = m.subscriber_id);
    IF held IS NOT NULL THEN
        UPDATE novu.deliveries d
           SET status = 'pending', attempts = GREATEST(d.attempts - 1, 0), lease_until = NULL, claimed_by = NULL,
               next_attempt_at = now() + interval '1 second', updated_at = now()
          FROM unnest(p_ids, p_attempts) AS r(id, attempts)
         WHERE d.id = r.id AND r.id = ANY (held) AND d.attempts = r.attempts AND d.status = 'sending';
    END IF;
    WITH r AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_subjects, p_contents, p_urls)
                 AS r(id, attempts, subject, content, url)
         WHERE held IS NULL OR r.id <> ALL (held)
    ),
    upd AS (
        UPDATE novu.deliveries d
           SET status = 'sent', last_error = NULL, sent_at = now(), lease_until = NULL, updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                        AND EXISTS (SELECT FROM novu.subscribers s
                                                     WHERE s.subscriber_id = x.subscriber_id)
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.workflow_id, d.subscriber_id, d.step_index, r.subject, r.content, r.url
    ),
    ins AS (
        INSERT INTO novu.in_app_messages (id, subscriber_id, transaction_id, workflow_id, feed_identifier,
                                          content, subject, avatar, cta, payload, actor)
        SELECT u.id, u.subscriber_id, u.transaction_id, u.workflow_id, st.step ->> 'feedIdentifier',
               u.content, NULLIF(u.subject, ''),
               CASE WHEN jsonb_typeof(st.step -> 'avatar') = 'string' THEN st.step ->> 'avatar'
                    WHEN jsonb_typeof(st.step -> 'avatar') = 'boolean' AND NOT (st.step -> 'avatar')::boolean THEN NULL
                    WHEN jsonb_typeof(ev.actor) = 'object' THEN ev.actor ->> 'avatar' END,
               jsonb_build_object(
                   'type', 'redirect',
                   'data', CASE WHEN u.url IS NOT NULL THEN jsonb_build_object('url', u.url) ELSE '{}'::jsonb END,
                   'action', jsonb_build_object(
                       'status', 'pending',
                       'buttons', COALESCE(st.step -> 'actions', '[]'::jsonb),
                       'result', jsonb_build_object('payload', '{}'::jsonb, 'type', NULL))),
               COALESCE(ev.payload, '{}'::jsonb),
               CASE WHEN jsonb_typeof(ev.actor) = 'object' THEN jsonb_build_object(
                   'subscriberId', ev.actor -> 'subscriberId', 'firstName', ev.actor -> 'firstName',
                   'lastName', ev.actor -> 'lastName', 'avatar', ev.actor -> 'avatar') END
          FROM upd u
          LEFT JOIN novu.events ev ON ev.transaction_id = u.transaction_id
          LEFT JOIN novu.workflows w ON w.workflow_id = u.workflow_id
          CROSS JOIN LATERAL (SELECT w.steps -> u.step_index AS step) st
        ON CONFLICT (id) DO NOTHING
        RETURNING novu.in_app_messages.subscriber_id
    ),
    log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            status, detail)
        SELECT u.transaction_id, u.id, u.subscriber_id, u.workflow_id, 'in_app', 'Success', 'Message created'
          FROM upd u
    ),
    -- claimed before its subscriber was deleted: not stored (its feed went
    -- with it), canceled as novu.delete_subscriber cancels the pending ones
    gone AS (
        UPDATE novu.deliveries d
           SET status = 'canceled', last_error = 'Subscriber deleted', lease_until = NULL, updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.attempts = r.attempts
                                        AND x.status || '' = 'sending'
                                        AND NOT EXISTS (SELECT FROM novu.subscribers s
                                                         WHERE s.subscriber_id = x.subscriber_id)
                                      OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.workflow_id, d.subscriber_id
    ),
    gone_log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            status, detail)
        SELECT g.transaction_id, g.id, g.subscriber_id, g.workflow_id, 'in_app', 'Warning',
               'Message canceled: subscriber deleted'
          FROM gone g
    )
    SELECT array_agg(DISTINCT i.subscriber_id), count(*) INTO subs, n FROM ins i;
    PERFORM novu._notify_in_app(s) FROM unnest(subs) s;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu._store_in_app(bigint[], integer[], text[], text[], text[]) IS 'Internal (workers): the in_app sink: store rendered in_app messages in the feed, mark them sent, log them, NOTIFY novu_in_app at commit';

-- Claim Expo receipts that are due (leased, so two workers never check one twice).
CREATE FUNCTION novu._claim_receipts(p_limit integer, p_lease_ms integer)
RETURNS TABLE (id bigint, integration_id bigint, ticket text, device_token text, attempts integer, sent_age double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    -- the due receipts are locked first (a materialized CTE, scanned once) and
    -- each row is then reached by its primary key: a plan that scanned the
    -- table and ran the locking subquery again for each of its rows held the
    -- locks for seconds while a burst's receipts came due
    RETURN QUERY
    WITH c AS MATERIALIZED (
        SELECT x.id FROM novu.deliveries x
         WHERE x.receipt_at <= now()
         ORDER BY x.receipt_at
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED
    )
    UPDATE novu.deliveries d
       SET receipt_at = now() + p_lease_ms * interval '1 millisecond'
      FROM c CROSS JOIN LATERAL (SELECT y.ctid AS tid FROM novu.deliveries y WHERE y.id = c.id OFFSET 0) l
     WHERE d.ctid = l.tid
    RETURNING d.id, COALESCE(d.integration_id, 0), d.provider_message_id, d.device_token, d.attempts,
              extract(epoch FROM now() - d.sent_at)::double precision;
END
$$;
COMMENT ON FUNCTION novu._claim_receipts(integer, integer) IS 'Internal (workers): lease Expo receipts that are due for checking';

-- Retries of requests with an idempotency key (ProviderOps.request_key: OneSignal),
-- and of the smaller requests an Expo request refused for some messages is split into.
-- A request whose answer was lost may have been processed, and the provider
-- deduplicates only the same key: a retry must be that request again, the same
-- messages with the same key.  A part of it, or it merged with others, would be
-- another key, delivered again to the ids that had it.  So the claim (queue.c)
-- takes the messages of such a request that are not final yet together or not at
-- all: only when every one of them is due (pending and due, its lease expired, or
-- with p_recover leased before p_orphan_before by a worker not in p_pids), by one
-- worker at a time (the one that locks the request's first message not final;
-- tried, never waited for: not an advisory lock, which any role could take and
-- hold), all of them locked here (FOR UPDATE SKIP LOCKED: else none).  Requests go
-- oldest first while the messages taken before them number fewer than p_limit:
-- the first whatever its size.  A request some of whose messages are due and
-- others not (results recorded apart) has the due ones wait for the last, so
-- that no claim finds it due in vain meanwhile.  Returns the ids taken, locked;
-- the claim leases them with the others.
CREATE FUNCTION novu._claim_groups(p_limit integer, p_pids integer[], p_recover boolean,
                                   p_orphan_before timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
-- planned once: a custom plan of the query below took 1-6 ms at every claim
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- most queues hold no request with an idempotency key: one probe of the
    -- partial index (empty then) and nothing is planned
    IF p_limit <= 0 OR NOT EXISTS (SELECT FROM novu.deliveries d
                                    WHERE d.request_key IS NOT NULL AND d.status IN ('pending', 'sending')) THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH due AS MATERIALIZED (
        -- the requests of the first p_limit messages due (deliveries_request_due_idx)
        SELECT x.request_key, min(x.due_at) AS due_at
          FROM ((SELECT d.request_key, d.next_attempt_at AS due_at FROM novu.deliveries d
                  WHERE d.request_key IS NOT NULL AND d.status = 'pending' AND d.next_attempt_at <= now()
                  ORDER BY d.next_attempt_at LIMIT p_limit)
                UNION ALL
                (SELECT d.request_key, d.lease_until FROM novu.deliveries d
                  WHERE d.request_key IS NOT NULL AND d.status = 'sending' AND d.lease_until < now()
                  ORDER BY d.lease_until LIMIT p_limit)
                UNION ALL
                (SELECT d.request_key, d.lease_until FROM novu.deliveries d
                  WHERE p_recover AND d.request_key IS NOT NULL AND d.status = 'sending'
                    AND d.lease_until >= now() AND d.lease_until < p_orphan_before
                    AND d.claimed_by <> ALL (p_pids)
                  LIMIT p_limit)) x
         GROUP BY x.request_key
    ),
    requests AS MATERIALIZED (
        -- their messages not final yet (deliveries_request_idx): how many, whether
        -- all can be taken now, and when the last can
        SELECT due.request_key, due.due_at, count(*) AS size,
               bool_and((d.status = 'pending' AND d.next_attempt_at <= now())
                        OR (d.status = 'sending' AND d.lease_until < now())
                        OR (p_recover AND d.status = 'sending' AND d.lease_until < p_orphan_before
                            AND d.claimed_by <> ALL (p_pids))) AS ready,
               max(CASE WHEN d.status = 'pending' THEN d.next_attempt_at ELSE d.lease_until END) AS last_due
          FROM due JOIN novu.deliveries d ON d.request_key = due.request_key
         WHERE d.status IN ('pending', 'sending')
         GROUP BY due.request_key, due.due_at
    ),
    early AS MATERIALIZED (
        SELECT d.id, r.last_due
          FROM requests r JOIN novu.deliveries d ON d.request_key = r.request_key
         WHERE NOT r.ready AND d.status IN ('pending', 'sending')
           AND CASE WHEN d.status = 'pending' THEN d.next_attempt_at ELSE d.lease_until END < r.last_due
           FOR UPDATE OF d SKIP LOCKED
    ),
    waiting AS (
        UPDATE novu.deliveries d
           SET next_attempt_at = CASE WHEN d.status = 'pending' THEN e.last_due ELSE d.next_attempt_at END,
               lease_until = CASE WHEN d.status = 'sending' THEN e.last_due ELSE d.lease_until END
          FROM early e
         WHERE d.id = e.id
    ),
    taken AS MATERIALIZED (
        -- oldest first, while those before hold fewer than p_limit messages
        SELECT c.request_key, c.size
          FROM (SELECT r.request_key, r.size,
                       sum(r.size) OVER (ORDER BY r.due_at, r.request_key) - r.size AS before
                  FROM requests r WHERE r.ready) c
         WHERE c.before < p_limit
    ),
    chosen AS MATERIALIZED (
        -- each by one worker: the one that locks the request's first message
        -- not final (tried; a worker that cannot takes none of the request's)
        SELECT t.request_key, t.size
          FROM taken t
          JOIN novu.deliveries d ON d.id = (SELECT min(x.id) FROM novu.deliveries x
                                             WHERE x.request_key = t.request_key
                                               AND x.status IN ('pending', 'sending'))
           FOR UPDATE OF d SKIP LOCKED
    ),
    locked AS MATERIALIZED (
        SELECT d.id, d.request_key
          FROM chosen c JOIN novu.deliveries d ON d.request_key = c.request_key
         WHERE d.status IN ('pending', 'sending')
           AND ((d.status = 'pending' AND d.next_attempt_at <= now())
                OR (d.status = 'sending' AND d.lease_until < now())
                OR (p_recover AND d.status = 'sending' AND d.lease_until < p_orphan_before
                    AND d.claimed_by <> ALL (p_pids)))
           FOR UPDATE OF d SKIP LOCKED
    )
    -- a request with a message locked elsewhere (or changed since) waits for the next claim
    SELECT l.id FROM locked l
     WHERE l.request_key IN (SELECT k.request_key FROM locked k JOIN chosen c ON c.request_key = k.request_key
                              GROUP BY k.request_key, c.size HAVING count(*) = c.size);
END
$$;
COMMENT ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz) IS 'Internal (workers): lock the messages of requests with an idempotency key that are due again, whole requests only, for the claim';

-- Before a request with an idempotency key (ProviderOps.request_key) is first
-- sent: its key on each of its messages still leased for that attempt, so that
-- whatever claims one of them again retries that request (novu._claim_groups).
-- p_keys[i] is the key of message p_ids[i] at attempt p_attempts[i].  Returns
-- the positions (from 1) written: the worker sends a request only if all of its
-- messages were.
CREATE FUNCTION novu._set_request_keys(p_ids bigint[], p_attempts integer[], p_keys text[])
RETURNS SETOF integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    -- each message found by its primary key in a lateral probe (as in
    -- novu._record): a plan that joins on the leased rows' partial index scans
    -- every leased row once per message (105 us a message in a 20,000 burst)
    UPDATE novu.deliveries d SET request_key = r.key
      FROM unnest(p_ids, p_attempts, p_keys) WITH ORDINALITY AS r(id, attempts, key, i)
      CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                           WHERE x.id = r.id AND x.attempts = r.attempts AND x.status || '' = 'sending'
                          OFFSET 0) l
     WHERE d.ctid = l.tid
    RETURNING r.i::integer
$$;
COMMENT ON FUNCTION novu._set_request_keys(bigint[], integer[], text[]) IS 'Internal (workers): record the idempotency key of a request on its messages before it is first sent';

-- Record checked receipts: ok (done), failed (a sent message turns failed),
-- pending (to be sent again), later (check again), expired (no receipt came).
CREATE FUNCTION novu._record_receipts(p_worker integer, p_ids bigint[], p_statuses text[], p_errors text[],
                                      p_delays_ms bigint[], p_details text[], p_prune_integrations bigint[],
                                      p_prune_tokens text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    n integer;
BEGIN

    WITH r AS (
        SELECT * FROM unnest(p_ids, p_statuses, p_errors, p_delays_ms, p_details)
                 AS r(id, status, error, delay_ms, detail)
    ),
    upd AS (
        UPDATE novu.deliveries d
           SET status = CASE WHEN r.status IN ('failed', 'pending') THEN r.status ELSE d.status END,
               last_error = CASE WHEN r.status IN ('failed', 'pending') THEN r.error ELSE d.last_error END,
               next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + r.delay_ms * interval '1 millisecond'
                                      ELSE d.next_attempt_at END,
               receipt_at = CASE WHEN r.status = 'later' THEN now() + r.delay_ms * interval '1 millisecond' END,
               updated_at = now()
          FROM r CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM novu.deliveries x
                                      WHERE x.id = r.id AND x.status || '' = 'sent' OFFSET 0) l
         WHERE d.ctid = l.tid
        RETURNING d.id, d.transaction_id, d.subscriber_id, d.workflow_id, d.channel, d.provider_id,
                  d.integration_id, r.status, r.detail
    ),
    log AS (
        INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id, channel,
                                            provider_id, status, detail)
        SELECT transaction_id, id, subscriber_id, workflow_id, channel, provider_id,
               CASE status WHEN 'pending' THEN 'Pending' ELSE 'Failed' END, detail
          FROM upd WHERE detail IS NOT NULL
    ),
    pruned_tokens AS (
        DELETE FROM novu.device_tokens t
         USING unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
         WHERE t.integration_id = x.integration_id AND t.device_token = x.token
        RETURNING t.integration_id
    ),
    pruned_webhooks AS (
        -- a deleted chat webhook: the subscriber's credential goes
        UPDATE novu.subscriber_channels c SET webhook_url = NULL, updated_at = now()
          FROM unnest(p_prune_integrations, p_prune_tokens) AS x(integration_id, token)
         WHERE c.integration_id = x.integration_id AND c.webhook_url = x.token
           AND EXISTS (SELECT FROM novu.integrations ig WHERE ig.id = c.integration_id AND ig.channel = 'chat')
        RETURNING c.integration_id
    ),
    pruned AS (
        SELECT integration_id FROM pruned_tokens UNION ALL SELECT integration_id FROM pruned_webhooks
    ),
    counts AS (
        SELECT integration_id,
               count(*) FILTER (WHERE status IN ('failed', 'pending')) AS turned,
               count(*) FILTER (WHERE status = 'failed') AS failed
          FROM upd WHERE integration_id IS NOT NULL GROUP BY integration_id
    ),
    stats AS (
        -- a sent message that turned failed or pending is no longer counted as sent
        INSERT INTO novu.provider_stats AS s (integration_id, worker, sent, failed, tokens_pruned)
        SELECT c.integration_id, p_worker, -c.turned, c.failed,
               (SELECT count(*) FROM pruned p WHERE p.integration_id = c.integration_id)
          FROM counts c
         WHERE EXISTS (SELECT FROM novu.integrations i WHERE i.id = c.integration_id)
        ON CONFLICT (integration_id, worker) DO UPDATE SET
            sent = s.sent + excluded.sent,
            failed = s.failed + excluded.failed,
            tokens_pruned = s.tokens_pruned + excluded.tokens_pruned
    )
    SELECT count(*)::integer INTO n FROM upd;
    RETURN n;
END
$$;
COMMENT ON FUNCTION novu._record_receipts(integer, bigint[], text[], text[], bigint[], text[], bigint[], text[]) IS 'Internal (workers): record checked Expo receipts in one statement';

-- Delete finished history older than the retention, in bounded batches.  Each
-- table is walked by id (rows are numbered as they are made) from where the
-- last call stopped (novu.housekeeping_cursor), up to the first row made after
-- the cutoff (then the next call starts again from the oldest row), p_limit
-- rows to delete, or 2 * p_limit rows looked at: a call costs at most that,
-- whatever the table's size and however many old rows must stay (a delay
-- waiting longer than the retention keeps its trigger).  (A block range index
-- on created_at did not: once the space of deleted rows is reused, every range
-- holds an old row, and each call read the whole table.)  Rows another
-- transaction holds are skipped.  Returns the rows deleted; a cursor left past
-- 0 says the walk goes on.
CREATE FUNCTION novu._housekeeping(p_retention interval, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := now() - p_retention;
    ids bigint[];
    txs text[];
    r record;
    n integer;
    total integer := 0;
    pos bigint;
    seen integer;
    last_id bigint;
    done boolean;
BEGIN
    -- finished messages (updated_at >= created_at: a row updated since the
    -- cutoff waits; so does one whose Expo receipt is still to be checked, a
    -- retention shorter than novu.expo_receipt_delay notwithstanding)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'deliveries';
    ids := '{}'; seen := 0; last_id := 0; done := true;
    FOR r IN SELECT d.id, d.created_at, d.status, d.updated_at, d.receipt_at FROM novu.deliveries d
              WHERE d.id > COALESCE(pos, 0) ORDER BY d.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        last_id := r.id; seen := seen + 1;
        IF r.status IN ('sent', 'failed', 'canceled', 'skipped') AND r.updated_at < cutoff AND r.receipt_at IS NULL THEN
            ids := ids || r.id;
        END IF;
        IF cardinality(ids) >= p_limit OR seen >= 2 * p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE last_id END WHERE table_name = 'deliveries';
    DELETE FROM novu.deliveries WHERE id IN (
        SELECT x.id FROM novu.deliveries x WHERE x.id = ANY (ids) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- the activity log (every old row goes)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'execution_details';
    ids := '{}'; done := true;
    FOR r IN SELECT e.id, e.created_at FROM novu.execution_details e WHERE e.id > COALESCE(pos, 0) ORDER BY e.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        ids := ids || r.id;
        IF cardinality(ids) >= p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE ids[cardinality(ids)] END
     WHERE table_name = 'execution_details';
    DELETE FROM novu.execution_details WHERE id = ANY (ids);   -- (activity rows are never locked)
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- triggers fanned out, except those something still needs: a message not
    -- final, a delay or window waiting, or an event merged into a window
    -- still open, which may stay open longer than the retention (step_runs
    -- names only its leader, but every event of it keeps its transactionId
    -- taken, a trigger again being a duplicate, and the one that leads it
    -- after a hand-over needs its payload for the steps after the digest)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'events';
    txs := '{}'; seen := 0; last_id := 0; done := true;
    FOR r IN SELECT e.id, e.transaction_id, e.created_at FROM novu.events e
              WHERE e.status IN ('processed', 'canceled') AND e.id > COALESCE(pos, 0) ORDER BY e.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        last_id := r.id; seen := seen + 1;
        IF NOT EXISTS (SELECT FROM novu.deliveries d
                        WHERE d.transaction_id = r.transaction_id AND d.status IN ('pending', 'sending'))
           AND NOT EXISTS (SELECT FROM novu.step_runs w
                            WHERE w.transaction_id = r.transaction_id AND w.status = 'waiting')
           AND NOT EXISTS (SELECT FROM novu.digest_events m JOIN novu.step_runs w ON w.id = m.digest_id
                            WHERE m.transaction_id = r.transaction_id AND m.status = 'merged'
                              AND w.status = 'waiting') THEN
            txs := txs || r.transaction_id;
        END IF;
        IF cardinality(txs) >= p_limit OR seen >= 2 * p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE last_id END WHERE table_name = 'events';
    DELETE FROM novu.events WHERE transaction_id IN (
        SELECT x.transaction_id FROM novu.events x WHERE x.transaction_id = ANY (txs) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- finished delays and digests (their events cascade), except a digest
    -- whose events a delay still waiting after it, or a message still to
    -- send, will show (step.events)
    SELECT c.after_id INTO pos FROM novu.housekeeping_cursor c WHERE c.table_name = 'step_runs';
    ids := '{}'; seen := 0; last_id := 0; done := true;
    FOR r IN SELECT w.id, w.kind, w.created_at, w.status, w.updated_at FROM novu.step_runs w
              WHERE w.id > COALESCE(pos, 0) ORDER BY w.id LOOP
        EXIT WHEN r.created_at >= cutoff;
        last_id := r.id; seen := seen + 1;
        IF r.status <> 'waiting' AND r.updated_at < cutoff
           AND NOT (r.kind = 'digest'
                    AND (EXISTS (SELECT FROM novu.step_runs x WHERE x.digest_id = r.id AND x.status = 'waiting')
                         OR EXISTS (SELECT FROM novu.deliveries d
                                     WHERE d.digest_id = r.id AND d.status IN ('pending', 'sending')))) THEN
            ids := ids || r.id;
        END IF;
        IF cardinality(ids) >= p_limit OR seen >= 2 * p_limit THEN
            done := false;
            EXIT;
        END IF;
    END LOOP;
    UPDATE novu.housekeeping_cursor SET after_id = CASE WHEN done THEN 0 ELSE last_id END WHERE table_name = 'step_runs';
    DELETE FROM novu.step_runs WHERE id IN (
        SELECT x.id FROM novu.step_runs x WHERE x.id = ANY (ids) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;

    -- subscriber deletions older than the retention that no outbox row still
    -- waiting for its fan-out predates
    DELETE FROM novu.subscriber_deletions x WHERE x.subscriber_id IN (
        SELECT d.subscriber_id FROM novu.subscriber_deletions d
         WHERE d.deleted_at < cutoff
           AND d.last_event_id < COALESCE((SELECT min(e.id) FROM novu.events e
                                            WHERE e.status IN ('pending', 'processing')), 9223372036854775807)
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- digest key locks nobody holds now (made again when needed); not history,
    -- not counted
    DELETE FROM novu.digest_locks x WHERE x.key_hash IN (
        SELECT l.key_hash FROM novu.digest_locks l FOR UPDATE SKIP LOCKED LIMIT p_limit);
    RETURN total;
END
$$;
COMMENT ON FUNCTION novu._housekeeping(interval, integer) IS 'Internal (workers): delete finished messages, activity and outbox rows older than the retention (each table walked by id from where the last call stopped, a bounded number of rows each), and subscriber deletions no pending trigger predates; returns how many';

-- The queue tables' statistics, kept up with a burst.  A queue drained to
-- empty and vacuumed has reltuples = 0 over its old pages, and the planner then
-- believes the table empty however many rows arrive, until autovacuum's next
-- ANALYZE (a minute or more later): every plan of the workers' keyed
-- statements costs the same, and a claim of 500 rows was once planned as a
-- nested loop over the whole table, 7 s instead of 20 ms.  The workers call
-- this when they start work and then at most once a second; it analyzes a
-- table only when it holds far more live rows than its statistics say.
-- SECURITY DEFINER because ANALYZE needs the tables' owner; it takes no
-- argument and evaluates nothing the caller controls.
CREATE FUNCTION novu._refresh_queue_stats() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a quick look, on the workers' path: the planner needs the tables' sizes and
-- the shape of the queue columns, not fine histograms (autovacuum's ANALYZE
-- brings those).  A sample of 3,000 rows instead of 30,000: 20,000 deliveries
-- took 211 ms to analyze, now 33 ms.
SET default_statistics_target = 10
-- the count of waiting steps below reads a partial index, never the table
SET enable_seqscan = off
AS $$
DECLARE
    t regclass;
    analyzed integer := 0;
    believed double precision;
BEGIN
    FOREACH t IN ARRAY ARRAY['novu.events'::regclass, 'novu.deliveries'::regclass] LOOP
        -- one worker analyzes a table at a time, the others go on: the lock
        -- ANALYZE takes, tried (a VACUUM running on the table, a DBA's never
        -- canceled for us, does not hold the worker up either; the next check
        -- tries again).  Not an advisory lock: any role could hold one.
        IF pg_stat_get_live_tuples(t) > 2 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = t), 0) + 1000 THEN
            BEGIN
                IF t = 'novu.events'::regclass THEN
                    LOCK TABLE novu.events IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
                    ANALYZE novu.events (id, transaction_id, status, kind);
                ELSE
                    LOCK TABLE novu.deliveries IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
                    ANALYZE novu.deliveries;
                END IF;
                analyzed := analyzed + 1;
            EXCEPTION WHEN lock_not_available THEN
                NULL;
            END;
        END IF;
    END LOOP;
    -- The engine's waiting steps.  What matters is how many are waiting, not
    -- the table's size: analyzed while none waited (empty, or only done
    -- steps), the partial indexes on waiting steps look empty, and the look-up
    -- of a digest window by its key (novu._start, novu._digest_join) was
    -- planned through the due-time index, reading every waiting step per
    -- event: 100,000 events over 10,000 keys fanned out at 1,431/s instead of
    -- 8,817/s.  Counted only up to twice the belief plus 1,000, and only while
    -- the belief is small (a large one already keeps the planner off that path).
    -- A few waiting steps in a long history of done ones may escape a sample:
    -- this table's is 30,000 rows, and it is analyzed again only after 1,000
    -- rows and a thousandth of the table changed (not once a second on a
    -- belief that its sample cannot correct).
    believed := GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'novu.step_runs_due_idx'::regclass), 0);
    IF believed < 1000
       AND pg_stat_get_mod_since_analyze('novu.step_runs'::regclass)
           > 1000 + 0.001 * GREATEST((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'novu.step_runs'::regclass), 0)
       AND (SELECT count(*) FROM (SELECT FROM novu.step_runs x WHERE x.status = 'waiting'
                                   LIMIT (2 * believed + 1001)::bigint) w) > 2 * believed + 1000 THEN
        BEGIN
            LOCK TABLE novu.step_runs IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
            PERFORM set_config('default_statistics_target', '100', true);
            ANALYZE novu.step_runs;
            analyzed := analyzed + 1;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END IF;
    RETURN analyzed;
END
$$;
COMMENT ON FUNCTION novu._refresh_queue_stats() IS 'Worker helper: ANALYZE the outbox and the delivery queue when they hold far more rows than their statistics say, and the engine''s steps when far more wait than the statistics say';

------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC, then per role
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA novu FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA novu FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA novu FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    novu.identify(text, jsonb),
    novu.update_subscriber(text, jsonb),
    novu.get_subscriber(text),
    novu.delete_subscriber(text),
    novu.list_subscribers(integer, integer),
    novu.bulk_identify(jsonb),
    novu.set_online_status(text, boolean),
    novu.import_subscribers(),
    novu.set_credentials(text, text, jsonb, text),
    novu.add_credentials(text, text, jsonb, text),
    novu.remove_device_token(text, text, text, text),
    novu.delete_credentials(text, text, text),
    novu.trigger(text, jsonb, jsonb, jsonb, text, jsonb),
    novu.bulk_trigger(jsonb),
    novu.broadcast(text, jsonb, jsonb, text),
    novu.cancel(text),
    novu.trigger_on_row(),
    novu.render(text, jsonb),
    novu.get_workflow(text),
    novu.get_preferences(text),
    novu.set_preference(text, text, boolean, jsonb),
    novu.notification_stats(),
    novu.create_topic(text, text),
    novu.get_topic(text),
    novu.list_topics(integer, integer),
    novu.rename_topic(text, text),
    novu.delete_topic(text),
    novu.add_topic_subscribers(text, jsonb),
    novu.remove_topic_subscribers(text, jsonb),
    novu.topic_subscribers(text, integer, integer),
    novu.feed(text, integer, integer, boolean, boolean, jsonb),
    novu.unseen_count(text, boolean, integer),
    novu.mark_as(text, jsonb, jsonb),
    novu.mark_all_as(text, jsonb, text),
    novu.mark_seen(text, text),
    novu.mark_action(text, text, text, text, jsonb),
    novu.list_notifications(jsonb, jsonb, jsonb, text, integer, text),
    novu.get_notification(text),
    novu.notification_graph_stats(integer),
    novu.list_messages(text, text, jsonb, integer, integer),
    novu.delete_message(text),
    novu.delete_messages(text)
TO novu_app;

GRANT EXECUTE ON FUNCTION
    novu.create_integration(text, jsonb, text, text, boolean),
    novu.update_integration(text, jsonb),
    novu.delete_integration(text),
    novu.list_integrations(),
    novu.create_workflow(text, jsonb, text, boolean, boolean),
    novu.update_workflow(text, jsonb),
    novu.delete_workflow(text)
TO novu_admin;

GRANT SELECT ON novu.subscribers, novu.subscriber_channels, novu.device_tokens, novu.workflows,
                novu.preferences, novu.messages, novu.notifications, novu.execution_details, novu.stat_providers,
                novu.subscriber_import_rejects, novu.topics, novu.topic_subscribers, novu.in_app_messages
    TO novu_app;
GRANT INSERT, SELECT ON novu.subscriber_import TO novu_app;
GRANT USAGE ON SEQUENCE novu.subscriber_import_line_seq TO novu_app;
GRANT DELETE ON novu.subscriber_import_rejects TO novu_app;
GRANT SELECT ON novu.integrations, novu.events, novu.deliveries, novu.provider_stats, novu.stat_providers TO novu_admin;
GRANT SELECT ON novu.step_runs, novu.digest_events, novu.subscriber_deletions TO novu_admin;

-- The delivery workers: only what delivery needs (read the model, write the queue
-- and the history, prune dead tokens).
GRANT SELECT ON novu.integrations, novu.subscribers, novu.subscriber_channels, novu.workflows,
                novu.preferences, novu.topics, novu.topic_subscribers
    TO novu_worker;
GRANT SELECT, DELETE ON novu.device_tokens TO novu_worker;
-- (the prune locks dead tokens FOR UPDATE SKIP LOCKED, which takes an UPDATE privilege)
GRANT UPDATE (created_at) ON novu.device_tokens TO novu_worker;
-- the fan-out creates missing recipients (an empty profile: the key only)
GRANT INSERT (subscriber_id) ON novu.subscribers TO novu_worker;
-- (the in-app sink locks its subscribers FOR KEY SHARE SKIP LOCKED, which takes an UPDATE privilege)
GRANT UPDATE (updated_at) ON novu.subscribers TO novu_worker;
GRANT SELECT, DELETE ON novu.subscriber_deletions TO novu_worker;
GRANT UPDATE (deleted_at) ON novu.subscriber_deletions TO novu_worker;   -- housekeeping locks (SKIP LOCKED) what it deletes
GRANT UPDATE (webhook_url, updated_at) ON novu.subscriber_channels TO novu_worker;
GRANT SELECT, UPDATE, DELETE ON novu.events TO novu_worker;
-- the claim floor reads its last value (src/queue/floor.c)
GRANT SELECT ON novu.events_id_seq TO novu_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON novu.deliveries TO novu_worker;
GRANT SELECT, INSERT, DELETE ON novu.execution_details TO novu_worker;
GRANT SELECT, INSERT, UPDATE ON novu.provider_stats TO novu_worker;
GRANT SELECT, INSERT ON novu.in_app_messages TO novu_worker;
GRANT USAGE ON SEQUENCE novu.deliveries_id_seq, novu.execution_details_id_seq TO novu_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON novu.step_runs, novu.digest_events TO novu_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON novu.digest_locks TO novu_worker;
GRANT SELECT, UPDATE ON novu.housekeeping_cursor TO novu_worker;
GRANT USAGE ON SEQUENCE novu.step_runs_id_seq TO novu_worker;
GRANT EXECUTE ON FUNCTION
    novu._expand(text[], text[], text[], integer, integer, integer[], bigint[], jsonb[]),
    novu._fanout(integer, integer, integer, integer, integer, bigint),
    novu._start(text[], text[], text[], integer, integer),
    novu._advance(text[], text[], text[], integer[], bigint[], integer, integer),
    novu._continue(integer, integer, integer),
    novu._run_steps(bigint[], integer, integer),
    novu._lock_digest_keys(integer[]),
    novu._digest_key(jsonb, jsonb),
    novu._digest_join(text, bigint, text, text, integer, jsonb, jsonb),
    novu._older_in_flight(bigint, text, text, integer, jsonb, text),
    novu._digest_keys(text[], text[], text[], integer[]),
    novu._window_wait(),
    novu._digest_context(bigint),
    novu._filters_pass(jsonb, jsonb, jsonb, jsonb, boolean, timestamptz, text, text),
    novu._filter_matches(jsonb, text, jsonb),
    novu._previous_step_state(text, text, integer),
    novu._step_id(jsonb, integer),
    novu._step_interval(jsonb, jsonb),
    novu._payload_path(text),
    novu._delay_time(text),
    novu._plain_after(jsonb, integer),
    novu._digest_first(text[], text[], text[]),
    novu._iso(timestamptz),
    novu._profile(text, text, text, text, text, text, text, text, jsonb),
    novu._take_events(tid[]),
    novu._create_subscribers(text[]),
    novu._topic_chunk(text[], text[], text, text, integer),
    novu._record(integer, bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], bigint[], text[], bigint[]),
    novu._claim_receipts(integer, integer),
    novu._claim_groups(integer, integer[], boolean, timestamptz),
    novu._set_request_keys(bigint[], integer[], text[]),
    novu._record_receipts(integer, bigint[], text[], text[], bigint[], text[], bigint[], text[]),
    novu._housekeeping(interval, integer),
    novu._refresh_queue_stats(),
    novu._store_in_app(bigint[], integer[], text[], text[], text[]),
    novu._notify_in_app(text)
TO novu_worker;
