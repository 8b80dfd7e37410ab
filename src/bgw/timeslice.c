/*
 * timeslice.c
 *		The delivery workers' CPU time slice (novu.worker_time_slice).
 *
 * A worker sleeps until a commit wakes it, then works for well under a
 * millisecond per message.  Linux (6.12 and later, EEVDF scheduling) lets a
 * task ask for a shorter time slice than the default (sched_setattr with
 * sched_runtime, no privilege needed, clamped by the kernel to 0.1-100 ms): a
 * woken worker then preempts the process running on its CPU (often the
 * committing backend itself) instead of waiting for that one's slice to end.
 * Its share of the CPU does not change, only how soon it gets it.  Kernels
 * without custom slices ignore the request; other systems never make it.
 */
#include "postgres.h"

#include <string.h>
#include <sched.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include "bgw/worker.h"
#include "novu.h"

#if defined(__linux__) && defined(SYS_sched_setattr)
/* struct sched_attr of sched_setattr(2), not in glibc 2.36's headers */
typedef struct NovuSchedAttr
{
	uint32		size;
	uint32		sched_policy;
	uint64		sched_flags;
	int32		sched_nice;
	uint32		sched_priority;
	uint64		sched_runtime;
	uint64		sched_deadline;
	uint64		sched_period;
} NovuSchedAttr;
#endif

/* Apply novu.worker_time_slice to this process (0: the kernel's default slice). */
void
novu_apply_time_slice(void)
{
#if defined(__linux__) && defined(SYS_sched_setattr)
	static double applied = -1;
	NovuSchedAttr attr;

	if (novu_worker_time_slice == applied)
		return;
	applied = novu_worker_time_slice;

	/* change the slice only: policy, nice value and flags stay as they are */
	memset(&attr, 0, sizeof(attr));
	if (syscall(SYS_sched_getattr, 0, &attr, sizeof(attr), 0) != 0)
		return;					/* no sched_getattr: nothing to ask for */
	if (attr.sched_policy != SCHED_OTHER && attr.sched_policy != SCHED_BATCH)
		return;					/* real-time or idle scheduling set by the DBA */
	attr.size = sizeof(attr);
	attr.sched_runtime = (uint64) (novu_worker_time_slice * 1000000.0);
	if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0)
		ereport(LOG,
				(errmsg("novu: could not set the delivery worker's time slice to %g ms: %m",
						novu_worker_time_slice),
				 errhint("Set novu.worker_time_slice = 0 to keep the kernel's default.")));
#endif
}
