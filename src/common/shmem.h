/*
 * shmem.h
 *		Shared state of the delivery workers and the wake-up at commit.
 */
#ifndef NOVU_SHMEM_H
#define NOVU_SHMEM_H

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"

#define NOVU_MAX_WORKERS 64

typedef struct NovuShared
{
	slock_t		mutex;
	Latch	   *worker_latch[NOVU_MAX_WORKERS];	/* NULL when the slot's worker is not running */
	int32		worker_pid[NOVU_MAX_WORKERS];	/* 0 when the slot's worker is not running */
	Oid			worker_dboid[NOVU_MAX_WORKERS];	/* the database the slot's worker serves */
	Oid			worker_roleoid[NOVU_MAX_WORKERS];	/* the role it connected as */
	pg_atomic_uint64 wakeups;	/* commits that woke the workers */
	pg_atomic_uint32 waiting[NOVU_MAX_WORKERS];	/* 1 while the slot's worker waits for work */
	uint32		generation;		/* bumped whenever a worker starts or stops */
} NovuShared;

extern NovuShared *novu_shared;

extern void novu_shmem_register(void (*request) (void), void (*startup) (void));
extern void novu_shmem_init(void);
extern void novu_register_xact_callback(void);
extern void novu_wake_workers_at_commit(void);
extern void novu_wake_workers(void);
extern void novu_wake_other_worker(void);
extern bool novu_claim_worker_slot(int slot, Latch *latch, Oid dboid, Oid roleoid);
extern void novu_release_worker_slot(int slot);
extern int32 novu_worker_slot_owner(int slot, Oid *dboid, Oid *roleoid);
extern int	novu_first_live_slot(void);
extern void novu_set_worker_waiting(int slot, bool waiting);
extern int	novu_live_worker_pids(int32 *pids, uint32 *generation);

#endif							/* NOVU_SHMEM_H */
