/*
 * novu.c
 *		Module entry point of the novu extension.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "novu.h"
#include "common/shmem.h"
#include "delivery/breaker.h"
#include "bgw/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Define the GUCs and the commit callback; when preloaded, also ask for shared
 * memory and register the launcher of the delivery workers.
 */
void
_PG_init(void)
{
	/* pg_upgrade must not start workers or touch the outbox */
	if (IsBinaryUpgrade)
		return;

	novu_define_gucs();
	novu_register_xact_callback();

	if (!process_shared_preload_libraries_in_progress)
		return;
	novu_shmem_register(novu_breaker_shmem_request, novu_breaker_shmem_startup);
	novu_shmem_init();
	novu_register_launcher();
}
