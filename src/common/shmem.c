/*
 * shmem.c
 *		Shared state of the delivery workers, and the wake-up at commit.
 *
 * Each delivery worker publishes its latch here.  novu.trigger() marks the
 * transaction; a transaction callback sets the workers' latches when (and only
 * when) that transaction commits, so a committed trigger reaches a worker within
 * milliseconds without polling.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "novu.h"
#include "common/shmem.h"

NovuShared *novu_shared = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

/* Other modules' shared memory, requested and attached with ours (novu_shmem_register). */
#define MAX_SHMEM_USERS 4
static void (*shmem_requests[MAX_SHMEM_USERS]) (void);
static void (*shmem_startups[MAX_SHMEM_USERS]) (void);
static int	nshmem_users = 0;

/* Set by novu.trigger(): this transaction enqueued something. */
static bool wake_at_commit = false;

/*
 * Have another module's shared memory requested and attached with ours
 * (before novu_shmem_init; the layers below the worker cannot be called
 * from here, so they register).
 */
void
novu_shmem_register(void (*request) (void), void (*startup) (void))
{
	if (nshmem_users >= MAX_SHMEM_USERS)
		elog(ERROR, "novu: too many shared memory users");
	shmem_requests[nshmem_users] = request;
	shmem_startups[nshmem_users] = startup;
	nshmem_users++;
}

/* Ask for our shared memory (shmem_request_hook on 15+, _PG_init before). */
static void
novu_shmem_request(void)
{
	int			i;

#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(sizeof(NovuShared)));
	for (i = 0; i < nshmem_users; i++)
		shmem_requests[i] ();
}

/* Create or attach the shared struct at postmaster start. */
static void
novu_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	novu_shared = ShmemInitStruct("novu", sizeof(NovuShared), &found);
	if (!found)
	{
		memset(novu_shared, 0, sizeof(NovuShared));
		SpinLockInit(&novu_shared->mutex);
		pg_atomic_init_u64(&novu_shared->wakeups, 0);
		for (i = 0; i < NOVU_MAX_WORKERS; i++)
			pg_atomic_init_u32(&novu_shared->waiting[i], 0);
	}
	for (i = 0; i < nshmem_users; i++)
		shmem_startups[i] ();
	LWLockRelease(AddinShmemInitLock);
}

/* Wake every delivery worker if this transaction enqueued something and committed. */
static void
novu_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				novu_wake_workers();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared transaction is found by the workers' poll */
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/* Install the hooks; called from _PG_init when preloaded. */
void
novu_shmem_init(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = novu_shmem_request;
#else
	novu_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = novu_shmem_startup;
}

/* Register the commit callback in this backend (any backend that loads the library). */
void
novu_register_xact_callback(void)
{
	RegisterXactCallback(novu_xact_callback, NULL);
}

/* Remember to wake the workers when the current transaction commits. */
void
novu_wake_workers_at_commit(void)
{
	wake_at_commit = true;
}

/*
 * Set the latch of one live delivery worker other than "except" (or NULL):
 * one that waits for work, if any, else the next in turn.  A worker busy in a
 * transaction (recording, housekeeping) would see the wake-up only once done,
 * and the commit-to-provider latency would include the rest of its work.
 */
static void
wake_one(Latch *except)
{
	Latch	   *live[NOVU_MAX_WORKERS];
	int			slot[NOVU_MAX_WORKERS];
	int			nlive = 0;
	uint64		turn;
	int			i;

	if (novu_shared == NULL)
		return;
	for (i = 0; i < NOVU_MAX_WORKERS; i++)
	{
		Latch	   *latch = novu_shared->worker_latch[i];

		if (latch != NULL && latch != except)
		{
			live[nlive] = latch;
			slot[nlive++] = i;
		}
	}
	if (nlive == 0)
		return;
	turn = pg_atomic_fetch_add_u64(&novu_shared->wakeups, 1);
	for (i = 0; i < nlive; i++)
	{
		int			k = (int) ((turn + i) % nlive);

		if (pg_atomic_read_u32(&novu_shared->waiting[slot[k]]) != 0)
		{
			SetLatch(live[k]);
			return;
		}
	}
	SetLatch(live[turn % nlive]);
}

/* Say whether this delivery worker now waits for work (its latch wakes it at once). */
void
novu_set_worker_waiting(int slot, bool waiting)
{
	if (novu_shared == NULL || slot < 0 || slot >= NOVU_MAX_WORKERS)
		return;
	pg_atomic_write_u32(&novu_shared->waiting[slot], waiting ? 1 : 0);
}

/*
 * Wake one live delivery worker, in turn: one is enough to fan out and claim
 * what the commit wrote (it wakes another when there is more than it takes at
 * once), and waking them all would make each pay a transaction for the same
 * rows.
 */
void
novu_wake_workers(void)
{
	wake_one(NULL);
}

/*
 * Wake one other live delivery worker, in turn (a worker calls this when it
 * found more work than it can take at once: a commit wakes only one worker,
 * and the others would otherwise sleep until their poll with work waiting).
 */
void
novu_wake_other_worker(void)
{
	wake_one(MyLatch);
}

/* Empty a slot (the caller holds the mutex). */
static void
clear_slot(int slot)
{
	novu_shared->worker_latch[slot] = NULL;
	novu_shared->worker_pid[slot] = 0;
	novu_shared->worker_dboid[slot] = InvalidOid;
	novu_shared->worker_roleoid[slot] = InvalidOid;
	novu_shared->generation++;
}

/*
 * Take a slot for this delivery worker: publish its latch, pid, database and
 * role.  A slot held by a live process is not taken (returns false): a worker
 * started by a launcher that has since restarted (it knows nothing of its old
 * workers and adopts them, see launcher.c), or one stopped that has not exited
 * yet.  Two workers in one slot would each take the other for dead and claim
 * again the messages it is sending.
 */
bool
novu_claim_worker_slot(int slot, Latch *latch, Oid dboid, Oid roleoid)
{
	int32		owner;

	if (novu_shared == NULL || slot < 0 || slot >= NOVU_MAX_WORKERS)
		return false;
	for (;;)
	{
		SpinLockAcquire(&novu_shared->mutex);
		owner = novu_shared->worker_pid[slot];
		if (owner == 0 || owner == MyProcPid)
		{
			novu_shared->worker_latch[slot] = latch;
			novu_shared->worker_pid[slot] = MyProcPid;
			novu_shared->worker_dboid[slot] = dboid;
			novu_shared->worker_roleoid[slot] = roleoid;
			novu_shared->generation++;
			SpinLockRelease(&novu_shared->mutex);
			return true;
		}
		SpinLockRelease(&novu_shared->mutex);
		if (BackendPidGetProc(owner) != NULL)
			return false;
		/* an owner gone without withdrawing: its slot is free */
		SpinLockAcquire(&novu_shared->mutex);
		if (novu_shared->worker_pid[slot] == owner)
			clear_slot(slot);
		SpinLockRelease(&novu_shared->mutex);
	}
}

/* Withdraw this worker from its slot, if the slot is still its own. */
void
novu_release_worker_slot(int slot)
{
	if (novu_shared == NULL || slot < 0 || slot >= NOVU_MAX_WORKERS)
		return;
	SpinLockAcquire(&novu_shared->mutex);
	if (novu_shared->worker_pid[slot] == MyProcPid)
		clear_slot(slot);
	SpinLockRelease(&novu_shared->mutex);
}

/*
 * The live process holding a slot (0: none), with the database and role it
 * serves.
 */
int32
novu_worker_slot_owner(int slot, Oid *dboid, Oid *roleoid)
{
	int32		pid;

	*dboid = *roleoid = InvalidOid;
	if (novu_shared == NULL || slot < 0 || slot >= NOVU_MAX_WORKERS)
		return 0;
	SpinLockAcquire(&novu_shared->mutex);
	pid = novu_shared->worker_pid[slot];
	*dboid = novu_shared->worker_dboid[slot];
	*roleoid = novu_shared->worker_roleoid[slot];
	SpinLockRelease(&novu_shared->mutex);
	if (pid != 0 && BackendPidGetProc(pid) == NULL)
		return 0;
	return pid;
}

/* The lowest slot a delivery worker holds now (-1: none). */
int
novu_first_live_slot(void)
{
	int			slot = -1;
	int			i;

	if (novu_shared == NULL)
		return -1;
	SpinLockAcquire(&novu_shared->mutex);
	for (i = 0; i < NOVU_MAX_WORKERS && slot < 0; i++)
	{
		if (novu_shared->worker_pid[i] != 0)
			slot = i;
	}
	SpinLockRelease(&novu_shared->mutex);
	return slot;
}

/*
 * The PIDs of the delivery workers running now, and the generation of that
 * set (it changes whenever a worker starts or stops); returns how many.
 */
int
novu_live_worker_pids(int32 *pids, uint32 *generation)
{
	int			n = 0;
	int			i;

	*generation = 0;
	if (novu_shared == NULL)
		return 0;
	SpinLockAcquire(&novu_shared->mutex);
	*generation = novu_shared->generation;
	for (i = 0; i < NOVU_MAX_WORKERS; i++)
	{
		if (novu_shared->worker_pid[i] != 0)
			pids[n++] = novu_shared->worker_pid[i];
	}
	SpinLockRelease(&novu_shared->mutex);
	return n;
}
