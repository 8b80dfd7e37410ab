/*
 * work.c
 *		Units of work of the delivery workers: each a short transaction with
 *		SPI and a snapshot, begun and ended here (network I/O only between).
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "novu.h"
#include "queue/work.h"

/* This worker's slot number (0 .. novu.workers - 1). */
int			novu_worker_slot = -1;

/* The memory context that was current when the unit of work began. */
static MemoryContext work_outer_cxt = NULL;

/* Where results of a unit of work are copied to outlive its transaction. */
MemoryContext
novu_work_outer_context(void)
{
	return work_outer_cxt;
}

/*
 * The extension's OID and its outbox table's, as last looked up: a unit of
 * work locks the extension by the OID it knows, and the table's catalog entry
 * (a syscache probe, no scan) says whether that extension still exists.
 */
static Oid	known_extension = InvalidOid;
static Oid	known_events_table = InvalidOid;

/* Whether the extension known from the last lookup still exists (its lock is held). */
static bool
known_extension_exists(void)
{
	return OidIsValid(known_extension) &&
		SearchSysCacheExists1(RELOID, ObjectIdGetDatum(known_events_table));
}

/* Look the extension up in pg_extension (an index scan) and remember it and its outbox table. */
static Oid
lookup_extension(void)
{
	Oid			ext = get_extension_oid("novu", true);
	Oid			nsp = OidIsValid(ext) ? get_namespace_oid("novu", true) : InvalidOid;

	known_extension = InvalidOid;
	known_events_table = OidIsValid(nsp) ? get_relname_relid("events", nsp) : InvalidOid;
	if (OidIsValid(known_events_table))
		known_extension = ext;
	return ext;
}

/*
 * Begin a short transaction for one unit of work, with SPI and a snapshot.
 *
 * It first takes a share lock on the extension itself: DROP EXTENSION locks
 * the extension before its tables, so it waits for this unit of work (or this
 * one waits for it) instead of deadlocking on the tables in another order.
 * If the extension went away meanwhile, the unit of work ends with a quiet
 * error (EXTENSION_GONE) and the loop waits for it to come back.
 *
 * The lock is taken on the extension known from the last unit of work; taking
 * it reads the invalidations of whatever committed before, so if its outbox
 * table (a member, dropped with it) is still in the catalog, the extension is
 * too, and stays while the lock is held.  Otherwise (first use, DROP, DROP
 * and CREATE again) pg_extension is read, locked and read again as before.
 * Two scans of pg_extension per unit of work were about 3% of a worker's CPU
 * at 200 lone triggers a second.
 */
void
novu_begin_work_on(const char *activity, bool need_extension)
{
	Oid			ext;

	work_outer_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (need_extension)
	{
		if (OidIsValid(known_extension))
			LockDatabaseObject(ExtensionRelationId, known_extension, 0, AccessShareLock);
		if (!known_extension_exists())
		{
			ext = lookup_extension();
			if (OidIsValid(ext))
				LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
			if (!OidIsValid(ext) || lookup_extension() != ext || !known_extension_exists())
				ereport(ERROR,
						(errcode(NOVU_EXTENSION_GONE),
						 errmsg("novu: extension \"novu\" is gone")));
		}
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "novu: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Begin a unit of work on the extension's tables (see begin_work). */
void
novu_begin_work(const char *activity)
{
	novu_begin_work_on(activity, true);
}

/* Commit the unit of work and report it to the statistics system. */
void
novu_end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(work_outer_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Commit the unit of work of what a request depends on (a claim, request
 * keys) and, with novu.durable_claims, wait until the commit is on disk
 * before the request goes out.  The workers commit asynchronously
 * (worker.c), and the WAL writer may take up to wal_writer_delay to write an
 * asynchronous commit (less when another commit flushes first): a server
 * crash in that time undoes it.  An undone claim is a message pending again,
 * sent again as its first attempt though its request may have reached the
 * provider: a duplicate no attempt counts.  The flush comes after the
 * commit, so no lock is held while it waits, and it costs nothing when
 * another commit has flushed past it; otherwise one WAL flush per claim.
 */
void
novu_end_work_durable(void)
{
	novu_end_work();
	if (novu_durable_claims)
		XLogFlush(XactLastCommitEnd);
}

