/*
 * lookup.c
 *		Primary-key probes of the extension's tables, without the executor.
 *
 * The trigger path runs inside every application transaction that notifies
 * someone, so its reads must cost next to nothing: "does this workflow exist,
 * is it active, how many steps" and "does this subscriber exist" are one
 * B-tree descent each, under the calling statement's snapshot, with the same
 * locks a SELECT would take.  Writes still go through SPI (constraints,
 * triggers, indexes).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "outbox/lookup.h"

/* The OIDs of the novu tables this backend has looked up, by name. */
#define RELID_CACHE_SIZE 8

typedef struct RelidEntry
{
	const char *relname;		/* a string constant of the caller */
	Oid			relid;
} RelidEntry;

static RelidEntry relid_cache[RELID_CACHE_SIZE];
static int	relid_cache_len = 0;
static bool relid_callback_registered = false;

/* Forget a cached OID when its relation (or every relation) is invalidated. */
static void
relid_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < relid_cache_len; i++)
	{
		if (relid == InvalidOid || relid_cache[i].relid == relid)
		{
			relid_cache_len = 0;	/* rare (DDL, extension dropped): forget all */
			return;
		}
	}
}

/*
 * The OID of table novu.<relname>, cached for the backend: the trigger path
 * asks on every call, and two catalog cache lookups cost more than the
 * answer's checking.  A dropped or recreated table sends a relcache
 * invalidation, which empties the cache.  relname must be a string constant.
 */
Oid
novu_relid(const char *relname)
{
	Oid			relid;
	int			i;

	for (i = 0; i < relid_cache_len; i++)
	{
		if (relid_cache[i].relname == relname || strcmp(relid_cache[i].relname, relname) == 0)
			return relid_cache[i].relid;
	}
	if (!relid_callback_registered)
	{
		CacheRegisterRelcacheCallback(relid_relcache_callback, (Datum) 0);
		relid_callback_registered = true;
	}
	relid = get_relname_relid(relname, get_namespace_oid("novu", false));
	if (!OidIsValid(relid))
		elog(ERROR, "novu: table novu.%s is missing", relname);
	if (relid_cache_len < RELID_CACHE_SIZE)
	{
		relid_cache[relid_cache_len].relname = relname;
		relid_cache[relid_cache_len].relid = relid;
		relid_cache_len++;
	}
	return relid;
}

/*
 * Fetch the row of novu.<relname> whose text primary key is key, copying
 * attributes attnums[0..natts-1] into values/isnull (current memory context).
 * Returns false if there is no such row visible to the active snapshot.
 */
bool
novu_pk_fetch(const char *relname, const char *key, int natts, const AttrNumber *attnums,
			  Datum *values, bool *isnull)
{
	Oid			relid = novu_relid(relname);
	Relation	rel;
	Relation	idx;
	Oid			idxid;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData skey;
	bool		found = false;
	int			i;

	rel = table_open(relid, AccessShareLock);
	idxid = RelationGetPrimaryKeyIndex(rel);
	if (!OidIsValid(idxid))
		elog(ERROR, "novu: table novu.%s has no primary key", relname);
	idx = index_open(idxid, AccessShareLock);

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   idx->rd_indcollation[0], F_TEXTEQ, CStringGetTextDatum(key));
	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, idx, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		TupleDesc	desc = RelationGetDescr(rel);

		found = true;
		for (i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, attnums[i] - 1);

			values[i] = slot_getattr(slot, attnums[i], &isnull[i]);
			if (!isnull[i])
				values[i] = datumCopy(values[i], att->attbyval, att->attlen);
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, NoLock);
	table_close(rel, NoLock);
	return found;
}

/* The attribute number of a column of novu.<relname>. */
AttrNumber
novu_attnum(const char *relname, const char *column)
{
	AttrNumber	attnum = get_attnum(novu_relid(relname), column);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "novu: column novu.%s.%s is missing", relname, column);
	return attnum;
}
