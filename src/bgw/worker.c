/*
 * worker.c
 *		The delivery worker: the main loop around fan-out, delivery and
 *		housekeeping.
 *
 * The loop is the canonical one (worker_spi): SIGTERM runs die(), the worker
 * waits only on MyLatch with WL_EXIT_ON_PM_DEATH, and every unit of work is a
 * short transaction.  An ERROR is caught here, reported, and the loop goes on
 * after a pause: one bad row or a missing extension never crash-loops the
 * worker.  Network I/O happens only between transactions (deliver.c).
 */
#include "postgres.h"

#include <setjmp.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "executor/spi.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/ps_status.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "net/http.h"
#include "novu.h"
#include "delivery/deliver.h"
#include "queue/queue.h"
#include "queue/work.h"
#include "common/shmem.h"
#include "bgw/worker.h"

PGDLLEXPORT void novu_worker_main(Datum main_arg);


/* Withdraw the worker from its slot in shared memory at exit. */
static void
worker_shmem_exit(int code, Datum arg)
{
	novu_release_worker_slot(DatumGetInt32(arg));
}

/* How long a new worker waits for its slot's previous holder to exit (ms). */
#define SLOT_WAIT_MS 10000

/*
 * Take this worker's slot (novu_claim_worker_slot).  A worker stopped by the
 * launcher may still be exiting: wait for it a while.  A slot still held then
 * is another live worker's (adopted by a restarted launcher): this one exits.
 */
static void
claim_slot(Oid dboid, Oid roleoid)
{
	int			waited = 0;

	while (!novu_claim_worker_slot(novu_worker_slot, MyLatch, dboid, roleoid))
	{
		if (waited >= SLOT_WAIT_MS)
		{
			ereport(LOG,
					(errmsg("novu: delivery worker %d is already running; this one exits", novu_worker_slot)));
			proc_exit(0);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		waited += 100;
	}
	on_shmem_exit(worker_shmem_exit, Int32GetDatum(novu_worker_slot));
}

/*
 * Whether the extension is installed in this database at the version this
 * library serves.  Logs once per change of state; the caller waits and asks
 * again, so CREATE/DROP/ALTER EXTENSION at any time are fine.
 */
/* When extension_ready() last looked (0: look at the next cycle). */
static TimestampTz extension_checked_at = 0;

static bool
extension_ready(void)
{
	static int	last_state = -1;
	int			state;
	char	   *version = NULL;

	/*
	 * Once ready, look again only every few seconds: each unit of work locks
	 * the extension and stops quietly if it is gone (see novu_begin_work_on).
	 */
	if (last_state == 2 && extension_checked_at != 0 &&
		!TimestampDifferenceExceeds(extension_checked_at, GetCurrentTimestamp(), 5000))
		return true;
	extension_checked_at = GetCurrentTimestamp();
	novu_begin_work_on("novu: checking the extension", false);
	if (!OidIsValid(get_extension_oid("novu", true)))
		state = 0;
	else
	{
		if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'novu'",
						true, 1) == SPI_OK_SELECT && SPI_processed == 1)
			version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		state = (version != NULL && strcmp(version, NOVU_EXTVERSION) == 0) ? 2 : 1;
	}
	if (state != last_state)
	{
		if (state == 0)
			ereport(LOG,
					(errmsg("novu: extension \"novu\" is not installed in database \"%s\"; delivery waits",
							get_database_name(MyDatabaseId)),
					 errhint("Run CREATE EXTENSION novu in that database, or set novu.database_name.")));
		else if (state == 1)
			ereport(LOG,
					(errmsg("novu: extension version %s does not match the library (%s); delivery waits",
							version ? version : "?", NOVU_EXTVERSION),
					 errhint("Run ALTER EXTENSION novu UPDATE, or install the matching library.")));
		else if (last_state != -1)
			ereport(LOG, (errmsg("novu: extension ready, delivery resumes")));
	}
	last_state = state;
	novu_end_work();
	return state == 2;
}

/*
 * One turn of work: fan out new triggers (when woken, when the poll is due,
 * or while there are more), let the delivery pipeline claim, send and record,
 * check Expo receipts and tidy up now and then.  Returns the number of rows
 * handled, so the loop knows whether to go on at once or wait.
 */
static int
worker_cycle(long *sleep_ms)
{
	static TimestampTz last_poll = 0;
	static TimestampTz last_receipts = 0;
	static bool fanout_more = false;
	TimestampTz now = GetCurrentTimestamp();
	bool		woken = novu_wakeup_pending;
	bool		poll_due;
	int			done = 0;

	/* the wall clock set back: the polls are due now, not once it catches up */
	if (last_poll > now)
		last_poll = 0;
	if (last_receipts > now)
		last_receipts = 0;
	poll_due = TimestampDifferenceExceeds(last_poll, now, novu_poll_interval);

	novu_wakeup_pending = false;
	*sleep_ms = novu_poll_interval;
	if (poll_due)
		last_poll = now;

	/* fan-out, claim and record share one short transaction per step */
	done += novu_deliver(woken || poll_due, &fanout_more, fanout_more ? 0 : 200, sleep_ms);
	CHECK_FOR_INTERRUPTS();

	if (TimestampDifferenceExceeds(last_receipts, now, 1000))
	{
		last_receipts = now;
		done += novu_check_receipts();
	}
	done += novu_housekeeping();
	novu_deliver_evict_idle();
	return done;
}

/* Entry point of a delivery worker. */
void
novu_worker_main(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;
	Oid			dboid;
	Oid			roleoid;
	bool		running_as_superuser;
	volatile int consecutive_errors = 0;	/* changed after sigsetjmp */
	MemoryContext cycle_context;

	novu_worker_slot = DatumGetInt32(main_arg);
	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/*
	 * Connect as the worker role, never as a superuser (DESIGN 5): whatever a
	 * database or table owner puts in the database runs, if at all, with the
	 * worker role's few rights.  The launcher checked the role; check again,
	 * as it may have changed since.
	 */
	memcpy(&roleoid, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(Oid));
	BackgroundWorkerInitializeConnectionByOid(dboid, roleoid, 0);
	StartTransactionCommand();
	running_as_superuser = superuser() || GetUserId() != roleoid;
	CommitTransactionCommand();
	if (running_as_superuser)
		ereport(FATAL,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("novu: a delivery worker must run as role \"%s\" and never as a superuser",
						NOVU_WORKER_ROLE),
				 errhint("ALTER ROLE %s NOSUPERUSER;", NOVU_WORKER_ROLE)));
	pgstat_report_appname(psprintf("novu delivery worker %d", novu_worker_slot));

	/*
	 * Names resolve in pg_catalog only (pg_temp is never searched for
	 * functions or operators), whatever ALTER DATABASE ... SET search_path
	 * says: a "public" operator or function can never be picked by a worker
	 * statement.  The statements name the novu objects with their schema.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The worker's own commits need not wait for the WAL flush while they
	 * hold their locks: a lost result only means the message's lease runs out
	 * and it is sent again as a counted attempt, as for a request in flight
	 * at a crash.  A lost claim is a message sent again as its first attempt
	 * (an uncounted duplicate): with novu.durable_claims, what a request
	 * depends on (its claim, a request key) is flushed after its commit and
	 * before the request goes out (novu_end_work_durable).  The
	 * application's trigger commits keep their own setting.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Each statement sees what committed before it, whatever the database's
	 * default_transaction_isolation: the claims skip locked rows and look
	 * again (a repeatable-read claim would fail on every row another worker
	 * took), and the claim floor takes snapshots of its own (queue/floor.c).
	 */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * What a database or role may set for its applications must not stop the
	 * workers: with read-only transactions by default every claim would
	 * fail, and a statement or lock timeout would end fan-outs and claims
	 * part way (an error the fan-out takes for transient: retried for ever).
	 */
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
#if PG_VERSION_NUM >= 170000
	SetConfigOption("transaction_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
#endif
	/*
	 * exit_on_error would turn every error the worker catches (one message's
	 * bad template or delay time, a row lock not available) into an exit, and
	 * the same message would end the next worker too: no message could be
	 * delivered.  standard_conforming_strings off would change what the
	 * literals of the worker's SQL say ('\d' in a pattern).  The database's
	 * owner may set both for its applications.
	 */
	SetConfigOption("exit_on_error", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("standard_conforming_strings", "on", PGC_SUSET, PGC_S_OVERRIDE);
	/* short keyed statements on small batches: compiling them never pays */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Every statement here reaches a batch of rows by key.  The queue tables
	 * grow from empty faster than ANALYZE follows, and a plan made on "0 pages"
	 * statistics scans the whole table once per row of the batch (a 2,000-row
	 * fan-out once took 24 s that way): an index is always the right path.
	 */
	SetConfigOption("enable_seqscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/* and the paths the statements take stay allowed, whatever the database says */
	{
		static const char *const paths[] = {"enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan",
		"enable_tidscan", "enable_nestloop", "enable_hashjoin", "enable_mergejoin", "enable_hashagg", "enable_sort",
		"enable_material", "enable_memoize", NULL};
		int			i;

		for (i = 0; paths[i] != NULL; i++)
			SetConfigOption(paths[i], "on", PGC_SUSET, PGC_S_OVERRIDE);
	}

	novu_apply_time_slice();
	claim_slot(dboid, roleoid);

	novu_deliver_init();

	cycle_context = AllocSetContextCreate(TopMemoryContext, "novu worker cycle",
										  ALLOCSET_DEFAULT_SIZES);

	/*
	 * Errors come back here: report, abort the transaction, pause (longer
	 * after repeated errors), and go on.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		long		pause_ms;

		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		/* the extension being dropped is not an error worth a log line */
		if (geterrcode() != NOVU_EXTENSION_GONE)
			EmitErrorReport();
		AbortOutOfAnyTransaction();
		SPI_finish();			/* no-op unless still connected */
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();
		MemoryContextReset(cycle_context);
		novu_deliver_abandon();
		extension_checked_at = 0;	/* dropped or updated? look again */
		pgstat_report_activity(STATE_IDLE, NULL);
		RESUME_INTERRUPTS();

		consecutive_errors++;
		pause_ms = Min(1000L << Min(consecutive_errors - 1, 5), 30000L);
		/* a wake-up during the pause is kept for the loop (see below) */
		if (WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					  pause_ms, PG_WAIT_EXTENSION) & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			novu_wakeup_pending = true;
		}
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		long		sleep_ms = novu_poll_interval;
		int			done = 0;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			novu_apply_time_slice();
		}

		MemoryContextSwitchTo(cycle_context);
		if (extension_ready())
			done = worker_cycle(&sleep_ms);
		else
		{
			/* nothing to do until the extension is there: a wakeup meanwhile is spent */
			novu_wakeup_pending = false;
			sleep_ms = Max(novu_poll_interval, 5000L);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(cycle_context);
		consecutive_errors = 0;

		if (done > 0 || novu_deliver_busy() || novu_wakeup_pending)
			continue;			/* more may be waiting: go on at once */

		/*
		 * Reset the latch only when the wait says it was set: a commit that
		 * sets it after a wait ended by its timeout must not be cleared
		 * unseen (that wake-up was lost, and its trigger waited for the poll).
		 * A latch left set ends the next wait at once.
		 */
		novu_set_worker_waiting(novu_worker_slot, true);
		if (WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					  Max(sleep_ms, 1L), PG_WAIT_EXTENSION) & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			novu_wakeup_pending = true;
		}
		novu_set_worker_waiting(novu_worker_slot, false);
	}
}
