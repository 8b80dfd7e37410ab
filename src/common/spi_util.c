/*
 * spi_util.c
 *		SPI plans prepared once per backend and kept (SPI_keepplan).
 */
#include "postgres.h"

#include "executor/spi.h"

#include "novu.h"

/* Prepare the plan into *slot unless it is there already; returns it. */
SPIPlanPtr
novu_prepare_once(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "novu: could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	return *slot;
}
