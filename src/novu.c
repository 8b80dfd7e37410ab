/*
 * novu.c
 *		Module entry point of the novu extension.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "novu.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Define GUCs; the delivery workers are registered here when preloaded. */
void
_PG_init(void)
{
	/* pg_upgrade must not start workers or touch the outbox */
	if (IsBinaryUpgrade)
		return;

	novu_define_gucs();
}
