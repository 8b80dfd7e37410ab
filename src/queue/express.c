/*
 * express.c
 *		The fan-out of a few plain triggers in one prepared statement.
 *
 * A commit's wake-up usually brings one trigger or a few.  novu._fanout
 * handles any outbox row (broadcasts, topics, staged workflows, missing
 * subscribers, preferences, skipped steps) through a chain of plpgsql
 * functions (_fanout, _take_events, _start, _expand); for a lone trigger that
 * chain's fixed cost (executor start-up of each statement, a subtransaction,
 * the rows copied at every level) is most of the work: about 0.55 ms against
 * 0.2 ms for the same rows written by one statement (pgbench, one client,
 * trigger then claim, alternating).
 *
 * The express statement takes at most EXPRESS_MAX pending triggers (FOR
 * UPDATE SKIP LOCKED, from the worker's floor) and writes their messages only
 * if every one of them is the plain case, where both ways write the same rows:
 *   - no broadcast or topic trigger is waiting (those go first, by chunks),
 *   - its workflow exists and has push steps only, none staged (no delay,
 *     digest or step filter),
 *   - each recipient exists and has no preference row,
 *   - each recipient has a device token for each step (no skipped message),
 *   - all the messages fit in the lease limit (each is leased at once).
 * (A trigger set aside, see novu._create_subscribers, is left to
 * novu._fanout, which takes it once its retry_at has come.)
 * Then the triggers are marked processed and the messages inserted leased to
 * this worker ("sending", attempt 1), as _expand does; the rows come back in
 * _fanout's shape, and a row without a message id carries the number of triggers taken.
 * With no trigger waiting it returns 0, unless a broadcast or topic trigger
 * waits.  Otherwise it writes nothing and says so (-1); the rows it locked stay
 * locked by this transaction, and novu._fanout, called next in the same
 * transaction, takes them (SKIP LOCKED skips only other transactions' locks).
 *
 * An error in the statement aborts the claim's transaction like any claim
 * error; the worker then leaves the express way alone for a while
 * (queue_express_failed), so the general fan-out, which isolates a bad
 * trigger, handles the rows.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/timestamp.h"

#include "novu.h"
#include "queue/queue.h"

/* At most this many triggers per express fan-out (the plan is made for a few). */
#define EXPRESS_MAX				16
/* Fan-outs that skip the express way after it declined, then after it failed (ms). */
#define EXPRESS_DECLINED_SKIP	16
#define EXPRESS_FAILED_MS		60000

static SPIPlanPtr express_plan = NULL;

/* Fan-outs left before the express way is tried again after it declined. */
static int	declined_skip = 0;

/* Until when the express way stays off after an error in it. */
static TimestampTz failed_until = 0;

/* Whether the express statement is running (an error now is its own). */
static bool running = false;

/*
 * The statement.  $1 the worker's floor (bigint), $2 the lease limit, $3 the
 * lease in milliseconds.  Every join goes from the few rows claimed to a
 * primary key or a subscriber's tokens, and each is written so that it can
 * only be a probe per row: a lateral subquery with OFFSET 0, an EXISTS with
 * LIMIT 1.  The generic plan is made on whatever statistics the tables have
 * then, and a join the planner may turn around was planned, with the
 * outbox's statistics of a burst, as a hash of every device token (300,000,
 * 155 ms per call), and an EXISTS as a hash of every preference row.  The
 * claim's LIMIT is a constant for the same reason.  A step without a device
 * token is a row of x with a NULL token (a left join; a scan of x finds it),
 * not an anti-join of two CTEs, which grows with the square of the rows.  The
 * outbox rows are found again by key and updated by tuple id, as novu._record
 * does (a join on the key alone was planned as a scan of every pending row).
 * Planned once, generic: a custom plan costs 4 ms to make.
 */
static const char express_sql[] =
"WITH c AS MATERIALIZED ("
"  SELECT e.id, e.transaction_id, e.workflow_id, e.recipients, e.payload, e.overrides, e.actor"
"    FROM novu.events e"
"   WHERE e.status = 'pending' AND e.kind = 'trigger'"
"     AND e.retry_at IS NULL"
"     AND e.id >= LEAST($1, (SELECT q.last_value FROM novu.events_id_seq q))"
"   ORDER BY e.id LIMIT " CppAsString2(EXPRESS_MAX)
"     FOR UPDATE SKIP LOCKED),"
" t AS MATERIALIZED ("
"  SELECT c.transaction_id, c.workflow_id, r.s AS subscriber_id, (st.n - 1)::integer AS step_index,"
"         st.step -> 'providers' AS providers"
"    FROM c"
"    CROSS JOIN LATERAL (SELECT w.steps FROM novu.workflows w"
"                         WHERE w.workflow_id = c.workflow_id"
"                           AND pg_catalog.jsonb_typeof(w.steps) = 'array' AND NOT w.staged OFFSET 0) w"
"    CROSS JOIN LATERAL pg_catalog.unnest(c.recipients) AS r(s)"
"    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(w.steps) WITH ORDINALITY AS st(step, n)),"
" x AS MATERIALIZED ("
"  SELECT t.transaction_id, t.workflow_id, t.subscriber_id, t.step_index,"
"         k.integration_id, k.provider_id, k.identifier, k.device_token"
"    FROM t"
"    LEFT JOIN LATERAL ("
"      SELECT d.integration_id, ig.provider_id, ig.identifier, d.device_token"
"        FROM novu.device_tokens d"
"        JOIN novu.integrations ig ON ig.id = d.integration_id"
"       WHERE d.subscriber_id = t.subscriber_id AND ig.active AND ig.channel = 'push'"
"         AND (t.providers IS NULL OR t.providers ? ig.provider_id) OFFSET 0) k ON true),"
" h AS MATERIALIZED ("
"  SELECT (SELECT pg_catalog.count(*) FROM c)::integer AS claimed,"
"         EXISTS (SELECT FROM novu.events b"
"                  WHERE b.kind <> 'trigger' AND b.status IN ('pending', 'processing')"
"                    AND (b.retry_at IS NULL OR b.retry_at <= pg_catalog.now())) AS chunked),"
" chk AS MATERIALIZED ("
"  SELECT h.claimed, h.chunked,"
"         h.claimed > 0 AND NOT h.chunked"
"     AND (SELECT pg_catalog.count(*) FROM x) <= $2"
"     AND NOT EXISTS (SELECT FROM x WHERE x.device_token IS NULL)"
"     AND NOT EXISTS (SELECT FROM c LEFT JOIN LATERAL (SELECT v.workflow_id, v.staged, v.steps"
"                                                    FROM novu.workflows v"
"                                                   WHERE v.workflow_id = c.workflow_id OFFSET 0) w ON true"
"                      WHERE w.workflow_id IS NULL OR w.staged"
"                         OR pg_catalog.jsonb_typeof(w.steps) IS DISTINCT FROM 'array'"
"                         OR pg_catalog.jsonb_array_length(w.steps) = 0"
"                         OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(w.steps) AS s(step)"
"                                     WHERE s.step ->> 'type' IS DISTINCT FROM 'push'))"
"     AND NOT EXISTS (SELECT FROM c CROSS JOIN LATERAL pg_catalog.unnest(c.recipients) AS r(s)"
"                      WHERE NOT EXISTS (SELECT FROM novu.subscribers z WHERE z.subscriber_id = r.s LIMIT 1)"
"                         OR EXISTS (SELECT FROM novu.preferences p WHERE p.subscriber_id = r.s LIMIT 1))"
"         AS ok"
"    FROM h),"
" taken AS ("
"  UPDATE novu.events ev SET status = 'processed', processed_at = pg_catalog.now()"
"    FROM c CROSS JOIN LATERAL (SELECT y.ctid AS tid FROM novu.events y"
"                                WHERE y.transaction_id = c.transaction_id OFFSET 0) l"
"   WHERE ev.ctid = l.tid AND ev.status = 'pending' AND (SELECT chk.ok FROM chk)"
"  RETURNING ev.id),"
" ins AS ("
"  INSERT INTO novu.deliveries (id, transaction_id, workflow_id, subscriber_id, step_index, channel,"
"                               integration_id, provider_id, integration_identifier, device_token,"
"                               status, attempts, claimed_by, lease_until)"
"  SELECT pg_catalog.nextval('novu.deliveries_id_seq'), x.transaction_id, x.workflow_id, x.subscriber_id,"
"         x.step_index, 'push', x.integration_id, x.provider_id, x.identifier, x.device_token,"
"         'sending', 1, pg_catalog.pg_backend_pid(), pg_catalog.now() + $3 * interval '1 millisecond'"
"    FROM x WHERE (SELECT chk.ok FROM chk)"
"  RETURNING id, transaction_id, workflow_id, subscriber_id, step_index, device_token, integration_id)"
" SELECT i.id, 1, i.transaction_id, i.workflow_id, i.subscriber_id, i.device_token, i.integration_id,"
"        c.payload, c.overrides, c.actor, w.steps -> i.step_index,"
"        i.workflow_id || '/' || i.step_index || '/' || w.updated_at,"
"        novu._profile(s.subscriber_id, s.first_name, s.last_name, s.email, s.phone, s.avatar, s.locale,"
"                      s.timezone, s.data),"
"        NULL::integer"
"   FROM ins i"
"   JOIN c ON c.transaction_id = i.transaction_id"
"   CROSS JOIN LATERAL (SELECT v.steps, v.updated_at FROM novu.workflows v"
"                        WHERE v.workflow_id = i.workflow_id OFFSET 0) w"
"   CROSS JOIN LATERAL (SELECT u.subscriber_id, u.first_name, u.last_name, u.email, u.phone, u.avatar,"
"                              u.locale, u.timezone, u.data"
"                         FROM novu.subscribers u WHERE u.subscriber_id = i.subscriber_id OFFSET 0) s"
" UNION ALL"
" SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
"        CASE WHEN chk.ok THEN chk.claimed WHEN chk.claimed = 0 AND NOT chk.chunked THEN 0 ELSE -1 END"
"   FROM chk";

/*
 * Whether to try the express way for this fan-out: not while it is off after
 * an error, nor for a few fan-outs after it declined (a workload of staged
 * workflows or unknown subscribers would pay for it every time).
 */
bool
queue_express_wanted(void)
{
	if (failed_until != 0)
	{
		if (GetCurrentTimestamp() < failed_until)
			return false;
		failed_until = 0;
	}
	if (declined_skip > 0)
	{
		declined_skip--;
		return false;
	}
	return true;
}

/*
 * Run the express fan-out in the current transaction.  Returns the number of
 * triggers taken, with their leased messages and the count row in
 * SPI_tuptable (_fanout's shape), or -1 if it wrote nothing (the general
 * fan-out is to run).
 */
int
queue_express_fanout(int64 floor, int lease_limit, int lease_ms)
{
	Oid			argtypes[3] = {INT8OID, INT4OID, INT4OID};
	Datum		values[3];
	bool		isnull;
	Datum		d;
	int			n;
	uint64		i;

	values[0] = Int64GetDatum(floor);
	values[1] = Int32GetDatum(lease_limit);
	values[2] = Int32GetDatum(lease_ms);
	running = true;
	novu_prepare_generic_once(&express_plan, express_sql, 3, argtypes);
	if (SPI_execute_plan(express_plan, values, NULL, false, 0) != SPI_OK_SELECT || SPI_processed < 1)
		elog(ERROR, "novu: express fan-out failed");
	running = false;
	/* the count row is the one without a message id */
	n = -1;
	for (i = 0; i < SPI_processed; i++)
	{
		(void) SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			continue;
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 14, &isnull);
		n = isnull ? -1 : DatumGetInt32(d);
	}
	if (n < 0)
		declined_skip = EXPRESS_DECLINED_SKIP;
	return n;
}

/* Whether an express fan-out took as many triggers as it can (more may wait). */
bool
queue_express_full(int taken)
{
	return taken >= EXPRESS_MAX;
}

/* After an error in the claim: if it was the express statement's, leave the express way off for a while. */
void
queue_express_failed(void)
{
	if (running)
	{
		running = false;
		failed_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), EXPRESS_FAILED_MS);
	}
}
