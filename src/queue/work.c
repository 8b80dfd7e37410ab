/*
 * work.c
 *		Units of work of the delivery workers: each a short transaction with
 *		SPI and a snapshot, begun and ended here (network I/O only between).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

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
 * Begin a short transaction for one unit of work, with SPI and a snapshot.
 *
 * It first takes a share lock on the extension itself: DROP EXTENSION locks
 * the extension before its tables, so it waits for this unit of work (or this
 * one waits for it) instead of deadlocking on the tables in another order.
 * If the extension went away meanwhile, the unit of work ends with a quiet
 * error (EXTENSION_GONE) and the loop waits for it to come back.
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
		ext = get_extension_oid("novu", true);
		if (OidIsValid(ext))
			LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
		if (!OidIsValid(ext) || !OidIsValid(get_extension_oid("novu", true)))
			ereport(ERROR,
					(errcode(NOVU_EXTENSION_GONE),
					 errmsg("novu: extension \"novu\" is gone")));
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

