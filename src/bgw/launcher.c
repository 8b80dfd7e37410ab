/*
 * launcher.c
 *		The novu launcher: a background worker connected to no database that
 *		starts the delivery workers for novu.database_name once it exists.
 *
 * Connecting a worker straight to a missing database would make it exit and be
 * restarted forever.  The launcher instead looks the database up in the shared
 * catalog, logs once while it is missing, and (re)starts the delivery workers as
 * dynamic background workers when it appears, when one of them stops (DROP
 * DATABASE ... WITH (FORCE), a crash), or when novu.database_name or
 * novu.workers change.
 *
 * The delivery workers connect as the role novu_worker (NOVU_WORKER_ROLE),
 * created by CREATE EXTENSION with only what delivery needs; never as a
 * superuser.  The launcher looks the role up in the shared catalog too, and
 * starts no worker while it is missing, is a superuser or cannot log in.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
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
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "novu.h"
#include "common/shmem.h"
#include "bgw/worker.h"

PGDLLEXPORT void novu_launcher_main(Datum main_arg);

/*
 * One delivery worker: started by this launcher (handle), or found running in
 * its slot when this launcher started (adopted_pid: a launcher restarted
 * after an error or pg_terminate_backend knows nothing of the workers its
 * predecessor started; starting others beside them would put two workers in a
 * slot).  A worker that stops within FAST_EXIT_MS of its start is started again
 * after a delay that doubles up to RESTART_MAX_MS (a worker that cannot
 * connect, e.g. CONNECT revoked, would otherwise be forked without end).
 */
typedef struct WorkerHandle
{
	BackgroundWorkerHandle *handle;
	pid_t		adopted_pid;
	Oid			dboid;
	Oid			roleoid;
	TimestampTz started_at;
	TimestampTz next_start;		/* not started again before then */
	int			fast_exits;		/* stops in a row soon after a start */
	bool		start_failed;	/* no free background worker slot (logged) */
} WorkerHandle;

#define FAST_EXIT_MS	10000
#define RESTART_MAX_MS	60000

static WorkerHandle workers[NOVU_MAX_WORKERS];

/* Register the launcher; called from _PG_init when preloaded. */
void
novu_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "novu");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "novu_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "novu launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "novu launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * Scan a shared catalog in a short transaction, handing each tuple to fn until
 * it returns true.  Connected to no database, only shared catalogs can be
 * read, and only by a plain heap scan (as the logical replication launcher
 * reads pg_subscription).
 */
static void
scan_shared_catalog(Oid relid, bool (*fn) (HeapTuple tup, void *arg), void *arg)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(relid, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (fn(tup, arg))
			break;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* pg_database tuple test: is it novu.database_name?  Sets the Oid at arg. */
static bool
match_database(HeapTuple tup, void *arg)
{
	Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

	if (strcmp(NameStr(db->datname), novu_database_name) != 0)
		return false;
	*(Oid *) arg = db->oid;
	return true;
}

/* The OID of novu.database_name, or InvalidOid if there is no such database. */
static Oid
lookup_database(void)
{
	Oid			dboid = InvalidOid;

	scan_shared_catalog(DatabaseRelationId, match_database, &dboid);
	return dboid;
}

/* What the launcher found of the worker role. */
typedef enum WorkerRoleState
{
	ROLE_OK,
	ROLE_MISSING,
	ROLE_SUPERUSER,
	ROLE_NOLOGIN
} WorkerRoleState;

/* The worker role as found by match_worker_role. */
typedef struct RoleFound
{
	Oid			oid;
	WorkerRoleState state;
} RoleFound;

/* pg_authid tuple test: is it the worker role?  Fills the RoleFound at arg. */
static bool
match_worker_role(HeapTuple tup, void *arg)
{
	Form_pg_authid role = (Form_pg_authid) GETSTRUCT(tup);
	RoleFound  *found = arg;

	if (strcmp(NameStr(role->rolname), NOVU_WORKER_ROLE) != 0)
		return false;
	found->oid = role->oid;
	found->state = role->rolsuper ? ROLE_SUPERUSER : !role->rolcanlogin ? ROLE_NOLOGIN : ROLE_OK;
	return true;
}

/*
 * Look up the delivery workers' role (NOVU_WORKER_ROLE) in pg_authid.  Sets
 * *roleoid; the state says whether workers may connect as it.
 */
static WorkerRoleState
lookup_worker_role(Oid *roleoid)
{
	RoleFound	found = {InvalidOid, ROLE_MISSING};

	scan_shared_catalog(AuthIdRelationId, match_worker_role, &found);
	*roleoid = found.oid;
	return found.state;
}

/* Start delivery worker number slot for the database, connecting as the role. */
static void
start_worker(int slot, Oid dboid, Oid roleoid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "novu");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "novu_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "novu delivery worker %d", slot);
	snprintf(worker.bgw_type, BGW_MAXLEN, "novu delivery worker");
	worker.bgw_main_arg = Int32GetDatum(slot);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &roleoid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		/* once until one starts again: the launcher tries every few seconds */
		if (!workers[slot].start_failed)
			ereport(WARNING,
					(errmsg("novu: could not start delivery worker %d: no free background worker slot", slot),
					 errhint("Raise max_worker_processes (it also serves parallel query and other extensions), or lower novu.workers.")));
		workers[slot].start_failed = true;
		return;
	}
	workers[slot].start_failed = false;
	workers[slot].handle = handle;
	workers[slot].dboid = dboid;
	workers[slot].roleoid = roleoid;
	workers[slot].started_at = GetCurrentTimestamp();
}

/* A worker of this launcher stopped: when may it start again? */
static void
worker_stopped(int slot)
{
	WorkerHandle *w = &workers[slot];
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(w->started_at, now, FAST_EXIT_MS))
	{
		long		delay = Min(1000L << Min(w->fast_exits, 6), (long) RESTART_MAX_MS);

		w->fast_exits++;
		w->next_start = TimestampTzPlusMilliseconds(now, delay);
		if (delay < RESTART_MAX_MS || w->fast_exits == 7)
			ereport(LOG,
					(errmsg("novu: delivery worker %d stopped %d time(s) in a row soon after it started; next start in %ld s",
							slot, w->fast_exits, delay / 1000),
					 errhint("The server log says why (e.g. it may not connect to the database).")));
	}
	else
	{
		w->fast_exits = 0;
		w->next_start = 0;
	}
}

/*
 * Whether the worker in a slot is starting or running: one this launcher
 * started, or one found holding the slot in shared memory (adopted).
 */
static bool
worker_alive(int slot)
{
	WorkerHandle *w = &workers[slot];
	pid_t		pid;

	if (w->handle != NULL)
	{
		switch (GetBackgroundWorkerPid(w->handle, &pid))
		{
			case BGWH_STARTED:
			case BGWH_NOT_YET_STARTED:
				return true;
			default:
				pfree(w->handle);
				w->handle = NULL;
				worker_stopped(slot);
				return false;
		}
	}
	w->adopted_pid = novu_worker_slot_owner(slot, &w->dboid, &w->roleoid);
	return w->adopted_pid != 0;
}

/* Stop the worker in a slot (database changed or fewer workers wanted). */
static void
stop_worker(int slot)
{
	WorkerHandle *w = &workers[slot];

	if (w->handle != NULL)
	{
		TerminateBackgroundWorker(w->handle);
		pfree(w->handle);
		w->handle = NULL;
	}
	else if (w->adopted_pid != 0)
	{
		Oid			dboid;
		Oid			roleoid;

		/*
		 * Not this launcher's: SIGTERM, as TerminateBackgroundWorker would
		 * send, if the slot is still that process's (looked at again just
		 * before: a pid freed meanwhile could be another backend's).
		 */
		if (novu_worker_slot_owner(slot, &dboid, &roleoid) == w->adopted_pid)
			(void) kill(w->adopted_pid, SIGTERM);
		w->adopted_pid = 0;
	}
	w->fast_exits = 0;
	w->next_start = 0;
}

/*
 * Make the running workers match novu.workers, the database and the role.
 * Returns how long until a worker held back after fast exits may start
 * (ms; -1: none is).
 */
static long
reconcile_workers(Oid dboid, Oid roleoid)
{
	TimestampTz now = GetCurrentTimestamp();
	long		next_ms = -1;
	int			i;

	for (i = 0; i < NOVU_MAX_WORKERS; i++)
	{
		bool		wanted = OidIsValid(dboid) && OidIsValid(roleoid) && i < novu_workers;
		bool		alive = worker_alive(i);

		if (alive && (!wanted || workers[i].dboid != dboid || workers[i].roleoid != roleoid))
		{
			stop_worker(i);
			alive = false;
		}
		if (wanted && !alive)
		{
			if (workers[i].next_start > now)
			{
				long		ms = (long) ((workers[i].next_start - now) / 1000) + 1;

				next_ms = next_ms < 0 ? ms : Min(next_ms, ms);
			}
			else
				start_worker(i, dboid, roleoid);
		}
	}
	return next_ms;
}

/* Log (once per change of state) why no worker can connect as the role. */
static void
report_role_state(WorkerRoleState state)
{
	static WorkerRoleState last = ROLE_OK;

	if (state == last)
		return;
	last = state;
	switch (state)
	{
		case ROLE_OK:
			ereport(LOG, (errmsg("novu: role \"%s\" is usable, delivery workers start", NOVU_WORKER_ROLE)));
			break;
		case ROLE_MISSING:
			ereport(LOG,
					(errmsg("novu: role \"%s\" does not exist; delivery waits until it does", NOVU_WORKER_ROLE),
					 errhint("CREATE EXTENSION novu creates it.")));
			break;
		case ROLE_SUPERUSER:
			ereport(WARNING,
					(errmsg("novu: role \"%s\" is a superuser; the delivery workers never run as one, delivery stops",
							NOVU_WORKER_ROLE),
					 errhint("ALTER ROLE %s NOSUPERUSER;", NOVU_WORKER_ROLE)));
			break;
		case ROLE_NOLOGIN:
			ereport(WARNING,
					(errmsg("novu: role \"%s\" cannot log in; the delivery workers connect as it, delivery stops",
							NOVU_WORKER_ROLE),
					 errhint("ALTER ROLE %s LOGIN; (it has no password: keep it out of trust lines in pg_hba.conf)",
							 NOVU_WORKER_ROLE)));
			break;
	}
}

/* Entry point of the launcher background worker. */
void
novu_launcher_main(Datum main_arg)
{
	bool		missing_logged = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no database: only shared catalogs (pg_database) are needed */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("novu launcher");

	for (;;)
	{
		Oid			dboid;
		Oid			roleoid;
		WorkerRoleState role_state;
		long		held_back_ms;
		long		timeout_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		dboid = lookup_database();
		if (!OidIsValid(dboid))
		{
			if (!missing_logged)
				ereport(LOG,
						(errmsg("novu: database \"%s\" does not exist; delivery waits until it does",
								novu_database_name),
						 errhint("Create it, or set novu.database_name to the database holding the novu extension.")));
			missing_logged = true;
		}
		else
			missing_logged = false;
		role_state = lookup_worker_role(&roleoid);
		report_role_state(role_state);
		held_back_ms = reconcile_workers(dboid, role_state == ROLE_OK ? roleoid : InvalidOid);

		/* look again soon while delivery waits for CREATE DATABASE/EXTENSION */
		timeout_ms = OidIsValid(dboid) && role_state == ROLE_OK ? 5000L : 1000L;
		if (held_back_ms >= 0)
			timeout_ms = Min(timeout_ms, held_back_ms);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
