/*
 * novu--0.8.0--0.9.0.sql
 *		Upgrade from 0.8.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.9.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.8.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.9.0'" to load this file. \quit

-- Retried OneSignal requests are the request they retry (issue 11): the key of the
-- request a message went out in, written before it is first sent, and the claim takes
-- a request's messages together (novu._claim_groups).
ALTER TABLE novu.deliveries ADD COLUMN request_key text COLLATE "C";
CREATE INDEX deliveries_request_idx ON novu.deliveries (request_key)
    WHERE request_key IS NOT NULL AND status IN ('pending', 'sending');
CREATE INDEX deliveries_request_due_idx ON novu.deliveries (next_attempt_at)
    WHERE request_key IS NOT NULL AND status = 'pending';

-- Retries of requests with an idempotency key (ProviderOps.request_key: OneSignal).
-- A request whose answer was lost may have been processed, and the provider
-- deduplicates only the same key: a retry must be that request again, the same
-- messages with the same key.  A part of it, or it merged with others, would be
-- another key, delivered again to the ids that had it.  So the claim (queue.c)
-- takes the messages of such a request that are not final yet together or not at
-- all: only when every one of them is due (pending and due, its lease expired, or
-- with p_recover leased before p_orphan_before by a worker not in p_pids), by one
-- worker at a time (a transaction advisory lock on the key, tried, never waited
-- for), all of them locked here (FOR UPDATE SKIP LOCKED: else none).  Requests go
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
AS $$
BEGIN
    IF p_limit <= 0 THEN
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
    chosen AS MATERIALIZED (
        -- oldest first, while those before hold fewer than p_limit messages; each
        -- by one worker (the lock is tried only for a request that is taken)
        SELECT c.request_key, c.size
          FROM (SELECT r.request_key, r.size,
                       sum(r.size) OVER (ORDER BY r.due_at, r.request_key) - r.size AS before
                  FROM requests r WHERE r.ready) c
         WHERE CASE WHEN c.before < p_limit
                    THEN pg_try_advisory_xact_lock(hashtextextended(c.request_key, 0)) ELSE false END
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
    UPDATE novu.deliveries d SET request_key = r.key
      FROM unnest(p_ids, p_attempts, p_keys) WITH ORDINALITY AS r(id, attempts, key, i)
     WHERE d.id = r.id AND d.attempts = r.attempts AND d.status = 'sending'
    RETURNING r.i::integer
$$;
COMMENT ON FUNCTION novu._set_request_keys(bigint[], integer[], text[]) IS 'Internal (workers): record the idempotency key of a request on its messages before it is first sent';
REVOKE ALL ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION novu._set_request_keys(bigint[], integer[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION novu._claim_groups(integer, integer[], boolean, timestamptz),
                          novu._set_request_keys(bigint[], integer[], text[]) TO novu_worker;
