/*
 * outbox.c
 *		The outbox row of a trigger or a broadcast, written in the caller's
 *		transaction (novu.events).
 *
 * A transactionId given by the caller may have been used already (Novu's
 * idempotency): that row is inserted through SPI with ON CONFLICT DO NOTHING,
 * which also waits for, and respects, a concurrent insert of the same key.
 * A transactionId we generated (UUIDv7) cannot collide, and it is the common
 * case on the application's hot path: that row goes to the heap and its
 * indexes through the executor's single-row insert (the one logical
 * replication applies rows with), without planning or starting an executor
 * for a one-row INSERT.  Its other columns get their declared defaults,
 * compiled once per backend and forgotten when the table changes.  A table
 * with triggers or row security takes the SPI path.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "outbox/lookup.h"
#include "novu.h"
#include "outbox/outbox.h"

/*
 * The columns a trigger or broadcast gives; every other one takes its default.
 * topics (0.7.0) is optional: the library may run over an older schema until
 * ALTER EXTENSION novu UPDATE, and a trigger naming no topic leaves it NULL.
 */
enum
{
	COL_TRANSACTION_ID,
	COL_KIND,
	COL_WORKFLOW_ID,
	COL_RECIPIENTS,
	COL_PAYLOAD,
	COL_OVERRIDES,
	COL_ACTOR,
	COL_TOPICS,
	NUM_GIVEN
};

static const char *const given_names[NUM_GIVEN] = {
	"transaction_id", "kind", "workflow_id", "recipients", "payload", "overrides", "actor", "topics"
};

/*
 * What the direct insert needs to know of novu.events, kept per backend: the
 * default expressions and the indexes' IndexInfo, with their predicates and
 * expressions compiled once (ExecOpenIndices and ExecInsertIndexTuples would
 * build and plan them again for every row: a tenth of a trigger's CPU).
 */
typedef struct OutboxShape
{
	Oid			relid;			/* InvalidOid: to be looked up again */
	AttrNumber	given[NUM_GIVEN];
	int			ndefaults;
	AttrNumber *default_attnums;
	ExprState **default_states; /* compiled default expressions */
	int			nindexes;
	Oid		   *index_oids;
	IndexInfo **index_infos;	/* predicate and expression states compiled */
	bool		direct;			/* false: triggers or row security, use SPI */
} OutboxShape;

static OutboxShape shape = {InvalidOid};
static MemoryContext shape_context = NULL;
static bool callback_registered = false;
static bool shape_in_use = false;	/* an insert_direct is running */
static Oid	shape_target = InvalidOid;	/* the table the shape is (being) made of */
static bool shape_stale = false;	/* invalidated since (or while) it was made */

static SPIPlanPtr insert_plan = NULL;	/* ON CONFLICT DO NOTHING */
static SPIPlanPtr insert_topics_plan = NULL;	/* the same, with topics */

/*
 * Forget the shape when novu.events, one of its indexes, or every relation is
 * invalidated, also while the shape is being made (its index_open calls
 * take locks, which accept invalidations): the next insert makes it again.
 */
static void
outbox_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	if (relid == InvalidOid || relid == shape_target)
		shape_stale = true;
	for (i = 0; i < shape.nindexes && !shape_stale; i++)
	{
		if (shape.index_oids[i] == relid)
			shape_stale = true;
	}
}

/*
 * Build the IndexInfo of every index of novu.events, in the current memory
 * context, with its predicate and expressions compiled as ExecPrepareQual
 * and ExecPrepareExprList would for one executor (without a parent: nothing
 * in them depends on the executor that evaluates them).
 */
static void
load_indexes(Relation rel)
{
	List	   *oids = RelationGetIndexList(rel);
	ListCell   *lc;
	int			i = 0;

	shape.nindexes = list_length(oids);
	shape.index_oids = palloc(sizeof(Oid) * Max(shape.nindexes, 1));
	shape.index_infos = palloc(sizeof(IndexInfo *) * Max(shape.nindexes, 1));
	foreach(lc, oids)
	{
		Relation	idx = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info = BuildIndexInfo(idx);
		ListCell   *e;

		if (info->ii_Predicate != NIL)
			info->ii_PredicateState = ExecInitQual((List *) expression_planner((Expr *) info->ii_Predicate), NULL);
		info->ii_ExpressionsState = NIL;
		foreach(e, info->ii_Expressions)
			info->ii_ExpressionsState = lappend(info->ii_ExpressionsState,
												ExecInitExpr(expression_planner((Expr *) lfirst(e)), NULL));
		shape.index_oids[i] = lfirst_oid(lc);
		shape.index_infos[i] = info;
		i++;
		index_close(idx, NoLock);
	}
	list_free(oids);
}

/* Learn novu.events' columns and compile its defaults and indexes (once per change). */
static void
load_shape(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;
	int			i;
	int			k;

	if (shape_context == NULL)
		shape_context = AllocSetContextCreate(TopMemoryContext, "novu outbox", ALLOCSET_SMALL_SIZES);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(outbox_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	shape.relid = InvalidOid;
	shape.nindexes = 0;
	MemoryContextReset(shape_context);
	shape_target = RelationGetRelid(rel);
	shape_stale = false;
	old = MemoryContextSwitchTo(shape_context);

	shape.direct = rel->trigdesc == NULL && !rel->rd_rel->relrowsecurity;
	for (k = 0; k < NUM_GIVEN; k++)
	{
		shape.given[k] = InvalidAttrNumber;
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), given_names[k]) == 0)
				shape.given[k] = att->attnum;
		}
		if (shape.given[k] == InvalidAttrNumber && k != COL_TOPICS)
			elog(ERROR, "novu: column novu.events.%s is missing", given_names[k]);
	}
	shape.default_attnums = palloc(sizeof(AttrNumber) * desc->natts);
	shape.default_states = palloc(sizeof(ExprState *) * desc->natts);
	shape.ndefaults = 0;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Node	   *def;

		for (k = 0; k < NUM_GIVEN && shape.given[k] != att->attnum; k++)
			;
		if (att->attisdropped || k < NUM_GIVEN)
			continue;
		if (att->attgenerated)
		{
			shape.direct = false;	/* generated columns: leave them to INSERT */
			continue;
		}
		def = build_column_default(rel, att->attnum);
		if (def == NULL)
			continue;			/* NULL */
		shape.default_attnums[shape.ndefaults] = att->attnum;
		shape.default_states[shape.ndefaults] = ExecInitExpr(expression_planner((Expr *) def), NULL);
		shape.ndefaults++;
	}
	load_indexes(rel);
	MemoryContextSwitchTo(old);
	shape.relid = RelationGetRelid(rel);
}

/*
 * Open the indexes of novu.events that take this row, as ExecOpenIndices
 * would open them all, but with the IndexInfo of the shape.  An index whose
 * predicate the row fails (a trigger's row is in neither events_chunked_idx
 * nor events_done_idx) or that is not ready for inserts gets no entry, and is
 * neither opened nor locked: ExecInsertIndexTuples would skip it after paying
 * for both, a tenth of the outbox insert.  This is safe because every change
 * of an index's predicate or readiness (CREATE, DROP, REINDEX) invalidates
 * the table, and the shape is checked once the table is locked.  The indexes
 * opened stay locked until the transaction ends, as the table does
 * (ExecCloseIndices would release each lock at once, one more lock-table
 * round trip per index).  An index access method may keep a cache in
 * ii_AmCache, allocated in ii_Context: both are set for this insert only, so
 * that the cache goes with the executor state.
 */
static void
open_indexes(ResultRelInfo *rri, EState *estate, TupleTableSlot *slot)
{
	ExprContext *econtext = GetPerTupleExprContext(estate);
	int			i;

	rri->ri_NumIndices = 0;
	if (shape.nindexes == 0)
		return;
	rri->ri_IndexRelationDescs = palloc(sizeof(Relation) * shape.nindexes);
	rri->ri_IndexRelationInfo = palloc(sizeof(IndexInfo *) * shape.nindexes);
	econtext->ecxt_scantuple = slot;
	for (i = 0; i < shape.nindexes; i++)
	{
		IndexInfo  *info = shape.index_infos[i];
		int			k = rri->ri_NumIndices;

		if (!info->ii_ReadyForInserts)
			continue;
		if (info->ii_PredicateState != NULL && !ExecQual(info->ii_PredicateState, econtext))
			continue;
		rri->ri_IndexRelationDescs[k] = index_open(shape.index_oids[i], RowExclusiveLock);
		info->ii_AmCache = NULL;
		info->ii_Context = estate->es_query_cxt;
		rri->ri_IndexRelationInfo[k] = info;
		rri->ri_NumIndices++;
	}
}

/* Close the indexes open_indexes opened, keeping their locks until the transaction ends. */
static void
close_indexes(ResultRelInfo *rri)
{
	int			i;

	for (i = 0; i < rri->ri_NumIndices; i++)
		index_close(rri->ri_IndexRelationDescs[i], NoLock);
}

/* Insert the row straight into the heap and its indexes (a generated transactionId). */
static void
insert_direct(Relation rel, Datum *given, bool *given_null)
{
	TupleDesc	desc = RelationGetDescr(rel);
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	ExprContext *econtext;
	TupleTableSlot *slot;
	MemoryContext old;
	int			i;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
#if PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, list_make1(rte), NIL);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	estate->es_output_cid = GetCurrentCommandId(true);

	slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	for (i = 0; i < desc->natts; i++)
	{
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
	}
	for (i = 0; i < NUM_GIVEN; i++)
	{
		if (shape.given[i] == InvalidAttrNumber)
			continue;			/* an optional column absent: its value is NULL */
		slot->tts_values[shape.given[i] - 1] = given[i];
		slot->tts_isnull[shape.given[i] - 1] = given_null[i];
	}
	econtext = GetPerTupleExprContext(estate);
	for (i = 0; i < shape.ndefaults; i++)
	{
		AttrNumber	attnum = shape.default_attnums[i];

		slot->tts_values[attnum - 1] = ExecEvalExprSwitchContext(shape.default_states[i], econtext,
																 &slot->tts_isnull[attnum - 1]);
	}
	ExecStoreVirtualTuple(slot);

	old = MemoryContextSwitchTo(estate->es_query_cxt);
	open_indexes(rri, estate, slot);
	MemoryContextSwitchTo(old);

	ExecSimpleRelationInsert(rri, estate, slot);

	close_indexes(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
}

/* Insert the row through SPI, ON CONFLICT DO NOTHING; false if the key was there. */
static bool
insert_spi(Datum *given, bool *given_null)
{
	Oid			argtypes[NUM_GIVEN] = {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, JSONBOID, JSONBOID, JSONBOID,
	TEXTARRAYOID};
	char		nulls[NUM_GIVEN];
	SPIPlanPtr	plan;
	int			i;

	/* a row without topics names no topics column (older schemas have none) */
	if (given_null[COL_TOPICS])
		plan = novu_prepare_once(&insert_plan,
								 "INSERT INTO novu.events (transaction_id, kind, workflow_id, recipients, "
								 "payload, overrides, actor) VALUES ($1, $2, $3, $4, $5, $6, $7) "
								 "ON CONFLICT (transaction_id) DO NOTHING",
								 NUM_GIVEN - 1, argtypes);
	else
		plan = novu_prepare_once(&insert_topics_plan,
								 "INSERT INTO novu.events (transaction_id, kind, workflow_id, recipients, "
								 "payload, overrides, actor, topics) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
								 "ON CONFLICT (transaction_id) DO NOTHING",
								 NUM_GIVEN, argtypes);
	for (i = 0; i < NUM_GIVEN; i++)
		nulls[i] = given_null[i] ? 'n' : ' ';
	if (SPI_execute_plan(plan, given, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "novu: outbox insert failed");
	return SPI_processed == 1;
}

/*
 * Insert the outbox row of a trigger (recipients), a trigger naming topics
 * (kind "topic": recipients, possibly NULL, and topics) or a broadcast (both
 * NULL); false if the transactionId was used already.  generated says that we
 * made the transactionId up, so that it cannot be there.  Runs inside SPI.
 */
bool
novu_outbox_insert(const char *transaction_id, bool generated, const char *kind, const char *workflow_id,
				   ArrayType *recipients, ArrayType *topics, Jsonb *payload, Jsonb *overrides, Jsonb *actor)
{
	Datum		given[NUM_GIVEN];
	bool		given_null[NUM_GIVEN] = {false};
	Oid			relid;
	Relation	rel;
	bool		inserted = true;

	given[COL_TRANSACTION_ID] = CStringGetTextDatum(transaction_id);
	given[COL_KIND] = CStringGetTextDatum(kind);
	given[COL_WORKFLOW_ID] = CStringGetTextDatum(workflow_id);
	given[COL_RECIPIENTS] = PointerGetDatum(recipients);
	given_null[COL_RECIPIENTS] = (recipients == NULL);
	given[COL_PAYLOAD] = JsonbPGetDatum(payload);
	given[COL_OVERRIDES] = JsonbPGetDatum(overrides);
	given[COL_ACTOR] = PointerGetDatum(actor);
	given_null[COL_ACTOR] = (actor == NULL);
	given[COL_TOPICS] = PointerGetDatum(topics);
	given_null[COL_TOPICS] = (topics == NULL);

	/*
	 * The direct insert below bypasses the executor's checks: a read-only
	 * transaction (or a standby) refuses the row as an INSERT would.
	 */
	PreventCommandIfReadOnly("INSERT INTO novu.events");
	PreventCommandDuringRecovery("INSERT INTO novu.events");

	/*
	 * The transaction's xid before the row's id: the workers' claim floor
	 * (queue/floor.c) relies on an id never being older than its xid.
	 */
	(void) GetTopTransactionId();

	/*
	 * The shape is in use until a direct insert's row is in: an index
	 * function that triggered again (absurd, but possible) takes SPI.
	 */
	if (!generated || shape_in_use)
		return insert_spi(given, given_null);

	relid = novu_relid("events");
	rel = table_open(relid, RowExclusiveLock);
	if (shape.relid != relid || shape_stale)
		load_shape(rel);
	if (topics != NULL && shape.given[COL_TOPICS] == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("topics need the schema of novu %s", NOVU_EXTVERSION),
				 errhint("Run ALTER EXTENSION novu UPDATE.")));
	if (!shape.direct)
	{
		inserted = insert_spi(given, given_null);
		table_close(rel, NoLock);
		return inserted;
	}
	shape_in_use = true;
	PG_TRY();
	{
		insert_direct(rel, given, given_null);
	}
	PG_FINALLY();
	{
		shape_in_use = false;
	}
	PG_END_TRY();
	table_close(rel, NoLock);
	return true;
}
