/*
 * spi_util.c
 *		SPI plans prepared once per backend and kept (SPI_keepplan).
 */
#include "postgres.h"

#include "executor/spi.h"
#include "nodes/parsenodes.h"

#include "novu.h"

/* Prepare with the given cursor options into *slot unless it is there already. */
static SPIPlanPtr
prepare_once(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes, int options)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, options);

		if (plan == NULL)
			elog(ERROR, "novu: could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	return *slot;
}

/* Prepare the plan into *slot unless it is there already; returns it. */
SPIPlanPtr
novu_prepare_once(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	return prepare_once(slot, sql, nargs, argtypes, 0);
}

/*
 * The same, always running its generic plan: for a statement whose best plan
 * does not depend on its arguments' values, where the plan cache would else
 * plan it again at every execution (an "= ANY ($1)" over a small array costs
 * its generic plan more than a custom one, so the custom one is always chosen).
 */
SPIPlanPtr
novu_prepare_generic_once(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	return prepare_once(slot, sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
}
