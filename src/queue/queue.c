/*
 * queue.c
 *		The delivery workers' statements on the outbox tables.
 *
 * Each function is one short transaction around statements prepared once per
 * worker: fan out new triggers, claim a batch of due messages (leasing them, FOR
 * UPDATE SKIP LOCKED so workers never collide), record a batch of results with
 * arrays in one statement, and delete old history.  No network I/O happens
 * while any of these transactions is open.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "novu.h"
#include "queue/queue.h"
#include "common/shmem.h"
#include "queue/work.h"

/* A pending message this many attempts past novu.max_attempts fails at its claim. */
#define LAST_ATTEMPT_EXTRA	CppAsString2(SPLIT_EXTRA_ATTEMPTS)
/* A claim that found due rows and could take none tries again after at most this (ms). */
#define DUE_BUT_LOCKED_RETRY_MS	200

/* Claims in a row that found due rows and could take none (see queue_claim). */
static int	empty_due_claims = 0;
/* Rows per table in one housekeeping transaction (see novu_housekeeping). */
#define HOUSEKEEPING_LIMIT	1000
/* Housekeeping time per call while a backlog remains (ms). */
#define HOUSEKEEPING_BUDGET_MS	100

static Datum int4_array(int32 *values, int n);

static SPIPlanPtr fanout_plan = NULL;
static SPIPlanPtr continue_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr integrations_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr housekeeping_plan = NULL;
static SPIPlanPtr step_due_plan = NULL;
static SPIPlanPtr refresh_stats_plan = NULL;
static SPIPlanPtr claim_receipts_plan = NULL;
static SPIPlanPtr record_receipts_plan = NULL;
static SPIPlanPtr store_in_app_plan = NULL;
static SPIPlanPtr request_keys_plan = NULL;

/* Copy a jsonb column of the current SPI row into the outer context, or NULL. */
static Jsonb *
copy_jsonb(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	MemoryContext old;
	Jsonb	   *result;

	if (isnull)
		return NULL;
	old = MemoryContextSwitchTo(novu_work_outer_context());
	result = DatumGetJsonbPCopy(d);
	MemoryContextSwitchTo(old);
	return result;
}

/* Copy a text column of the current SPI row into the outer context, or NULL. */
static char *
copy_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	MemoryContext old;
	char	   *result;

	if (isnull)
		return NULL;
	old = MemoryContextSwitchTo(novu_work_outer_context());
	result = TextDatumGetCString(d);
	MemoryContextSwitchTo(old);
	return result;
}

static void record_in_tx(ResultBatch *rb);

/*
 * Values shared by the messages of one claim: a trigger to a subscriber with
 * many devices becomes many messages, and each holding its own copy of the
 * payload, overrides, actor, step and profile made the worker's memory grow
 * with the device count (DESIGN 5: bounded per message).  Keyed by kind and
 * key: the event's transactionId, the step key, the subscriberId.
 */
#define SHARED_KEY_LEN		(NOVU_MAX_ID_LEN + 64)

typedef struct SharedValue
{
	char		key[SHARED_KEY_LEN];
	Jsonb	   *value;
} SharedValue;

static int	integrations_in_tx(int64 *ids, int n, IntegrationRow **rows);
static int	claimed_integrations_in_tx(ClaimedRow *claimed, int n, IntegrationRow **rows);

/* Values already read in the current claim (NULL outside queue_claim). */
static HTAB *claim_shared = NULL;

/* Bytes of event data held by the current claim. */
static Size claim_bytes = 0;

/* Begin sharing values among the rows of one claim (in the outer context). */
static void
claim_share_begin(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = SHARED_KEY_LEN;
	ctl.entrysize = sizeof(SharedValue);
	ctl.hcxt = novu_work_outer_context();
	claim_shared = hash_create("novu claimed values", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	claim_bytes = 0;
}

/*
 * A jsonb column of the current SPI row, copied into the outer context once
 * per (kind, key) in a claim; a NULL key is never shared.
 */
static Jsonb *
shared_jsonb(HeapTuple tup, TupleDesc desc, int col, char kind, const char *key)
{
	char		k[SHARED_KEY_LEN];
	SharedValue *sv;
	bool		found;

	if (claim_shared == NULL || key == NULL || strlen(key) + 2 >= SHARED_KEY_LEN)
		return copy_jsonb(tup, desc, col);
	k[0] = kind;
	k[1] = ':';
	strlcpy(k + 2, key, SHARED_KEY_LEN - 2);
	sv = hash_search(claim_shared, k, HASH_ENTER, &found);
	if (!found)
	{
		sv->value = copy_jsonb(tup, desc, col);
		claim_bytes += sv->value ? VARSIZE(sv->value) : 0;
	}
	return sv->value;
}

/*
 * Copy one claimed message (columns 1..13 of the fan-out and claim results:
 * id, attempts, transaction, workflow, subscriber, token, integration,
 * payload, overrides, actor, step, step key, subscriber profile).
 */
static void
read_claimed(ClaimedRow *r, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d;

	r->msg = MemoryContextAllocZero(novu_work_outer_context(), sizeof(Message));
	r->msg->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	r->msg->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	r->msg->transaction_id = copy_text(tup, desc, 3);
	r->msg->workflow_id = copy_text(tup, desc, 4);
	r->msg->subscriber_id = copy_text(tup, desc, 5);
	r->msg->target = copy_text(tup, desc, 6);
	r->msg->retry_after = -1;
	d = SPI_getbinval(tup, desc, 7, &isnull);
	r->integration_id = isnull ? 0 : DatumGetInt64(d);
	r->payload = shared_jsonb(tup, desc, 8, 'p', r->msg->transaction_id);
	r->trigger_overrides = shared_jsonb(tup, desc, 9, 'o', r->msg->transaction_id);
	r->actor = shared_jsonb(tup, desc, 10, 'a', r->msg->transaction_id);
	r->step_key = copy_text(tup, desc, 12);
	r->step = shared_jsonb(tup, desc, 11, 's', r->step_key);
	r->subscriber = shared_jsonb(tup, desc, 13, 'u', r->msg->subscriber_id);
}

/* Bytes of shared values (payload, overrides, actor, step, profile) the last claim holds. */
Size
queue_last_claim_bytes(void)
{
	return claim_bytes;
}

/* Make room for more claimed rows in the outer context. */
static ClaimedRow *
grow_claimed(ClaimedRow *rows, int have, int more)
{
	if (rows == NULL)
		return MemoryContextAllocZero(novu_work_outer_context(), sizeof(ClaimedRow) * Max(more, 1));
	rows = repalloc(rows, sizeof(ClaimedRow) * (have + more));
	memset(rows + have, 0, sizeof(ClaimedRow) * more);
	return rows;
}

/*
 * Append the leased messages of a fan-out's or a continuation's result
 * (SPI_tuptable, _fanout's shape) to *rows; returns the count its row without
 * a message carries.
 */
static int
read_leased_rows(ClaimedRow **rows, int *nrows)
{
	int			handled = 0;
	int			n = (int) SPI_processed;
	int			i;

	*rows = grow_claimed(*rows, *nrows, n);
	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		(void) SPI_getbinval(tup, desc, 1, &isnull);
		if (isnull)
		{
			/* the row without a message carries the count of outbox rows handled */
			handled = DatumGetInt32(SPI_getbinval(tup, desc, 14, &isnull));
			continue;
		}
		read_claimed(&(*rows)[(*nrows)++], tup, desc);
	}
	return handled;
}

/*
 * Fan out pending triggers (and one broadcast chunk), in the current
 * transaction.  The first lease_limit messages come back leased to this
 * worker and are appended to *rows; returns the outbox rows handled.
 *
 * A few plain triggers (the usual commit's wake-up) go by the express
 * statement (express.c); anything else, or more, by novu._fanout.  Not while
 * a backlog is being worked through: the last general fan-out here took as
 * many rows as it could.
 *
 * The express statement takes new triggers only: a trigger set aside
 * (novu._create_subscribers) comes back by the general fan-out alone, once
 * its retry_at has come.  So the general one also runs after the express one
 * when it has not run for half a poll interval: with a commit every moment,
 * all of them express, a set-aside trigger still comes due within about a
 * poll of its time, instead of waiting until a trigger the express way
 * declines comes along (for good, on a database where none does).
 */
static int
fanout_in_tx(int lease_limit, int lease_ms, ClaimedRow **rows, int *nrows)
{
	static bool backlog = false;
	static TimestampTz general_at = 0;
	TimestampTz now = GetCurrentTimestamp();
	Oid			argtypes[6] = {INT4OID, INT4OID, INT4OID, INT4OID, INT4OID, INT8OID};
	Datum		values[6];
	int			handled = 0;
	int			before = *nrows;

	/* where the claim's scan of the pending triggers starts (queue/floor.c) */
	queue_floor_update();
	if (!backlog && lease_limit > 0 && queue_express_wanted())
	{
		int			taken = queue_express_fanout(queue_floor(), lease_limit, lease_ms);

		if (taken >= 0)
		{
			(void) read_leased_rows(rows, nrows);
			if (!queue_express_full(taken) && general_at <= now &&
				!TimestampDifferenceExceeds(general_at, now, novu_poll_interval / 2))
				return taken;
			/* as many as it takes, and the set-aside ones: by the general fan-out */
			handled = taken;
			lease_limit = Max(lease_limit - (*nrows - before), 0);
		}
	}

	/*
	 * Fan out as many outbox rows as this claim leases messages: every
	 * message of a one-device trigger comes back leased from the insert that
	 * creates it.  (Fanning out more left the rest pending, and claiming
	 * those later cost a second update of each row, about a sixth of the
	 * queue's work per message; the other workers fan out their own share.)
	 */
	values[0] = Int32GetDatum(Max(lease_limit, 1));
	values[1] = Int32GetDatum(lease_limit);
	values[2] = Int32GetDatum(lease_ms);
	values[3] = Int32GetDatum(novu_worker_slot);
	values[4] = Int32GetDatum(novu_workers);
	values[5] = Int64GetDatum(queue_floor());
	general_at = now;
	novu_prepare_once(&fanout_plan, "SELECT * FROM novu._fanout($1, $2, $3, $4, $5, $6)", 6, argtypes);
	if (SPI_execute_plan(fanout_plan, values, NULL, false, 0) != SPI_OK_SELECT || SPI_processed < 1)
		elog(ERROR, "novu: fan-out failed");
	{
		int			general = read_leased_rows(rows, nrows);

		backlog = (general >= Max(lease_limit, 1));
		handled += general;
	}
	return handled;
}

/*
 * Go on with delays and digest windows that are due (novu._continue: claimed
 * FOR UPDATE SKIP LOCKED, at most limit of them), in the current transaction:
 * each is marked done in the transaction that creates the steps after it.
 * The first lease_limit messages they create come back leased to this worker
 * and are appended to *rows; returns the number of waiting steps handled.
 */
static int
continue_in_tx(int limit, int lease_limit, int lease_ms, ClaimedRow **rows, int *nrows)
{
	Oid			argtypes[3] = {INT4OID, INT4OID, INT4OID};
	Datum		values[3] = {Int32GetDatum(limit), Int32GetDatum(lease_limit), Int32GetDatum(lease_ms)};

	novu_prepare_once(&continue_plan, "SELECT * FROM novu._continue($1, $2, $3)", 3, argtypes);
	if (SPI_execute_plan(continue_plan, values, NULL, false, 0) != SPI_OK_SELECT || SPI_processed < 1)
		elog(ERROR, "novu: continuing due steps failed");
	/* the same shape as a fan-out's; its count row is the steps handled */
	return read_leased_rows(rows, nrows);
}

/*
 * Run a prepared query of one bigint, milliseconds until something is due:
 * at least 0, or none_ms when it is NULL (nothing due).  Not read-only: it
 * must see what the current transaction recorded and created.
 */
static long
ms_until(SPIPlanPtr plan, long none_ms)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute_plan(plan, NULL, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "novu: next-due query failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? none_ms : (long) Max(DatumGetInt64(d), 0);
}

/*
 * One short transaction of the pipeline: record the results given (if any),
 * fan out new triggers (if asked; *fanned says how many outbox rows; their
 * first messages come back leased), then, if claim_due (or once after a
 * worker started or stopped), claim due messages up to limit in all: pending
 * and due, or leased with the lease expired, or leased by a worker that no
 * longer runs.  The rows come with what their rendering needs, and their
 * integrations (*irows, *nirows: each once, read in the same transaction).
 * When nothing is due, *next_due_ms says when something will be (-2: not looked at).
 * Without claim_due, it says only when a waiting step is due, if one is: the
 * caller then moves its schedule earlier, never later.
 */
int
queue_claim(int limit, int lease_ms, ClaimedRow **rows, long *next_due_ms,
			ResultBatch *record_first, bool fanout_first, bool claim_due, int *fanned,
			IntegrationRow **irows, int *nirows)
{
	static uint32 recovered_generation = 0;
	static bool recovered_once = false;
	Oid			argtypes[6] = {INT4OID, INT4OID, INT4ARRAYOID, BOOLOID, TIMESTAMPTZOID, INT4OID};
	Datum		values[6];
	int32		pids[NOVU_MAX_WORKERS];
	int			npids;
	uint32		generation;
	TimestampTz orphan_before;
	bool		recover;
	int			n = 0;
	int			claimed = 0;
	int			i;
	ClaimedRow *result = NULL;

	claim_shared = NULL;
	novu_begin_work("novu: recording, fanning out, claiming");
	claim_share_begin();
	if (record_first != NULL)
		record_in_tx(record_first);
	*fanned = fanout_first ? fanout_in_tx(limit, lease_ms, &result, &n) : 0;

	/*
	 * Read the live workers after this transaction's snapshot, and the bound
	 * of orphaned leases ($5) before reading them: a worker that is not among
	 * them published its slot after this, so every lease it takes ends after
	 * $5, and its rows are never taken for a dead worker's.  (Taken after the
	 * read, the bound could pass the lease of a worker started meanwhile.)
	 */
	orphan_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), lease_ms);
	npids = novu_live_worker_pids(pids, &generation);
	recover = !recovered_once || generation != recovered_generation;

	/*
	 * Delays and digests that are due, when something is (their due times
	 * are in *next_due_ms), like the queue's messages: not on a commit's
	 * wake-up path.  Counted with the fan-out: more may be due.
	 */
	if (claim_due || recover)
		*fanned += continue_in_tx(limit, Max(limit - n, 0), lease_ms, &result, &n);

	/*
	 * Messages already in the queue are claimed when one is due (the caller
	 * knows when from *next_due_ms), not at every commit's wake-up: a commit
	 * brings outbox rows, whose messages the fan-out leased above.  Skipping
	 * the claim then keeps it off the commit-to-provider path.
	 */
	if (n < limit && (claim_due || recover))
	{
		values[0] = Int32GetDatum(limit - n);
		values[1] = Int32GetDatum(lease_ms);
		values[2] = int4_array(pids, npids);
		values[3] = BoolGetDatum(recover);
		values[4] = TimestampTzGetDatum(orphan_before);
		values[5] = Int32GetDatum(novu_max_attempts);

		/*
		 * A message whose lease expired was sent and never answered (the
		 * worker died, or its answer was lost): that attempt counts.  At
		 * novu.max_attempts it fails instead of being sent once more.  A
		 * pending one past any attempt it may have (novu.max_attempts lowered,
		 * a row written by hand, attempts at the integer's end) fails too.
		 *
		 * The messages of a request with an idempotency key come first, and
		 * whole (novu._claim_groups), even past the limit: a retry must be
		 * the request it retries.  The others come after, up to the limit.
		 */
		novu_prepare_once(&claim_plan,
					 "WITH g AS MATERIALIZED (SELECT novu._claim_groups($1, $3, $4, $5) AS id),"
					 " c AS ("
					 "  SELECT id, transaction_id, workflow_id, subscriber_id, step_index"
					 "    FROM novu.deliveries WHERE id = ANY (ARRAY(SELECT id FROM g))"
					 "  UNION ALL"
					 "  SELECT * FROM ("
					 "  SELECT * FROM (SELECT id, transaction_id, workflow_id, subscriber_id, step_index"
					 "     FROM novu.deliveries"
					 "    WHERE status = 'pending' AND next_attempt_at <= pg_catalog.now() AND request_key IS NULL"
					 "    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due"
					 "  UNION ALL"
					 "  SELECT * FROM (SELECT id, transaction_id, workflow_id, subscriber_id, step_index"
					 "     FROM novu.deliveries"
					 "    WHERE status = 'sending' AND lease_until < pg_catalog.now() AND request_key IS NULL"
					 "    ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED) expired"
					 "  UNION ALL"
					 "  SELECT * FROM (SELECT id, transaction_id, workflow_id, subscriber_id, step_index"
					 "     FROM novu.deliveries"
					 "    WHERE $4 AND status = 'sending' AND lease_until >= pg_catalog.now() AND lease_until < $5"
					 "      AND claimed_by <> ALL ($3) AND request_key IS NULL"
					 "    LIMIT $1 FOR UPDATE SKIP LOCKED) orphaned"
					 "  LIMIT GREATEST($1 - (SELECT pg_catalog.count(*) FROM g), 0)) others),"
					 " u AS ("
					 " UPDATE novu.deliveries d"
					 "    SET status = CASE WHEN (d.status = 'sending' AND d.attempts >= $6) OR d.attempts >= $6 + " LAST_ATTEMPT_EXTRA
					 "          THEN 'failed' ELSE 'sending' END,"
					 "        attempts = CASE WHEN (d.status = 'sending' AND d.attempts >= $6) OR d.attempts >= $6 + " LAST_ATTEMPT_EXTRA
					 "          THEN d.attempts ELSE d.attempts + 1 END,"
					 "        last_error = CASE WHEN d.status = 'sending' AND d.attempts >= $6"
					 "          THEN 'no answer after ' || d.attempts || ' attempts (lease expired)'"
					 "          WHEN d.attempts >= $6 + " LAST_ATTEMPT_EXTRA " THEN 'no attempt left (novu.max_attempts is ' || $6 || ')'"
					 "          ELSE d.last_error END,"
					 "        claimed_by = pg_catalog.pg_backend_pid(),"
					 "        lease_until = CASE WHEN (d.status = 'sending' AND d.attempts >= $6) OR d.attempts >= $6 + " LAST_ATTEMPT_EXTRA
					 "          THEN NULL ELSE pg_catalog.now() + $2 * interval '1 millisecond' END,"
					 "        updated_at = pg_catalog.now()"
					 "   FROM c"
					 "   LEFT JOIN novu.events e ON e.transaction_id = c.transaction_id"
					 "   LEFT JOIN novu.workflows w ON w.workflow_id = c.workflow_id"
					 "   LEFT JOIN novu.subscribers s ON s.subscriber_id = c.subscriber_id"
					 "  WHERE d.id = c.id"
					 " RETURNING d.id, d.attempts, d.transaction_id, d.workflow_id, d.subscriber_id,"
					 "   d.device_token, d.integration_id, e.payload, e.overrides, e.actor,"
					 "   CASE WHEN d.digest_id IS NULL THEN w.steps -> d.step_index"
					 "     ELSE (w.steps -> d.step_index) || pg_catalog.jsonb_build_object('_digest', novu._digest_context(d.digest_id)) END,"
					 "   d.workflow_id || '/' || d.step_index || '/' || w.updated_at || COALESCE('/' || d.digest_id, ''),"
					 "   CASE WHEN s.subscriber_id IS NOT NULL THEN novu._profile(s.subscriber_id, s.first_name,"
					 "     s.last_name, s.email, s.phone, s.avatar, s.locale, s.timezone, s.data) END,"
					 "   d.status, d.channel, d.provider_id, d.last_error, d.request_key),"
					 " expired AS ("
					 " INSERT INTO novu.execution_details (transaction_id, message_id, subscriber_id, workflow_id,"
					 "                                     channel, provider_id, status, detail)"
					 " SELECT u.transaction_id, u.id, u.subscriber_id, u.workflow_id, u.channel, u.provider_id,"
					 "        'Failed', 'Failed after ' || u.attempts || ' attempts: ' || u.last_error"
					 "   FROM u WHERE u.status = 'failed')"
					 " SELECT * FROM u WHERE u.status = 'sending'",
					 6, argtypes);
		if (SPI_execute_plan(claim_plan, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "novu: claim failed");
		claimed = (int) SPI_processed;
		/* a recovery that hit the limit goes on at the next claim */
		if (recover && claimed < limit - n)
		{
			recovered_generation = generation;
			recovered_once = true;
		}
		if (claimed > 0)
			result = grow_claimed(result, n, claimed);
		for (i = 0; i < claimed; i++)
		{
			read_claimed(&result[n], SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
			result[n++].msg->request_key = copy_text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 18);
		}
	}

	if (n >= limit)
		*next_due_ms = 0;
	else if (!claim_due && !recover)
	{
		/*
		 * Not looked at: the caller keeps its schedule (-2), unless the
		 * fan-out created delays or digest windows due before it: a delay
		 * shorter than the poll interval must not wait for the next poll.
		 */
		*next_due_ms = -2;
		if (*fanned > 0)
		{
			novu_prepare_once(&step_due_plan,
						 "SELECT (pg_catalog.extract('epoch', pg_catalog.min(due_at) - pg_catalog.now()) * 1000)::bigint"
						 "  FROM novu.step_runs WHERE status = 'waiting'",
						 0, NULL);
			*next_due_ms = ms_until(step_due_plan, -2);
		}
	}
	else
	{
		novu_prepare_once(&next_due_plan,
					 "SELECT (pg_catalog.extract('epoch', LEAST("
					 "   (SELECT pg_catalog.min(next_attempt_at) FROM novu.deliveries WHERE status = 'pending'),"
					 "   (SELECT pg_catalog.min(lease_until) FROM novu.deliveries WHERE status = 'sending'),"
					 "   (SELECT pg_catalog.min(due_at) FROM novu.step_runs WHERE status = 'waiting'))"
					 "  - pg_catalog.now()) * 1000)::bigint",
					 0, NULL);
		*next_due_ms = ms_until(next_due_plan, -1);

		/*
		 * Due already, and none of it taken: locked by another transaction.
		 * Another worker's claim ends in a few milliseconds; an
		 * application's cancel or deletion may last, and claiming every
		 * millisecond until it ends spun a worker at a thousand transactions
		 * a second.  So again after 1, 2, 4 ... ms, up to
		 * DUE_BUT_LOCKED_RETRY_MS, while it lasts.
		 */
		if (n == 0 && *next_due_ms == 0)
		{
			*next_due_ms = Min(1L << Min(empty_due_claims, 8), (long) DUE_BUT_LOCKED_RETRY_MS);
			empty_due_claims++;
		}
		else
			empty_due_claims = 0;
	}
	/* the claimed rows' integrations, in the same transaction (one unit of work, not two) */
	*nirows = claimed_integrations_in_tx(result, n, irows);
	/* claimed messages are sent next: their claim first on disk (novu.durable_claims) */
	if (n > 0)
		novu_end_work_durable();
	else
		novu_end_work();
	claim_shared = NULL;
	*rows = result;
	return n;
}

/* Read the given integrations (credentials included), in the current unit of work. */
static int
integrations_in_tx(int64 *ids, int n, IntegrationRow **rows)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1];
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	IntegrationRow *result;
	int			count;
	int			i;

	for (i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	novu_prepare_generic_once(&integrations_plan,
						  "SELECT id, identifier, provider_id, credentials, updated_at::text, active"
						  "  FROM novu.integrations WHERE id = ANY ($1) ORDER BY id",
						  1, argtypes);
	if (SPI_execute_plan(integrations_plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "novu: integration lookup failed");
	count = (int) SPI_processed;
	result = MemoryContextAllocZero(novu_work_outer_context(), sizeof(IntegrationRow) * Max(count, 1));
	for (i = 0; i < count; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		result[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		result[i].identifier = copy_text(tup, desc, 2);
		result[i].provider_id = copy_text(tup, desc, 3);
		result[i].credentials = copy_jsonb(tup, desc, 4);
		result[i].updated_at = copy_text(tup, desc, 5);
		result[i].active = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
	}
	*rows = result;
	return count;
}

/* The integrations of claimed rows, each once, read in the current unit of work. */
static int
claimed_integrations_in_tx(ClaimedRow *claimed, int n, IntegrationRow **rows)
{
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	int			nids = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		int			j;

		if (claimed[i].integration_id == 0)
			continue;
		for (j = 0; j < nids && ids[j] != claimed[i].integration_id; j++)
			;
		if (j == nids)
			ids[nids++] = claimed[i].integration_id;
	}
	if (nids == 0)
	{
		*rows = NULL;
		return 0;
	}
	return integrations_in_tx(ids, nids, rows);
}

/* Load the given integrations (credentials included) for the worker's cache, in a unit of work of their own. */
int
queue_load_integrations(int64 *ids, int n, IntegrationRow **rows)
{
	int			count;

	novu_begin_work("novu: loading integrations");
	count = integrations_in_tx(ids, n, rows);
	novu_end_work();
	return count;
}

/* Append one message's result to a batch. */
void
result_add(ResultBatch *rb, Message *m, const char *status, const char *error,
		   int64 delay_ms, int64 receipt_ms, const char *detail)
{
	if (rb->n == rb->cap)
	{
		int			cap = Max(64, rb->cap * 2);

		if (rb->cap == 0)
		{
			rb->ids = palloc(sizeof(int64) * cap);
			rb->attempts = palloc(sizeof(int32) * cap);
			rb->statuses = palloc(sizeof(char *) * cap);
			rb->errors = palloc(sizeof(char *) * cap);
			rb->message_ids = palloc(sizeof(char *) * cap);
			rb->delays_ms = palloc(sizeof(int64) * cap);
			rb->receipt_ms = palloc(sizeof(int64) * cap);
			rb->details = palloc(sizeof(char *) * cap);
		}
		else
		{
			rb->ids = repalloc(rb->ids, sizeof(int64) * cap);
			rb->attempts = repalloc(rb->attempts, sizeof(int32) * cap);
			rb->statuses = repalloc(rb->statuses, sizeof(char *) * cap);
			rb->errors = repalloc(rb->errors, sizeof(char *) * cap);
			rb->message_ids = repalloc(rb->message_ids, sizeof(char *) * cap);
			rb->delays_ms = repalloc(rb->delays_ms, sizeof(int64) * cap);
			rb->receipt_ms = repalloc(rb->receipt_ms, sizeof(int64) * cap);
			rb->details = repalloc(rb->details, sizeof(char *) * cap);
		}
		rb->cap = cap;
	}
	rb->ids[rb->n] = m->id;
	rb->attempts[rb->n] = m->attempts;
	rb->statuses[rb->n] = (char *) status;
	rb->errors[rb->n] = (char *) error;
	rb->message_ids[rb->n] = m->provider_message_id;
	rb->delays_ms[rb->n] = delay_ms;
	rb->receipt_ms[rb->n] = receipt_ms;
	rb->details[rb->n] = (char *) detail;
	rb->n++;
}

/*
 * Ask for a device token to be removed when the batch is recorded; with
 * gone_since_ms (> 0), only if it was not registered again after that.
 */
void
result_prune(ResultBatch *rb, int64 integration_id, const char *token, int64 gone_since_ms)
{
	if (rb->nprune == rb->prune_cap)
	{
		int			cap = Max(16, rb->prune_cap * 2);

		if (rb->prune_cap == 0)
		{
			rb->prune_integrations = palloc(sizeof(int64) * cap);
			rb->prune_tokens = palloc(sizeof(char *) * cap);
			rb->prune_since = palloc(sizeof(int64) * cap);
		}
		else
		{
			rb->prune_integrations = repalloc(rb->prune_integrations, sizeof(int64) * cap);
			rb->prune_tokens = repalloc(rb->prune_tokens, sizeof(char *) * cap);
			rb->prune_since = repalloc(rb->prune_since, sizeof(int64) * cap);
		}
		rb->prune_cap = cap;
	}
	rb->prune_integrations[rb->nprune] = integration_id;
	rb->prune_tokens[rb->nprune] = (char *) token;
	rb->prune_since[rb->nprune] = gone_since_ms > 0 ? gone_since_ms : -1;
	rb->nprune++;
}

/* A text[] from C strings (NULL elements allowed). */
static Datum
text_array(char **values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			i;

	for (i = 0; i < n; i++)
	{
		nulls[i] = (values[i] == NULL);
		elems[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(values[i]);
	}
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
}

/* A bigint[] from an array; elements < 0 become NULL when negative_null. */
static Datum
int8_array(int64 *values, int n, bool negative_null)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			i;

	for (i = 0; i < n; i++)
	{
		nulls[i] = negative_null && values[i] < 0;
		elems[i] = Int64GetDatum(values[i]);
	}
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* An integer[] from an array. */
static Datum
int4_array(int32 *values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		elems[i] = Int32GetDatum(values[i]);
	return PointerGetDatum(construct_array(elems, n, INT4OID, 4, true, TYPALIGN_INT));
}

/* Record a batch of results in one statement (novu._record), in the current transaction. */
static void
record_in_tx(ResultBatch *rb)
{
	Oid			argtypes[12] = {INT4OID, INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID};
	Datum		values[12];

	if (rb->n == 0 && rb->nprune == 0)
		return;
	values[0] = Int32GetDatum(novu_worker_slot);
	values[1] = int8_array(rb->ids, rb->n, false);
	values[2] = int4_array(rb->attempts, rb->n);
	values[3] = text_array(rb->statuses, rb->n);
	values[4] = text_array(rb->errors, rb->n);
	values[5] = text_array(rb->message_ids, rb->n);
	values[6] = int8_array(rb->delays_ms, rb->n, false);
	values[7] = int8_array(rb->receipt_ms, rb->n, true);
	values[8] = text_array(rb->details, rb->n);
	values[9] = int8_array(rb->prune_integrations, rb->nprune, false);
	values[10] = text_array(rb->prune_tokens, rb->nprune);
	values[11] = int8_array(rb->prune_since, rb->nprune, true);

	novu_prepare_once(&record_plan, "SELECT novu._record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
				 12, argtypes);
	if (SPI_execute_plan(record_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "novu: recording results failed");
}

/* Record a batch of results in its own short transaction. */
void
queue_record(ResultBatch *rb)
{
	if (rb->n == 0 && rb->nprune == 0)
		return;
	novu_begin_work("novu: recording results");
	record_in_tx(rb);
	novu_end_work();
}

/*
 * Before requests with an idempotency key are first sent: record each
 * message's key (novu._set_request_keys) in a short transaction of its own, so
 * that a retry of any of them is that request again.  written[i] says whether
 * message ids[i] was still leased for attempt attempts[i] and got keys[i];
 * returns how many did.
 */
int
queue_set_request_keys(int64 *ids, int32 *attempts, char **keys, int n, bool *written)
{
	Oid			argtypes[3] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID};
	Datum		values[3];
	int			count;
	int			i;

	memset(written, 0, sizeof(bool) * n);
	if (n == 0)
		return 0;
	novu_begin_work("novu: recording request keys");
	values[0] = int8_array(ids, n, false);
	values[1] = int4_array(attempts, n);
	values[2] = text_array(keys, n);
	novu_prepare_once(&request_keys_plan, "SELECT novu._set_request_keys($1, $2, $3)", 3, argtypes);
	if (SPI_execute_plan(request_keys_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "novu: recording request keys failed");
	count = (int) SPI_processed;
	for (i = 0; i < count; i++)
	{
		bool		isnull;
		int32		pos = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		if (!isnull && pos >= 1 && pos <= n)
			written[pos - 1] = true;
	}

	/* the keys before their requests go out (a retry reuses them; novu.durable_claims) */
	novu_end_work_durable();

	/*
	 * Committed asynchronously, as the worker's other commits (worker.c): a
	 * worker that stops or dies keeps them (the WAL is in shared memory), and
	 * only a crash of the whole server within the WAL writer's delay can lose
	 * keys, those of requests then in flight, which DESIGN's at-least-once
	 * allows to go out again.  Flushing here made every batch wait for the
	 * disk before it went out: OneSignal's P2 fell from 12,700 to 5,400/s.
	 */
	return count;
}

/*
 * The in_app sink: store rendered in_app messages in the feed
 * (novu._store_in_app: marked sent, logged, notified at commit) in a short
 * transaction of their own.  Returns how many were stored (a message whose
 * lease went to another attempt meanwhile is not).
 */
int
queue_store_in_app(int64 *ids, int32 *attempts, char **subjects, char **contents, char **urls, int n)
{
	Oid			argtypes[5] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[5];
	bool		isnull;
	int			stored;

	if (n == 0)
		return 0;
	novu_begin_work("novu: storing in-app messages");
	values[0] = int8_array(ids, n, false);
	values[1] = int4_array(attempts, n);
	values[2] = text_array(subjects, n);
	values[3] = text_array(contents, n);
	values[4] = text_array(urls, n);
	novu_prepare_once(&store_in_app_plan, "SELECT novu._store_in_app($1, $2, $3, $4, $5)", 5, argtypes);
	if (SPI_execute_plan(store_in_app_plan, values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "novu: storing in-app messages failed");
	stored = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	novu_end_work();
	return isnull ? 0 : stored;
}

/* Claim up to limit Expo receipts that are due, leasing them for lease_ms. */
int
queue_claim_receipts(int limit, int lease_ms, ReceiptRow **rows)
{
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(limit), Int32GetDatum(lease_ms)};
	ReceiptRow *result = NULL;
	int			n;
	int			i;

	novu_begin_work("novu: claiming receipts");
	novu_prepare_once(&claim_receipts_plan, "SELECT * FROM novu._claim_receipts($1, $2)", 2, argtypes);
	if (SPI_execute_plan(claim_receipts_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "novu: receipt claim failed");
	n = (int) SPI_processed;
	if (n > 0)
		result = MemoryContextAllocZero(novu_work_outer_context(), sizeof(ReceiptRow) * n);
	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		result[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		result[i].integration_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		result[i].ticket = copy_text(tup, desc, 3);
		result[i].device_token = copy_text(tup, desc, 4);
		result[i].attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		result[i].sent_age_s = DatumGetFloat8(SPI_getbinval(tup, desc, 6, &isnull));
	}
	novu_end_work();
	claim_shared = NULL;
	*rows = result;
	return n;
}

/* Record checked receipts in one statement (novu._record_receipts). */
void
queue_record_receipts(ResultBatch *rb)
{
	Oid			argtypes[8] = {INT4OID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
	INT8ARRAYOID, TEXTARRAYOID};
	Datum		values[8];

	if (rb->n == 0)
		return;
	values[0] = Int32GetDatum(novu_worker_slot);
	values[1] = int8_array(rb->ids, rb->n, false);
	values[2] = text_array(rb->statuses, rb->n);
	values[3] = text_array(rb->errors, rb->n);
	values[4] = int8_array(rb->delays_ms, rb->n, false);
	values[5] = text_array(rb->details, rb->n);
	values[6] = int8_array(rb->prune_integrations, rb->nprune, false);
	values[7] = text_array(rb->prune_tokens, rb->nprune);

	novu_begin_work("novu: recording receipts");
	novu_prepare_once(&record_receipts_plan, "SELECT novu._record_receipts($1, $2, $3, $4, $5, $6, $7, $8)",
				 8, argtypes);
	if (SPI_execute_plan(record_receipts_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "novu: recording receipts failed");
	novu_end_work();
}

/*
 * Delete history older than novu.retention (novu._housekeeping), in the
 * worker of the lowest live slot only (two would walk the same oldest rows).
 * Transactions of at most HOUSEKEEPING_LIMIT rows per table deleted (twice
 * that looked at), one after another for up to HOUSEKEEPING_BUDGET_MS; while
 * they still find rows or a walk stopped part way, the next call goes on at
 * the next round (the caller counts the rows as work done, so the worker does
 * not sleep when there were some), else it comes back in a minute.  A
 * backlog is thus worked off between deliveries at the rate one worker can
 * delete, not at a fixed number of rows a minute.  Returns the rows deleted.
 */
int
novu_housekeeping(void)
{
	static TimestampTz last = 0;
	static bool backlog = false;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until = TimestampTzPlusMilliseconds(now, HOUSEKEEPING_BUDGET_MS);
	Oid			argtypes[2] = {INTERVALOID, INT4OID};
	Datum		values[2];
	int			total = 0;
	int			n;
	bool		more;

	if (last > now)
		last = 0;				/* the wall clock was set back: do not wait for it */
	/* once a minute is plenty (more often only with a very short retention) */
	if (!backlog && last != 0 &&
		!TimestampDifferenceExceeds(last, now, Min(60, Max(novu_retention / 2, 1)) * 1000))
		return 0;
	last = now;
	backlog = false;
	if (novu_first_live_slot() != novu_worker_slot)
		return 0;

	values[0] = DirectFunctionCall7(make_interval, Int32GetDatum(0), Int32GetDatum(0), Int32GetDatum(0),
									Int32GetDatum(0), Int32GetDatum(0), Int32GetDatum(0),
									Float8GetDatum((double) novu_retention));
	values[1] = Int32GetDatum(HOUSEKEEPING_LIMIT);
	do
	{
		bool		isnull;

		novu_begin_work("novu: housekeeping");
		novu_prepare_once(&housekeeping_plan,
						  "SELECT novu._housekeeping($1, $2),"
						  "       EXISTS (SELECT FROM novu.housekeeping_cursor WHERE after_id > 0)",
						  2, argtypes);
		if (SPI_execute_plan(housekeeping_plan, values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "novu: housekeeping failed");
		n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		/* rows deleted, or a walk stopped part way: more may be waiting */
		more = n > 0 || DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		novu_end_work();
		total += n;
		CHECK_FOR_INTERRUPTS();
	} while (more && GetCurrentTimestamp() < until);
	backlog = more;
	return total;
}

/*
 * Keep the queue tables' statistics up with a burst, at most once a second:
 * novu._refresh_queue_stats() analyzes events or deliveries when they hold
 * far more live rows than their statistics say (a queue vacuumed while empty
 * looks empty to the planner until the next autovacuum ANALYZE, and the
 * claim's joins were then planned as scans of the whole table per row), and
 * step_runs when far more steps wait than its statistics say (a digest
 * window's look-up then read every waiting step).
 * Returns the number of tables analyzed (or found locked by a VACUUM, skipped).
 */
int
queue_refresh_stats(void)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	int			analyzed = 0;
	bool		isnull;

	if (last > now)
		last = 0;				/* the wall clock was set back: do not wait for it */
	if (last != 0 && !TimestampDifferenceExceeds(last, now, 1000))
		return 0;
	last = now;
	novu_begin_work("novu: checking the queue statistics");
	novu_prepare_once(&refresh_stats_plan, "SELECT novu._refresh_queue_stats()", 0, NULL);
	if (SPI_execute_plan(refresh_stats_plan, NULL, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "novu: checking the queue statistics failed");
	analyzed = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	novu_end_work();
	return isnull ? 0 : analyzed;
}
