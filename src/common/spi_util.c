/*
 * spi_util.c
 *		SPI plans prepared once per backend and kept (SPI_keepplan), and the
 *		search_path a definer function without a SET clause pins for them.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "utils/guc.h"

#include "novu.h"

/*
 * The search_path pin of the call under way (novu_pin_begin), NULL outside
 * one: the GUC nest level of the pin, 0 while nothing is pinned yet.
 */
static int *call_pin = NULL;

/*
 * Begin a call that pins search_path to pg_catalog, pg_temp before its first
 * statement through SPI (prepare_once), not at its entry: a definer function
 * declared without a SET clause (novu.trigger: the clause cost every call a
 * GUC nest level and a search path computed again, 8% of a trigger) whose
 * common path resolves no name.  Returns the outer call's pin, for
 * novu_pin_end (or to be restored as it is after an error).
 */
int *
novu_pin_begin(int *pin)
{
	int		   *outer = call_pin;

	*pin = 0;
	call_pin = pin;
	return outer;
}

/* End the call begun by novu_pin_begin: undo its pin, if any, and restore the outer call's. */
void
novu_pin_end(int *outer, int pin)
{
	if (pin != 0)
		AtEOXact_GUC(true, pin);
	call_pin = outer;
}

/* Pin search_path for the rest of the call under way, if it has not yet. */
static void
pin_for_call(void)
{
	if (call_pin == NULL || *call_pin != 0)
		return;
	*call_pin = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* Prepare with the given cursor options into *slot unless it is there already. */
static SPIPlanPtr
prepare_once(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes, int options)
{
	/* a plan is made and run under the pinned path only (plancache re-analyzes on a change) */
	pin_for_call();
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
