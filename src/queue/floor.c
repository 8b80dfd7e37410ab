/*
 * floor.c
 *		The outbox claim's floor: an id below which no trigger can still be
 *		or become pending, so that the fan-out's claim starts its index scan
 *		there instead of at the first entry of events_pending_idx.
 *
 * Why: a trigger's outbox row leaves the pending index's predicate when it
 * is fanned out, but its index entry stays until VACUUM removes it.  After a
 * burst (a broadcast, 300,000 triggers in one commit) the claim, which reads
 * the index in id order from its start, went over some 800 pages of dead
 * entries (1.9 ms) at every wake-up until autovacuum came by, up to a minute
 * later.  Each worker keeps its own floor and passes it to novu._fanout.
 *
 * Why it is safe: an outbox row gets its id from novu.events_id_seq (cache 1:
 * ids are handed out in time order) after its transaction has an xid
 * (novu_outbox_insert takes it first).  A candidate floor C is taken as
 *   1. L = the sequence's last value (read first);
 *   2. a snapshot S1, and then N1 = the next xid to be assigned;
 *   3. C = min(L, the smallest pending trigger id visible in S1).
 * A row with an id below C that S1 does not show as pending was either not
 * committed at S1 (its id <= L was handed out before step 1, so its xid was
 * assigned before S1: xid < N1) or is done for good (no trigger row goes
 * back to pending).  A row whose id is handed out after step 1 has an id
 * above L >= C.  The candidate becomes the floor once a later snapshot S2 has
 * xmin >= N1, every xid below N1 having ended: the floor is then min(C, the
 * smallest pending id visible in S2), which covers the late commits.  A long
 * transaction (or a prepared one) only delays this: the floor stays where it
 * was meanwhile.
 *
 * Defense in depth: every tenth candidate scans from the smallest id rather
 * than from the current floor, so a row that got its id otherwise (restored
 * with an explicit id) lowers the floor again within seconds.  A sequence
 * caching ids turns the floor off, and novu._fanout never uses a floor above
 * the sequence's last value (a sequence set back by TRUNCATE ... RESTART
 * IDENTITY hands out ids below it until the next candidate).
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "novu.h"
#include "queue/queue.h"

/* How often a worker takes a candidate or confirms one (ms). */
#define FLOOR_INTERVAL_MS 250
/* A candidate not confirmed by then is dropped and taken again (ms). */
#define FLOOR_CANDIDATE_MAX_AGE_MS 60000
/* Every so many candidates scan from the smallest id (see the file's comment). */
#define FLOOR_FULL_SCAN_EVERY 10

static int64 floor_id = PG_INT64_MIN;
static bool candidate_valid = false;
static int64 candidate_id = 0;
static FullTransactionId candidate_next_xid;
static TimestampTz candidate_at = 0;
static TimestampTz floor_looked_at = 0;
static int	candidates_taken = 0;

static SPIPlanPtr seq_plan = NULL;
static SPIPlanPtr pending_plan = NULL;

/* The smallest pending trigger id at or above from, seen by snapshot snap, into *id; false if none. */
static bool
smallest_pending(Snapshot snap, int64 from, int64 *id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(from)};
	bool		isnull;
	Datum		d;

	novu_prepare_once(&pending_plan,
					  "SELECT min(x.id) FROM novu.events x "
					  "WHERE x.status = 'pending' AND x.kind = 'trigger' AND x.id >= $1",
					  1, argtypes);
	if (SPI_execute_snapshot(pending_plan, values, NULL, snap, InvalidSnapshot, true, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "novu: outbox floor query failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		*id = DatumGetInt64(d);
	return !isnull;
}

/* The sequence's last value into *last; false if the sequence caches ids (no floor then). */
static bool
sequence_last_value(int64 *last)
{
	bool		isnull;
	int64		cache;

	novu_prepare_once(&seq_plan,
					  "SELECT s.last_value, q.seqcache FROM novu.events_id_seq s, pg_catalog.pg_sequence q "
					  "WHERE q.seqrelid = 'novu.events_id_seq'::pg_catalog.regclass",
					  0, NULL);
	if (SPI_execute_plan(seq_plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "novu: outbox sequence query failed");
	*last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cache = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return cache == 1;
}

/* Take a candidate floor (steps 1-3 of the file's comment). */
static void
take_candidate(void)
{
	int64		last = 0;
	Snapshot	snap;
	int64		pending = 0;
	bool		found;

	if (!sequence_last_value(&last))
	{
		floor_id = PG_INT64_MIN;	/* a caching sequence: the claim scans from the start */
		return;
	}
	snap = RegisterSnapshot(GetLatestSnapshot());
	candidate_next_xid = ReadNextFullTransactionId();
	found = smallest_pending(snap, candidates_taken++ % FLOOR_FULL_SCAN_EVERY == 0 ? PG_INT64_MIN : floor_id,
							 &pending);
	UnregisterSnapshot(snap);
	candidate_id = found ? Min(pending, last) : last;
	candidate_valid = true;
	candidate_at = GetCurrentTimestamp();
}

/* Turn the candidate into the floor if every xid below its N1 has ended. */
static void
confirm_candidate(void)
{
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	TransactionId next = XidFromFullTransactionId(candidate_next_xid);

	if (TransactionIdFollowsOrEquals(snap->xmin, next))
	{
		int64		pending = 0;
		bool		pending_found = smallest_pending(snap, Min(floor_id, candidate_id), &pending);
		int64		was = floor_id;

		floor_id = pending_found ? Min(pending, candidate_id) : candidate_id;
		candidate_valid = false;
		if (floor_id != was)
			elog(DEBUG1, "novu: outbox claim floor " INT64_FORMAT, floor_id);
	}
	UnregisterSnapshot(snap);
}

/*
 * Move this worker's floor on, at most every FLOOR_INTERVAL_MS: confirm the
 * candidate taken before (the floor only moves then), or take one.  Runs in
 * the claim's transaction, connected to SPI.
 */
void
queue_floor_update(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(floor_looked_at, now, FLOOR_INTERVAL_MS))
		return;
	floor_looked_at = now;
	if (candidate_valid && TimestampDifferenceExceeds(candidate_at, now, FLOOR_CANDIDATE_MAX_AGE_MS))
		candidate_valid = false;	/* xid comparisons stay meaningful: take a new one */
	if (candidate_valid)
		confirm_candidate();
	if (!candidate_valid)
		take_candidate();
}

/* This worker's floor for the fan-out's claim (PG_INT64_MIN: from the start). */
int64
queue_floor(void)
{
	return floor_id;
}
