/*
 * lookup.h
 *		Primary-key probes of the extension's tables, without the executor.
 */
#ifndef NOVU_LOOKUP_H
#define NOVU_LOOKUP_H

#include "access/attnum.h"
#include "postgres_ext.h"

extern Oid	novu_relid(const char *relname);
extern bool novu_pk_fetch(const char *relname, const char *key, int natts, const AttrNumber *attnums,
						  Datum *values, bool *isnull);
extern AttrNumber novu_attnum(const char *relname, const char *column);

#endif							/* NOVU_LOOKUP_H */
